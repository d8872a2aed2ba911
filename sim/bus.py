"""Simulated SPI, I2C and GPIO with the `machine` module's method names.

A driver handed these objects cannot tell them from a board's ``machine.SPI``/``I2C``/``Pin``;
behind them sit register-level chip models (sim/sx1276.py, sim/sht4x.py, ...).

Chip models implement one of two small protocols:

* SPI device: ``spi_begin()`` when its chip-select goes low, ``spi_byte(out) -> in`` per byte
  clocked, ``spi_end()`` when chip-select goes high.
* I2C device: ``i2c_write(data: bytes, stop: bool)`` and ``i2c_read(n: int) -> bytes``; either may
  raise ``I2CNack`` to NACK (the bus turns that into ``OSError(ENODEV)`` like ``machine.I2C``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Protocol

Handler = Callable[["SimPin"], None]


class SPIDevice(Protocol):
    def spi_begin(self) -> None: ...
    def spi_byte(self, out: int) -> int: ...
    def spi_end(self) -> None: ...


class I2CDevice(Protocol):
    def i2c_write(self, data: bytes, stop: bool = True) -> None: ...
    def i2c_read(self, n: int) -> bytes: ...


class I2CNack(Exception):
    """Raised by an I2C model to NACK an address or a byte."""


class SimPin:
    """A GPIO line, ``machine.Pin``-compatible from the firmware's side.

    The firmware calls ``value()``, ``init()``, ``irq()``; a chip model drives inputs with
    ``drive(level)`` and watches outputs with ``watch(callback)``.
    """

    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, name: str | int, mode: int = IN, value: int = 0) -> None:
        self.name = name
        self.mode = mode
        self.pull: int | None = None
        self._level = 1 if value else 0
        self._irq_handler: Handler | None = None
        self._irq_trigger = 0
        self._watchers: list[Callable[[int], None]] = []

    # -- firmware side (machine.Pin API) ---------------------------------------------------------
    def init(self, mode: int = -1, pull: int | None = -1, value: int | None = None) -> None:
        if mode != -1:
            self.mode = mode
        if pull != -1:
            self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self._level
        if self.mode != self.IN:
            self._set(1 if v else 0)
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)

    def __call__(self, v: int | None = None) -> int | None:
        return self.value(v)

    def irq(self, handler: Handler | None = None, trigger: int = IRQ_RISING | IRQ_FALLING) -> None:
        self._irq_handler = handler
        self._irq_trigger = trigger if handler is not None else 0

    # -- model side -------------------------------------------------------------------------------
    def drive(self, level: int) -> None:
        """Set the level of an input from outside (a chip's DIO line, a door contact)."""
        self._set(1 if level else 0)

    def watch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(level)`` whenever the level changes."""
        self._watchers.append(callback)

    def _set(self, level: int) -> None:
        old, self._level = self._level, level
        if old == level:
            return
        for cb in list(self._watchers):
            cb(level)
        edge = self.IRQ_RISING if level else self.IRQ_FALLING
        if self._irq_handler is not None and self._irq_trigger & edge:
            self._irq_handler(self)

    def __repr__(self) -> str:
        return f"Pin({self.name!r}, level={self._level})"


class SimSPI:
    """An SPI controller; each device is selected by its own chip-select ``SimPin``."""

    def __init__(self, bus_id: int = 0) -> None:
        self.bus_id = bus_id
        self.baudrate = 1_000_000
        self._selected: list[SPIDevice] = []

    def attach(self, cs: SimPin, device: SPIDevice) -> None:
        """Wire ``device`` behind chip-select ``cs`` (active low)."""
        def on_cs(level: int) -> None:
            if level == 0:
                self._selected.append(device)
                device.spi_begin()
            elif device in self._selected:
                self._selected.remove(device)
                device.spi_end()

        cs.watch(on_cs)

    def init(self, baudrate: int = 1_000_000, **_: object) -> None:
        self.baudrate = baudrate

    def _clock(self, out: int) -> int:
        result = 0xFF  # MISO pulled up when nothing drives it
        for dev in self._selected:
            result &= dev.spi_byte(out)
        return result

    def write(self, buf: bytes) -> None:
        for b in bytes(buf):
            self._clock(b)

    def read(self, n: int, write: int = 0) -> bytes:
        return bytes(self._clock(write) for _ in range(n))

    def readinto(self, buf: bytearray | memoryview, write: int = 0) -> None:
        for i in range(len(buf)):
            buf[i] = self._clock(write)

    def write_readinto(self, out_buf: bytes, in_buf: bytearray | memoryview) -> None:
        out = bytes(out_buf)
        for i, b in enumerate(out):
            in_buf[i] = self._clock(b)


class SimI2C:
    """An I2C controller with models at 7-bit addresses."""

    def __init__(self, bus_id: int = 0) -> None:
        self.bus_id = bus_id
        self.devices: dict[int, I2CDevice] = {}

    def attach(self, addr: int, device: I2CDevice) -> None:
        self.devices[addr] = device

    def detach(self, addr: int) -> None:
        """Unplug a device: later transfers to it NACK (a broken sensor cable)."""
        self.devices.pop(addr, None)

    def scan(self) -> list[int]:
        return sorted(self.devices)

    def _dev(self, addr: int) -> I2CDevice:
        dev = self.devices.get(addr)
        if dev is None:
            raise OSError(errno.ENODEV, "ENODEV")
        return dev

    def writeto(self, addr: int, buf: bytes, stop: bool = True) -> int:
        data = bytes(buf)
        try:
            self._dev(addr).i2c_write(data, stop)
        except I2CNack:
            raise OSError(errno.ENODEV, "ENODEV") from None
        return len(data)

    def readfrom_into(self, addr: int, buf: bytearray | memoryview, stop: bool = True) -> None:
        try:
            data = self._dev(addr).i2c_read(len(buf))
        except I2CNack:
            raise OSError(errno.ENODEV, "ENODEV") from None
        buf[: len(data)] = data

    def readfrom(self, addr: int, n: int, stop: bool = True) -> bytes:
        buf = bytearray(n)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto_mem(self, addr: int, memaddr: int, buf: bytes, addrsize: int = 8) -> None:
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big") + bytes(buf))

    def readfrom_mem_into(
        self, addr: int, memaddr: int, buf: bytearray | memoryview, addrsize: int = 8
    ) -> None:
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big"), False)
        self.readfrom_into(addr, buf)

    def readfrom_mem(self, addr: int, memaddr: int, n: int, addrsize: int = 8) -> bytes:
        buf = bytearray(n)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize)
        return bytes(buf)
