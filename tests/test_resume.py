"""Epoch restart and mid-epoch resume through state_dict(), on the same and on a different
world size (ranks simulated in one process: the plan is a pure function of its inputs;
tests/test_ddp.py runs the same with real processes)."""
from __future__ import annotations

from collections import Counter

import pytest

import mx8


def take(ds, k=None):
    """Sample ids of the first k batches (all if k is None). Like a training loop, it asks
    for a batch only when it is about to use it: state_dict() counts batches handed out."""
    if k is None:
        return [i for b in ds for i in b.sample_ids.tolist()]
    it = iter(ds)
    return [i for _ in range(k) for i in next(it).sample_ids.tolist()]


def make(packed, rank, world, **kw):
    args = dict(batch_size=6, decode=False, shuffle=True, seed=11, epoch=2, rank=rank, world_size=world)
    args.update(kw)
    return mx8.Dataset(str(packed), **args)


def test_epoch_restart_reproduces_the_epoch(packed):
    a = take(make(packed, 0, 1))
    b = take(make(packed, 0, 1))
    assert a == b and sorted(a) == list(range(mx8.resolve(str(packed)).samples))
    assert take(make(packed, 0, 1, epoch=3)) != a
    assert take(make(packed, 0, 1, seed=12)) != a


@pytest.mark.parametrize("world_before,world_after,steps", [(1, 1, 5), (2, 2, 4), (4, 2, 3), (2, 3, 5), (3, 1, 2)])
def test_mid_epoch_resume_gives_every_sample_once(packed, world_before, world_after, steps):
    n = mx8.resolve(str(packed)).samples
    before = [make(packed, r, world_before) for r in range(world_before)]
    seen = [i for ds in before for i in take(ds, steps)]
    states = [ds.state_dict() for ds in before]
    assert len({s["position"] for s in states}) == 1  # every rank agrees on the position
    assert states[0]["position"] == steps * 6 * world_before

    after = [make(packed, r, world_after, seed=0, epoch=0) for r in range(world_after)]
    for ds in after:
        ds.load_state_dict(states[0])  # restores seed, epoch and position
    rest = [take(ds) for ds in after]
    assert len({len(r) for r in rest}) == 1  # equal step counts after the resume too
    padded = after[0].stats()["padded"]
    counts = Counter(seen + [i for r in rest for i in r])
    assert set(counts) == set(range(n))
    assert sum(counts.values()) - n == padded  # duplicates only from reported tail padding


def test_resume_with_different_batch_size(packed):
    n = mx8.resolve(str(packed)).samples
    ds = make(packed, 0, 1)
    seen = take(ds, 4)
    sd = ds.state_dict()
    ds2 = make(packed, 0, 1, batch_size=9)
    ds2.load_state_dict(sd)
    assert sorted(seen + take(ds2)) == list(range(n))


def test_set_epoch_keeps_a_loaded_position_only_for_its_epoch(packed):
    ds = make(packed, 0, 1)
    take(ds, 2)
    sd = ds.state_dict()
    ds2 = make(packed, 0, 1)
    ds2.load_state_dict(sd)
    ds2.set_epoch(sd["epoch"])  # the usual loop: set_epoch(e) for e in range(start_epoch, ...)
    assert len(take(ds2)) == mx8.resolve(str(packed)).samples - 12
    ds2.set_epoch(sd["epoch"] + 1)
    assert len(take(ds2)) == mx8.resolve(str(packed)).samples
    assert ds2.state_dict()["position"] == mx8.resolve(str(packed)).samples


def test_state_dict_refuses_another_snapshot(packed, corpus):
    sd = make(packed, 0, 1).state_dict()
    other = mx8.Dataset(str(corpus), batch_size=6, decode=False)
    with pytest.raises(mx8.SnapshotMismatchError):
        other.load_state_dict(sd)


def test_drop_last_reports_what_it_drops(packed):
    n = mx8.resolve(str(packed)).samples
    shares = [make(packed, r, 4, drop_last=True, batch_size=8) for r in range(4)]
    got = [take(ds) for ds in shares]
    assert len({len(g) for g in got}) == 1 and all(len(g) % 8 == 0 for g in got)
    flat = [i for g in got for i in g]
    assert len(set(flat)) == len(flat) == n - shares[0].stats()["dropped"]


def test_a_peek_after_load_state_dict_keeps_the_resume_position(packed):
    """A look at one batch (iter + next) after loading a checkpoint does not use the
    checkpoint up: the next iteration still resumes from it, and len() counts the resumed
    epoch's batches; once a resumed epoch has ended, the next starts from the beginning."""
    n = mx8.resolve(str(packed)).samples
    ds = make(packed, 0, 1)
    seen = take(ds, 3)
    sd = ds.state_dict()
    ds2 = make(packed, 0, 1)
    ds2.load_state_dict(sd)
    peek = next(iter(ds2)).sample_ids.tolist()
    assert len(ds2) == -(-(n - 18) // 6)
    rest = take(ds2)
    assert rest[:6] == peek and sorted(seen + rest) == list(range(n)) and len(rest) // 6 <= len(ds2)
    assert len(take(ds2)) == n  # the resumed epoch ended: a new pass is the whole epoch
