"""Soil moisture + watering role: a seesaw soil probe, a latching valve, an optional flow meter.

Readings (protocol/payload/fields.py UPLINKS["soil"], FPort 12): soil_moisture (% from the probe's
raw count and the node's dry/wet calibration), soil_temperature (degC), valve ("closed", "open",
"fault"), water_volume (litres since the previous read, with a flow meter), battery (mV).

Commands: ``valve_open`` {seconds: 1..max_open_s} and ``valve_close``. Anything above
``max_open_s`` is answered "out_of_range" and nothing moves.

The hard maximum open time, enforced by the node alone (no gateway, no radio needed):

* opening persists {"state": "open", "deadline": epoch s} to ``soil_valve.json`` (written to a
  temporary name, then renamed) BEFORE the opening pulse; closing pulses first and persists
  {"state": "closed"} after, so a power cut at any point leaves either the truth or "open";
* while the board runs, ``poll()`` (and ``read()``/``command()``) close the valve when the
  deadline comes, timed by ``ticks_ms``, with the epoch clock as a backup; ``poll()`` returns the
  ms left, and the application must never sleep (deep or light) longer than that answer; a
  battery node deep-sleeps until it when ``may_deep_sleep()`` allows (no flow meter to count),
  and the boot at the deadline closes the valve;
* ``boot(reset_cause)`` closes the valve when the file says open and the deadline has passed, when
  the clock cannot be trusted (a power-on or brown-out reset loses the RTC, an unknown cause, or a
  deadline further away than max_open_s), or when the file is missing or unreadable (state
  unknown). After a deep-sleep, soft or watchdog reset with a valid future deadline the valve stays
  open and ``poll()`` closes it at that deadline.

Settings (the role's dict of config.json, all optional):

    pins: {"valve_open": 32, "valve_close": 33, "valve_enable": None, "flow": None,
           "sensor_power": None}   (a GPIO or load switch feeding the probe only while it is read)
    seesaw_address 0x36, moisture_dry 200, moisture_wet 2000 (raw counts at 0 % and 100 %),
    max_open_s 1800 (1..65535), valve_pulse_ms 50, litres_per_pulse 1/450 (a YF-S201),
    leak_litres 0.5 (flow while closed above this per read: valve fault), flow_check_s 60
    (open this long without one pulse: flow fault), state_file "soil_valve.json".

Faults (protocol.payload FAULTS): "soil" (probe missing, bad read or implausible temperature),
"valve" (the H-bridge inputs misbehaved or a closing pulse failed, or water flows while closed),
"flow" (open for flow_check_s and the meter saw nothing). ``alarm()`` is True on a valve fault.

Energy: a read keeps the probe busy about 11 ms (HW_ID once per boot, touch 5 ms, temperature
5 ms; plus the probe's start-up when its supply is switched); a valve pulse is ``valve_pulse_ms``
(50 ms) of coil current. The flow meter is counted by a pin IRQ, i.e. only while the board is
awake or in light sleep: pulses during a deep sleep are not seen.
"""

import json
import os
import time

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers import ticks
from drivers.seesaw import Seesaw, SensorError, moisture_permille
from drivers.valve import FlowMeter, LatchingValve, ValveError

# Defaults for the ESP32 boards (Heltec V2, TTGO LoRa32): GPIO 32/33 are free on both (25 is the LED,
# 26 the SX1276's DIO0). Other boards (rp2: GPIO 0..29) must set settings["pins"].
PINS = {"valve_open": 32, "valve_close": 33, "valve_enable": None, "flow": None,
        "sensor_power": None}
STATE_FILE = "soil_valve.json"
MAX_OPEN_S = 1800

_RETRY_CLOSE_MS = const(60000)  # a closing pulse that failed is retried this often
_WARM = ("deep_sleep", "soft", "watchdog")  # resets that keep the RTC running (ESP32)
_T_MIN = const(-4000)  # payload soil_temperature range, 0.01 degC
_T_MAX = const(8500)
_VOLUME_MAX = 6553.5


def _int_setting(settings, key, default, lo, hi):
    v = settings.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError("soil settings: %s = %r: expected an integer %d..%d" % (key, v, lo, hi))
    return v


def _num_setting(settings, key, default, lo, hi):
    v = settings.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ValueError("soil settings: %s = %r: expected a number %s..%s" % (key, v, lo, hi))
    return v


def _epoch_ms():
    if hasattr(time, "time_ns"):
        return time.time_ns() // 1000000
    return time.time() * 1000


class SoilRole:
    """The soil node's chips behind the role interface of docs/architecture.md "Node roles"."""

    name = "soil"
    device_class = "A"

    def __init__(self, hw, settings):
        s = settings or {}
        self.hw = hw
        self.max_open_s = _int_setting(s, "max_open_s", MAX_OPEN_S, 1, 65535)
        self._dry = _int_setting(s, "moisture_dry", 200, 0, 4095)
        self._wet = _int_setting(s, "moisture_wet", 2000, 1, 4095)
        if self._wet <= self._dry:
            raise ValueError("soil settings: moisture_wet (%d) must be above moisture_dry (%d)"
                             % (self._wet, self._dry))
        self._leak_l = _num_setting(s, "leak_litres", 0.5, 0, 1000)
        self._flow_check_ms = _int_setting(s, "flow_check_s", 60, 1, 86400) * 1000
        self._path = s.get("state_file", STATE_FILE)
        pins = dict(PINS)
        pins.update(s.get("pins") or {})
        used = [pins[k] for k in PINS if pins.get(k) is not None]
        for i, pin in enumerate(used):
            if pin in used[i + 1:]:
                raise ValueError("soil settings: pins = %r: GPIO %r is used twice" % (pins, pin))
        Pin = hw.machine.Pin
        enable = pins.get("valve_enable")
        self._valve = LatchingValve(
            Pin(pins["valve_open"], Pin.OUT, value=0),
            Pin(pins["valve_close"], Pin.OUT, value=0),
            _int_setting(s, "valve_pulse_ms", 50, 5, 1000),
            Pin(enable, Pin.OUT, value=0) if enable is not None else None,
        )
        self._meter = None
        if pins.get("flow") is not None:
            self._meter = FlowMeter(Pin(pins["flow"], Pin.IN, Pin.PULL_UP),
                                    _num_setting(s, "litres_per_pulse", 1 / 450, 1e-6, 100))
        self._seesaw = Seesaw(hw.i2c, s.get("seesaw_address", 0x36))
        power = pins.get("sensor_power")
        self._power = Pin(power, Pin.OUT, value=0) if power is not None else None
        self._probe_ok = False
        self._state = "unknown"  # "open", "closed", "unknown", or "stuck" (a close failed)
        self._deadline = None  # epoch s, while open
        self._until = 0  # ticks_ms of the deadline, while open
        self._opened = 0  # ticks_ms of the opening (or of the boot that found it open)
        self._flow_base = 0  # meter count at the opening / at the last leak check
        self._drive_fault = False
        self.faults = ()

    # -- role interface --------------------------------------------------------------------------
    def boot(self, reset_cause):
        """Once per boot, before anything else: close an expired or unknown valve, no radio needed."""
        state, deadline = self._load()
        if state == "closed":
            self._set_closed()
            return
        if state == "open" and self._warm(reset_cause):
            left = deadline * 1000 - _epoch_ms()
            if 0 < left <= self.max_open_s * 1000:
                now = ticks.ticks_ms()
                self._state = "open"
                self._deadline = deadline
                self._until = ticks.ticks_add(now, left)
                self._opened = now
                self._flow_base = self._meter.count if self._meter is not None else 0
                return
        self._close()

    def read(self):
        """One reading set for protocol.payload.encode_uplink("soil", ...); sets ``faults``."""
        self._check()
        faults = []
        readings = {}
        power = self._power
        try:
            if power is not None:  # the probe's supply is on only for this read
                power.value(1)
                self._seesaw.wait_ready()
                self._probe_ok = False
            if not self._probe_ok:
                self._seesaw.begin()
                self._probe_ok = True
            raw = self._seesaw.touch()
            readings["soil_moisture"] = moisture_permille(raw, self._dry, self._wet) / 10
            t = self._seesaw.temperature_centi()
            if _T_MIN <= t <= _T_MAX:
                readings["soil_temperature"] = t / 100
            else:
                faults.append("soil")
        except (SensorError, OSError):
            self._probe_ok = False
            faults.append("soil")
        finally:
            if power is not None:
                power.value(0)
        valve_fault = self._drive_fault or self._state == "stuck"
        meter = self._meter
        if meter is not None:
            litres = meter.litres(meter.take())
            readings["water_volume"] = min(litres, _VOLUME_MAX)
            count = meter.count
            if self._state == "open":
                if (count == self._flow_base
                        and ticks.ticks_diff(ticks.ticks_ms(), self._opened) >= self._flow_check_ms):
                    faults.append("flow")
            else:
                if meter.litres(count - self._flow_base) > self._leak_l:
                    valve_fault = True  # water through a closed valve: it does not seal
                self._flow_base = count
        if valve_fault:
            faults.append("valve")
            readings["valve"] = "fault"
        else:
            readings["valve"] = "open" if self._state == "open" else "closed"
        mv = self.hw.battery_mv()
        if mv and mv <= 8191:
            readings["battery"] = mv
        self.faults = tuple(faults)
        return readings

    def alarm(self):
        """True when the last reading showed a valve fault (sent as a confirmed uplink)."""
        return "valve" in self.faults

    def command(self, cmd):
        """valve_open {seconds} / valve_close -> a RESULTS name; never raises."""
        try:
            name = cmd.get("cmd") if isinstance(cmd, dict) else None
            if name == "valve_open":
                seconds = cmd.get("seconds")
                if (isinstance(seconds, bool) or not isinstance(seconds, int)
                        or not 1 <= seconds <= self.max_open_s):
                    return "out_of_range"
                self._check()
                if self._state == "stuck":
                    return "failed"  # the valve did not close: never open it further
                return self._open(seconds)
            if name == "valve_close":
                self._check()
                return "done" if self._close() else "failed"
            return "not_supported"
        except Exception:  # noqa: BLE001 - a command never crashes the node
            return "failed"

    def poll(self):
        """Close the valve at its deadline; -> ms until the next call is needed, or None."""
        self._check()
        if self._state == "open":
            return max(0, ticks.ticks_diff(self._until, ticks.ticks_ms()))
        if self._state == "stuck":
            return _RETRY_CLOSE_MS
        return None

    def may_deep_sleep(self):
        """May the board deep-sleep until poll()'s deadline? boot() closes an expired valve.

        Not while a flow meter watches the open valve (its pulses are counted by IRQ, awake or
        in light sleep only), nor while a failed close is retried every minute.
        """
        return self._state == "closed" or (self._state == "open" and self._meter is None)

    # -- valve -----------------------------------------------------------------------------------
    @property
    def valve_state(self):
        """'open', 'closed', 'unknown' (before boot) or 'stuck' (a closing pulse failed)."""
        return self._state

    def _warm(self, cause):
        """Did the RTC keep running through this reset (so the stored deadline is comparable)?"""
        if isinstance(cause, str):
            return cause in _WARM
        m = self.hw.machine
        for attr in ("DEEPSLEEP_RESET", "SOFT_RESET", "WDT_RESET"):
            if cause is not None and cause == getattr(m, attr, None):
                return True
        return False

    def _check(self):
        if self._state == "unknown":
            self.boot(None)  # the app skipped boot(): be safe, as after an unknown reset
        elif self._state == "open":
            if (ticks.ticks_diff(self._until, ticks.ticks_ms()) <= 0
                    or time.time() > self._deadline):
                self._close()
        elif self._state == "stuck":
            self._close()

    def _open(self, seconds):
        deadline = int(time.time()) + seconds
        try:
            self._save('{"state": "open", "deadline": %d}' % deadline)  # before any pulse
        except OSError:
            return "failed"  # cannot promise to close it after a reboot: do not open
        now = ticks.ticks_ms()
        self._state = "open"
        self._deadline = deadline
        self._until = ticks.ticks_add(now, seconds * 1000)
        self._opened = now
        self._flow_base = self._meter.count if self._meter is not None else 0
        try:
            self._valve.open()
        except (ValveError, OSError):
            self._drive_fault = True
            self._close()
            return "failed"
        self._drive_fault = False
        return "done"

    def _close(self):
        try:
            self._valve.close()
        except (ValveError, OSError):
            self._drive_fault = True
            self._state = "stuck"  # the file still says open (or unknown): boot closes again
            return False
        self._drive_fault = False
        try:
            self._save('{"state": "closed"}')
        except OSError:
            pass  # the file says open: the next boot pulses closed once more, harmless
        self._set_closed()
        return True

    def _set_closed(self):
        self._state = "closed"
        self._deadline = None
        self._flow_base = self._meter.count if self._meter is not None else 0

    # -- persistence: one small JSON file, written to a temporary name and renamed ---------------
    def _save(self, text):
        tmp = self._path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.rename(tmp, self._path)
        except OSError:  # a filesystem whose rename does not replace (FAT)
            os.remove(self._path)
            os.rename(tmp, self._path)

    def _load(self):
        """("open", deadline) or ("closed", None) from the file; ("unknown", None) otherwise."""
        for path in (self._path, self._path + ".tmp"):
            try:
                with open(path) as f:
                    doc = json.loads(f.read())
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict):
                break
            state = doc.get("state")
            deadline = doc.get("deadline")
            if state == "closed":
                return "closed", None
            if state == "open" and isinstance(deadline, int) and not isinstance(deadline, bool):
                return "open", deadline
            break
        return "unknown", None
