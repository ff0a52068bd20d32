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
