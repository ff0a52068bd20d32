"""A manifest file read through its binary index (csrc/core/manifest_index.h): mapped, not
parsed, so the ranks and DataLoader workers of a node share one copy in the page cache.

The index of ``<dir>/manifest.tsv`` is ``<dir>/manifest.idx``, or, when that folder cannot be
written (a read-only dataset), a file in the manifest store named after the manifest's real
path. It is built by one streaming pass the first time it is needed and whenever it no
longer describes the manifest file: its header holds the manifest's hash and the size,
mtime and inode of the file it was built from, compared with the file's (as git compares
its index with the work tree, ctime too, which no utime() or cp -p sets back; and, like
git, not when the file changed within 2 s of the build), so an unchanged manifest is never
read again. An index that
fails its checks (truncated, overwritten, another version) is rebuilt, never trusted.
``MX8_MANIFEST_INDEX=0`` parses manifests in memory instead.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Iterator, Optional

from . import _core
from .errors import ManifestError

INDEX_ENV = "MX8_MANIFEST_INDEX"


def enabled() -> bool:
    return os.environ.get(INDEX_ENV, "1").lower() not in ("0", "false", "no")


def _places(manifest_path: str, store_root: Optional[str]) -> Iterator[str]:
    """Where the index of manifest_path may be, in the order tried."""
    base = manifest_path[:-len(".tsv")] if manifest_path.endswith(".tsv") else manifest_path
    yield base + ".idx"
    if store_root is not None:
        key = hashlib.sha256(os.path.realpath(manifest_path).encode()).hexdigest()[:32]
        yield os.path.join(store_root, "index", f"{key}.idx")


# A write within this long of the build's start may not have moved the file's times past
# what the build saw (coarse clocks: NFSv3, FAT, HFS+): such an index is not trusted, and the
# next resolve builds again (git's rule for "racily clean" entries).
RACY_NS = 2_000_000_000


def _describes(source: tuple, manifest_path: str) -> bool:
    """The index still describes the manifest file: same size, mtime, inode and ctime (which
    every write moves and no utime() or cp -p can set back), and the file was last changed
    clearly before the build began."""
    size, mtime_ns, inode, ctime_ns, built_ns = source
    if (size, mtime_ns, inode, ctime_ns) != _stat_of(manifest_path):
        return False
    return max(mtime_ns, ctime_ns) < built_ns - RACY_NS


def load(manifest_path: str, store_root: Optional[str] = None) -> Optional["_core.Manifest"]:
    """The manifest at manifest_path, mapped from its index (built if need be); None when
    indexes are off or none can be written, and the caller parses the file in memory. A
    malformed manifest raises ManifestError naming the file and line."""
    if not enabled():
        return None
    places = list(_places(manifest_path, store_root))
    for path in places:
        if not os.path.isfile(path):
            continue
        try:
            manifest, source = _core.open_index(path)
        except (ManifestError, OSError) as e:  # damaged, another version, unreadable: build it again
            warnings.warn(f"mx8: rebuilding the index of {manifest_path}: {e}", RuntimeWarning, stacklevel=3)
            continue
        if _describes(source, manifest_path):
            return manifest
    for path in places:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _core.build_index(manifest_path, path)
        except ManifestError as e:  # the manifest itself is malformed: as a parse would say
            raise ManifestError(f"{manifest_path}: {e}") from None
        except OSError:
            continue  # a read-only folder: try the next place
        try:
            manifest, source = _core.open_index(path)
        except (ManifestError, OSError):  # no mmap on this mount, or another builder's race
            continue
        # Just built: trusted for this resolve if the manifest did not change meanwhile (even
        # when racy, which only means the next resolve checks again by building).
        if source[:4] == _stat_of(manifest_path):
            return manifest
    return None


def _stat_of(manifest_path: str) -> tuple:
    st = os.stat(manifest_path)
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns
