"""Ranks started without torchrun, run by tests/test_ddp.py: `mp.spawn` + init_process_group
on a tcp:// address (no RANK / WORLD_SIZE / MASTER_ADDR in the environment), or `slurm`: one
plain process a task with SLURM_PROCID / SLURM_STEP_NUM_TASKS as srun sets them. Each rank
reads an epoch through a DataLoader with 2 workers of the given start method and writes its
sample ids and stats to OUT/rank<r>.json."""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mx8


def make(uri: str) -> mx8.Dataset:
    return mx8.Dataset(uri, batch_size=7, decode=False, shuffle=True, seed=1)


def read_epoch(uri: str, out: str, context: str, rank: int, ds=None) -> None:
    ds = ds if ds is not None else make(uri)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context)
    ids = [i for b in loader for i in b.sample_ids.tolist()]
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"ids": ids, "stats": ds.stats()}, f)


def spawned_rank(rank: int, world: int, port: int, uri: str, out: str, context: str, ds=None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    read_epoch(uri, out, context, rank, ds)
    dist.destroy_process_group()


if __name__ == "__main__":
    launcher, uri, out, context = sys.argv[1:5]
    if launcher in ("mp.spawn", "mp.spawn-arg"):  # -arg: the launcher makes the Dataset, each rank gets a copy
        world, port = int(sys.argv[5]), int(sys.argv[6])
        ds = make(uri) if launcher == "mp.spawn-arg" else None
        mp.spawn(spawned_rank, args=(world, port, uri, out, context, ds), nprocs=world)
    else:  # slurm: this process is one task of an srun step
        read_epoch(uri, out, context, int(os.environ["SLURM_PROCID"]))
