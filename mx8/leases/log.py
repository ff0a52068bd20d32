"""The lease log: durable, append-only progress of a lease-mode job.

Every worker appends to its own stream, so no two processes ever write the same file or
object (no shared append on NFS, no read-modify-write on S3):

- local directory ``DIR``: ``DIR/log-<worker>.jsonl``, one JSON line per record, each line
  written with one ``write`` and ``fsync``'d before the acknowledgement returns (and the
  directory fsync'd when the file is created);
- ``s3://bucket/prefix/``: one small object per record, ``prefix/log-<worker>/<seq>.json``
  (a PUT is atomic: an object is there whole or not at all).

The first record of a stream is its header, ``{"mx8_lease_log": 1, "job", "manifest_hash",
"samples"}``; the others are ``{"range": [start, end], "acked_upto": a, "gen", "worker",
"t"}``: samples ``start .. a-1`` of the range were acknowledged. A record is written only
after the store accepted the acknowledgement, so a fenced (expired) holder never logs.

On (re)start the job's first worker reads every stream: the union of ``[start, acked_upto)``
is done; what is left is cut into ranges again (:func:`plan_ranges`), so a partly done range
resumes from its last acknowledged position. A stream whose header names another job or
manifest_hash is refused with :class:`mx8.LeaseLogMismatchError`. A torn last line (a crash
in the middle of a write) is ignored: its acknowledgement had not returned.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import LeaseLogMismatchError, ManifestError

FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

Interval = Tuple[int, int]


def safe_name(name: str) -> str:
    return _SAFE.sub("_", name) or "_"


def header(job: str, manifest_hash: str, samples: int) -> Dict[str, object]:
    return {"mx8_lease_log": FORMAT, "job": job, "manifest_hash": manifest_hash, "samples": samples}


def check_header(h: Dict[str, object], where: str, job: str, manifest_hash: str, samples: int) -> None:
    if h.get("mx8_lease_log") != FORMAT:
        raise ManifestError(f"{where}: not an mx8 lease log header: {h!r}")
    if h.get("manifest_hash") != manifest_hash or h.get("job") != job or h.get("samples") != samples:
        raise LeaseLogMismatchError(
            f"lease log {where} was written for job {h.get('job')!r}, manifest_hash {h.get('manifest_hash')} "
            f"({h.get('samples')} samples); this job is {job!r} reading manifest_hash {manifest_hash} "
            f"({samples} samples). Resuming from it would skip or repeat the wrong samples: point "
            f"the job at a fresh log, or read the snapshot the log was written for "
            f"(uri@sha256:{h.get('manifest_hash')}).")


def _parse_stream(lines: Iterable[bytes], where: str, job: str, manifest_hash: str,
                  samples: int) -> List[Interval]:
    out: List[Interval] = []
    first = True
    for raw in lines:
        try:
            rec = json.loads(raw)
        except ValueError:
            continue  # torn write at the end of a stream: never acknowledged
        if first or "mx8_lease_log" in rec:  # a reused stream name repeats its header
            check_header(rec, where, job, manifest_hash, samples)
            first = False
            continue
        start, end = rec["range"]
        acked = int(rec["acked_upto"])
        if not 0 <= start <= acked <= end <= samples:
            raise ManifestError(f"{where}: bad lease record {rec!r}")
        if acked > start:
            out.append((int(start), acked))
    return out


def merge(intervals: Iterable[Interval]) -> List[Interval]:
    out: List[List[int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def plan_ranges(samples: int, range_size: int, done: Iterable[Interval],
                whole_ranges: bool = False) -> List[Interval]:
    """The ranges left to do: the gaps between done intervals, cut on the grid of multiples of
    range_size, so a partly done range resumes as the rest of itself and the untouched ones
    keep their bounds. With ``whole_ranges`` only grid ranges done entirely count as done: a
    partly done one is planned whole again (an ETL sink names its output by range and must
    write all of it)."""
    done = merge(done)
    if whole_ranges:
        grid = []
        for s, e in done:
            lo = -(-s // range_size) * range_size           # first grid start inside [s, e)
            hi = e if e == samples else e - e % range_size  # the grid end at or below e
            if lo < hi:
                grid.append((lo, hi))
        done = grid
    out: List[Interval] = []
    pos = 0
    for s, e in done + [(samples, samples)]:
        while pos < s:
            out.append((pos, min((pos // range_size + 1) * range_size, s)))
            pos = out[-1][1]
        pos = max(pos, e)
    return out


class LeaseLog:
    """A lease log at a local directory or an ``s3://`` prefix."""

    def __init__(self, uri: str, job: str, manifest_hash: str, samples: int) -> None:
        self.uri, self.job, self.manifest_hash, self.samples = uri, job, manifest_hash, samples
        self.s3 = None
        if uri.startswith("s3://"):
            from ..s3io import s3_root
            self.s3 = s3_root(uri)

    # -- reading ------------------------------------------------------------------------

    def done_intervals(self) -> List[Interval]:
        """Acknowledged sample intervals of every stream (checks every header)."""
        found: List[Interval] = []
        if self.s3 is None:
            if not os.path.isdir(self.uri):
                return []
            for name in sorted(os.listdir(self.uri)):
                if name.startswith("log-") and name.endswith(".jsonl"):
                    path = os.path.join(self.uri, name)
                    with open(path, "rb") as f:
                        found += _parse_stream(f.read().split(b"\n"), path, self.job, self.manifest_hash,
                                               self.samples)
            return merge(found)
        from ..s3io import ClientPool, list_objects, map_ordered, threads
        root = self.s3
        pool = ClientPool(root.config)
        streams: Dict[str, List[str]] = {}
        for key, _size in list_objects(pool.get(), root.bucket, root.prefix):
            rel = key[len(root.prefix):]
            stream, _, leaf = rel.partition("/")
            if stream.startswith("log-") and leaf.endswith(".json"):
                streams.setdefault(stream, []).append(key)
        for stream, keys in sorted(streams.items()):
            keys.sort()  # zero-padded sequence numbers: the header first
            got = map_ordered(lambda k: pool.get().get(root.bucket, k), keys, workers=threads(),
                              cost=lambda k: 1, budget=256)
            found += _parse_stream((fut.result() for _, fut in got), root.url(stream), self.job,
                                   self.manifest_hash, self.samples)
        return merge(found)

    def plan(self, range_size: int, whole_ranges: bool = False) -> List[Interval]:
        return plan_ranges(self.samples, range_size, self.done_intervals(), whole_ranges)

    # -- writing ------------------------------------------------------------------------

    def writer(self, worker: str) -> "LogWriter":
        return LogWriter(self, safe_name(worker))


class LogWriter:
    """One worker's append-only stream; :meth:`record` returns once the record is durable."""

    def __init__(self, log: LeaseLog, name: str) -> None:
        self.log = log
        self.name = name
        self.fd: Optional[int] = None
        self.seq = 0
        self.client = None
        self.records = 0
        self.started = False

    def _write(self, rec: Dict[str, object]) -> None:
        data = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        log = self.log
        if log.s3 is not None:
            if self.client is None:
                self.client = log.s3.client()
            key = log.s3.key(f"log-{self.name}/{self.seq:010d}.json")
            self.client.put(log.s3.bucket, key, data, content_type="application/json")
            self.seq += 1
            return
        if self.fd is None:
            os.makedirs(log.uri, exist_ok=True)
            path = os.path.join(log.uri, f"log-{self.name}.jsonl")
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            dfd = os.open(log.uri, os.O_RDONLY)
            try:
                os.fsync(dfd)  # the new file's directory entry is durable too
            finally:
                os.close(dfd)
        os.write(self.fd, data)
        os.fsync(self.fd)

    def record(self, start: int, end: int, acked_upto: int, gen: int, worker: str) -> None:
        if not self.started:
            self._write(header(self.log.job, self.log.manifest_hash, self.log.samples))
            self.started = True
        self._write({"range": [start, end], "acked_upto": acked_upto, "gen": gen, "worker": worker,
                     "t": round(time.time(), 3)})
        self.records += 1

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
