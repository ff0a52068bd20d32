"""A dependency-free progress bar for long work (pack, indexing), drawn on stderr.

It draws only when stderr is a terminal (or when forced), at most ~10 times a second, so
logs of batch jobs stay clean.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    def __init__(self, total: int, desc: str, *, unit: str = "files", enabled: Optional[bool] = None,
                 stream: Optional[TextIO] = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.n = 0
        self.bytes = 0
        self._start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        self.n += n
        self.bytes += nbytes
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        frac = self.n / self.total if self.total else 1.0
        width = 28
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        rate = self.n / elapsed
        mb = self.bytes / 1e6
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {self.unit} "
                          f"{mb:.1f} MB {rate:.0f}/s eta {eta:.0f}s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
