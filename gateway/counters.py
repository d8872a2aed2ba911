"""Named event counters: every rejection and fault is counted, and the count can be read back."""

from __future__ import annotations

from collections import Counter


class Counters(Counter):
    """A ``collections.Counter`` with a stable, sorted text form for logs and the status page."""

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in sorted(self.items()))
