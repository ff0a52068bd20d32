"""litdata: litdata.optimize() chunks (64 MB) of the corpus files' bytes, read by a
StreamingDataset subclass decoding with the PIL path (pil_path) through StreamingDataLoader.
Imports litdata at module level: its workers are spawned and unpickle LitDS from here."""
from __future__ import annotations

import os
from typing import Any, Dict

import litdata

from .. import BATCH
from ..corpus import cache_dir, samples, write_once
from ..harness import cores, dist_version, result, reused, self_rss_mb, timed
from .pil_path import decode_and_transform, transform_name


class LitDS(litdata.StreamingDataset):
    def __getitem__(self, index):
        item = super().__getitem__(index)
        return decode_and_transform(item["image"]), item["label"]


def _item(item):
    path, label = item
    with open(path, "rb") as f:
        return {"image": f.read(), "label": label}


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    corpus = spec["corpus"]
    items = samples(corpus)

    def write(tmp: str) -> None:
        litdata.optimize(fn=_item, inputs=[(os.path.join(corpus, p), lab) for p, lab in items],
                         output_dir=tmp, chunk_bytes="64MB", num_workers=1)

    out = write_once(cache_dir("peers/litdata", corpus), write)
    rss0 = self_rss_mb()
    workers = cores()

    def loader(n=None):
        ds = LitDS(out, shuffle=True, max_cache_size="10GB")
        if n is not None:
            ds = torch.utils.data.Subset(ds, range(n))
            return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers)
        return litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers)

    res = timed(reused(loader), spec, lambda b: int(b[0].shape[0]),
                lambda: iter(loader(min(len(items), spec["warmup"] * BATCH))))
    return result(res, rss0, {"num_workers": workers, "batch_size": BATCH, "decode": "PIL + " + transform_name()},
                  {"litdata": dist_version("litdata"), "pillow": dist_version("pillow"), "torch": torch.__version__})
