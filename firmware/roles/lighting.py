"""Lighting cabinet role: dimming, contactor, energy metering, lamp/relay/door alarms, presence,
the local calendar, operator overrides with expiry and the fallback when the centre goes quiet.

Outputs: a PWM pin drives the 1-10 V interface of the lamp drivers (duty 0..100 % = level; level
changes ramp linearly over the ramp time, ``poll()`` advancing the ramp) and a GPIO drives the
contactor (open at level 0). Inputs: the cabinet kWh meter's S0 pulse output (counted by a pin
IRQ, energy kept in J in a JSON file so it never goes backwards across reboots), the lamp circuit
current and voltage from a TI INA219 on the sensor I2C bus, the door contact and a presence
detector (PIR or radar), both on GPIO, and optionally the mains voltage on an ADC pin.

What sets the level, first match wins:

1. an operator override ("dim" or "switch" command) until its expiry;
2. presence: while the calendar has the lamps lit below ``presence_level``, a detection raises
   them to it for ``presence_s`` after the last detection (the Dijon behaviour);
3. the calendar (firmware.calendar); level_source "calendar", or "fallback" (with the alarm
   calendar_fallback) once no downlink has arrived for ``fallback_min``: the node keeps running
   its calendar on its own.

Without a valid clock (year before 2024) the calendar cannot know day from night: the lamps go to
``no_clock_level`` (lit, the safe side for a street) and the fault "clock" is reported.
A reboot ends an override: the cabinet comes back on its calendar.

Alarms (protocol.payload ALARMS), evaluated by ``read()`` once outputs have been stable for
``settle_s``: lamp_failure (relay closed, level > 0, current below ``lamp_fail_ma`` scaled by the
level), relay_failure (relay open but current above ``relay_fail_ma``: a welded contactor),
door_open (open now, or opened since the last reading), calendar_fallback. ``alarm()`` is True
when the last reading holds an alarm the previous one did not.

Time: ticks_ms for ramps and a monotonic seconds count built from it for expiries and the
fallback (ticks_ms wraps after days); ``time.time()`` (UTC) for the calendar.
"""

import json
import time

from drivers.ina219 import INA219, SensorError
from firmware.astro import CIVIL, SUNRISE_SUNSET
from firmware.calendar import Calendar, check_points, int_in, write_json

# Default pins: free GPIOs of a Heltec WiFi LoRa 32 V2 (radio, OLED and I2C pins left alone).
PINS = {"pwm": 25, "relay": 13, "door": 34, "presence": 35, "s0": 32, "mains_adc": None}

DEFAULTS = {
    "lat": 47.322, "lon": 5.041,  # Dijon; provisioning writes the cabinet's own location
    "utc_offset_min": 60, "dst": "eu", "twilight": "sunset",  # or "civil"
    "calendar": {"points": [["dusk", 0, 100], ["dawn", 0, 0]], "default": 0, "reduce": None},
    "pwm_freq": 1000, "ramp_s": 3, "on_level": 100, "no_clock_level": 100,
    "presence_level": 100, "presence_s": 120,
    "override_min": 240,  # expiry of an override that does not carry one
    "fallback_min": 1440,
    "pulses_per_kwh": 1000,
    "ina219_address": 0x40, "shunt_ohms": 0.1, "max_current_a": 3.2,
    "current_ratio": 1, "voltage_ratio": 1,  # lamp mA per sensed mA, lamp V per bus V
    "mains_ratio": 100,  # mains V per ADC V
    "lamp_fail_ma": 300, "relay_fail_ma": 50, "settle_s": 10,
    "door_open_value": 1, "presence_value": 1,
    "state_file": "lighting.json", "calendar_file": "calendar.json",
}

_J_PER_KWH = 3600000
_MAX_EXPIRY_MIN = 10080
_STEP_MS = 50  # shortest ramp step


class LightingRole:
    """A street-lighting cabinet (Class C: commands land at once)."""

    name = "lighting"
    device_class = "C"

    def __init__(self, hw, settings):
        s = dict(DEFAULTS)
        s.update(settings or {})
        pins = dict(PINS)
        pins.update(s.get("pins") or {})
        self.s = s
        self.hw = hw
        m = hw.machine
        self._m = m
        Pin = m.Pin
        self._pwm = m.PWM(Pin(pins["pwm"]), freq=s["pwm_freq"], duty_u16=0)
        self._relay_pin = Pin(pins["relay"], Pin.OUT, value=0)
        self._door = Pin(pins["door"], Pin.IN, Pin.PULL_UP)
        self._pir = Pin(pins["presence"], Pin.IN)
        self._s0 = Pin(pins["s0"], Pin.IN, Pin.PULL_UP)
        self._adc = m.ADC(Pin(pins["mains_adc"])) if pins.get("mains_adc") is not None else None
        # IRQ state: the handlers only set a flag or add one (no allocation).
        self._pulses = 0
        self._door_flag = 0
        self._pir_flag = 0
        self._s0.irq(handler=self._on_s0, trigger=self._s0.IRQ_FALLING)
        self._door.irq(handler=self._on_door, trigger=(
            self._door.IRQ_RISING if s["door_open_value"] else self._door.IRQ_FALLING))
        self._pir.irq(handler=self._on_pir, trigger=(
            self._pir.IRQ_RISING if s["presence_value"] else self._pir.IRQ_FALLING))
        # Monotonic time.
        self._last_ticks = time.ticks_ms()
        self._ms = 0
        self._sec = 0
        # Outputs.
        self._out = 0  # level in 1/100 %
        self._duty = 0
        self._relay = False
        self._relay_since = 0
        self._ramp_from = 0
        self._ramp_to = 0
        self._ramp_t0 = self._last_ticks
        self._ramp_ms = 0
        self.level = 0  # target level in %
        self.level_source = "calendar"
        # Overrides, presence, downlinks.
        self._ovr_level = None
        self._ovr_until = 0
        self._ovr_ramp_s = None
        self._presence_until = None
        self._last_dl = 0
        self._next_cal_s = 0  # monotonic second of the next calendar evaluation
        self._cal_level = 0
        self.clock_ok = False
        # Alarms and faults.
        self.faults = ()
        self._alarms = ()
        self._new_alarm = False
        # Lamp circuit sensor.
        self._ina = INA219(hw.i2c, s["ina219_address"])
        self._ina_ok = False
        self._setup_ina()
        # Calendar and energy, from flash.
        cal = s["calendar"] or {}
        self.calendar = Calendar(
            s["lat"], s["lon"], cal.get("points", ()), cal.get("default", 0), cal.get("reduce"),
            s["utc_offset_min"], s["dst"], CIVIL if s["twilight"] == "civil" else SUNRISE_SUNSET,
            s["calendar_file"])
        self.calendar.load()
        self._ppk = s["pulses_per_kwh"]
        if not int_in(self._ppk, 1, 100000):
            raise ValueError("lighting: pulses_per_kwh must be 1..100000, got %r" % (self._ppk,))
        self._base_j = 0
        self._counted = 0  # pulses since _base_j
        self._saved_counted = 0
        self._load_energy()

    # -- IRQ handlers ------------------------------------------------------------------------------
    def _on_s0(self, pin):
        self._pulses += 1

    def _on_door(self, pin):
        self._door_flag = 1

    def _on_pir(self, pin):
        self._pir_flag = 1

    # -- the role interface ------------------------------------------------------------------------
    def boot(self, reset_cause):
        """Drive the outputs from the calendar at once (ramping up from dark)."""
        self._tick()
        self._update()

    def downlink_seen(self):
        """The app received a downlink (any frame for this node): the centre is reachable."""
        self._tick()
        self._last_dl = self._sec

    def poll(self):
        """Advance ramps, expiries, presence and the calendar; ms until the next call."""
        self._tick()
        self._update()
        wait = 60000
        if self._ramp_ms and self._out != self._ramp_to:
            steps = abs(self._ramp_to - self._ramp_from) // 100 or 1  # about 1 % per step
            wait = max(_STEP_MS, self._ramp_ms // steps)
        for until in (self._ovr_until if self._ovr_level is not None else None,
                      self._presence_until, self._next_cal_s,
                      self._last_dl + self.s["fallback_min"] * 60):
            if until is not None and until > self._sec:
                wait = min(wait, (until - self._sec) * 1000 - self._ms)
        if self._door_flag:
            wait = 0  # read() now: the door alarm should not wait for the reporting interval
        return max(0, wait)

    @property
    def urgent(self):
        """True when an alarm (the door was opened) waits for the next reading."""
        return bool(self._door_flag)

    def command(self, cmd):
        """Apply a downlink command dict; a RESULTS name. Bad arguments never actuate."""
        try:
            return self._command(cmd)
        except Exception:  # noqa: BLE001 - a command never crashes the cabinet
            return "failed"

    def _command(self, cmd):
        if not isinstance(cmd, dict):
            return "not_supported"
        name = cmd.get("cmd")
        s = self.s
        if name == "dim" or name == "switch":
            expiry = cmd.get("expiry_min", s["override_min"])
            if not int_in(expiry, 1, _MAX_EXPIRY_MIN):
                return "out_of_range"
            if name == "dim":
                level = cmd.get("level")
                ramp = cmd.get("ramp_s", s["ramp_s"])
                if not int_in(level, 0, 100) or not int_in(ramp, 0, 255):
                    return "out_of_range"
            else:
                on = cmd.get("on")
                if not isinstance(on, bool):
                    return "out_of_range"
                level = s["on_level"] if on else 0
                ramp = s["ramp_s"]
            self._tick()
            self._last_dl = self._sec
            self._ovr_level = level
            self._ovr_until = self._sec + expiry * 60
            self._ovr_ramp_s = ramp
            self._update()
            return "done"
        if name == "calendar":
            points = cmd.get("points")
            if check_points(points) is not None:
                return "out_of_range"
            self.calendar.set_program(points)
            self._next_cal_s = 0
            self._tick()
            self._last_dl = self._sec
            try:
                self.calendar.save()
            except OSError:
                self._update()
                return "failed"  # in force, but not kept across a reboot
            self._update()
            return "done"
        return "not_supported"

    def alarm(self):
        """True when the last reading holds an alarm the one before did not."""
        return self._new_alarm

    def read(self):
        """One reading set for protocol.payload.encode_uplink("lighting", ...)."""
        self._tick()
        self._update()
        s = self.s
        faults = []
        if not self.clock_ok:
            faults.append("clock")
        r = {"level": (self._out + 50) // 100, "relay": self._relay,
             "level_source": self.level_source, "energy": self._energy_j() // 3600}
        self._save_energy()
        lamp_ma = None
        if not self._ina_ok:
            self._setup_ina()
        if self._ina_ok:
            try:
                self._ina.ensure_calibrated()
                lamp_ma = abs(self._ina.current_ua()) * s["current_ratio"] // 1000
                lamp_mv = self._ina.bus_voltage_mv() * s["voltage_ratio"]
                r["lamp_current"] = min(lamp_ma, 65535)
                r["lamp_voltage"] = min(500.0, lamp_mv // 100 / 10)
            except SensorError:
                self._ina_ok = False
                lamp_ma = None
        if not self._ina_ok:
            faults.append("energy_meter")
        if self._adc is not None:
            r["mains_voltage"] = min(500.0, self._adc.read_uv() * s["mains_ratio"] // 100000 / 10)
        alarms = []
        settled = (self._sec - self._relay_since >= s["settle_s"]
                   and self._out == self._ramp_to)
        if lamp_ma is not None and settled:
            if self._relay and self._out > 0:
                if lamp_ma < s["lamp_fail_ma"] * self._out // 10000:
                    alarms.append("lamp_failure")
            elif not self._relay and lamp_ma > s["relay_fail_ma"]:
                alarms.append("relay_failure")
        door = self._door_flag
        self._door_flag = 0
        if door or self._door.value() == s["door_open_value"]:
            alarms.append("door_open")
        if self._fallback():
            alarms.append("calendar_fallback")
        alarms = tuple(alarms)
        self._new_alarm = any(a not in self._alarms for a in alarms)
        self._alarms = alarms
        r["alarms"] = alarms
        self.faults = tuple(faults)
        return r

    # -- energy --------------------------------------------------------------------------------------
    def _take_pulses(self):
        state = self._m.disable_irq()
        n = self._pulses
        self._pulses = 0
        self._m.enable_irq(state)
        self._counted += n

    def _energy_j(self):
        self._take_pulses()
        return self._base_j + self._counted * _J_PER_KWH // self._ppk

    def _load_energy(self):
        try:
            with open(self.s["state_file"]) as f:
                d = json.loads(f.read())
            base, counted, ppk = d["base_j"], d["pulses"], d["ppk"]
            if not (int_in(base, 0, 1 << 62) and int_in(counted, 0, 1 << 62) and int_in(ppk, 1, 100000)):
                return
        except (OSError, ValueError, KeyError, TypeError):
            return
        if ppk == self._ppk:
            self._base_j, self._counted = base, counted
        else:  # the meter's constant changed: keep what was metered, count on from there
            self._base_j, self._counted = base + counted * _J_PER_KWH // ppk, 0
        self._saved_counted = self._counted

    def _save_energy(self):
        self._take_pulses()
        if self._counted == self._saved_counted:
            return
        try:
            write_json(self.s["state_file"],
                        {"base_j": self._base_j, "pulses": self._counted, "ppk": self._ppk})
            self._saved_counted = self._counted
        except OSError:
            pass  # flash full or failing: kept in RAM, tried again at the next reading

    # -- lamp sensor -----------------------------------------------------------------------------------
    def _setup_ina(self):
        try:
            self._ina.configure()
            self._ina.calibrate(self.s["shunt_ohms"], self.s["max_current_a"])
            self._ina_ok = True
        except SensorError:
            self._ina_ok = False

    # -- time --------------------------------------------------------------------------------------------
    def _tick(self):
        now = time.ticks_ms()
        self._ms += time.ticks_diff(now, self._last_ticks)
        self._last_ticks = now
        if self._ms >= 1000:
            n = self._ms // 1000
            self._sec += n
            self._ms -= n * 1000

    def _fallback(self):
        return self._sec - self._last_dl >= self.s["fallback_min"] * 60

    # -- deciding the level ------------------------------------------------------------------------------
    def _calendar_level(self):
        if self._sec < self._next_cal_s:
            return self._cal_level
        t = time.time()
        self.clock_ok = time.gmtime(t)[0] >= 2024
        if not self.clock_ok:
            self._cal_level = self.s["no_clock_level"]
            self._next_cal_s = self._sec + 60
            return self._cal_level
        level, nxt = self.calendar.level_at(t)
        self._cal_level = level
        self._next_cal_s = self._sec + (60 if nxt is None else max(1, min(60, nxt)))
        return level

    def _update(self):
        s = self.s
        now = self._sec
        if self._ovr_level is not None and now >= self._ovr_until:
            self._ovr_level = None
        if self._pir_flag or self._pir.value() == s["presence_value"]:
            self._pir_flag = 0
            self._presence_until = now + s["presence_s"]
        if self._presence_until is not None and now >= self._presence_until:
            self._presence_until = None
        cal = self._calendar_level()
        ramp_s = s["ramp_s"]
        if self._ovr_level is not None:
            level, source = self._ovr_level, "override"
            ramp_s = self._ovr_ramp_s
        elif self._presence_until is not None and 0 < cal < s["presence_level"]:
            level, source = s["presence_level"], "presence"
        else:
            level, source = cal, ("fallback" if self._fallback() else "calendar")
        self.level_source = source
        if level != self.level or self._ramp_to != level * 100:
            self.level = level
            self._start_ramp(level * 100, ramp_s * 1000)
        self._advance_ramp()

    def _start_ramp(self, to, ms):
        self._ramp_from = self._out
        self._ramp_to = to
        self._ramp_t0 = self._last_ticks
        self._ramp_ms = ms
        if to > 0 and not self._relay:
            self._set_relay(True)  # close the contactor first, then ramp up

    def _advance_ramp(self):
        if self._out != self._ramp_to:
            done = time.ticks_diff(self._last_ticks, self._ramp_t0)
            if self._ramp_ms <= 0 or done >= self._ramp_ms:
                self._out = self._ramp_to
            else:
                self._out = self._ramp_from + (self._ramp_to - self._ramp_from) * done // self._ramp_ms
        duty = self._out * 65535 // 10000
        if duty != self._duty:
            self._duty = duty
            self._pwm.duty_u16(duty)
        if self._out == 0 and self._ramp_to == 0 and self._relay:
            self._set_relay(False)

    def _set_relay(self, on):
        self._relay = on
        self._relay_since = self._sec
        self._relay_pin.value(1 if on else 0)
