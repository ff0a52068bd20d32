"""Before the first batch of an epoch, all ranks check that they read the same snapshot
the same way: manifest_hash, seed, epoch, shuffle, batch size, drop_last and resume
position. A mismatch raises :class:`mx8.RendezvousError` on every rank, naming which rank
had what (a silent mismatch would make ranks read overlapping shares, or hang DDP).

The channel is the initialised torch.distributed process group; without one, under
torchrun, the agent's c10d store (MASTER_ADDR/MASTER_PORT with TORCHELASTIC_USE_AGENT_STORE);
a single process needs none.
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any, Dict, List, Optional

from .distributed import World
from .errors import RendezvousError

_STORE_TIMEOUT = timedelta(seconds=int(os.environ.get("MX8_RENDEZVOUS_TIMEOUT_S", "300")))
_calls = 0  # rendezvous made by this process: every rank makes the same sequence


def _gather_process_group(fields: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, fields)
    return out


def _gather_agent_store(fields: Dict[str, Any], world: World) -> Optional[List[Dict[str, Any]]]:
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port or os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    import torch.distributed as dist
    global _calls
    _calls += 1
    store = dist.TCPStore(host, int(port), is_master=False, timeout=_STORE_TIMEOUT)
    prefix = f"mx8/rendezvous/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_calls}/"
    store.set(f"{prefix}{world.rank}", json.dumps(fields, sort_keys=True))
    keys = [f"{prefix}{r}" for r in range(world.world_size)]
    store.wait(keys)
    return [json.loads(store.get(k)) for k in keys]


def agree(fields: Dict[str, Any], world: World) -> bool:
    """Compares ``fields`` across ranks; returns False when there is no channel to check
    through (a world of one needs none)."""
    if world.world_size == 1:
        return True
    gathered = _gather_process_group(fields)
    if gathered is None:
        gathered = _gather_agent_store(fields, world)
    if gathered is None:
        return False
    differ = sorted({k for g in gathered for k in g if g.get(k) != gathered[0].get(k)})
    if differ:
        lines = [f"rank {r}: " + ", ".join(f"{k}={g.get(k)!r}" for k in differ) for r, g in enumerate(gathered)]
        raise RendezvousError("mx8 ranks disagree on " + ", ".join(differ) + " (all ranks must read the same "
                              "snapshot with the same settings):\n  " + "\n  ".join(lines))
    return True
