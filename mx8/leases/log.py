"""The lease log: durable, append-only progress of a lease-mode job.

Every worker appends to its own stream, so no two processes ever write the same file or
object (no shared append on NFS, no read-modify-write on S3):

- local directory ``DIR``: ``DIR/log-<worker>.jsonl``, one JSON line per record, written
  whole (a short write is continued) and ``fsync``'d before the acknowledgement returns (and
  the directory fsync'd when the file is created). A write or fsync that fails truncates the
  stream back to its last whole record and raises :class:`mx8.LeaseLogError` naming the
  file; the writer then refuses every later record, so a stream never has a hole;
- ``s3://bucket/prefix/``: one small object per record, ``prefix/log-<worker>/<seq>.json``
  (a PUT is atomic: an object is there whole or not at all).

The first record of a stream is its header, ``{"mx8_lease_log": 1, "job", "manifest_hash",
"samples", "range_size", "whole_ranges", "fingerprint"}``, written when the worker starts (so
a log that cannot be written fails before any work); the others are ``{"range": [start,
end], "acked_upto": a, "gen", "worker", "t"}``: samples ``start .. a-1`` of the range were
acknowledged. Every record carries ``crc``, the CRC-32 of its JSON without it. A record is
written before the store records the acknowledgement (so the store never says more is done
than the log): a holder fenced in that moment may log a batch that is then delivered again
elsewhere; it was handled, so the log is right to call it done.

On (re)start the job's first worker reads every stream: the union of ``[start, acked_upto)``
is done; what is left is cut into ranges again (:func:`plan_ranges`), so a partly done range
resumes from its last acknowledged position. A stream whose header names another job or
manifest_hash, another fingerprint, or (with whole_ranges on either side) another range_size
is refused with :class:`mx8.LeaseLogMismatchError`. A torn or corrupt last record of a local
stream (a crash in the middle of a write) is ignored: its acknowledgement had not returned.
A bad record anywhere else, or any bad object on S3 (a PUT is whole or absent), is refused
with :class:`mx8.ManifestError` naming the stream and the record.
"""
from __future__ import annotations

import json
import os
import re
import time
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import Error, LeaseLogError, LeaseLogMismatchError, ManifestError
from . import faults

FORMAT = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

Interval = Tuple[int, int]


def safe_name(name: str) -> str:
    return _SAFE.sub("_", name) or "_"


def encode_record(rec: Dict[str, Any]) -> bytes:
    """One record as a line: its JSON, with ``crc`` (CRC-32 of the JSON without it)."""
    body = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    return json.dumps({**rec, "crc": zlib.crc32(body.encode())}, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def decode_record(raw: bytes) -> Optional[Dict[str, Any]]:
    """The record of a line, or None when it is torn or its checksum does not match."""
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    crc = rec.pop("crc", None)
    if crc is not None:  # records from before checksums have none
        if crc != zlib.crc32(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()):
            return None
    return rec


class LogIdentity:
    """What a lease log is for: a header's fields, and the check that a stream matches."""

    def __init__(self, job: str, manifest_hash: str, samples: int, range_size: Optional[int] = None,
                 whole_ranges: bool = False, fingerprint: Optional[str] = None) -> None:
        self.job, self.manifest_hash, self.samples = job, manifest_hash, samples
        self.range_size, self.whole_ranges, self.fingerprint = range_size, whole_ranges, fingerprint

    def header(self) -> Dict[str, object]:
        return {"mx8_lease_log": FORMAT, "job": self.job, "manifest_hash": self.manifest_hash,
                "samples": self.samples, "range_size": self.range_size, "whole_ranges": self.whole_ranges,
                "fingerprint": self.fingerprint}

    def check(self, h: Dict[str, object], where: str) -> None:
        if h.get("mx8_lease_log") != FORMAT:
            raise ManifestError(f"{where}: not an mx8 lease log header: {h!r}")
        if h.get("manifest_hash") != self.manifest_hash or h.get("job") != self.job or h.get("samples") != self.samples:
            raise LeaseLogMismatchError(
                f"lease log {where} was written for job {h.get('job')!r}, manifest_hash {h.get('manifest_hash')} "
                f"({h.get('samples')} samples); this job is {self.job!r} reading manifest_hash {self.manifest_hash} "
                f"({self.samples} samples). Resuming from it would skip or repeat the wrong samples: point "
                f"the job at a fresh log, or read the snapshot the log was written for "
                f"(uri@sha256:{h.get('manifest_hash')}).")
        if h.get("fingerprint") != self.fingerprint:
            raise LeaseLogMismatchError(
                f"lease log {where} was written with fingerprint {h.get('fingerprint')!r}; this job's is "
                f"{self.fingerprint!r}. Its output would mix the two: point the job at a fresh log (and "
                f"output), or run it with the log's fingerprint.")
        whole = bool(h.get("whole_ranges")) or self.whole_ranges
        if whole and h.get("range_size") != self.range_size:
            raise LeaseLogMismatchError(
                f"lease log {where} was written with range_size {h.get('range_size')} (whole_ranges="
                f"{bool(h.get('whole_ranges'))}); this job has range_size {self.range_size} (whole_ranges="
                f"{self.whole_ranges}). Outputs named by range would overlap: run it with the log's range_size.")


def _parse_stream(lines: List[bytes], where: str, ident: LogIdentity, torn_tail_ok: bool) -> List[Interval]:
    out: List[Interval] = []
    first = True
    while lines and not lines[-1].strip():
        lines = lines[:-1]  # the newline after the last record
    for k, raw in enumerate(lines):
        rec = decode_record(raw)
        if rec is None:
            if torn_tail_ok and k == len(lines) - 1:
                continue  # a write cut short at the end of a stream: never acknowledged
            raise ManifestError(f"{where}: record {k + 1} of {len(lines)} is corrupt ({raw[:80]!r}); only a "
                                f"stream's last record may be torn. Was the file edited, or two writers given "
                                f"one stream?")
        if first or "mx8_lease_log" in rec:
            ident.check(rec, where)
            first = False
            continue
        try:
            start, end = rec["range"]
            acked = int(rec["acked_upto"])
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"{where}: record {k + 1}: not a lease record: {rec!r}") from None
        if not 0 <= start <= acked <= end <= ident.samples:
            raise ManifestError(f"{where}: record {k + 1}: bad lease record {rec!r}")
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

    def __init__(self, uri: str, job: str, manifest_hash: str, samples: int, *, range_size: Optional[int] = None,
                 whole_ranges: bool = False, fingerprint: Optional[str] = None) -> None:
        self.uri, self.job, self.manifest_hash, self.samples = uri, job, manifest_hash, samples
        self.ident = LogIdentity(job, manifest_hash, samples, range_size, whole_ranges, fingerprint)
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
                    try:
                        with open(path, "rb") as f:
                            data = f.read()
                    except OSError as e:
                        raise LeaseLogError(f"lease log {path}: cannot read it: {e.strerror}") from None
                    found += _parse_stream(data.split(b"\n"), path, self.ident, torn_tail_ok=True)
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
            found += _parse_stream([fut.result() for _, fut in got], root.url(stream), self.ident,
                                   torn_tail_ok=False)
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
        self.size = 0           # bytes of whole records in the local stream
        self.seq = 0
        self.client = None
        self.records = 0
        self.broken: Optional[LeaseLogError] = None
        self.where = (log.s3.url(f"log-{name}/") if log.s3 is not None
                      else os.path.join(log.uri, f"log-{name}.jsonl"))

    def open(self) -> None:
        """Creates the stream and writes its header: a log that cannot be written fails here,
        when the worker starts, rather than at its first acknowledgement."""
        if self.fd is None and self.seq == 0 and self.broken is None:
            self._write(encode_record(self.log.ident.header()))

    def _fail(self, what: str, e: BaseException) -> LeaseLogError:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        self.broken = LeaseLogError(f"lease log {self.where}: {what}: {detail}. The acknowledgement was not "
                                    f"recorded (the store is unchanged: the batch will be delivered again); "
                                    f"this worker logs nothing more")
        return self.broken

    def _write(self, data: bytes) -> None:
        if self.broken is not None:
            raise self.broken
        if self.log.s3 is not None:
            self._put(data)
        else:
            self._append(data)

    def _put(self, data: bytes) -> None:
        log = self.log
        try:
            if self.client is None:
                self.client = log.s3.client()
            key = log.s3.key(f"log-{self.name}/{self.seq:010d}.json")
            self.client.put(log.s3.bucket, key, data, content_type="application/json")
        except Error as e:
            raise self._fail(f"PUT of record {self.seq} failed", e) from None
        self.seq += 1

    def _append(self, data: bytes) -> None:
        log = self.log
        if self.fd is None:
            try:
                os.makedirs(log.uri, exist_ok=True)
                self.fd = os.open(self.where, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self.size = os.fstat(self.fd).st_size
                dfd = os.open(log.uri, os.O_RDONLY)
                try:
                    os.fsync(dfd)  # the new file's directory entry is durable too
                finally:
                    os.close(dfd)
            except OSError as e:
                raise self._fail("cannot create it", e) from None
        try:
            done = 0
            if faults.fault_due("log:mid_write"):
                os.write(self.fd, data[:len(data) // 2])
                os.fsync(self.fd)
                faults.fire()
            while done < len(data):
                n = os.write(self.fd, data[done:])  # short on a full disk or at RLIMIT_FSIZE: go on
                if n <= 0:
                    raise OSError(0, "the write made no progress")
                done += n
            os.fsync(self.fd)
        except OSError as e:
            err = self._fail(f"writing a {len(data)}-byte record failed after {done} bytes", e)
            try:
                os.ftruncate(self.fd, self.size)  # no torn record in the middle of the stream
            except OSError:
                pass  # then it is the stream's last record: readers skip a torn tail
            raise err from None
        self.size += len(data)

    def record(self, start: int, end: int, acked_upto: int, gen: int, worker: str) -> None:
        self.open()
        self._write(encode_record({"range": [start, end], "acked_upto": acked_upto, "gen": gen,
                                   "worker": worker, "t": round(time.time(), 3)}))
        self.records += 1

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

