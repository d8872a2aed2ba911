"""Adafruit seesaw over I2C, as used by the STEMMA capacitive soil sensor (Adafruit product 4026).

Reference = Adafruit's seesaw protocol as documented in the "Adafruit seesaw" learn guide and its
reference drivers (Arduino Adafruit_seesaw, CircuitPython adafruit_seesaw). Facts used here:

* the soil sensor answers at 0x36 (0x36..0x39 with its address jumpers);
* every register is a (module base, function) byte pair: a write is [base, function, data...];
  a read is the two-byte write, a pause while the seesaw's firmware prepares the answer, then a
  plain read of the answer bytes (big-endian);
* STATUS module 0x00: HW_ID 0x01 reads 0x55 on the SAMD09 (0x87 on an ATtiny8x7), VERSION 0x02,
  TEMP 0x04 (4 bytes, 16.16 fixed point degC, read as signed like the Arduino driver's int32:
  CircuitPython masks the top two bits, which would turn a frost reading into nonsense),
  SWRST 0x7F (write 0xFF: software reset);
* TOUCH module 0x0F: channel 0 at function 0x10 reads the 16-bit capacitance count of the probe
  (about 200 in dry air to about 2000 in water); a value above 4095 is a bad read to retry;
* pauses: the reference drivers wait 3..5 ms before reading a touch value and 1..5 ms before
  reading the temperature; after a software reset the chip is away (NACKs) while it restarts.

Integer maths only on the measurement path: the temperature comes back in 0.01 degC and the
moisture in 0.1 % steps, so no float is boxed on the heap of a 32-bit port.

    ss = Seesaw(i2c)            # machine.I2C, an smbus2 adapter or sim.bus.SimI2C
    ss.begin()                  # checks HW_ID, raises SensorError naming what is wrong
    raw = ss.touch()            # 200..2000 counts
    t = ss.temperature_centi()  # 2153 means 21.53 degC
    permille = moisture_permille(raw, 200, 2000)   # 0..1000 (0.1 % steps)
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers import ticks

ADDRESS = const(0x36)  # STEMMA soil sensor default address

# Module bases and functions (seesaw register map).
_STATUS_BASE = const(0x00)
_STATUS_HW_ID = const(0x01)
_STATUS_VERSION = const(0x02)
_STATUS_TEMP = const(0x04)
_STATUS_SWRST = const(0x7F)
_TOUCH_BASE = const(0x0F)
_TOUCH_CHANNEL_OFFSET = const(0x10)

HW_ID_SAMD09 = const(0x55)
HW_ID_ATTINY8X7 = const(0x87)
_SWRST_VALUE = const(0xFF)

# Pauses between the register write and the read (ms). The reference drivers use 3..5 ms for a
# touch read and 1..5 ms for the temperature; we take the upper ends: a short read returns junk.
_STATUS_DELAY_MS = const(1)
_TEMP_DELAY_MS = const(5)
_TOUCH_DELAY_MS = const(5)
_TOUCH_BAD = const(4095)  # a touch count above this is a failed conversion (reference drivers)
_TOUCH_TRIES = const(4)
# After SWRST the chip restarts and NACKs; poll HW_ID every 10 ms, at most 10 times.
_RESET_POLL_MS = const(10)
_RESET_TRIES = const(10)
# A sensor whose supply the node switches: how long its firmware may take to start (CircuitPython's
# driver waits 500 ms after a reset; we poll and go on as soon as it answers).
_POWER_UP_MS = const(600)

# Plausibility of the chip's temperature sensor (0.01 degC): outside it, the read is junk.
_TEMP_MIN_CENTI = const(-5000)
_TEMP_MAX_CENTI = const(12500)


class SensorError(Exception):
    """The seesaw is missing or answered with bad data; the message says which and what to check."""


def moisture_permille(raw, dry, wet):
    """Raw touch counts -> soil moisture in 0.1 % steps (0..1000), linear between dry and wet points."""
    if wet <= dry:
        raise ValueError("soil calibration: wet point (%d) must be above the dry point (%d)"
                         % (wet, dry))
    if raw <= dry:
        return 0
    if raw >= wet:
        return 1000
    span = wet - dry
    return ((raw - dry) * 1000 + span // 2) // span


def centi_celsius_16_16(b0, b1, b2, b3):
    """Four big-endian bytes of a signed 16.16 fixed-point degC value -> 0.01 degC, rounded.

    Split into a signed integer half and the fraction so no intermediate exceeds a small int.
    """
    whole = (b0 << 8) | b1
    if whole & 0x8000:
        whole -= 0x10000
    frac = (b2 << 8) | b3
    return whole * 100 + ((frac * 100 + 32768) >> 16)


class Seesaw:
    """One seesaw at ``address`` on ``i2c`` (anything with writeto/readfrom_into)."""

    def __init__(self, i2c, address=ADDRESS):
        if not 0x08 <= address <= 0x77:
            raise ValueError("seesaw I2C address must be 0x08..0x77, got %r" % (address,))
        self._i2c = i2c
        self.address = address
        self._reg = bytearray(2)
        self._w3 = bytearray(3)
        self._buf1 = bytearray(1)
        self._buf2 = bytearray(2)
        self._buf4 = bytearray(4)
        self.hw_id = None

    # -- chip services ---------------------------------------------------------------------------
    def begin(self, reset=False):
        """Optionally soft-reset, then check the HW_ID; returns it or raises SensorError."""
        if reset:
            self.soft_reset()
        hw = self.read_hw_id()
        if hw != HW_ID_SAMD09 and hw != HW_ID_ATTINY8X7:
            raise SensorError("device at 0x%02x is not a seesaw: HW_ID 0x%02x, expected 0x55 "
                              "(SAMD09) or 0x87 (ATtiny8x7)" % (self.address, hw))
        self.hw_id = hw
        return hw

    def read_hw_id(self):
        """The STATUS HW_ID byte (0x55 on the soil sensor's SAMD09)."""
        self._read(_STATUS_BASE, _STATUS_HW_ID, self._buf1, _STATUS_DELAY_MS)
        return self._buf1[0]

    def version(self):
        """The STATUS VERSION word: product code in the high 16 bits, date code below."""
        b = self._buf4
        self._read(_STATUS_BASE, _STATUS_VERSION, b, _STATUS_DELAY_MS)
        return (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]

    def soft_reset(self):
        """Write SWRST and wait until the chip answers again (at most ~100 ms)."""
        w = self._w3
        w[0] = _STATUS_BASE
        w[1] = _STATUS_SWRST
        w[2] = _SWRST_VALUE
        self._write(w)
        self.wait_ready(_RESET_POLL_MS * _RESET_TRIES, "after a software reset")

    def wait_ready(self, timeout_ms=_POWER_UP_MS, what="after power-up"):
        """Poll every 10 ms until the chip acknowledges its address (it NACKs while it boots)."""
        reg = self._reg
        for _ in range(timeout_ms // _RESET_POLL_MS):
            ticks.sleep_ms(_RESET_POLL_MS)
            reg[0] = _STATUS_BASE
            reg[1] = _STATUS_HW_ID
            try:
                self._i2c.writeto(self.address, reg)
            except OSError:
                continue
            return
        raise SensorError("seesaw at 0x%02x did not answer %d ms %s: check its supply"
                          % (self.address, timeout_ms, what))

    # -- measurements ----------------------------------------------------------------------------
    def touch(self, channel=0):
        """Capacitance count of touch channel ``channel`` (soil probe: channel 0), retried if bad."""
        b = self._buf2
        for _ in range(_TOUCH_TRIES):
            self._read(_TOUCH_BASE, _TOUCH_CHANNEL_OFFSET + channel, b, _TOUCH_DELAY_MS)
            raw = (b[0] << 8) | b[1]
            if raw <= _TOUCH_BAD:
                return raw
            ticks.sleep_ms(1)
        raise SensorError("seesaw at 0x%02x: no valid touch reading in %d tries (last %d): "
                          "check the probe" % (self.address, _TOUCH_TRIES, raw))

    def temperature_centi(self):
        """The chip's temperature in 0.01 degC (STATUS TEMP, 16.16 fixed point), as an int."""
        b = self._buf4
        self._read(_STATUS_BASE, _STATUS_TEMP, b, _TEMP_DELAY_MS)
        t = centi_celsius_16_16(b[0], b[1], b[2], b[3])
        if not _TEMP_MIN_CENTI <= t <= _TEMP_MAX_CENTI:
            raise SensorError("seesaw at 0x%02x: implausible temperature %d.%02d degC"
                              % (self.address, t // 100, t % 100))
        return t

    # -- bus transfers (the register and answer buffers are reused: no allocation on success) ----
    def _write(self, buf):
        try:
            self._i2c.writeto(self.address, buf)
        except OSError:
            raise SensorError("no seesaw answering at 0x%02x on I2C: check wiring and address"
                              % self.address) from None

    def _read(self, base, function, buf, delay_ms):
        reg = self._reg
        reg[0] = base
        reg[1] = function
        self._write(reg)
        ticks.sleep_ms(delay_ms)
        try:
            self._i2c.readfrom_into(self.address, buf)
        except OSError:
            raise SensorError("seesaw at 0x%02x NACKed the read of register 0x%02x/0x%02x"
                              % (self.address, base, function)) from None
