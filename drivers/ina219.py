"""TI INA219 zero-drift, bidirectional current/power monitor with I2C interface.

DS = TI SBOS448G, "INA219 Zero-Drift, Bidirectional Current/Power Monitor With I2C Interface"
(revised December 2015). Comments cite its sections: 8.5 Programming (calibration), 8.6 Register
Maps (7.6.x register details) and the register names used there.

    ina = INA219(i2c, 0x40)              # machine.I2C, an smbus2 adapter or sim.bus.SimI2C
    ina.configure()                      # 32 V bus range, +/-320 mV shunt range, 12-bit, continuous
    ina.calibrate(0.1, 3.2)              # 0.1 ohm shunt, 3.2 A maximum expected current
    ina.current_ua(), ina.bus_voltage_mv(), ina.power_uw(), ina.shunt_voltage_uv()

Readings are integers (uA, uW, uV, mV) so the node's measurement path allocates no floats.
Registers are 16-bit big-endian; a read sets the register pointer then reads two bytes
(DS 8.5.1 "Writing to/Reading from the INA219"). Only ``writeto`` and ``readfrom_into`` are used
on the bus. A missing chip raises SensorError naming the address.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


# DS 8.6 Register Maps: register pointer addresses.
_REG_CONFIG = const(0x00)
_REG_SHUNT_VOLTAGE = const(0x01)
_REG_BUS_VOLTAGE = const(0x02)
_REG_POWER = const(0x03)
_REG_CURRENT = const(0x04)
_REG_CALIBRATION = const(0x05)

# DS 8.6.2.1 Configuration Register (00h) bits.
_CONFIG_RST = const(0x8000)
_BRNG_SHIFT = const(13)  # 0: 16 V FSR, 1: 32 V FSR
_PG_SHIFT = const(11)  # PGA gain /1 /2 /4 /8: +/-40, 80, 160, 320 mV shunt range
_BADC_SHIFT = const(7)
_SADC_SHIFT = const(3)
CONFIG_DEFAULT = const(0x399F)  # DS: power-on value (32 V, /8, 12-bit, shunt+bus continuous)

# DS Table 6 (MODE): operating modes.
MODE_POWER_DOWN = const(0)
MODE_SHUNT_TRIGGERED = const(1)
MODE_BUS_TRIGGERED = const(2)
MODE_SHUNT_BUS_TRIGGERED = const(3)
MODE_ADC_OFF = const(4)
MODE_SHUNT_CONTINUOUS = const(5)
MODE_BUS_CONTINUOUS = const(6)
MODE_SHUNT_BUS_CONTINUOUS = const(7)

# DS Table 5 (BADC/SADC): resolution or number of 12-bit samples averaged.
ADC_9BIT = const(0x0)
ADC_10BIT = const(0x1)
ADC_11BIT = const(0x2)
ADC_12BIT = const(0x3)
ADC_AVG_2 = const(0x9)
ADC_AVG_4 = const(0xA)
ADC_AVG_8 = const(0xB)
ADC_AVG_16 = const(0xC)
ADC_AVG_32 = const(0xD)
ADC_AVG_64 = const(0xE)
ADC_AVG_128 = const(0xF)

# DS 8.6.3.2 Bus Voltage Register (02h): BD12..BD0 in bits 15..3, LSB 4 mV; CNVR bit 1; OVF bit 0.
_BUS_LSB_MV = const(4)
_CNVR = const(0x0002)
_OVF = const(0x0001)
# DS 8.6.3.1 Shunt Voltage Register (01h): LSB 10 uV, two's complement, sign-extended.
_SHUNT_LSB_UV = const(10)
# DS 8.5.1 Programming the Calibration Register: Cal = trunc(0.04096 / (Current_LSB * RSHUNT));
# 0.04096 is an internal fixed value. Power_LSB = 20 * Current_LSB. Bit 0 (FS0) is not used.
_POWER_LSB_FACTOR = const(20)
_ADDRESSES = range(0x40, 0x50)  # DS Table 1: A0/A1 strapped to GND, VS+, SDA or SCL

_BUS_RANGES = (16, 32)
_GAINS = (1, 2, 4, 8)


class SensorError(Exception):
    """The INA219 did not answer, or was asked for something it cannot do."""


def _signed16(v):
    return v - 0x10000 if v & 0x8000 else v


class INA219:
    """One INA219 at ``address`` (0x40..0x4F) on ``i2c``."""

    def __init__(self, i2c, address=0x40):
        if address not in _ADDRESSES:
            raise ValueError("INA219 address must be 0x40..0x4F (DS Table 1), got %r" % (address,))
        self._i2c = i2c
        self.address = address
        self._buf = bytearray(3)  # pointer + 16-bit value: reused by every transfer
        self._rx = bytearray(2)
        self.current_lsb_ua = 0  # set by calibrate()
        self.calibration = 0
        self.config = CONFIG_DEFAULT

    # -- registers -------------------------------------------------------------------------------
    def read_register(self, reg):
        """The 16-bit value of register ``reg`` (DS 8.5.1: pointer write, then two-byte read)."""
        buf = self._buf
        buf[0] = reg
        try:
            self._i2c.writeto(self.address, memoryview(buf)[:1])
            self._i2c.readfrom_into(self.address, self._rx)
        except OSError:
            raise SensorError("no INA219 answering at 0x%02x on I2C: check wiring and address"
                              % self.address) from None
        return (self._rx[0] << 8) | self._rx[1]

    def write_register(self, reg, value):
        """Write a 16-bit value to register ``reg``, MSB first."""
        buf = self._buf
        buf[0] = reg
        buf[1] = (value >> 8) & 0xFF
        buf[2] = value & 0xFF
        try:
            self._i2c.writeto(self.address, buf)
        except OSError:
            raise SensorError("no INA219 answering at 0x%02x on I2C: check wiring and address"
                              % self.address) from None

    # -- set-up --------------------------------------------------------------------------------------
    def reset(self):
        """Reset every register to its power-on value (DS 8.6.2.1, RST bit); clears calibration."""
        self.write_register(_REG_CONFIG, _CONFIG_RST)
        self.config = CONFIG_DEFAULT
        self.calibration = 0
        self.current_lsb_ua = 0

    def configure(self, bus_range_v=32, gain=8, bus_adc=ADC_12BIT, shunt_adc=ADC_12BIT,
                  mode=MODE_SHUNT_BUS_CONTINUOUS):
        """Bus range 16/32 V, PGA gain 1/2/4/8 (shunt range 40/80/160/320 mV), ADC settings."""
        if bus_range_v not in _BUS_RANGES:
            raise ValueError("INA219 bus range must be 16 or 32 V, got %r" % (bus_range_v,))
        if gain not in _GAINS:
            raise ValueError("INA219 PGA gain must be 1, 2, 4 or 8, got %r" % (gain,))
        for adc in (bus_adc, shunt_adc):
            if not (0 <= adc <= 3 or 9 <= adc <= 15):
                raise ValueError("INA219 ADC setting must be one of the ADC_* values, got %r"
                                 % (adc,))
        if not 0 <= mode <= 7:
            raise ValueError("INA219 mode must be 0..7, got %r" % (mode,))
        cfg = ((1 if bus_range_v == 32 else 0) << _BRNG_SHIFT
               | _GAINS.index(gain) << _PG_SHIFT
               | bus_adc << _BADC_SHIFT | shunt_adc << _SADC_SHIFT | mode)
        self.write_register(_REG_CONFIG, cfg)
        self.config = cfg

    def calibrate(self, shunt_ohms, max_current_a):
        """Program the Calibration Register for a shunt and the largest expected current.

        DS 8.5.1: Current_LSB = Maximum Expected Current / 2^15 (rounded up here to a whole uA),
        Cal = trunc(0.04096 / (Current_LSB * RSHUNT)). Returns the current LSB in uA.
        """
        if not shunt_ohms > 0 or not max_current_a > 0:
            raise ValueError("INA219 calibration: shunt and maximum current must be positive")
        lsb_ua = int(max_current_a * 1000000 / 32768)
        if lsb_ua * 32768 < max_current_a * 1000000:
            lsb_ua += 1
        cal = int(40960.0 / (lsb_ua * shunt_ohms))  # 0.04096 / (lsb_ua * 1e-6 * R)
        if cal > 0xFFFE or cal < 2:
            raise ValueError("INA219 calibration %d is out of 2..65534 for %r ohm and %r A: use "
                             "a larger shunt or maximum current" % (cal, shunt_ohms, max_current_a))
        cal &= 0xFFFE  # FS0 is a void bit
        self.write_register(_REG_CALIBRATION, cal)
        self.current_lsb_ua = lsb_ua
        self.calibration = cal
        return lsb_ua

    def ensure_calibrated(self):
        """Rewrite configuration and calibration if the chip lost them (a brown-out resets it to
        power-on values and the Current register then reads 0); True when it had to."""
        if self.calibration == 0:
            return False
        if (self.read_register(_REG_CALIBRATION) == self.calibration
                and self.read_register(_REG_CONFIG) == self.config):
            return False
        self.write_register(_REG_CONFIG, self.config)
        self.write_register(_REG_CALIBRATION, self.calibration)
        return True

    # -- measurements ---------------------------------------------------------------------------------
    def shunt_voltage_uv(self):
        """Shunt voltage in uV (signed; DS 8.6.3.1, LSB 10 uV)."""
        return _signed16(self.read_register(_REG_SHUNT_VOLTAGE)) * _SHUNT_LSB_UV

    def bus_voltage_mv(self):
        """Bus voltage in mV (DS 8.6.3.2: bits 15..3, LSB 4 mV)."""
        return (self.read_register(_REG_BUS_VOLTAGE) >> 3) * _BUS_LSB_MV

    def flags(self):
        """(conversion ready, math overflow) from the Bus Voltage Register's CNVR and OVF bits."""
        v = self.read_register(_REG_BUS_VOLTAGE)
        return bool(v & _CNVR), bool(v & _OVF)

    def conversion_ready(self):
        """CNVR: a conversion finished since the last Power read or mode write (DS 8.6.3.2)."""
        return self.flags()[0]

    def overflow(self):
        """OVF: the Power or Current calculation is out of range (DS 8.6.3.2)."""
        return self.flags()[1]

    def current_ua(self):
        """Current in uA (signed; Current Register times Current_LSB). Needs calibrate()."""
        if not self.current_lsb_ua:
            raise SensorError("INA219 at 0x%02x: calibrate() before reading current"
                              % self.address)
        return _signed16(self.read_register(_REG_CURRENT)) * self.current_lsb_ua

    def power_uw(self):
        """Power in uW (Power Register times 20 * Current_LSB); reading it clears CNVR."""
        if not self.current_lsb_ua:
            raise SensorError("INA219 at 0x%02x: calibrate() before reading power" % self.address)
        return self.read_register(_REG_POWER) * _POWER_LSB_FACTOR * self.current_lsb_ua

    def trigger(self, mode=MODE_SHUNT_BUS_TRIGGERED):
        """Start one conversion in a triggered mode (DS 8.3.1: write the mode to start)."""
        if not 1 <= mode <= 3:
            raise ValueError("INA219 triggered modes are 1..3, got %r" % (mode,))
        self.config = (self.config & ~7) | mode
        self.write_register(_REG_CONFIG, self.config)
