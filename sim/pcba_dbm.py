"""Register-level model of the PCB Artists I2C decibel meter module (PCBA-DBM) on ``SimI2C``.

DS = PCB Artists "I2C Decibel Meter Programming Manual" and the PCBA-DBM-r3 "I2C Register
Description", the documents ``drivers/pcba_dbm.py`` cites (register map there).

What the model does, as the module does:

* a write sets the register pointer, further bytes write from there (auto-increment); a read
  returns registers from the pointer on, auto-incrementing; read-only registers ignore writes;
* every TAVG ms (default 1000) the level averaged over that time (energetic mean of the sound
  field, the module's frequency weighting) becomes DECIBEL in whole dB, updates MIN and MAX and
  shifts into DBHISTORY_0 (newest first); until the first average after power-up, a reset or a
  clear, the registers read 0 ("not yet computed");
* RESET bit 3 resets the module (NACKs for 5 ms, then power-up settings), bits 2/1/0 clear the
  history/MAX/MIN; CONTROL bit 0 (power down) stops the averaging;
* the microphone's range 35..120 dB clips the levels;
* faults: ``stuck`` NACKs every transfer; ``dead_mic`` keeps every level at 0 (never computed);
  unplug with ``bus.detach``.

Where the sound comes from: ``source(epoch_s) -> dB(A)``, by default the ``Environment`` given
(``sound_level_dba``); C and Z weighting read ``c_offset_db``/``z_offset_db`` more (low-frequency
traffic noise). The field is sampled every ``SUB_SAMPLE_US`` within an averaging period.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sim.bus import I2CNack
from sim.clock import VirtualClock
from sim.environment import Environment

ADDRESS = 0x48
VERSION, ID3, SCRATCH, CONTROL, TAVG_HIGH, TAVG_LOW, RESET = 0, 1, 5, 6, 7, 8, 9
DECIBEL, MIN, MAX, THR_MIN, THR_MAX = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E
HISTORY = 0x14
HISTORY_LEN = 100
WRITABLE = {SCRATCH, CONTROL, TAVG_HIGH, TAVG_LOW, RESET, THR_MIN, THR_MAX}
READY_US = 5_000
SUB_SAMPLE_US = 125_000
MIC_MIN_DB, MIC_MAX_DB = 35, 120


class DecibelMeterModel:
    """One PCBA-DBM module; attach it with ``bus.attach(model.address, model)``."""

    def __init__(
        self,
        clock: VirtualClock,
        environment: Environment | None = None,
        *,
        source: Callable[[float], float] | None = None,
        unique_id: int = 0x5EC0_1D48,
        version: int = 0x31,
        c_offset_db: float = 4.0,
        z_offset_db: float = 6.0,
        stuck: bool = False,
        dead_mic: bool = False,
    ) -> None:
        if source is None:
            if environment is None:
                raise ValueError("a DecibelMeterModel needs an environment or a source of levels")
            source = environment.sound_level_dba
        self.clock = clock
        self.source = source
        self.address = ADDRESS
        self.unique_id = unique_id
        self.version = version
        self.c_offset_db = c_offset_db
        self.z_offset_db = z_offset_db
        self.stuck = stuck
        self.dead_mic = dead_mic
        self.nacks = 0
        self.reads = 0
        self._power_on(clock.now_us())

    def _power_on(self, now: int) -> None:
        self.regs = bytearray(0x78)
        self.regs[VERSION] = self.version
        self.regs[ID3:ID3 + 4] = self.unique_id.to_bytes(4, "big")
        self.regs[CONTROL] = 0x02  # A-weighting
        self.regs[TAVG_HIGH:TAVG_LOW + 1] = (1000).to_bytes(2, "big")
        self.regs[THR_MIN] = 45
        self.regs[THR_MAX] = 85
        self.pointer = 0
        self._period_start = now
        self._busy_until = 0
        self.levels: list[tuple[int, int]] = []  # (virtual us, dB) of every DECIBEL produced
        self.clears: list[int] = []  # virtual us of every write clearing MIN/MAX/history

    # -- the averaging ----------------------------------------------------------------------------
    @property
    def tavg_us(self) -> int:
        return max(10, int.from_bytes(self.regs[TAVG_HIGH:TAVG_LOW + 1], "big")) * 1000

    def _offset(self) -> float:
        weighting = (self.regs[CONTROL] >> 1) & 0x03
        return {0: self.z_offset_db, 1: 0.0, 2: self.c_offset_db}.get(weighting, 0.0)

    def _advance(self, now: int) -> None:
        if self.regs[CONTROL] & 0x01:  # powered down
            self._period_start = now
            return
        tavg = self.tavg_us
        while self._period_start + tavg <= now:
            start = self._period_start
            self._period_start += tavg
            if self.dead_mic:
                continue
            steps = max(1, tavg // SUB_SAMPLE_US)
            energy = 0.0
            for k in range(steps):
                epoch = self.clock.epoch0 + (start + (k + 0.5) * tavg / steps) / 1e6
                energy += 10.0 ** ((self.source(epoch) + self._offset()) / 10.0)
            level = 10.0 * math.log10(energy / steps)
            db = min(MIC_MAX_DB, max(MIC_MIN_DB, round(level)))
            self._store(db, self._period_start)

    def _store(self, db: int, at_us: int) -> None:
        r = self.regs
        r[DECIBEL] = db
        r[MIN] = db if r[MIN] == 0 else min(r[MIN], db)
        r[MAX] = max(r[MAX], db)
        r[HISTORY + 1:HISTORY + HISTORY_LEN] = r[HISTORY:HISTORY + HISTORY_LEN - 1]
        r[HISTORY] = db
        self.levels.append((at_us, db))

    # -- I2C device protocol ------------------------------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        now = self.clock.now_us()
        self._check(now)
        self._advance(now)
        if not data:
            return
        self.pointer = data[0]
        for b in data[1:]:
            self._write_reg(self.pointer, b, now)
            self.pointer = (self.pointer + 1) & 0xFF

    def _write_reg(self, reg: int, value: int, now: int) -> None:
        if reg not in WRITABLE:
            return  # read-only: ignored
        if reg == RESET:
            if value & 0x08:
                self._power_on(now)
                self._busy_until = now + READY_US
                return
            if value & 0x07:
                self.clears.append(now)
            if value & 0x04:
                self.regs[HISTORY:HISTORY + HISTORY_LEN] = bytes(HISTORY_LEN)
            if value & 0x02:
                self.regs[MAX] = 0
            if value & 0x01:
                self.regs[MIN] = 0
            return
        if reg == CONTROL and (self.regs[CONTROL] & 0x01) and not value & 0x01:
            self._period_start = now
        self.regs[reg] = value
        if reg in (TAVG_HIGH, TAVG_LOW):
            self._period_start = now  # a new averaging time starts a new period

    def i2c_read(self, n: int) -> bytes:
        now = self.clock.now_us()
        self._check(now)
        self._advance(now)
        self.reads += 1
        out = bytearray()
        for _ in range(n):
            reg = self.pointer
            out.append(self.regs[reg] if reg < len(self.regs) and reg != RESET else 0)
            self.pointer = (self.pointer + 1) & 0xFF
        return bytes(out)

    def _check(self, now: int) -> None:
        if self.stuck:
            self.nacks += 1
            raise I2CNack("sound level module stuck")
        if now < self._busy_until:
            self.nacks += 1
            raise I2CNack("sound level module resetting")
