"""streaming: MosaicML Streaming, an MDSWriter of the corpus files' bytes read by a
StreamingDataset subclass decoding with the PIL path (the real torchvision transforms: it runs
in .venv-baseline, since `import streaming` imports torchvision) through a DataLoader."""
from __future__ import annotations

import os
from typing import Any, Dict

from .. import BATCH
from ..corpus import cache_dir, samples, write_once
from ..harness import cores, dist_version, result, reused, self_rss_mb, timed
from .pil_path import decode, train_transform, transform_name


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    from streaming import MDSWriter, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    corpus = spec["corpus"]
    items = samples(corpus)

    def write(tmp: str) -> None:
        with MDSWriter(out=tmp, columns={"image": "bytes", "label": "int"}, size_limit="64mb") as w:
            for p, lab in items:
                with open(os.path.join(corpus, p), "rb") as f:
                    w.write({"image": f.read(), "label": lab})

    out = write_once(cache_dir("peers/streaming", corpus), write)
    clean_stale_shared_memory()
    rss0 = self_rss_mb()
    workers = cores()
    tf = train_transform()

    class DS(StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return tf(decode(item["image"])), item["label"]

    def warmup_iter():
        ds = DS(local=out, shuffle=False, batch_size=BATCH)
        sub = torch.utils.data.Subset(ds, range(min(len(items), spec["warmup"] * BATCH)))
        return iter(torch.utils.data.DataLoader(sub, batch_size=BATCH, num_workers=workers))

    make_iter = reused(lambda: torch.utils.data.DataLoader(DS(local=out, shuffle=True, batch_size=BATCH),
                                                           batch_size=BATCH, num_workers=workers,
                                                           persistent_workers=False))
    res = timed(make_iter, spec, lambda b: int(b[0].shape[0]), warmup_iter)
    return result(res, rss0, {"num_workers": workers, "batch_size": BATCH, "decode": "PIL + " + transform_name()},
                  {"mosaicml-streaming": dist_version("mosaicml-streaming"), "pillow": dist_version("pillow"),
                   "torch": torch.__version__})
