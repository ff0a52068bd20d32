"""Lease mode's overhead against plain mx8.Dataset over the same data, in one process.

    .venv/bin/python -m benchmarks.leases [URI] [--size 224] [--batch-size 64] [--repeats 3]
    (or scripts/bench_leases.py)

Times whole passes over the dataset, alternating the contenders, best of --repeats:

  plain        mx8.Dataset(uri, batch_size, size, crop="center") (or decode=False with --raw)
  lease        mx8.LeaseDataset, same options, auto_ack, a private TCPStore on 127.0.0.1 and a
               local lease log fsync'd at every acknowledgement (the default)
  lease-nolog  the same without a lease log (store traffic only)
  lease-1s     the same with log_interval_s=1: a range's progress logged at most once a second
               (and its completion always): fewer fsyncs, and a rerun may repeat up to 1 s

and prints images/s of each and the ratio lease / plain. Decoding hides the per-batch store
round trips (a few tens of microseconds each on loopback); --raw (no decode) shows them bare.
Default URI: the 5,000-photo corpus benchmarks.bench packs under .cache/bench-packed, else
the quickstart one. Quote ratios, not absolute rates: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

from .corpus import find_packed
from .environments import use_project_venv
from .harness import alternate, cores, load_note, loadavg, ratio, timed_epochs
from .report import fmt


def one_pass(make) -> float:
    ds = make()
    r = timed_epochs(lambda epoch: iter(ds), 1, lambda batch: len(batch.sample_ids), log=None)
    ds.close()
    return r["rate"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.leases", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", nargs="?", default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--range-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raw", action="store_true", help="decode=False: bytes only, the overhead bare")
    a = p.parse_args(argv)
    use_project_venv("benchmarks.leases")
    import mx8
    uri = a.uri or find_packed(5000)
    if not uri:
        raise SystemExit("no packed corpus under .cache: run scripts/quickstart.sh or scripts/bench.py first, "
                         "or pass URI")
    uri = mx8.resolve(uri).pinned_uri
    opts = dict(batch_size=a.batch_size, threads=None)
    opts.update(decode=False) if a.raw else opts.update(size=a.size, crop="center")
    tmp = tempfile.mkdtemp(prefix="mx8-bench-leases-")
    counter = [0]

    def lease(log: bool, interval: float = 0.0):
        def make():
            counter[0] += 1
            return mx8.LeaseDataset(uri, job=f"bench{counter[0]}", range_size=a.range_size, auto_ack=True,
                                    log=os.path.join(tmp, f"log{counter[0]}") if log else None,
                                    log_interval_s=interval, **opts)
        return make

    makers = {"plain": lambda: mx8.Dataset(uri, **opts), "lease": lease(True), "lease-nolog": lease(False),
              "lease-1s": lease(True, 1.0)}
    one_pass(makers["plain"])  # warm the page cache
    load0 = loadavg()
    runs = alternate({name: (lambda make=make: one_pass(make)) for name, make in makers.items()}, a.repeats)
    snap = mx8.resolve(uri)
    print(f"{snap.samples} samples, {'raw bytes' if a.raw else f'decode + center crop {a.size}'}, "
          f"batch {a.batch_size}, range {a.range_size}, {os.cpu_count()} CPUs, best of {a.repeats}")
    best = {k: max(v) for k, v in runs.items()}
    for name, rate in best.items():
        print(f"  {name:12s} {rate:10.0f} images/s   (runs: {', '.join(f'{r:.0f}' for r in runs[name])})")
    print(f"  lease / plain       = {fmt(ratio(best['lease'], best['plain']), '.3f')}")
    print(f"  lease-nolog / plain = {fmt(ratio(best['lease-nolog'], best['plain']), '.3f')}")
    print(f"  lease-1s / plain    = {fmt(ratio(best['lease-1s'], best['plain']), '.3f')}")
    print(f"  {load_note(load0, loadavg(), cores())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
