"""A FUSE file system whose reads can hang, as those of a dead NFS server do.

    python tests/hung_mount.py SOURCE MOUNTPOINT

Mounts SOURCE read-only at MOUNTPOINT. A read of a file whose name starts with ``hang``
blocks in the kernel (the reading thread waits in the FUSE request, uninterruptible by
anything mx8 can do) until a file named ``.release`` appears in SOURCE; every other operation
is served at once. Tests use it to prove that close() and Ctrl-C do not wait forever for a
read that does not return (tests/test_hung_read.py). Needs /dev/fuse, root (or fusermount),
Debian's libfuse2 and the fusepy package; the tests skip without them.
"""
from __future__ import annotations

import errno
import os
import sys
import time

import fuse  # fusepy


class HangingPassthrough(fuse.Operations):
    def __init__(self, source: str) -> None:
        self.source = source

    def _real(self, path: str) -> str:
        return os.path.join(self.source, path.lstrip("/"))

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._real(path))
        except FileNotFoundError:
            raise fuse.FuseOSError(errno.ENOENT) from None
        return {k: getattr(st, k) for k in ("st_mode", "st_size", "st_nlink", "st_uid", "st_gid",
                                             "st_atime", "st_mtime", "st_ctime")}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def open(self, path, flags):
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path, size, offset, fh):
        if os.path.basename(path).startswith("hang"):
            while not os.path.exists(os.path.join(self.source, ".release")):
                time.sleep(0.05)
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)
        return 0


def main() -> None:
    source, mountpoint = sys.argv[1], sys.argv[2]
    # direct_io: every read reaches this process (no page cache hides the hang); nothreads
    # off: a hung read must not stop the other files from being served.
    fuse.FUSE(HangingPassthrough(source), mountpoint, foreground=True, ro=True, direct_io=True,
              nothreads=False)


if __name__ == "__main__":
    main()
