"""The timing harness of the benchmarks: mx8/bench_harness.py (the loop `mx8 bench` uses),
plus what contenders share around it.

mx8/bench_harness.py is loaded from its path rather than imported as mx8.bench_harness:
importing it that way runs mx8/__init__.py (torch, the C extension), which a benchmark's
parent must not do (a child forked from it would start with, and getrusage report, the
parent's RSS) and which the contenders in other virtualenvs cannot (no mx8 there). The file
is standard library only.
"""
from __future__ import annotations

import importlib.util
import os
import resource
from typing import Any, Callable, List

from . import REPO


def _load_timing():
    path = os.path.join(REPO, "mx8", "bench_harness.py")
    spec = importlib.util.spec_from_file_location("benchmarks._mx8_bench_harness", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_timing = _load_timing()
timed_epochs = _timing.timed_epochs
alternate = _timing.alternate
ratio = _timing.ratio
cores = _timing.cores
loadavg = _timing.loadavg
load_note = _timing.load_note


def timed(make_iter: Callable[[int], Any], spec: dict, count_of: Callable[[Any], int],
          warmup_iter: Callable[[], Any], end_warmup: Callable[[], None] = lambda: None) -> dict:
    """timed_epochs with a contender spec's repeats and warm-up batches, logged as the
    children log (indented under the parent's lines)."""
    return timed_epochs(make_iter, spec["repeats"], count_of, warmup_iter=warmup_iter,
                        warmup_batches=spec["warmup"], end_warmup=end_warmup,
                        log=lambda line: print(line, flush=True), indent="    ")


def self_rss_mb() -> float:
    """This process's peak RSS so far (MB): taken after a contender's imports, before any work."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reused(factory: Callable[[], Any]) -> Callable[[int], Any]:
    """make_iter for timed_epochs: one loader, built on first use (its start-up is not repeated
    every epoch), and a fresh iterator over it per epoch."""
    made: List[Any] = []

    def make_iter(epoch: int):
        if not made:
            made.append(factory())
        return iter(made[0])
    return make_iter


def result(timed_result: dict, rss0: float, config: dict, versions: dict) -> dict:
    """A contender's result: the timing plus what the table's notes and columns name."""
    return dict(timed_result, import_rss_mb=rss0, config=config, versions=versions)


def dist_version(dist: str) -> str:
    """The installed version of a distribution, "?" when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"

