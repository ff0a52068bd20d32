"""The contenders, one module per family. Each module's `run(spec)` times one contender in
the child process (benchmarks.child) and returns harness.result(...): the best epoch's rate
and images, every epoch, the time to the first batch, RSS after its imports, its config and
the versions it ran with.

spec: {"name", "repeats", "warmup" (batches), "corpus" (ImageFolder), "packed" (mx8.pack
output, or the PNG folder for mx8-png), "tjrate"/"pngrate" (probe executables), "png_dir"}.

A module imports its library (torch, torchvision, DALI, ...) inside run(), except where a
library needs a class at module level (litdata's spawned workers unpickle it), and the child
imports only the module of the contender it runs: so each venv needs only its own libraries.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict

# contender -> module of this package
RUNNERS: Dict[str, str] = {
    "mx8-train": "mx8_dataset", "mx8-train-t1": "mx8_dataset", "mx8-eval": "mx8_dataset",
    "mx8-no-crop-aware": "mx8_dataset", "mx8-png": "mx8_dataset",
    "turbojpeg-raw": "raw_probes", "libpng-raw": "raw_probes",
    "dali": "dali", "ffcv": "ffcv", "spdl": "spdl", "litdata": "litdata", "streaming": "streaming",
    "webdataset": "webdataset",
}
TORCHVISION = "torchvision-w"  # torchvision-wN: ImageFolder + Pillow, DataLoader(num_workers=N)


def runner(name: str) -> Callable[[dict], dict]:
    module = "torchvision_pil" if name.startswith(TORCHVISION) else RUNNERS.get(name)
    if module is None:
        raise SystemExit(f"unknown contender {name}")
    return importlib.import_module(f"{__name__}.{module}").run
