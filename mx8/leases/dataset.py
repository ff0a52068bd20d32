"""``mx8.LeaseDataset``: batches of a snapshot handed out as leases, for inference and ETL jobs
that must keep draining when workers die or join.

Each iteration joins the job's lease table (mx8/leases/coordinator.py), takes a lease on a
contiguous range of sample ids, submits the range's unacknowledged samples as a run to its
one batch stream (mx8/stream.py: the same engine, options and batch types as
:class:`mx8.Dataset`) and yields its batches; the next range is claimed and queued behind the
current one while it finishes. Iteration ends when every range of the job is done, by any
worker.
"""
from __future__ import annotations

import array
import os
import threading
import time
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch

from ..envvars import env_bool, env_int
from ..errors import LeaseLogError, LeaseStoreError, UsageError
from ..resolve import Snapshot, resolve
from ..spec import ReadSpec, open_snapshot
from ..stream import Batch, RawBatch, Run
from ..sharding import derive_seed
from .coordinator import Coordinator, Lease
from .log import LeaseLog
from .pacing import PaceFenced
from .store import open_store, store_errors

DEFAULT_RANGE = 512
DEFAULT_TIMEOUT_S = 30.0
_NOT_FOR_LEASES = ("shuffle", "epoch", "drop_last", "rank", "world_size")


def _env_float(name: str) -> Optional[float]:
    v = os.environ.get(name, "")
    if not v:
        return None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not a number") from None


class LeaseInfo(tuple):
    """Where a delivered batch sits: ``range_start, range_end, batch_start, batch_end, gen``
    (``last``: the batch ends its range)."""
    __slots__ = ()

    def __new__(cls, range_start: int, range_end: int, batch_start: int, batch_end: int, gen: int):
        return tuple.__new__(cls, (range_start, range_end, batch_start, batch_end, gen))

    range_start = property(lambda self: self[0])
    range_end = property(lambda self: self[1])
    batch_start = property(lambda self: self[2])
    batch_end = property(lambda self: self[3])
    gen = property(lambda self: self[4])
    last = property(lambda self: self[3] == self[1])


class LeaseDataset(torch.utils.data.IterableDataset):
    """At-least-once batches of a dataset snapshot, leased range by range to whoever asks.

    Args:
        uri: as for :class:`mx8.Dataset` (pin it with ``@sha256:`` so all workers agree).
        job: the job's name (``MX8_LEASE_JOB``); workers of one job share its ranges.
        batch_size: samples per batch (a range's last batch may be short).
        range_size: samples per lease (``MX8_LEASE_RANGE``, default 512).
        lease_timeout_s: a worker whose heartbeat stalls this long is declared dead and its
            unacknowledged samples go back to the pool (``MX8_LEASE_TIMEOUT_S``, default 30).
        log: lease log directory or ``s3://`` prefix (``MX8_LEASE_LOG``); ``None``: progress
            lives only in the store, and a restarted job starts over.
        log_interval_s: 0 (default) logs every acknowledgement; more logs a range's
            progress at most that often (and always its completion): fewer fsyncs, a
            resume repeats up to that much work.
        store, host_store: the c10d store (mx8/leases/store.py; ``MX8_LEASE_STORE=host:port``,
            ``MX8_LEASE_STORE_HOST=1``).
        auto_ack: acknowledge the previous batch on each ``next()`` (``MX8_LEASE_AUTO_ACK``);
            otherwise call :meth:`ack` once the batch is handled.
        max_requests_per_s, max_bytes_in_flight: cluster-wide pacing caps
            (``MX8_LEASE_MAX_REQUESTS_PER_S``, ``MX8_LEASE_MAX_BYTES_IN_FLIGHT``); every
            worker of the job must pass the same values.
        prefetch_leases: claim the next range and start reading it while the current one
            finishes (1, default) or not (0).
        whole_ranges: record acknowledgements once per range, when all its batches are
            acknowledged (False, default: as they come). A range partly handled when its
            worker dies (or the job stops) is then redone whole, from its first sample,
            never from the middle: for sinks that write one output per range.
        fingerprint: a string naming whatever else the job's workers must agree on (an ETL's
            output size and format, a model's version): recorded with the job in the store and
            in the lease log, and a worker or a rerun with another one is refused.
        **options: everything else :class:`mx8.Dataset` takes (size, crop, decode, dtype,
            layout, threads, prefetch_mb, on_error, ...), except shuffle, epoch, drop_last,
            rank and world_size: leases fix the order (ascending sample ids within a range).
    """

    def __init__(self, uri: Union[str, "os.PathLike[str]", Snapshot], *, batch_size: int,
                 job: Optional[str] = None, range_size: Optional[int] = None,
                 lease_timeout_s: Optional[float] = None, log: Optional[str] = None,
                 log_interval_s: float = 0.0, store: Any = None, host_store: Optional[bool] = None,
                 auto_ack: Optional[bool] = None, max_requests_per_s: Optional[float] = None,
                 max_bytes_in_flight: Optional[int] = None, pace_slot_s: float = 0.1,
                 pace_trace: bool = False, prefetch_leases: int = 1, whole_ranges: bool = False,
                 fingerprint: Optional[str] = None, **options: Any) -> None:
        super().__init__()
        unused = {k: options.pop(k) for k in _NOT_FOR_LEASES if k in options}
        bad = [k for k, v in unused.items() if v not in ((None, 1) if k == "world_size" else (None, False, 0))]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not used in lease mode (ranges are read in sample-id order)")
        seed = options.pop("seed", None)
        self.seed = env_int("MX8_SEED", 0) if seed is None else int(seed)  # of the augmentation
        s3 = options.pop("s3", None)
        self.spec = ReadSpec.of(batch_size=batch_size, **options)  # how to read: as mx8.Dataset does
        self._snapshot: Optional[Snapshot]
        self._snapshot, self._s3 = open_snapshot(uri, s3)
        self.uri = self._snapshot.pinned_uri
        self.batch_size = batch_size
        self.job = job or os.environ.get("MX8_LEASE_JOB") or ""
        if not self.job:
            raise ValueError("lease mode needs a job name: pass job= or set MX8_LEASE_JOB")
        self.range_size = range_size or env_int("MX8_LEASE_RANGE", DEFAULT_RANGE)
        if self.range_size < 1:
            raise ValueError(f"range_size must be >= 1, got {self.range_size}")
        self.lease_timeout_s = lease_timeout_s or _env_float("MX8_LEASE_TIMEOUT_S") or DEFAULT_TIMEOUT_S
        self.log = log if log is not None else (os.environ.get("MX8_LEASE_LOG") or None)
        self.log_interval_s = log_interval_s
        self.store_spec, self.host_store = store, host_store
        self.auto_ack = env_bool("MX8_LEASE_AUTO_ACK", False) if auto_ack is None else bool(auto_ack)
        self.max_requests_per_s = max_requests_per_s or _env_float("MX8_LEASE_MAX_REQUESTS_PER_S")
        mb = max_bytes_in_flight or _env_float("MX8_LEASE_MAX_BYTES_IN_FLIGHT")
        self.max_bytes_in_flight = int(mb) if mb else None
        self.pace_slot_s, self.pace_trace = pace_slot_s, pace_trace
        self.prefetch_leases = prefetch_leases
        self.whole_ranges = bool(whole_ranges)
        self.fingerprint = fingerprint
        self._it: Optional[_LeaseIterator] = None
        self._last_stats: Dict[str, Any] = {}

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = resolve(self.uri, s3=self._s3)
        return self._snapshot

    @property
    def manifest_hash(self) -> str:
        return self.snapshot.manifest_hash

    def __getstate__(self) -> Dict[str, Any]:
        # Native objects do not cross processes: a worker re-resolves the pinned URI.
        state = self.__dict__.copy()
        state["_snapshot"] = None
        state["_it"] = None
        return state

    def __iter__(self) -> Iterator[Union[Batch, RawBatch]]:
        if torch.utils.data.get_worker_info() is not None:
            raise UsageError(
                f"lease job {self.job!r}: LeaseDataset cannot run in DataLoader worker processes. A batch is "
                f"acknowledged in the process that holds its lease, and a loader worker hands its batches to "
                f"the main process through a queue, where neither ds.ack() nor a death can reach the lease "
                f"(acknowledging as the worker hands a batch over would lose it if the main process died). Use "
                f"DataLoader(ds, batch_size=None, num_workers=0): mx8's native threads (threads=N) already "
                f"read and decode in parallel. For more processes, start more LeaseDataset processes with the "
                f"same job and store.")
        self.close()
        try:
            self._it = _LeaseIterator(self)
        except LeaseStoreError:
            if self.log and not self._log().plan(self.range_size, self.whole_ranges):
                # The store is gone because the job is done: its log says every sample is.
                self._last_stats = {"job": self.job, "finished_in_log": True}
                return iter(())  # type: ignore[return-value]
            raise
        return self._it

    def _log(self) -> LeaseLog:
        snap = self.snapshot
        return LeaseLog(self.log, self.job, snap.manifest_hash, len(snap.manifest), range_size=self.range_size,
                        whole_ranges=self.whole_ranges, fingerprint=self.fingerprint)

    def ack(self, batch: Union[Batch, RawBatch, torch.Tensor]) -> bool:
        """Acknowledges a delivered batch: its samples are done and will not be delivered again.
        A batch that extends its range's acknowledged prefix is recorded (in the lease log,
        durably, then in the store) before this returns; one acknowledged ahead of an earlier,
        still unacknowledged batch of its range (or, with ``whole_ranges``, before the range's
        last) is kept by this worker until that prefix is complete, and redelivered elsewhere
        should the worker die first. False when the lease had expired and another worker owns
        the range (the samples will be delivered again there). Raises
        :class:`mx8.LeaseLogError` when the log cannot record it: this worker then gives all
        its leases back and its next ``next()`` raises the same error.
        Only the batch's ``sample_ids`` tensor identifies it: you may keep just that tensor
        (and pass it here) and let the images go. A range completes only when all its batches
        are acknowledged, and iteration ends only when every range is complete: acknowledge
        (or drop) what you hold before asking for the next batch at the end of a range."""
        if self._it is None:
            raise ValueError("ack(): no iteration in progress in this process (a LeaseDataset is acknowledged "
                             "by the process iterating it)")
        return self._it.ack(batch)

    def lease_info(self, batch: Union[Batch, RawBatch, torch.Tensor]) -> LeaseInfo:
        """The range a delivered, not yet acknowledged batch came from."""
        if self._it is None:
            raise ValueError("lease_info(): no iteration in progress")
        return self._it.info(batch)

    def stats(self) -> Dict[str, Any]:
        """Lease counters (leases_taken/completed/reclaimed/lost/released, duplicates,
        samples_delivered/acked, acks_refused, workers_declared_dead), pacing (this worker's
        requests and bytes in flight and its share of the cluster's), and the engines'
        counters (images, bytes_read, errors, skipped, read_s, decode_s, ...) over all ranges."""
        return self._it.stats() if self._it is not None else dict(self._last_stats)

    def close(self) -> None:
        """Gives unfinished leases back (they are free at once for the other workers) and leaves."""
        if self._it is not None:
            self._it.close()
            self._last_stats = self._it.stats()
            self._it = None

    def __enter__(self) -> "LeaseDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Active:
    """A lease being read: its run on the stream and the position of the next batch it yields."""

    def __init__(self, lease: Lease, run: Run, costs: Optional[memoryview]) -> None:
        self.lease, self.run, self.costs = lease, run, costs
        self.next_pos = lease.acked
        self.left = run.batches


class _LeaseIterator:
    def __init__(self, ds: LeaseDataset) -> None:
        self.ds = ds
        self.snap = ds.snapshot
        store, self.store_desc, attempt = open_store(ds.store_spec, ds.host_store)
        self.store = store
        with store_errors(self.store_desc):
            self._start(ds, store, attempt)

    def _start(self, ds: LeaseDataset, store: Any, attempt: str) -> None:
        self.hosting = self.store_desc.startswith(("hosting", "private"))
        log = ds._log() if ds.log else None
        pace = {}
        if ds.max_requests_per_s or ds.max_bytes_in_flight:
            pace = {"max_requests_per_s": ds.max_requests_per_s, "max_bytes_in_flight": ds.max_bytes_in_flight,
                    "slot_s": ds.pace_slot_s, "trace": ds.pace_trace}
        self.coord = Coordinator(store, job=ds.job, manifest_hash=self.snap.manifest_hash,
                                 samples=len(self.snap.manifest), range_size=ds.range_size,
                                 timeout_s=ds.lease_timeout_s, attempt=attempt, log=log,
                                 log_interval_s=ds.log_interval_s, pace=pace, whole_ranges=ds.whole_ranges,
                                 fingerprint=ds.fingerprint)
        self.decode = ds.spec.decode
        self.reserved: Dict[int, int] = {}  # batch number -> bytes the pacer reserved for it
        self.leases: List[_Active] = []  # submitted, in run order: [0] is being delivered
        self._open_stream()
        self.aug_seed = derive_seed(self.snap.manifest_hash, ds.seed, 0, "augment")
        self.delivered: Dict[int, Tuple[Lease, int, int, torch.Tensor]] = {}  # id(sample_ids) -> ...
        self.warned_unacked = False
        self.last: Optional[Union[Batch, RawBatch]] = None
        self.closed = False
        self.log_failed: Optional[LeaseLogError] = None  # the log broke: leases given back, next() raises
        self.thread = threading.get_ident()              # the thread iterating
        self.counters = {"batches": 0, "samples_delivered": 0, "duplicates": 0, "wait_for_work_s": 0.0,
                         "leases_dropped": 0}
        self.started = time.monotonic()

    # -- ranges -------------------------------------------------------------------------

    def _submit(self, lease: Optional[Lease]) -> bool:
        """Queues a lease's unacknowledged samples as a run on the stream."""
        if lease is None:
            return False
        positions = array.array("q", range(lease.acked, lease.end))  # int64 ids, as the engine takes
        run = self.stream.submit(positions, self.aug_seed, fill=False)
        costs = None
        if self.coord.pacer is not None:  # per batch (samples, bytes), from the engine
            costs = memoryview(self.stream.engine.run_costs(run.id, run.batches)).cast("q")
        self.leases.append(_Active(lease, run, costs))
        self.stream.fill()  # after the lease is known: the gate asks for its costs
        return True

    def _gate(self, run: int, b: int, block: bool) -> bool:
        """The pacer's say on providing batch number b: its reads start only within the caps."""
        a = self._lease_of_run(run)
        k = 2 * (b - self.stream.runs[run].first)
        n, nbytes = a.costs[k], a.costs[k + 1]  # type: ignore[index]
        if not self.coord.pacer.acquire(n, nbytes, block):  # type: ignore[union-attr]
            return False
        self.reserved[b] = nbytes
        return True

    def _release_reservations(self) -> None:
        """Gives the pacer back the bytes of batches no longer being read."""
        for b in [b for b in self.reserved if b not in self.stream.pending]:
            self.coord.pacer.release(self.reserved.pop(b))  # type: ignore[union-attr]

    def _lease_of_run(self, run: int) -> _Active:
        for a in self.leases:
            if a.run.id == run:
                return a
        raise AssertionError(f"run {run} belongs to no lease of this worker")

    def _cancel(self, a: _Active) -> None:
        """Stops reading a lease (lost, or given up): its run is cancelled. Should the stream
        close on the way (a sample stuck past the cancel's wait), every other lease queued on
        it is given back too, and a new stream serves the next ones."""
        ok = True
        if a.left:
            try:
                ok = self.stream.cancel(a.run)
            except Exception:  # noqa: BLE001 - the stream closed itself
                ok = False
        self.leases.remove(a)
        if ok and not self.stream.closed:
            self._release_reservations()
            return
        for other in list(self.leases):
            self.coord.release(other.lease)
        self.leases.clear()
        if self.coord.pacer is not None:
            for nbytes in self.reserved.values():
                self.coord.pacer.release(nbytes)
        self.reserved.clear()
        self._open_stream()

    def _open_stream(self) -> None:
        # One engine for every range this worker reads: its threads and connections go from
        # one lease's run straight into the next.
        self.stream = self.ds.spec.open_stream(self.snap)
        if self.coord.pacer is not None:
            self.stream.gate = self._gate

    def _failed_batch(self) -> None:
        """A batch failed (on_error="raise"): its lease cannot complete here. The rest of its
        run is cancelled and the lease given back at once, from its acknowledged position, so
        the job does not wait on it (whoever takes it meets the same error, loudly)."""
        failed = self.stream.failed
        self._release_reservations()
        a = self._lease_of_run(failed[0]) if failed else None
        if a is not None:
            a.left -= 1
            self._cancel(a)
            self.coord.release(a.lease)

    def _drop_all(self, forget_delivered: bool = True) -> None:
        """Stops reading every lease. Delivered batches stay known unless forgotten: after a
        fence their leases are lost, so acknowledging one returns False instead of failing."""
        for a in list(self.leases):
            self._cancel(a)
        if forget_delivered:
            self.delivered.clear()
        self.last = None

    def _give_back_after_log_failure(self) -> None:
        """The log cannot record acknowledgements any more: every lease goes back at once,
        from its recorded position (another worker finishes it), and next() raises."""
        self._drop_all(forget_delivered=False)
        for lease in list(self.coord.held.values()):
            self.coord.release(lease)

    def _raise_if_log_failed(self) -> None:
        if self.log_failed is not None:
            self._give_back_after_log_failure()
            raise self.log_failed

    def _warn_if_waiting_on_own_acks(self, since: float) -> None:
        """No work left to lease, and the job cannot finish while this worker holds batches it
        delivered and nobody acknowledged: say so once instead of waiting in silence (an ack
        may still come from another thread, so this is a warning, not an error)."""
        n = sum(end - start for lease, start, end, _ in self.delivered.values() if not lease.lost)
        if n and not self.warned_unacked and time.monotonic() - since > 5.0:
            self.warned_unacked = True
            warnings.warn(f"mx8 lease job {self.ds.job!r}: waiting for the job to finish while this worker "
                          f"holds {n} delivered, unacknowledged samples; call ds.ack(batch) after handling "
                          f"each batch, or pass auto_ack=True", RuntimeWarning, stacklevel=3)

    # -- iteration ----------------------------------------------------------------------

    def __iter__(self) -> "_LeaseIterator":
        return self

    def __next__(self) -> Union[Batch, RawBatch]:
        with store_errors(self.store_desc):
            return self._next()

    def _next(self) -> Union[Batch, RawBatch]:
        self.thread = threading.get_ident()
        self._raise_if_log_failed()
        if self.closed:
            raise StopIteration
        if self.ds.auto_ack and self.last is not None:
            last, self.last = self.last, None
            self.ack(last, mark_next=True)
        poll = min(0.2, self.coord.timeout_s / 8)
        waited_since: Optional[float] = None
        while True:
            self._raise_if_log_failed()  # an ack on another thread may have met a broken log
            if self.coord.fenced:
                self._drop_all(forget_delivered=False)
                self.coord.rejoin()
            try:
                if not self.leases and not self._submit(self.coord.acquire(scan=True)):
                    if self.coord.finished():
                        self._finish()
                        raise StopIteration
                    waited_since = waited_since or time.monotonic()
                    self._warn_if_waiting_on_own_acks(waited_since)
                    time.sleep(poll)
                    continue
                a = self.leases[0]
                if a.lease.lost:
                    self.counters["leases_dropped"] += 1
                    self._cancel(a)
                    continue
                if a.left == 0:
                    self.leases.pop(0)
                    continue
                try:
                    taken = self.stream.take()
                except Exception as e:
                    if getattr(e, "sample_id", None) is not None:  # on_error="raise": a batch failed
                        self._failed_batch()
                    raise
                self._release_reservations()
            except PaceFenced:
                self.coord.fenced = True
                continue
            if taken is None or taken.run != a.run.id:
                raise AssertionError(f"lease run {a.run} expected, stream gave {taken}")  # runs come in order
            a.left -= 1
            bstart = a.next_pos
            bend = min(bstart + self.ds.batch_size, a.lease.end)
            a.next_pos = bend
            if a.left == 0:
                self.leases.pop(0)
            batch = taken.batch
            if batch is None or not self.coord.deliver(a.lease, bend):
                continue  # expired under us: the batch is someone else's to deliver now
            if waited_since is not None:
                self.counters["wait_for_work_s"] += time.monotonic() - waited_since
            ids = batch.sample_ids
            n = int(ids.numel())
            if a.lease.dup_until > bstart:
                self.counters["duplicates"] += int((ids < a.lease.dup_until).sum())
            self.counters["batches"] += 1
            self.counters["samples_delivered"] += n
            self.delivered[id(ids)] = (a.lease, bstart, bend, ids)
            tail = self.stream.runs.get(self.leases[-1].run.id) if self.leases else None
            if (len(self.leases) <= 1 and self.ds.prefetch_leases > 0 and tail is not None
                    and self.stream.engine.next_to_provide >= tail.first + tail.batches):
                try:  # the next range queued behind this one: the workers go straight on
                    self._submit(self.coord.acquire(scan=False))
                except PaceFenced:
                    self.coord.fenced = True
            if self.ds.auto_ack:
                self.last = batch
            return batch

    def _entry(self, batch: Union[Batch, RawBatch, torch.Tensor]) -> Tuple[Lease, int, int, torch.Tensor]:
        ids = batch if isinstance(batch, torch.Tensor) else batch.sample_ids
        e = self.delivered.get(id(ids))
        if e is None or e[3] is not ids:
            raise ValueError("not a batch delivered by this iteration and not yet acknowledged")
        return e

    def info(self, batch: Union[Batch, RawBatch]) -> LeaseInfo:
        lease, bstart, bend, _ = self._entry(batch)
        return LeaseInfo(lease.start, lease.end, bstart, bend, lease.value.gen)

    def ack(self, batch: Union[Batch, RawBatch], mark_next: bool = False) -> bool:
        """mark_next (auto_ack, as the next batch is asked for): the same compare_set also marks
        the lease's next batch delivered, which is handed over next, so the batch costs one
        round trip to the store instead of two."""
        if self.last is batch:
            self.last = None
        lease, bstart, bend, ids = self._entry(batch)
        del self.delivered[id(ids)]
        upto = min(bend + self.ds.batch_size, lease.end) if mark_next else 0
        with store_errors(self.store_desc):
            try:
                return self.coord.ack(lease, bstart, bend, deliver_upto=upto)
            except LeaseLogError as e:
                self.log_failed = e
                if threading.get_ident() == self.thread:
                    self._give_back_after_log_failure()
                raise

    def _finish(self, wait: bool = True) -> None:
        if not self.closed:
            self.closed = True
            self._drop_all()
            self.stream.close()
            # The process serving the store lingers until the others are gone (or dead).
            with store_errors(self.store_desc):
                self.coord.leave(wait_for_others_s=2 * self.coord.timeout_s if wait and self.hosting else 0.0)

    def close(self) -> None:
        if not self.closed and self.ds.auto_ack and self.last is not None:
            last, self.last = self.last, None
            try:
                self.ack(last)
            except Exception:  # noqa: BLE001 - closing: the range is given back either way
                pass
        self._finish()

    def stats(self) -> Dict[str, Any]:
        out: Dict[str, Any] = self.stream.stats()
        out.update(self.coord.stats())
        out.update(self.counters)
        out.update(job=self.ds.job, store=self.store_desc, elapsed_s=round(time.monotonic() - self.started, 3))
        return out

    def __del__(self) -> None:
        try:
            self._finish(wait=False)
        except Exception:  # noqa: BLE001
            pass
