"""Reading mx8's settings from the environment, with errors that name the variable."""
from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def env_int(name: str, default: T) -> "int | T":
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def env_bool(name: str, default: bool) -> bool:
    """true/false/1/0 (and yes/no/on/off), case-insensitive."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={value!r}: expected true/false/1/0")


def env_positive(name: str, default: float) -> float:
    """A number above zero, e.g. seconds or MiB."""
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected a number") from None
    if not v > 0:
        raise ValueError(f"environment variable {name}={value!r}: must be positive")
    return v


__all__ = ["env_int", "env_bool", "env_positive"]
