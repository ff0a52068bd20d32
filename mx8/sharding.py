"""Which samples each rank and DataLoader worker reads in an epoch, in which order.

An epoch is dealt to ranks in *pieces* (csrc/core/epoch_deal.h): 1,024 neighbouring samples
of the epoch's block sequence (16 blocks of 64, permuted by the seed), read by one rank in
their own shuffled order. So a rank's S3 requests are whole blocks at any world size, and a
batch of a piece mixes 16 blocks even when the dataset is sorted by class. Rank r takes
pieces r, r + W, r + 2W, ...; the remainder is cut into one end piece per rank so that every
rank has the same number of samples, and DDP ranks the same number of steps: with
``drop_last=False`` padded with samples from the start of the sequence (``padded``), with
``drop_last=True`` cut to whole batches (``dropped``).

What an epoch has consumed is a :class:`Progress` (the pieces partly read, and a top below
which everything else is read): a function of the run before and the steps taken, not of
any world size, so a mid-epoch resume may use another world size and batch size. A resumed
epoch first deals the unread tails of those pieces, sample by sample, then pieces again.
The order is a pure function of (manifest_hash, seed, epoch, shuffle, world size, batch
size, drop_last) and the progress it resumes from.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Dict, Tuple

from . import _core

SHUFFLE_BLOCK = 64    # neighbours kept together (read locality)
SHUFFLE_PIECE = 1024  # samples a rank reads as one piece: 16 blocks, mixed sample by sample


def derive_seed(manifest_hash: str, seed: int, epoch: int, purpose: str) -> int:
    """A 64-bit seed, a pure function of its inputs (stable across platforms/versions)."""
    digest = hashlib.sha256(f"mx8:{purpose}:{manifest_hash}:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class Progress:
    """What an epoch has consumed: ``pieces`` (lo, hi, used) partly read, in the order of
    the epoch's block sequence; below ``top`` everything else is read, above it nothing."""
    top: int = 0
    pieces: Tuple[Tuple[int, int, int], ...] = ()

    def packed(self) -> bytes:
        return b"".join(struct.pack("=3Q", *p) for p in self.pieces)  # native: C reads mx8_piece

    @classmethod
    def unpacked(cls, top: int, data: bytes) -> "Progress":
        return cls(top, tuple(struct.iter_unpack("=3Q", data)))

    def to_state(self) -> Dict[str, Any]:
        return {"top": self.top, "pieces": [list(p) for p in self.pieces]}

    @classmethod
    def from_state(cls, state: Any) -> "Progress":
        """From ``to_state()``'s dict; a malformed one raises ValueError (checked again in C)."""
        try:
            pieces = tuple((_count(lo), _count(hi), _count(used)) for lo, hi, used in state["pieces"])
            return cls(_count(state["top"]), pieces)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not an epoch progress ({{'top': int, 'pieces': [[lo, hi, used], ...]}}): "
                             f"{state!r:.200}") from e


def _count(v: Any) -> int:
    """A sample count of a progress: an int (not a bool or float) in [0, 2**62)."""
    if type(v) is not int or not 0 <= v < 1 << 62:
        raise ValueError(f"{v!r} is not a sample count")
    return v


NOTHING_READ = Progress()


@dataclass(frozen=True)
class Plan:
    positions: bytes      # int64 sample ids this consumer reads, in order
    cuts: bytes           # uint64 offsets in positions where another piece begins
    samples: int          # len(positions) // 8
    per_rank: int         # samples every rank reads (pads included)
    padded: int           # duplicates added (whole job) so ranks have equal counts
    dropped: int          # samples left out of this epoch (whole job)


@dataclass(frozen=True)
class Epoch:
    """One epoch's order and how it is dealt: everything but who is asking."""
    n: int
    manifest_hash: str
    seed: int
    epoch: int
    shuffle: bool
    world_size: int
    batch_size: int
    drop_last: bool
    progress: Progress = NOTHING_READ

    def _args(self) -> tuple:
        return (self.n, derive_seed(self.manifest_hash, self.seed, self.epoch, "order"), self.shuffle, SHUFFLE_BLOCK,
                SHUFFLE_PIECE, self.progress.top, self.progress.packed(), self.world_size, self.batch_size,
                self.drop_last)

    def share(self, rank: int, worker: int = 0, num_workers: int = 1) -> Plan:
        """Rank ``rank``'s share (computed in C in one pass). DataLoader workers take its whole
        batches round-robin; the loader interleaves them back in the same order, so the
        stream equals the single-process one."""
        ids, cuts, per_rank, padded, dropped = _core.epoch_share(*self._args(), rank, worker, num_workers)
        return Plan(ids, cuts, len(ids) // 8, per_rank, padded, dropped)

    def after(self, read: int) -> Tuple[Progress, int]:
        """The progress once every rank has read ``read`` samples of its share, and how many
        samples of the epoch are then read in all (pads not counted)."""
        top, pieces, position = _core.epoch_after(*self._args(), read)
        return Progress.unpacked(top, pieces), position
