"""mx8's benchmarks: a package of the repository, not of the wheel. Run them from the
repository root (scripts/bench*.py do the same):

    python -m benchmarks.bench    mx8 against torchvision + Pillow and the raw decode probes
    python -m benchmarks.peers    mx8 against DALI, FFCV, SPDL, LitData, Streaming, WebDataset
    python -m benchmarks.s3       S3 raw reads against boto3 and awscrt; the train path over S3
    python -m benchmarks.leases   lease mode's overhead against a plain mx8.Dataset
    python -m benchmarks.scale    one rank's epoch over S3 at world sizes 1..16, with latency
    python -m benchmarks.index    resolving millions of samples: the binary index against parsing

Each entry point re-runs itself with .venv's Python; every module has one concern:

    harness       the timing loop (mx8/bench_harness.py, which `mx8 bench` uses too, loaded by
                  path so that no parent or foreign-venv child imports mx8 or torch), make_iter
                  helpers, the contender's own RSS
    child         one contender per process: the parent side (peak RSS by wait4, peak PSS of
                  the process tree by psutil, timeout) and the child side (python -m
                  benchmarks.child SPEC)
    corpus        the real-photo corpus (`mx8 demo-data`), the packed copy, the PNG corpus,
                  peers' on-disk formats: all cached under .cache/
    environments  .venv, the torchvision baseline venv, the peers venv, the C probes of tests/c
    s3_endpoint   nginx on loopback as an S3 endpoint
    delay_proxy   a loopback TCP proxy holding every request a given time (S3's latency)
    contenders/   one module per contender family, named in contenders.RUNNERS
    report        ratio columns, markdown tables, bench.json/peers.json, the chart
"""
from __future__ import annotations

import os
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# corpora, packed copies, peers' formats; MX8_BENCH_CACHE moves them (benchmarks/test_benchmarks.py does)
CACHE = os.environ.get("MX8_BENCH_CACHE") or os.path.join(REPO, ".cache")
BATCH = 256  # images a batch, for every contender


def logger(prefix: str) -> Callable[[str], None]:
    """print(f"[prefix] msg"), flushed: the progress lines of an entry point."""
    def log(msg: str) -> None:
        print(f"[{prefix}] {msg}", flush=True)
    return log
