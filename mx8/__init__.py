"""mx8: fast, deterministic image data loading for PyTorch.

    import mx8
    mx8.pack("imagefolder/", "packed/")          # tar shards + _mx8/manifest.tsv
    snap = mx8.resolve("packed/")                 # pin by manifest_hash
    ds = mx8.Dataset(snap.pinned_uri, batch_size=256, size=224, crop="random", flip=True)
    for images, labels, sample_ids in torch.utils.data.DataLoader(ds, batch_size=None):
        ...
"""
try:
    from . import _core  # noqa: F401  (the C extension: load it first, for a message that helps)
except ImportError as e:
    if "cannot open shared object file" not in str(e):
        raise
    raise ImportError(
        f"mx8's C extension could not load a system library ({e}). The manylinux wheels carry "
        "libjpeg-turbo, libpng, libcurl and OpenSSL; an mx8 built from source links the system's "
        "copies: install them (Debian/Ubuntu: apt-get install libjpeg62-turbo libpng16-16 libcurl4 "
        "libssl3; Fedora/RHEL: dnf install libjpeg-turbo libpng libcurl openssl-libs) or install the "
        "manylinux wheel.") from e

from .dataset import Dataset, to_device
from .loader_workers import state_from_loader
from .errors import (CredentialsError, DecodeError, Error, ImageTooLargeError, LeaseJobMismatchError,
                     LeaseLogError, LeaseLogMismatchError, LeaseStoreError, ManifestError, PackError,
                     RangeError, ReadError, RendezvousError, SnapshotMismatchError, StuckReadWarning,
                     UsageError)
from .pack import PackResult, pack
from .resolve import Snapshot, resolve
from .stream import Batch, RawBatch

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lease mode (mx8/leases/) loads on first use: the training path never imports it.
    if name in ("LeaseDataset", "LeaseInfo"):
        from . import leases
        return getattr(leases, name)
    raise AttributeError(f"module 'mx8' has no attribute {name!r}")


__all__ = [
    "pack", "PackResult", "resolve", "Snapshot", "Dataset", "Batch", "RawBatch", "to_device", "state_from_loader",
    "Error", "ManifestError", "ReadError", "RangeError", "DecodeError", "ImageTooLargeError",
    "SnapshotMismatchError", "PackError", "RendezvousError", "UsageError", "StuckReadWarning",
    "CredentialsError",
    "LeaseDataset", "LeaseInfo", "LeaseLogMismatchError", "LeaseJobMismatchError", "LeaseLogError",
    "LeaseStoreError",
]
