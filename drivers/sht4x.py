"""Sensirion SHT4x (SHT40/41/43/45) relative humidity and temperature sensor on I2C.

DS = Sensirion "Datasheet SHT4x", version 6 (2023; the revision whose product list gives
SHT40-xD1B at 0x44, 0x45 or 0x46). Comments cite its sections by title: "Quick Start - Hello
World", "Command Overview", "Checksum Calculation", "Conversion of Signal Output", "Heater
Operation".

The primary API works in integers, because the node's payload codec sends 0.01 degC and 0.01 %RH
steps and integer maths keeps floats (and their heap boxes) out of the measurement path:

    sht = SHT4x(i2c)                     # machine.I2C, an smbus2 adapter or sim.bus.SimI2C
    t_centi, rh_centi = sht.measure()    # (2153, 4870) means 21.53 degC, 48.70 %RH
    t_c, rh = sht.measure_float()        # convenience for humans and the Pi: (21.53, 48.7)

Only ``writeto`` and ``readfrom_into`` are used on the bus. The conversion wait uses
``drivers.ticks.sleep_ms``, so the same code sleeps on a board, on a Pi and in virtual time.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers import ticks
from drivers.sensirion import crc8

# Measurement precision (DS Command Overview: "measure T & RH with high/medium/lowest precision").
LOW = const(0)
MEDIUM = const(1)
HIGH = const(2)

# DS product list: SHT40-xD1B comes at 0x44, 0x45 or 0x46; SHT41/43/45 at 0x44.
_ADDRESSES = (0x44, 0x45, 0x46)

# DS Command Overview, indexed by precision LOW, MEDIUM, HIGH.
_CMD_MEASURE = (0xE0, 0xF6, 0xFD)
# Max measurement duration 1.7 / 4.5 / 8.3 ms (DS Command Overview), rounded up to whole ms.
_MEASURE_MS = (2, 5, 9)
_CMD_SERIAL = const(0x89)  # read serial number: two words, each with its CRC
_CMD_SOFT_RESET = const(0x94)
_SOFT_RESET_MS = const(1)  # DS: soft reset time max 1 ms
_SERIAL_MS = const(1)

# DS Heater Operation: (power mW, on-time ms) -> command. The heater runs for the on-time, then the
# chip makes a high precision measurement just before switching it off and returns it.
_HEATER_CMD = {
    (200, 1000): 0x39,
    (200, 100): 0x32,
    (110, 1000): 0x2F,
    (110, 100): 0x24,
    (20, 1000): 0x1E,
    (20, 100): 0x15,
}
# DS Heater Operation: keep the heater's duty cycle at or below 10%: after d ms on, 9*d ms off.
_HEATER_OFF_FACTOR = const(9)

# A read the chip NACKs (conversion not finished) is retried every _RETRY_MS, at most _READ_TRIES
# times in all: a slow chip costs at most ~10 ms more, a dead one raises instead of hanging.
_READ_TRIES = const(10)
_RETRY_MS = const(1)


class SensorError(Exception):
    """A sensor is missing or answered with bad data; the message names the chip and the fault."""


# DS Conversion of Signal Output: T = -45 + 175 * S_T / (2^16 - 1) degC and
# RH = -6 + 125 * S_RH / (2^16 - 1) %RH. In hundredths, 17500/65535 = 3500/13107 and
# 12500/65535 = 2500/13107: the products stay below 2^30, so they remain MicroPython small ints
# (no heap allocation on 32-bit ports). Adding 6553 (= 13107 // 2) rounds to the nearest step.


def centi_celsius(s_t):
    """Raw temperature ticks S_T (0..65535) to an int in 0.01 degC, rounded to nearest."""
    return (3500 * s_t + 6553) // 13107 - 4500


def centi_rh(s_rh):
    """Raw humidity ticks S_RH (0..65535) to an int in 0.01 %RH, clipped to 0..100 %RH."""
    rh = (2500 * s_rh + 6553) // 13107 - 600
    # DS Quick Start and Conversion of Signal Output: values outside 0..100 %RH are physically
    # meaningless (they come from the sensor's tolerances) and are to be cropped.
    if rh < 0:
        return 0
    if rh > 10000:
        return 10000
    return rh


def celsius(s_t):
    """Raw temperature ticks S_T to degC as a float (convenience; allocates on MicroPython)."""
    return -45.0 + 175.0 * s_t / 65535


def rh_percent(s_rh):
    """Raw humidity ticks S_RH to %RH as a float, clipped to 0..100 (convenience)."""
    rh = -6.0 + 125.0 * s_rh / 65535
    if rh < 0.0:
        return 0.0
    if rh > 100.0:
        return 100.0
    return rh


class SHT4x:
    """One SHT4x at ``address`` on ``i2c`` (anything with machine.I2C's writeto/readfrom_into)."""

    def __init__(self, i2c, address=0x44):
        if address not in _ADDRESSES:
            raise ValueError(
                "SHT4x address must be 0x44, 0x45 or 0x46 (datasheet product list), "
                f"got {address!r}"
            )
        self._i2c = i2c
        self.address = address
        self._cmd = bytearray(1)
        self._buf = bytearray(6)  # every response: word, CRC, word, CRC (DS Command Overview)
        self._heater_ready = None  # ticks_ms from which the heater may run again

    # -- measurements -------------------------------------------------------------------------
    def measure(self, precision=HIGH):
        """Measure once; return (temperature in 0.01 degC, humidity in 0.01 %RH) as ints."""
        self._measure(precision)
        return centi_celsius(self._word(0, "temperature")), centi_rh(self._word(3, "humidity"))

    def measure_float(self, precision=HIGH):
        """Measure once; return (degC, %RH) as floats (convenience, not for the node's hot path)."""
        self._measure(precision)
        return celsius(self._word(0, "temperature")), rh_percent(self._word(3, "humidity"))

    def measure_raw(self, precision=HIGH):
        """Measure once; return the raw 16-bit ticks (S_T, S_RH), CRC-checked."""
        self._measure(precision)
        return self._word(0, "temperature"), self._word(3, "humidity")

    def _measure(self, precision):
        if precision != LOW and precision != MEDIUM and precision != HIGH:
            raise ValueError(
                f"SHT4x precision must be sht4x.HIGH, MEDIUM or LOW, got {precision!r}"
            )
        self._command(_CMD_MEASURE[precision])
        self._read(_MEASURE_MS[precision], "measurement")

    # -- chip services --------------------------------------------------------------------------
    def serial_number(self):
        """Read the chip's unique 32-bit serial number (DS Command Overview, 0x89)."""
        self._command(_CMD_SERIAL)
        self._read(_SERIAL_MS, "serial number")
        high = self._word(0, "serial number high")
        low = self._word(3, "serial number low")
        return (high << 16) | low

    def soft_reset(self):
        """Reset the chip as at power-up (DS Command Overview, 0x94) and wait until it is back."""
        self._command(_CMD_SOFT_RESET)
        ticks.sleep_ms(_SOFT_RESET_MS)

    def heater(self, power_mw=200, duration_ms=1000):
        """Run the heater (200/110/20 mW for 1000/100 ms) to drive off condensation or creep.

        Returns the high precision measurement the chip makes just before switching the heater
        off, as (0.01 degC, 0.01 %RH): it reads hot and dry, so do not report it as weather.
        The datasheet allows at most a 10% duty cycle and use below 65 degC ambient; a call
        sooner than 9 x duration_ms after the previous pulse raises ValueError.
        """
        cmd = _HEATER_CMD.get((power_mw, duration_ms))
        if cmd is None:
            raise ValueError(
                "SHT4x heater: power_mw must be 200, 110 or 20 and duration_ms 1000 or 100 "
                f"(datasheet heater commands), got {power_mw!r} mW for {duration_ms!r} ms"
            )
        if self._heater_ready is not None:
            left = ticks.ticks_diff(self._heater_ready, ticks.ticks_ms())
            if left > 0:
                raise ValueError(
                    f"SHT4x heater: wait {left} ms more (the datasheet limits the heater to a 10% "
                    "duty cycle)"
                )
        self._command(cmd)
        # Sensirion's own driver waits 1.1 s / 110 ms: on-time plus margin for the measurement.
        self._read(duration_ms + duration_ms // 10, "heater measurement")
        self._heater_ready = ticks.ticks_add(ticks.ticks_ms(), _HEATER_OFF_FACTOR * duration_ms)
        return centi_celsius(self._word(0, "temperature")), centi_rh(self._word(3, "humidity"))

    # -- bus transfers (no allocation on success: the command and read buffers are reused) -------
    def _command(self, cmd):
        self._cmd[0] = cmd
        try:
            self._i2c.writeto(self.address, self._cmd)
        except OSError:
            raise SensorError(
                f"no SHT4x answering at 0x{self.address:02x} on I2C: check wiring and address"
            ) from None

    def _read(self, wait_ms, what):
        # The chip NACKs its read header until the conversion is done (DS Command Overview), so
        # sleep the datasheet maximum first and retry a few times for a slow chip.
        ticks.sleep_ms(wait_ms)
        tries = _READ_TRIES
        while True:
            try:
                self._i2c.readfrom_into(self.address, self._buf)
                return
            except OSError:
                tries -= 1
                if tries <= 0:
                    break
            ticks.sleep_ms(_RETRY_MS)
        raise SensorError(
            f"SHT4x at 0x{self.address:02x}: no {what} after "
            f"{wait_ms + (_READ_TRIES - 1) * _RETRY_MS} ms, every read was NACKed: "
            "check the sensor's supply and wiring"
        )

    def _word(self, i, what):
        buf = self._buf
        expected = crc8(buf, i, i + 2)
        if buf[i + 2] != expected:
            raise SensorError(
                f"SHT4x at 0x{self.address:02x}: CRC mismatch on {what} word "
                f"(got 0x{buf[i + 2]:02x}, expected 0x{expected:02x})"
            )
        return (buf[i] << 8) | buf[i + 1]
