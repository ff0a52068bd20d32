"""Which c10d store lease mode coordinates through, and how to host one.

Lease mode keeps all of its shared state in a torch.distributed ``TCPStore`` (atomic ``add``
and ``compare_set``, ``multi_get``/``multi_set``, ``wait``), the store every torchrun job
already has; there is no protocol of mx8's own. The store is chosen in this order:

1. ``store=`` given to :class:`mx8.LeaseDataset`: a ``torch.distributed.Store`` object, or
   ``"host:port"`` (``host_store=True`` makes this process serve it on that port);
2. ``MX8_LEASE_STORE=host:port`` (``MX8_LEASE_STORE_HOST=1``: serve it here);
3. under torchrun: the agent's store, ``MASTER_ADDR:MASTER_PORT`` (with
   ``TORCHELASTIC_USE_AGENT_STORE=true``), which outlives worker restarts;
4. an initialised process group's default store;
5. otherwise a private store on 127.0.0.1 (one process: leases still give durable progress).

``python -m mx8.leases serve --port 29555`` hosts a store for a standalone job: start it
first, then every worker with ``MX8_LEASE_STORE=thathost:29555``.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Iterator, Optional, Tuple, Union

from ..errors import Error, LeaseStoreError

STORE_TIMEOUT_S = 60.0


@contextlib.contextmanager
def store_errors(where: str) -> Iterator[None]:
    """Turns the store's own failures (its host gone, a timeout) into LeaseStoreError
    naming the store, instead of a C++ backtrace."""
    import torch.distributed as dist
    try:
        yield
    except getattr(dist, "DistError", RuntimeError) as e:
        if isinstance(e, Error):
            raise
        raise LeaseStoreError(
            f"lease store {where}: {str(e).splitlines()[0]}. The job cannot go on without its store: what was "
            f"acknowledged is in the lease log (if the job has one), and the job rerun against a new store "
            f"resumes from it.") from None


def parse_address(addr: str) -> Tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"lease store address {addr!r}: expected host:port")
    return host.strip("[]"), int(port)


def host_store(host: str, port: int, timeout_s: float = STORE_TIMEOUT_S):
    """Serves a TCPStore on host:port (port 0: any free port; ``.port`` says which)."""
    import torch.distributed as dist
    try:
        return dist.TCPStore(host, port, is_master=True, timeout=timedelta(seconds=timeout_s),
                             wait_for_workers=False)
    except (RuntimeError, OSError) as e:  # DistNetworkError: the port is taken, say
        raise LeaseStoreError(f"cannot serve the lease store on {host}:{port}: {str(e).splitlines()[0]}. Is another "
                              f"process (a worker with host_store=True, python -m mx8.leases serve) serving "
                              f"it already?") from None


def connect_store(host: str, port: int, timeout_s: float = STORE_TIMEOUT_S):
    import torch.distributed as dist
    try:
        return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, OSError) as e:  # DistStoreError is a RuntimeError
        raise LeaseStoreError(
            f"lease store {host}:{port}: no store answered within {timeout_s:.0f} s ({str(e).splitlines()[0]}). "
            f"Start it first (python -m mx8.leases serve --port {port}, or one worker with host_store=True); "
            f"a worker hosting it leaves once the job is done and the other workers are gone.") from None


def open_store(store: Union[None, str, object] = None, host: Optional[bool] = None,
               timeout_s: float = STORE_TIMEOUT_S) -> Tuple[object, str, str]:
    """Returns (store, description, attempt): attempt separates torchrun restarts of one job
    (a restarted job re-reads its lease log instead of trusting the previous attempt's keys)."""
    from ..envvars import env_bool
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if store is not None and not isinstance(store, str):
        return store, "given store", attempt
    addr = store or os.environ.get("MX8_LEASE_STORE") or None
    if host is None:
        host = env_bool("MX8_LEASE_STORE_HOST", False)
    if addr:
        h, p = parse_address(addr)
        if host:
            return host_store(h, p, timeout_s), f"hosting {h}:{p}", attempt
        return connect_store(h, p, timeout_s), f"{h}:{p}", attempt
    master, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if master and port and os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        return connect_store(master, int(port), timeout_s), f"torchrun agent {master}:{port}", attempt
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            from torch.distributed.distributed_c10d import _get_default_store
            return _get_default_store(), "process group store", attempt
    except ImportError:
        pass
    s = host_store("127.0.0.1", 0, timeout_s)
    return s, f"private 127.0.0.1:{s.port}", attempt


def serve(host: str, port: int) -> None:
    """Hosts a store until interrupted (``python -m mx8.leases serve``)."""
    import signal
    import time
    s = host_store(host, port)
    print(f"mx8 lease store on {host}:{s.port} (MX8_LEASE_STORE={host}:{s.port})", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
