"""mx8.Dataset through DataLoader(batch_size=None), uint8 NCHW batches of 224x224:

  mx8-train          crop="random" + flip, threads = all cores
  mx8-train-t1       the same with threads=1 (the thread-scaling ratio's denominator)
  mx8-eval           crop="center", resize 256 -> center 224
  mx8-no-crop-aware  mx8-train with crop_aware=False (decode whole JPEGs, then crop)
  mx8-png            mx8-train over the PNG corpus (spec["packed"] is that folder)
"""
from __future__ import annotations

from typing import Any, Dict

from .. import BATCH
from ..harness import cores, result, self_rss_mb, timed


def options(name: str) -> Dict[str, Any]:
    kw: Dict[str, Any] = dict(batch_size=BATCH, size=224, threads=1 if name == "mx8-train-t1" else cores())
    if name in ("mx8-train", "mx8-train-t1", "mx8-png"):
        kw.update(crop="random", flip=True, shuffle=True)
    elif name == "mx8-eval":
        kw.update(crop="center", resize=256, shuffle=False)
    elif name == "mx8-no-crop-aware":
        kw.update(crop="random", flip=True, shuffle=True, crop_aware=False)
    else:
        raise ValueError(name)
    return kw


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    import mx8
    rss0 = self_rss_mb()
    kw = options(spec["name"])
    holder: Dict[str, Any] = {}

    def warmup_iter():
        holder["ds"] = mx8.Dataset(spec["packed"], **kw)  # resolve + manifest parse: part of the first batch
        return iter(torch.utils.data.DataLoader(holder["ds"], batch_size=None))

    def make_iter(epoch: int):
        holder["ds"].set_epoch(epoch)
        return iter(torch.utils.data.DataLoader(holder["ds"], batch_size=None))

    res = timed(make_iter, spec, lambda b: int(b.images.shape[0]), warmup_iter, lambda: holder["ds"].close())
    return result(res, rss0, dict(kw), {"torch": torch.__version__, "mx8": mx8.__version__})
