"""Sound level statistics over a measurement interval, in bounded RAM: Leq, Lmax, Lmin, LN.

Levels go in as integers in tenths of a dB (``add(623)`` is 62.3 dB) and land in a fixed
histogram of 0.1 dB bins (``array('H')``, 2 bytes a bin: 1101 bins for 20.0..130.0 dB are
2.2 KB, whatever the number of samples), so adding a sample never allocates. The statistics
(ISO 1996-1 definitions, on the samples' own time weighting) come from the histogram:

* Leq, the energetic mean: 10 log10(mean(10^(L/10))), computed relative to Lmax so that the
  sum never overflows a single-precision float;
* Lmax and Lmin: the highest and lowest sample;
* LN: the level exceeded by N % of the samples (L10 for the loud events, L90 for the background):
  with the samples sorted loudest first, the one at rank ceil(N/100 * count) (nearest rank).

Levels outside the histogram's range are counted in its first or last bin (and ``clipped``
counts them): the payload codec saturates there too. Results are in tenths of a dB (int), except
``leq_tenths`` which rounds the float it computes.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import math
from array import array

_COUNT_MAX = const(65535)  # a bin's counter saturates (18 h of 1 s samples in one 0.1 dB bin)


class LevelStats:
    """A histogram of levels in 0.1 dB bins from ``lo_tenths`` to ``hi_tenths`` (inclusive)."""

    def __init__(self, lo_tenths=200, hi_tenths=1300):
        if not 0 <= lo_tenths < hi_tenths:
            raise ValueError("level range must be 0 <= lo < hi tenths of dB, got %r..%r"
                             % (lo_tenths, hi_tenths))
        self.lo = lo_tenths
        self.hi = hi_tenths
        self._bins = array("H", bytes(2 * (hi_tenths - lo_tenths + 1)))
        self.count = 0
        self.clipped = 0

    def clear(self):
        """Forget every sample (start of an interval); no allocation."""
        b = self._bins
        for i in range(len(b)):
            b[i] = 0
        self.count = 0
        self.clipped = 0

    def add(self, tenths):
        """Count one sample of ``tenths`` 0.1 dB."""
        i = tenths - self.lo
        if i < 0:
            i = 0
            self.clipped += 1
        elif tenths > self.hi:
            i = self.hi - self.lo
            self.clipped += 1
        if self._bins[i] < _COUNT_MAX:
            self._bins[i] += 1
            self.count += 1

    def max_tenths(self):
        """Lmax in 0.1 dB; None without samples."""
        b = self._bins
        for i in range(len(b) - 1, -1, -1):
            if b[i]:
                return self.lo + i
        return None

    def min_tenths(self):
        """Lmin in 0.1 dB; None without samples."""
        b = self._bins
        for i in range(len(b)):
            if b[i]:
                return self.lo + i
        return None

    def exceeded_tenths(self, percent):
        """LN: the level exceeded by ``percent`` % of the samples (nearest rank); None if empty."""
        if not 0 < percent < 100:
            raise ValueError("LN needs 0 < N < 100, got %r" % (percent,))
        if not self.count:
            return None
        # rank = ceil(percent * count / 100), in integers
        rank = (percent * self.count + 99) // 100
        seen = 0
        b = self._bins
        for i in range(len(b) - 1, -1, -1):
            seen += b[i]
            if seen >= rank:
                return self.lo + i
        return self.lo

    def leq(self):
        """Leq in dB (float), the energetic mean of the samples; None without samples."""
        top = self.max_tenths()
        if top is None:
            return None
        b = self._bins
        total = 0.0
        for i in range(len(b)):
            if b[i]:
                total += b[i] * math.pow(10.0, (self.lo + i - top) / 100.0)
        return top / 10.0 + 10.0 * math.log10(total / self.count)

    def leq_tenths(self):
        """Leq rounded to 0.1 dB, as an int; None without samples."""
        v = self.leq()
        if v is None:
            return None
        return int(v * 10.0 + 0.5)
