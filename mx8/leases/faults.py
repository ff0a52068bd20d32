"""Fault injection for the lease fault suite (tests/test_leases_faults.py): a test process
sets ``MX8_LEASE_FAULT=<point>[:<action>][@<n>]`` and the worker, the n-th time (default 1)
it passes that point of the ack path, sends itself SIGKILL (``kill``, the default) or SIGSTOP
(``stop``). Unset, :func:`fault_point` is one dictionary lookup.

Points: ``deliver:after_store``, ``ack:before_log``, ``ack:after_log``, ``ack:after_store``,
``init:before_table``, ``log:mid_write`` (half a record written, then the fault).
"""
from __future__ import annotations

import os
import signal
from typing import Optional, Tuple

_ACTIONS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP}


def _parse(spec: str) -> Optional[Tuple[str, int, int]]:
    if not spec:
        return None
    spec, _, nth = spec.partition("@")
    point, _, action = spec.rpartition(":") if spec.count(":") > 1 else (spec, "", "")
    if action not in _ACTIONS:
        point, action = spec, "kill"
    return point, _ACTIONS[action], int(nth or 1)


_SPEC = _parse(os.environ.get("MX8_LEASE_FAULT", ""))
_passed = 0


def fault_due(point: str) -> bool:
    """Counts a pass of the point; True on the pass the fault is set for."""
    global _passed
    if _SPEC is None or _SPEC[0] != point:
        return False
    _passed += 1
    return _passed == _SPEC[2]


def fire() -> None:
    os.kill(os.getpid(), _SPEC[1] if _SPEC is not None else signal.SIGKILL)


def fault_point(point: str) -> None:
    if fault_due(point):
        fire()
