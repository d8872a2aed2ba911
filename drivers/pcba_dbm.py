"""PCB Artists I2C decibel sound level meter module (PCBA-DBM) on I2C.

DS = PCB Artists "I2C Decibel Meter Programming Manual" and the PCBA-DBM-r3 "I2C Register
Description" (pcbartists.com). The module does the acoustics itself: a MEMS microphone, the
frequency weighting and an average over ``TAVG`` ms; the host only reads levels in whole dB from
8-bit registers. No audio ever reaches the host.

Registers (DS I2C Register Description; address 0x48 unless ordered otherwise):

    0x00 VERSION      [7:4] hardware, [3:0] firmware version (r3 modules: 0x31)
    0x01-0x04 ID3..ID0  32-bit unique ID, most significant byte first
    0x05 SCRATCH      free read/write byte, for bus tests
    0x06 CONTROL      [4] interrupt type, [3] interrupt enable, [2:1] weighting (00 Z, 01 A,
                      10 C), [0] power down; default 0x02 (A-weighting)
    0x07 TAVG_HIGH, 0x08 TAVG_LOW  averaging time in ms, default 1000 ("slow")
    0x09 RESET        write-only: [3] system reset, [2] clear history, [1] clear MAX, [0] clear MIN
    0x0A DECIBEL      latest level in dB, averaged over TAVG; 0 = not yet computed
    0x0B MIN, 0x0C MAX  lowest and highest DECIBEL since power-up or their last clear
    0x0D THR_MIN, 0x0E THR_MAX  interrupt thresholds
    0x14-0x77 DBHISTORY_0..99  the last 100 DECIBEL values, newest first

The register pointer auto-increments, so one read fetches several registers.

    meter = DecibelMeter(i2c)
    meter.configure(weighting=A_WEIGHTING, tavg_ms=1000)
    meter.clear()
    db = meter.decibel()          # int dB(A), or 0 while the module has no value yet
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers import ticks

ADDRESS = const(0x48)

_VERSION = const(0x00)
_ID3 = const(0x01)
_SCRATCH = const(0x05)
_CONTROL = const(0x06)
_TAVG_HIGH = const(0x07)
_RESET = const(0x09)
_DECIBEL = const(0x0A)
_MIN = const(0x0B)
_HISTORY = const(0x14)
HISTORY_LEN = const(100)

Z_WEIGHTING = const(0)
A_WEIGHTING = const(1)
C_WEIGHTING = const(2)
_POWER_DOWN = const(0x01)

_RESET_SYSTEM = const(0x08)
_CLEAR_HISTORY = const(0x04)
_CLEAR_MAX = const(0x02)
_CLEAR_MIN = const(0x01)

READY_MS = const(5)  # DS: ready for I2C within 5 ms of power-up or reset
# The module's microphone and the DS specification: 35..120 dB; a register above this range is
# not a sound level (a floating bus reads 0xFF).
MAX_DB = const(130)


class SensorError(Exception):
    """The sound level module is missing or answered with impossible data (the message says)."""


class DecibelMeter:
    """One PCBA-DBM module at ``address`` on ``i2c`` (machine.I2C's writeto/readfrom_into)."""

    def __init__(self, i2c, address=ADDRESS):
        self._i2c = i2c
        self.address = address
        self._w = bytearray(3)  # register pointer + up to 2 data bytes
        self._r = bytearray(4)
        self._w1 = memoryview(self._w)[:1]
        self._w2 = memoryview(self._w)[:2]
        self._r1 = memoryview(self._r)[:1]
        self._r2 = memoryview(self._r)[:2]

    # -- identity and bus check -----------------------------------------------------------------
    def version(self):
        """(hardware, firmware) version nibbles of the VERSION register."""
        v = self._read_reg(_VERSION, self._r1, "VERSION")[0]
        if v == 0x00 or v == 0xFF:
            raise SensorError("sound level module at 0x%02x: VERSION reads 0x%02x, not a PCBA-DBM "
                              "module (wrong address or a floating bus)" % (self.address, v))
        return v >> 4, v & 0x0F

    def unique_id(self):
        """The module's random 32-bit unique ID."""
        r = self._read_reg(_ID3, self._r, "ID")
        return (r[0] << 24) | (r[1] << 16) | (r[2] << 8) | r[3]

    def check_bus(self, pattern=0xA5):
        """Write ``pattern`` to SCRATCH and read it back: raises SensorError on a bad bus."""
        self._write_reg(_SCRATCH, pattern)
        got = self._read_reg(_SCRATCH, self._r1, "SCRATCH")[0]
        if got != pattern:
            raise SensorError("sound level module at 0x%02x: SCRATCH read back 0x%02x instead of "
                              "0x%02x: check the I2C wiring and pull-ups"
                              % (self.address, got, pattern))

    # -- settings ---------------------------------------------------------------------------------
    def configure(self, weighting=A_WEIGHTING, tavg_ms=1000):
        """Frequency weighting (Z/A/C) and averaging time (ms); clears power-down and interrupts."""
        if weighting != Z_WEIGHTING and weighting != A_WEIGHTING and weighting != C_WEIGHTING:
            raise ValueError("weighting must be pcba_dbm.A_WEIGHTING, C_WEIGHTING or Z_WEIGHTING, "
                             "got %r" % (weighting,))
        if not 10 <= tavg_ms <= 65535:
            raise ValueError("averaging time must be 10..65535 ms, got %r" % (tavg_ms,))
        self._write_reg(_CONTROL, weighting << 1)
        self._w[0] = _TAVG_HIGH
        self._w[1] = tavg_ms >> 8
        self._w[2] = tavg_ms & 0xFF
        self._write(self._w, "TAVG")

    def settings(self):
        """(weighting, averaging time ms, powered down) as the module holds them."""
        c = self._read_reg(_CONTROL, self._r, "CONTROL")
        return (c[0] >> 1) & 0x03, (c[1] << 8) | c[2], bool(c[0] & _POWER_DOWN)

    def power_down(self):
        """Stop measuring (CONTROL bit 0); see the DS for waking the module again."""
        c = self._read_reg(_CONTROL, self._r1, "CONTROL")[0]
        self._write_reg(_CONTROL, c | _POWER_DOWN)

    def clear(self):
        """Forget MIN, MAX and the history (start of a measurement window)."""
        self._write_reg(_RESET, _CLEAR_HISTORY | _CLEAR_MAX | _CLEAR_MIN)

    def reset(self):
        """System reset: back to the power-up settings; ready again after 5 ms."""
        self._write_reg(_RESET, _RESET_SYSTEM)
        ticks.sleep_ms(READY_MS)

    # -- levels -------------------------------------------------------------------------------------
    def decibel(self):
        """Latest level in whole dB (weighting as configured), 0 while not yet computed."""
        return self._level(self._read_reg(_DECIBEL, self._r1, "DECIBEL")[0], "DECIBEL")

    def min_max(self):
        """(MIN, MAX) levels since the last clear, dB; 0 where not yet computed."""
        r = self._read_reg(_MIN, self._r2, "MIN/MAX")
        return self._level(r[0], "MIN"), self._level(r[1], "MAX")

    def history(self, buf):
        """Read up to 100 history levels, newest first, into ``buf`` (a bytearray); 0 = empty."""
        n = len(buf)
        if n > HISTORY_LEN:
            raise ValueError("the module keeps %d history values, asked for %d" % (HISTORY_LEN, n))
        self._read_reg(_HISTORY, buf, "DBHISTORY")
        for i in range(n):
            self._level(buf[i], "DBHISTORY")
        return buf

    # -- bus transfers --------------------------------------------------------------------------------
    def _level(self, v, what):
        if v > MAX_DB:
            raise SensorError("sound level module at 0x%02x: %s = %d dB is beyond what its "
                              "microphone can measure: a bus fault?" % (self.address, what, v))
        return v

    def _write(self, buf, what):
        try:
            self._i2c.writeto(self.address, buf)
        except OSError:
            raise SensorError("no sound level module answering at 0x%02x on I2C (writing %s): "
                              "check wiring and address" % (self.address, what)) from None

    def _write_reg(self, reg, value):
        self._w[0] = reg
        self._w[1] = value
        self._write(self._w2, "a register")

    def _read_reg(self, reg, buf, what):
        self._w[0] = reg
        self._write(self._w1, what)
        try:
            self._i2c.readfrom_into(self.address, buf)
        except OSError:
            raise SensorError("sound level module at 0x%02x NACKed the read of %s"
                              % (self.address, what)) from None
        return buf
