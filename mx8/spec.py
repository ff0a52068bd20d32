"""The reading spec: one frozen, validated description of how batches are read and shaped.

Both modes build their engine from it: ``mx8.Dataset`` (an epoch order per iteration) and
``mx8.LeaseDataset`` (a leased range at a time). It names every option once, validates it
once, and turns it into what the engine takes (mx8/stream.py, csrc/python/engine_type.c):
the transform dict, the batch shape and dtype, the batches in flight, pinning, the sources
and the S3 read settings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from . import _core
from .envvars import env_int
from .resolve import Snapshot, resolve
from .s3config import S3Config, s3_config
from .stream import BatchStream

# The engine's codes, from the extension (csrc/core/image_transform.h: mx8_crop_mode, mx8_layout).
CROP_MODES: Dict[str, int] = dict(_core.CROP_MODES)
LAYOUTS: Dict[str, int] = dict(_core.LAYOUTS)
DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
ON_ERROR = ("raise", "skip")

# The defaults: baseline JPEG, and images decoded whole (PNG, progressive JPEG); each ~1 s of
# CPU and <300 MB at its limit.
MAX_PIXELS = {"jpeg": 100_000_000, "buffered": 30_000_000}


def pixel_limits(max_pixels: Optional[int]) -> Dict[str, int]:
    """The engine's pixel limits: the per-format defaults, or one limit for both."""
    if max_pixels is None:
        return {"max_pixels": MAX_PIXELS["jpeg"], "max_buffered_pixels": MAX_PIXELS["buffered"]}
    return {"max_pixels": int(max_pixels), "max_buffered_pixels": int(max_pixels)}


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


@dataclass(frozen=True)
class ReadSpec:
    """How to read: see :class:`mx8.Dataset` for each option. Build it with :meth:`of`."""
    batch_size: int
    size: Optional[Tuple[int, int]]
    decode: bool
    crop: str
    resize: Optional[int]
    scale: Tuple[float, float]
    ratio: Tuple[float, float]
    flip: bool
    on_error: str
    prefetch_mb: int
    threads: int
    layout: str
    dtype: str
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    pin_memory: Optional[bool]
    max_pixels: Optional[int]
    crop_aware: bool
    dct_scaling: bool
    s3_connections: int
    s3_io_threads: int

    @classmethod
    def of(cls, *, batch_size: int, size: Optional[Union[int, Sequence[int]]] = None, crop: str = "center",
           resize: Optional[int] = None, scale: Tuple[float, float] = (0.08, 1.0),
           ratio: Tuple[float, float] = (3 / 4, 4 / 3), flip: bool = False, on_error: str = "raise",
           prefetch_mb: int = 256, threads: Optional[int] = None, layout: str = "NCHW", decode: bool = True,
           dtype: str = "uint8", mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
           pin_memory: Optional[bool] = None, max_pixels: Optional[int] = None, crop_aware: bool = True,
           dct_scaling: bool = False, s3_connections: Optional[int] = None,
           s3_io_threads: Optional[int] = None) -> "ReadSpec":
        """Validates the options (ValueError naming the bad one) and fills in the defaults
        (MX8_S3_CONNECTIONS, MX8_S3_IO_THREADS, the CPUs this process may use)."""
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
        mean_t = tuple(float(m) for m in (mean if mean is not None else (0.0, 0.0, 0.0)))
        std_t = tuple(float(x) for x in (std if std is not None else (1.0, 1.0, 1.0)))
        if len(mean_t) != 3 or len(std_t) != 3 or min(std_t) <= 0:
            raise ValueError(f"mean and std need 3 values each, std positive; got {mean_t}, {std_t}")
        if not (0 < scale[0] <= scale[1] <= 1.0) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"bad scale {scale} or ratio {ratio}")
        conns = env_int("MX8_S3_CONNECTIONS", 16) if s3_connections is None else int(s3_connections)
        if not 1 <= conns <= 1024:
            raise ValueError(f"s3_connections must be within 1..1024, got {conns}")
        io = env_int("MX8_S3_IO_THREADS", 2) if s3_io_threads is None else int(s3_io_threads)
        if not 1 <= io <= 64:
            raise ValueError(f"s3_io_threads must be within 1..64, got {io}")
        pair = _pair(size) if size is not None else None
        return cls(batch_size=batch_size, size=pair, decode=bool(decode) and pair is not None, crop=crop,
                   resize=resize, scale=(float(scale[0]), float(scale[1])),
                   ratio=(float(ratio[0]), float(ratio[1])), flip=bool(flip), on_error=on_error,
                   prefetch_mb=int(prefetch_mb), threads=int(threads or _default_threads()), layout=layout,
                   dtype=dtype, mean=mean_t, std=std_t, pin_memory=pin_memory,  # type: ignore[arg-type]
                   max_pixels=max_pixels, crop_aware=bool(crop_aware), dct_scaling=bool(dct_scaling),
                   s3_connections=conns, s3_io_threads=io)

    # -- what the engine takes ------------------------------------------------------------

    def transform(self) -> Dict[str, Any]:
        """The engine's transform options ({} for raw batches)."""
        if not self.decode:
            return {}
        h, w = self.size  # type: ignore[misc]
        return {"out_h": h, "out_w": w, "crop_mode": CROP_MODES[self.crop],
                "resize_short": self.resize or 0, "scale_min": self.scale[0], "scale_max": self.scale[1],
                "ratio_min": self.ratio[0], "ratio_max": self.ratio[1], "flip": int(self.flip),
                "layout": LAYOUTS[self.layout], **pixel_limits(self.max_pixels), "crop_aware": int(self.crop_aware),
                "dct_scaling": int(self.dct_scaling), "out_float": self.dtype == "float32",
                "mean": self.mean, "std": self.std}

    def image_shape(self) -> Optional[Tuple[int, int, int]]:
        """One decoded sample's shape, None for raw batches."""
        if not self.decode:
            return None
        h, w = self.size  # type: ignore[misc]
        return (3, h, w) if self.layout == "NCHW" else (h, w, 3)

    def depth(self) -> int:
        """Batches in flight: prefetch_mb of them, within 2..16 (raw batches count ~128 KB a sample)."""
        itemsize = 4 if self.dtype == "float32" else 1
        shape = self.image_shape()
        per_sample = shape[0] * shape[1] * shape[2] * itemsize if shape else 1 << 17
        return max(2, min(16, (self.prefetch_mb << 20) // max(self.batch_size * per_sample, 1)))

    def pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else bool(self.pin_memory)

    def sources(self, snap: Snapshot) -> Tuple[List[str], Optional[Dict[str, Any]]]:
        """The engine's paths, and its S3 options with this spec's read settings (None: local)."""
        paths, s3 = sources(snap)
        if s3 is not None:
            s3.update(prefetch_bytes=self.prefetch_mb << 20, max_connections=self.s3_connections,
                      io_threads=self.s3_io_threads)
        return paths, s3

    def open_stream(self, snap: Snapshot) -> BatchStream:
        """A started engine over the snapshot, reading as this spec says."""
        paths, s3 = self.sources(snap)
        return BatchStream(snap.manifest, paths, threads=self.threads, batch_size=self.batch_size,
                           depth=self.depth(), raw=not self.decode, skip_errors=self.on_error == "skip",
                           transform=self.transform(), s3=s3, image_shape=self.image_shape(),
                           dtype=DTYPES[self.dtype], pin=self.pin())


def sources(snap: Snapshot) -> Tuple[List[str], Optional[Dict[str, Any]]]:
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


def open_snapshot(uri: Union[str, "os.PathLike[str]", Snapshot],
                  s3: Optional[S3Config]) -> Tuple[Snapshot, Optional[S3Config]]:
    """The snapshot a reader reads (resolved now unless given) and the S3 settings a worker
    process re-resolves its pinned URI with (a Snapshot's config is that of its resolve())."""
    snap = uri if isinstance(uri, Snapshot) else resolve(os.fspath(uri), s3=s3)
    return snap, (snap.s3.config if snap.s3 is not None else s3)
