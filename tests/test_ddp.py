"""Training under DDP with real processes: torchrun, gloo on 127.0.0.1, world sizes 1-3.

Markers select the seed's smoke gates (scripts/smoke.sh): ddp_nodupes, ddp_determinism,
ddp_restart, ddp_train."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import mx8

JOB = Path(__file__).with_name("ddp_job.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(world: int, args, out: Path, *, max_restarts: int = 0, timeout: int = 180):
    out.mkdir(parents=True, exist_ok=True)
    # The c10d rendezvous (not a static master port) gives each restart a fresh round, so
    # the restarted ranks never read the dead attempt's addresses.
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={world}", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=mx8-test",
           f"--max-restarts={max_restarts}", "--monitor-interval=0.5", str(JOB)] + [str(x) for x in args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    results = [json.loads((out / f"rank{r}.json").read_text()) if (out / f"rank{r}.json").exists() else None
               for r in range(world)]
    return p, results


def epoch_counts(res, epoch):
    """How often each sample id came in one epoch over all ranks, once the ranks are seen to
    have taken the same number of steps."""
    per_rank = [r["epochs"][epoch] for r in res]
    assert len({len(b) for b in per_rank}) == 1, "ranks took different step counts"
    return Counter(i for batches in per_rank for b in batches for i in b)


@pytest.fixture(scope="module")
def uri(corpus, tmp_path_factory):
    """The corpus plus one image: 211 samples, a prime, so no world or batch size divides it."""
    import shutil
    src = tmp_path_factory.mktemp("odd-src")
    shutil.copytree(corpus, src, dirs_exist_ok=True)
    shutil.copy(next(corpus.glob("class_000/*.jpg")), src / "class_001" / "extra.jpg")
    out = tmp_path_factory.mktemp("odd")
    r = mx8.pack(str(src), str(out), shard_mb=4, progress=False)
    assert r.samples == 211
    return str(out)


@pytest.mark.ddp_nodupes
@pytest.mark.parametrize("world,batch_size,drop_last", [(1, 7, False), (2, 7, False), (3, 8, False), (3, 5, True)])
def test_ranks_share_each_epoch_without_duplicates(uri, tmp_path, world, batch_size, drop_last):
    n = mx8.resolve(uri).samples
    args = ["ids", uri, tmp_path, "--batch-size", batch_size, "--epochs", 0, 1] + (["--drop-last"] if drop_last else [])
    p, res = torchrun(world, args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for epoch in ("0", "1"):
        ids = epoch_counts(res, epoch)
        st = res[0]["stats"]
        if drop_last:
            assert max(ids.values()) == 1 and len(ids) == n - st["dropped"]
        else:
            assert set(ids) == set(range(n)) and sum(ids.values()) - n == st["padded"]
            assert st["padded"] == (-n) % world
    assert res[0]["epochs"]["0"] != res[0]["epochs"]["1"]  # epochs reshuffle


@pytest.mark.ddp_determinism
def test_two_runs_give_identical_sequences_and_seed_changes_them(uri, tmp_path):
    runs = [torchrun(2, ["ids", uri, tmp_path / name, "--seed", seed], tmp_path / name)
            for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    for p, _ in runs:
        assert p.returncode == 0, p.stderr[-3000:]
    a, b, c = (res for _, res in runs)
    assert a[0]["epochs"] == b[0]["epochs"] and a[1]["epochs"] == b[1]["epochs"]
    assert a[0]["epochs"] != c[0]["epochs"]


@pytest.mark.ddp_determinism
@pytest.mark.parametrize("process_group", [True, False])
def test_mismatched_seed_fails_on_every_rank_naming_who_had_what(uri, tmp_path, process_group):
    args = ["mismatch", uri, tmp_path] + ([] if process_group else ["--no-process-group"])
    p, res = torchrun(2, args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for r in res:
        assert r["error"] and "disagree on seed" in r["error"]
        assert "rank 0: seed=0" in r["error"] and "rank 1: seed=1" in r["error"]


@pytest.mark.ddp_determinism
@pytest.mark.parametrize("process_group", [True, False])
def test_a_peek_on_one_rank_fails_promptly_naming_the_missing_rank(uri, tmp_path, monkeypatch, process_group):
    """One extra iter() on rank 0 after an epoch: before, it hung inside all_gather (600 s
    and more); now the rendezvous waits MX8_RENDEZVOUS_TIMEOUT_S and names rank 1."""
    monkeypatch.setenv("MX8_RENDEZVOUS_TIMEOUT_S", "3")
    args = ["peek", uri, tmp_path] + ([] if process_group else ["--no-process-group"])
    p, res = torchrun(2, args, tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert res[0]["batches"] == res[1]["batches"] and res[1]["error"] is None
    assert "rank(s) 1 did not start this iteration within 3 s" in res[0]["error"] and "a peek" in res[0]["error"]
    assert 3 <= res[0]["waited_s"] < 20


@pytest.mark.ddp_determinism
def test_evaluation_on_rank0_works_rank_local_and_fails_clearly_otherwise(uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MX8_RENDEZVOUS_TIMEOUT_S", "3")
    p, res = torchrun(2, ["eval-on-rank0", uri, tmp_path], tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert res[0]["local_samples"] == mx8.resolve(uri).samples  # rank-local: the whole dataset, no rendezvous
    assert res[0]["train_batches"] == res[1]["train_batches"]   # the ranks stayed in step
    assert "rank-local with rank=0, world_size=1" in res[0]["error"] and res[0]["waited_s"] < 20


@pytest.mark.ddp_restart
def test_sigkilled_rank_restart_resumes_mid_epoch_exactly_once(uri, tmp_path):
    n = mx8.resolve(uri).samples
    p, res = torchrun(2, ["restart", uri, tmp_path, "--batch-size", 8, "--kill-at", 4], tmp_path, max_restarts=1)
    assert p.returncode == 0, p.stderr[-3000:]
    assert all(r["attempt"] == 1 for r in res), "the job was not restarted after the SIGKILL"
    ids = Counter(i for r in res for b in r["seen"] for i in b)
    assert set(ids) == set(range(n)) and sum(ids.values()) - n == res[0]["stats"]["padded"]
    assert len(res[0]["seen"]) == len(res[1]["seen"])


@pytest.mark.ddp_train
def test_small_model_trains_two_epochs_under_ddp(uri, tmp_path):
    p, res = torchrun(2, ["train", uri, tmp_path, "--batch-size", 16], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert res[0]["steps"] == res[1]["steps"] and res[0]["steps"][0] > 0
    assert all(l == l and l < 10 for r in res for l in r["losses"])  # finite losses


# -- DataLoader workers under torchrun ------------------------------------------------------

@pytest.mark.ddp_nodupes
@pytest.mark.parametrize("world,workers,extra", [(2, 2, []), (3, 2, ["--persistent"]), (2, 3, ["--context", "spawn"])])
def test_dataloader_workers_keep_every_guarantee(uri, tmp_path, world, workers, extra):
    """With workers the ranks still meet (worker w of every rank, through the group's store),
    share every epoch exactly once besides reported padding, take equal steps, reshuffle
    (persistent workers too), and report stats in the main process."""
    n = mx8.resolve(uri).samples
    args = ["ids", uri, tmp_path, "--batch-size", 6, "--epochs", 0, 1, "--workers", workers] + extra
    p, res = torchrun(world, args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for epoch in ("0", "1"):
        ids = epoch_counts(res, epoch)
        st = res[0]["all_stats"][epoch]
        assert set(ids) == set(range(n)) and sum(ids.values()) - n == st["padded"] == (-n) % world
        assert st["workers"] == workers and st["rendezvous_checked"] is True
        assert sum(r["all_stats"][epoch]["images"] for r in res) == n + st["padded"]
    assert res[0]["epochs"]["0"] != res[0]["epochs"]["1"]  # epochs reshuffle


@pytest.mark.ddp_determinism
@pytest.mark.parametrize("differ", ["seed", "batch_size", "num_workers"])
def test_a_mismatch_behind_dataloader_workers_fails_on_every_rank(uri, tmp_path, differ):
    """Before, workers never met: another seed corrupted the epoch silently (exit 0), another
    batch size ended in a gloo 'connection closed'. A rank reading in its main process and one
    reading through workers meet too, and fail at once."""
    p, res = torchrun(2, ["mismatch", uri, tmp_path, "--workers", 2, "--differ", differ], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for r in res:
        assert r["error"] and f"disagree on {differ}" in r["error"], r
        assert f"rank 0: {differ}=" in r["error"] and f"rank 1: {differ}=" in r["error"]
        assert r["waited_s"] < 30


@pytest.mark.ddp_nodupes
def test_two_datasets_behind_workers_meet_their_own_counterparts(uri, tmp_path):
    """A train and a validation Dataset, each with workers, two epochs: before, their workers'
    rendezvous shared names and compared the wrong Datasets (a false RendezvousError)."""
    n = mx8.resolve(uri).samples
    p, res = torchrun(2, ["two-datasets", uri, tmp_path, "--workers", 2, "--epochs", 0, 1], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for epoch in ("0", "1"):
        for which in ("train", "val"):
            ids = Counter(i for r in res for b in r["epochs"][epoch][which] for i in b)
            assert set(ids) == set(range(n)) and sum(ids.values()) - n == (-n) % 2


@pytest.mark.ddp_restart
def test_a_stateful_dataloader_checkpoint_resumes_on_another_world_size(uri, tmp_path):
    """StatefulDataLoader with 2 workers on 2 ranks reads 5 steps and checkpoints: the rank's
    position in it (mx8.state_from_loader) is what num_workers=0 reports after 5 steps, and 3
    ranks resume from it: every sample exactly once besides reported padding."""
    n = mx8.resolve(uri).samples
    p, res = torchrun(2, ["loader-ckpt", uri, tmp_path / "a", "--workers", 2, "--kill-at", 5], tmp_path / "a")
    assert p.returncode == 0, p.stderr[-3000:]
    for r in res:
        assert (r["state"]["position"], r["state"]["progress"]) == \
            (r["plain_state"]["position"], r["plain_state"]["progress"]) == (5 * 7 * 2, r["state"]["progress"])
    state = tmp_path / "state.json"
    state.write_text(json.dumps(res[0]["state"]))
    p, after = torchrun(3, ["resume", uri, tmp_path / "b", "--batch-size", 4, "--state", state], tmp_path / "b")
    assert p.returncode == 0, p.stderr[-3000:]
    assert len({len(r["seen"]) for r in after}) == 1
    ids = Counter(i for r in res + after for b in r["seen"] for i in b)
    assert set(ids) == set(range(n)) and sum(ids.values()) - n == after[0]["stats"]["padded"]


# -- launchers other than torchrun ----------------------------------------------------------

SPAWN_JOB = Path(__file__).with_name("spawn_job.py")


@pytest.mark.ddp_nodupes
@pytest.mark.parametrize("launcher,context", [("mp.spawn", "spawn"), ("mp.spawn", "fork"), ("mp.spawn", "forkserver"),
                                              ("mp.spawn-arg", "spawn"), ("mp.spawn-arg", "fork"),
                                              ("slurm", "spawn"), ("slurm", "fork")])
def test_launchers_give_disjoint_shares_with_every_start_method(uri, tmp_path, launcher, context):
    """mp.spawn + init_process_group(tcp://) (the Dataset made in each rank, or made in the
    launcher and passed to the ranks), and tasks of an srun step (SLURM_PROCID,
    SLURM_STEP_NUM_TASKS): each rank's DataLoader workers read the rank's share (before,
    spawn workers under mp.spawn saw no group and read the whole epoch on every rank)."""
    n = mx8.resolve(uri).samples
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and
           not k.startswith(("TORCHELASTIC_", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    base = [sys.executable, str(SPAWN_JOB), launcher, uri, str(tmp_path), context]
    if launcher.startswith("mp.spawn"):
        procs = [subprocess.Popen(base + ["2", str(free_port())], env=env)]
    else:
        procs = [subprocess.Popen(base, env=dict(env, SLURM_PROCID=str(r), SLURM_STEP_NUM_TASKS="2")) for r in (0, 1)]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    a, b = res[0]["ids"], res[1]["ids"]
    assert len(a) == len(b) == -(-n // 2) and set(a) | set(b) == set(range(n))
    assert len(set(a) & set(b)) == res[0]["stats"]["padded"] == (-n) % 2
    # mp.spawn's ranks meet through the group's TCPStore; srun tasks without a group have no channel
    assert res[0]["stats"]["rendezvous_checked"] is launcher.startswith("mp.spawn")
