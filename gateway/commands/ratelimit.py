"""Token buckets for the command rate limits (per key, per device), on an injectable clock."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


class TokenBucket:
    """``rate_per_minute`` tokens a minute, at most that many saved up (burst = rate)."""

    __slots__ = ("_clock", "_last", "_tokens", "rate_per_minute")

    def __init__(self, rate_per_minute: int, clock: Callable[[], float]) -> None:
        self.rate_per_minute = rate_per_minute
        self._clock = clock
        self._tokens = float(rate_per_minute)
        self._last = clock()

    def available(self) -> float:
        """The tokens in the bucket now (refilled for the time since the last look)."""
        now = self._clock()
        elapsed = max(0.0, now - self._last)  # a clock stepping back refills nothing
        self._last = now
        self._tokens = min(float(self.rate_per_minute),
                           self._tokens + elapsed * self.rate_per_minute / 60.0)
        return self._tokens

    def take(self) -> None:
        """Spend one token (the caller checked ``available() >= 1``)."""
        self._tokens -= 1.0


class RateLimits:
    """One bucket per name (a key, a device), created full on first use."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[Hashable, TokenBucket] = {}

    def bucket(self, name: Hashable, rate_per_minute: int) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rate_per_minute != rate_per_minute:
            bucket = self._buckets[name] = TokenBucket(rate_per_minute, self._clock)
        return bucket

    def take_all(self, wanted: Iterable[tuple[Hashable, int]]) -> Hashable | None:
        """Take one token from each (name, rate) bucket, all or none: None when done, else
        the first name whose bucket is empty."""
        buckets = [(name, self.bucket(name, rate)) for name, rate in wanted]
        for name, bucket in buckets:
            if bucket.available() < 1.0:
                return name
        for _, bucket in buckets:
            bucket.take()
        return None
