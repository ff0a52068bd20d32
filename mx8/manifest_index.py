"""A manifest file read through its binary index (csrc/core/manifest_index.h): mapped, not
parsed, so the ranks and DataLoader workers of a node share one copy in the page cache.

The index of ``<dir>/manifest.tsv`` is ``<dir>/manifest.idx``, or, when that folder cannot be
written (a read-only dataset), a file in the manifest store named after the manifest's real
path. It is built by one streaming pass the first time it is needed and whenever it no
longer describes the manifest file: its header holds the manifest's hash and the size,
mtime and inode of the file it was built from, compared with the file's (as git compares
its index with the work tree), so an unchanged manifest is never read again. An index that
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


def _describes(source: tuple, manifest_path: str) -> bool:
    st = os.stat(manifest_path)
    return source == (st.st_size, st.st_mtime_ns, st.st_ino)


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
        except ManifestError as e:
            raise ManifestError(f"{manifest_path}: {e}") from None
        except OSError:
            continue  # a read-only folder: try the next place
        manifest, source = _core.open_index(path)
        if _describes(source, manifest_path):
            return manifest
    return None
