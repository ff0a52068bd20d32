"""Resize a packed dataset into new tar shards, in lease mode: a crash and a rerun give the
same output set, with nothing missing and nothing doubled.

    python examples/etl_resize.py data/train-mx8 out/train-64 --job resize64 --size 64 --workers 4
    python examples/etl_resize.py s3://bucket/train/ s3://bucket/train-64/ --job resize64 --workers 8

Each lease range [start, end) of sample ids becomes one shard, ``part-<start>-<end>.tar``,
holding ``<label>/<sample_id>.jpg`` per sample (the decoded, resized image re-encoded as
JPEG). A worker writes a range's shard under a temporary name, then renames it into place
(local) or PUTs it (S3: an object appears whole or not at all), and only then acknowledges
the range's batches, which the lease log records durably, as one record for the whole range
(``whole_ranges=True``: a range is done entirely or not at all, so a shard is always written
from the range's first sample). So:

- a range whose shard is committed but not yet acknowledged when the job dies is redone on
  the rerun and its shard rewritten under the same name with the same bytes;
- a range being written when the job dies left at most a temporary file, never a shard;
- a worker that dies mid-range loses its lease after ``--lease-timeout`` seconds and another
  worker redoes the range (same name, same bytes);
- a rerun with another ``--size``, ``--crop``, ``--quality`` or ``--range-size`` is refused
  (the job's fingerprint and range size are in its lease log), so one output never mixes two
  kinds of shard.

Without ``--store``, this process hosts a TCPStore on 127.0.0.1 and starts ``--workers``
worker processes (on one machine). Across machines, host a store (``python -m mx8.leases
serve``) and start this script on every machine with ``--store HOST:PORT --workers K``.
The lease log defaults to ``OUTPUT/_leases`` (a directory, or a prefix under an S3 output).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import List, Optional

import torch


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="packed dataset: directory or s3://bucket/prefix/ (optionally @sha256:<hash>)")
    p.add_argument("output", help="output directory or s3://bucket/prefix/")
    p.add_argument("--job", default=None, help="job name (default: etl-resize-<size>); reruns must use the same")
    p.add_argument("--size", type=int, default=64, help="output side in pixels (default 64)")
    p.add_argument("--crop", default="center", choices=("center", "none"),
                   help="center: resize the shorter side then crop the centre; none: squash to size")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the output (default 90)")
    p.add_argument("--workers", type=int, default=1, help="worker processes to start here (default 1)")
    p.add_argument("--store", default=None, help="HOST:PORT of the job's lease store (default: host one here)")
    p.add_argument("--range-size", type=int, default=512, help="samples per lease and per output shard")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="decode threads per worker")
    p.add_argument("--lease-timeout", type=float, default=30.0, help="seconds before a silent worker's range is redone")
    p.add_argument("--log", default=None, help="lease log (default: OUTPUT/_leases)")
    p.add_argument("--max-requests-per-s", type=float, default=None, help="cluster-wide cap on sample reads per second")
    p.add_argument("--max-bytes-in-flight", type=int, default=None, help="cluster-wide cap on bytes being read")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.job = a.job or f"etl-resize-{a.size}"
    if a.log is None:
        a.log = a.output.rstrip("/") + "/_leases" + ("/" if a.output.startswith("s3://") else "")
    return a


class ShardSink:
    """Commits one tar shard per range, idempotently: local temp file + rename, or S3 PUT."""

    def __init__(self, output: str, worker: str) -> None:
        self.output = output
        self.s3 = None
        if output.startswith("s3://"):
            from mx8.s3io import s3_root
            self.s3 = s3_root(output)
            self.client = self.s3.client()
            self.tmp_dir = tempfile.mkdtemp(prefix="mx8-etl-")
        else:
            self.tmp_dir = os.path.join(output, "_tmp")
            os.makedirs(self.tmp_dir, exist_ok=True)
        self.worker = worker

    def open(self, start: int, end: int):
        from mx8 import _core
        name = f"part-{start:09d}-{end:09d}.tar"
        tmp = os.path.join(self.tmp_dir, f"{name}.{self.worker}.tmp")
        return name, tmp, _core.TarWriter(tmp)

    def commit(self, name: str, tmp: str) -> None:
        if self.s3 is None:
            os.replace(tmp, os.path.join(self.output, name))  # atomic; the writer fsync'd the data
            fd = os.open(self.output, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        with open(tmp, "rb") as f:
            self.client.put(self.s3.bucket, self.s3.key(name), f.read(), content_type="application/x-tar")
        os.unlink(tmp)

    def close(self) -> None:
        if self.s3 is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


def run_worker(a: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    import mx8
    ds = mx8.LeaseDataset(a.input, job=a.job, store=a.store, batch_size=a.batch_size, range_size=a.range_size,
                          lease_timeout_s=a.lease_timeout, log=a.log, size=a.size, crop=a.crop, layout="NHWC",
                          threads=a.threads, max_requests_per_s=a.max_requests_per_s,
                          max_bytes_in_flight=a.max_bytes_in_flight, whole_ranges=True,
                          # What the shards' bytes depend on: a rerun with another size, crop or
                          # quality is refused instead of mixing two kinds of shard in one output.
                          fingerprint=f"etl_resize size={a.size} crop={a.crop} quality={a.quality} jpeg")
    labels = ds.snapshot.labels
    batches = iter(ds)  # joins the job: a refused start (another fingerprint, say) leaves nothing behind
    sink = ShardSink(a.output, f"{socket.gethostname()}-{os.getpid()}")
    current = None  # (start, end, name, tmp, writer, [sample_ids tensors to acknowledge])
    shards = refused = 0
    try:
        for batch in batches:
            info = ds.lease_info(batch)
            if current is None or current[0] != info.range_start:
                if current is not None:  # the previous range was lost mid-way: drop its partial shard
                    current[4].abort()
                name, tmp, writer = sink.open(info.range_start, info.range_end)
                current = (info.range_start, info.range_end, name, tmp, writer, [])
            writer = current[4]
            images = batch.images.numpy()
            for k, (sid, label) in enumerate(zip(batch.sample_ids.tolist(), batch.labels.tolist())):
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(images[k])).save(buf, "JPEG", quality=a.quality)
                cls = labels[label] if labels and 0 <= label < len(labels) else str(label)
                writer.add(f"{cls}/{sid:09d}.jpg", buf.getvalue())
            current[5].append(batch.sample_ids)
            del images, batch
            if info.last:
                writer.finish()
                sink.commit(current[2], current[3])  # the shard is in place before any acknowledgement
                shards += 1
                refused += sum(not ds.ack(ids) for ids in current[5])
                current = None
    finally:
        if current is not None:
            current[4].abort()
        sink.close()
        ds.close()
    st = ds.stats()
    print("mx8-etl worker " + json.dumps({"shards": shards, "acks_refused": refused,
                                          "samples": st.get("samples_delivered", 0),
                                          "duplicates": st.get("duplicates", 0),
                                          "leases_taken": st.get("leases_taken", 0),
                                          "leases_reclaimed": st.get("leases_reclaimed", 0)}), flush=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    a = parse_args(argv)
    if a.worker or (a.store and a.workers == 1):
        if not a.output.startswith("s3://"):
            os.makedirs(a.output, exist_ok=True)
        return run_worker(a)
    from mx8.leases.store import host_store
    store = None
    addr = a.store
    if addr is None:
        store = host_store("127.0.0.1", 0)
        addr = f"127.0.0.1:{store.port}"
    if not a.output.startswith("s3://"):
        os.makedirs(a.output, exist_ok=True)
    argv_base = [a.input, a.output, "--job", a.job, "--size", str(a.size), "--crop", a.crop,
                 "--quality", str(a.quality), "--range-size", str(a.range_size), "--batch-size", str(a.batch_size),
                 "--lease-timeout", str(a.lease_timeout), "--log", a.log, "--store", addr, "--worker"]
    for opt in ("threads", "max_requests_per_s", "max_bytes_in_flight"):
        v = getattr(a, opt)
        if v is not None:
            argv_base += ["--" + opt.replace("_", "-"), str(v)]
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv_base]) for _ in range(a.workers)]
    codes = [p.wait() for p in procs]
    del store
    if any(codes):
        print(f"mx8-etl: workers exited with {codes}", file=sys.stderr)
        return 1
    if not a.output.startswith("s3://"):
        shutil.rmtree(os.path.join(a.output, "_tmp"), ignore_errors=True)  # temporaries of dead workers
    print(f"mx8-etl: done, {a.input} -> {a.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
