"""Who am I in the job: rank and world size, from torch.distributed when it is initialised,
else from the RANK / WORLD_SIZE variables torchrun (and most launchers) set, else from
SLURM_PROCID / SLURM_STEP_NUM_TASKS inside an srun job step, else a single process. (Not
SLURM_NTASKS: a batch script outside srun has it too, as the allocation's task count, and
its one process would read a fraction of the data.) All rank arithmetic lives in
mx8/sharding.py; this module only finds the numbers."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

from .envvars import env_int


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int


def current_world(rank: Optional[int] = None, world_size: Optional[int] = None) -> World:
    if rank is None or world_size is None:
        try:
            import torch.distributed as dist
            if dist.is_available() and dist.is_initialized():
                rank = dist.get_rank() if rank is None else rank
                world_size = dist.get_world_size() if world_size is None else world_size
        except ImportError:
            pass
    slurm = "RANK" not in os.environ and "SLURM_STEP_NUM_TASKS" in os.environ
    if rank is None:
        rank = env_int("SLURM_PROCID", 0) if slurm else env_int("RANK", 0)
    if world_size is None:
        world_size = env_int("SLURM_STEP_NUM_TASKS", 1) if slurm else env_int("WORLD_SIZE", 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    if slurm and world_size > 1:
        _warn_once(f"mx8: rank {rank} of {world_size} taken from SLURM_PROCID / SLURM_STEP_NUM_TASKS (an srun step "
                   f"without a torch.distributed process group): each task reads its share of every epoch, and "
                   f"nothing checks that the tasks agree. For independent tasks that should each read everything, "
                   f"pass rank=0, world_size=1")
    return World(rank, world_size)


_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=3)
