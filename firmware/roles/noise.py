"""Noise role: A-weighted sound level statistics from a PCB Artists I2C decibel meter module.

One cycle (``read``): set the module to A-weighting and ``tavg_ms`` averaging, clear it, then
for ``window_s`` seconds read its DECIBEL register once per averaging period and count each
level in a fixed histogram (firmware/noise_stats.py: bounded RAM, no allocation per sample).
The uplink carries LAeq (energetic mean), LAmax, LAmin, LA10, LA90 of those samples and the
window length in seconds. Only levels are read from the module: no audio exists on the node.

A module that is missing, stuck or never produces a level is reported as the "sound" fault and
the levels are left out; ``read`` never raises because of the sensor.

Settings (all optional): dbm_address (0x48), window_s (60), tavg_ms (1000), min_coverage (50:
the share of the window, %, that must have produced a level, else the "sound" fault),
laeq_alarm (dB(A): the reading goes as a confirmed uplink when LAeq reaches it).
"""

import time

from drivers import pcba_dbm
from firmware.noise_stats import LevelStats

_WDT_SLICE_MS = 5000


class NoiseRole:
    """The noise node's sound level module behind the role interface (docs/architecture.md)."""

    name = "noise"
    device_class = "A"

    def __init__(self, hw, settings):
        self.hw = hw
        self.meter = pcba_dbm.DecibelMeter(hw.i2c, settings.get("dbm_address", pcba_dbm.ADDRESS))
        self.window_s = max(1, int(settings.get("window_s", 60)))
        self.tavg_ms = int(settings.get("tavg_ms", 1000))
        self.min_coverage = int(settings.get("min_coverage", 50))
        self.laeq_alarm = settings.get("laeq_alarm")
        self.stats = LevelStats()  # 20.0..130.0 dB, the payload's range
        self.faults = ()
        self._alarm = False

    def boot(self, reset_cause):
        """Nothing to restore: the module is configured at each read."""

    def read(self):
        """One reading set for protocol.payload.encode_uplink("noise", ...)."""
        readings = {}
        stats = self.stats
        ok = self._measure()
        wanted = self.window_s * 1000 // self.tavg_ms
        if ok and stats.count and stats.count * 100 >= wanted * self.min_coverage:
            readings["laeq"] = stats.leq_tenths() / 10
            readings["lamax"] = stats.max_tenths() / 10
            readings["lamin"] = stats.min_tenths() / 10
            readings["la10"] = stats.exceeded_tenths(10) / 10
            readings["la90"] = stats.exceeded_tenths(90) / 10
            readings["interval"] = max(1, stats.count * self.tavg_ms // 1000)
            self.faults = ()
        else:
            self.faults = ("sound",)
        mv = self.hw.battery_mv()
        if mv:
            readings["battery"] = mv
        laeq = readings.get("laeq")
        self._alarm = self.laeq_alarm is not None and laeq is not None and laeq >= self.laeq_alarm
        return readings

    def alarm(self):
        """True when LAeq reached the configured alarm level in the last reading."""
        return self._alarm

    def command(self, cmd):
        """The noise node takes no role commands (interval and reboot belong to the app)."""
        return "not_supported"

    def poll(self):
        """Nothing runs between cycles."""
        return

    def _measure(self):
        """Sample the module over the window into ``self.stats``; False when the module failed."""
        meter = self.meter
        stats = self.stats
        stats.clear()
        try:
            meter.configure(pcba_dbm.A_WEIGHTING, self.tavg_ms)
            meter.clear()
            period = self.tavg_ms
            n = self.window_s * 1000 // period
            # Read each level just after the module produced it: half a period into the next.
            due = time.ticks_add(time.ticks_ms(), period + period // 2)
            for _ in range(n):
                self._sleep_until(due)
                db = meter.decibel()
                if db:  # 0: the module has no level yet (after power-up or a clear)
                    stats.add(db * 10)
                due = time.ticks_add(due, period)
        except pcba_dbm.SensorError:
            return False
        return True

    def _sleep_until(self, due):
        """Sleep to ticks_ms ``due``: the app's ``hw.nap`` (light sleep) or awake, watchdog fed."""
        wdt = getattr(self.hw, "wdt", None)
        nap = getattr(self.hw, "nap", time.sleep_ms)
        while True:
            left = time.ticks_diff(due, time.ticks_ms())
            if left <= 0:
                return
            nap(min(_WDT_SLICE_MS, left))
            if wdt is not None:
                wdt.feed()
