"""``python -m mx8.leases serve [--host H] [--port P]``: host the c10d store a standalone lease
job coordinates through (workers: ``MX8_LEASE_STORE=H:P``). ``python -m mx8.leases plan LOG
URI --job J [--range-size N] [--whole-ranges] [--fingerprint F]``: what a restart of job J would still do, from its lease log."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mx8.leases", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="host a TCPStore for lease jobs until interrupted")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=29555)
    q = sub.add_parser("plan", help="ranges a restart would still do, from a lease log")
    q.add_argument("log")
    q.add_argument("uri")
    q.add_argument("--job", required=True)
    q.add_argument("--range-size", type=int, default=512)
    q.add_argument("--whole-ranges", action="store_true", help="as the job ran (LeaseDataset(whole_ranges=True))")
    q.add_argument("--fingerprint", default=None, help="the job's fingerprint, if it gave one")
    a = p.parse_args(argv)
    if a.cmd == "serve":
        from .store import serve
        serve(a.host, a.port)
        return 0
    from ..resolve import resolve
    from .log import LeaseLog
    snap = resolve(a.uri)
    log = LeaseLog(a.log, a.job, snap.manifest_hash, snap.samples, range_size=a.range_size,
                   whole_ranges=a.whole_ranges, fingerprint=a.fingerprint)
    ranges = log.plan(a.range_size, whole_ranges=a.whole_ranges)
    left = sum(e - s for s, e in ranges)
    print(f"{snap.samples - left} of {snap.samples} samples done; {len(ranges)} ranges ({left} samples) left")
    for s_, e in ranges[:20]:
        print(f"  [{s_}, {e})")
    if len(ranges) > 20:
        print(f"  ... {len(ranges) - 20} more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
