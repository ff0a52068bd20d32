"""Scanning an ImageFolder tree (``root/<label>/<image>``) on local disk or in an S3 listing.

Used by ``mx8.pack`` and by ``mx8.resolve`` when a directory or prefix has no manifest yet.
Both sources go through the same rules (:func:`index_listing`), so the same tree gives the
same files, order and labels wherever it lives.
"""
from __future__ import annotations

import os
import stat
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
    labels: Optional[List[str]]                                  # label names by id
    # Every other file under the root is in one of these, with the reason, never dropped:
    ignored: List[Tuple[str, str]] = field(default_factory=list)  # not an image by name, hidden, reserved
    refused: List[Tuple[str, str]] = field(default_factory=list)  # special files, links out, too big


# Reasons, one wording each (tests and users match on them).
NOT_AN_IMAGE = "no image extension"
HIDDEN = "hidden (name starts with '.')"
RESERVED = "reserved for a packed dataset's own files (_mx8/, shards/): rename it to pack it"
FOLDER_MARKER = "a folder marker (key ends with '/')"


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")


class _Walker:
    """Walks a local tree: every entry ends up found, ignored or refused (with its reason).
    Symbolic links are followed when they stay inside the root (its real path), or anywhere
    with follow_symlinks; each real directory is walked once, so link loops end."""

    def __init__(self, root: str, extensions: Optional[Sequence[str]], follow_symlinks: bool,
                 max_file_bytes: Optional[int]) -> None:
        self.root, self.real_root = root, os.path.realpath(root)
        self.exts = tuple(e.lower() for e in extensions) if extensions is not None else None
        self.follow, self.max_bytes = follow_symlinks, max_file_bytes
        self.found: List[Tuple[str, str, int]] = []
        self.ignored: List[Tuple[str, str]] = []
        self.refused: List[Tuple[str, str]] = []
        self.seen_dirs = {self.real_root}

    def _inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root.rstrip(os.sep) + os.sep)

    def _link_target(self, rel: str, path: str) -> Optional[str]:
        """The real path a link leads to, or None (refused) when it leaves the root or dangles."""
        real = os.path.realpath(path)
        if not os.path.exists(real):
            self.refused.append((rel, f"a symbolic link whose target does not exist ({real})"))
            return None
        if not self.follow and not self._inside(real):
            self.refused.append((rel, f"a symbolic link out of the source tree (to {real}); "
                                      f"pass follow_symlinks=True to pack what it points to"))
            return None
        return real

    def walk(self, dir_path: str, rel_dir: str) -> None:
        try:
            entries = sorted(os.scandir(dir_path), key=lambda e: e.name)
        except OSError as e:
            self.refused.append((rel_dir + "/" if rel_dir else ".", f"cannot list: {e.strerror}"))
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                self.ignored.append((rel + ("/" if entry.is_dir() else ""), HIDDEN))
                continue
            try:
                is_link = entry.is_symlink()
                real = self._link_target(rel, entry.path) if is_link else entry.path
                if real is None:
                    continue
                st = os.stat(real)
            except OSError as e:
                self.refused.append((rel, f"cannot stat: {e.strerror}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                if not rel_dir and entry.name in _RESERVED_DIRS:
                    self.ignored.append((rel + "/", RESERVED))
                    continue
                key = os.path.realpath(real)
                if key in self.seen_dirs:
                    self.refused.append((rel + "/", f"a directory already walked through another path ({key})"))
                    continue
                self.seen_dirs.add(key)
                self.walk(real, rel)
                continue
            if self.exts is not None and not entry.name.lower().endswith(self.exts):
                self.ignored.append((rel, NOT_AN_IMAGE))
            elif not stat.S_ISREG(st.st_mode):
                self.refused.append((rel, f"{_kind(st.st_mode)}, not a regular file"))
            elif self.max_bytes is not None and st.st_size > self.max_bytes:
                self.refused.append((rel, f"{st.st_size} bytes, above the per-file limit of {self.max_bytes} "
                                          f"(max_file_mb=)"))
            else:
                self.found.append((rel, entry.path, st.st_size))


def listing_entry(rel: str, extensions: Optional[Sequence[str]]) -> Optional[str]:
    """How the local walk would treat an object key relative to the root: None for an image,
    else why it is ignored (the same reasons as for local files: hidden path components, a
    packed dataset's own _mx8/ and shards/, no image extension, S3 folder markers)."""
    parts = rel.split("/")
    if not rel or rel.endswith("/"):
        return FOLDER_MARKER
    if any(not p or p.startswith(".") for p in parts):
        return HIDDEN
    if len(parts) > 1 and parts[0] in _RESERVED_DIRS:
        return RESERVED
    if extensions is not None and not parts[-1].lower().endswith(tuple(e.lower() for e in extensions)):
        return NOT_AN_IMAGE
    return None


def index_listing(entries: Iterable[Tuple[str, str, int]], *, label_mode: str = "auto",
                  extensions: Optional[Sequence[str]] = IMAGE_EXTENSIONS) -> ScanResult:
    """The ImageFolder index of a flat listing of (relative key, full path or URI, size), e.g.
    an S3 prefix: the same filtering, order and labels :func:`scan` gives a local tree."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    found, ignored = [], []
    for rel, path, size in entries:
        why = listing_entry(rel, extensions)
        if why is None:
            found.append((rel, path, size))
        else:
            ignored.append((rel, why))
    return _label(found, ignored, [], label_mode)


def scan(root: str, *, label_mode: str = "auto", extensions: Optional[Sequence[str]] = IMAGE_EXTENSIONS,
         follow_symlinks: bool = False, max_file_bytes: Optional[int] = None) -> ScanResult:
    """Lists the images under root in sorted order and assigns ImageFolder labels; every other
    entry is in ``ignored`` or ``refused`` with its reason.

    label_mode: ``imagefolder`` requires every image under ``<label>/``; ``auto`` uses labels
    when every image has one and there are at least two; ``none`` gives no labels.
    Symbolic links are followed only inside root unless ``follow_symlinks``; FIFOs, devices and
    sockets are refused (reading them blocks or never ends), and so are files above
    ``max_file_bytes``.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: not a directory")
    w = _Walker(os.path.abspath(root), extensions, follow_symlinks, max_file_bytes)
    w.walk(w.root, "")
    return _label(w.found, w.ignored, w.refused, label_mode)


def _label(found: List[Tuple[str, str, int]], ignored: List[Tuple[str, str]], refused: List[Tuple[str, str]],
           label_mode: str) -> ScanResult:
    """Labels from the first path component, by label_mode (see :func:`scan`)."""
    found.sort(key=lambda t: t[0].encode("utf-8", "surrogateescape"))
    ignored.sort()
    refused.sort()
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
    return ScanResult(files, labels, ignored, refused)
