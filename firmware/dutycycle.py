"""EU868 transmit-time accounting: the ETSI sub-band duty cycles, the network's aggregated limit
(DutyCycleReq, LoRaWAN 1.0.4 §5.3) and the Join-request back-off (§7).

Time is the node's uptime in ms (a plain increasing integer kept across deep sleep by app.py), so
the reopening times need no tick wrap-around handling and can be stored as they are.

* Sub-band: after T ms of transmission on a sub-band with duty cycle 1/d it stays closed for
  T * (d - 1) ms (EN 300 220, ERC 70-03; bands in protocol.region_eu868.SUB_BANDS).
* Aggregated: with MaxDutyCycle n > 0 every channel stays closed T * (2**n - 1) ms after a frame.
* Join: Join-requests respect 1 % in the first hour after reset, 0.1 % for the next 10 hours and
  0.01 % after that (36 s per hour, 36 s per 10 h, 8.7 s per 24 h): T * (d - 1) after each one.
"""

import struct

from protocol import region_eu868 as region

_BANDS = region.SUB_BANDS
_N = len(_BANDS)
_FMT = "<8Q"  # reopen time of each sub-band (6), aggregated, join
_HOUR_MS = 3600000
JOIN_DENOMINATORS = ((_HOUR_MS, 100), (11 * _HOUR_MS, 1000), (None, 10000))


def band_index(freq_hz):
    """Index of the sub-band holding freq_hz in region.SUB_BANDS; ValueError outside them."""
    for i in range(_N):
        b = _BANDS[i]
        if b[0] <= freq_hz <= b[1]:
            return i
    raise ValueError("%d Hz is outside every EU868 sub-band: transmitting there is not allowed"
                     % freq_hz)


def join_denominator(since_reset_ms):
    """1/duty cycle that Join-requests must respect this long after power-up or reset."""
    for limit, den in JOIN_DENOMINATORS:
        if limit is None or since_reset_ms < limit:
            return den
    return JOIN_DENOMINATORS[-1][1]


class DutyCycle:
    """When each channel may transmit again; ``sent()`` after every transmission."""

    def __init__(self, max_dcycle=0):
        self.reopen = [0] * (_N + 2)  # uptime ms: sub-bands, then aggregated, then join
        self.max_dcycle = max_dcycle

    def wait_ms(self, freq_hz, now, join=False):
        """ms until a frame may go out on freq_hz (0: now)."""
        r = self.reopen
        t = max(r[band_index(freq_hz)], r[_N])
        if join:
            t = max(t, r[_N + 1])
        return max(0, t - now)

    def pick(self, channels, now, rand, join=False):
        """(freq, 0) for a random channel free now, else (None, ms until the first one is)."""
        free = []
        wait = None
        for f in channels:
            w = self.wait_ms(f, now, join)
            if w == 0:
                free.append(f)
            elif wait is None or w < wait:
                wait = w
        if free:
            return free[rand % len(free)], 0
        return None, wait

    def sent(self, freq_hz, airtime_us, now, join_since_reset_ms=None):
        """Account one transmission of airtime_us that ended at uptime ``now``."""
        i = band_index(freq_hz)
        air_ms = (airtime_us + 999) // 1000
        self.reopen[i] = now + air_ms * (_BANDS[i][2] - 1)
        if self.max_dcycle:
            self.reopen[_N] = now + air_ms * ((1 << self.max_dcycle) - 1)
        if join_since_reset_ms is not None:
            den = join_denominator(join_since_reset_ms)
            self.reopen[_N + 1] = now + air_ms * (den - 1)

    def to_bytes(self):
        return struct.pack(_FMT, *self.reopen)

    def load(self, data):
        """Restore reopening times saved by to_bytes (ignored if malformed)."""
        if len(data) == struct.calcsize(_FMT):
            self.reopen = list(struct.unpack(_FMT, data))


BYTES = struct.calcsize(_FMT)
