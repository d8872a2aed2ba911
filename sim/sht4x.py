"""Command-level model of a Sensirion SHT4x humidity and temperature sensor on ``sim.bus.SimI2C``.

DS = Sensirion "Datasheet SHT4x", version 6 (2023), the same revision ``drivers/sht4x.py`` cites.

What the model does, as the chip does (DS Command Overview):

* a one-byte command write starts a measurement (0xFD/0xF6/0xE0), a heater pulse followed by a high
  precision measurement (0x39/0x32/0x2F/0x24/0x1E/0x15), a serial number read (0x89) or a soft
  reset (0x94);
* while it is busy the chip does not acknowledge its address: writes and reads NACK
  (``I2CNack``, which the bus turns into ``OSError(ENODEV)``); a read with nothing to read NACKs
  too; the 6-byte response (word, CRC, word, CRC) can be read once, and fewer bytes may be read;
* the measured values come from the ``Environment`` at the instant the conversion ends, with the
  chip's error applied (a fixed seeded offset per chip plus seeded per-measurement noise, each
  within half the typical accuracy: +/-0.2 degC and +/-1.8 %RH for an SHT40 by default), quantised
  to 16 bits with the DS Conversion of Signal Output formulas; raw RH may leave 0..100 %RH as on the
  real chip, which is why drivers clip;
* the heater warms the sensing element: the reported temperature rises during the pulse and decays
  after it, and humidity drops accordingly (same water content, warmer element).

The heater's thermal figures (``heater_c_per_mw``, ``heater_tau_s``) are model assumptions, not
datasheet values.

Fault injection for tests: ``fail_crc`` (True or "temperature", or "humidity") corrupts that
word's CRC, ``stuck`` NACKs every transfer, ``slow_us`` lengthens every conversion past the
datasheet maximum; unplug the sensor with ``bus.detach(model.address)``.
"""

from __future__ import annotations

import math
import random

from sim.bus import I2CNack
from sim.clock import VirtualClock
from sim.environment import Environment, saturation_vapour_pressure_hpa
from sim.sensirion import crc8

ADDRESSES = (0x44, 0x45, 0x46)

# DS Command Overview: maximum measurement durations (microseconds).
MEASURE_US = {0xFD: 8_300, 0xF6: 4_500, 0xE0: 1_700}
# DS Heater Operation: command -> (power mW, on-time us); a high precision measurement ends it.
HEATER = {
    0x39: (200, 1_000_000),
    0x32: (200, 100_000),
    0x2F: (110, 1_000_000),
    0x24: (110, 100_000),
    0x1E: (20, 1_000_000),
    0x15: (20, 100_000),
}
CMD_SERIAL = 0x89
CMD_SOFT_RESET = 0x94
SERIAL_US = 1_000
SOFT_RESET_US = 1_000




def ticks_from_celsius(temp_c: float) -> int:
    """Invert T = -45 + 175 * S_T / 65535, rounded and saturated to 16 bits."""
    return min(0xFFFF, max(0, round((temp_c + 45.0) * 65535.0 / 175.0)))


def ticks_from_rh(rh: float) -> int:
    """Invert RH = -6 + 125 * S_RH / 65535, rounded and saturated to 16 bits."""
    return min(0xFFFF, max(0, round((rh + 6.0) * 65535.0 / 125.0)))


def _word(value: int) -> bytes:
    data = value.to_bytes(2, "big")
    return data + bytes([crc8(data)])


class SHT4xModel:
    """One SHT4x chip; attach it with ``bus.attach(model.address, model)``."""

    def __init__(
        self,
        clock: VirtualClock,
        environment: Environment,
        address: int = 0x44,
        serial: int = 0x0F1E_2D3C,
        *,
        temp_accuracy_c: float = 0.2,
        rh_accuracy: float = 1.8,
        seed: int | None = None,
        heater_c_per_mw: float = 0.25,
        heater_tau_s: float = 1.0,
        slow_us: int = 0,
        fail_crc: bool | str = False,
        stuck: bool = False,
    ) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"an SHT4x answers at 0x44, 0x45 or 0x46, not {address:#04x}")
        if not 0 <= serial <= 0xFFFF_FFFF:
            raise ValueError(f"SHT4x serial number is 32 bits, got {serial:#x}")
        if fail_crc not in (False, True, "temperature", "humidity"):
            raise ValueError(
                f"fail_crc must be False, True, 'temperature' or 'humidity', not {fail_crc!r}"
            )
        self.clock = clock
        self.environment = environment
        self.address = address
        self.serial = serial
        self.temp_accuracy_c = temp_accuracy_c
        self.rh_accuracy = rh_accuracy
        self.heater_c_per_mw = heater_c_per_mw
        self.heater_tau_s = heater_tau_s
        self.slow_us = slow_us
        self.fail_crc = fail_crc
        self.stuck = stuck
        self._rng = random.Random(serial if seed is None else seed)
        # A chip's calibration error stays put; only the repeatability part changes per reading.
        self._t_offset = self._rng.uniform(-0.5, 0.5) * temp_accuracy_c
        self._rh_offset = self._rng.uniform(-0.5, 0.5) * rh_accuracy
        self._busy_until_us = 0
        self._response: bytes | None = None
        # Heater pulse: (start us, end us, power mW, element over-temperature at start).
        self._pulse: tuple[int, int, int, float] | None = None
        self.nacks = 0  # transfers NACKed because the chip was busy or had nothing to send
        # The last measurement: its instant (epoch s) and the true ambient values then.
        self.last_epoch_s: float | None = None
        self.last_truth: tuple[float, float] | None = None

    # -- I2C device protocol (sim/bus.py) ---------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        now = self.clock.now_us()
        if self.stuck:
            raise I2CNack("SHT4x stuck")
        if now < self._busy_until_us:
            self.nacks += 1
            raise I2CNack("SHT4x busy")
        if not data:
            return  # address-only write (a bus scan): acknowledged, nothing happens
        if len(data) != 1:
            raise I2CNack(f"SHT4x commands are one byte, got {len(data)}")
        cmd = data[0]
        self._response = None  # a new command discards an unread result
        if cmd in MEASURE_US:
            self._measure(now + MEASURE_US[cmd] + self.slow_us)
        elif cmd in HEATER:
            power, on_us = HEATER[cmd]
            end = now + on_us + self.slow_us
            self._pulse = (now, end, power, self.heater_rise_c(now))
            self._measure(end)
        elif cmd == CMD_SERIAL:
            self._busy_until_us = now + SERIAL_US
            self._response = self._corrupt(_word(self.serial >> 16) + _word(self.serial & 0xFFFF))
        elif cmd == CMD_SOFT_RESET:
            self._busy_until_us = now + SOFT_RESET_US
            if self._pulse is not None and self._pulse[1] > now:  # a reset stops the heater
                start, _, power, rise0 = self._pulse
                self._pulse = (start, now, power, rise0)
        else:
            raise I2CNack(f"SHT4x has no command {cmd:#04x}")

    def i2c_read(self, n: int) -> bytes:
        if self.stuck:
            raise I2CNack("SHT4x stuck")
        if self.clock.now_us() < self._busy_until_us or self._response is None:
            self.nacks += 1
            raise I2CNack("SHT4x has no data yet")
        data, self._response = self._response, None
        return data[:n] + b"\xff" * max(0, n - len(data))

    # -- physics ----------------------------------------------------------------------------------
    def heater_rise_c(self, t_us: int) -> float:
        """How much warmer than the air the sensing element is at ``t_us`` (first-order model)."""
        if self._pulse is None:
            return 0.0
        start, end, power, rise0 = self._pulse
        steady = self.heater_c_per_mw * power
        dt = (min(t_us, end) - start) / 1e6
        k = math.exp(-dt / self.heater_tau_s)
        rise = rise0 * k + steady * (1.0 - k)
        if t_us > end:
            rise *= math.exp(-(t_us - end) / 1e6 / self.heater_tau_s)
        return rise

    def _measure(self, at_us: int) -> None:
        self._busy_until_us = at_us
        epoch = self.clock.epoch0 + at_us / 1e6
        air_t = self.environment.temperature_c(epoch)
        air_rh = self.environment.humidity_rh(epoch)
        self.last_epoch_s = epoch
        self.last_truth = (air_t, air_rh)
        element_t = air_t + self.heater_rise_c(at_us)
        # Same water vapour, warmer element: RH scales with the saturation pressure ratio.
        element_rh = (
            air_rh
            * saturation_vapour_pressure_hpa(air_t)
            / saturation_vapour_pressure_hpa(element_t)
        )
        t = element_t + self._t_offset + self._rng.uniform(-0.5, 0.5) * self.temp_accuracy_c
        rh = element_rh + self._rh_offset + self._rng.uniform(-0.5, 0.5) * self.rh_accuracy
        self._response = self._corrupt(_word(ticks_from_celsius(t)) + _word(ticks_from_rh(rh)))

    def _corrupt(self, response: bytes) -> bytes:
        if not self.fail_crc:
            return response
        index = 5 if self.fail_crc == "humidity" else 2
        out = bytearray(response)
        out[index] ^= 0x01
        return bytes(out)
