"""Leases on contiguous sample-id ranges, coordinated through a c10d store.

Keys, under ``mx8/lease/<job>/``:

- ``settings``: what every worker of the job must agree on (manifest_hash, samples,
  range_size, lease_timeout_s, whole_ranges, the pacing caps, the user's ``fingerprint``),
  JSON, set once by ``compare_set`` from empty; a worker with other settings is refused
  (:class:`mx8.LeaseJobMismatchError`, naming both values).

and under ``mx8/lease/<job>/<manifest_hash[:16]>/<attempt>/``:

- ``members`` (``append``) and ``m/<worker>``: a heartbeat counter each worker's background
  thread bumps by compare_set every ``timeout/4``. A worker that sees a member's counter
  unchanged for ``timeout`` seconds *of its own monotonic clock* (no cross-host clock
  needed) swaps it to ``dead:<itself>``; a member that was only stalled finds its counter
  swapped at its next beat, stops delivering and rejoins under a new id.
- ``init``: the worker that ``compare_set``s it from empty (or from a member declared dead
  while initialising) reads the lease log and builds the range table under
  ``t/<itself>/``; ``table`` (JSON: the ranges and whose keys they are) is published last,
  by ``compare_set`` from empty, so exactly one complete table is ever used and a stalled
  initialiser's late writes land in keys nobody reads.
- ``t/<by>/r/<i>``: one range, ``"<state> <gen> <owner> <acked> <delivered>"``, state
  ``free|held|done``. Every change is a ``compare_set`` from the exact value the changer
  read: of two workers racing for a range exactly one wins, and a holder whose range was
  taken over (its value changed) cannot deliver or acknowledge into it. ``gen`` grows at
  every change of owner. ``delivered`` is the range's high-water mark of deliveries (it
  never goes down), so whoever takes the range counts re-deliveries below it as duplicates.
- ``t/<by>/cursor`` (atomic ``add``): hands out never-claimed ranges in order;
  ``t/<by>/done`` (atomic ``add``): ranges completed, a hint (see below).

Transitions of a range, with the invariant each keeps (L: the lease log, S: the store):

- take (free, or held by a declared-dead member -> held by me, gen+1): one compare_set.
  Reading resumes at ``acked``; samples in ``[acked, delivered)`` are duplicates.
- deliver (held -> held, delivered = upto): one compare_set before the batch is handed
  over. A death after it: the batch counts as a duplicate when redelivered.
- acknowledge (held -> held at acked = upto, or done): first the log record (fsync'd or
  PUT), then the compare_set, then ``done += 1``. Invariant: S never says more is acked
  than L holds (with ``log_interval_s == 0``), so a job never ends with an accepted
  acknowledgement missing from its log. A death between the log and the compare_set: L
  holds the batch, S does not; the range is taken over from the old position and the batch
  redelivered (a counted duplicate). A death between the compare_set and the ``add``: the
  counter stays one short, and the job still ends: a worker that finds no work scans every
  range and ends when all are done.
- release (held -> free, same acked and delivered): a graceful leave.
- declare dead (a member's heartbeat stalled): whoever first sees the member dead frees
  every range it held (owner ``~<member>``, gen+1), so a stalled holder's next compare_set
  fails at once, and gives back its pacing reservation (both idempotent). Ranges held by a
  member that *left* (an interrupt between a compare_set and its reply) are taken directly.
- build the table: a refusal every worker would meet (mismatched or corrupt log) is
  published as the table; any other failure gives ``init`` back, for the next worker.

A log write that fails raises :class:`mx8.Error` naming the log before the store changes;
the range stays held (and is taken over if the worker dies).
"""
from __future__ import annotations

import functools
import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..errors import Error, LeaseJobMismatchError, LeaseLogMismatchError, ManifestError
from .faults import fault_point
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


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Holds the coordinator's lock: acknowledgements may come from a thread other than the
    one iterating, and a lease's value is read, changed and compare_set as one step."""
    @functools.wraps(method)
    def wrapper(self: "Coordinator", *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def _worker_name() -> str:
    return safe_name(f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(24):06x}")


class Coordinator:
    def __init__(self, store: Any, *, job: str, manifest_hash: str, samples: int, range_size: int,
                 timeout_s: float, attempt: str = "0", log: Optional[LeaseLog] = None,
                 log_interval_s: float = 0.0, pace: Optional[Dict[str, Any]] = None,
                 whole_ranges: bool = False, fingerprint: Optional[str] = None) -> None:
        if range_size < 1:
            raise ValueError(f"range_size must be >= 1, got {range_size}")
        if not timeout_s > 0:
            raise ValueError(f"lease timeout must be positive, got {timeout_s}")
        self.store = store
        self.job, self.manifest_hash, self.samples = job, manifest_hash, samples
        self.range_size, self.timeout_s = range_size, float(timeout_s)
        self.job_prefix = f"mx8/lease/{safe_name(job)}/"
        self.prefix = f"{self.job_prefix}{manifest_hash[:16]}/{attempt}/"
        self.log, self.log_interval_s = log, log_interval_s
        self.pace_opts = dict(pace or {})
        self.whole_ranges = whole_ranges
        self.fingerprint = fingerprint
        self.ranges: List[Tuple[int, int]] = []
        self.table_prefix = ""  # t/<initialiser>/, once the table is known
        self.held: Dict[int, Lease] = {}
        self.counters = {"leases_taken": 0, "leases_completed": 0, "leases_reclaimed": 0, "leases_lost": 0,
                         "leases_released": 0, "workers_declared_dead": 0, "acks_refused": 0,
                         "samples_acked": 0, "rejoined": 0, "pace_bytes_reclaimed": 0}
        self._seen: Dict[str, Tuple[str, float]] = {}  # member -> (value, first seen at)
        self._gone: Set[str] = set()                   # members dead or left: their ranges are free to take
        self._lock = threading.RLock()                 # acks may come from another thread than next()
        self._all_done = False                         # a scan found every range done
        self._hb_stop = threading.Event()
        self._hb_thread: Optional[threading.Thread] = None
        self.fenced = False
        self.worker = ""
        self.pacer: Optional[Pacer] = None
        self.writer: Optional[LogWriter] = None
        self._check_settings()
        self._join()
        try:
            self._init_table()
        except BaseException:
            self._stop(mark="left")  # no heartbeat thread outlives a refused start
            raise

    # -- settings -----------------------------------------------------------------------

    def settings(self) -> Dict[str, Any]:
        """What every worker of the job must agree on, normalised (4000 and 4000.0 agree)."""
        def num(v: Any, kind: type) -> Any:
            return None if v is None else kind(v)
        pace = self.pace_opts
        return {"manifest_hash": self.manifest_hash, "samples": int(self.samples), "range_size": int(self.range_size),
                "lease_timeout_s": float(self.timeout_s), "whole_ranges": bool(self.whole_ranges),
                "fingerprint": self.fingerprint,
                "max_requests_per_s": num(pace.get("max_requests_per_s"), float),
                "max_bytes_in_flight": num(pace.get("max_bytes_in_flight"), int),
                "pace_slot_s": num(pace.get("slot_s"), float) if pace.get("max_requests_per_s") else None}

    def _check_settings(self) -> None:
        mine = self.settings()
        key = self.job_prefix + "settings"
        encoded = json.dumps(mine, sort_keys=True)
        got = self.store.compare_set(key, "", encoded).decode()
        theirs = json.loads(got)
        if theirs == mine:
            return
        diff = [f"{k}: {theirs.get(k)!r} in the job, {v!r} here" for k, v in mine.items() if theirs.get(k) != v]
        raise LeaseJobMismatchError(
            f"lease job {self.job!r}: this worker's settings differ from those its first worker recorded "
            f"in the store ({'; '.join(diff)}). Every worker of a job must read the same snapshot with "
            f"the same range_size, lease_timeout_s, whole_ranges, pacing caps and fingerprint; start "
            f"this one with the job's settings, or give it another job name.")

    # -- membership ---------------------------------------------------------------------

    def _key(self, rest: str) -> str:
        return self.prefix + rest

    def _tkey(self, rest: str) -> str:
        return self.prefix + self.table_prefix + rest

    def _join(self) -> None:
        self.worker = _worker_name()
        self.store.set(self._key(f"m/{self.worker}"), "0")
        self.store.append(self._key("members"), self.worker + ",")
        self.fenced = False
        # The pacer talks to the store from inside the engine's gate: its own connection, so an
        # ack from another thread (under the lock, on self.store) never shares a client with it.
        pace_store = self.store.clone() if hasattr(self.store, "clone") else self.store
        self.pacer = (Pacer(pace_store, self.prefix, self.worker, on_wait=self._observe, **self.pace_opts)
                      if self.pace_opts else None)
        if self.log is not None and self.writer is None:
            self.writer = self.log.writer(self.worker)
            self.writer.open()  # a log we cannot write fails now, before any work, naming it
        self._hb_stop = threading.Event()
        self._hb_thread = threading.Thread(target=self._heartbeat, args=(self.worker, self._hb_stop),
                                           name="mx8-lease-heartbeat", daemon=True)
        self._hb_thread.start()

    def _heartbeat(self, worker: str, stop: threading.Event) -> None:
        key = self._key(f"m/{worker}")
        interval = self.timeout_s / 4
        beat = 0
        try:
            # Own connection: a TCPStore client is not meant for two threads at once.
            store = self.store.clone() if hasattr(self.store, "clone") else self.store
            while not stop.wait(interval):
                want = str(beat + 1)
                if store.compare_set(key, str(beat), want).decode() != want:
                    break  # declared dead (or left): our leases are no longer ours
                beat += 1
            else:
                return  # stopped
        except Exception:  # noqa: BLE001 - the store failed us: we cannot prove we are alive
            pass
        if worker == self.worker:  # not a member we already left behind by rejoining
            self.fenced = True

    @_locked
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
        """Members gone now (declared dead, or left), declaring those whose heartbeat stalled
        for timeout_s. Whoever first sees a member dead frees its ranges and gives its pacing
        reservation back (both idempotent, so a declarer that died in between is covered)."""
        with self._lock:
            others = [m for m in self._members() if m != self.worker and m not in self._gone]
            now = time.monotonic()
            newly_dead: Set[str] = set()
            if others:
                values = self.store.multi_get([self._key(f"m/{m}") for m in others])
                for m, raw in zip(others, values):
                    v = raw.decode()
                    if not (v.startswith("dead") or v == "left"):
                        seen = self._seen.get(m)
                        if seen is None or seen[0] != v:
                            self._seen[m] = (v, now)
                            continue
                        if now - seen[1] < self.timeout_s:
                            continue
                        mark = f"dead:{self.worker}"
                        v = self.store.compare_set(self._key(f"m/{m}"), v, mark).decode()
                        if v == mark:
                            self.counters["workers_declared_dead"] += 1
                        elif not (v.startswith("dead") or v == "left"):
                            self._seen[m] = (v, now)  # it beat just in time: alive
                            continue
                    self._gone.add(m)
                    if v.startswith("dead"):
                        newly_dead.add(m)
            if newly_dead:
                if self.pacer is not None:
                    self.counters["pace_bytes_reclaimed"] += sum(self.pacer.reclaim(m) for m in newly_dead)
                if self.ranges:
                    self._free_ranges_of(newly_dead)
            return self._gone

    def _free_ranges_of(self, dead: Set[str]) -> None:
        """Frees every range the dead members hold, so a holder that was only stalled cannot
        deliver more of them (its next compare_set fails) even before anyone takes them."""
        keys = [self._tkey(f"r/{i}") for i in range(len(self.ranges))]
        for i, raw in enumerate(self.store.multi_get(keys)):
            cur = RangeValue.decode(raw)
            while cur.state == HELD and cur.owner in dead:
                freed = RangeValue(FREE, cur.gen + 1, "~" + cur.owner, cur.acked, cur.delivered)
                if self._cas(i, cur, freed):
                    break
                cur = RangeValue.decode(self.store.get(keys[i]))  # it moved meanwhile: look again

    # -- the table ----------------------------------------------------------------------

    def _init_table(self) -> None:
        """Builds the range table (first worker) or waits for it, taking the building over
        when the worker building it is declared dead."""
        init, table_key = self._key("init"), self._key("table")
        poll = min(0.2, self.timeout_s / 8)
        builder = self.store.compare_set(init, "", self.worker).decode()
        while not self.store.check([table_key]):
            if builder == self.worker:
                self._build_table()
                break
            if builder == "" or builder in self._observe():  # given up, dead or left without a table
                builder = self.store.compare_set(init, builder, self.worker).decode()
                continue
            time.sleep(poll)
        table = json.loads(self.store.get(table_key))
        if "error" in table:
            if table["kind"] == "mismatch":
                raise LeaseLogMismatchError(table["error"])
            raise ManifestError(f"lease job {self.job!r}: its lease log cannot be read: {table['error']}")
        self.table_prefix = f"t/{table['by']}/"
        self.ranges = [(int(s), int(e)) for s, e in table["ranges"]]

    def _build_table(self) -> None:
        self.table_prefix = f"t/{self.worker}/"
        try:
            if self.log is not None:
                ranges = self.log.plan(self.range_size, whole_ranges=self.whole_ranges)
            else:
                ranges = [(s, min(s + self.range_size, self.samples))
                          for s in range(0, self.samples, self.range_size)]
            keys = [self._tkey(f"r/{i}") for i in range(len(ranges))]
            for lo in range(0, len(keys), 4096):
                chunk = ranges[lo:lo + 4096]
                self.store.multi_set(keys[lo:lo + 4096],
                                     [RangeValue(FREE, 0, "-", s, s).encode() for s, _ in chunk])
            self.store.add(self._tkey("cursor"), 0)
            self.store.add(self._tkey("done"), 0)
            fault_point("init:before_table")
            published = json.dumps({"ranges": ranges, "by": self.worker})
        except (LeaseLogMismatchError, ManifestError) as e:
            # A refusal every worker would meet: published, so they all stop with it.
            kind = "mismatch" if isinstance(e, LeaseLogMismatchError) else "corrupt"
            self.store.compare_set(self._key("table"), "", json.dumps({"error": str(e), "kind": kind, "by": self.worker}))
            raise
        except BaseException:
            # Anything else (an interrupt, a transient S3 error) is ours alone: give the
            # building back, so the next worker tries instead of the job being poisoned.
            self.store.compare_set(self._key("init"), self.worker, "")
            raise
        # From empty only: should we have been declared dead while building, the table of
        # whoever took over stands (both were planned from the same log).
        self.store.compare_set(self._key("table"), "", published)

    @property
    def num_ranges(self) -> int:
        return len(self.ranges)

    @_locked
    def finished(self) -> bool:
        """Every range done: the counter says so, or the last scan of the table found it."""
        return self._all_done or self.done_count() >= len(self.ranges)

    def done_count(self) -> int:
        return self.store.add(self._tkey("done"), 0)

    # -- taking ranges ------------------------------------------------------------------

    def _cas(self, index: int, old: RangeValue, new: RangeValue) -> bool:
        want = new.encode()
        return self.store.compare_set(self._tkey(f"r/{index}"), old.encode(), want).decode() == want

    def _take(self, index: int, cur: RangeValue) -> Optional[Lease]:
        new = RangeValue(HELD, cur.gen + 1, self.worker, cur.acked, max(cur.acked, cur.delivered))
        if not self._cas(index, cur, new):
            return None
        start, end = self.ranges[index]
        dead_owner = cur.owner[1:] if cur.owner.startswith("~") else (cur.owner if cur.state == HELD else None)
        lease = Lease(index, start, end, new, reclaimed_from=dead_owner, dup_until=cur.delivered)
        lease.logged_upto = cur.acked
        self.held[index] = lease
        self.counters["leases_taken"] += 1
        if dead_owner:
            self.counters["leases_reclaimed"] += 1
        return lease

    @_locked
    def acquire(self, scan: bool = True) -> Optional[Lease]:
        """A new lease, or None when none is free now. Never-claimed ranges come first, in
        order; then (scan=True) ranges given back, or held by a member declared dead (or one
        that left without giving them back: an interrupt between a compare_set and its reply)."""
        n = len(self.ranges)
        while self.store.add(self._tkey("cursor"), 0) < n:
            i = self.store.add(self._tkey("cursor"), 1) - 1
            if i >= n:
                break
            cur = RangeValue.decode(self.store.get(self._tkey(f"r/{i}")))
            if cur.state == FREE:
                lease = self._take(i, cur)
                if lease is not None:
                    return lease
        if not scan or n == 0:
            return None
        gone = self._observe()
        values = [RangeValue.decode(v) for v in self.store.multi_get([self._tkey(f"r/{i}") for i in range(n)])]
        self._all_done = all(v.state == DONE for v in values)
        first = random.randrange(n)  # spread workers over the table
        for k in range(n):
            i = (first + k) % n
            cur = values[i]
            if cur.state == FREE or (cur.state == HELD and cur.owner in gone):
                lease = self._take(i, cur)
                if lease is not None:
                    return lease
        return None

    # -- delivering and acknowledging ---------------------------------------------------

    def _lost(self, lease: Lease) -> bool:
        lease.lost = True
        self.held.pop(lease.index, None)
        self.counters["leases_lost"] += 1
        return False

    @_locked
    def deliver(self, lease: Lease, upto: int) -> bool:
        """Records that samples up to ``upto`` are being handed to the consumer (so whoever
        takes the range over knows which re-deliveries are duplicates). False: lease lost."""
        if lease.lost:
            return False
        if self.fenced:  # declared dead: whatever we hold is someone else's now
            return self._lost(lease)
        if upto <= lease.value.delivered:
            return True
        v = lease.value
        new = RangeValue(v.state, v.gen, v.owner, v.acked, upto)
        if not self._cas(lease.index, v, new):
            return self._lost(lease)
        lease.value = new
        fault_point("deliver:after_store")
        return True

    @_locked
    def ack(self, lease: Lease, bstart: int, bend: int, deliver_upto: int = 0) -> bool:
        """Acknowledges samples [bstart, bend) of the lease; the range's acked position moves
        over every contiguous acknowledged batch. False: the lease was lost (not recorded in
        the store; the batch will be delivered again elsewhere). Raises mx8.Error when the log
        cannot record it (the store is then unchanged). ``deliver_upto``: the same
        compare_set marks samples up to there delivered (the next batch, about to be handed
        over: :meth:`deliver` then has nothing to record)."""
        if lease.lost or self.fenced:
            self.counters["acks_refused"] += 1
            if not lease.lost:
                self._lost(lease)
            return False
        lease.acked_batches[bstart] = bend
        upto = lease.value.acked
        while upto in lease.acked_batches:
            upto = lease.acked_batches[upto]
        if upto == lease.value.acked or (self.whole_ranges and upto < lease.end):
            return True  # waits for an earlier batch (whole_ranges: for every batch of the range)
        v = lease.value
        new = RangeValue(DONE if upto >= lease.end else HELD, v.gen, v.owner, upto,
                         max(v.delivered, upto, min(deliver_upto, lease.end)))
        fault_point("ack:before_log")
        self._log(lease, upto, v.gen, force=new.state == DONE)  # durable first: S never ahead of L
        fault_point("ack:after_log")
        if not self._cas(lease.index, v, new):
            self.counters["acks_refused"] += 1
            return self._lost(lease)
        fault_point("ack:after_store")
        pos = v.acked
        while pos < upto:
            pos = lease.acked_batches.pop(pos)
        self.counters["samples_acked"] += upto - v.acked
        lease.value = new
        if new.state == DONE:
            self.held.pop(lease.index, None)
            self.counters["leases_completed"] += 1
            self.store.add(self._tkey("done"), 1)
        return True

    def _log(self, lease: Lease, acked: int, gen: int, force: bool) -> None:
        if self.writer is None or acked <= lease.logged_upto:
            return
        now = time.monotonic()
        if force or self.log_interval_s <= 0 or now - lease.logged_at >= self.log_interval_s:
            self.writer.record(lease.start, lease.end, acked, gen, self.worker)
            lease.logged_at, lease.logged_upto = now, acked

    @_locked
    def release(self, lease: Lease) -> None:
        """Gives an unfinished lease back (graceful leave): free at once, from its acked
        position (its delivered mark stays: whoever takes it counts the re-deliveries)."""
        if lease.lost or lease.index not in self.held:
            return
        try:
            self._log(lease, lease.value.acked, lease.value.gen, force=True)  # progress throttled by log_interval_s
        except Error:
            pass  # the log failed (and said so at the ack); the range goes back either way
        v = lease.value
        if self._cas(lease.index, v, RangeValue(FREE, v.gen, "-", v.acked, v.delivered)):
            self.counters["leases_released"] += 1
        else:
            # Still ours in the store under a value we never saw (an interrupted compare_set
            # that landed): free it from that value, else nobody could take it.
            cur = RangeValue.decode(self.store.get(self._tkey(f"r/{lease.index}")))
            if (cur.state == HELD and cur.owner == self.worker and cur.gen == v.gen
                    and self._cas(lease.index, cur, RangeValue(FREE, cur.gen, "-", cur.acked, cur.delivered))):
                self.counters["leases_released"] += 1
        self.held.pop(lease.index, None)
        lease.lost = True

    def _stop(self, mark: str) -> None:
        """Stops heartbeating and marks this member (``left``, unless declared dead)."""
        self._hb_stop.set()
        if self._hb_thread is not None and self._hb_thread is not threading.current_thread():
            self._hb_thread.join(timeout=5)
        try:
            key = self._key(f"m/{self.worker}")
            cur = self.store.get(key).decode()
            if not cur.startswith("dead"):
                self.store.compare_set(key, cur, mark)
        finally:
            if self.writer is not None:
                self.writer.close()

    @_locked
    def leave(self, wait_for_others_s: float = 0.0) -> None:
        """Releases every lease, marks this member as left and stops heartbeating. With
        ``wait_for_others_s`` (the process hosting the store), first waits that long at most
        for the other members to be gone, so they can finish talking to the store."""
        try:
            for lease in list(self.held.values()):
                self.release(lease)
            self._stop(mark="left")
            deadline = time.monotonic() + wait_for_others_s
            while time.monotonic() < deadline:
                self._observe()
                if all(m in self._gone or m == self.worker for m in self._members()):
                    break
                time.sleep(min(0.05, self.timeout_s / 8))
        finally:
            self._hb_stop.set()

    def stats(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(self.counters)
        out.update(worker=self.worker, ranges=len(self.ranges), leases_held=len(self.held))
        if self.writer is not None:
            out["log_records"] = self.writer.records
        if self.pacer is not None:
            out.update(self.pacer.stats())
        return out
