"""A read that never returns (a hung network mount) must not hang close() or Ctrl-C.

The mount is real: tests/hung_mount.py serves a folder through FUSE, and a read of a file
named ``hang*`` blocks inside the kernel until the test releases it, as a read from a dead NFS
server does. Before the fix, close() joined the blocked worker forever and Ctrl-C raised but
the process could not leave. Needs /dev/fuse, root, libfuse2 and fusepy (scripts/setup_env.sh
installs the last two); skipped without them."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mx8
from conftest import jpeg_bytes

HERE = Path(__file__).resolve().parent


def _fuse_unavailable() -> str:
    if not os.path.exists("/dev/fuse") or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "no usable /dev/fuse"
    if os.geteuid() != 0:
        return "mounting FUSE here needs root"
    try:
        import fuse  # noqa: F401  (fusepy; loads libfuse.so.2)
    except (ImportError, OSError, EnvironmentError) as e:
        return f"fusepy/libfuse2 unavailable: {e}"
    return ""


pytestmark = pytest.mark.skipif(bool(_fuse_unavailable()), reason=_fuse_unavailable() or "fuse ok")


@pytest.fixture
def hung_mount(tmp_path):
    """(mountpoint, release): an ImageFolder of 8 JPEGs at mountpoint, one of which
    (c0/hang.jpg) cannot be read until release() is called."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    (src / "c0").mkdir(parents=True)
    mnt.mkdir()
    for i in range(7):
        (src / "c0" / f"ok{i}.jpg").write_bytes(jpeg_bytes((40, 30), (20 * i, 90, 160)))
    (src / "c0" / "hang.jpg").write_bytes(jpeg_bytes((40, 30)))
    server = subprocess.Popen([sys.executable, str(HERE / "hung_mount.py"), str(src), str(mnt)],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.ismount(mnt):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.skip(f"could not mount FUSE here: {server.communicate()[1][-500:]}")
        time.sleep(0.05)

    def release() -> None:
        (src / ".release").write_bytes(b"")

    try:
        yield mnt, release
    finally:
        release()
        subprocess.run(["umount", str(mnt)], capture_output=True)
        server.wait(10)


def test_close_abandons_a_worker_stuck_in_a_read_and_frees_it_once_the_read_returns(hung_mount):
    mnt, release = hung_mount
    ds = mx8.Dataset(str(mnt), batch_size=8, size=32, threads=2, shuffle=False, prefetch_mb=1)
    it = iter(ds)
    # The only batch waits for c0/hang.jpg; next() would wait with it, so close from here.
    time.sleep(0.5)
    t0 = time.monotonic()
    with pytest.warns(mx8.StuckReadWarning, match=r"1 native worker thread\(s\) still blocked .* "
                                                  r"reading sample \d+ '.*hang\.jpg'"):
        ds.close()
    took = time.monotonic() - t0
    assert took < 3, took  # waited ~1 s (STOP_WAIT_MS), then let the thread go
    with pytest.raises(mx8.UsageError):
        next(it)
    assert mx8._core.abandoned_engines() == 1  # its memory is kept while the read hangs
    release()
    deadline = time.monotonic() + 10
    while mx8._core.abandoned_engines() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mx8._core.abandoned_engines() == 0  # the read returned, the thread left, memory freed
    # The dataset still works (the mount is healthy now).
    assert sum(len(b.labels) for b in ds) == 8


def test_ctrl_c_ends_an_epoch_blocked_on_a_hung_read_within_seconds(hung_mount):
    """The epoch ends (KeyboardInterrupt reaches the user's code) about a second after
    Ctrl-C. The process itself cannot exit while one of its threads waits in the kernel for
    the hung read (Linux lets no process die with a thread in an unanswered FUSE or NFS hard
    mount request, not even to SIGKILL), so it leaves once the read returns."""
    mnt, release = hung_mount
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import mx8, signal, sys
        # Python's Ctrl-C handler, as in a terminal: a suite started as a shell's background job
        # inherits SIGINT ignored, and Python then installs none.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        ds = mx8.Dataset({str(mnt)!r}, batch_size=8, size=32, threads=2, shuffle=False)
        print("iterating", flush=True)
        try:
            for batch in ds:
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
    """)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "iterating"
        time.sleep(1.0)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        ready, _, _ = select.select([child.stdout], [], [], 15)
        assert ready, "no KeyboardInterrupt within 15 s of Ctrl-C: the epoch waits for the hung read"
        assert child.stdout.readline().strip() == "interrupted"
        took = time.monotonic() - t0
        assert took < 4, took  # ~1 s of waiting for the worker (STOP_WAIT_MS), then abandoned
    finally:
        release()
        out, err = child.communicate(timeout=30)
    assert child.returncode == 3, err[-2000:]
    assert "StuckReadWarning" in err and "hang.jpg" in err, err[-2000:]
