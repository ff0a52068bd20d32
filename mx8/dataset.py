"""``mx8.Dataset``: an IterableDataset that yields ready batches decoded in native threads.

Python's part is small: resolve the snapshot, compute this consumer's sample order
(mx8/sharding.py) and submit it, epoch after epoch, to the Dataset's batch stream
(mx8/stream.py), whose C engine fills the batch tensors with the GIL released. Nothing is
allocated per image in Python.
"""
from __future__ import annotations

import array
import dataclasses
import functools
import multiprocessing
import multiprocessing.context
import os
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch

from .distributed import World, current_world
from .envvars import env_bool, env_int
from .errors import SnapshotMismatchError, UsageError
from .loader_workers import WorkerShared
from .rendezvous import agree, connect, store_address
from .resolve import Snapshot, resolve
from .s3config import S3Config
from .sharding import NOTHING_READ, Epoch, Progress, derive_seed
from .spec import ReadSpec, open_snapshot
from .stream import Batch, BatchStream, RawBatch, Run, StreamClosed

STATE_FORMAT = "mx8.Dataset/2"  # /1 (before pieces were dealt to ranks) named a prefix of another order

MODES = ("train", "lease")
_SPEC_FIELDS = frozenset(f.name for f in dataclasses.fields(ReadSpec))


class Dataset(torch.utils.data.IterableDataset):
    """Batches of a dataset snapshot, decoded, cropped, resized and flipped in C.

    Use it with ``DataLoader(ds, batch_size=None)`` (it already yields batches), or iterate
    it directly. The fast path is ``num_workers=0``: mx8's own threads do the work.

    Args:
        uri: dataset directory (packed or a plain ImageFolder) or manifest, optionally
            pinned with ``@sha256:<manifest_hash>`` (plus ``+labels:<labels_hash>``, as
            ``Snapshot.pinned_uri`` writes it for a dataset with label names).
        batch_size: samples per batch.
        size: output (h, w) or int; ``None`` (or ``decode=False``) yields raw bytes.
        crop: ``"center"`` (resize shorter side to ``resize``, default size*256/224, then
            center crop), ``"random"`` (RandomResizedCrop with ``scale``/``ratio``), ``"none"``.
        flip: flip half the images horizontally.
        shuffle, seed, epoch: the epoch order (defaults: MX8_SHUFFLE=false, MX8_SEED=0,
            MX8_EPOCH=0); keyword arguments win over the environment.
        drop_last: drop the tail so every batch is full; otherwise ranks are padded to equal
            length (``stats()['padded']``) and the last batch may be short.
        on_error: ``"raise"`` (an mx8.Error naming sample, location and byte range) or
            ``"skip"`` (the sample is left out of its batch and counted in ``stats()``).
        prefetch_mb: bound on batch memory in flight (at least two batches). Over S3 the
            same amount again bounds the bytes fetched and not yet decoded.
        s3_connections: over S3, transfers (and connections) at once (default:
            MX8_S3_CONNECTIONS, else 16).
        s3_io_threads: over S3, the threads that drive those transfers, sharing the
            connections out (default: MX8_S3_IO_THREADS, else 2). Receiving is copying: one
            thread alone tops out near 1 GB/s on loopback (docs/performance.md).
        s3: an :func:`mx8.s3config.s3_config` for an ``s3://`` URI (default: as boto3 resolves
            it). It travels to DataLoader workers with the Dataset (explicit keys included,
            for any start method); credentials from botocore are resolved, and refreshed, in
            each process.
        threads: native worker threads (default: the CPUs this process may use).
        layout: ``"NCHW"`` or ``"NHWC"``.
        dtype: ``"uint8"`` (pixels) or ``"float32"``: ``(x / 255 - mean) / std`` per channel
            (torchvision ToTensor + Normalize), computed by the worker threads.
        pin_memory: allocate batches in pinned memory (default: when CUDA is available).
        max_pixels: images above this many pixels are refused before decoding (ImageTooLargeError,
            or a skip). Default: 10^8 for baseline JPEG, 3*10^7 for PNG and progressive JPEG,
            which are decoded whole and cost several times more a pixel: each is about a
            second of one core and under 300 MB at its limit (scripts/bench_limits.py). An int
            sets one limit for all.
        crop_aware: decode only the part of a JPEG the crop needs (same pixels, faster).
        rank, world_size: override the detected distributed world.
        mode: ``"train"`` (this class: a fixed, deterministic share per rank) or ``"lease"``
            (inference/ETL: ranges leased to whoever asks, reassigned when a worker dies;
            returns a :class:`mx8.LeaseDataset`, see docs/leases.md, which takes ``job=``
            and the lease options). Default: ``MX8_MODE``, else ``"train"``.
    """

    def __new__(cls, *args: Any, mode: Optional[str] = None, **kwargs: Any) -> Any:
        # Only a real construction dispatches: unpickling calls __new__ with no arguments.
        if cls is Dataset and (args or kwargs):
            mode = mode or os.environ.get("MX8_MODE") or "train"
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
            if mode == "lease":
                from .leases import LeaseDataset
                return LeaseDataset(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, uri: Union[str, "os.PathLike[str]", Snapshot], *, batch_size: int,
                 size: Optional[Union[int, Sequence[int]]] = None, crop: str = "center",
                 resize: Optional[int] = None, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3), flip: bool = False,
                 shuffle: Optional[bool] = None, seed: Optional[int] = None, epoch: Optional[int] = None,
                 drop_last: bool = False, on_error: str = "raise", prefetch_mb: int = 256,
                 threads: Optional[int] = None, layout: str = "NCHW", decode: bool = True,
                 dtype: str = "uint8", mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None,
                 pin_memory: Optional[bool] = None, max_pixels: Optional[int] = None,
                 crop_aware: bool = True, dct_scaling: bool = False,
                 s3_connections: Optional[int] = None, s3_io_threads: Optional[int] = None,
                 s3: Optional[S3Config] = None,
                 rank: Optional[int] = None, world_size: Optional[int] = None,
                 mode: Optional[str] = None) -> None:
        super().__init__()
        # How to read (validated once, shared with lease mode); the order lives here.
        self.spec = ReadSpec.of(batch_size=batch_size, size=size, crop=crop, resize=resize, scale=scale, ratio=ratio,
                                flip=flip, on_error=on_error, prefetch_mb=prefetch_mb, threads=threads,
                                layout=layout, decode=decode, dtype=dtype, mean=mean, std=std,
                                pin_memory=pin_memory, max_pixels=max_pixels, crop_aware=crop_aware,
                                dct_scaling=dct_scaling, s3_connections=s3_connections,
                                s3_io_threads=s3_io_threads)
        self._snapshot: Optional[Snapshot]
        self._snapshot, self._s3 = open_snapshot(uri, s3)
        self.uri = self._snapshot.pinned_uri  # workers re-resolve exactly this snapshot, with _s3
        self.batch_size = batch_size
        self.shuffle = env_bool("MX8_SHUFFLE", False) if shuffle is None else bool(shuffle)
        self.seed = env_int("MX8_SEED", 0) if seed is None else int(seed)
        self.epoch = env_int("MX8_EPOCH", 0) if epoch is None else int(epoch)
        # The name of this Dataset's rendezvous, the same on every rank: its place among the
        # Datasets the rank's script made (rank-local ones, world_size=1, do not count).
        self._ordinal = _next_ordinal(world_size)
        # What DataLoader workers share with the process that owns this Dataset: set_epoch()'s
        # value, the epoch they read last, rendezvous and load counts, their counters
        # (mx8/loader_workers.py). A copy another process unpickles (mp.spawn(fn, args=(ds,)))
        # is not that process's: it makes its own on first use (_shared_here).
        self._shared: Optional[WorkerShared] = WorkerShared(self.epoch)
        self._shared_pid = os.getpid()
        # Handed to a spawn or forkserver DataLoader worker as it starts, for it alone: its
        # rank's world and the store to meet the other ranks' workers through.
        self._spawn_world: Optional[Tuple[int, int, int]] = None  # (rank, world_size, pid of the starter)
        self._store_address: Optional[Tuple[str, int]] = None
        # A DataLoader worker's own position, loaded from its state_dict() (StatefulDataLoader
        # keeps one a worker): (worker, num_workers, world_size, batches it had yielded).
        self._worker_resume: Optional[Tuple[int, int, int, int]] = None
        self._load_token = 0  # the owner's load count when this copy's position was loaded
        self._main_begun = -1  # the workers' iterations begun when this process last iterated
        _LIVE.add(self)
        self.drop_last = drop_last
        self._rank, self._world_size = rank, world_size
        # The engine, kept across epochs (threads, decoders, connections, batch buffers), and
        # the process that made it: a fork()ed child makes its own.
        self._stream: Optional[BatchStream] = None
        self._stream_pid = 0
        self._stats_base: Dict[str, Any] = {}  # the engine's counters when this iteration began
        self._iterator: Optional["weakref.ref[_BatchIterator]"] = None  # the current one, to close it
        self._plan_info: Dict[str, int] = {}
        self._resume: Progress = NOTHING_READ  # what this epoch consumed before (load_state_dict)
        self._progress: Optional[_Progress] = None  # batches yielded by the current iteration

    def __getattr__(self, name: str) -> Any:
        # The reading options read as attributes, as before they moved into the spec:
        # ds.threads, ds.size, ds.decode, ds.dtype, ... (read-only: the spec is frozen).
        if name in _SPEC_FIELDS and "spec" in self.__dict__:
            return getattr(self.spec, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- snapshot and pickling -------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = resolve(self.uri, s3=self._s3)
        return self._snapshot

    @property
    def manifest_hash(self) -> str:
        return self.snapshot.manifest_hash

    def __len__(self) -> int:
        """Batches this consumer yields per epoch (DataLoader workers share them)."""
        world = current_world(self._rank, self._world_size)
        samples = self._epoch(world.world_size, self._resume).share(world.rank).samples
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __getstate__(self) -> Dict[str, Any]:
        # Native objects do not cross processes: a DataLoader worker re-resolves the pinned URI.
        state = self.__dict__.copy()
        state["_snapshot"] = None
        state["_stream"] = None
        state["_stats_base"] = {}
        state["_iterator"] = None
        state["_progress"] = None
        if multiprocessing.context.get_spawning_popen() is None:
            # Pickled for anything but starting a process: no shared memory.
            state["_shared"] = None
        else:
            # Starting a process (a spawn or forkserver DataLoader worker, or anything else):
            # a worker cannot see this process's group, so it gets the world and the store to
            # meet the other ranks' workers through; it uses them only as a worker.
            world = current_world(self._rank, self._world_size)
            state["_spawn_world"] = (world.rank, world.world_size, os.getpid())
            state["_store_address"] = store_address()
            state["_shared"], state["_shared_pid"] = self._shared_here(False), os.getpid()  # this process's
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        _LIVE.add(self)  # a copy another process unpickled: claimed before that process forks workers

    def _world(self, in_worker: bool) -> World:
        """The rank and world this consumer reads for; in a spawn or forkserver worker, its
        starter's (handed over as it started: a copy another process started holds that
        process's, which a forked worker of this one must not take)."""
        parent = multiprocessing.parent_process() if in_worker else None
        if self._spawn_world is not None and parent is not None and parent.pid == self._spawn_world[2]:
            rank, world_size, _ = self._spawn_world
            return current_world(self._rank if self._rank is not None else rank,
                                 self._world_size if self._world_size is not None else world_size)
        return current_world(self._rank, self._world_size)

    def _shared_here(self, in_worker: bool) -> Optional[WorkerShared]:
        """The memory this process shares with its loader workers (in a worker: with the
        process that started it), or None in a worker whose starter does not own this copy's
        (a forked copy of one another process unpickled and never used here)."""
        if in_worker:  # the process that started this worker (parent_process: the forkserver's client too)
            parent = multiprocessing.parent_process()
            return self._shared if self._shared is not None and parent is not None and \
                parent.pid == self._shared_pid else None
        if self._shared is None or self._shared_pid != os.getpid():
            self._shared, self._shared_pid = WorkerShared(self.epoch), os.getpid()
        return self._shared

    # -- iteration ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order. Keeps a position loaded by load_state_dict() when the
        epoch is the checkpoint's, so `ds.load_state_dict(sd); ds.set_epoch(sd_epoch)` resumes."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._resume, self._worker_resume = NOTHING_READ, None
            self._progress = None
        self.epoch = epoch
        shared = self._shared_here(torch.utils.data.get_worker_info() is not None)
        if shared is not None:
            shared.epoch.value = epoch

    def _epoch(self, world_size: int, progress: Progress) -> Epoch:
        return Epoch(len(self.snapshot.manifest), self.manifest_hash, self.seed, self.epoch, self.shuffle,
                     world_size, self.batch_size, self.drop_last, progress)

    # -- checkpoints ---------------------------------------------------------------------

    def _position(self) -> Tuple[Progress, int]:
        p = self._progress
        if p is None:  # nothing iterated since the last load (or ever)
            epoch = self._epoch(1, self._resume)
            return epoch.after(0)
        return p.epoch.after(min(p.rank_batches() * self.batch_size, p.per_rank))

    def state_dict(self) -> Dict[str, Any]:
        """Where this epoch stands: save it with your model checkpoint. ``progress`` says which
        samples of the epoch all ranks together have consumed (every rank has yielded the
        same number of batches) without reference to the world size, so a resume may use
        another world size and batch size; ``position`` is how many.

        Counts the batches this process's iterator handed out. Inside a DataLoader worker it
        also holds the worker's own position (``worker``), which torchdata's
        ``StatefulDataLoader`` keeps per worker and gives back to the same worker on
        ``load_state_dict``. Called in the main process for an epoch that a plain
        DataLoader's workers read, it raises :class:`mx8.UsageError` rather than return a
        position the workers' batches do not match."""
        in_worker = torch.utils.data.get_worker_info() is not None
        if not in_worker and self._workers_read_since_main():
            raise UsageError(
                f"state_dict(): epoch {self.epoch} of this Dataset was read by DataLoader worker processes, whose "
                f"position this process cannot see (the loader prefetches ahead of your loop), so a mid-epoch "
                f"checkpoint from here would resume at the wrong batch. Use torchdata's StatefulDataLoader (its "
                f"state_dict() keeps each worker's mx8 position), or DataLoader(ds, batch_size=None, "
                f"num_workers=0): mx8's native threads (threads=N) already read and decode in parallel.")
        p = self._progress
        progress, position = self._position()
        state = {"format": STATE_FORMAT, "manifest_hash": self.manifest_hash, "seed": self.seed,
                 "epoch": self.epoch, "shuffle": self.shuffle, "drop_last": self.drop_last,
                 "batch_size": self.batch_size, "samples": len(self.snapshot.manifest),
                 "world_size": p.world_size if p else None, "position": position, "progress": progress.to_state()}
        if in_worker and p is not None:
            state["worker"] = {"id": p.worker, "of": p.num_workers, "world_size": p.world_size,
                               "batches": p.skipped + p.batches, "start": p.epoch.progress.to_state()}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resumes at the next unseen batch of the saved epoch (any world size, any batch size).
        A worker's state (``worker`` in it) loaded by that same worker of the same loader on
        the same world resumes the worker where it stopped; anywhere else it stands for the
        rank's position when that worker's last batch was delivered."""
        if state.get("format") != STATE_FORMAT:
            hint = (" (written by an mx8 before epochs were dealt to ranks in pieces: that order no longer "
                    "exists, so the epoch cannot resume exactly; start it again)") \
                if state.get("format") == "mx8.Dataset/1" else ""
            raise ValueError(f"not an {STATE_FORMAT} state_dict (format {state.get('format')!r}){hint}")
        if state["manifest_hash"] != self.manifest_hash:
            raise SnapshotMismatchError(f"state_dict is for manifest_hash {state['manifest_hash']}, this dataset "
                                        f"is {self.manifest_hash}")
        progress = Progress.from_state(state["progress"])
        seed, epoch, shuffle, drop_last = int(state["seed"]), int(state["epoch"]), bool(state["shuffle"]), \
            bool(state["drop_last"])
        worker_resume = None
        w, info = state.get("worker"), torch.utils.data.get_worker_info()
        if w is not None and info is not None:
            here = (info.id, info.num_workers, self._world(True).world_size, self.batch_size)
            saved = (w["id"], w["of"], w["world_size"], int(state["batch_size"]))
            if here != saved:
                raise UsageError(
                    f"a DataLoader worker's mx8 state (worker {saved[0]} of {saved[1]}, world size {saved[2]}, "
                    f"batch size {saved[3]}) loaded into worker {here[0]} of {here[1]}, world size {here[2]}, batch "
                    f"size {here[3]}: a StatefulDataLoader resumes only the same loader on the same world. For "
                    f"another one, load mx8.state_from_loader(loader.state_dict()) into the Dataset instead.")
            progress = Progress.from_state(w["start"])
            worker_resume = (info.id, info.num_workers, int(w["world_size"]), int(w["batches"]))
        # Checked before anything changes: a progress this snapshot cannot have (ValueError).
        Epoch(len(self.snapshot.manifest), self.manifest_hash, seed, epoch, shuffle, 1, self.batch_size,
              drop_last, progress).after(0)
        self.seed, self.epoch, self.shuffle, self.drop_last = seed, epoch, shuffle, drop_last
        shared = self._shared_here(info is not None)
        if shared is not None and info is None:
            shared.epoch.value = self.epoch
            shared.loads.value += 1  # persistent workers started before now refuse to go on (see __iter__)
            self._load_token = shared.loads.value
        self._resume, self._worker_resume = progress, worker_resume
        self._progress = None

    def __iter__(self) -> Iterator[Union[Batch, RawBatch]]:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self._iterate(None)
        try:
            return self._iterate(info)
        except Exception as e:  # noqa: BLE001
            # A persistent worker starts each later epoch by calling iter() where an exception
            # kills the worker ("exited unexpectedly", the message lost): raise it from the
            # first next() instead, which the loader hands to the main process.
            return _raising(e)

    def _iterate(self, info: Any) -> Iterator[Union[Batch, RawBatch]]:
        it = self._iterator() if self._iterator is not None else None
        if it is not None:
            it.close()  # ends its run; the engine stays for this one
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        world = self._world(info is not None)
        shared = self._shared_here(info is not None)
        if info is not None and shared is not None:
            self._follow_the_main_process(shared, worker)
        if self._progress is not None and self._progress.finished:
            # The iteration that resumed from a loaded position ended the epoch: the next one
            # (same epoch, no new checkpoint) starts from the beginning. One left early (a
            # peek) leaves the loaded position in place for the next.
            self._resume, self._worker_resume = NOTHING_READ, None
        epoch = self._epoch(world.world_size, self._resume)
        p = epoch.share(world.rank, worker, num_workers)
        skip = 0  # this worker's batches already yielded before a restart (its own state_dict)
        if self._worker_resume is not None and self._worker_resume[:3] == (worker, num_workers, world.world_size):
            skip = min(self._worker_resume[3], -(-p.samples // self.batch_size))
        positions, cuts = _skip_batches(p.positions, p.cuts, skip * self.batch_size)
        self._plan_info = {"padded": p.padded, "dropped": p.dropped, "planned": len(positions) // 8,
                           "start": epoch.after(0)[1], "rank": world.rank, "world_size": world.world_size}
        publish = None
        if info is None:
            if shared is not None:
                self._main_begun = shared.begun.value
        elif shared is not None:
            shared.begin(worker, self._plan_info, self.epoch, num_workers)
            publish = functools.partial(shared.publish, worker)
        checked = self._rendezvous(world, epoch.progress, shared, worker, num_workers if info else 0, skip)
        if publish is not None:
            publish({"rendezvous_checked": checked})
        self._plan_info["rendezvous_checked"] = checked
        resumed = self._load_token if epoch.progress != NOTHING_READ or skip else 0
        self._progress = _Progress(epoch, p.per_rank, worker, num_workers, skip, resumed)
        stream = self._stream_for_iteration()
        self._stats_base = stream.stats()
        run = stream.submit(positions, derive_seed(self.manifest_hash, self.seed, self.epoch, "augment"), cuts=cuts)
        self._progress.finished = run.batches == 0  # nothing left: the loaded position is used up
        # The iterator does not reference the Dataset: dropping it ends the run at once.
        it = _BatchIterator(stream, run, self._progress, publish)
        self._iterator = weakref.ref(it)
        return it

    def _follow_the_main_process(self, shared: WorkerShared, worker: int) -> None:
        """In a DataLoader worker, before an iteration: take the epoch set_epoch() set since
        this copy was made (persistent workers); forget a loaded position this worker already
        read to its end (a non-persistent worker is a fresh copy of the main process's
        Dataset, which still holds it); refuse a load the main process made after this copy."""
        if shared.loads.value != self._load_token:
            raise UsageError("load_state_dict() was called on this Dataset after its persistent DataLoader workers "
                             "started, and they cannot see it: make a new DataLoader (or load the state before the "
                             "first one starts)")
        if shared.epoch.value != self.epoch and self._worker_resume is None:
            self.set_epoch(shared.epoch.value)  # a persistent worker: the main process moved on
        if self._load_token and shared.resume_done(worker) == self._load_token:
            self._resume = NOTHING_READ

    def _workers_read_since_main(self) -> bool:
        """In the main process: DataLoader workers began an iteration of this epoch after this
        process last iterated (so its own position and counters are not the epoch's)."""
        shared = self._shared_here(False)
        return shared is not None and shared.read_epoch.value == self.epoch and shared.begun.value != self._main_begun

    def _stream_for_iteration(self) -> BatchStream:
        """The Dataset's engine, made at the first iteration and kept for the next ones (a new
        one after close(), a hung read, or in a fork()ed child)."""
        st = self._stream
        if st is None or st.closed or self._stream_pid != os.getpid():
            st = self.spec.open_stream(self.snapshot)
            self._stream, self._stream_pid = st, os.getpid()
        return st

    def _rendezvous(self, world: World, progress: Progress, shared: Optional[WorkerShared], worker: int,
                    num_workers: int, skip: int) -> bool:
        """This consumer meets the same consumer of every other rank: the main process (slot 0,
        num_workers 0) or DataLoader worker w, at the same iteration of the same Dataset.
        Workers meet through a TCPStore connection of their own. False when there is nothing
        to meet through (a FileStore group's workers; a worker beyond MAX_WORKERS)."""
        if world.world_size == 1:
            return True
        iteration = shared.next_iteration(worker) if shared is not None else None
        if iteration is None:
            return False
        # The main process and the workers meet in one namespace: a connection of their own to
        # the TCPStore under the group's (PrefixStore-free), or, for a main process whose group
        # has no TCPStore (a FileStore), the group's store itself.
        parent = multiprocessing.parent_process() if num_workers else None
        handed = self._store_address if parent is not None and self._spawn_world is not None and \
            parent.pid == self._spawn_world[2] else None
        address = handed or store_address()
        if address is None and num_workers:
            return False
        store = connect(address) if address is not None else None
        fields = {"manifest_hash": self.manifest_hash, "labels_hash": self.snapshot.labels_hash, "seed": self.seed,
                  "epoch": self.epoch, "shuffle": self.shuffle, "batch_size": self.batch_size,
                  "drop_last": self.drop_last, "progress": progress.to_state(), "world_size": world.world_size,
                  "num_workers": num_workers, "worker_batches_resumed": skip}
        return agree(fields, world, store=store, key=f"ds{self._ordinal}/w{worker}/{iteration}")

    def stats(self) -> Dict[str, Any]:
        """Counters of the current (or last) iteration: images, bytes_read, errors, skipped,
        batches, read_s/decode_s (summed over threads), wait_s (consumer blocked), padded.
        In the main process, for an epoch DataLoader workers read: their counters summed
        (``workers``: how many)."""
        shared = self._shared_here(torch.utils.data.get_worker_info() is not None)
        if torch.utils.data.get_worker_info() is None and shared is not None and self._workers_read_since_main():
            totals = shared.totals(self.epoch)
            if totals is not None:
                world = current_world(self._rank, self._world_size)
                return dict(totals, rank=world.rank, world_size=world.world_size)
        out: Dict[str, Any] = dict(self._plan_info)
        if self._stream is not None:
            out.update(counters_since(self._stream.stats(), self._stats_base))
        return out

    def close(self) -> None:
        """Stops and joins the native threads (kept across epochs until now); from any
        thread. An unfinished iterator's next() then raises mx8.UsageError instead of ending
        quietly. The next iteration starts new threads."""
        it = self._iterator() if self._iterator is not None else None
        if it is not None:
            it.close()
        if self._stream is not None and self._stream_pid == os.getpid():
            self._stream.close()

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Progress:
    """Batches an iteration has yielded; shared by the iterator and its Dataset's state_dict."""

    def __init__(self, epoch: Epoch, per_rank: int, worker: int = 0, num_workers: int = 1, skipped: int = 0,
                 resumed: int = 0) -> None:
        self.epoch = epoch              # the deal this iteration reads its share of
        self.per_rank = per_rank        # samples each rank reads
        self.world_size = epoch.world_size
        self.worker, self.num_workers = worker, num_workers
        self.skipped = skipped          # this worker's batches yielded before a restart
        self.batches = 0                # batches yielded by this iteration
        self.finished = False           # its last batch was handed out
        self.resumed = resumed          # the load it resumed from (the owner's count; 0: none)

    def rank_batches(self) -> int:
        """The rank's batches delivered once this consumer's last one was: with DataLoader
        workers, worker w's b-th batch is the rank's ((b - 1) * workers + w)-th."""
        b = self.skipped + self.batches
        return (b - 1) * self.num_workers + self.worker + 1 if b else 0


def _raising(error: BaseException) -> Iterator[Any]:
    raise error
    yield  # a generator: raises at the first next()


# Every Dataset of this process, so that before a fork (DataLoader workers) each holds shared
# memory of this process's own: a copy unpickled from another process (mp.spawn(fn,
# args=(ds,))) still holds that process's, and its forked workers would count with strangers.
_LIVE: "weakref.WeakSet[Dataset]" = weakref.WeakSet()


def _claim_before_fork() -> None:
    if torch.utils.data.get_worker_info() is None:
        for ds in list(_LIVE):
            ds._shared_here(False)


os.register_at_fork(before=_claim_before_fork)

_ordinals = 0  # Datasets made in this process that meet other ranks


def _next_ordinal(world_size: Optional[int]) -> int:
    global _ordinals
    if world_size == 1:
        return 0  # rank-local: never meets anyone
    _ordinals += 1
    return _ordinals


def _skip_batches(positions: bytes, cuts: bytes, samples: int) -> Tuple[bytes, bytes]:
    """A share without its first ``samples`` ids, and its cuts moved to match."""
    if not samples:
        return positions, cuts
    kept = [c - samples for c in memoryview(cuts).cast("Q") if c > samples]
    return positions[samples * 8:], array.array("Q", kept).tobytes()


class _BatchIterator:
    """Yields the batches of one run (an epoch) of a Dataset's stream, in order."""

    def __init__(self, stream: BatchStream, run: Run, progress: _Progress,
                 publish: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self.stream, self.run, self.progress = stream, run, progress
        # In a DataLoader worker: puts this iteration's counters where the main process reads them.
        self.publish = publish
        self._base = stream.stats() if publish else {}
        self.remaining = run.batches
        self.closed = False
        self.interrupted = False  # closed before the epoch ended: next() then raises UsageError
        self._lock = threading.Lock()  # one thread in next()
        self._pid = os.getpid()

    def __iter__(self) -> "_BatchIterator":
        return self

    def __next__(self) -> Union[Batch, RawBatch]:
        # The concurrency contract (docs/ARCHITECTURE.md): one thread at a time in next(), in
        # the process that made the iterator; close() from anywhere.
        if self._pid != os.getpid():
            raise UsageError(f"this mx8 iterator was made in process {self._pid} and inherited through "
                             f"fork(); its native threads do not exist here. Make a new one in this "
                             f"process: iter(dataset)")
        if not self._lock.acquire(blocking=False):
            raise UsageError("another thread is inside next() of this mx8 iterator: an iterator serves one "
                             "thread at a time (give each thread its own Dataset)")
        try:
            return self._next()
        finally:
            self._lock.release()

    def _next(self) -> Union[Batch, RawBatch]:
        while True:  # more than once only past batches whose samples all failed
            if self.closed:
                if self.interrupted:
                    raise UsageError("this mx8 iterator was closed before its epoch ended (Dataset.close(), "
                                     "or a new iter(dataset), from this or another thread)")
                raise StopIteration
            if self.remaining == 0:
                self.closed = True
                raise StopIteration
            try:
                taken = self.stream.take()
            except StreamClosed:
                raise UsageError(_CLOSED_WHILE_WAITING) from None
            except BaseException:
                was_closed = self.closed  # by close() from another thread, while we waited
                self._end(interrupted=False, owner=True)  # the error ends the epoch
                if was_closed:
                    raise UsageError(_CLOSED_WHILE_WAITING) from None
                raise
            if taken is None or taken.run != self.run.id:
                raise AssertionError(f"epoch run {self.run} expected, the stream gave {taken}")  # one run at a time
            self.remaining -= 1
            self.progress.batches += 1
            self.progress.finished = self.remaining == 0
            if self.progress.finished and self.publish is not None and self.progress.resumed:
                self.publish({"resume_done": self.progress.resumed})  # the next fresh worker starts the epoch over
            if self.publish is not None:
                self.publish(counters_since(self.stream.stats(), self._base))
            batch = taken.batch
            # on_error="skip" and every sample failed: no empty batch for the model. Under DDP it
            # is yielded all the same, so that every rank takes the same number of steps.
            if len(batch.sample_ids) or self.progress.world_size != 1:
                return batch

    def _end(self, interrupted: bool, owner: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.interrupted = interrupted and self.remaining > 0  # after the last batch: the epoch ended
        if self.remaining == 0 or self._pid != os.getpid():
            return  # in a forked child the stream is the parent's: nothing to end here
        if not owner:
            self.stream.close()  # another thread is inside next(): stop the engine under it
            return
        try:
            self.stream.cancel(self.run)  # the engine stays for the next epoch
        except Exception:  # noqa: BLE001 - the stream closed itself; the next epoch makes a new one
            pass

    def close(self, interrupted: bool = True) -> None:
        """Ends the epoch here; safe from any thread, and more than once. From the thread that
        iterates (or when none is inside next()) the run is cancelled and the engine kept for
        the next epoch; while another thread waits in next() the engine is stopped.
        ``interrupted``: a later next() raises instead of ending quietly."""
        owner = self._lock.acquire(blocking=False)
        try:
            self._end(interrupted, owner)
        finally:
            if owner:
                self._lock.release()

    def __del__(self) -> None:
        self.close()


def counters_since(now: Dict[str, Any], base: Dict[str, Any]) -> Dict[str, Any]:
    """An engine's counters since ``base`` (counts and times subtract; maxima and latency
    summaries are the engine's whole life)."""
    out = dict(now)
    for k, v in now.items():
        b = base.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(b, (int, float)) \
                and not k.endswith("_max_bytes"):
            out[k] = round(v - b, 9) if isinstance(v, float) else v - b
    return out


_CLOSED_WHILE_WAITING = ("this mx8 iterator was closed (Dataset.close() or a new iter(dataset) in another "
                         "thread) while next() waited for a batch")


def to_device(batch: Union[Batch, RawBatch], device: Union[str, torch.device],
              non_blocking: bool = True) -> Union[Batch, RawBatch]:
    """Copies every tensor of a batch to ``device``. Copies from pinned memory (mx8's default
    when CUDA is available) are asynchronous with ``non_blocking=True``: the host can prepare
    the next batch while the copy runs."""
    return type(batch)(*(t.to(device, non_blocking=non_blocking and t.is_pinned()) for t in batch))
