"""``mx8.Dataset``: an IterableDataset that yields ready batches decoded in native threads.

Python's part is small: resolve the snapshot, compute this consumer's sample order
(mx8/sharding.py), allocate batch tensors and hand their pointers to the C engine, which
fills them with the GIL released. Nothing is allocated per image in Python.
"""
from __future__ import annotations

import errno
import os
import threading
import warnings
import weakref
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from . import _core
from .distributed import World, current_world
from .envvars import env_bool, env_int
from .errors import ReadError, SnapshotMismatchError, StuckReadWarning, UsageError
from .rendezvous import agree
from .resolve import Snapshot, resolve
from .s3config import S3Config, s3_config
from .sharding import consumed_after, derive_seed, plan

STATE_FORMAT = "mx8.Dataset/1"

CROP_MODES = {"none": 0, "center": 1, "random": 2}
DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
LAYOUTS = {"NCHW": 0, "NHWC": 1}
ON_ERROR = ("raise", "skip")
MODES = ("train", "lease")


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


def _pair(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


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
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {tuple(CROP_MODES)}, got {crop!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
        if dtype == "uint8" and (mean is not None or std is not None):
            raise ValueError("mean/std normalise float output: pass dtype='float32' with them")
        mean = tuple(float(m) for m in (mean if mean is not None else (0.0, 0.0, 0.0)))
        std = tuple(float(x) for x in (std if std is not None else (1.0, 1.0, 1.0)))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got {mean}, {std}")
        if not (0 < scale[0] <= scale[1] <= 1.0) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"bad scale {scale} or ratio {ratio}")
        if isinstance(uri, Snapshot):
            self._snapshot: Optional[Snapshot] = uri
            self.uri = uri.pinned_uri
        else:
            self._snapshot = resolve(os.fspath(uri), s3=s3)
            self.uri = self._snapshot.pinned_uri  # workers re-resolve exactly this snapshot
        # ... with the same S3 settings (a Snapshot's config is that of its resolve()).
        self._s3 = self._snapshot.s3.config if self._snapshot.s3 is not None else s3
        self.batch_size = batch_size
        self.size = _pair(size) if size is not None else None
        self.decode = decode and self.size is not None
        self.crop, self.resize, self.scale, self.ratio, self.flip = crop, resize, scale, ratio, flip
        self.shuffle = env_bool("MX8_SHUFFLE", False) if shuffle is None else bool(shuffle)
        self.seed = env_int("MX8_SEED", 0) if seed is None else int(seed)
        self.epoch = env_int("MX8_EPOCH", 0) if epoch is None else int(epoch)
        self.drop_last, self.on_error, self.prefetch_mb = drop_last, on_error, prefetch_mb
        self.threads = threads or _default_threads()
        self.layout, self.max_pixels = layout, max_pixels
        self.dtype, self.mean, self.std = dtype, mean, std
        self.crop_aware, self.dct_scaling = crop_aware, dct_scaling
        self.pin_memory = pin_memory
        self.s3_connections = env_int("MX8_S3_CONNECTIONS", 16) if s3_connections is None else int(s3_connections)
        if not 1 <= self.s3_connections <= 1024:
            raise ValueError(f"s3_connections must be within 1..1024, got {self.s3_connections}")
        self.s3_io_threads = env_int("MX8_S3_IO_THREADS", 2) if s3_io_threads is None else int(s3_io_threads)
        if not 1 <= self.s3_io_threads <= 64:
            raise ValueError(f"s3_io_threads must be within 1..64, got {self.s3_io_threads}")
        self._rank, self._world_size = rank, world_size
        self._engine: Optional[_core.Engine] = None  # of the current/last iteration, for stats()
        self._iterator: Optional["weakref.ref[_BatchIterator]"] = None  # the current one, to close it
        self._plan_info: Dict[str, int] = {}
        self._start = 0  # global positions of this epoch already consumed (mid-epoch resume)
        self._progress: Optional[_Progress] = None  # batches yielded by the current iteration

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
        samples = self._plan(world.rank, world.world_size, 0, 1).samples
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __getstate__(self) -> Dict[str, Any]:
        # Native objects do not cross processes: a DataLoader worker re-resolves the pinned URI.
        state = self.__dict__.copy()
        state["_snapshot"] = None
        state["_engine"] = None
        state["_iterator"] = None
        state["_progress"] = None
        return state

    # -- iteration ---------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch's order. Keeps a position loaded by load_state_dict() when the
        epoch is the checkpoint's, so `ds.load_state_dict(sd); ds.set_epoch(sd_epoch)` resumes."""
        epoch = int(epoch)
        if epoch != self.epoch:
            self._start = 0
            self._progress = None
        self.epoch = epoch

    def _plan(self, rank: int, world_size: int, worker: int, num_workers: int, start: int = 0):
        return plan(len(self.snapshot.manifest), manifest_hash=self.manifest_hash, seed=self.seed,
                    epoch=self.epoch, shuffle=self.shuffle, rank=rank, world_size=world_size,
                    batch_size=self.batch_size, drop_last=self.drop_last, start=start, worker=worker,
                    num_workers=num_workers)

    # -- checkpoints ---------------------------------------------------------------------

    def _position(self) -> int:
        p = self._progress
        if p is None:
            return self._start
        return consumed_after(p.start, p.batches, self.batch_size, p.world_size, len(self.snapshot.manifest))

    def state_dict(self) -> Dict[str, Any]:
        """Where this epoch stands: save it with your model checkpoint. ``position`` counts the
        samples of the epoch's global order consumed by all ranks together (every rank has
        yielded the same number of batches), so a resume may use another world size.

        Counts batches yielded by this process's iterator: use ``num_workers=0`` (mx8's fast
        path) when you need mid-epoch resume."""
        return {"format": STATE_FORMAT, "manifest_hash": self.manifest_hash, "seed": self.seed,
                "epoch": self.epoch, "shuffle": self.shuffle, "drop_last": self.drop_last,
                "batch_size": self.batch_size, "samples": len(self.snapshot.manifest),
                "world_size": self._progress.world_size if self._progress else None,
                "position": self._position()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resumes at the next unseen batch of the saved epoch (any world size, any batch size)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an mx8.Dataset state_dict (format {state.get('format')!r})")
        if state["manifest_hash"] != self.manifest_hash:
            raise SnapshotMismatchError(f"state_dict is for manifest_hash {state['manifest_hash']}, this dataset "
                                        f"is {self.manifest_hash}")
        self.seed, self.epoch, self.shuffle = int(state["seed"]), int(state["epoch"]), bool(state["shuffle"])
        self.drop_last = bool(state["drop_last"])
        self._start = int(state["position"])
        self._progress = None

    def _transform(self) -> Dict[str, Any]:
        assert self.size is not None
        h, w = self.size
        return {"out_h": h, "out_w": w, "crop_mode": CROP_MODES[self.crop],
                "resize_short": self.resize or 0, "scale_min": float(self.scale[0]),
                "scale_max": float(self.scale[1]), "ratio_min": float(self.ratio[0]),
                "ratio_max": float(self.ratio[1]), "flip": int(self.flip), "layout": LAYOUTS[self.layout],
                **pixel_limits(self.max_pixels), "crop_aware": int(self.crop_aware),
                "dct_scaling": int(self.dct_scaling), "out_float": self.dtype == "float32",
                "mean": self.mean, "std": self.std}

    def __iter__(self) -> Iterator[Union[Batch, RawBatch]]:
        self.close()
        world = current_world(self._rank, self._world_size)
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self._start
        # DataLoader workers have no process group to check through (stats: rendezvous_checked).
        checked = self._rendezvous(world, start) if info is None else False
        p = self._plan(world.rank, world.world_size, worker, num_workers, start)
        self._plan_info = {"padded": p.padded, "dropped": p.dropped, "planned": p.samples, "start": start,
                           "rank": world.rank, "world_size": world.world_size, "rendezvous_checked": checked}
        # The next iteration (same epoch, no new checkpoint loaded) starts from the beginning.
        self._start = 0
        self._progress = _Progress(start, world.world_size)
        snap = self.snapshot
        paths, s3 = self._sources(snap)
        engine = _core.Engine(snap.manifest, paths, p.positions, self.threads,
                              self.batch_size, self._depth(), not self.decode, self.on_error == "skip",
                              derive_seed(self.manifest_hash, self.seed, self.epoch, "augment"),
                              self._transform() if self.decode else {}, s3)
        self._engine = engine
        # The iterator does not reference the Dataset: dropping it closes the engine at once.
        it = _BatchIterator(engine, self._image_shape(), DTYPES[self.dtype], self._depth(), self._pin(),
                            self._progress)
        self._iterator = weakref.ref(it)
        return it

    # -- what an engine needs (also used by mx8.LeaseDataset) -----------------------------

    def _image_shape(self) -> Optional[Tuple[int, int, int]]:
        """One decoded sample's shape, None for raw batches."""
        if not self.decode:
            return None
        h, w = self.size  # type: ignore[misc]
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)

    def _depth(self) -> int:
        """Batches in flight: prefetch_mb of them, within 2..16 (raw batches count ~128 KB a sample)."""
        itemsize = 4 if self.dtype == "float32" else 1
        shape = self._image_shape()
        per_sample = shape[0] * shape[1] * shape[2] * itemsize if shape else 1 << 17
        return max(2, min(16, (self.prefetch_mb << 20) // max(self.batch_size * per_sample, 1)))

    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else bool(self.pin_memory)

    def _sources(self, snap: Snapshot) -> Tuple[List[str], Optional[Dict[str, Any]]]:
        """The engine's paths and S3 options, with this Dataset's S3 read settings."""
        paths, s3 = _sources(snap)
        if s3 is not None:
            s3.update(prefetch_bytes=self.prefetch_mb << 20, max_connections=self.s3_connections,
                      io_threads=self.s3_io_threads)
        return paths, s3

    def _rendezvous(self, world: World, start: int) -> bool:
        return agree(
            {"manifest_hash": self.manifest_hash, "labels_hash": self.snapshot.labels_hash, "seed": self.seed,
             "epoch": self.epoch, "shuffle": self.shuffle, "batch_size": self.batch_size, "drop_last": self.drop_last,
             "position": start, "world_size": world.world_size}, world)

    def stats(self) -> Dict[str, Any]:
        """Counters of the current (or last) iteration: images, bytes_read, errors, skipped,
        batches, read_s/decode_s (summed over threads), wait_s (consumer blocked), padded."""
        out: Dict[str, Any] = dict(self._plan_info)
        if self._engine is not None:
            out.update(self._engine.stats())
        return out

    def close(self) -> None:
        """Stops and joins the native threads of the current iteration; from any thread. An
        unfinished iterator's next() then raises mx8.UsageError instead of ending quietly."""
        it = self._iterator() if self._iterator is not None else None
        if it is not None:
            it.close()
        elif self._engine is not None:
            close_engine(self._engine)

    def __enter__(self) -> "Dataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sources(snap: Snapshot) -> Tuple[List[str], Optional[Dict[str, Any]]]:
    """What the engine reads: local paths, or "bucket/key" per location plus the S3 options
    when the snapshot lives on S3 (the engine then plans ranged GETs of many neighbouring
    samples each and fetches them ahead on its S3 client's I/O threads)."""
    if snap.s3 is None and not any(loc.startswith("s3://") for loc in snap.manifest.locations):
        return snap.location_paths(), None
    cfg = snap.s3.config if snap.s3 is not None else s3_config()
    paths = [f"{bucket}/{key}" for bucket, key in snap.location_objects()]
    # The keys travel as a shared native object that this process's feed keeps refreshed.
    return paths, {"endpoint": cfg.endpoint, "region": cfg.region, "credentials": cfg.native_credentials(),
                   "unsigned": cfg.unsigned, "requester_pays": cfg.requester_pays,
                   "max_attempts": cfg.max_attempts or 0,
                   "virtual_host": cfg.virtual_host, "ca_file": cfg.ca_bundle}


class _Progress:
    """Batches an iteration has yielded; shared by the iterator and its Dataset's state_dict."""

    def __init__(self, start: int, world_size: int) -> None:
        self.start = start
        self.world_size = world_size
        self.batches = 0


class _BatchIterator:
    """Keeps up to `depth` batches provided to the engine and yields them in order."""

    def __init__(self, engine: "_core.Engine", image_shape: Optional[Tuple[int, int, int]], dtype: torch.dtype,
                 depth: int, pin: bool, progress: _Progress) -> None:
        self.engine = engine
        self.dtype = dtype
        self.progress = progress
        self.image_shape = image_shape  # per sample; None for raw batches
        self.depth = depth
        self.pin = pin
        # Pageable decoded batches come from a pool of recycled buffers: a buffer returns when
        # torch frees the last view of the batch handed out, so nothing is ever overwritten
        # under the user, and steady state has no allocation and no page faults. Pinned
        # batches use torch's caching host allocator, which recycles the same way.
        # Raw batches too, sized for the epoch's largest, when batches are of similar sizes: a
        # few outsized samples must not make every pooled buffer their size.
        self.pool = None
        if image_shape is not None and not pin:
            nbytes = (max(engine.batch_len(0), 1) * image_shape[0] * image_shape[1] * image_shape[2]
                      * dtype.itemsize)
            self.pool = _core.BufferPool(nbytes, depth + 2)
        elif not pin and engine.num_batches:
            largest, total = engine.batch_bytes_bounds()
            if 0 < largest <= 2 * total / engine.num_batches:
                self.pool = _core.BufferPool(largest, depth + 2)
        self.pending: Dict[int, Tuple[torch.Tensor, ...]] = {}
        self.closed = False
        self.interrupted = False  # closed before the epoch ended: next() then raises UsageError
        self._lock = threading.Lock()  # one thread in next()
        self._state = threading.Lock()  # close() from another thread vs next() taking a batch's buffers
        self._pid = os.getpid()
        self._fill()
        engine.start()

    def _alloc(self, b: int) -> Tuple[torch.Tensor, ...]:
        n = self.engine.batch_len(b)
        ids = torch.empty(n, dtype=torch.int64)
        labels = torch.empty(n, dtype=torch.int64)
        if self.image_shape is not None:  # decoded: pooled, or pinned by torch's caching allocator
            images = (self.pool.acquire() if self.pool is not None
                      else torch.empty((n,) + self.image_shape, dtype=self.dtype, pin_memory=True))
            return images, labels, ids
        offsets = torch.empty(n + 1, dtype=torch.int64)
        try:
            data = (self.pool.acquire() if self.pool is not None
                    else torch.empty(max(self.engine.required_bytes(b), 1), dtype=torch.uint8, pin_memory=self.pin))
        except (RuntimeError, MemoryError):
            raise self._raw_batch_too_large(b, self.engine.required_bytes(b)) from None
        return data, labels, ids, offsets

    def _raw_batch_too_large(self, b: int, nbytes: int) -> ReadError:
        """A raw batch is allocated from its samples' manifest byte lengths before any read; a
        manifest may declare more than this machine has (each length up to the 1 GiB limit)."""
        sample_id, location, offset, length = self.engine.largest_sample(b)
        e = ReadError(errno.ENOMEM, f"raw batch {b} cannot be allocated: its samples' manifest byte lengths "
                                    f"add up to {nbytes} bytes; the largest is sample {sample_id} "
                                    f"({shorten(location)} @ {offset}+{length}). Check the manifest, or lower "
                                    f"batch_size")
        e.sample_id, e.location, e.offset, e.length = sample_id, location, offset, length
        return e

    def _fill(self) -> None:
        while (self.engine.next_to_provide < self.engine.num_batches
               and len(self.pending) < self.depth):
            self._provide(self.engine.next_to_provide)

    def _provide(self, b: int) -> None:
        """Allocates batch b's buffers and hands them to the engine."""
        bufs = self._alloc(b)
        offsets = bufs[3].data_ptr() if len(bufs) == 4 else None
        if isinstance(bufs[0], torch.Tensor):
            ptr, nbytes = bufs[0].data_ptr(), bufs[0].numel() * bufs[0].element_size()
        else:
            ptr, nbytes = bufs[0].ptr, bufs[0].nbytes
        self.engine.provide(ptr, nbytes, bufs[1].data_ptr(), bufs[2].data_ptr(), offsets, bufs)
        self.pending[b] = bufs

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
            try:
                got = self.engine.next()
            except BaseException:
                was_closed = self.closed  # by close() from another thread, while we waited
                self.close(interrupted=False)  # the error ends the epoch
                if was_closed:
                    raise UsageError(_CLOSED_WHILE_WAITING) from None
                raise
            if got is None:
                self.close(interrupted=False)
                raise StopIteration
            b, count, _skipped = got
            with self._state:
                if self.closed:  # by another thread, just as this batch completed
                    raise UsageError(_CLOSED_WHILE_WAITING)
                bufs = self.pending.pop(b)
                self._fill()
            self.progress.batches += 1
            # on_error="skip" and every sample failed: no empty batch for the model. Under DDP it
            # is yielded all the same, so that every rank takes the same number of steps.
            if count or self.progress.world_size != 1:
                break
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

    def close(self, interrupted: bool = True) -> None:
        """Stops the native threads; safe from any thread, and more than once. ``interrupted``:
        the epoch did not end here, so a later next() raises instead of ending quietly."""
        with self._state:
            if self.closed:
                return
            self.closed = True
            self.interrupted = interrupted
        close_engine(self.engine)  # in a forked child this only marks it closed (engine_type.c)
        with self._state:
            self.pending.clear()

    def __del__(self) -> None:
        self.close()


# The defaults: baseline JPEG, and images decoded whole (PNG, progressive JPEG); each ~1 s of
# CPU and <300 MB at its limit.
MAX_PIXELS = {"jpeg": 100_000_000, "buffered": 30_000_000}


def pixel_limits(max_pixels: Optional[int]) -> Dict[str, int]:
    """The engine's pixel limits: the per-format defaults, or one limit for both."""
    if max_pixels is None:
        return {"max_pixels": MAX_PIXELS["jpeg"], "max_buffered_pixels": MAX_PIXELS["buffered"]}
    return {"max_pixels": int(max_pixels), "max_buffered_pixels": int(max_pixels)}


def shorten(location: str) -> str:
    """At most ~400 characters of a location for a message (a hostile manifest's may be MBs)."""
    return location if len(location) <= 400 else location[:300] + "..." + location[-60:]


_CLOSED_WHILE_WAITING = ("this mx8 iterator was closed (Dataset.close() or a new iter(dataset) in another "
                         "thread) while next() waited for a batch")
STOP_WAIT_MS = 1000  # how long close() waits for a worker inside a sample before abandoning it


def close_engine(engine: "_core.Engine") -> None:
    """Stops an engine's threads. One still inside a sample after STOP_WAIT_MS is blocked in a
    read that does not return (a hung network mount): it is abandoned, not waited for, and
    reported with a StuckReadWarning (engine_type.c keeps its memory until it leaves)."""
    stuck = engine.close(STOP_WAIT_MS)
    if stuck is None:
        return
    n, sample_id, location, offset, length = stuck
    where = f" {shorten(location)!r}" if location is not None else ""
    if offset is not None:
        where += f" @ {offset}+{length}"
    what = f"sample {sample_id}{where}" if sample_id >= 0 else "a sample"
    warnings.warn(f"mx8: {n} native worker thread(s) still blocked after {STOP_WAIT_MS / 1000:g} s, one "
                  f"reading {what}; abandoned rather than waited for (the thread leaves once its read "
                  f"returns). A hung network mount?", StuckReadWarning, stacklevel=3)


def to_device(batch: Union[Batch, RawBatch], device: Union[str, torch.device],
              non_blocking: bool = True) -> Union[Batch, RawBatch]:
    """Copies every tensor of a batch to ``device``. Copies from pinned memory (mx8's default
    when CUDA is available) are asynchronous with ``non_blocking=True``: the host can prepare
    the next batch while the copy runs."""
    return type(batch)(*(t.to(device, non_blocking=non_blocking and t.is_pinned()) for t in batch))
