"""The exception hierarchy: every error mx8 raises derives from :class:`mx8.Error`.

The classes that the native core raises are defined in C (``mx8._core``) and re-exported
here; the rest are raised by the Python glue.

- ``Error``
  - ``ManifestError`` (also ``ValueError``): a manifest or labels file is malformed; names the line.
  - ``ReadError`` (also ``OSError``): a shard, file or object cannot be opened or read.
    - ``RangeError``: a manifest byte range runs past the end of its object.
  - ``DecodeError`` (also ``ValueError``): bytes are not a decodable JPEG/PNG image.
    - ``ImageTooLargeError``: an image is above the pixel limit (decompression bomb guard).
  - ``SnapshotMismatchError``: the data no longer matches a pinned ``@sha256:`` hash.
    - ``LeaseLogMismatchError``: a lease log was written for another job, snapshot,
      fingerprint or (with whole_ranges) range size.
  - ``PackError``: ``mx8.pack`` met an input it cannot pack (names the file).
  - ``CredentialsError`` (also ``ValueError``): no S3 credentials found, or their source
    (profile, credential_process, STS, a metadata endpoint) failed.
  - ``RendezvousError``: ranks disagree on manifest_hash, seed, epoch, batch size, ...
  - ``UsageError`` (also ``RuntimeError``): an object used outside the concurrency contract
    (docs/ARCHITECTURE.md): two threads in one iterator, an iterator inherited through
    fork(), next() on an iterator that was closed before its epoch ended, a LeaseDataset in
    DataLoader worker processes.
  - ``LeaseJobMismatchError`` (also ``ValueError``): a lease worker's settings differ from the job's.
  - ``LeaseLogError`` (also ``OSError``): the lease log cannot be written or read (names it).
  - ``LeaseStoreError`` (also ``ConnectionError``): the lease job's store is unreachable or gone.

Warnings: ``StuckReadWarning`` (a ``RuntimeWarning``): a close() (or Ctrl-C) found a native
worker blocked in a read that did not return within a second, such as one on a hung network
mount; the worker was abandoned rather than waited for (names the sample and location).

Errors about one sample carry ``sample_id``, ``location`` and, for byte ranges,
``offset`` and ``length`` attributes.
"""
from ._core import (  # noqa: F401  (re-exported)
    DecodeError,
    Error,
    ImageTooLargeError,
    ManifestError,
    RangeError,
    ReadError,
)


class SnapshotMismatchError(Error):
    """The dataset's manifest_hash differs from the one pinned with ``uri@sha256:<hash>``."""


class RendezvousError(Error):
    """Ranks disagree on the snapshot or its reading settings (names which rank had what)."""


class UsageError(Error, RuntimeError):
    """An mx8 object used outside its concurrency contract (says which rule and what to do)."""


class CredentialsError(Error, ValueError):
    """No S3 credentials could be found, or their source failed (names the sources tried, or
    the profile, process or endpoint that failed and its answer; never a secret)."""


class PackError(Error):
    """``mx8.pack`` met an input it cannot pack (zero-length, unreadable, not an image)."""


class StuckReadWarning(RuntimeWarning):
    """close() gave up waiting for a native worker blocked in a read (a hung network mount,
    say) and abandoned it: the thread leaves on its own once the read returns, and keeps the
    engine's batch buffers until then. Names the sample and location it was reading."""


__all__ = [
    "StuckReadWarning",
    "CredentialsError",
    "Error",
    "ManifestError",
    "ReadError",
    "RangeError",
    "DecodeError",
    "ImageTooLargeError",
    "SnapshotMismatchError",
    "PackError",
    "RendezvousError",
    "UsageError",
]


class LeaseLogMismatchError(SnapshotMismatchError):
    """A lease log was written for another job or manifest_hash (names both); lease mode refuses
    to resume from it."""


class LeaseJobMismatchError(Error, ValueError):
    """A lease worker's settings (snapshot, range_size, lease_timeout_s, whole_ranges, pacing
    caps, fingerprint) differ from those the job's first worker recorded (names both)."""


class LeaseLogError(Error, OSError):
    """The lease log cannot be written or read (names its path or key): an acknowledgement
    that cannot be made durable is not accepted."""


class LeaseStoreError(Error, ConnectionError):
    """The lease job's c10d store cannot be reached, or was lost mid-job (names it)."""


__all__ += ["LeaseLogMismatchError", "LeaseJobMismatchError", "LeaseLogError", "LeaseStoreError"]
