"""What a Dataset shares with its DataLoader worker processes.

A worker holds a copy of the Dataset made when it started (by fork, or pickled for spawn and
forkserver), so nothing a worker does reaches the main process's object, and nothing the
main process does later (set_epoch) reaches a persistent worker's. What must cross lives in
shared memory made with the Dataset (``multiprocessing`` RawValue/RawArray: inherited
through fork, passed to spawn and forkserver workers as they start; dropped when the
Dataset is pickled for anything else):

- ``epoch``: set_epoch()'s value, which persistent workers read at each iteration;
- ``read_epoch``: the last epoch a worker iterated, so that the main process knows its own
  position is not the workers' (state_dict() refuses);
- ``iterations``: how many iterations worker w has started, the name of its rendezvous with
  worker w of the other ranks (every rank's worker w counts alike);
- one slot of counters a worker (up to ``MAX_WORKERS``), which it rewrites after every batch:
  its plan (planned, padded, dropped, start, whether the rendezvous checked) and its
  engine's counters for the iteration. The main process's stats() sums them.
"""
from __future__ import annotations

import multiprocessing
from typing import Any, Dict, Optional

MAX_WORKERS = 64  # workers with a slot; beyond, a worker's counters are not summed (stats say so)
_HEAD = ("epoch", "num_workers", "padded", "dropped", "start", "rendezvous_checked")
SUMMED = ("planned", "images", "bytes_read", "errors", "skipped", "batches", "reads", "s3_requests", "s3_retries",
          "read_s", "decode_s", "wait_s", "starve_s")
_FIELDS = _HEAD + SUMMED
_TIMES = frozenset(k for k in SUMMED if k.endswith("_s"))


class WorkerShared:
    def __init__(self, epoch: int) -> None:
        self.epoch = multiprocessing.RawValue("q", epoch)
        self.read_epoch = multiprocessing.RawValue("q", -1)
        self.iterations = multiprocessing.RawArray("q", MAX_WORKERS)
        self._slots = multiprocessing.RawArray("d", MAX_WORKERS * len(_FIELDS))

    def begin(self, worker: int, plan: Dict[str, Any], epoch: int, num_workers: int) -> Optional[int]:
        """Worker ``worker`` starts an iteration of ``epoch``: marks it read by workers,
        clears the worker's slot, and returns the iteration's number (None beyond
        MAX_WORKERS)."""
        self.read_epoch.value = epoch
        if worker >= MAX_WORKERS:
            return None
        self.iterations[worker] += 1
        self.publish(worker, {"epoch": epoch, "num_workers": num_workers, **plan})
        return self.iterations[worker]

    def publish(self, worker: int, values: Dict[str, Any]) -> None:
        if worker >= MAX_WORKERS:
            return
        base = worker * len(_FIELDS)
        for i, k in enumerate(_FIELDS):
            if k in values:
                self._slots[base + i] = float(values[k])
            elif k in SUMMED and "epoch" in values:  # a new iteration: counters from zero
                self._slots[base + i] = 0.0

    def totals(self, epoch: int) -> Optional[Dict[str, Any]]:
        """The workers' counters for their last iteration of ``epoch``, summed (plan figures
        for the whole job, padded and dropped, as one worker has them); None if no worker
        read it."""
        n = len(_FIELDS)
        slots = [dict(zip(_FIELDS, self._slots[w * n:(w + 1) * n])) for w in range(MAX_WORKERS)]
        workers = int(slots[0]["num_workers"])
        if slots[0]["epoch"] != epoch or workers < 1:
            return None
        mine = [s for s in slots[:min(workers, MAX_WORKERS)] if s["epoch"] == epoch]
        out: Dict[str, Any] = {"padded": int(mine[0]["padded"]), "dropped": int(mine[0]["dropped"]),
                               "start": int(mine[0]["start"]), "workers": workers,
                               "rendezvous_checked": all(bool(s["rendezvous_checked"]) for s in mine)}
        for k in SUMMED:
            total = sum(s[k] for s in mine)
            out[k] = round(total, 9) if k in _TIMES else int(total)
        if workers > MAX_WORKERS:
            out["workers_counted"] = MAX_WORKERS
        return out


def state_from_loader(loader_state: Dict[str, Any]) -> Dict[str, Any]:
    """The rank's mx8 position in a torchdata ``StatefulDataLoader.state_dict()`` over an
    mx8 Dataset, as ``Dataset.state_dict()`` gives it with ``num_workers=0``: load it into a
    Dataset of any world size or batch size (``StatefulDataLoader.load_state_dict`` itself
    resumes only the same loader: same workers, same world).

    With workers, the loader keeps one mx8 state a worker; the one of the worker that
    yielded the last batch holds the rank's position as of that batch."""
    snapshot = loader_state.get("_snapshot")
    if snapshot is None:  # num_workers=0: the loader keeps the Dataset's own state
        state = loader_state.get("dataset_state")
    else:
        workers = snapshot.get("_worker_snapshots", {})
        last = snapshot.get("_last_yielded_worker_id", -1)
        chosen = workers.get(f"worker_{last}") or workers.get("worker_0") or {}
        state = chosen.get("dataset_state")
    if not isinstance(state, dict) or "progress" not in state:
        raise ValueError("not the state_dict() of a StatefulDataLoader over an mx8.Dataset")
    return {k: v for k, v in state.items() if k != "worker"}
