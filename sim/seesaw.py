"""Register-level model of an Adafruit seesaw (SAMD09) STEMMA soil sensor on ``sim.bus.SimI2C``.

What the model does, as the seesaw protocol says the chip does (see drivers/seesaw.py for the
sources):

* registers are addressed by a (module base, function) byte pair; a write of exactly those two
  bytes selects what the next read returns, a longer write stores data (SWRST: 0x00/0x7F <- 0xFF);
* the firmware needs time to prepare an answer: a read that comes sooner than ``status_us`` (STATUS
  registers), ``temp_us`` (TEMP) or ``touch_us`` (TOUCH) after the register write gets 0xFF bytes,
  which is what a too-early read returns on the real part (junk; a touch value of 0xFFFF is above
  4095, which the reference drivers treat as a failed read);
* STATUS HW_ID (0x00/0x01) is 0x55, VERSION (0x00/0x02) is the product code 4026 in the high half,
  TEMP (0x00/0x04) is the signed 16.16 fixed-point temperature of the chip, i.e. of the soil it
  sits in, TOUCH channel 0 (0x0F/0x10) the capacitance count of the probe;
* a software reset (0xFF to 0x00/0x7F) makes the chip NACK every transfer for ``reset_us``;
* with a ``power`` pin (the node switches the sensor's supply to save its running current), the
  chip NACKs while the pin is low and for ``boot_us`` after it goes high (its firmware starting).

The touch count is linear in the simulated soil moisture between ``dry_counts`` (0 %, about 200
in dry air) and ``wet_counts`` (100 %, about 2000 in water) with seeded noise of +/-``noise_counts``.
The preparation times and the reset time are model assumptions taken from the pauses the
reference drivers use (1 ms temperature, 3 ms touch, 250 us status; reset: the Arduino driver
polls for the chip every 10 ms), not datasheet values: the seesaw firmware has no datasheet.

Fault injection: ``stuck`` NACKs everything, ``bad_touch_reads`` = n makes the next n touch reads
return 0xFFFF, ``hw_id`` may be set to another byte (a wrong chip at the address); unplug the probe
with ``bus.detach(model.address)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sim.bus import I2CNack, SimPin
from sim.clock import VirtualClock

STATUS_BASE = 0x00
STATUS_HW_ID = 0x01
STATUS_VERSION = 0x02
STATUS_TEMP = 0x04
STATUS_SWRST = 0x7F
TOUCH_BASE = 0x0F
TOUCH_CHANNEL_OFFSET = 0x10
HW_ID_SAMD09 = 0x55
PRODUCT_SOIL_SENSOR = 4026


def fixed_16_16(value_c: float) -> bytes:
    """``value_c`` as the four big-endian bytes of a signed 16.16 fixed-point number."""
    raw = round(value_c * 65536)
    return (raw & 0xFFFF_FFFF).to_bytes(4, "big")


class SeesawSoilModel:
    """One seesaw soil sensor; attach it with ``bus.attach(model.address, model)``."""

    def __init__(
        self,
        clock: VirtualClock,
        address: int = 0x36,
        *,
        moisture: float | Callable[[float], float] = 30.0,
        temperature_c: float | Callable[[float], float] = 15.0,
        dry_counts: int = 200,
        wet_counts: int = 2000,
        noise_counts: int = 4,
        temp_error_c: float = 0.0,
        seed: int = 1,
        status_us: int = 250,
        temp_us: int = 1_000,
        touch_us: int = 3_000,
        reset_us: int = 20_000,
        power: SimPin | None = None,
        boot_us: int = 30_000,
    ) -> None:
        if not 0x36 <= address <= 0x39:
            raise ValueError(f"the STEMMA soil sensor answers at 0x36..0x39, not {address:#04x}")
        self.clock = clock
        self.address = address
        self.moisture = moisture  # % volumetric water content, or f(epoch s) -> %
        self.temperature_c = temperature_c  # soil temperature, or f(epoch s) -> degC
        self.dry_counts = dry_counts
        self.wet_counts = wet_counts
        self.noise_counts = noise_counts
        self.temp_error_c = temp_error_c
        self.status_us = status_us
        self.temp_us = temp_us
        self.touch_us = touch_us
        self.reset_us = reset_us
        self.boot_us = boot_us
        self.power = power
        self.power_ups = 0
        if power is not None:
            power.watch(self._on_power)
        self.hw_id = HW_ID_SAMD09
        self.stuck = False
        self.bad_touch_reads = 0
        self._rng = random.Random(seed)
        self._pending: tuple[int, int, int] | None = None  # (base, function, ready at us)
        self._away_until_us = 0
        # What happened, for tests.
        self.resets = 0
        self.early_reads = 0  # reads before the answer was ready (got 0xFF bytes)
        self.touch_reads = 0
        self.temp_reads = 0
        self.last_touch: int | None = None

    def _on_power(self, level: int) -> None:
        self._pending = None
        if level:
            self.power_ups += 1
            self._away_until_us = self.clock.now_us() + self.boot_us

    def _off(self) -> bool:
        return self.power is not None and not self.power.value()

    # -- what the sensor is measuring ------------------------------------------------------------
    def _value(self, source: float | Callable[[float], float]) -> float:
        return float(source(self.clock.epoch()) if callable(source) else source)

    def touch_counts(self) -> int:
        """The probe's capacitance count now (noise included), as the chip would report it."""
        m = min(100.0, max(0.0, self._value(self.moisture)))
        raw = self.dry_counts + (self.wet_counts - self.dry_counts) * m / 100.0
        raw += self._rng.randint(-self.noise_counts, self.noise_counts)
        return max(0, min(4095, round(raw)))

    # -- I2C device protocol (sim/bus.py) --------------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        now = self.clock.now_us()
        if self.stuck or self._off():
            raise I2CNack("seesaw stuck or unpowered")
        if now < self._away_until_us:
            raise I2CNack("seesaw restarting after a software reset")
        if not data:
            return  # address-only write (a bus scan)
        if len(data) < 2:
            raise I2CNack("seesaw registers are a (base, function) byte pair")
        base, function = data[0], data[1]
        if len(data) == 2:
            self._pending = (base, function, now + self._prep_us(base, function))
            return
        self._pending = None
        if base == STATUS_BASE and function == STATUS_SWRST and data[2] == 0xFF:
            self.resets += 1
            self._away_until_us = now + self.reset_us

    def i2c_read(self, n: int) -> bytes:
        now = self.clock.now_us()
        if self.stuck or self._off() or now < self._away_until_us:
            raise I2CNack("seesaw not answering")
        pending, self._pending = self._pending, None
        if pending is None:
            return b"\xff" * n
        base, function, ready = pending
        if now < ready:
            self.early_reads += 1
            return b"\xff" * n
        data = self._answer(base, function)
        return data[:n] + b"\xff" * max(0, n - len(data))

    # -- registers -------------------------------------------------------------------------------
    def _prep_us(self, base: int, function: int) -> int:
        if base == TOUCH_BASE:
            return self.touch_us
        if base == STATUS_BASE and function == STATUS_TEMP:
            return self.temp_us
        return self.status_us

    def _answer(self, base: int, function: int) -> bytes:
        if base == STATUS_BASE:
            if function == STATUS_HW_ID:
                return bytes([self.hw_id])
            if function == STATUS_VERSION:
                return ((PRODUCT_SOIL_SENSOR << 16) | 0x1A2B).to_bytes(4, "big")
            if function == STATUS_TEMP:
                self.temp_reads += 1
                return fixed_16_16(self._value(self.temperature_c) + self.temp_error_c)
        if base == TOUCH_BASE and function == TOUCH_CHANNEL_OFFSET:
            self.touch_reads += 1
            if self.bad_touch_reads > 0:
                self.bad_touch_reads -= 1
                return b"\xff\xff"
            self.last_touch = self.touch_counts()
            return self.last_touch.to_bytes(2, "big")
        return b""  # no such register: the bus reads 0xFF
