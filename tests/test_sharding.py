"""Who reads what (mx8/sharding.py on csrc/core/epoch_deal.c): whole pieces of neighbouring
samples dealt to ranks. Checked as pure functions, over thousands of settings: every sample
exactly once per epoch besides reported padding, through chains of mid-epoch resumes on other
world sizes and batch sizes; equal counts on every rank; DataLoader workers reassemble the
rank's stream; a rank's reads stay whole blocks at any world size; batches of a class-sorted
dataset mix many classes; a hand-made progress is refused, naming what is wrong."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from mx8.sharding import NOTHING_READ, SHUFFLE_BLOCK, SHUFFLE_PIECE, Epoch, Progress

HASH = "ab" * 32


def ids_of(plan):
    return list(memoryview(plan.positions).cast("q"))


def epoch(n, world, batch, *, shuffle=True, drop_last=False, progress=NOTHING_READ, seed=7, ep=3):
    return Epoch(n, HASH, seed, ep, shuffle, world, batch, drop_last, progress)


def read_chain(n, shuffle, drop_last, segments):
    """Runs (world, batch, steps) segments one after another, each resuming from the progress
    the one before left (steps None: to the end). Returns (ids read, pads read, dropped)."""
    progress, seen, pads = NOTHING_READ, [], 0
    for world, batch, steps in segments:
        e = epoch(n, world, batch, shuffle=shuffle, drop_last=drop_last, progress=progress)
        shares = [e.share(r) for r in range(world)]
        per_rank = shares[0].per_rank
        assert all(s.per_rank == per_rank == s.samples for s in shares)  # equal steps on every rank
        read = per_rank if steps is None else min(per_rank, steps * batch)
        for s in shares:
            seen += ids_of(s)[:read]
        before = e.after(0)[1]
        progress, position = e.after(read)
        pads += world * read - (position - before)  # what the ranks read beyond the new samples
        if read == per_rank:
            return seen, pads, shares[0].dropped
    raise AssertionError("the last segment must read to the end")


def test_every_sample_once_through_resumes_on_other_worlds_and_batches():
    rng = random.Random(1)
    for _ in range(600):
        n = rng.choice([0, 1, 5, 63, 64, 65, 1000, 1024, 1025, 3000, 9000, 20000])
        shuffle, drop_last = rng.random() < 0.7, rng.random() < 0.3
        segments = [(rng.choice([1, 2, 3, 4, 7, 8]), rng.choice([1, 3, 16, 64, 256]), rng.randint(0, 40))
                    for _ in range(rng.randint(0, 3))]
        segments.append((rng.choice([1, 2, 3, 4, 7, 8]), rng.choice([1, 3, 16, 64, 256]), None))
        seen, pads, dropped = read_chain(n, shuffle, drop_last, segments)
        counts = Counter(seen)
        case = (n, shuffle, drop_last, segments)
        assert set(counts) <= set(range(n)), case
        assert len(counts) == n - dropped, case                 # nothing lost (besides reported drops)
        assert sum(counts.values()) - len(counts) == pads, case  # duplicates only the pads read


def test_padding_and_drops_are_reported_and_small():
    for n, world, batch in [(1000, 3, 7), (20000, 8, 64), (5, 4, 2), (1025, 4, 256)]:
        pad = epoch(n, world, batch)
        assert pad.share(0).padded < world and pad.share(0).per_rank == -(-n // world)
        drop = epoch(n, world, batch, drop_last=True)
        per_rank = drop.share(0).per_rank
        assert per_rank % batch == 0 and drop.share(0).dropped == n - per_rank * world < world * batch


def test_dataloader_workers_reassemble_the_rank_stream():
    for n, world, batch, workers in [(5000, 3, 64, 2), (20000, 8, 256, 3), (100, 2, 7, 4), (0, 2, 4, 2)]:
        e = epoch(n, world, batch)
        for rank in range(world):
            whole = ids_of(e.share(rank))
            parts = [ids_of(e.share(rank, w, workers)) for w in range(workers)]
            out, at = [], [0] * workers
            for j in range(-(-len(whole) // batch)):  # the loader takes batch j from worker j % workers
                w = j % workers
                take = min(batch, len(whole) - j * batch)
                out += parts[w][at[w]:at[w] + take]
                at[w] += take
            assert out == whole


def requests_per_sample(plan, window=2048):
    """GETs a rank's share plans on a shard written in sample-id order, as the S3 reader
    does: windows of 2,048 positions ending at the share's cuts, neighbours merged."""
    ids = ids_of(plan)
    bounds = [0] + list(memoryview(plan.cuts).cast("Q")) + [len(ids)]
    runs = 0
    for a, b in zip(bounds, bounds[1:]):
        for s in range(a, b, window):
            w = sorted(ids[s:min(b, s + window)])
            runs += 1 + sum(1 for x, y in zip(w, w[1:]) if y - x > 1)
    return runs / len(ids)


def test_a_ranks_reads_stay_whole_blocks_at_any_world_size():
    n = 100_000
    one = requests_per_sample(epoch(n, 1, 256).share(0))
    assert one <= 2 / SHUFFLE_BLOCK  # about one run of neighbours a block
    for world in (2, 4, 8, 16):
        for rank in (0, world - 1):
            assert requests_per_sample(epoch(n, world, 256).share(rank)) <= 1.5 * one, (world, rank)
    # after a resume from world 3 onto 8, only the unread tails of the pieces that were being
    # read (dealt sample by sample) cost a request each
    progress, _ = epoch(n, 3, 256).after(5 * 256 + 100)
    share = epoch(n, 8, 256, progress=progress).share(0)
    tails = -(-sum(hi - lo - used for lo, hi, used in progress.pieces) // 8)
    assert requests_per_sample(share) <= 1.5 * one + tails / share.samples


def test_batches_of_a_class_sorted_dataset_mix_many_classes():
    n = 100 * 300  # 100 classes of 300 samples, sorted by class
    for world in (1, 4, 8):
        ids = ids_of(epoch(n, world, 256).share(0))
        fewest = min(len({i // 300 for i in ids[k:k + 256]}) for k in range(0, len(ids) - 255, 256))
        assert fewest >= 10, (world, fewest)
    assert SHUFFLE_PIECE == 16 * SHUFFLE_BLOCK


def test_the_order_is_a_function_of_its_inputs():
    a = ids_of(epoch(5000, 4, 32).share(1))
    assert a == ids_of(epoch(5000, 4, 32).share(1))
    assert a != ids_of(epoch(5000, 4, 32, seed=8).share(1))
    assert a != ids_of(epoch(5000, 4, 32, ep=4).share(1))
    assert ids_of(epoch(10, 1, 3, shuffle=False).share(0)) == list(range(10))
    # without shuffle, rank r reads whole runs of neighbours
    assert ids_of(epoch(10, 3, 2, shuffle=False).share(1)) == [4, 5, 6, 7]


def test_a_progress_the_deal_cannot_have_made_is_refused():
    good, _ = epoch(5000, 3, 16).after(100)
    assert good.pieces and Progress.from_state(good.to_state()) == good
    lo, hi, used = good.pieces[0]
    bad = [Progress(good.top, ((lo, hi, hi - lo),)),             # a piece wholly read is not partly read
           Progress(good.top, ((hi, lo, 0),)),                   # empty interval
           Progress(6000, ()),                                   # past the end
           Progress(good.top, ((lo, hi, used), (lo + 1, hi, 0)))]  # overlapping
    for p in bad:
        with pytest.raises(ValueError, match="progress"):
            epoch(5000, 2, 16, progress=p).share(0)
    with pytest.raises(ValueError, match="progress"):
        Progress.from_state({"top": 3, "pieces": [[1, 2]]})
    with pytest.raises(ValueError, match="rank 3 of 3"):
        epoch(10, 3, 2).share(3)
    with pytest.raises(ValueError, match="worker 2 of 2"):
        epoch(10, 1, 2).share(0, 2, 2)
