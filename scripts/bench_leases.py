#!/usr/bin/env python3
"""Lease mode's overhead against plain mx8.Dataset over the same data, in one process.

    .venv/bin/python scripts/bench_leases.py [URI] [--size 224] [--batch-size 64] [--repeats 3]

Times whole passes over the dataset, alternating the contenders, best of --repeats:

  plain        mx8.Dataset(uri, batch_size, size, crop="center") (or decode=False with --raw)
  lease        mx8.LeaseDataset, same options, auto_ack, a private TCPStore on 127.0.0.1 and a
               local lease log fsync'd at every acknowledgement (the default)
  lease-nolog  the same without a lease log (store traffic only)

and prints images/s of each and the ratio lease / plain. Decoding hides the per-batch store
round trips (a few tens of microseconds each on loopback); --raw (no decode) shows them bare.
Default URI: the 5,000-photo corpus scripts/bench.py packs under .cache/bench-packed, else
the quickstart one. Quote ratios, not absolute rates: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mx8  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_uri() -> str:
    for pattern in (".cache/bench-packed/bench-corpus-5000-*", ".cache/quickstart-packed-1000"):
        found = sorted(glob.glob(os.path.join(REPO, pattern)))
        if found and os.path.exists(os.path.join(found[0], "_mx8", "manifest.tsv")):
            return found[0]
    sys.exit("no packed corpus under .cache: run scripts/quickstart.sh or scripts/bench.py first, or pass URI")


def one_pass(make) -> float:
    ds = make()
    n = 0
    t0 = time.perf_counter()
    for batch in ds:
        n += len(batch.sample_ids)
    dt = time.perf_counter() - t0
    ds.close()
    return n / dt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("uri", nargs="?", default=None)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--range-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raw", action="store_true", help="decode=False: bytes only, the overhead bare")
    a = p.parse_args()
    uri = mx8.resolve(a.uri or default_uri()).pinned_uri
    opts = dict(batch_size=a.batch_size, threads=None)
    opts.update(decode=False) if a.raw else opts.update(size=a.size, crop="center")
    tmp = tempfile.mkdtemp(prefix="mx8-bench-leases-")
    runs = {"plain": [], "lease": [], "lease-nolog": []}
    counter = [0]

    def lease(log: bool):
        def make():
            counter[0] += 1
            return mx8.LeaseDataset(uri, job=f"bench{counter[0]}", range_size=a.range_size, auto_ack=True,
                                    log=os.path.join(tmp, f"log{counter[0]}") if log else None, **opts)
        return make

    makers = {"plain": lambda: mx8.Dataset(uri, **opts), "lease": lease(True), "lease-nolog": lease(False)}
    one_pass(makers["plain"])  # warm the page cache
    for _ in range(a.repeats):
        for name, make in makers.items():
            runs[name].append(one_pass(make))
    snap = mx8.resolve(uri)
    print(f"{snap.samples} samples, {'raw bytes' if a.raw else f'decode + center crop {a.size}'}, "
          f"batch {a.batch_size}, range {a.range_size}, {os.cpu_count()} CPUs, best of {a.repeats}")
    best = {k: max(v) for k, v in runs.items()}
    for name, rate in best.items():
        print(f"  {name:12s} {rate:10.0f} images/s   (runs: {', '.join(f'{r:.0f}' for r in runs[name])})")
    print(f"  lease / plain       = {best['lease'] / best['plain']:.3f}")
    print(f"  lease-nolog / plain = {best['lease-nolog'] / best['plain']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
