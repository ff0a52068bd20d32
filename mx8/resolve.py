"""``mx8.resolve``: pin a dataset snapshot by its manifest_hash.

A URI is a local directory (packed: it holds ``_mx8/manifest.tsv``; or a plain ImageFolder,
indexed on the fly), a manifest file, or an S3 prefix ``s3://bucket/prefix/`` (packed: its
manifest is read with two GETs and no LIST; raw: listed page by page and indexed), optionally
pinned with ``@sha256:<hash>``. S3 snapshots are kept in the local manifest store
(mx8/manifest_store.py), so a pinned S3 URI resolves from there without any request.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _core, manifest_index
from .errors import ManifestError, ReadError, SnapshotMismatchError
from .formats import parse_labels, render_labels, render_manifest
from .imagefolder import ScanResult, index_listing, scan
from .manifest_store import ManifestStore
from .s3config import S3Config, parse_s3_uri
from .s3io import S3Root, get_optional, is_s3, list_objects, s3_root

# uri@sha256:<manifest_hash>, optionally +labels:<labels_hash> (mx8's pins carry it when the
# dataset has label names, so a pin also holds the names still; MX8's plain form checks the
# manifest alone).
_PIN = re.compile(r"^(?P<base>.*)@sha256:(?P<hash>[0-9a-fA-F]{64})(?:\+labels:(?P<labels>[0-9a-fA-F]{64}))?$")
MANIFEST_REL = os.path.join("_mx8", "manifest.tsv")
LABELS_REL = os.path.join("_mx8", "labels.tsv")
MANIFEST_KEY = "_mx8/manifest.tsv"  # the same, as S3 keys relative to a dataset prefix
LABELS_KEY = "_mx8/labels.tsv"


@dataclass(frozen=True)
class Snapshot:
    """A resolved dataset: what ``mx8.Dataset`` reads, pinned by ``manifest_hash``."""

    uri: str                       # the dataset's URI without the pin
    root: str                      # directory (or s3:// prefix) relative locations are resolved against
    manifest_hash: str
    samples: int
    labels: Optional[Tuple[str, ...]]  # label names by id, None without labels
    source: str                    # "manifest" or "index" (ImageFolder indexed on the fly)
    manifest: "_core.Manifest" = field(repr=False, compare=False)
    # S3 datasets: bucket, root prefix and the configuration to fetch bytes with (secret masked).
    s3: Optional[S3Root] = field(default=None, compare=False)
    from_store: bool = field(default=False, compare=False)  # served from the local manifest store

    @property
    def labels_hash(self) -> Optional[str]:
        """SHA-256 of the canonical labels.tsv bytes, None without labels."""
        return labels_hash(self.labels)

    @property
    def pinned_uri(self) -> str:
        """The URI pinned to this snapshot: its records, and its label names when it has any."""
        lh = self.labels_hash
        return f"{self.uri}@sha256:{self.manifest_hash}" + (f"+labels:{lh}" if lh else "")

    def location_objects(self) -> List[Tuple[str, str]]:
        """(bucket, key) of the S3 object each manifest location points at: relative locations
        under the dataset's root prefix, ``s3://`` ones as written. For the S3 reader; a
        location on local disk raises :class:`ReadError` naming it."""
        out = []
        for loc in self.manifest.locations:
            if loc.startswith("s3://"):
                try:
                    bucket, key = parse_s3_uri(loc)
                except ValueError as e:
                    raise ReadError(f"{self.uri}: bad S3 location {loc!r}: {e}") from None
                if self.s3 is not None and bucket != self.s3.bucket and not trust_locations():
                    raise ReadError(f"{self.uri}: location {loc!r} is in another bucket than the manifest; a "
                                    f"remote manifest reads only its own bucket with your credentials "
                                    f"(set {TRUST_ENV}=1 to allow it)")
                out.append((bucket, key))
            elif self.s3 is not None and not loc.startswith("file://") and not loc.startswith("/"):
                out.append((self.s3.bucket, self.s3.key(loc)))
            else:
                raise ReadError(f"{self.uri}: location {loc!r} is not on S3")
        return out

    def location_paths(self) -> List[str]:
        """The local file each manifest location points at (relative ones resolved against
        root). S3 datasets have objects, not files: see :meth:`location_objects`."""
        if self.s3 is not None:
            raise ReadError(f"{self.uri}: the dataset is on S3, its locations are objects, not local files "
                            f"(use location_objects())")
        out = []
        for loc in self.manifest.locations:
            if loc.startswith("s3://"):
                raise ReadError(f"{self.uri}: location {loc!r} is an S3 object, not a local file "
                                f"(use location_objects())")
            if loc.startswith("file://"):
                loc = loc[len("file://"):]
            if os.path.isabs(loc):
                out.append(loc)
                continue
            path = os.path.normpath(os.path.join(self.root, loc))
            if not (path + os.sep).startswith(os.path.normpath(self.root) + os.sep) and not trust_locations():
                raise ReadError(f"{self.uri}: relative location {loc!r} leaves the dataset folder; a manifest's "
                                f"relative locations stay under it (absolute ones are taken as written; set "
                                f"{TRUST_ENV}=1 to allow it)")
            out.append(path)
        return out


# The trust model for manifest locations (docs/ARCHITECTURE.md): relative locations stay
# under the dataset's folder or prefix, and a manifest on S3 reads only its own bucket. A user
# who means otherwise (a manifest that indexes another bucket) says so with this variable.
TRUST_ENV = "MX8_TRUST_MANIFEST_LOCATIONS"


def trust_locations() -> bool:
    return os.environ.get(TRUST_ENV, "0") in ("1", "true", "yes")


class Pin(NamedTuple):
    manifest_hash: str
    labels_hash: Optional[str]  # None: the pin does not hold the label names (MX8's form)


def split_pin(uri: str) -> Tuple[str, Optional[Pin]]:
    m = _PIN.match(uri)
    if not m:
        return uri, None
    lh = m.group("labels")
    return m.group("base"), Pin(m.group("hash").lower(), lh.lower() if lh else None)


def labels_hash(labels: Optional[Sequence[str]]) -> Optional[str]:
    return hashlib.sha256(render_labels(labels)).hexdigest() if labels is not None else None


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


def _snapshot(uri: str, root: str, data: Union[bytes, "_core.Manifest"], labels_data: Optional[bytes], source: str,
              manifest_src: str, labels_src: str, s3: Optional[S3Root] = None, from_store: bool = False) -> Snapshot:
    """data: the manifest's bytes, or the manifest itself (mapped from its index)."""
    manifest = data if isinstance(data, _core.Manifest) else _parse_manifest(data, manifest_src)
    labels = None
    if labels_data is not None:
        labels = tuple(parse_labels(labels_data, labels_src))
        if manifest.max_label >= len(labels):
            raise ManifestError(f"{manifest_src}: label_id {manifest.max_label} has no entry in {labels_src} "
                                f"({len(labels)} labels)")
    return Snapshot(uri, root, manifest.hash, len(manifest), labels, source, manifest, s3, from_store)


def _from_manifest(uri: str, manifest_path: str, root: str, store: ManifestStore) -> Snapshot:
    labels_path = os.path.join(os.path.dirname(manifest_path), "labels.tsv")
    labels = _read(labels_path) if os.path.exists(labels_path) else None
    manifest = manifest_index.load(manifest_path, store.root)  # mapped, or None: parse it
    return _snapshot(uri, root, manifest if manifest is not None else _read(manifest_path), labels, "manifest",
                     manifest_path, labels_path)


def _s3_dataset_root(base: str, config: Optional[S3Config]) -> S3Root:
    """The dataset root of an S3 URI; a URI naming the manifest itself means the prefix above _mx8/."""
    bucket, key = parse_s3_uri(base)
    if key == MANIFEST_KEY or key.endswith("/" + MANIFEST_KEY):
        base = f"s3://{bucket}/{key[:-len(MANIFEST_KEY)]}"
    return s3_root(base, config)


def _resolve_s3(base: str, pin: Optional[str], label_mode: str, store: ManifestStore,
                config: Optional[S3Config]) -> Snapshot:
    root = _s3_dataset_root(base, config)
    if pin is not None:
        hit = store.get(pin.manifest_hash, mapped=True)
        if hit is not None and pin.labels_hash is not None and (
                hit.labels is None or labels_hash(parse_labels(hit.labels, "store")) != pin.labels_hash):
            hit = None  # the store has these records with other label names: ask the bucket
        if hit is not None:  # the pinned snapshot is immutable: no request needed
            return _snapshot(root.uri, root.uri, hit.manifest, hit.labels, hit.source,
                             f"{store.root}/{pin}/manifest.tsv", f"{store.root}/{pin}/labels.tsv", root, True)
    client = root.client()
    manifest_url, labels_url = root.url(MANIFEST_KEY), root.url(LABELS_KEY)
    data = get_optional(client, root.bucket, root.key(MANIFEST_KEY))
    if data is not None:
        labels = get_optional(client, root.bucket, root.key(LABELS_KEY))
        snap = _snapshot(root.uri, root.uri, data, labels, "manifest", manifest_url, labels_url, root)
    else:
        listing = ((key[len(root.prefix):], f"s3://{root.bucket}/{key}", size)
                   for key, size in list_objects(client, root.bucket, root.prefix))
        result = _indexable(index_listing(listing, label_mode=label_mode), root.uri)
        if not result.files:
            raise ReadError(2, f"{root.uri}: no {MANIFEST_KEY} and no images under the prefix "
                               f"(looked for .jpg, .jpeg, .png objects)")
        data = render_manifest((f.rel, 0, f.size, f.label) for f in result.files)
        labels = render_labels(result.labels) if result.labels is not None else None
        snap = _snapshot(root.uri, root.uri, data, labels, "index", f"{root.uri} (on-the-fly index)",
                         f"{root.uri} (labels)", root)
    try:
        store.put(snap.manifest_hash, data, labels, source=snap.source, uri=root.uri)
    except OSError as e:  # a read-only cache must not stop training; it only costs requests later
        warnings.warn(f"mx8: cannot keep the manifest of {root.uri} in the manifest store {store.root}: {e}",
                      RuntimeWarning, stacklevel=3)
    return snap


def _indexable(result: ScanResult, where: str) -> ScanResult:
    """An on-the-fly index holds each file's path in a TSV manifest, which has no room for a tab,
    newline or carriage return in a name (pack has: it names tar members instead). Such files,
    and those the scan refused, are left out with a warning that names the first and counts
    all, rather than failing the whole folder."""
    bad = [f for f in result.files if any(c in f.rel for c in "\t\n\r")]
    if bad:
        result.files = [f for f in result.files if f not in bad]
        result.refused += [(f.rel, "a tab, newline or carriage return in its name (mx8.pack can pack it)")
                           for f in bad]
    if result.refused:
        rel, why = result.refused[0]
        warnings.warn(f"mx8: indexing {where}: left out {len(result.refused)} file(s), first {rel!r}: {why}",
                      RuntimeWarning, stacklevel=4)
    return result


def _from_imagefolder(uri: str, root: str, label_mode: str) -> Snapshot:
    result = _indexable(scan(root, label_mode=label_mode), root)
    if not result.files:
        raise ReadError(f"{root}: no images found (looked for .jpg, .jpeg, .png files)")
    records = [(f.rel, 0, max(f.size, 0), f.label) for f in result.files]
    manifest = _parse_manifest(render_manifest(records), f"{root} (on-the-fly index)")
    labels = tuple(result.labels) if result.labels is not None else None
    return Snapshot(uri, os.path.abspath(root), manifest.hash, len(manifest), labels, "index", manifest)


def resolve(uri: str, *, label_mode: str = "auto", manifest_store: Optional[str] = None,
            s3: Optional[S3Config] = None) -> Snapshot:
    """Resolves ``uri`` (optionally ``uri@sha256:<hash>``) to a :class:`Snapshot`.

    S3 URIs use ``s3`` (default: :func:`mx8.s3config.s3_config`, the AWS_* variables) and keep
    what they resolve in the manifest store (``manifest_store``, default MX8_MANIFEST_STORE or
    the user cache folder), from which a pinned URI is served without any request. A local
    manifest's binary index sits beside it, or in that store when its folder is read-only.

    Raises :class:`SnapshotMismatchError` with both hashes when a pinned hash no longer
    matches the data, :class:`ManifestError` for a malformed manifest (with its line), and
    :class:`ReadError` when nothing can be read at ``uri``.
    """
    base, pin = split_pin(os.fspath(uri))
    if is_s3(base):
        snap = _resolve_s3(base, pin, label_mode, ManifestStore(manifest_store), s3)
        base = snap.uri
    else:
        snap = _resolve_local(base, label_mode, ManifestStore(manifest_store))
    if pin is not None and pin.manifest_hash != snap.manifest_hash:
        raise SnapshotMismatchError(
            f"{base}: data changed since it was pinned: manifest_hash is {snap.manifest_hash}, "
            f"pinned {pin.manifest_hash}")
    if pin is not None and pin.labels_hash is not None and pin.labels_hash != snap.labels_hash:
        raise SnapshotMismatchError(
            f"{base}: label names changed since they were pinned (labels.tsv): labels hash is "
            f"{snap.labels_hash or 'none (no labels.tsv)'}, pinned {pin.labels_hash}")
    return snap


def _resolve_local(base: str, label_mode: str, store: ManifestStore) -> Snapshot:
    path = base[len("file://"):] if base.startswith("file://") else base
    if os.path.isdir(path):
        manifest_path = os.path.join(path, MANIFEST_REL)
        if os.path.exists(manifest_path):
            snap = _from_manifest(base, manifest_path, os.path.abspath(path), store)
        else:
            snap = _from_imagefolder(base, path, label_mode)
    elif os.path.isfile(path):
        # A manifest file given directly: its dataset root is the folder above _mx8/.
        mdir = os.path.dirname(os.path.abspath(path))
        root = os.path.dirname(mdir) if os.path.basename(mdir) == "_mx8" else mdir
        snap = _from_manifest(base, path, root, store)
    else:
        raise ReadError(2, f"{base}: no such dataset (not a directory or manifest file)")
    return snap
