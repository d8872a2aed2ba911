"""Air-quality role: particulate matter from a Sensirion SPS30, temperature and humidity from a
Sensirion SHT4x, battery voltage from the board.

One cycle (``read``): wake the SPS30 if it sleeps, start its fan (Measurement-Mode), read the
SHT4x meanwhile, let the particle readings stabilise for the datasheet warm-up (30 s for clean
air by default), average ``pm_samples`` fresh one-second readings, check the device status for a
blocked fan or a failed laser, then stop the fan and put the chip to sleep until the next cycle:
the fan and laser draw ~60 mA, so they run only while we measure. Because the chip's own weekly
auto cleaning counts only continuous running, the role cleans the fan itself every
``fan_clean_s`` (default a week), remembered across deep sleep in ``air.json``.

A sensor that fails is reported by name in ``faults`` ("particulate", "temp_humidity") and its
readings are left out; ``read`` never raises because of a sensor.

Settings (config.json "settings"; all optional): sht4x_address (0x44), sps30_address (0x69),
pm_warmup_s (30), pm_samples (3), fan_clean_s (604800; 0 = never), pm2_5_alarm (ug/m3: the
reading goes as a confirmed uplink when PM2.5 reaches it), state_file ("air.json").
"""

import time

from drivers import sps30 as sps30_mod
from drivers.sht4x import SensorError as SHTError
from drivers.sht4x import SHT4x
from drivers.sps30 import SPS30

_READY_POLL_MS = 100
_READY_TIMEOUT_MS = 3000  # one reading a second: three seconds without one is a fault
_PM_KEYS = ("pm1_0", "pm2_5", "pm4_0", "pm10")
_WDT_SLICE_MS = 5000  # long waits are cut into slices that feed the watchdog


def _load(path):
    try:
        import json

        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _save(path, data):
    import json
    import os

    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.rename(tmp, path)
    except OSError:
        pass  # a full or read-only flash costs one extra fan cleaning, not the reading


class AirRole:
    """The air-quality node's sensors behind the role interface (docs/architecture.md)."""

    name = "air"
    device_class = "A"

    def __init__(self, hw, settings):
        self.hw = hw
        self.sht = SHT4x(hw.i2c, settings.get("sht4x_address", 0x44))
        self.pm = SPS30(hw.i2c, settings.get("sps30_address", sps30_mod.ADDRESS))
        self.warmup_ms = int(settings.get("pm_warmup_s", sps30_mod.WARM_UP_MS // 1000) * 1000)
        self.samples = max(1, int(settings.get("pm_samples", 3)))
        self.fan_clean_s = int(settings.get("fan_clean_s", 604800))
        self.pm2_5_alarm = settings.get("pm2_5_alarm")
        self.state_file = settings.get("state_file", "air.json")
        self.faults = ()
        self.status = 0  # the SPS30 device status register of the last cycle
        self._alarm = False
        self._started = 0

    def boot(self, reset_cause):
        """Nothing to restore: the SPS30 is put into a known mode at each read."""

    def read(self):
        """One reading set for protocol.payload.encode_uplink("air", ...)."""
        readings = {}
        faults = []
        started = self._start_pm()
        if not started:
            faults.append("particulate")
        try:
            t, rh = self.sht.measure()
            readings["temperature"] = t / 100
            readings["humidity"] = rh / 100
        except (SHTError, OSError):
            faults.append("temp_humidity")
        if started and not self._read_pm(readings):
            faults.append("particulate")
        mv = self.hw.battery_mv()
        if mv:
            readings["battery"] = mv
        self.faults = tuple(faults)
        pm25 = readings.get("pm2_5")
        self._alarm = (self.pm2_5_alarm is not None and pm25 is not None
                       and pm25 >= self.pm2_5_alarm)
        return readings

    def alarm(self):
        """True when PM2.5 reached the configured alarm level in the last reading."""
        return self._alarm

    def command(self, cmd):
        """The air node takes no role commands (interval and reboot belong to the app)."""
        return "not_supported"

    def poll(self):
        """Nothing runs between cycles."""
        return

    # -- SPS30 ------------------------------------------------------------------------------------
    def _start_pm(self):
        """Fan on; True when the SPS30 is measuring. Wakes a chip we left asleep and resets one
        still measuring (a watchdog reset mid-cycle) before giving up."""
        pm = self.pm
        try:
            pm.wake_up()  # NACKed by a chip that is not asleep: nothing happens then
        except sps30_mod.SensorError:
            pass
        try:
            pm.start_measurement()
        except sps30_mod.SensorError:
            try:
                pm.reset()
                pm.start_measurement()
            except sps30_mod.SensorError:
                return False
        self._started = time.ticks_ms()  # the warm-up counts from here
        return True

    def _read_pm(self, readings):
        pm = self.pm
        ok = False
        try:
            start = self._started
            if self._cleaning_due():
                pm.start_fan_cleaning()
                self._sleep(sps30_mod.FAN_CLEANING_MS)
                self._cleaned()
                start = time.ticks_ms()  # the chamber settles again after the full-speed blow
            left = self.warmup_ms - time.ticks_diff(time.ticks_ms(), start)
            self._sleep(left)
            if pm.data_ready():
                pm.read_values()  # a reading from before the warm-up ended: drop it
            sums = [0.0, 0.0, 0.0, 0.0]
            for _ in range(self.samples):
                self._wait_ready()
                v = pm.read_values()
                for i in range(4):
                    sums[i] += v[i]
            self.status = pm.status()
            if self.status & (sps30_mod.STATUS_FAN | sps30_mod.STATUS_LASER):
                pm.clear_status()  # sticky bits: a repaired sensor shows clean next cycle
            else:
                for i in range(4):
                    readings[_PM_KEYS[i]] = round(sums[i] / self.samples, 1)
                ok = True
        except sps30_mod.SensorError:
            ok = False
        try:
            pm.stop_measurement()
            pm.sleep()
        except sps30_mod.SensorError:
            pass  # firmware < 2.0 has no sleep; a dead chip was reported already
        return ok

    def _wait_ready(self):
        waited = 0
        while not self.pm.data_ready():
            if waited >= _READY_TIMEOUT_MS:
                raise sps30_mod.SensorError("SPS30: no new reading within %d ms"
                                            % _READY_TIMEOUT_MS)
            self._sleep(_READY_POLL_MS)
            waited += _READY_POLL_MS

    def _cleaning_due(self):
        if self.fan_clean_s <= 0:
            return False
        last = _load(self.state_file).get("fan_cleaned")
        if last is None:  # a new sensor: clean a week from now
            self._cleaned()
            return False
        return time.time() - last >= self.fan_clean_s

    def _sleep(self, ms):
        """Sleep ``ms``: through the app's ``hw.nap`` (light sleep, watchdog fed) when it has one,
        else awake, feeding the board's watchdog (``hw.wdt``, when there is one) meanwhile."""
        nap = getattr(self.hw, "nap", None)
        if nap is not None:
            nap(ms)
            return
        wdt = getattr(self.hw, "wdt", None)
        while ms > 0:
            step = min(_WDT_SLICE_MS, ms)
            time.sleep_ms(step)
            ms -= step
            if wdt is not None:
                wdt.feed()

    def _cleaned(self):
        state = _load(self.state_file)
        state["fan_cleaned"] = time.time()
        _save(self.state_file, state)
