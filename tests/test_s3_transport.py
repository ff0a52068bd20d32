"""mx8's one S3 transport (csrc/core/s3_transport.c) as Python code meets it: one client shared
by many threads, and a client that crosses a fork() (DataLoader workers, multiprocessing's
fork start method) while its I/O threads are busy in the parent."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from mx8 import _core

from s3_server import MotoServer

BUCKET = "mx8-transport"


@pytest.fixture(scope="module")
def server():
    srv = MotoServer()
    srv.boto3_client().create_bucket(Bucket=BUCKET)
    yield srv
    srv.stop()


def client_for(srv, **kw):
    return _core.S3Client(srv.endpoint, "us-east-1", srv.access_key, srv.secret_key, **kw)


def test_one_client_shared_by_many_threads_gets_every_answer_right(server):
    c = client_for(server, max_connections=4, io_threads=2)
    blobs = {f"shared/{i}": os.urandom(1000 + 37 * i) for i in range(24)}
    for k, v in blobs.items():
        c.put(BUCKET, k, v)
    errors, seen = [], {}

    def worker(keys):
        try:
            for k in keys:
                seen[k] = (c.get(BUCKET, k), c.head(BUCKET, k)[0], c.get_range(BUCKET, k, 10, 100))
        except Exception as e:  # reported below
            errors.append(e)

    keys = sorted(blobs)
    threads = [threading.Thread(target=worker, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, v in blobs.items():
        assert seen[k] == (v, len(v), v[10:110])
    st = c.stats()
    assert st["transfers"] == st["requests"] == 24 + 3 * 24 and st["retries"] == 0


def _child_reads(c, key: str, want: bytes) -> int:
    """In a fork()ed child: exit status 0 when the inherited client reads key right."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        signal.alarm(30)  # a hang (a lock held by a thread the child does not have) fails, not blocks
        try:
            ok = c.get(BUCKET, key) == want and c.get_range(BUCKET, key, 1, 3) == want[1:4]
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_client_used_before_fork_works_in_the_child_and_still_in_the_parent(server):
    c = client_for(server)
    data = os.urandom(5000)
    c.put(BUCKET, "fork/a", data)  # the parent's I/O thread is running now
    assert _child_reads(c, "fork/a", data) == 0
    assert c.get(BUCKET, "fork/a") == data


def test_fork_while_the_parent_s_threads_are_mid_request(server):
    """Forks land while other threads of the parent hold the client's lock or are inside
    transfers: every child must still get its answer (the locks are taken around fork())."""
    c = client_for(server, max_connections=4)
    data = os.urandom(20000)
    c.put(BUCKET, "fork/b", data)
    stop, errors = threading.Event(), []

    def busy():
        try:
            while not stop.is_set():
                assert c.get_range(BUCKET, "fork/b", 100, 5000) == data[100:5100]
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=busy) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        codes = [_child_reads(c, "fork/b", data) for _ in range(8)]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes == [0] * 8 and not errors
