"""Before the first batch of an epoch, all ranks check that they read the same snapshot
the same way: manifest_hash, seed, epoch, shuffle, batch size, drop_last and resume
position. A mismatch raises :class:`mx8.RendezvousError` on every rank, naming which rank
had what (a silent mismatch would make ranks read overlapping shares, or hang DDP).

The channel is the store of the initialised torch.distributed process group; without one,
under torchrun, the agent's c10d store (MASTER_ADDR/MASTER_PORT with
TORCHELASTIC_USE_AGENT_STORE); a single process needs none. Each rank writes its fields and
waits for the others' with a deadline (``MX8_RENDEZVOUS_TIMEOUT_S``, 300 s), so a rank that
never comes is named in the error instead of hanging the job in a collective.
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any, Dict, List, Optional

from .distributed import World
from .errors import RendezvousError

_TIMEOUT_S = float(os.environ.get("MX8_RENDEZVOUS_TIMEOUT_S", "300"))
_calls = 0  # rendezvous made by this process: every rank makes the same sequence


def _store() -> Optional[Any]:
    """The store to meet through: the process group's, or torchrun's agent store."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized():
        from torch.distributed.distributed_c10d import _get_default_store
        return _get_default_store()
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port or os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    return dist.TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=_TIMEOUT_S))


def _gather(store: Any, fields: Dict[str, Any], world: World) -> List[Dict[str, Any]]:
    """Every rank's fields for this process's next rendezvous, within the timeout. Through
    the store with a deadline rather than a collective: a rank that never comes (an extra
    iter() on one rank, a Dataset iterated on some ranks only, a rank that stopped) makes
    the others fail naming it, instead of hanging in all_gather."""
    global _calls
    _calls += 1
    prefix = f"mx8/rendezvous/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{_calls}/"
    store.set(f"{prefix}{world.rank}", json.dumps(fields, sort_keys=True))
    keys = [f"{prefix}{r}" for r in range(world.world_size)]
    try:
        store.wait(keys, timedelta(seconds=_TIMEOUT_S))
    except RuntimeError:  # DistStoreError: the deadline passed
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        if not missing:
            raise
        raise RendezvousError(
            f"mx8 rendezvous {_calls} (epoch {fields.get('epoch')}): rank(s) {', '.join(map(str, missing))} did not "
            f"start this iteration within {_TIMEOUT_S:g} s (MX8_RENDEZVOUS_TIMEOUT_S). Every rank must iterate its "
            f"Dataset the same number of times: an extra iter() on one rank (a peek), a Dataset iterated on some "
            f"ranks only (evaluation on rank 0: declare it rank-local with rank=0, world_size=1), or a rank that "
            f"stopped early all look like this.") from None
    return [json.loads(store.get(k)) for k in keys]


def agree(fields: Dict[str, Any], world: World) -> bool:
    """Compares ``fields`` across ranks; returns False when there is no channel to check
    through (a world of one needs none)."""
    if world.world_size == 1:
        return True
    store = _store()
    if store is None:
        return False
    gathered = _gather(store, fields, world)
    differ = sorted({k for g in gathered for k in g if g.get(k) != gathered[0].get(k)})
    if differ:
        lines = [f"rank {r}: " + ", ".join(f"{k}={g.get(k)!r}" for k in differ) for r, g in enumerate(gathered)]
        hint = ""
        if {"manifest_hash", "epoch", "progress"} & set(differ):
            hint = ("\nIf one rank iterated once more than the others (a peek with iter()), or used a Dataset the "
                    "others do not (evaluation on rank 0: declare it rank-local with rank=0, world_size=1), the "
                    "ranks compare different iterations: that also reads as a disagreement.")
        raise RendezvousError("mx8 ranks disagree on " + ", ".join(differ) + " (all ranks must read the same "
                              "snapshot with the same settings):\n  " + "\n  ".join(lines) + hint)
    return True
