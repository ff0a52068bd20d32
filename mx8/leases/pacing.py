"""Cluster-wide pacing: caps on read requests per second and on bytes in flight, enforced
across every worker of a lease job through the c10d store.

A *request* is one sample read handed to the engine (one ``pread`` on local disk; on S3 at
most one ranged GET, since the engine coalesces neighbouring samples into one GET, so the
cap is an upper bound on GETs). *Bytes in flight* are the encoded bytes of batches given to
the engine and not yet handed to the consumer. A worker asks before it lets the engine read a
batch, so the caps bound what the engine reads.

- Requests: grants in fixed time slots of 1/m s (``slot_s`` rounded so a second holds a
  whole number m of them; wall clock): the first worker to ``add`` into ``req/<slot>``
  beyond the slot's cap gets the part that fits and waits for the next slot for the rest.
  Every grant goes through one atomic ``add``. Any one-second window overlaps at most m + 1
  slots, so a slot grants at most ``floor(rate / (m + 1))``: no one-second window, aligned
  or not, holds more than the cap, and the sustained rate is m / (m + 1) of it or a little
  less (0.91 with the default 0.1 s slots). Caps below 2 requests/s cannot be held this way
  and are refused. Slots are aligned by wall clock: hosts must agree on time (NTP) to within
  a small part of a slot, else the cap can be exceeded by the skew.
- Bytes: an atomic counter ``bytes`` (reserve = ``add(+n)``, undone when it overshoots the
  cap; a batch larger than the cap runs alone). Each worker also keeps its own balance
  ``bytes/<worker>`` (changed only by compare_set); when a worker is declared dead, the worker
  that declared it swaps the balance to ``dead:...`` and gives it back to the counter, so a
  killed worker's reservation does not shrink the cap forever, and a worker that was only
  paused finds its balance fenced and does not give it back twice. A worker's reservation is
  released once its batch is in the consumer's hands.

A worker waiting in either loop calls ``on_wait`` (the coordinator's scan for dead members,
which gives a dead worker's reservation back) every few tenths of a second, so a wait ends
when a holder releases its bytes or is declared dead. A worker killed between the counter's
``add`` and its balance's compare_set (two store calls) can leave one batch's bytes counted
until the job ends.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple


OBSERVE_EVERY_S = 0.25  # how often a waiting worker looks for dead members


class PaceFenced(Exception):
    """This worker was declared dead while it held pacing reservations."""


class Pacer:
    def __init__(self, store: Any, prefix: str, worker: str, *, max_requests_per_s: Optional[float] = None,
                 max_bytes_in_flight: Optional[int] = None, slot_s: float = 0.1, trace: bool = False,
                 on_wait: Optional[Callable[[], Any]] = None) -> None:
        self.store, self.prefix, self.worker = store, prefix, worker
        self.rate = float(max_requests_per_s) if max_requests_per_s else None
        self.max_bytes = int(max_bytes_in_flight) if max_bytes_in_flight else None
        self.on_wait = on_wait
        self._observed_at = 0.0
        if self.rate is not None:
            if self.rate < 2:
                raise ValueError(f"max_requests_per_s must be at least 2, got {self.rate:g}: pacing holds the cap "
                                 f"over every one-second window with at least two slots a second")
            m = max(1, min(math.ceil(1.0 / slot_s), int(self.rate) - 1))  # slots a second
            self.slot_s = 1.0 / m
            self.slot_cap = int(self.rate // (m + 1))  # a 1 s window overlaps at most m + 1 slots
        self.full_slot = -1        # a slot this worker saw full
        self.mine_bytes = 0        # our balance, as in the store (bytes/<worker>)
        self.requests = 0
        self.cluster_requests = 0  # cluster total after our last grant
        self.cluster_bytes = 0     # cluster bytes in flight after our last reservation
        self.peak_bytes = 0
        self.wait_s = 0.0
        self.events: Optional[List[Tuple[float, str, int, int]]] = [] if trace else None
        if self.max_bytes is not None:
            store.set(self._mine_key(worker), "0")

    @property
    def active(self) -> bool:
        return self.rate is not None or self.max_bytes is not None

    def _mine_key(self, worker: str) -> str:
        return f"{self.prefix}pace/bytes/{worker}"

    # -- requests -----------------------------------------------------------------------

    def _requests(self, n: int, block: bool) -> bool:
        """Grants n requests. Not blocking: all n in the current slot, or none (nothing is
        banked for later, so every grant is used in its own slot). Blocking: a batch needing
        more than a slot grants collects them over consecutive slots and is read after the
        last (the window bound then holds when batches fit a slot's grant)."""
        if self.rate is None:
            return True
        need = n
        while need > 0:
            now = time.time()
            slot = int(now / self.slot_s)
            if slot != self.full_slot:
                key = f"{self.prefix}pace/req/{slot}"
                t = self.store.add(key, need)
                before = t - need
                got = max(0, min(need, self.slot_cap - before))
                if int(time.time() / self.slot_s) != slot or (not block and got < need):
                    # The slot ended during our add (a grant in it now could crowd a later
                    # window), or not all of it fits: give the slot back what we took.
                    self.store.add(key, -need)
                    got = 0
                if before == 0 and slot >= 10:
                    try:
                        self.store.delete_key(f"{self.prefix}pace/req/{slot - 10}")
                    except Exception:  # noqa: BLE001 - housekeeping only
                        pass
                if got:
                    need -= got
                    self.requests += got
                    self.cluster_requests = self.store.add(f"{self.prefix}pace/req_total", got)
                    if self.events is not None:
                        self.events.append((now, "req", got, slot))
                if need <= 0:
                    break
                self.full_slot = slot
            if not block:
                return False
            pause = (slot + 1) * self.slot_s - time.time()
            if pause > 0:
                t0 = time.monotonic()
                time.sleep(pause + 0.0005)
                self.wait_s += time.monotonic() - t0
                self._waiting()
        return True

    # -- bytes in flight ----------------------------------------------------------------

    def _reserve(self, nbytes: int, block: bool) -> bool:
        if self.max_bytes is None or nbytes <= 0:
            return True
        key = f"{self.prefix}pace/bytes"
        pause = 0.001
        t0 = time.monotonic()
        while True:
            asked_at = time.time()  # the trace's time of the reservation: no later than the add
            t = self.store.add(key, nbytes)
            if t - nbytes <= 0 or t <= self.max_bytes:
                break
            self.store.add(key, -nbytes)
            if not block:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
            self._waiting()
        self.wait_s += time.monotonic() - t0
        mine = self._mine_key(self.worker)
        want = str(self.mine_bytes + nbytes)
        if self.store.compare_set(mine, str(self.mine_bytes), want).decode() != want:
            self.store.add(key, -nbytes)
            raise PaceFenced(f"worker {self.worker} was declared dead")
        self.mine_bytes += nbytes
        self.cluster_bytes = t
        self.peak_bytes = max(self.peak_bytes, self.mine_bytes)
        if self.events is not None:  # with the job's bytes in flight just after our add
            self.events.append((asked_at, "bytes", nbytes, t))
        return True

    def _waiting(self) -> None:
        now = time.monotonic()
        if self.on_wait is not None and now - self._observed_at >= OBSERVE_EVERY_S:
            self._observed_at = now
            self.on_wait()

    def release(self, nbytes: int) -> None:
        if self.max_bytes is None or nbytes <= 0:
            return
        mine = self._mine_key(self.worker)
        want = str(self.mine_bytes - nbytes)
        if self.store.compare_set(mine, str(self.mine_bytes), want).decode() != want:
            return  # declared dead: the declarer gave our whole balance back
        self.mine_bytes -= nbytes
        self.store.add(f"{self.prefix}pace/bytes", -nbytes)
        if self.events is not None:  # the trace's time of the release: no earlier than the add
            self.events.append((time.time(), "bytes", -nbytes, -1))

    def acquire(self, requests: int, nbytes: int, block: bool) -> bool:
        """Asks for a batch's reads; False (only when not block) means: not now, ask again.
        Bytes first: a reservation is cheap to give back, a granted request is not (it was
        counted in its slot)."""
        if not self._reserve(nbytes, block):
            return False
        if not self._requests(requests, block):
            self.release(nbytes)
            return False
        return True

    def reclaim(self, dead_worker: str) -> int:
        """Gives a dead worker's reservation back to the cluster (once, whoever declared it)."""
        if self.max_bytes is None:
            return 0
        key = self._mine_key(dead_worker)
        if not self.store.check([key]):
            return 0
        mark = f"dead:{self.worker}"
        while True:
            cur = self.store.get(key).decode()
            if cur.startswith("dead"):
                return 0
            if self.store.compare_set(key, cur, mark).decode() == mark:
                n = int(cur)
                if n:
                    self.store.add(f"{self.prefix}pace/bytes", -n)
                return n

    def stats(self) -> Dict[str, Any]:
        if not self.active:
            return {}
        out: Dict[str, Any] = {"pace_wait_s": round(self.wait_s, 4)}
        if self.rate is not None:
            out.update(pace_requests=self.requests, pace_cluster_requests=self.cluster_requests,
                       pace_request_share=round(self.requests / self.cluster_requests, 4)
                       if self.cluster_requests else 0.0,
                       pace_max_requests_per_s=self.rate)
        if self.max_bytes is not None:
            out.update(pace_bytes_in_flight=self.mine_bytes, pace_peak_bytes_in_flight=self.peak_bytes,
                       pace_cluster_bytes_in_flight=self.cluster_bytes,
                       pace_bytes_share=round(self.mine_bytes / self.cluster_bytes, 4) if self.cluster_bytes else 0.0,
                       pace_max_bytes_in_flight=self.max_bytes)
        return out
