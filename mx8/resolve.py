"""``mx8.resolve``: pin a dataset snapshot by its manifest_hash.

A URI is a local directory (packed: it holds ``_mx8/manifest.tsv``; or a plain ImageFolder,
indexed on the fly) or a manifest file, optionally pinned with ``@sha256:<hash>``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from . import _core
from .errors import ManifestError, ReadError, SnapshotMismatchError
from .formats import parse_labels, render_manifest
from .imagefolder import scan

_PIN = re.compile(r"^(?P<base>.*)@sha256:(?P<hash>[0-9a-fA-F]{64})$")
MANIFEST_REL = os.path.join("_mx8", "manifest.tsv")
LABELS_REL = os.path.join("_mx8", "labels.tsv")


@dataclass(frozen=True)
class Snapshot:
    """A resolved dataset: what ``mx8.Dataset`` reads, pinned by ``manifest_hash``."""

    uri: str                       # the dataset's URI without the pin
    root: str                      # directory relative locations are resolved against
    manifest_hash: str
    samples: int
    labels: Optional[Tuple[str, ...]]  # label names by id, None without labels
    source: str                    # "manifest" or "index" (ImageFolder indexed on the fly)
    manifest: "_core.Manifest" = field(repr=False, compare=False)

    @property
    def pinned_uri(self) -> str:
        return f"{self.uri}@sha256:{self.manifest_hash}"

    def location_paths(self) -> List[str]:
        """The file each manifest location points at (relative ones resolved against root)."""
        out = []
        for loc in self.manifest.locations:
            if loc.startswith("s3://"):
                raise ReadError(f"{self.uri}: location {loc!r} is on S3, which this build cannot read yet")
            if loc.startswith("file://"):
                loc = loc[len("file://"):]
            out.append(loc if os.path.isabs(loc) else os.path.join(self.root, loc))
        return out


def split_pin(uri: str) -> Tuple[str, Optional[str]]:
    m = _PIN.match(uri)
    return (m.group("base"), m.group("hash").lower()) if m else (uri, None)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ReadError(e.errno, f"cannot read {path}: {e.strerror}") from None


def _parse_manifest(data: bytes, source: str) -> "_core.Manifest":
    try:
        return _core.Manifest(data)
    except ManifestError as e:
        raise ManifestError(f"{source}: {e}") from None


def _from_manifest(uri: str, manifest_path: str, root: str) -> Snapshot:
    manifest = _parse_manifest(_read(manifest_path), manifest_path)
    labels_path = os.path.join(os.path.dirname(manifest_path), "labels.tsv")
    labels = None
    if os.path.exists(labels_path):
        labels = tuple(parse_labels(_read(labels_path), labels_path))
        if manifest.max_label >= len(labels):
            raise ManifestError(f"{manifest_path}: label_id {manifest.max_label} has no entry in {labels_path} "
                                f"({len(labels)} labels)")
    return Snapshot(uri, root, manifest.hash, len(manifest), labels, "manifest", manifest)


def _from_imagefolder(uri: str, root: str, label_mode: str) -> Snapshot:
    result = scan(root, label_mode=label_mode)
    if not result.files:
        raise ReadError(f"{root}: no images found (looked for .jpg, .jpeg, .png files)")
    records = [(f.rel, 0, max(f.size, 0), f.label) for f in result.files]
    manifest = _parse_manifest(render_manifest(records), f"{root} (on-the-fly index)")
    labels = tuple(result.labels) if result.labels is not None else None
    return Snapshot(uri, os.path.abspath(root), manifest.hash, len(manifest), labels, "index", manifest)


def resolve(uri: str, *, label_mode: str = "auto") -> Snapshot:
    """Resolves ``uri`` (optionally ``uri@sha256:<hash>``) to a :class:`Snapshot`.

    Raises :class:`SnapshotMismatchError` with both hashes when a pinned hash no longer
    matches the data, :class:`ManifestError` for a malformed manifest (with its line), and
    :class:`ReadError` when nothing can be read at ``uri``.
    """
    base, pin = split_pin(os.fspath(uri))
    if base.startswith("s3://"):
        raise ReadError(f"{base}: S3 datasets are not supported by this build yet")
    path = base[len("file://"):] if base.startswith("file://") else base
    if os.path.isdir(path):
        manifest_path = os.path.join(path, MANIFEST_REL)
        if os.path.exists(manifest_path):
            snap = _from_manifest(base, manifest_path, os.path.abspath(path))
        else:
            snap = _from_imagefolder(base, path, label_mode)
    elif os.path.isfile(path):
        # A manifest file given directly: its dataset root is the folder above _mx8/.
        mdir = os.path.dirname(os.path.abspath(path))
        root = os.path.dirname(mdir) if os.path.basename(mdir) == "_mx8" else mdir
        snap = _from_manifest(base, path, root)
    else:
        raise ReadError(2, f"{base}: no such dataset (not a directory or manifest file)")
    if pin is not None and pin != snap.manifest_hash:
        raise SnapshotMismatchError(
            f"{base}: data changed since it was pinned: manifest_hash is {snap.manifest_hash}, "
            f"pinned {pin}")
    return snap
