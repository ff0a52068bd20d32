"""mx8 behind DataLoader worker processes, in one process (tests/test_ddp.py runs the same
under torchrun): the main process's stats() sums the workers' counters; torchdata's
StatefulDataLoader checkpoints mid-epoch and resumes batch for batch, with fork and spawn
workers; mx8.state_from_loader gives the rank's position as num_workers=0 has it, which
resumes exactly once on another world size; SLURM's step variables give the world only
inside srun (tests/test_ddp.py runs the launchers with real processes)."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

import mx8

KW = dict(batch_size=7, decode=False, shuffle=True, seed=3)


def ids(batches):
    return [b.sample_ids.tolist() for b in batches]


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_stats_in_the_main_process_sum_the_workers(packed, context):
    n = mx8.resolve(str(packed)).samples
    ds = mx8.Dataset(str(packed), **KW)
    got = ids(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context))
    st = ds.stats()
    assert st["workers"] == 2 and st["images"] == st["planned"] == n == sum(map(len, got))
    assert st["batches"] == len(got) and st["padded"] == 0 and st["errors"] == 0 and st["bytes_read"] > 0
    assert (st["rank"], st["world_size"]) == (0, 1) and st["rendezvous_checked"]


@pytest.mark.parametrize("workers,context", [(0, None), (2, "fork"), (2, "spawn"), (3, "fork")])
def test_stateful_dataloader_resumes_mid_epoch_batch_for_batch(packed, workers, context):
    kw = dict(batch_size=None, num_workers=workers, multiprocessing_context=context)
    whole = ids(StatefulDataLoader(mx8.Dataset(str(packed), **KW), **kw))
    assert whole == ids(mx8.Dataset(str(packed), **KW))  # workers interleave back the rank's stream
    loader = StatefulDataLoader(mx8.Dataset(str(packed), **KW), **kw)
    it = iter(loader)
    head = [next(it).sample_ids.tolist() for _ in range(5)]
    saved = loader.state_dict()
    del it, loader
    again = StatefulDataLoader(mx8.Dataset(str(packed), **KW), **kw)
    again.load_state_dict(saved)
    assert head + ids(again) == whole

    # The rank's position in it, as num_workers=0 gives it after the same 5 steps
    plain = mx8.Dataset(str(packed), **KW)
    pit = iter(plain)
    for _ in range(5):
        next(pit)
    want = plain.state_dict()
    got = mx8.state_from_loader(saved)
    assert (got["position"], got["progress"]) == (want["position"], want["progress"]) == (35, got["progress"])


def test_a_loader_checkpoint_resumes_exactly_once_on_another_world_size(packed):
    n = mx8.resolve(str(packed)).samples
    loader = StatefulDataLoader(mx8.Dataset(str(packed), **KW), batch_size=None, num_workers=2)
    it = iter(loader)
    seen = [i for _ in range(4) for i in next(it).sample_ids.tolist()]
    state = mx8.state_from_loader(loader.state_dict())
    del it, loader
    rest = []
    for rank in range(3):
        ds = mx8.Dataset(str(packed), **dict(KW, batch_size=5), rank=rank, world_size=3)
        ds.load_state_dict(state)
        rest.append([i for b in ds for i in b.sample_ids.tolist()])
    assert len({len(r) for r in rest}) == 1
    counts = Counter(seen + [i for r in rest for i in r])
    assert set(counts) == set(range(n)) and sum(counts.values()) - n == (-(n - 28)) % 3  # only the pads twice


def test_slurm_step_variables_give_the_world_only_inside_srun(monkeypatch):
    from mx8.distributed import current_world
    for k in ("RANK", "WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a batch script outside srun: one process
    assert (current_world().rank, current_world().world_size) == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # a task of an srun step
    assert (current_world().rank, current_world().world_size) == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's variables win
    assert (current_world().rank, current_world().world_size) == (1, 2)


@pytest.mark.parametrize("every", [1, 4])
def test_state_from_loader_counts_the_steps_since_the_last_snapshot(packed, every):
    """With snapshot_every_n_steps=k the workers' states are up to k-1 steps old; the rank's
    position counts the loader's steps, so a resume elsewhere is still exactly once."""
    n = mx8.resolve(str(packed)).samples
    loader = StatefulDataLoader(mx8.Dataset(str(packed), **KW), batch_size=None, num_workers=2,
                                snapshot_every_n_steps=every)
    it = iter(loader)
    seen = [i for _ in range(6) for i in next(it).sample_ids.tolist()]
    state = mx8.state_from_loader(loader.state_dict())
    del it, loader
    assert state["position"] == 42
    ds = mx8.Dataset(str(packed), **KW)
    ds.load_state_dict(state)
    assert sorted(seen + [i for b in ds for i in b.sample_ids.tolist()]) == list(range(n))


def test_a_worker_state_for_another_loader_is_refused(packed):
    loader = StatefulDataLoader(mx8.Dataset(str(packed), **KW), batch_size=None, num_workers=2)
    it = iter(loader)
    for _ in range(3):
        next(it)
    saved = loader.state_dict()
    del it, loader
    other = StatefulDataLoader(mx8.Dataset(str(packed), **dict(KW, batch_size=5)), batch_size=None, num_workers=2)
    other.load_state_dict(saved)
    with pytest.raises(mx8.UsageError, match="resumes only the same loader.*state_from_loader"):
        next(iter(other))


def test_a_peek_after_a_loader_restore_keeps_the_workers_positions(packed):
    """Persistent workers restored mid-epoch, one batch looked at, then a pass: the pass
    still resumes where the checkpoint was (before, the peek used the workers' positions up)."""
    n = mx8.resolve(str(packed)).samples
    kw = dict(batch_size=None, num_workers=2, persistent_workers=True)
    loader = StatefulDataLoader(mx8.Dataset(str(packed), **KW), **kw)
    it = iter(loader)
    for _ in range(10):
        next(it)
    saved = loader.state_dict()
    del it, loader
    again = StatefulDataLoader(mx8.Dataset(str(packed), **KW), **kw)
    again.load_state_dict(saved)
    next(iter(again))
    assert len([i for b in again for i in b.sample_ids.tolist()]) == n - 70


def test_a_position_loaded_in_the_main_process_is_used_once_by_fresh_workers(packed):
    n = mx8.resolve(str(packed)).samples
    ds = mx8.Dataset(str(packed), **KW)
    it = iter(ds)
    for _ in range(4):
        next(it)
    state = ds.state_dict()
    again = mx8.Dataset(str(packed), **KW)
    again.load_state_dict(state)
    passes = [len(ids(torch.utils.data.DataLoader(again, batch_size=None, num_workers=2))) for _ in range(2)]
    assert passes == [-(-(n - 28) // 7), -(-n // 7)]  # the rest, then a whole epoch (was the rest forever)


def test_load_state_dict_after_persistent_workers_started_is_refused(packed):
    ds = mx8.Dataset(str(packed), **KW)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    ids(loader)
    ds.load_state_dict(mx8.Dataset(str(packed), **KW).state_dict())
    with pytest.raises(mx8.UsageError, match="persistent DataLoader workers started"):
        ids(loader)


def test_the_main_process_peeking_does_not_hide_the_workers_epoch(packed):
    """A look at one batch in the main process (for shapes), then the epoch through workers:
    state_dict() still refuses, and stats() are the workers'."""
    n = mx8.resolve(str(packed)).samples
    ds = mx8.Dataset(str(packed), **KW)
    next(iter(ds))
    ids(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2))
    assert ds.stats()["images"] == n and ds.stats()["workers"] == 2
    with pytest.raises(mx8.UsageError, match="read by DataLoader worker processes"):
        ds.state_dict()


def test_a_checkpoint_at_the_end_of_an_epoch_resumes_to_an_empty_pass_then_a_whole_one(packed):
    n = mx8.resolve(str(packed)).samples
    ds = mx8.Dataset(str(packed), **KW)
    ids(ds)
    again = mx8.Dataset(str(packed), **KW)
    again.load_state_dict(ds.state_dict())
    assert len(again) == 0 and ids(again) == [] and len(sum(ids(again), [])) == n
