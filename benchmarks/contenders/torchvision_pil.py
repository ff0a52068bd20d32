"""torchvision-wN: ImageFolder + Pillow, RandomResizedCrop(224) + RandomHorizontalFlip +
PILToTensor, DataLoader(batch_size=256, shuffle=True, num_workers=N, persistent workers).
Runs in a Python that imports torchvision (environments.baseline_python)."""
from __future__ import annotations

import sys
from typing import Any, Dict

from .. import BATCH
from ..harness import result, reused, self_rss_mb, timed
from . import TORCHVISION


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    import warnings

    import PIL
    import torch
    import torchvision
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    rss0 = self_rss_mb()
    workers = int(spec["name"][len(TORCHVISION):])
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores: on purpose
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
    holder: Dict[str, Any] = {}

    def warmup_iter():
        # The ImageFolder scan is part of the first batch. The warm-up has its own short-lived
        # loader: stopping a persistent one mid-epoch would leave its prefetched batches to
        # be finished inside the first timed epoch.
        holder["ds"] = ds = ImageFolder(spec["corpus"], transform=tf)
        sub = torch.utils.data.Subset(ds, range(min(len(ds), spec["warmup"] * BATCH)))
        return iter(torch.utils.data.DataLoader(sub, batch_size=BATCH, shuffle=True, num_workers=workers))

    make_iter = reused(lambda: torch.utils.data.DataLoader(holder["ds"], batch_size=BATCH, shuffle=True,
                                                           num_workers=workers, persistent_workers=workers > 0))
    res = timed(make_iter, spec, lambda b: int(b[0].shape[0]), warmup_iter)
    return result(res, rss0, {"num_workers": workers, "batch_size": BATCH, "persistent_workers": workers > 0},
                  {"torch": torch.__version__, "torchvision": torchvision.__version__, "pillow": PIL.__version__,
                   "python": sys.executable})
