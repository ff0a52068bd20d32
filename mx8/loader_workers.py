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
- ``iterations``: how many iterations worker w (slot 0: also the main process) has started,
  the name of its rendezvous with worker w of the other ranks (every rank counts alike);
- ``begun``: iterations any worker has begun, so that the main process knows whether the
  workers read an epoch after it last iterated itself;
- ``loads``: load_state_dict() calls in the main process, so that a persistent worker, whose
  copy cannot see a later load, refuses instead of reading on from the old position;
- one slot of counters a worker (up to ``MAX_WORKERS``), which it rewrites after every batch:
  its plan (planned, padded, dropped, start, whether the rendezvous checked) and its
  engine's counters for the iteration. The main process's stats() sums them.
"""
from __future__ import annotations

import multiprocessing
from typing import Any, Dict, Optional

MAX_WORKERS = 64  # workers with a slot; beyond, a worker's counters are not summed (stats say so)
_HEAD = ("epoch", "num_workers", "padded", "dropped", "start", "rendezvous_checked", "resume_done")
SUMMED = ("planned", "images", "bytes_read", "errors", "skipped", "batches", "reads", "s3_requests", "s3_retries",
          "read_s", "decode_s", "wait_s", "starve_s")
_FIELDS = _HEAD + SUMMED
_TIMES = frozenset(k for k in SUMMED if k.endswith("_s"))


class WorkerShared:
    def __init__(self, epoch: int) -> None:
        self.epoch = multiprocessing.RawValue("q", epoch)
        self.read_epoch = multiprocessing.RawValue("q", -1)
        self.iterations = multiprocessing.RawArray("q", MAX_WORKERS)
        self.begun = multiprocessing.RawValue("q", 0)
        self.loads = multiprocessing.RawValue("q", 0)
        self._slots = multiprocessing.RawArray("d", MAX_WORKERS * len(_FIELDS))

    def next_iteration(self, slot: int) -> Optional[int]:
        """The number of slot's next iteration (None beyond MAX_WORKERS)."""
        if slot >= MAX_WORKERS:
            return None
        self.iterations[slot] += 1
        return self.iterations[slot]

    def begin(self, worker: int, plan: Dict[str, Any], epoch: int, num_workers: int) -> None:
        """Worker ``worker`` starts an iteration of ``epoch``: marks it read by workers and
        clears the worker's counters (its resume_done stays)."""
        self.read_epoch.value = epoch
        self.begun.value += 1
        self.publish(worker, {"epoch": epoch, "num_workers": num_workers, **plan})

    def resume_done(self, worker: int) -> int:
        """The load (``loads`` count) whose position worker ``worker`` last read to its end."""
        return int(self._slots[worker * len(_FIELDS) + _FIELDS.index("resume_done")]) if worker < MAX_WORKERS else 0

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
    resumes only the same loader: same workers, same world, same batch size).

    With workers, the loader keeps one mx8 state a worker, taken every
    ``snapshot_every_n_steps`` batches, and counts the batches it yielded since; the rank's
    position is recomputed from the epoch they all started from and that count."""
    from .sharding import Epoch, Progress
    snapshot = loader_state.get("_snapshot")
    if snapshot is None:  # num_workers=0: the loader keeps the Dataset's own state, taken now
        state = loader_state.get("dataset_state")
        if not isinstance(state, dict) or "progress" not in state:
            raise ValueError("not the state_dict() of a StatefulDataLoader over an mx8.Dataset")
        return {k: v for k, v in state.items() if k != "worker"}
    states = [w.get("dataset_state") for w in snapshot.get("_worker_snapshots", {}).values()]
    states = [s for s in states if isinstance(s, dict) and "progress" in s]
    if not states:
        raise ValueError("not the state_dict() of a StatefulDataLoader over an mx8.Dataset")
    state = {k: v for k, v in states[0].items() if k != "worker"}
    worker = next((s["worker"] for s in states if "worker" in s), None)
    if worker is None:  # no worker iterated yet: the epoch's start
        return state
    yielded = int(snapshot.get("_snapshot_step", 0)) + int(loader_state.get("_steps_since_snapshot", 0))
    epoch = Epoch(int(state["samples"]), state["manifest_hash"], int(state["seed"]), int(state["epoch"]),
                  bool(state["shuffle"]), int(worker["world_size"]), int(state["batch_size"]),
                  bool(state["drop_last"]), Progress.from_state(worker["start"]))
    progress, position = epoch.after(yielded * int(state["batch_size"]))
    return dict(state, world_size=int(worker["world_size"]), position=position, progress=progress.to_state())
