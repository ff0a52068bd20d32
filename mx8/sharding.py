"""Which samples each rank and DataLoader worker reads in an epoch, in which order.

The global order of an epoch depends only on (manifest_hash, seed, epoch, shuffle)
(``_core.epoch_order``); the world size only slices it: rank r takes positions
r, r + W, r + 2W, ... So after k steps of batch B on W ranks, exactly the first k*B*W
positions of the global order have been consumed, whatever W was.

Every rank gets the same number of samples, so DDP ranks take the same number of steps:
with ``drop_last=False`` the tail is padded with samples from the start of the order
(reported as ``padded``), with ``drop_last=True`` the remainder is dropped (``dropped``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import _core

SHUFFLE_BLOCK = 64    # neighbours read together (read locality)
SHUFFLE_WINDOW = 16   # blocks mixed per window: a batch draws from up to 16 blocks


def derive_seed(manifest_hash: str, seed: int, epoch: int, purpose: str) -> int:
    """A 64-bit seed, a pure function of its inputs (stable across platforms/versions)."""
    digest = hashlib.sha256(f"mx8:{purpose}:{manifest_hash}:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class Plan:
    positions: bytes      # int64 sample ids this consumer reads, in order
    samples: int          # len(positions) // 8
    padded: int           # duplicates added (whole job) so ranks have equal counts
    dropped: int          # samples left out of this epoch (whole job)


def plan(n: int, *, manifest_hash: str, seed: int, epoch: int, shuffle: bool, rank: int, world_size: int,
         batch_size: int, drop_last: bool, start: int = 0, worker: int = 0, num_workers: int = 1) -> Plan:
    """This consumer's share of the epoch, skipping the first ``start`` global positions
    (already consumed before a mid-epoch resume, possibly by a different world size).
    Computed in C (csrc/core/epoch_order.c, mx8_epoch_share) in one pass, without copies of
    the epoch order here. DataLoader workers take whole batches round-robin; the loader
    interleaves them back in the same order, so the stream equals the single-process one."""
    ids, padded, dropped = _core.epoch_share(n, derive_seed(manifest_hash, seed, epoch, "order"), shuffle,
                                             SHUFFLE_BLOCK, SHUFFLE_WINDOW, start, rank, world_size, batch_size,
                                             drop_last, worker, num_workers)
    return Plan(ids, len(ids) // 8, padded, dropped)


def consumed_after(start: int, batches: int, batch_size: int, world_size: int, n: int) -> int:
    """Global positions consumed once every rank has taken ``batches`` batches: rank r's
    k-th batch covers positions r, r+W, ... of the remaining order, so the ranks together
    have consumed exactly a prefix."""
    return min(n, start + batches * batch_size * world_size)
