"""A training-job stand-in run under torchrun by tests/test_ddp.py (real processes, gloo on
127.0.0.1). Each rank writes what it saw to OUT/rank<r>.json."""
from __future__ import annotations

import argparse
import json
import os
import signal
import time

import torch
import torch.distributed as dist

import mx8


def write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a SIGKILL leaves either the old or the new file, never half


def init_process_group(rank: int) -> None:
    """gloo over torchrun's agent store, under a per-attempt prefix: the agent's store
    outlives a restart, and without the prefix restarted ranks read the dead attempt's
    gloo addresses (seen with torch 2.13: connectFullMesh 'Connection refused')."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    dist.init_process_group("gloo", store=dist.PrefixStore(f"mx8-test/attempt{attempt}", store), rank=rank,
                            world_size=int(os.environ["WORLD_SIZE"]))


def dataset(a, rank_seed_offset=0, batch_size=None):
    return mx8.Dataset(a.uri, batch_size=batch_size or a.batch_size, decode=a.mode == "train",
                       size=32 if a.mode == "train" else None, crop="random", shuffle=True,
                       seed=a.seed + rank_seed_offset, drop_last=a.drop_last)


def batches(a, ds, loader=torch.utils.data.DataLoader):
    """The Dataset itself, or (--workers N) a loader over it with N worker processes."""
    if not a.workers:
        return ds
    return loader(ds, batch_size=None, num_workers=a.workers, persistent_workers=a.persistent,
                  multiprocessing_context=a.context)


def run_ids(a, rank, out):
    ds = dataset(a)
    epochs, stats = {}, {}
    source = batches(a, ds)  # one loader for every epoch: persistent workers outlive them
    for epoch in a.epochs:
        ds.set_epoch(epoch)
        epochs[epoch] = [b.sample_ids.tolist() for b in source]
        stats[epoch] = ds.stats()  # with workers: theirs, summed in this process
    write_json(out, {"epochs": epochs, "stats": stats[a.epochs[0]], "all_stats": stats})


def run_mismatch(a, rank, out):
    """Rank r differs from rank 0 in one setting (--differ): refused on every rank."""
    ds = dataset(a, rank_seed_offset=rank if a.differ == "seed" else 0,
                 batch_size=a.batch_size + (rank if a.differ == "batch_size" else 0))
    if a.differ == "num_workers" and rank == 0:
        a.workers = 0  # rank 0 reads in its main process, the others through workers
    t0 = time.monotonic()
    try:
        next(iter(batches(a, ds)))
        write_json(out, {"error": None})
    except mx8.RendezvousError as e:
        write_json(out, {"error": str(e), "waited_s": time.monotonic() - t0})


def run_two_datasets(a, rank, out):
    """A train and a validation Dataset, each behind its own DataLoader with workers, every
    epoch: they meet their counterparts on the other ranks, not each other."""
    train, val = dataset(a), dataset(a, batch_size=a.batch_size + 1)
    epochs = {}
    for epoch in a.epochs:
        train.set_epoch(epoch)
        epochs[epoch] = {"train": [b.sample_ids.tolist() for b in batches(a, train)],
                         "val": [b.sample_ids.tolist() for b in batches(a, val)]}
    write_json(out, {"epochs": epochs, "stats": train.stats()})


def run_loader_ckpt(a, rank, out):
    """A StatefulDataLoader with --workers reads --kill-at batches and checkpoints; the
    rank's mx8 position from it (mx8.state_from_loader) is written for a resume elsewhere,
    next to what num_workers=0 reports after as many steps."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    loader = batches(a, dataset(a), StatefulDataLoader)
    it = iter(loader)
    seen = [next(it).sample_ids.tolist() for _ in range(a.kill_at)]
    state = mx8.state_from_loader(loader.state_dict())
    plain = dataset(a)
    pit = iter(plain)
    for _ in range(a.kill_at):
        next(pit)
    write_json(out, {"seen": seen, "state": state, "plain_state": plain.state_dict()})


def run_resume(a, rank, out):
    """Resumes from the state --state names (written by another world), to the epoch's end."""
    with open(a.state) as f:
        state = json.load(f)
    ds = dataset(a)
    ds.load_state_dict(state)
    ds.set_epoch(state["epoch"])
    write_json(out, {"seen": [b.sample_ids.tolist() for b in batches(a, ds)], "stats": ds.stats()})


def run_peek(a, rank, out):
    """An epoch together, then rank 0 alone calls iter() once more (a peek)."""
    ds = dataset(a)
    batches = sum(1 for _ in ds)
    t0 = time.monotonic()
    error = None
    if rank == 0:
        try:
            next(iter(ds))
        except mx8.RendezvousError as e:
            error = str(e)
    write_json(out, {"batches": batches, "error": error, "waited_s": time.monotonic() - t0})


def run_eval_on_rank0(a, rank, out):
    """Rank 0 evaluates on a Dataset declared rank-local (works: it meets nobody), the ranks
    train an epoch together, then rank 0 evaluates on an undeclared one (fails, naming it)."""
    res = {}
    if rank == 0:
        local = mx8.Dataset(a.uri, batch_size=5, decode=False, rank=0, world_size=1)
        res["local_samples"] = sum(len(b.sample_ids) for b in local)
    res["train_batches"] = sum(1 for _ in dataset(a))
    if rank == 0:
        t0 = time.monotonic()
        try:
            sum(1 for _ in mx8.Dataset(a.uri, batch_size=5, decode=False))
            res["error"] = None
        except mx8.RendezvousError as e:
            res["error"] = str(e)
        res["waited_s"] = time.monotonic() - t0
    write_json(out, res)


def run_restart(a, rank, out):
    """Checkpoint after every step; on the first attempt the last rank SIGKILLs itself."""
    ds = dataset(a)
    ckpt_path = os.path.join(a.out, f"ckpt{rank}.json")
    seen = []
    if os.path.exists(ckpt_path):
        with open(ckpt_path) as f:
            ckpt = json.load(f)
        ds.load_state_dict(ckpt["data"])
        seen = ckpt["seen"]
    ds.set_epoch(a.epochs[0])
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    for step, batch in enumerate(ds):
        seen.append(batch.sample_ids.tolist())  # "train" on the batch, then checkpoint
        dist.barrier()  # a step of DDP: every rank takes it together
        write_json(ckpt_path, {"data": ds.state_dict(), "seen": seen})
        if attempt == 0 and step == a.kill_at and rank == dist.get_world_size() - 1:
            os.kill(os.getpid(), signal.SIGKILL)
    write_json(out, {"seen": seen, "attempt": attempt, "stats": ds.stats()})


def run_train(a, rank, out):
    """A small model trains for two epochs under DDP on mx8 batches."""
    torch.manual_seed(0)
    ds = dataset(a)
    classes = len(ds.snapshot.labels)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, classes))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    losses, steps = [], []
    for epoch in range(2):
        ds.set_epoch(epoch)
        total, n = 0.0, 0
        for batch in torch.utils.data.DataLoader(ds, batch_size=None):
            x = batch.images.float() / 255.0
            loss = torch.nn.functional.cross_entropy(ddp(x), batch.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            n += 1
        losses.append(total / max(n, 1))
        steps.append(n)
    write_json(out, {"losses": losses, "steps": steps})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("ids", "mismatch", "restart", "train", "peek", "eval-on-rank0", "loader-ckpt",
                                    "resume", "two-datasets"))
    p.add_argument("uri")
    p.add_argument("out")
    p.add_argument("--batch-size", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, nargs="+", default=[0])
    p.add_argument("--drop-last", action="store_true")
    p.add_argument("--kill-at", type=int, default=3)
    p.add_argument("--no-process-group", action="store_true", help="rendezvous through torchrun's agent store")
    p.add_argument("--workers", type=int, default=0, help="read through a DataLoader with this many workers")
    p.add_argument("--persistent", action="store_true", help="persistent_workers=True")
    p.add_argument("--context", default=None, help="the workers' start method (fork, spawn, forkserver)")
    p.add_argument("--differ", choices=("seed", "batch_size", "num_workers"), default="seed",
                   help="mismatch: what rank r changes")
    p.add_argument("--state", help="resume: the state_dict to resume from (JSON)")
    a = p.parse_args()
    rank = int(os.environ["RANK"])
    if not a.no_process_group:
        init_process_group(rank)
    out = os.path.join(a.out, f"rank{rank}.json")
    {"ids": run_ids, "mismatch": run_mismatch, "restart": run_restart, "train": run_train, "peek": run_peek,
     "eval-on-rank0": run_eval_on_rank0, "loader-ckpt": run_loader_ckpt, "resume": run_resume,
     "two-datasets": run_two_datasets}[a.mode](a, rank, out)
    if not a.no_process_group:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
