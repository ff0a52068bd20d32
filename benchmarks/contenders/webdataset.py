"""webdataset: 8 tar shards written with webdataset.TarWriter (__key__, jpg/png, cls), read by
WebDataset(shardshuffle).shuffle(1000).decode("pil") + the PIL path's transforms, batched(256),
through WebLoader(batch_size=None)."""
from __future__ import annotations

import math
import os
from typing import Any, Dict

from .. import BATCH
from ..corpus import cache_dir, samples, write_once
from ..harness import cores, dist_version, result, reused, self_rss_mb, timed
from .pil_path import train_transform, transform_name

SHARDS = 8


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    import webdataset as wds
    corpus = spec["corpus"]
    items = samples(corpus)

    def write(tmp: str) -> None:
        os.makedirs(tmp)
        per = math.ceil(len(items) / SHARDS)
        for s in range(SHARDS):
            with wds.TarWriter(os.path.join(tmp, f"shard-{s:04d}.tar")) as w:
                for k, (p, lab) in enumerate(items[s * per:(s + 1) * per]):
                    with open(os.path.join(corpus, p), "rb") as f:
                        data = f.read()
                    ext = "png" if p.lower().endswith(".png") else "jpg"
                    w.write({"__key__": f"{s:04d}_{k:06d}", ext: data, "cls": lab})

    out = write_once(cache_dir("peers/webdataset", corpus), write)
    urls = sorted(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar"))
    rss0 = self_rss_mb()
    workers = cores()
    tf = train_transform()

    def pipeline(n=None):
        ds = (wds.WebDataset(urls, shardshuffle=len(urls), empty_check=False).shuffle(1000)
              .decode("pil").to_tuple("jpg;png", "cls").map_tuple(tf, lambda x: x).batched(BATCH, partial=True))
        if n is not None:
            ds = ds.slice(n)
        return wds.WebLoader(ds, batch_size=None, num_workers=workers)

    res = timed(reused(pipeline), spec, lambda b: int(b[0].shape[0]), lambda: iter(pipeline(n=spec["warmup"])))
    return result(res, rss0, {"num_workers": workers, "batch_size": BATCH, "shards": len(urls),
                              "decode": "PIL + " + transform_name() + ", shuffle buffer 1000"},
                  {"webdataset": dist_version("webdataset"), "pillow": dist_version("pillow"),
                   "torch": torch.__version__})
