"""The timing loop of mx8's benchmarks: ``mx8 bench`` and the repository's ``benchmarks/``
package (scripts/bench*.py) measure with these functions, so their figures mean the same.

Standard library only, and nothing here imports mx8 or torch: ``benchmarks/harness.py`` loads
this file by its path, so that a benchmark's parent process and the contenders that run in
other virtualenvs (torchvision, the peer loaders: no mx8 there) use it without importing
the mx8 package.

- ``timed_epochs``: an optional warm-up of a few batches (which also gives the time to the
  first batch), then whole epochs, the best one counts.
- ``alternate``: contenders in turn, one call each a round, for --rounds rounds, so that
  background load falls on all of them alike.
- ``ratio``, ``cores``, ``load_note``: the figures every report quotes.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple


def cores() -> int:
    """The CPUs this process may run on (its affinity), which is what the threads get."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or zero."""
    return a / b if a and b else None


def loadavg() -> Tuple[float, float, float]:
    return os.getloadavg()


def load_note(start: Sequence[float], end: Sequence[float], ncores: int) -> str:
    """The load average line of every report: other work on the same cores shows here."""
    return ("load average (1/5/15 min) at start {:.1f}/{:.1f}/{:.1f}, at end {:.1f}/{:.1f}/{:.1f} on {} cores "
            "(the bench itself adds up to about that many; more means other work competed for the cores)"
            .format(*start, *end, ncores))


def timed_epochs(make_iter: Callable[[int], Iterable[Any]], repeats: int, count_of: Callable[[Any], int],
                 warmup_iter: Optional[Callable[[], Iterable[Any]]] = None, warmup_batches: int = 0,
                 end_warmup: Optional[Callable[[], None]] = None,
                 log: Optional[Callable[[str], None]] = print, indent: str = "") -> Dict[str, Any]:
    """Times `repeats` whole epochs of `make_iter(epoch)` (count_of(batch) images a batch).

    With warmup_batches > 0, first `warmup_iter()` runs for that many batches (its first batch
    gives first_batch_s, set-up included), then `end_warmup()` stops its work, so that nothing
    left over runs inside the timed window. Without a warm-up, first_batch_s is that of epoch 0.
    Returns {"rate", "images", "epochs": [{"images", "seconds", "rate"}], "first_batch_s"}:
    rate and images are the best epoch's."""
    first: Optional[float] = None
    if warmup_batches > 0:
        if warmup_iter is None:
            raise ValueError("warmup_batches > 0 needs warmup_iter")
        t0 = time.perf_counter()
        batch = None
        for i, batch in enumerate(warmup_iter()):
            if first is None:
                first = time.perf_counter() - t0
            if i + 1 >= warmup_batches:
                break
        del batch  # the loader may recycle its buffer now, not inside the timed window
        if end_warmup is not None:
            end_warmup()
    epochs = []
    for e in range(repeats):
        n = 0
        t = time.perf_counter()
        for batch in make_iter(e):
            if first is None:
                first = time.perf_counter() - t
            n += count_of(batch)
        dt = time.perf_counter() - t
        rate = n / dt if dt > 0 else 0.0
        epochs.append({"images": n, "seconds": dt, "rate": rate})
        if log:
            log(f"{indent}epoch {e}: {n} images in {dt:.2f}s = {rate:.0f} img/s")
    best = max(epochs, key=lambda r: r["rate"]) if epochs else {"rate": 0.0, "images": 0}
    return {"rate": best["rate"], "images": best["images"], "epochs": epochs, "first_batch_s": first}


def alternate(contenders: Dict[str, Callable[[], float]], rounds: int,
              log: Optional[Callable[[str, int, float], None]] = None) -> Dict[str, List[float]]:
    """Calls each contender once a round, in order, for `rounds` rounds; each call returns
    its rate. Returns every rate of each contender (best: max of its list)."""
    runs: Dict[str, List[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, fn in contenders.items():
            rate = fn()
            runs[name].append(rate)
            if log:
                log(name, r, rate)
    return runs
