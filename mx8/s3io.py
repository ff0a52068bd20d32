"""S3 plumbing shared by ``mx8.pack`` and ``mx8.resolve``: prefixes, paged listing, ordered
concurrent GETs with bounded memory, and multipart upload of a local file.

Everything here runs on the native client (``mx8._core.S3Client``), which signs its own
requests, retries transient failures and releases the GIL around the network. A client is
mx8's one S3 transport (csrc/core/s3_transport.c): Python threads sharing one client overlap
their requests on its pooled connections (:class:`ClientPool`).

Tuning (environment; the defaults suit AWS):

- ``MX8_S3_THREADS``: concurrent requests of a pack, GETs and upload parts alike (default 8).
- ``MX8_S3_PART_MB``: multipart part size in MiB (default 16; AWS's minimum is 5, and a shard
  never needs more than 10,000 parts, so larger shards get larger parts).
"""
from __future__ import annotations

import errno
import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Deque, Iterable, Iterator, Optional, Tuple, TypeVar

from .envvars import env_positive
from .errors import ReadError
from .s3config import S3Config, parse_s3_uri, s3_config

DEFAULT_THREADS = 8
DEFAULT_PART_MB = 16.0
MAX_PARTS = 10_000  # S3's limit on parts per upload

T = TypeVar("T")
R = TypeVar("R")


def is_s3(uri: str) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


@dataclass(frozen=True)
class S3Root:
    """A dataset root on S3: a bucket and a key prefix ("" or ending in '/'), plus the
    configuration to reach it (its repr masks the secret)."""

    bucket: str
    prefix: str
    config: S3Config

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        """The object key of a path relative to the root ("shards/shard-00000.tar")."""
        return self.prefix + rel

    def url(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{rel}"

    def client(self):
        return self.config.client()


def s3_root(uri: str, config: Optional[S3Config] = None) -> S3Root:
    """``s3://bucket/a/b`` and ``s3://bucket/a/b/`` both name the prefix ``a/b/``: a dataset
    root is a folder, and without the '/' a LIST of ``a/b`` would also match ``a/bc/``."""
    bucket, key = parse_s3_uri(uri)
    if key and not key.endswith("/"):
        key += "/"
    return S3Root(bucket, key, (config if config is not None else s3_config()).for_bucket(bucket))


def threads() -> int:
    return max(1, int(env_positive("MX8_S3_THREADS", DEFAULT_THREADS)))


def part_bytes(size: int) -> int:
    """The part size for an object of size bytes: MX8_S3_PART_MB, raised so that no upload
    needs more than S3's 10,000 parts."""
    base = max(1, int(env_positive("MX8_S3_PART_MB", DEFAULT_PART_MB) * 1024 * 1024))
    return max(base, math.ceil(size / MAX_PARTS))


class ClientPool:
    """The native client a job's threads share, made on first use, with a connection for each
    of ``threads()`` concurrent requests."""

    def __init__(self, config: S3Config) -> None:
        config.require_credentials()
        self.config = config
        self._client = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._client is None:
                self._client = self.config.client(max_connections=threads())
            return self._client

    def stats(self) -> dict:
        """Requests, retries, transfers and bytes of the client (zeros before its first use)."""
        with self._lock:
            if self._client is None:
                return {"requests": 0, "retries": 0, "transfers": 0, "bytes_in": 0, "bytes_out": 0}
            return self._client.stats()


def is_not_found(e: BaseException) -> bool:
    return isinstance(e, ReadError) and e.errno == errno.ENOENT


def get_optional(client, bucket: str, key: str, max_bytes: int = 1 << 31) -> Optional[bytes]:
    """The object's bytes, or None when it does not exist (404); other errors raise."""
    try:
        return client.get(bucket, key, max_bytes=max_bytes)
    except ReadError as e:
        if is_not_found(e):
            return None
        raise


def list_objects(client, bucket: str, prefix: str, *, page_size: int = 0) -> Iterator[Tuple[str, int]]:
    """(key, size) of every object under prefix in key order, one ListObjectsV2 page at a
    time (1,000 keys a page on AWS), so a huge prefix never sits in one response."""
    token: Optional[str] = None
    while True:
        entries, token, _ = client.list_page(bucket, prefix, token, page_size)
        yield from entries
        if token is None:
            return


def map_ordered(fn: Callable[[T], R], items: Iterable[T], *, workers: int, cost: Callable[[T], int],
                budget: int) -> Iterator[Tuple[T, "Future[R]"]]:
    """Runs fn over items on a thread pool and yields (item, finished future) in input order.

    At most ``budget`` cost units (bytes) are in flight or waiting to be consumed; an item
    costlier than the budget runs alone. The order matters: a pack's shard layout and
    manifest_hash must not depend on which GET finished first.
    """
    pending: Deque[Tuple[T, "Future[R]", int]] = deque()
    in_flight = 0
    it = iter(items)
    nxt: Optional[T] = None
    exhausted = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mx8-s3") as ex:
        try:
            while True:
                while not exhausted and len(pending) < 4 * workers:
                    if nxt is None:
                        try:
                            nxt = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                    c = max(0, cost(nxt))
                    if pending and in_flight + c > budget:
                        break
                    pending.append((nxt, ex.submit(fn, nxt), c))
                    in_flight += c
                    nxt = None
                if not pending:
                    return
                item, fut, c = pending.popleft()
                fut.exception()  # waits; the consumer decides what an error means
                in_flight -= c
                yield item, fut
        finally:
            for _, fut, _ in pending:
                fut.cancel()


def upload_file(pool: ClientPool, executor: ThreadPoolExecutor, bucket: str, key: str, path: str,
                content_type: str = "application/x-tar") -> int:
    """Uploads a local file to s3://bucket/key: one PUT when it fits in a part, else a
    multipart upload whose parts go up in parallel on ``executor`` (each part read from the
    file by its own thread, so memory stays at workers x part size). A failed multipart
    upload is aborted, so no invisible parts keep costing storage. Returns the request count."""
    size = os.path.getsize(path)
    part = part_bytes(size)
    client = pool.get()
    if size <= part:
        with open(path, "rb") as f:
            client.put(bucket, key, f.read(), content_type=content_type)
        return 1
    upload_id = client.create_multipart(bucket, key, content_type=content_type)
    n = math.ceil(size / part)

    def send(i: int) -> str:
        with open(path, "rb") as f:
            data = os.pread(f.fileno(), min(part, size - i * part), i * part)
        return pool.get().upload_part(bucket, key, upload_id, i + 1, data)

    futures = [executor.submit(send, i) for i in range(n)]
    try:
        etags = [f.result() for f in futures]
        client.complete_multipart(bucket, key, upload_id, [(i + 1, e) for i, e in enumerate(etags)])
    except BaseException:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()  # wait: no part may land after the abort
        try:
            client.abort_multipart(bucket, key, upload_id)
        except ReadError:
            pass  # the original error matters more; S3 lifecycle rules clean up leftovers
        raise
    return n + 2

