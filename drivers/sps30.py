"""Sensirion SPS30 particulate matter sensor on I2C.

DS = Sensirion "Datasheet SPS30", version 1.0 (March 2020). Comments cite its sections by title:
"I2C Interface" (address 0x69, 16-bit command pointers, a CRC after every 2 data bytes),
"I2C Commands" (the command table with execution times and the modes a command is allowed in),
"Checksum Calculation", "Device Status Register", "Fan Auto Cleaning", "Sleep-Mode".

The chip has three modes: Idle (after power-up or reset, fan and laser off), Measurement (fan and
laser on, one new reading per second) and Sleep (firmware 2.0 or newer: lowest power, I2C off).
A command not allowed in the current mode is NACKed, which this driver reports as SensorError.

    pm = SPS30(i2c)                    # machine.I2C, an smbus2 adapter or sim.bus.SimI2C
    pm.start_measurement()             # fan on; readings stabilise after up to 30 s (DS)
    ...                                # wait the warm-up, poll data_ready()
    pm1, pm2_5, pm4, pm10 = pm.read_mass()   # ug/m3
    pm.stop_measurement()              # fan off again (Idle), or pm.sleep() after that

Only ``writeto`` and ``readfrom_into`` are used on the bus; every transfer reuses the buffers
allocated in the constructor. Waits use ``drivers.ticks.sleep_ms`` (virtual time in the tests).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


import struct

from drivers import ticks
from drivers.sensirion import crc8

ADDRESS = const(0x69)  # DS I2C Interface: fixed address

# Output formats of Start Measurement (DS I2C Commands, 0x0010).
FLOAT = const(0x03)  # big-endian IEEE754 float
UINT16 = const(0x05)  # big-endian unsigned 16-bit integer (firmware >= 2.0)

# DS I2C Commands: command pointers.
_START = const(0x0010)
_STOP = const(0x0104)
_DATA_READY = const(0x0202)
_READ_VALUES = const(0x0300)
_SLEEP = const(0x1001)
_WAKE_UP = const(0x1103)
_FAN_CLEANING = const(0x5607)
_AUTO_CLEAN = const(0x8004)
_SERIAL = const(0xD033)
_VERSION = const(0xD100)
_STATUS = const(0xD206)
_CLEAR_STATUS = const(0xD210)
_RESET = const(0xD304)

# DS I2C Commands: maximum execution times, ms.
_START_MS = const(20)
_STOP_MS = const(20)
_SHORT_MS = const(5)  # sleep, wake-up, fan cleaning, clear status
_WRITE_CLEAN_MS = const(20)
_RESET_MS = const(100)

# DS Device Status Register bits.
STATUS_SPEED = const(1 << 21)  # fan speed out of range (warning, clears itself)
STATUS_LASER = const(1 << 5)  # laser current out of range (sticky)
STATUS_FAN = const(1 << 4)  # fan switched on but 0 RPM measured twice in a row (sticky)

# DS Fan Auto Cleaning: the fan runs at full speed for 10 s; readings are not updated meanwhile.
FAN_CLEANING_MS = const(10000)
# DS specification table: a reading is stable 8 s (> 3000 #/cm3), 16 s (200..3000 #/cm3) or
# 30 s (100..200 #/cm3, clean outdoor air) after the start of the measurement.
WARM_UP_MS = const(30000)


_VALUES = const(10)  # PM1.0 PM2.5 PM4.0 PM10 mass, PM0.5..PM10 number, typical particle size


class SensorError(Exception):
    """The SPS30 is missing, refused a command or answered with bad data (the message says)."""




def unpack_words(frame, out, nbytes=-1):
    """Check and strip the CRCs of a response: 3-byte groups (2 data bytes + CRC) into ``out``.

    ``nbytes`` data bytes are taken (default: all of ``out``); raises SensorError naming the
    first word whose CRC does not match. Returns the number of data bytes written.
    """
    if nbytes < 0:
        nbytes = len(out)
    if nbytes & 1 or len(frame) < nbytes // 2 * 3 or len(out) < nbytes:
        raise ValueError("SPS30 frame: %d data bytes do not fit the buffers" % nbytes)
    j = 0
    for i in range(0, nbytes // 2 * 3, 3):
        if crc8(frame, i, i + 2) != frame[i + 2]:
            raise SensorError("SPS30: CRC mismatch on response word %d" % (i // 3))
        out[j] = frame[i]
        out[j + 1] = frame[i + 1]
        j += 2
    return j


def pack_word(value, buf, offset):
    """Write a 16-bit ``value`` big-endian at ``buf[offset]`` followed by its CRC (3 bytes)."""
    buf[offset] = (value >> 8) & 0xFF
    buf[offset + 1] = value & 0xFF
    buf[offset + 2] = crc8(buf, offset, offset + 2)


class SPS30:
    """One SPS30 at ``address`` on ``i2c`` (anything with machine.I2C's writeto/readfrom_into)."""

    def __init__(self, i2c, address=ADDRESS):
        self._i2c = i2c
        self.address = address
        self.output = FLOAT
        self._cmd = bytearray(8)  # pointer (2) + up to two words with CRC (6)
        self._frame = bytearray(60)  # the longest response we read: 20 words with CRC
        self._data = bytearray(40)  # the same without the CRCs
        self._cmd2 = memoryview(self._cmd)[:2]
        self._cmd5 = memoryview(self._cmd)[:5]

    # -- measurement ------------------------------------------------------------------------------
    def start_measurement(self, output=FLOAT):
        """Enter Measurement-Mode: fan and laser on (DS 0x0010, Idle-Mode only)."""
        if output != FLOAT and output != UINT16:
            raise ValueError("SPS30 output format must be sps30.FLOAT or sps30.UINT16, got %r"
                             % (output,))
        self._set(_START)
        self._cmd[2] = output
        self._cmd[3] = 0x00
        self._cmd[4] = crc8(self._cmd, 2, 4)
        self._write(self._cmd5, "start measurement (is it measuring already, or asleep?)")
        self.output = output
        ticks.sleep_ms(_START_MS)

    def stop_measurement(self):
        """Back to Idle-Mode: fan and laser off (DS 0x0104, Measurement-Mode only)."""
        self._command(_STOP, _STOP_MS, "stop measurement (was it measuring?)")

    def data_ready(self):
        """True when a new reading waits to be read (DS 0x0202)."""
        self._read(_DATA_READY, 2, "data-ready flag")
        return self._data[1] == 0x01

    def read_values(self):
        """The last reading: 10 values (DS 0x0300): mass PM1.0/2.5/4.0/10 in ug/m3, number
        concentrations PM0.5/1.0/2.5/4.0/10 in #/cm3, typical particle size (um as float,
        nm as uint16). All zero when no reading was made yet; reading clears the ready flag."""
        if self.output == FLOAT:
            self._read(_READ_VALUES, 40, "measured values")
            return struct.unpack_from(">ffffffffff", self._data, 0)
        self._read(_READ_VALUES, 20, "measured values")
        return struct.unpack_from(">HHHHHHHHHH", self._data, 0)

    def read_mass(self):
        """The mass concentrations (PM1.0, PM2.5, PM4.0, PM10) of the last reading, in ug/m3."""
        v = self.read_values()
        return v[0], v[1], v[2], v[3]

    # -- fan and status ---------------------------------------------------------------------------
    def start_fan_cleaning(self):
        """Run the fan at full speed for 10 s to blow out dust (DS 0x5607, Measurement-Mode)."""
        self._command(_FAN_CLEANING, _SHORT_MS, "start fan cleaning (is it measuring?)")

    def auto_cleaning_interval(self, seconds=None):
        """Read, or write when ``seconds`` is given, the auto cleaning interval (DS 0x8004).

        The chip counts it only while powered and measuring, so a node that stops the fan between
        cycles should clean by hand (start_fan_cleaning) once a week, as the DS advises.
        """
        if seconds is None:
            self._read(_AUTO_CLEAN, 4, "auto cleaning interval")
            d = self._data
            return (d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise ValueError("SPS30 auto cleaning interval is 0..2**32-1 s, got %r" % (seconds,))
        self._set(_AUTO_CLEAN)
        pack_word(seconds >> 16, self._cmd, 2)
        pack_word(seconds & 0xFFFF, self._cmd, 5)
        self._write(self._cmd, "write auto cleaning interval")
        ticks.sleep_ms(_WRITE_CLEAN_MS)
        return seconds

    def status(self):
        """The 32-bit device status register (DS 0xD206): STATUS_FAN, STATUS_LASER, STATUS_SPEED."""
        self._read(_STATUS, 4, "device status register")
        d = self._data
        return (d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]

    def clear_status(self):
        """Clear the sticky status bits (DS 0xD210)."""
        self._command(_CLEAR_STATUS, _SHORT_MS, "clear device status")

    # -- chip services ----------------------------------------------------------------------------
    def serial_number(self):
        """The serial number, an ASCII string of up to 32 characters (DS 0xD033)."""
        self._read(_SERIAL, 32, "serial number")
        d = self._data
        n = 0
        while n < 32 and d[n]:
            n += 1
        return bytes(d[:n]).decode()

    def version(self):
        """Firmware version as (major, minor) (DS 0xD100)."""
        self._read(_VERSION, 2, "version")
        return self._data[0], self._data[1]

    def reset(self):
        """Device reset (DS 0xD304): back to Idle-Mode as after power-up; takes 100 ms."""
        self._command(_RESET, _RESET_MS, "device reset")

    def sleep(self):
        """Enter Sleep-Mode, I2C interface off (DS 0x1001, Idle-Mode only, firmware >= 2.0)."""
        self._command(_SLEEP, _SHORT_MS, "sleep (is it idle, firmware >= 2.0?)")

    def wake_up(self):
        """Leave Sleep-Mode (DS 0x1103). The first transfer to a sleeping chip only switches its
        interface on and is NACKed, so the command goes again when the first one was NACKed."""
        self._set(_WAKE_UP)
        try:
            self._i2c.writeto(self.address, self._cmd2)
        except OSError:  # expected: the low pulse that wakes the interface is not acknowledged
            self._command(_WAKE_UP, _SHORT_MS, "wake-up (was it asleep?)")
            return
        ticks.sleep_ms(_SHORT_MS)

    # -- bus transfers ------------------------------------------------------------------------------
    def _set(self, cmd):
        self._cmd[0] = cmd >> 8
        self._cmd[1] = cmd & 0xFF

    def _write(self, buf, what, reading=False):
        try:
            self._i2c.writeto(self.address, buf)
        except OSError:
            raise SensorError("SPS30 at 0x%02x NACKed %s%s: check wiring, supply (5 V) and the "
                              "SEL pin (GND for I2C)"
                              % (self.address, "the read of its " if reading else "", what)
                              ) from None

    def _command(self, cmd, wait_ms, what):
        self._set(cmd)
        self._write(self._cmd2, what)
        ticks.sleep_ms(wait_ms)

    def _read(self, cmd, nbytes, what):
        self._set(cmd)
        self._write(self._cmd2, what, True)
        frame = memoryview(self._frame)[:nbytes // 2 * 3]
        try:
            self._i2c.readfrom_into(self.address, frame)
        except OSError:
            raise SensorError("SPS30 at 0x%02x NACKed the read of its %s"
                              % (self.address, what)) from None
        try:
            unpack_words(frame, self._data, nbytes)
        except SensorError as exc:
            raise SensorError("%s (%s)" % (exc.args[0], what)) from None
