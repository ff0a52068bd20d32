"""The batch stream: one long-lived native engine and the batch memory handed to it.

An engine (csrc/core/engine.h) lives as long as its stream: its threads, decoders, sample
readers and S3 connections are made once, and it reads one submitted order (a *run*: an
epoch, a lease range) after another, in one sequence of batch numbers. The stream keeps up
to ``depth`` batches provided ahead, across runs, so the workers go from the end of one run
straight into the next. Both modes compose it: ``mx8.Dataset`` submits an epoch per
iteration; lease mode (mx8/leases/) submits each leased range and gates providing on its
pacer.

One thread at a time submits, takes and cancels; :meth:`close` may come from any thread.
"""
from __future__ import annotations

import errno
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from . import _core
from .errors import ReadError, StuckReadWarning


class Batch(NamedTuple):
    """Decoded images: uint8 or float32, (N, 3, H, W) or (N, H, W, 3); labels and sample_ids
    int64 (N,)."""
    images: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor


class RawBatch(NamedTuple):
    """Encoded bytes back to back: sample i is data[offsets[i]:offsets[i+1]]."""
    data: torch.Tensor
    offsets: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor


class Run(NamedTuple):
    """A submitted order: its id and its batch numbers ``first .. first + batches - 1``."""
    id: int
    first: int
    batches: int


class Taken(NamedTuple):
    """A batch out of the stream: its run, its number, the batch (None when its run was
    cancelled) and the samples its batch had before skips dropped some."""
    run: int
    number: int
    batch: Optional[Union[Batch, RawBatch]]
    skipped: int


# A gate decides, per batch about to be provided, whether its reads may start now:
# gate(run, number, block) -> bool (block: nothing else is in flight, so it may wait).
Gate = Callable[[int, int, bool], bool]

STOP_WAIT_MS = 1000  # how long close() waits for a worker inside a sample before abandoning it


class BatchStream:
    """Runs of sample ids in, batches out, in submission order, on one engine.

    Args:
        manifest, paths, threads, batch_size, depth, raw, skip_errors, transform, s3: the
            engine's (``_core.Engine``, csrc/python/engine_type.c).
        image_shape: one decoded sample's shape (None: raw batches).
        dtype, pin: the decoded batches' dtype, and whether batches are pinned.
    """

    def __init__(self, manifest: Any, paths: Sequence[str], *, threads: int, batch_size: int, depth: int,
                 raw: bool, skip_errors: bool, transform: Dict[str, Any], s3: Optional[Dict[str, Any]],
                 image_shape: Optional[Tuple[int, int, int]], dtype: torch.dtype, pin: bool) -> None:
        self.engine = _core.Engine(manifest, paths, threads, batch_size, depth, raw, skip_errors, transform, s3)
        self.batch_size, self.depth = batch_size, depth
        self.image_shape, self.dtype, self.pin = image_shape, dtype, pin
        # Pageable decoded batches come from a pool of recycled buffers, kept for the stream's
        # life: a buffer returns when torch frees the last view of the batch handed out, so
        # nothing is ever overwritten under the user, and steady state (next epoch included)
        # has no allocation and no page faults. Pinned batches use torch's caching host
        # allocator, which recycles the same way. Raw batches get a pool per run sized for its
        # largest batch, when its batches are of similar sizes (a few outsized samples must
        # not make every pooled buffer their size), kept while later runs fit it.
        self.pool, self.pool_nbytes = None, 0
        if image_shape is not None and not pin:
            self.pool_nbytes = batch_size * image_shape[0] * image_shape[1] * image_shape[2] * dtype.itemsize
            self.pool = _core.BufferPool(self.pool_nbytes, depth + 2)
        self.pending: Dict[int, Tuple[Any, ...]] = {}  # batch number -> its buffers
        self.runs: Dict[int, Run] = {}
        self.gate: Optional[Gate] = None
        self.failed: Optional[Tuple[int, int]] = None  # (run, batch number) of the last failed batch
        # How long a cancel waits for the samples in flight: past it a worker is taken to be
        # stuck in a read. On S3 a sample's GET may queue behind the cancelled run's prefetch.
        self.cancel_wait_s = 15.0 if s3 is not None else STOP_WAIT_MS / 1000
        self.closed = False
        self.stuck = False  # a close abandoned a thread blocked in a read
        self._state = threading.Lock()  # close() from another thread vs take() handing out buffers
        self._consumer = threading.RLock()  # submit, fill, take and cancel, one thread at a time
        self.engine.start()

    # -- runs ---------------------------------------------------------------------------

    def submit(self, order: Union[bytes, memoryview, Any], aug_seed: int, fill: bool = True,
               cuts: bytes = b"") -> Run:
        """Queues an order of int64 sample ids (any buffer) after those queued before, and
        (``fill``) provides buffers to its first batches if there is room. ``cuts``: uint64
        offsets in the order where another piece of the epoch begins (S3 requests are planned
        within a piece)."""
        with self._consumer:
            run = Run(*self.engine.submit(order, aug_seed, cuts))
            if run.batches:
                self.runs[run.id] = run
                if self.image_shape is None and not self.pin:
                    self._size_raw_pool(run)
            if fill:
                self.fill()
            return run

    def _size_raw_pool(self, run: Run) -> None:
        nbytes = memoryview(self.engine.run_costs(run.id, run.batches)).cast("q")[1::2]  # a batch's raw bytes
        largest, total = max(nbytes), sum(nbytes)
        if not 0 < largest <= 2 * total / run.batches:
            return  # outsized batches: each gets its own buffer
        if self.pool is None or self.pool_nbytes < largest:
            self.pool, self.pool_nbytes = _core.BufferPool(largest, self.depth + 2), largest

    def cancel(self, run: Run, wait_s: Optional[float] = None) -> bool:
        """Ends a run early: batches of it that have buffers come back (dropped here) once
        the samples being read are done; the rest are never read, and the runs queued after
        it move down by as many batch numbers (``runs`` has their current numbers). False
        when a worker stayed inside a sample past ``wait_s`` (default: ~1 s locally, longer
        on S3, where a sample's GET may queue behind the cancelled run's prefetch and the
        transport's own timeouts bound a hung request): the stream is then closed."""
        with self._consumer:
            if self.closed or run.id not in self.runs:
                return not self.stuck
            current = self.runs.pop(run.id)
            queued = self.engine.queued
            left = self.engine.cancel(run.id)
            dropped = queued - self.engine.queued  # its batches without buffers: later runs move down
            for r in [r for r in self.runs.values() if r.first > current.first]:
                self.runs[r.id] = r._replace(first=r.first - dropped)
            deadline = time.monotonic() + (wait_s if wait_s is not None else self.cancel_wait_s)
            try:
                while left > 0 and not self.closed:
                    if time.monotonic() > deadline:
                        self.close()
                        return False
                    taken = self._take_one(timeout_ms=100)
                    if taken is not None and taken.run == run.id:
                        left -= 1
            except BaseException:
                self.close()  # the engine's state is no longer known here: the next reader makes a new one
                raise
            return not self.closed

    # -- batches ------------------------------------------------------------------------

    def fill(self, block: bool = False) -> None:
        """Provides buffers to the next batches, across runs, up to ``depth`` in flight."""
        with self._consumer:
            e = self.engine
            while not self.closed and e.next_to_provide < e.queued and len(self.pending) < self.depth:
                b = e.next_to_provide
                if self.gate is not None and not self.gate(self.run_of(b).id, b, block and not self.pending):
                    return
                bufs = self._alloc(b)
                # The engine takes the memory from these objects and holds them while it may
                # write: PooledBuffers as they are, tensors as DLPack capsules (which keep them
                # alive). A PooledBuffer is exported to torch only after its batch is taken.
                e.provide(*(x.__dlpack__() if isinstance(x, torch.Tensor) else x for x in bufs))
                self.pending[b] = bufs

    def run_of(self, b: int) -> Run:
        """The run batch number b belongs to."""
        for run in self.runs.values():
            if run.first <= b < run.first + run.batches:
                return run
        raise AssertionError(f"batch {b} belongs to no run")  # the engine's numbers and ours agree

    def _alloc(self, b: int) -> Tuple[Any, ...]:
        n = self.engine.batch_len(b)
        ids = torch.empty(n, dtype=torch.int64)
        labels = torch.empty(n, dtype=torch.int64)
        if self.image_shape is not None:  # decoded: pooled, or pinned by torch's caching allocator
            images = (self.pool.acquire() if self.pool is not None
                      else torch.empty((n,) + self.image_shape, dtype=self.dtype, pin_memory=True))
            return images, labels, ids
        offsets = torch.empty(n + 1, dtype=torch.int64)
        need = self.engine.required_bytes(b)
        try:
            data = (self.pool.acquire() if self.pool is not None and need <= self.pool_nbytes
                    else torch.empty(max(need, 1), dtype=torch.uint8, pin_memory=self.pin))
        except (RuntimeError, MemoryError):
            raise self._raw_batch_too_large(b, need) from None
        return data, labels, ids, offsets

    def _raw_batch_too_large(self, b: int, nbytes: int) -> ReadError:
        """A raw batch is allocated from its samples' manifest byte lengths before any read; a
        manifest may declare more than this machine has (each length up to the 1 GiB limit)."""
        sample_id, location, offset, length = self.engine.largest_sample(b)
        e = ReadError(errno.ENOMEM, f"raw batch {b - self.run_of(b).first} cannot be allocated: its samples' "
                                    f"manifest byte lengths add up to {nbytes} bytes; the largest is sample "
                                    f"{sample_id} ({shorten(location)} @ {offset}+{length}). Check the manifest, "
                                    f"or lower batch_size")
        e.sample_id, e.location, e.offset, e.length = sample_id, location, offset, length
        return e

    def take(self) -> Optional[Taken]:
        """Waits for the next batch (of whichever run comes first); None when no batch is
        queued. Raises the batch's error (on_error="raise"; ``failed`` then names its run and
        number), or StreamClosed when the stream was closed by another thread as the batch
        completed."""
        return self._take_one(timeout_ms=-1)

    def _take_one(self, timeout_ms: int) -> Optional[Taken]:
        with self._consumer:
            if not self.pending:
                self.fill(block=True)
            try:
                got = self.engine.next(timeout_ms)
            except Exception as e:
                if getattr(e, "sample_id", None) is not None:  # a failed batch: the earliest pending one
                    self._drop_failed()
                raise
            if not got:  # None: nothing queued; False: timed out
                return None
            b, count, skipped, run, cancelled = got
            with self._state:
                if self.closed:
                    raise StreamClosed()
                bufs = self.pending.pop(b)
            self._ended(run, b)
            self.fill()
            if cancelled:
                return Taken(run, b, None, 0)
            return Taken(run, b, self._wrap(bufs, count), skipped)

    def _drop_failed(self) -> None:
        with self._state:
            if self.closed or not self.pending:
                return
            b = min(self.pending)
            del self.pending[b]
        run = self.run_of(b)
        self.failed = (run.id, b)
        self._ended(run.id, b)

    def _ended(self, run: int, b: int) -> None:
        """Batch b of run was taken: the run is gone from ``runs`` after its last."""
        r = self.runs.get(run)
        if r is not None and b == r.first + r.batches - 1:
            del self.runs[run]

    def _wrap(self, bufs: Tuple[Any, ...], count: int) -> Union[Batch, RawBatch]:
        if len(bufs) == 3:
            images = bufs[0]
            if not isinstance(images, torch.Tensor):
                images = torch.from_dlpack(images.export((count,) + self.image_shape,
                                                         self.dtype == torch.float32))
            return Batch(images[:count], bufs[1][:count], bufs[2][:count])
        data, labels, ids, offsets = bufs
        used = int(offsets[count])
        if not isinstance(data, torch.Tensor):  # pooled: the tensor's deleter gives the buffer back
            return RawBatch(torch.from_dlpack(data.export((used,))), offsets[:count + 1], labels[:count],
                            ids[:count])
        return RawBatch(data[:used], offsets[:count + 1], labels[:count], ids[:count])

    def stats(self) -> Dict[str, Any]:
        return self.engine.stats()

    def close(self) -> None:
        """Stops the native threads; from any thread, more than once. A thread still inside
        a sample after STOP_WAIT_MS is blocked in a read that does not return (a hung
        network mount): it is abandoned, reported with a StuckReadWarning (engine_type.c
        keeps its memory until it leaves)."""
        with self._state:
            if self.closed:
                return
            self.closed = True
        stuck = self.engine.close(STOP_WAIT_MS)  # in a forked child this only marks it closed
        with self._state:
            self.pending.clear()
        if stuck is None:
            return
        self.stuck = True
        n, sample_id, location, offset, length = stuck
        where = f" {shorten(location)!r}" if location is not None else ""
        if offset is not None:
            where += f" @ {offset}+{length}"
        what = f"sample {sample_id}{where}" if sample_id >= 0 else "a sample"
        warnings.warn(f"mx8: {n} native worker thread(s) still blocked after {STOP_WAIT_MS / 1000:g} s, one "
                      f"reading {what}; abandoned rather than waited for (the thread leaves once its read "
                      f"returns). A hung network mount?", StuckReadWarning, stacklevel=3)


class StreamClosed(Exception):
    """The stream was closed (by another thread) as a batch completed."""


def shorten(location: str) -> str:
    """At most ~400 characters of a location for a message (a hostile manifest's may be MBs)."""
    return location if len(location) <= 400 else location[:300] + "..." + location[-60:]


__all__: List[str] = ["Batch", "RawBatch", "Run", "Taken", "BatchStream", "shorten", "STOP_WAIT_MS"]
