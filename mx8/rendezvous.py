"""Before the first batch of an epoch, all ranks check that they read the same snapshot
the same way: manifest_hash, seed, epoch, shuffle, batch size, drop_last and resume
progress. A mismatch raises :class:`mx8.RendezvousError` on every rank, naming which rank
had what (a silent mismatch would make ranks read overlapping shares, or hang DDP).

The channel is the store of the initialised torch.distributed process group; without one,
under torchrun, the agent's c10d store (MASTER_ADDR/MASTER_PORT with
TORCHELASTIC_USE_AGENT_STORE); a single process needs none. Each rank writes its fields and
waits for the others' with a deadline (``MX8_RENDEZVOUS_TIMEOUT_S``, 300 s), so a rank that
never comes is named in the error instead of hanging the job in a collective.

DataLoader workers meet too: worker w of every rank, through a connection of its own to
the same TCPStore (``store_address``), at each iteration it starts (counted in memory the
rank's processes share, so every rank's worker w counts alike).
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any, Dict, List, Optional, Tuple

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


def store_address() -> Optional[Tuple[str, int]]:
    """(host, port) of the TCPStore to meet through, for a process that cannot use the store
    object itself: a DataLoader worker (forked, where the parent's connection is not its
    own, or spawned, where there is none). None when the group's store is not a TCPStore
    (a FileStore) and torchrun's agent store is not there either."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if dist.is_available() and dist.is_initialized():
        from torch.distributed.distributed_c10d import _get_default_store
        store = _get_default_store()
        while isinstance(store, dist.PrefixStore):
            store = store.underlying_store
        if isinstance(store, dist.TCPStore):
            return store.host, store.port
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if host and port and os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        return host, int(port)
    return None


def connect(address: Tuple[str, int]) -> Any:
    """A connection of this process's own to the TCPStore at ``address``."""
    import torch.distributed as dist
    return dist.TCPStore(address[0], address[1], is_master=False, timeout=timedelta(seconds=_TIMEOUT_S))


def _gather(store: Any, fields: Dict[str, Any], world: World, key: Optional[str]) -> List[Dict[str, Any]]:
    """Every rank's fields for this process's next rendezvous (or the one named ``key``),
    within the timeout. Through the store with a deadline rather than a collective: a rank
    that never comes (an extra iter() on one rank, a Dataset iterated on some ranks only, a
    rank that stopped) makes the others fail naming it, instead of hanging in all_gather."""
    global _calls
    if key is None:
        _calls += 1
        key = str(_calls)
    prefix = f"mx8/rendezvous/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{key}/"
    store.set(f"{prefix}{world.rank}", json.dumps(fields, sort_keys=True))
    keys = [f"{prefix}{r}" for r in range(world.world_size)]
    try:
        store.wait(keys, timedelta(seconds=_TIMEOUT_S))
    except RuntimeError:  # DistStoreError: the deadline passed
        missing = [r for r, k in enumerate(keys) if not store.check([k])]
        if not missing:
            raise
        raise RendezvousError(
            f"mx8 rendezvous {key} (epoch {fields.get('epoch')}): rank(s) {', '.join(map(str, missing))} did not "
            f"start this iteration within {_TIMEOUT_S:g} s (MX8_RENDEZVOUS_TIMEOUT_S). Every rank must make its "
            f"Datasets in the same order and iterate each the same number of times: an extra iter() on one rank (a "
            f"peek), a Dataset made or iterated on some ranks only (evaluation on rank 0: declare it rank-local with "
            f"rank=0, world_size=1), or a rank that stopped early all look like this.") from None
    return [json.loads(store.get(k)) for k in keys]


def agree(fields: Dict[str, Any], world: World, store: Optional[Any] = None, key: Optional[str] = None) -> bool:
    """Compares ``fields`` across ranks, through ``store`` (default: the process group's or
    the agent's) under ``key`` (default: this process's count of rendezvous); returns False
    when there is no channel to check through (a world of one needs none)."""
    if world.world_size == 1:
        return True
    store = store if store is not None else _store()
    if store is None:
        return False
    gathered = _gather(store, fields, world, key)
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
