"""``mx8.pack``: turn an ImageFolder into tar shards plus a byte-range manifest.

Layout written under ``out``::

    shards/shard-00000.tar ...   POSIX tar, member names = the images' relative paths
    _mx8/manifest.tsv            records: sample_id, shard, data offset, length, label hint
    _mx8/labels.tsv              label names (ImageFolder datasets)

``src`` and ``out`` are local directories or ``s3://bucket/prefix/`` (either side, or both).
An S3 source is listed page by page and fetched by a few concurrent GETs, in order and with
bounded memory; S3 shards are written to a local temporary file (at most two at a time) and
multipart-uploaded. Locations in the manifest are relative to the dataset root, so a packed
dataset copies between disk and S3 unchanged.

Crash safety: an existing manifest is removed before any shard is rewritten, shards are
written under temporary names (on S3: uploaded while no manifest exists) and the manifest is
written last, so a reader never sees a manifest that points at missing or partial bytes, and
running the same pack again after an interruption gives a correct result.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _core
from .errors import DecodeError, PackError, ReadError
from .formats import render_labels, render_manifest
from .imagefolder import IMAGE_EXTENSIONS, ScanResult, SourceFile, index_listing, scan
from .progress import Progress
from .s3config import S3Config
from .s3io import ClientPool, S3Root, is_not_found, is_s3, list_objects, map_ordered, s3_root, threads, upload_file

ON_ERROR = ("raise", "skip")


@dataclass
class PackResult:
    out: str
    manifest_hash: str
    samples: int
    shards: int
    bytes: int                               # image bytes packed
    labels: Optional[List[str]]              # label names by id
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (relative path, reason): bad input
    ignored: List[Tuple[str, str]] = field(default_factory=list)  # (relative path, reason): not samples
    s3_stats: Optional[Dict[str, int]] = None  # requests, retries, bytes_in, bytes_out (S3 packs)


def _shuffle(files: List[SourceFile], seed: int) -> List[SourceFile]:
    # The same C generator as epoch orders: identical on every platform and Python version.
    seed64 = int.from_bytes(hashlib.sha256(f"mx8-pack:{seed}".encode()).digest()[:8], "little")
    order = memoryview(_core.epoch_order(len(files), seed64, True, 1, max(len(files), 1))).cast("q")
    return [files[i] for i in order]


def _check_image(data: bytes, where: str, what: str) -> bytes:
    if not data:
        raise PackError(f"{where}: zero-length {what}")
    try:
        _core.probe_image(data)
    except DecodeError as e:
        raise PackError(f"{where}: {e}") from None
    return data


def _load(f: SourceFile, max_bytes: int) -> Tuple[bytes, int]:
    """The file's bytes, validated as an image, and its mtime; raises PackError naming the file.
    Opened without blocking and checked again, since the file may have changed since the scan
    (a FIFO in its place would block forever, /dev/zero would never end)."""
    try:
        fd = os.open(f.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PackError(f"{f.path}: not a regular file")
            if st.st_size > max_bytes:
                raise PackError(f"{f.path}: {st.st_size} bytes, above the per-file limit of {max_bytes}")
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(max_bytes + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise PackError(f"cannot read {f.path}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise PackError(f"{f.path}: grew past the per-file limit of {max_bytes} bytes while read")
    return _check_image(data, f.path, "file"), int(st.st_mtime)


# What a source hands the packer, in pack order: the file, then its bytes and tar mtime, or
# the PackError that on_error="skip" may pass over.
Loaded = Tuple[SourceFile, Union[Tuple[bytes, int], PackError]]


class _LocalSource:
    def __init__(self, root: str, follow_symlinks: bool, max_bytes: int) -> None:
        self.root, self.follow_symlinks, self.max_bytes = root, follow_symlinks, max_bytes

    def scan(self, label_mode: str, extensions: Optional[Sequence[str]]) -> ScanResult:
        return scan(self.root, label_mode=label_mode, extensions=extensions, follow_symlinks=self.follow_symlinks,
                    max_file_bytes=self.max_bytes)

    def load(self, files: List[SourceFile]) -> Iterator[Loaded]:
        for f in files:
            try:
                yield f, _load(f, self.max_bytes)
            except PackError as e:
                yield f, e


class _S3Source:
    """Objects under an S3 prefix: one paged LIST, then concurrent GETs delivered in pack
    order with at most ``budget`` bytes fetched ahead."""

    def __init__(self, root: S3Root, pool: ClientPool, budget: int, max_bytes: int) -> None:
        self.root, self.pool, self.budget, self.max_bytes = root, pool, budget, max_bytes

    def scan(self, label_mode: str, extensions: Optional[Sequence[str]]) -> ScanResult:
        prefix = self.root.prefix
        listing = ((key[len(prefix):], f"s3://{self.root.bucket}/{key}", size)
                   for key, size in list_objects(self.pool.get(), self.root.bucket, prefix))
        result = index_listing(listing, label_mode=label_mode, extensions=extensions)
        too_big = [f for f in result.files if f.size > self.max_bytes]
        if too_big:  # refused like local files: the labels stay those of the whole listing
            result.files = [f for f in result.files if f.size <= self.max_bytes]
            result.refused += [(f.rel, f"{f.size} bytes, above the per-file limit of {self.max_bytes} "
                                       f"(max_file_mb=)") for f in too_big]
        return result

    def _fetch(self, f: SourceFile) -> bytes:
        try:
            data = self.pool.get().get(self.root.bucket, self.root.key(f.rel))
        except ReadError as e:
            if is_not_found(e):  # deleted since the listing: a bad input like an unreadable file
                raise PackError(f"cannot read {f.path}: {e}") from None
            raise  # 403, retries exhausted, ...: not this object's fault, so never skipped
        return _check_image(data, f.path, "object")

    def load(self, files: List[SourceFile]) -> Iterator[Loaded]:
        # mtime 0: a LIST page carries no usable time here, and fixed times keep shards identical
        # from run to run.
        for f, fut in map_ordered(self._fetch, files, workers=threads(), cost=lambda f: max(f.size, 0) + 1024,
                                  budget=self.budget):
            err = fut.exception()
            if isinstance(err, PackError):
                yield f, err
            elif err is not None:
                raise err
            else:
                yield f, (fut.result(), 0)


class _ShardSet:
    """Writes shards one after another under temporary names; renames them when done."""

    def __init__(self, out: str, shard_bytes: int, tmp_dir: Optional[str] = None) -> None:
        self.dir = os.path.join(out, "shards")
        self.tmp_dir = tmp_dir or self.dir
        self.shard_bytes = shard_bytes
        self.index = 0                # of the shard being written
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
            self.tmp = os.path.join(self.tmp_dir, f".{self.name(self.index)}.tmp-{os.getpid()}")
            self.writer = _core.TarWriter(self.tmp)
        offset = self.writer.add(rel, data, mtime)
        return f"shards/{self.name(self.index)}", offset

    def _finish_current(self) -> None:
        assert self.writer is not None
        self.writer.finish()
        self.writer = None
        self._finished(self.index, self.tmp)
        self.index += 1

    def _finished(self, index: int, tmp: str) -> None:
        self.done.append(tmp)

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


class _S3ShardSet(_ShardSet):
    """Shards for an S3 output: each is written to a local temporary file, then uploaded in
    the background while the next one is written; finishing a third waits for the upload of
    the first, so at most two shards sit on local disk."""

    def __init__(self, root: S3Root, pool: ClientPool, shard_bytes: int) -> None:
        self.tmp_root = tempfile.mkdtemp(prefix="mx8-pack-")
        super().__init__(self.tmp_root, shard_bytes, tmp_dir=self.tmp_root)
        self.root, self.pool = root, pool
        self.uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mx8-shard-upload")
        self.parts = ThreadPoolExecutor(max_workers=threads(), thread_name_prefix="mx8-s3-part")
        self.pending: Optional[Future] = None

    def _upload(self, index: int, tmp: str) -> None:
        try:
            upload_file(self.pool, self.parts, self.root.bucket, self.root.key(f"shards/{self.name(index)}"), tmp)
        finally:
            os.remove(tmp)

    def _wait(self) -> None:
        if self.pending is not None:
            fut, self.pending = self.pending, None
            fut.result()

    def _finished(self, index: int, tmp: str) -> None:
        self._wait()
        self.pending = self.uploader.submit(self._upload, index, tmp)

    def commit(self) -> int:
        if self.writer is not None:
            self._finish_current()
        self._wait()
        # Shards left over from an earlier, larger pack of the same output are not ours.
        client, i = self.pool.get(), self.index
        while True:
            try:
                client.head(self.root.bucket, self.root.key(f"shards/{self.name(i)}"))
            except ReadError as e:
                if is_not_found(e):
                    break
                raise
            client.delete(self.root.bucket, self.root.key(f"shards/{self.name(i)}"))
            i += 1
        self._close()
        return self.index

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        if self.pending is not None:  # let it finish or abort its multipart upload: no stray parts
            self.pending.exception()
            self.pending = None
        self._close()

    def _close(self) -> None:
        self.uploader.shutdown(wait=True)
        self.parts.shutdown(wait=True)
        shutil.rmtree(self.tmp_root, ignore_errors=True)


class _LocalOutput:
    def __init__(self, out: str, shard_bytes: int) -> None:
        self.out = out
        self.meta_dir = os.path.join(out, "_mx8")
        self.manifest_path = os.path.join(self.meta_dir, "manifest.tsv")
        self.shards = _ShardSet(out, shard_bytes)

    def begin(self) -> _ShardSet:
        os.makedirs(os.path.join(self.out, "shards"), exist_ok=True)
        os.makedirs(self.meta_dir, exist_ok=True)
        if os.path.exists(self.manifest_path):  # it would point into shards we are about to rewrite
            os.remove(self.manifest_path)
        return self.shards

    def finish(self, manifest: bytes, labels: Optional[bytes]) -> None:
        labels_path = os.path.join(self.meta_dir, "labels.tsv")
        if labels is not None:
            _write_atomic(labels_path, labels)
        elif os.path.exists(labels_path):
            os.remove(labels_path)
        _fsync_dir(os.path.join(self.out, "shards"))
        _write_atomic(self.manifest_path, manifest)  # last: the dataset exists once this rename lands
        _fsync_dir(self.meta_dir)


class _S3Output:
    def __init__(self, root: S3Root, pool: ClientPool, shard_bytes: int) -> None:
        self.root, self.pool = root, pool
        self.shard_bytes = shard_bytes

    def begin(self) -> _ShardSet:
        # DELETE answers 204 whether or not the manifest exists, and 404 for a missing bucket:
        # so this also checks the bucket and credentials before any work is done.
        self.pool.get().delete(self.root.bucket, self.root.key("_mx8/manifest.tsv"))
        return _S3ShardSet(self.root, self.pool, self.shard_bytes)

    def finish(self, manifest: bytes, labels: Optional[bytes]) -> None:
        client = self.pool.get()
        if labels is not None:
            client.put(self.root.bucket, self.root.key("_mx8/labels.tsv"), labels,
                       content_type="text/tab-separated-values")
        else:
            client.delete(self.root.bucket, self.root.key("_mx8/labels.tsv"))
        # Last: every shard is complete once this PUT lands, and a PUT is atomic on S3.
        client.put(self.root.bucket, self.root.key("_mx8/manifest.tsv"), manifest,
                   content_type="text/tab-separated-values")


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
         progress: bool = True, s3: Optional[S3Config] = None, follow_symlinks: bool = False,
         max_file_mb: float = 1024) -> PackResult:
    """Packs the images under ``src`` into tar shards and a manifest under ``out``.

    ``src`` and ``out`` are local directories or ``s3://bucket/prefix/``; S3 uses ``s3``
    (default: the AWS_* environment, see mx8/s3config.py). The same images, seed and options
    give the same manifest_hash wherever they are read from or written to.

    Every file under ``src`` is packed, skipped or ignored, each with its reason:

    - ``result.skipped`` (with ``on_error="skip"``; by default the first one raises
      :class:`mx8.PackError` naming it): zero-length, unreadable and non-image files, FIFOs,
      devices and sockets (reading them blocks or never ends), symbolic links that leave the
      source tree (``follow_symlinks=True`` follows them anyway), files above ``max_file_mb``;
    - ``result.ignored``: files without an image extension (``extensions``), hidden files and
      folders, and top-level ``_mx8/`` and ``shards/`` (a packed dataset's own).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if shard_mb <= 0:
        raise ValueError(f"shard_mb must be positive, got {shard_mb}")
    if max_file_mb <= 0:
        raise ValueError(f"max_file_mb must be positive, got {max_file_mb}")
    src, out = os.fspath(src), os.fspath(out)
    shard_bytes = int(shard_mb * 1024 * 1024)
    max_bytes = int(max_file_mb * 1024 * 1024)
    s3_src = s3_root(src, s3) if is_s3(src) else None
    s3_out = s3_root(out, s3) if is_s3(out) else None
    pool = ClientPool((s3_src or s3_out).config) if (s3_src or s3_out) else None
    source: Union[_LocalSource, _S3Source] = _LocalSource(src, follow_symlinks, max_bytes)
    if s3_src is not None and pool is not None:
        # Fetch ahead by about two shards, within 256 MiB: enough to keep the GETs busy.
        source = _S3Source(s3_src, pool, min(2 * shard_bytes, 256 << 20), max_bytes)
        src = s3_src.uri
    result = source.scan(label_mode, extensions)
    if result.refused and on_error == "raise":
        rel, why = result.refused[0]
        more = f" (and {len(result.refused) - 1} more)" if len(result.refused) > 1 else ""
        raise PackError(f"{os.path.join(src, rel)}: {why}{more}; on_error='skip' (mx8 pack --skip-bad) "
                        f"packs the rest and lists them")
    if not result.files:
        raise PackError(f"{src}: no images to pack (looked for {', '.join(extensions or ['any file'])})")
    files = _shuffle(result.files, seed) if shuffle else result.files

    sink: Union[_LocalOutput, _S3Output] = _LocalOutput(out, shard_bytes)
    if s3_out is not None and pool is not None:
        sink = _S3Output(s3_out, pool, shard_bytes)
        out = s3_out.uri
    shards = sink.begin()
    records, skipped, total = [], list(result.refused), 0
    try:
        with Progress(len(files), f"pack {os.path.basename(os.path.normpath(src))}",
                      enabled=None if progress else False) as bar, closing(source.load(files)) as loaded:
            for f, got in loaded:
                if isinstance(got, PackError):
                    if on_error == "raise":
                        raise got
                    skipped.append((f.rel, str(got)))
                    bar.update(1)
                    continue
                data, mtime = got
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
    sink.finish(manifest, render_labels(result.labels) if result.labels is not None else None)
    return PackResult(out=out, manifest_hash=hashlib.sha256(manifest).hexdigest(),
                      samples=len(records), shards=n_shards, bytes=total, labels=result.labels, skipped=skipped,
                      ignored=result.ignored, s3_stats=pool.stats() if pool is not None else None)
