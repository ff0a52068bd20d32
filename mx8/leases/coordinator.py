"""Leases on contiguous sample-id ranges, coordinated through a c10d store.

Keys, under ``mx8/lease/<job>/<manifest_hash[:16]>/<attempt>/``:

- ``init``: the first worker to ``compare_set`` it from empty reads the lease log and
  publishes ``table`` (the ranges left to do, JSON) after creating every ``r/<i>``;
- ``r/<i>``: one range, ``"<state> <gen> <owner> <acked> <delivered>"`` with state
  ``free|held|done``. Every change is a ``compare_set`` from the exact value the changer
  read, so of two workers racing for a range exactly one wins, and a holder whose range was
  taken over (its value changed) cannot deliver or acknowledge into it: ``gen`` grows by one
  at every change of owner and is the fencing token;
- ``cursor`` (atomic ``add``): hands out never-claimed ranges in order;
- ``done`` (atomic ``add``): ranges completed; the job is drained when it reaches the count;
- ``members`` (``append``) and ``m/<worker>``: a heartbeat counter each worker's background
  thread bumps by compare_set every ``timeout/4``. A worker that sees a member's counter
  unchanged for ``timeout`` seconds *of its own monotonic clock* (no cross-host clock
  needed) swaps it to ``dead:<itself>``; only then may the member's ranges be taken over
  (from their ``acked`` position; with ``whole_ranges`` acknowledgements are recorded once
  per range, so ``acked`` is the range's start until the range is done). A member declared dead that was only stalled finds its
  counter swapped at its next beat and rejoins under a new id; its old ranges are gone.
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Dict, List, Optional, Set, Tuple

from ..errors import Error, LeaseLogMismatchError
from .log import LeaseLog, LogWriter, safe_name
from .pacing import Pacer

FREE, HELD, DONE = "free", "held", "done"


@dataclass
class RangeValue:
    state: str
    gen: int
    owner: str
    acked: int
    delivered: int

    def encode(self) -> str:
        return f"{self.state} {self.gen} {self.owner} {self.acked} {self.delivered}"

    @staticmethod
    def decode(raw: bytes) -> "RangeValue":
        s, g, o, a, d = raw.decode().split(" ")
        return RangeValue(s, int(g), o, int(a), int(d))


@dataclass
class Lease:
    """A range this worker holds: samples ``acked .. end-1`` are its to deliver."""
    index: int
    start: int
    end: int
    value: RangeValue           # the store's value as of our last successful compare_set
    reclaimed_from: Optional[str] = None  # the dead holder we took it over from
    dup_until: int = 0          # samples below this were delivered by a dead holder, unacked
    logged_at: float = 0.0
    logged_upto: int = -1
    lost: bool = False
    acked_batches: Dict[int, int] = field(default_factory=dict)  # batch start -> end, acked out of order

    @property
    def acked(self) -> int:
        return self.value.acked


def _worker_name() -> str:
    return safe_name(f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(24):06x}")


class Coordinator:
    def __init__(self, store: Any, *, job: str, manifest_hash: str, samples: int, range_size: int,
                 timeout_s: float, attempt: str = "0", log: Optional[LeaseLog] = None,
                 log_interval_s: float = 0.0, pace: Optional[Dict[str, Any]] = None,
                 init_timeout_s: float = 300.0, whole_ranges: bool = False) -> None:
        if range_size < 1:
            raise ValueError(f"range_size must be >= 1, got {range_size}")
        if not timeout_s > 0:
            raise ValueError(f"lease timeout must be positive, got {timeout_s}")
        self.store = store
        self.job, self.manifest_hash, self.samples = job, manifest_hash, samples
        self.range_size, self.timeout_s = range_size, float(timeout_s)
        self.prefix = f"mx8/lease/{safe_name(job)}/{manifest_hash[:16]}/{attempt}/"
        self.log, self.log_interval_s = log, log_interval_s
        self.pace_opts = dict(pace or {})
        self.init_timeout_s = init_timeout_s
        self.whole_ranges = whole_ranges
        self.ranges: List[Tuple[int, int]] = []
        self.held: Dict[int, Lease] = {}
        self.counters = {"leases_taken": 0, "leases_completed": 0, "leases_reclaimed": 0, "leases_lost": 0,
                         "leases_released": 0, "workers_declared_dead": 0, "acks_refused": 0,
                         "samples_acked": 0, "rejoined": 0, "pace_bytes_reclaimed": 0}
        self._seen: Dict[str, Tuple[str, float]] = {}  # member -> (value, first seen at)
        self._gone: Set[str] = set()                   # members dead or left
        self._dead: Set[str] = set()                   # members declared dead
        self._hb_stop = threading.Event()
        self._hb_thread: Optional[threading.Thread] = None
        self.fenced = False
        self.worker = ""
        self.pacer: Optional[Pacer] = None
        self.writer: Optional[LogWriter] = None
        self._join()
        self._init_table()

    # -- membership ---------------------------------------------------------------------

    def _key(self, rest: str) -> str:
        return self.prefix + rest

    def _join(self) -> None:
        self.worker = _worker_name()
        self.beat = 0
        self.store.set(self._key(f"m/{self.worker}"), "0")
        self.store.append(self._key("members"), self.worker + ",")
        self.fenced = False
        self.pacer = Pacer(self.store, self.prefix, self.worker, **self.pace_opts) if self.pace_opts else None
        if self.log is not None and self.writer is None:
            self.writer = self.log.writer(self.worker)
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(target=self._heartbeat, args=(self.worker, self._hb_stop),
                                           name="mx8-lease-heartbeat", daemon=True)
        self._hb_thread.start()

    def _heartbeat(self, worker: str, stop: threading.Event) -> None:
        # Own connection: a TCPStore client is not meant for two threads at once.
        store = self.store.clone() if hasattr(self.store, "clone") else self.store
        key = self._key(f"m/{worker}")
        interval = self.timeout_s / 4
        beat = 0
        while not stop.wait(interval):
            want = str(beat + 1)
            try:
                got = store.compare_set(key, str(beat), want).decode()
            except Exception:  # noqa: BLE001 - store gone: the main thread will see it too
                return
            if got != want:
                self.fenced = True  # declared dead (or left): our leases are no longer ours
                return
            beat += 1

    def rejoin(self) -> None:
        """After being declared dead: drop every lease (others own them now) and come back
        as a new member."""
        self._hb_stop.set()
        for lease in self.held.values():
            lease.lost = True
        self.counters["leases_lost"] += len(self.held)
        self.held.clear()
        self.counters["rejoined"] += 1
        self._join()

    def _members(self) -> List[str]:
        raw = self.store.get(self._key("members")).decode()
        return [m for m in raw.split(",") if m]

    def _observe(self) -> Set[str]:
        """Members known dead now, declaring those whose heartbeat stalled for timeout_s."""
        others = [m for m in self._members() if m != self.worker and m not in self._gone]
        now = time.monotonic()
        if others:
            values = self.store.multi_get([self._key(f"m/{m}") for m in others])
            for m, raw in zip(others, values):
                v = raw.decode()
                if v.startswith("dead") or v == "left":
                    self._gone.add(m)
                    if v.startswith("dead"):
                        self._dead.add(m)
                    continue
                seen = self._seen.get(m)
                if seen is None or seen[0] != v:
                    self._seen[m] = (v, now)
                elif now - seen[1] >= self.timeout_s:
                    mark = f"dead:{self.worker}"
                    if self.store.compare_set(self._key(f"m/{m}"), v, mark).decode() == mark:
                        self.counters["workers_declared_dead"] += 1
                        if self.pacer is not None:
                            self.counters["pace_bytes_reclaimed"] += self.pacer.reclaim(m)
                    self._gone.add(m)
                    self._dead.add(m)
        return self._dead

    # -- the table ----------------------------------------------------------------------

    def _init_table(self) -> None:
        init = self._key("init")
        if self.store.compare_set(init, "", self.worker).decode() == self.worker:
            try:
                if self.log is not None:
                    ranges = self.log.plan(self.range_size, whole_ranges=self.whole_ranges)
                else:
                    ranges = [(s, min(s + self.range_size, self.samples))
                              for s in range(0, self.samples, self.range_size)]
                keys = [self._key(f"r/{i}") for i in range(len(ranges))]
                for lo in range(0, len(keys), 4096):
                    chunk = ranges[lo:lo + 4096]
                    self.store.multi_set(keys[lo:lo + 4096],
                                         [RangeValue(FREE, 0, "-", s, s).encode() for s, _ in chunk])
                self.store.add(self._key("cursor"), 0)
                self.store.add(self._key("done"), 0)
                self.store.set(self._key("table"), json.dumps({"ranges": ranges}))
            except BaseException as e:
                kind = "mismatch" if isinstance(e, LeaseLogMismatchError) else "other"
                self.store.set(self._key("table"), json.dumps({"error": str(e), "kind": kind}))
                raise
        else:
            self.store.wait([self._key("table")], timedelta(seconds=self.init_timeout_s))
        table = json.loads(self.store.get(self._key("table")))
        if "error" in table:
            if table["kind"] == "mismatch":
                raise LeaseLogMismatchError(table["error"])
            raise Error(f"lease job {self.job!r}: the worker that read the lease log failed: {table['error']}")
        self.ranges = [(int(s), int(e)) for s, e in table["ranges"]]

    @property
    def num_ranges(self) -> int:
        return len(self.ranges)

    def finished(self) -> bool:
        return self.store.add(self._key("done"), 0) >= len(self.ranges)

    def done_count(self) -> int:
        return self.store.add(self._key("done"), 0)

    # -- taking ranges ------------------------------------------------------------------

    def _cas(self, index: int, old: RangeValue, new: RangeValue) -> bool:
        want = new.encode()
        return self.store.compare_set(self._key(f"r/{index}"), old.encode(), want).decode() == want

    def _take(self, index: int, cur: RangeValue, dead_owner: Optional[str]) -> Optional[Lease]:
        new = RangeValue(HELD, cur.gen + 1, self.worker, cur.acked, cur.acked)
        if not self._cas(index, cur, new):
            return None
        start, end = self.ranges[index]
        lease = Lease(index, start, end, new, reclaimed_from=dead_owner,
                      dup_until=cur.delivered if dead_owner else 0)
        lease.logged_upto = cur.acked
        self.held[index] = lease
        self.counters["leases_taken"] += 1
        if dead_owner:
            self.counters["leases_reclaimed"] += 1
        return lease

    def acquire(self, scan: bool = True) -> Optional[Lease]:
        """A new lease, or None when none is free now. Never-claimed ranges come first, in
        order; then (scan=True) ranges given back, or held by a member declared dead."""
        n = len(self.ranges)
        while self.store.add(self._key("cursor"), 0) < n:
            i = self.store.add(self._key("cursor"), 1) - 1
            if i >= n:
                break
            cur = RangeValue.decode(self.store.get(self._key(f"r/{i}")))
            if cur.state == FREE:
                lease = self._take(i, cur, None)
                if lease is not None:
                    return lease
        if not scan or n == 0:
            return None
        dead = self._observe()
        values = self.store.multi_get([self._key(f"r/{i}") for i in range(n)])
        first = random.randrange(n)  # spread workers over the table
        for k in range(n):
            i = (first + k) % n
            cur = RangeValue.decode(values[i])
            if cur.state == FREE:
                lease = self._take(i, cur, None)
            elif cur.state == HELD and cur.owner in dead:
                lease = self._take(i, cur, cur.owner)
            else:
                continue
            if lease is not None:
                return lease
        return None

    # -- delivering and acknowledging ---------------------------------------------------

    def _lost(self, lease: Lease) -> bool:
        lease.lost = True
        self.held.pop(lease.index, None)
        self.counters["leases_lost"] += 1
        return False

    def deliver(self, lease: Lease, upto: int) -> bool:
        """Records that samples up to ``upto`` are being handed to the consumer (so whoever
        takes the range over knows which re-deliveries are duplicates). False: lease lost."""
        if lease.lost:
            return False
        if upto <= lease.value.delivered:
            return True
        v = lease.value
        new = RangeValue(v.state, v.gen, v.owner, v.acked, upto)
        if not self._cas(lease.index, v, new):
            return self._lost(lease)
        lease.value = new
        return True

    def ack(self, lease: Lease, bstart: int, bend: int) -> bool:
        """Acknowledges samples [bstart, bend) of the lease; the range's acked position moves
        over every contiguous acknowledged batch. False: the lease was lost (not recorded)."""
        if lease.lost:
            self.counters["acks_refused"] += 1
            return False
        lease.acked_batches[bstart] = bend
        upto = lease.value.acked
        while upto in lease.acked_batches:
            upto = lease.acked_batches[upto]
        if upto == lease.value.acked or (self.whole_ranges and upto < lease.end):
            return True  # waits for an earlier batch (whole_ranges: for every batch of the range)
        pos = lease.value.acked
        while pos < upto:
            pos = lease.acked_batches.pop(pos)
        v = lease.value
        new = RangeValue(DONE if upto >= lease.end else HELD, v.gen, v.owner, upto, max(v.delivered, upto))
        if not self._cas(lease.index, v, new):
            self.counters["acks_refused"] += 1
            return self._lost(lease)
        self.counters["samples_acked"] += upto - v.acked
        lease.value = new
        if new.state == DONE:
            self.held.pop(lease.index, None)
            self.counters["leases_completed"] += 1
        self._log(lease, force=new.state == DONE)
        if new.state == DONE:
            self.store.add(self._key("done"), 1)
        return True

    def _log(self, lease: Lease, force: bool) -> None:
        if self.writer is None or lease.value.acked <= lease.logged_upto:
            return
        now = time.monotonic()
        if force or self.log_interval_s <= 0 or now - lease.logged_at >= self.log_interval_s:
            self.writer.record(lease.start, lease.end, lease.value.acked, lease.value.gen, self.worker)
            lease.logged_at, lease.logged_upto = now, lease.value.acked

    def release(self, lease: Lease) -> None:
        """Gives an unfinished lease back (graceful leave): free at once, from its acked position."""
        if lease.lost or lease.index not in self.held:
            return
        self._log(lease, force=True)
        v = lease.value
        if self._cas(lease.index, v, RangeValue(FREE, v.gen, "-", v.acked, v.acked)):
            self.counters["leases_released"] += 1
        self.held.pop(lease.index, None)
        lease.lost = True

    def leave(self, wait_for_others_s: float = 0.0) -> None:
        """Releases every lease, marks this member as left and stops heartbeating. With
        ``wait_for_others_s`` (the process hosting the store), first waits that long at most
        for the other members to be gone, so they can finish talking to the store."""
        try:
            for lease in list(self.held.values()):
                self.release(lease)
            self._hb_stop.set()
            if self._hb_thread is not None:
                self._hb_thread.join(timeout=5)
            key = self._key(f"m/{self.worker}")
            cur = self.store.get(key).decode()
            if not cur.startswith("dead"):
                self.store.compare_set(key, cur, "left")
            deadline = time.monotonic() + wait_for_others_s
            while time.monotonic() < deadline:
                self._observe()
                if all(m in self._gone or m == self.worker for m in self._members()):
                    break
                time.sleep(min(0.05, self.timeout_s / 8))
        finally:
            self._hb_stop.set()
            if self.writer is not None:
                self.writer.close()

    def stats(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.counters)
        out.update(worker=self.worker, ranges=len(self.ranges), leases_held=len(self.held))
        if self.writer is not None:
            out["log_records"] = self.writer.records
        if self.pacer is not None:
            out.update(self.pacer.stats())
        return out
