"""Who reads what (mx8/sharding.py on csrc/core/epoch_order.c): the consumer's share computed
in C equals, id for id, the slicing mx8 did in Python before (kept here as the oracle): rank
r takes positions r, r+W, ... of the rest of the epoch, padded with the epoch's first
samples (cycling) or cut to whole batches, DataLoader workers take whole batches
round-robin."""
from __future__ import annotations

import itertools

import pytest

from mx8 import _core
from mx8.sharding import SHUFFLE_BLOCK, SHUFFLE_WINDOW, derive_seed, plan


def python_share(n, seed, shuffle, start, rank, world, batch, drop_last, worker, workers):
    order = memoryview(_core.epoch_order(n, seed, shuffle, SHUFFLE_BLOCK, SHUFFLE_WINDOW)).cast("q")
    rest = list(order[min(start, n):])
    m = len(rest)
    padded = dropped = 0
    if drop_last:
        per_rank = (m // world) // batch * batch
        dropped = m - per_rank * world
        rest = rest[:per_rank * world]
    elif m % world:
        per_rank = -(-m // world)
        padded = per_rank * world - m
        rest = rest + (list(order) * (padded // n + 1))[:padded]
    mine = rest[rank::world]
    if workers > 1:
        mine = [i for b in range(worker * batch, len(mine), workers * batch) for i in mine[b:b + batch]]
    return mine, padded, dropped


CASES = list(itertools.product([0, 1, 5, 97, 1000], [False, True], [0, 3, 50], [1, 2, 3, 8], [1, 7, 64],
                               [False, True], [1, 3]))


def test_the_share_equals_the_reference_slicing():
    seed = derive_seed("ab" * 32, 5, 2, "order")
    for n, shuffle, start, world, batch, drop_last, workers in CASES:  # 1,440 settings
        for rank in range(world):
            for worker in range(workers):
                ids, padded, dropped = _core.epoch_share(n, seed, shuffle, SHUFFLE_BLOCK, SHUFFLE_WINDOW, start,
                                                         rank, world, batch, drop_last, worker, workers)
                want = python_share(n, seed, shuffle, start, rank, world, batch, drop_last, worker, workers)
                got = (list(memoryview(ids).cast("q")), padded, dropped)
                assert got == want, (n, shuffle, start, world, batch, drop_last, workers, rank, worker)


def test_plan_and_bad_shares():
    p = plan(10, manifest_hash="ab" * 32, seed=0, epoch=0, shuffle=False, rank=1, world_size=3, batch_size=2,
             drop_last=False)
    assert list(memoryview(p.positions).cast("q")) == [1, 4, 7, 0] and (p.samples, p.padded, p.dropped) == (4, 2, 0)
    with pytest.raises(ValueError, match="rank 3 of 3"):
        _core.epoch_share(10, 0, False, 64, 16, 0, 3, 3, 2, False, 0, 1)
    with pytest.raises(ValueError, match="worker 2 of 2"):
        _core.epoch_share(10, 0, False, 64, 16, 0, 0, 1, 2, False, 2, 2)
