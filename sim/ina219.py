"""Register-level model of a TI INA219 current/power monitor on ``sim.bus.SimI2C``.

DS = TI SBOS448G (December 2015), the revision ``drivers/ina219.py`` cites.

What the model does, as the chip does:

* six 16-bit registers 0x00..0x05, big-endian; a write of one byte sets the register pointer, a
  write of three bytes sets the pointer and writes the register (only Configuration and
  Calibration are writable); a read returns the register at the pointer (DS 8.5.1);
* Configuration bit 15 (RST) resets every register to its power-on value, Configuration 0x399F and
  Calibration 0 (DS 8.6.2.1); Calibration bit 0 is void and reads 0 (DS 8.6.2.6);
* each conversion measures the circuit given by ``source()`` (amps through the shunt, volts on
  IN- to GND): the shunt voltage in 10 uV steps, clipped to the PGA range; the bus voltage in 4 mV
  steps, clipped to the bus range; Current = Shunt * Calibration / 4096 and
  Power = Current * Bus / 5000 (DS 8.5.1, both truncated), OVF when either does not fit;
* CNVR (bus register bit 1) is set when a conversion completes, cleared by reading the Power
  register or writing Configuration (DS 8.6.3.2);
* continuous modes convert again at every data register read (the real chip converts every
  0.5..68 ms: faster than any reader); triggered modes convert once when the mode is written;
  power-down and ADC-off keep the last results.

``source`` defaults to the fixed ``current_a`` / ``bus_v`` attributes a test may set;
:class:`LampCircuit` is the source for a lighting cabinet (lamps on, off, failed, a welded
contactor). Fault injection: ``stuck`` NACKs every transfer; unplug with ``bus.detach(address)``.
"""

from __future__ import annotations

from collections.abc import Callable

from sim.bus import I2CNack

CONFIG = 0x00
SHUNT = 0x01
BUS = 0x02
POWER = 0x03
CURRENT = 0x04
CALIBRATION = 0x05
CONFIG_DEFAULT = 0x399F


def _to16(v: int) -> int:
    return v & 0xFFFF


class INA219Model:
    """One INA219 with a physical shunt of ``shunt_ohms``, measuring ``source()``."""

    def __init__(
        self,
        address: int = 0x40,
        shunt_ohms: float = 0.1,
        source: Callable[[], tuple[float, float]] | None = None,
    ) -> None:
        self.address = address
        self.shunt_ohms = shunt_ohms
        self.source = source
        self.current_a = 0.0
        self.bus_v = 0.0
        self.stuck = False
        self.pointer = 0
        self.regs = [0] * 6
        self.conversions = 0
        self._power_on()

    def _power_on(self) -> None:
        self.regs = [CONFIG_DEFAULT, 0, 0, 0, 0, 0]
        self.pointer = 0

    def brown_out(self) -> None:
        """The supply dipped: every register back to its power-on value."""
        self._power_on()

    # -- I2C device protocol (sim/bus.py) -----------------------------------------------------------
    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        if self.stuck:
            raise I2CNack("INA219 stuck")
        if not data:
            return
        reg = data[0]
        if reg > CALIBRATION:
            raise I2CNack(f"INA219 has no register {reg:#04x}")
        self.pointer = reg
        if len(data) == 1:
            return
        if len(data) != 3:
            raise I2CNack(f"INA219 register writes are pointer + 2 bytes, got {len(data)} bytes")
        value = (data[1] << 8) | data[2]
        if reg == CONFIG:
            if value & 0x8000:
                self._power_on()
                return
            self.regs[CONFIG] = value
            self.regs[BUS] &= ~0x0002  # DS 8.6.3.2: writing the configuration clears CNVR
            if 1 <= value & 7 <= 3:
                self._convert()  # a triggered mode: one conversion now
        elif reg == CALIBRATION:
            self.regs[CALIBRATION] = value & 0xFFFE
            self._compute()
        # Shunt, bus, power and current registers are read-only: the write is ignored.

    def i2c_read(self, n: int) -> bytes:
        if self.stuck:
            raise I2CNack("INA219 stuck")
        reg = self.pointer
        mode = self.regs[CONFIG] & 7
        if reg in (SHUNT, BUS, POWER, CURRENT) and mode >= 5:
            self._convert()
        value = self.regs[reg]
        if reg == POWER:
            self.regs[BUS] &= ~0x0002  # DS 8.6.3.2: reading Power clears CNVR
        out = value.to_bytes(2, "big")
        return (out + out)[:n] if n <= 2 else out + b"\xff" * (n - 2)

    # -- conversions --------------------------------------------------------------------------------
    def pga_range_raw(self) -> int:
        """Largest shunt register magnitude for the PGA setting: 4000 * gain (40 mV per /1)."""
        return 4000 << ((self.regs[CONFIG] >> 11) & 3)

    def bus_range_v(self) -> int:
        return 32 if self.regs[CONFIG] & 0x2000 else 16

    def _convert(self) -> None:
        current_a, bus_v = self.source() if self.source is not None else (self.current_a, self.bus_v)
        mode = self.regs[CONFIG] & 7
        self.conversions += 1
        if mode in (1, 3, 5, 7):  # shunt conversions
            lim = self.pga_range_raw()
            raw = round(current_a * self.shunt_ohms / 10e-6)
            self.regs[SHUNT] = _to16(max(-lim, min(lim, raw)))
        if mode in (2, 3, 6, 7):  # bus conversions
            bd = round(max(0.0, min(float(self.bus_range_v()), bus_v)) / 0.004)
            self.regs[BUS] = (min(bd, 0x1FFF) << 3) | (self.regs[BUS] & 0x0001)
        self._compute()
        self.regs[BUS] |= 0x0002  # CNVR

    def _compute(self) -> None:
        shunt = self.regs[SHUNT] - 0x10000 if self.regs[SHUNT] & 0x8000 else self.regs[SHUNT]
        cal = self.regs[CALIBRATION]
        current = int(shunt * cal / 4096)  # truncation toward zero, as the chip's integer maths
        power = abs(current) * (self.regs[BUS] >> 3) // 5000
        overflow = not -32768 <= current <= 32767 or power > 0xFFFF
        self.regs[CURRENT] = _to16(max(-32768, min(32767, current)))
        self.regs[POWER] = min(power, 0xFFFF)
        self.regs[BUS] = (self.regs[BUS] & ~0x0001) | (1 if overflow else 0)


class LampCircuit:
    """A cabinet's lamp circuit as an INA219 ``source``: (shunt amps, bus volts) from the outputs.

    Healthy lamps draw ``full_a`` at 100 % of the 1-10 V control (proportional to the PWM duty
    the firmware sets on ``pwm_pin``) while the contactor on ``relay_pin`` is closed. The bus
    voltage is the lamp voltage through the cabinet's sensing divider (``lamp_v / ratio``).
    Faults for tests: ``failed`` (lamps draw only ``failed_a``), ``welded`` (the contactor stays
    closed electrically: ``welded_a`` keeps flowing when the firmware opens it).
    """

    def __init__(self, relay_pin, pwm_pin, full_a: float = 2.0, lamp_v: float = 230.0,
                 ratio: float = 10.0) -> None:
        self.relay_pin = relay_pin
        self.pwm_pin = pwm_pin
        self.full_a = full_a
        self.lamp_v = lamp_v
        self.ratio = ratio
        self.failed = False
        self.failed_a = 0.05
        self.welded = False
        self.welded_a = 0.3

    def __call__(self) -> tuple[float, float]:
        bus_v = self.lamp_v / self.ratio
        if self.relay_pin.value() != 1:
            return (self.welded_a, bus_v) if self.welded else (0.0, 0.0)
        if self.failed:
            return self.failed_a, bus_v
        duty = getattr(self.pwm_pin, "pwm_duty_u16", None) or 0
        return self.full_a * duty / 65535, bus_v
