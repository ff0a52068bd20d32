"""``mx8.pack``: turn an ImageFolder into tar shards plus a byte-range manifest.

Layout written under ``out``::

    shards/shard-00000.tar ...   POSIX tar, member names = the images' relative paths
    _mx8/manifest.tsv            records: sample_id, shard, data offset, length, label hint
    _mx8/labels.tsv              label names (ImageFolder datasets)

Crash safety: an existing manifest is removed before any shard is rewritten, shards are
written under temporary names and renamed when complete, and the manifest is written and
renamed last, so a reader never sees a manifest that points at missing or partial bytes.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from . import _core
from .errors import DecodeError, PackError
from .formats import render_labels, render_manifest
from .imagefolder import IMAGE_EXTENSIONS, SourceFile, scan
from .progress import Progress

ON_ERROR = ("raise", "skip")


@dataclass
class PackResult:
    out: str
    manifest_hash: str
    samples: int
    shards: int
    bytes: int                               # image bytes packed
    labels: Optional[List[str]]              # label names by id
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    ignored: List[str] = field(default_factory=list)              # files without an image extension


def _shuffle(files: List[SourceFile], seed: int) -> List[SourceFile]:
    # The same C generator as epoch orders: identical on every platform and Python version.
    seed64 = int.from_bytes(hashlib.sha256(f"mx8-pack:{seed}".encode()).digest()[:8], "little")
    order = memoryview(_core.epoch_order(len(files), seed64, True, 1, max(len(files), 1))).cast("q")
    return [files[i] for i in order]


def _load(f: SourceFile) -> bytes:
    """The file's bytes, validated as an image; raises PackError naming the file."""
    try:
        with open(f.path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise PackError(f"cannot read {f.path}: {e.strerror}") from None
    if not data:
        raise PackError(f"{f.path}: zero-length file")
    try:
        _core.probe_image(data)
    except DecodeError as e:
        raise PackError(f"{f.path}: {e}") from None
    return data


class _ShardSet:
    """Writes shards one after another under temporary names; renames them when done."""

    def __init__(self, out: str, shard_bytes: int) -> None:
        self.dir = os.path.join(out, "shards")
        self.shard_bytes = shard_bytes
        self.done: List[str] = []     # temporary paths of finished shards
        self.writer: Optional[_core.TarWriter] = None
        self.tmp = ""

    def name(self, index: int) -> str:
        return f"shard-{index:05d}.tar"

    def add(self, rel: str, data: bytes, mtime: int) -> Tuple[str, int]:
        need = _core.TarWriter.member_size(rel, len(data))
        if self.writer is not None and self.writer.pos > 0 and self.writer.pos + need + 1024 > self.shard_bytes:
            self._finish_current()
        if self.writer is None:
            self.tmp = os.path.join(self.dir, f".{self.name(len(self.done))}.tmp-{os.getpid()}")
            self.writer = _core.TarWriter(self.tmp)
        offset = self.writer.add(rel, data, mtime)
        return f"shards/{self.name(len(self.done))}", offset

    def _finish_current(self) -> None:
        assert self.writer is not None
        self.writer.finish()
        self.done.append(self.tmp)
        self.writer = None

    def commit(self) -> int:
        if self.writer is not None:
            self._finish_current()
        for i, tmp in enumerate(self.done):
            os.replace(tmp, os.path.join(self.dir, self.name(i)))
        # Shards left over from an earlier, larger pack of the same output are not ours.
        i = len(self.done)
        while os.path.exists(os.path.join(self.dir, self.name(i))):
            os.remove(os.path.join(self.dir, self.name(i)))
            i += 1
        return len(self.done)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.done.append(self.tmp)
        for tmp in self.done:
            try:
                os.remove(tmp)
            except OSError:
                pass


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pack(src: str, out: str, *, shard_mb: float = 512, label_mode: str = "auto", shuffle: bool = True,
         seed: int = 0, on_error: str = "raise", extensions: Optional[Sequence[str]] = IMAGE_EXTENSIONS,
         progress: bool = True) -> PackResult:
    """Packs the images under ``src`` into tar shards and a manifest under ``out``.

    ``on_error="skip"`` skips zero-length, unreadable and non-image files and lists them in
    ``result.skipped``; by default the first one raises :class:`mx8.PackError` naming it.
    Files without an image extension (``extensions``) are listed in ``result.ignored``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    src, out = os.fspath(src), os.fspath(out)
    if src.startswith("s3://") or out.startswith("s3://"):
        raise PackError("packing from or to S3 is not supported by this build yet")
    result = scan(src, label_mode=label_mode, extensions=extensions)
    if not result.files:
        raise PackError(f"{src}: no images to pack (looked for {', '.join(extensions or ['any file'])})")
    files = _shuffle(result.files, seed) if shuffle else result.files

    meta_dir = os.path.join(out, "_mx8")
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    os.makedirs(meta_dir, exist_ok=True)
    manifest_path = os.path.join(meta_dir, "manifest.tsv")
    if os.path.exists(manifest_path):  # it would point into shards we are about to rewrite
        os.remove(manifest_path)

    shards = _ShardSet(out, int(shard_mb * 1024 * 1024))
    records, skipped, total = [], [], 0
    try:
        with Progress(len(files), f"pack {os.path.basename(os.path.normpath(src))}",
                      enabled=None if progress else False) as bar:
            for f in files:
                try:
                    data = _load(f)
                except PackError as e:
                    if on_error == "raise":
                        raise
                    skipped.append((f.rel, str(e)))
                    bar.update(1)
                    continue
                mtime = int(os.stat(f.path).st_mtime)
                location, offset = shards.add(f.rel, data, mtime)
                records.append((location, offset, len(data), f.label))
                total += len(data)
                bar.update(1, len(data))
        if not records:
            raise PackError(f"{src}: every file was skipped; nothing to pack")
        n_shards = shards.commit()
    except BaseException:
        shards.abort()
        raise
    manifest = render_manifest(records)
    if result.labels is not None:
        _write_atomic(os.path.join(meta_dir, "labels.tsv"), render_labels(result.labels))
    elif os.path.exists(os.path.join(meta_dir, "labels.tsv")):
        os.remove(os.path.join(meta_dir, "labels.tsv"))
    _fsync_dir(os.path.join(out, "shards"))
    _write_atomic(manifest_path, manifest)  # last: the dataset exists once this rename lands
    _fsync_dir(meta_dir)
    return PackResult(out=out, manifest_hash=hashlib.sha256(manifest).hexdigest(), samples=len(records),
                      shards=n_shards, bytes=total, labels=result.labels, skipped=skipped,
                      ignored=result.ignored)
