"""``machine`` for the virtual board: every peripheral is a request to the simulation on the host.

Pin, SPI (and SoftSPI), I2C (and SoftI2C), ADC, PWM, WDT, reset/sleep functions and reset causes,
with the method names and errors of MicroPython's ``machine`` (I2C NACK -> OSError(19) ENODEV).
Constant values follow sim.bus.SimPin (pins) and the ESP32 port (reset causes).
"""



import json

import _hw

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_freq = _hw.cfg["freq"]


def _hex(buf):
    return bytes(buf).hex()


def _pin_id(p):
    return p._id if isinstance(p, Pin) else p


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        self._id = id
        self._j = json.dumps(id)
        if mode != -1 or pull != -1 or value is not None:
            self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        _hw.call(json.dumps({"op": "pin_init", "p": self._id, "m": mode, "u": pull, "v": value}))

    def value(self, v=None):
        if v is None:
            return _hw.call('{"op":"pin_get","p":%s}' % self._j)["v"]
        _hw.call('{"op":"pin_set","p":%s,"v":%d}' % (self._j, 1 if v else 0))

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(0 if self.value() else 1)

    def irq(self, handler=None, trigger=12, *, priority=1, wake=None, hard=False):
        if handler is None:
            _hw.handlers.pop(self._id, None)
            trigger = 0
        else:
            _hw.handlers[self._id] = (self, handler)
        _hw.call('{"op":"pin_irq","p":%s,"t":%d}' % (self._j, trigger))

    def __repr__(self):
        return "Pin(%s)" % self._j


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id=-1, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self._id = id
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit)

    def init(self, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=0, sck=None,
             mosi=None, miso=None):
        _hw.call('{"op":"spi_init","b":%d,"baud":%d,"pol":%d,"pha":%d}'
                 % (self._id, baudrate, polarity, phase))

    def deinit(self):
        pass

    def write(self, buf):
        _hw.call('{"op":"spi_write","b":%d,"w":"%s"}' % (self._id, _hex(buf)))

    def read(self, nbytes, write=0):
        r = _hw.call('{"op":"spi_read","b":%d,"n":%d,"x":%d}' % (self._id, nbytes, write))
        return bytes.fromhex(r["r"])

    def readinto(self, buf, write=0):
        r = _hw.call('{"op":"spi_read","b":%d,"n":%d,"x":%d}' % (self._id, len(buf), write))
        buf[0:len(buf)] = bytes.fromhex(r["r"])

    def write_readinto(self, write_buf, read_buf):
        r = _hw.call('{"op":"spi_xfer","b":%d,"w":"%s"}' % (self._id, _hex(write_buf)))
        data = bytes.fromhex(r["r"])
        read_buf[0:len(data)] = data


class SoftSPI(SPI):
    """Bit-banged SPI: bus id -1 on the host."""

    def __init__(self, baudrate=500000, *, polarity=0, phase=0, bits=8, firstbit=0, sck=None,
                 mosi=None, miso=None):
        SPI.__init__(self, -1, baudrate, polarity=polarity, phase=phase, bits=bits,
                     firstbit=firstbit)


class I2C:
    def __init__(self, id=-1, *, scl=None, sda=None, freq=400000, timeout=50000):
        self._id = id
        self._freq = freq

    def init(self, *, scl=None, sda=None, freq=400000):
        self._freq = freq

    def scan(self):
        return _hw.call('{"op":"i2c_scan","b":%d}' % self._id)["r"]

    def writeto(self, addr, buf, stop=True):
        return _hw.call('{"op":"i2c_write","b":%d,"a":%d,"w":"%s","s":%d}'
                        % (self._id, addr, _hex(buf), 1 if stop else 0))["n"]

    def writevto(self, addr, vector, stop=True):
        return self.writeto(addr, b"".join(vector), stop)

    def readfrom_into(self, addr, buf, stop=True):
        r = _hw.call('{"op":"i2c_read","b":%d,"a":%d,"n":%d,"s":%d}'
                     % (self._id, addr, len(buf), 1 if stop else 0))
        buf[0:len(buf)] = bytes.fromhex(r["r"])

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        _hw.call('{"op":"i2c_write_mem","b":%d,"a":%d,"m":%d,"z":%d,"w":"%s"}'
                 % (self._id, addr, memaddr, addrsize, _hex(buf)))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        r = _hw.call('{"op":"i2c_read_mem","b":%d,"a":%d,"m":%d,"z":%d,"n":%d}'
                     % (self._id, addr, memaddr, addrsize, len(buf)))
        buf[0:len(buf)] = bytes.fromhex(r["r"])

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)


class SoftI2C(I2C):
    """Bit-banged I2C: bus id -1 on the host."""

    def __init__(self, scl=None, sda=None, *, freq=400000, timeout=50000):
        I2C.__init__(self, -1, scl=scl, sda=sda, freq=freq)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, pin, *, atten=None):
        self._j = json.dumps(_pin_id(pin))

    def _read(self):
        return _hw.call('{"op":"adc","p":%s}' % self._j)

    def read_u16(self):
        return self._read()["u16"]

    def read_uv(self):
        return self._read()["uv"]

    def read(self):  # ESP32's 12-bit legacy reading
        return self.read_u16() >> 4

    def atten(self, atten):
        pass

    def width(self, bits):
        pass


class PWM:
    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        self._pin = _pin_id(dest)
        self._freq = 5000 if freq is None else freq
        self._duty = 0
        if duty_ns is not None:
            self._duty = self._ns_to_u16(duty_ns)
        if duty_u16 is not None:
            self._duty = duty_u16
        self._send()

    def _ns_to_u16(self, ns):
        return min(65535, max(0, ns * self._freq * 65536 // 1000000000))

    def _send(self):
        _hw.call(json.dumps({"op": "pwm", "p": self._pin, "f": self._freq, "d": self._duty}))

    def init(self, *, freq=None, duty_u16=None, duty_ns=None):
        if freq is not None:
            self._freq = freq
        if duty_ns is not None:
            self._duty = self._ns_to_u16(duty_ns)
        if duty_u16 is not None:
            self._duty = duty_u16
        self._send()

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value
        self._send()

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._duty = value
        self._send()

    def duty_ns(self, value=None):
        if value is None:
            return self._duty * 1000000000 // (self._freq * 65536)
        self._duty = self._ns_to_u16(value)
        self._send()

    def duty(self, value=None):  # ESP32's 10-bit legacy duty
        if value is None:
            return self._duty >> 6
        self.duty_u16(min(1023, max(0, value)) << 6)

    def deinit(self):
        _hw.call(json.dumps({"op": "pwm", "p": self._pin, "f": None, "d": None}))


class WDT:
    def __init__(self, id=0, timeout=5000):
        _hw.call('{"op":"wdt","ms":%d}' % timeout)

    def feed(self):
        _hw.call('{"op":"wdt_feed"}')


def unique_id():
    return bytes.fromhex(_hw.cfg["uid"])


def reset_cause():
    return _hw.cfg["cause"]


def reset():
    _hw.end("reset", kind="hard")


def soft_reset():
    _hw.end("reset", kind="soft")


def deepsleep(time_ms=None):
    _hw.end("deepsleep", ms=time_ms)


def lightsleep(time_ms=None):
    """Sleep in virtual time; returns early when a pin IRQ fires (None: until one does)."""
    _hw.sleep(1 << 62 if time_ms is None else time_ms * 1000, True, True)


def idle():
    """Wait for the next interrupt or system tick (1 ms)."""
    _hw.sleep(1000, True)


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    _freq = hz


def disable_irq():
    return _hw.mask()


def enable_irq(state=0):
    _hw.unmask(state)


class RTC:
    """The real-time clock and its slow memory (ESP32 port API): both survive deep sleep and
    resets, and are lost when the power goes."""

    def __init__(self, id=0):
        pass

    def memory(self, data=None):
        if data is None:
            return bytes.fromhex(_hw.cfg["rtc"])
        _hw.call('{"op":"rtc_memory","d":"%s"}' % _hex(data))
        _hw.cfg["rtc"] = _hex(data)

    def datetime(self, dt=None):
        import time

        if dt is None:
            t = time.gmtime()
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        off = _hw.cfg["rtco"] + (secs - time.time()) * 1000000
        _hw.call('{"op":"rtc_set","o":%d}' % off)
        _hw.cfg["rtco"] = off
        _hw.epoch_us = _hw.cfg["e"] + off

    def init(self, dt):
        self.datetime(dt)
