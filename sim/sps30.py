"""Command-level model of a Sensirion SPS30 particulate matter sensor on ``sim.bus.SimI2C``.

DS = Sensirion "Datasheet SPS30", version 1.0 (March 2020), the revision ``drivers/sps30.py`` cites.

What the model does, as the chip does:

* modes Idle (power-up, after a reset), Measurement and Sleep; each command is accepted only in
  the modes the DS command table allows, otherwise the write is NACKed;
* a command is a 16-bit pointer, optionally followed by data words each with its CRC-8; a wrong
  CRC is NACKed and the command ignored; a command sent while the previous one is still executing
  (DS execution times: 20 ms start/stop, 5 ms sleep/wake/fan cleaning/clear status, 100 ms reset)
  is NACKed;
* a read returns the response of the last pointer, a CRC after every 2 bytes; a read with no
  response pending is NACKed;
* in Measurement-Mode a new reading every second (the first 1 s after the start); reading it
  clears the data-ready flag; readings drift up to the true concentration during the warm-up
  (stable after 8/16/30 s depending on the number concentration, DS specification table); fan
  cleaning runs 10 s at full speed without new readings; the data of the last reading stay
  readable; all values are zero before the first one;
* Sleep-Mode (firmware >= 2.0): the I2C interface is off: the first transfer only wakes the
  interface and is NACKed, then only Wake-up (0x1103) is accepted;
* faults: ``fan_blocked`` (0 RPM: FAN status bit after two 1-second checks, no particles drawn
  in, readings zero), ``laser_failure`` (LASER bit, readings zero), ``fail_crc`` (every response
  with one CRC bit flipped), ``stuck`` (NACKs everything), unplug with ``bus.detach``.

Where the particles come from: ``source(epoch_s) -> (pm1, pm2_5, pm4, pm10)`` in ug/m3, by
default the ``Environment`` given (its PM1/PM2.5/PM10, PM4 between PM2.5 and PM10).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable

from sim.bus import I2CNack
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.sensirion import crc8, with_crc

ADDRESS = 0x69

START, STOP, DATA_READY, READ_VALUES = 0x0010, 0x0104, 0x0202, 0x0300
SLEEP, WAKE_UP, FAN_CLEANING, AUTO_CLEAN = 0x1001, 0x1103, 0x5607, 0x8004
PRODUCT_TYPE, SERIAL, VERSION = 0xD002, 0xD033, 0xD100
STATUS, CLEAR_STATUS, RESET = 0xD206, 0xD210, 0xD304

IDLE, MEASURING, SLEEPING = "idle", "measuring", "sleep"

# DS command table: the modes each command is allowed in, its data words, its execution time (us).
COMMANDS: dict[int, tuple[tuple[str, ...], int, int]] = {
    START: ((IDLE,), 1, 20_000),
    STOP: ((MEASURING,), 0, 20_000),
    DATA_READY: ((MEASURING,), 0, 0),
    READ_VALUES: ((MEASURING,), 0, 0),
    SLEEP: ((IDLE,), 0, 5_000),
    WAKE_UP: ((SLEEPING,), 0, 5_000),
    FAN_CLEANING: ((MEASURING,), 0, 5_000),
    AUTO_CLEAN: ((IDLE, MEASURING), 0, 0),  # 2 words when writing: 20 ms
    PRODUCT_TYPE: ((IDLE, MEASURING), 0, 0),
    SERIAL: ((IDLE, MEASURING), 0, 0),
    VERSION: ((IDLE, MEASURING), 0, 0),
    STATUS: ((IDLE, MEASURING), 0, 0),
    CLEAR_STATUS: ((IDLE, MEASURING), 0, 5_000),
    RESET: ((IDLE, MEASURING), 0, 100_000),
}
FLOAT, UINT16 = 0x03, 0x05

STATUS_SPEED = 1 << 21
STATUS_LASER = 1 << 5
STATUS_FAN = 1 << 4

SAMPLE_US = 1_000_000  # DS: sampling interval 1 s
FAN_CLEANING_US = 10_000_000
DEFAULT_AUTO_CLEAN_S = 604_800  # DS: 168 h




def stabilisation_s(number_per_cm3: float) -> float:
    """DS specification table: time to a stable reading for a number concentration."""
    if number_per_cm3 > 3000:
        return 8.0
    if number_per_cm3 > 200:
        return 16.0
    return 30.0


class SPS30Model:
    """One SPS30; attach it with ``bus.attach(model.address, model)``."""

    def __init__(
        self,
        clock: VirtualClock,
        environment: Environment | None = None,
        *,
        source: Callable[[float], tuple[float, float, float, float]] | None = None,
        serial: str = "D6A7C0F3E8A91B2C",
        firmware: tuple[int, int] = (2, 2),
        fan_blocked: bool = False,
        laser_failure: bool = False,
        fail_crc: bool = False,
        stuck: bool = False,
        precision: float = 0.03,
        seed: int | None = None,
    ) -> None:
        if source is None:
            if environment is None:
                raise ValueError("an SPS30Model needs an environment or a source of PM values")
            env = environment

            def source(epoch: float) -> tuple[float, float, float, float]:
                pm25 = env.pm2_5_ugm3(epoch)
                pm10 = env.pm10_ugm3(epoch)
                return env.pm1_ugm3(epoch), pm25, pm25 + 0.4 * (pm10 - pm25), pm10

        if len(serial) > 32 or not serial.isascii():
            raise ValueError("the SPS30 serial number is at most 32 ASCII characters")
        self.clock = clock
        self.source = source
        self.address = ADDRESS
        self.serial = serial
        self.firmware = firmware
        self.fan_blocked = fan_blocked
        self.laser_failure = laser_failure
        self.fail_crc = fail_crc
        self.stuck = stuck
        self.precision = precision
        # str hashes change per process: seed from the serial's bytes so a run replays exactly
        self._rng = random.Random(seed if seed is not None else zlib.crc32(serial.encode()))
        self.auto_clean_s = DEFAULT_AUTO_CLEAN_S
        self.nacks = 0
        self.commands: list[int] = []  # every accepted command, in order (for tests)
        self.fan_on_us = 0  # total virtual time with the fan running (energy accounting)
        self._power_on()

    def _power_on(self) -> None:
        self.mode = IDLE
        self.status = 0
        self.output = FLOAT
        self._busy_until = 0
        self._response: bytes | None = None
        self._wake_armed = False
        self._started_us = 0
        self._cleaning_until = 0
        self._next_sample_us = 0
        self._values = (0.0,) * 10
        self._ready = False
        self._fan_since: int | None = None

    # -- state over time ----------------------------------------------------------------------------
    def _advance(self, now: int) -> None:
        """Make the readings (and fan checks) due up to ``now``."""
        if self.mode != MEASURING:
            return
        while self._next_sample_us <= now:
            t = self._next_sample_us
            self._next_sample_us += SAMPLE_US
            if t - self._started_us >= 2 * SAMPLE_US and self.fan_blocked:
                self.status |= STATUS_FAN  # DS: 0 RPM measured twice in succession
            if self.laser_failure:
                self.status |= STATUS_LASER
            if t < self._cleaning_until:
                continue  # DS Fan Auto Cleaning: no new readings while cleaning
            self._values = self._reading(t)
            self._ready = True

    def _reading(self, t_us: int) -> tuple[float, ...]:
        if self.fan_blocked or self.laser_failure:
            return (0.0,) * 10
        epoch = self.clock.epoch0 + t_us / 1e6
        masses = [max(0.0, m) for m in self.source(epoch)]
        number = masses[3] * 8.0  # ~#/cm3 per ug/m3 of urban aerosol (first-order)
        elapsed = (t_us - self._started_us) / 1e6
        settle = min(1.0, elapsed / stabilisation_s(number))
        # Before it is stable the reading creeps up from half the true value (optical chamber
        # filling, fan settling): the reason to wait the DS warm-up before trusting a reading.
        factor = 0.5 + 0.5 * settle
        noisy = [m * factor * (1.0 + self._rng.uniform(-self.precision, self.precision))
                 for m in masses]
        numbers = [number * f for f in (0.6, 0.8, 0.95, 0.99, 1.0)]
        return (*noisy, *numbers, 0.6)

    # -- I2C device protocol ------------------------------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        now = self.clock.now_us()
        self._account_fan(now)
        self._advance(now)
        if self.stuck:
            raise I2CNack("SPS30 stuck")
        if self.mode == SLEEPING and not self._wake_armed:
            self._wake_armed = True  # DS Sleep-Mode: this low pulse only switches the I2C on
            self.nacks += 1
            raise I2CNack("SPS30 asleep: interface woken, transfer not acknowledged")
        if now < self._busy_until:
            self.nacks += 1
            raise I2CNack("SPS30 busy executing the previous command")
        if not data:
            return  # address-only write (bus scan)
        if len(data) < 2 or (len(data) - 2) % 3:
            self.nacks += 1
            raise I2CNack(f"SPS30: a command is 2 bytes plus 3-byte words, got {len(data)} bytes")
        cmd = (data[0] << 8) | data[1]
        words = []
        for i in range(2, len(data), 3):
            if crc8(data[i:i + 2]) != data[i + 2]:
                self.nacks += 1
                raise I2CNack(f"SPS30: CRC error in the data of command {cmd:#06x}")
            words.append((data[i] << 8) | data[i + 1])
        spec = COMMANDS.get(cmd)
        if spec is None:
            self.nacks += 1
            raise I2CNack(f"SPS30 has no command {cmd:#06x}")
        modes, _n, exec_us = spec
        if self.mode not in modes or (cmd in (SLEEP, WAKE_UP) and self.firmware < (2, 0)):
            self.nacks += 1
            raise I2CNack(f"SPS30: command {cmd:#06x} not allowed in {self.mode} mode")
        self._response = None
        self._execute(cmd, words, now)
        self._fan_since = now if self.mode == MEASURING else None
        self.commands.append(cmd)
        self._busy_until = now + exec_us

    def _execute(self, cmd: int, words: list[int], now: int) -> None:
        if cmd == START:
            if len(words) != 1 or words[0] & 0xFF or words[0] >> 8 not in (FLOAT, UINT16) or (
                    words[0] >> 8 == UINT16 and self.firmware < (2, 0)):
                self.nacks += 1
                raise I2CNack("SPS30 start measurement: bad output format")
            self.output = words[0] >> 8
            self.mode = MEASURING
            self._started_us = now
            self._next_sample_us = now + SAMPLE_US
            self._values = (0.0,) * 10
            self._ready = False
        elif cmd == STOP:
            self.mode = IDLE
            self._ready = False
            self._cleaning_until = 0
        elif cmd == DATA_READY:
            self._response = bytes([0, 1 if self._ready else 0])
        elif cmd == READ_VALUES:
            self._response = self._encode_values()
            self._ready = False
        elif cmd == SLEEP:
            self.mode = SLEEPING
            self._wake_armed = False
        elif cmd == WAKE_UP:
            self.mode = IDLE
            self._wake_armed = False
        elif cmd == FAN_CLEANING:
            self._cleaning_until = now + FAN_CLEANING_US
        elif cmd == AUTO_CLEAN:
            if words:
                if len(words) != 2:
                    raise I2CNack("SPS30 auto cleaning interval: two words")
                self.auto_clean_s = (words[0] << 16) | words[1]
                self._busy_until = now + 20_000
            else:
                self._response = self.auto_clean_s.to_bytes(4, "big")
        elif cmd == PRODUCT_TYPE:
            self._response = b"00080000" + bytes(4)
        elif cmd == SERIAL:
            self._response = self.serial.encode().ljust(32, b"\0")
        elif cmd == VERSION:
            self._response = bytes([self.firmware[0], self.firmware[1], 0, 7, 0, 2, 0, 0])
        elif cmd == STATUS:
            self._response = self.status.to_bytes(4, "big")
        elif cmd == CLEAR_STATUS:
            self.status = 0
        elif cmd == RESET:
            self._power_on()
        if self._response is not None:
            self._response = with_crc(self._response)
            if self.fail_crc:
                broken = bytearray(self._response)
                broken[2] ^= 0x01
                self._response = bytes(broken)

    def _encode_values(self) -> bytes:
        if self.output == FLOAT:
            return struct.pack(">10f", *self._values)
        ints = [min(0xFFFF, max(0, round(v))) for v in self._values[:9]]
        return struct.pack(">10H", *ints, round(self._values[9] * 1000))

    def i2c_read(self, n: int) -> bytes:
        now = self.clock.now_us()
        self._advance(now)
        if self.stuck or self.mode == SLEEPING:
            self.nacks += 1
            raise I2CNack("SPS30 not answering")
        if now < self._busy_until or self._response is None:
            self.nacks += 1
            raise I2CNack("SPS30 has nothing to send")
        data = self._response
        return data[:n] + b"\xff" * max(0, n - len(data))

    # -- for tests and the energy model --------------------------------------------------------------
    @property
    def fan_running(self) -> bool:
        return self.mode == MEASURING

    def _account_fan(self, now: int) -> None:
        if self._fan_since is not None:
            self.fan_on_us += now - self._fan_since
            self._fan_since = now

    def true_mass(self, epoch_s: float) -> tuple[float, float, float, float]:
        """The concentrations the source gives at ``epoch_s`` (what a stable reading shows)."""
        return tuple(max(0.0, m) for m in self.source(epoch_s))  # type: ignore[return-value]

