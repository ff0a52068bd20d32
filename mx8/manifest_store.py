"""A local store of resolved manifests, keyed by manifest_hash.

Resolving an S3 dataset costs requests (two GETs for a packed prefix, a whole paged LIST for
a raw one: minutes for millions of objects). The manifest a pin names never changes, so once
resolved it is kept here and ``s3://...@sha256:<hash>`` starts from it with no request at all,
on every rank and every DataLoader worker.

Location: the ``manifest_store=`` keyword, else ``MX8_MANIFEST_STORE``, else
``$XDG_CACHE_HOME/mx8/manifests``, else ``~/.cache/mx8/manifests``. Layout::

    <store>/<manifest_hash>/manifest.tsv   the canonical manifest bytes (what the hash covers)
    <store>/<manifest_hash>/labels.tsv     label names, when the dataset has them
    <store>/<manifest_hash>/meta.json      how it was made: {"source": "manifest"|"index", "uri": ...}
    <store>/<manifest_hash>/manifest.idx   its binary index, mapped by readers (mx8/manifest_index.py)
    <store>/index/<path key>.idx           the index of a local manifest in a read-only folder

An entry is written in a temporary folder and renamed into place, so a reader (another rank,
another process) sees a whole entry or none; an entry whose bytes no longer hash to its name
is ignored and replaced.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Optional, Union

from . import _core, manifest_index

_HASH = re.compile(r"^[0-9a-f]{64}$")


def default_store_dir() -> str:
    env = os.environ.get("MX8_MANIFEST_STORE")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "mx8", "manifests")


@dataclass(frozen=True)
class StoredManifest:
    manifest: Union[bytes, "_core.Manifest"]  # bytes, or mapped from the entry's index (get(mapped=True))
    labels: Optional[bytes]
    source: str  # "manifest" (read from _mx8/manifest.tsv) or "index" (a listed raw prefix)
    uri: str     # the dataset it was first resolved from


class ManifestStore:
    """Manifests by hash under one folder (see the module docstring)."""

    def __init__(self, root: Optional[str] = None) -> None:
        self.root = os.fspath(root) if root is not None else default_store_dir()

    def _entry(self, manifest_hash: str) -> str:
        if not _HASH.match(manifest_hash):  # it becomes a path: never let it climb out
            raise ValueError(f"not a manifest hash (64 lowercase hex digits): {manifest_hash!r}")
        return os.path.join(self.root, manifest_hash)

    def get(self, manifest_hash: str, mapped: bool = False) -> Optional[StoredManifest]:
        """The stored entry, or None when absent or damaged (its bytes must hash to its name).
        ``mapped``: the manifest as a ``_core.Manifest`` mapped from the entry's index
        (mx8/manifest_index.py: built once, then the manifest is not read or hashed again
        while its file is unchanged), else its bytes."""
        entry = self._entry(manifest_hash)
        path = os.path.join(entry, "manifest.tsv")
        try:
            with open(os.path.join(entry, "meta.json"), "rb") as f:
                meta = json.loads(f.read())
            labels_path = os.path.join(entry, "labels.tsv")
            labels = None
            if meta.get("labels"):
                with open(labels_path, "rb") as f:
                    labels = f.read()
            indexed = manifest_index.load(path) if mapped and os.path.exists(path) else None
            if indexed is not None:
                if indexed.hash != manifest_hash:
                    return None
                return StoredManifest(indexed, labels, str(meta.get("source", "manifest")), str(meta.get("uri", "")))
            with open(path, "rb") as f:
                manifest = f.read()
        except (OSError, ValueError):  # ManifestError is a ValueError: a damaged entry
            return None
        if hashlib.sha256(manifest).hexdigest() != manifest_hash:
            return None
        return StoredManifest(manifest, labels, str(meta.get("source", "manifest")), str(meta.get("uri", "")))

    def put(self, manifest_hash: str, manifest: bytes, labels: Optional[bytes], *, source: str, uri: str) -> str:
        """Stores an entry (a no-op when a good one is there) and returns its folder. The
        manifest is kept as its canonical bytes (FORMAT.md: every line ends with a newline),
        which is what manifest_hash covers, also for a file written without the final one."""
        if manifest and not manifest.endswith(b"\n"):
            manifest += b"\n"
        if hashlib.sha256(manifest).hexdigest() != manifest_hash:
            raise ValueError(f"manifest bytes do not hash to {manifest_hash}")
        entry = self._entry(manifest_hash)
        have = self.get(manifest_hash)
        if have is not None and have.labels == labels:
            return entry  # else the label names changed under the same records: replace
        os.makedirs(self.root, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{manifest_hash[:12]}-", dir=self.root)
        try:
            files = {"manifest.tsv": manifest,
                     "meta.json": json.dumps({"source": source, "uri": uri, "labels": labels is not None},
                                             sort_keys=True).encode() + b"\n"}
            if labels is not None:
                files["labels.tsv"] = labels
            for name, data in files.items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            if os.path.isdir(entry):  # damaged (get() refused it) or other labels: replace
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.rename(tmp, entry)
            except OSError:
                if self.get(manifest_hash) is None:  # not a concurrent writer's good entry
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry
