"""A lease-mode worker for tests/test_leases*.py: drains a job and records what it did, one
line per event, flushed at once (a SIGKILL loses nothing already written):

    D <ids...>    a batch was delivered (and "processed": the ids were recorded)
    A <ids...>    its acknowledgement was accepted
    R <ids...>    its acknowledgement was refused (the lease had expired)
    S <json>      stats() at the end
    P <json>      pacing trace at the end: [time, "req"|"bytes", amount] events

    python tests/lease_worker.py URI OUT --job J --store HOST:PORT [--stall-at K --marker F]

Without --store the worker finds its store as any lease worker does (under torchrun: the
agent's); "{rank}" in OUT becomes the RANK torchrun gave it.

--stall-at K: after recording batch K (0-based), write --marker and stop acknowledging:
sleep until the marker file is removed (the test SIGKILLs or SIGSTOPs/SIGCONTs us), then
try to acknowledge it.

OUT "-" writes the records to stdout (for --fsize-limit, which caps every file this process
writes: the lease log meets a full disk while the records still get out). MX8_LEASE_FAULT in
the environment kills or stops the worker at a point of the ack path (mx8/leases/faults.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mx8  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("out")
    p.add_argument("--job", required=True)
    p.add_argument("--store", default=None)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--range-size", type=int, default=500)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds of 'work' per batch")
    p.add_argument("--log", default=None)
    p.add_argument("--stall-at", type=int, default=-1)
    p.add_argument("--marker", default=None)
    p.add_argument("--max-requests-per-s", type=float, default=None)
    p.add_argument("--max-bytes-in-flight", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fingerprint", default=None)
    p.add_argument("--whole-ranges", action="store_true")
    p.add_argument("--fsize-limit", type=int, default=0, help="RLIMIT_FSIZE in bytes (EFBIG past it)")
    a = p.parse_args()
    if a.fsize_limit:
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (a.fsize_limit, a.fsize_limit))  # Python ignores SIGXFSZ
    ds = mx8.LeaseDataset(a.uri, job=a.job, store=a.store, batch_size=a.batch_size, range_size=a.range_size,
                          lease_timeout_s=a.timeout, log=a.log, decode=False, threads=a.threads,
                          max_requests_per_s=a.max_requests_per_s, max_bytes_in_flight=a.max_bytes_in_flight,
                          pace_trace=True, pace_slot_s=0.1, fingerprint=a.fingerprint,
                          whole_ranges=a.whole_ranges)
    with (open(a.out.replace("{rank}", os.environ.get("RANK", "0")), "w", buffering=1) if a.out != "-"
          else os.fdopen(os.dup(1), "w", buffering=1)) as out:
        for k, batch in enumerate(ds):
            ids = " ".join(map(str, batch.sample_ids.tolist()))
            out.write(f"D {ids}\n")
            if k == a.stall_at:
                with open(a.marker + ".tmp", "w") as m:
                    m.write(str(os.getpid()))
                os.replace(a.marker + ".tmp", a.marker)
                while os.path.exists(a.marker):
                    time.sleep(0.01)
            if a.sleep:
                time.sleep(a.sleep)
            out.write(f"{'A' if ds.ack(batch) else 'R'} {ids}\n")
        stats = ds.stats()
        out.write("S " + json.dumps(stats) + "\n")
        pacer = ds._it.coord.pacer if ds._it is not None else None
        ds.close()
        out.write("P " + json.dumps(pacer.events if pacer is not None and pacer.events is not None else []) + "\n")
        out.write("END\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
