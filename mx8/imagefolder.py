"""Scanning an ImageFolder tree (``root/<label>/<image>``) on local disk or in an S3 listing.

Used by ``mx8.pack`` and by ``mx8.resolve`` when a directory or prefix has no manifest yet.
Both sources go through the same rules (:func:`index_listing`), so the same tree gives the
same files, order and labels wherever it lives.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png")
LABEL_MODES = ("auto", "imagefolder", "none")
# Directories a packed dataset keeps beside its images; never treated as samples.
_RESERVED_DIRS = ("_mx8", "shards")


@dataclass
class SourceFile:
    rel: str                # path relative to the root, '/'-separated
    path: str               # absolute path
    size: int
    label: Optional[int]    # label id, None without labels


@dataclass
class ScanResult:
    files: List[SourceFile]
    labels: Optional[List[str]]                       # label names by id
    ignored: List[str] = field(default_factory=list)  # files without an image extension


def _walk(root: str, extensions: Optional[Sequence[str]]) -> Tuple[List[Tuple[str, str, int]], List[str]]:
    found, ignored = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and not (rel_dir == "." and d in _RESERVED_DIRS)]
        for name in filenames:
            if name.startswith("."):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if extensions is not None and not name.lower().endswith(tuple(extensions)):
                ignored.append(rel)
                continue
            path = os.path.join(dirpath, name)
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1  # reported by the reader, which names the file
            found.append((rel, path, size))
    found.sort(key=lambda t: t[0].encode("utf-8", "surrogateescape"))
    ignored.sort()
    return found, ignored


def listing_entry(rel: str, extensions: Optional[Sequence[str]]) -> Optional[bool]:
    """How the local walk would treat an object key relative to the root: True = an image,
    False = a file without an image extension (reported as ignored), None = not part of the
    tree at all (hidden path components, a packed dataset's own _mx8/ and shards/, and the
    zero-byte "folder" markers some S3 tools create)."""
    parts = rel.split("/")
    if not rel or rel.endswith("/") or any(not p or p.startswith(".") for p in parts):
        return None
    if len(parts) > 1 and parts[0] in _RESERVED_DIRS:
        return None
    if extensions is not None and not parts[-1].lower().endswith(tuple(extensions)):
        return False
    return True


def index_listing(entries: Iterable[Tuple[str, str, int]], *, label_mode: str = "auto",
                  extensions: Optional[Sequence[str]] = IMAGE_EXTENSIONS) -> ScanResult:
    """The ImageFolder index of a flat listing of (relative key, full path or URI, size), e.g.
    an S3 prefix: the same filtering, order and labels :func:`scan` gives a local tree."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    found, ignored = [], []
    for rel, path, size in entries:
        kind = listing_entry(rel, extensions)
        if kind:
            found.append((rel, path, size))
        elif kind is False:
            ignored.append(rel)
    found.sort(key=lambda t: t[0].encode("utf-8", "surrogateescape"))
    ignored.sort()
    return _label(found, ignored, label_mode)


def scan(root: str, *, label_mode: str = "auto",
         extensions: Optional[Sequence[str]] = IMAGE_EXTENSIONS) -> ScanResult:
    """Lists the images under root in sorted order and assigns ImageFolder labels.

    label_mode: ``imagefolder`` requires every image under ``<label>/``; ``auto`` uses labels
    when every image has one and there are at least two; ``none`` gives no labels.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    found, ignored = _walk(os.path.abspath(root), extensions)
    return _label(found, ignored, label_mode)


def _label(found: List[Tuple[str, str, int]], ignored: List[str], label_mode: str) -> ScanResult:
    """Labels from the first path component, by label_mode (see :func:`scan`)."""
    names = [rel.split("/", 1)[0] if "/" in rel else None for rel, _, _ in found]
    use_labels = False
    if label_mode == "imagefolder":
        missing = [rel for (rel, _, _), n in zip(found, names) if n is None]
        if missing:
            from .errors import PackError
            raise PackError(f"label_mode='imagefolder' needs every image under <label>/, "
                            f"but {missing[0]!r} (and {len(missing) - 1} more) is at the top level")
        use_labels = True
    elif label_mode == "auto":
        use_labels = bool(found) and None not in names and len(set(names)) >= 2
    labels: Optional[List[str]] = None
    ids: Dict[str, int] = {}
    if use_labels:
        labels = sorted(set(n for n in names if n is not None),
                        key=lambda s: s.encode("utf-8", "surrogateescape"))
        ids = {name: i for i, name in enumerate(labels)}
    files = [SourceFile(rel, path, size, ids[n] if use_labels and n is not None else None)
             for (rel, path, size), n in zip(found, names)]
    return ScanResult(files, labels, ignored)
