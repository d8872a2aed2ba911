"""The gateway's own EU868 duty-cycle budget: transmit time per ETSI sub-band over a sliding hour.

ETSI EN 300 220-2 (and RP002 for EU863-870) limit each sub-band's duty cycle: h1.5 ("g1",
868.0-868.6 MHz) 1 %, h1.6 ("g2", 868.7-869.2) 0.1 %, h1.7 ("g3", 869.4-869.65, the RX2 channel)
10 %, ... (``protocol.region_eu868.SUB_BANDS``). The duty cycle is the share of transmit time
over an observation period of one hour, so a sub-band may carry at most ``3600 s / denominator``
of airtime in any hour. A gateway answers every node on the same few frequencies, so it is the
first transmitter to hit this limit: the scheduler asks ``allows`` before every downlink and
``spend``s after it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocol import region_eu868 as region

OBSERVATION_S = 3600.0  # ETSI observation period for the duty cycle


@dataclass(frozen=True, slots=True)
class BandUsage:
    """One sub-band's airtime in the current hour, for the status page."""

    name: str
    used_s: float
    limit_s: float


class DutyCycleBudget:
    """Airtime spent per sub-band in the last hour; ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 period_s: float = OBSERVATION_S) -> None:
        self.clock = clock
        self.period_s = period_s
        self._spent: dict[str, deque[tuple[float, float]]] = {}  # band -> (start, airtime s)

    @staticmethod
    def band_name(freq_hz: int) -> str | None:
        """The sub-band of a frequency, or None outside every band (never transmit there)."""
        band = region.sub_band(freq_hz)
        return None if band is None else band[4]

    def limit_s(self, freq_hz: int) -> float:
        """Airtime allowed per observation period on the sub-band of ``freq_hz`` (0 outside)."""
        band = region.sub_band(freq_hz)
        return 0.0 if band is None else self.period_s / band[2]

    def used_s(self, freq_hz: int, at: float | None = None) -> float:
        """Airtime spent on the sub-band of ``freq_hz`` in the period ending at ``at``."""
        name = self.band_name(freq_hz)
        if name is None:
            return 0.0
        return self._used(name, self.clock() if at is None else at)

    def _used(self, name: str, now: float) -> float:
        spent = self._spent.get(name)
        if not spent:
            return 0.0
        while spent and spent[0][0] <= now - self.period_s:
            spent.popleft()
        return sum(a for _, a in spent)

    def allows(self, freq_hz: int, airtime_s: float, at: float | None = None) -> bool:
        """Would ``airtime_s`` more on this sub-band stay within its duty cycle?"""
        if self.band_name(freq_hz) is None:
            return False
        return self.used_s(freq_hz, at) + airtime_s <= self.limit_s(freq_hz) + 1e-9

    def wait_s(self, freq_hz: int, airtime_s: float, at: float | None = None) -> float | None:
        """Seconds until ``airtime_s`` fits on this sub-band (0 now); None if it never can."""
        name = self.band_name(freq_hz)
        limit = self.limit_s(freq_hz)
        if name is None or airtime_s > limit:
            return None
        now = self.clock() if at is None else at
        used = self.used_s(freq_hz, now)
        if used + airtime_s <= limit + 1e-9:
            return 0.0
        for start, spent in self._spent[name]:  # oldest first: free until it fits
            used -= spent
            if used + airtime_s <= limit + 1e-9:
                return max(0.0, start + self.period_s - now)
        return None  # unreachable: an empty band always fits

    def spend(self, freq_hz: int, airtime_s: float, at: float | None = None) -> None:
        """Record a transmission of ``airtime_s`` on the sub-band of ``freq_hz``."""
        name = self.band_name(freq_hz)
        if name is None:
            return
        self._spent.setdefault(name, deque()).append(
            (self.clock() if at is None else at, airtime_s))

    def usage(self) -> list[BandUsage]:
        """Airtime used and allowed on every sub-band the gateway has transmitted on."""
        now = self.clock()
        out = []
        for _low, _high, denom, _erp, name in region.SUB_BANDS:
            if name in self._spent:
                out.append(BandUsage(name, self._used(name, now), self.period_s / denom))
        return out
