"""The Pi's buses in the shapes the portable drivers expect (machine.SPI / machine.Pin).

``drivers.sx127x`` talks to an SPI object and toggles a chip-select pin around each register
access, as on a MicroPython board. On a Pi, the kernel's spidev driver owns chip select (CE0/CE1)
and asserts it for the length of one transfer, so ``SpidevSPI`` turns each chip-select frame
the driver opens into exactly one ``xfer2`` call: writes are gathered until a read needs the
answer or the frame closes. ``GpioPin`` wraps one BCM GPIO of the RPi.GPIO API (RPi.GPIO itself
or a compatible module such as rpi-lgpio on Bookworm), with interrupts through
``add_event_detect``. Nothing here imports hardware modules: the caller passes them in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SPI_HZ = 5_000_000  # well under the SX1276's 10 MHz SCK limit (DS 2.5.6), robust on jumper wires


class SpiFrameError(RuntimeError):
    """A chip-select frame asked for a transfer spidev cannot express as one transaction."""


class SpidevSPI:
    """machine.SPI-like access to ``/dev/spidev<bus>.<device>``, one kernel transfer per frame."""

    def __init__(self, spidev_module: Any, bus: int, device: int, *, max_speed_hz: int = SPI_HZ,
                 ) -> None:
        dev = spidev_module.SpiDev()
        try:
            dev.open(bus, device)
        except (FileNotFoundError, PermissionError, OSError) as exc:
            raise OSError(
                f"cannot open /dev/spidev{bus}.{device}: {exc} (enable SPI with raspi-config, "
                "and run as a user in the 'spi' group)") from exc
        dev.max_speed_hz = max_speed_hz
        dev.mode = 0  # SX1276: CPOL 0, CPHA 0 (DS 2.5.6)
        self._dev = dev
        self._pending = bytearray()
        self._open = False
        self._read_done = False

    def select(self) -> None:
        """Chip select went low: a new frame starts."""
        self._pending.clear()
        self._open = True
        self._read_done = False

    def deselect(self) -> None:
        """Chip select went high: send what the frame still holds."""
        if self._pending:
            self._dev.xfer2(list(self._pending))
            self._pending.clear()
        self._open = False

    def _frame(self, what: str) -> None:
        if not self._open:
            raise SpiFrameError(f"SPI {what} outside a chip-select frame")
        if self._read_done:
            raise SpiFrameError(f"SPI {what} after a read in the same frame: spidev cannot "
                                "keep chip select asserted across two transfers")

    def write(self, buf: bytes | bytearray | memoryview) -> None:
        self._frame("write")
        self._pending += buf

    def readinto(self, buf: bytearray | memoryview, write: int = 0) -> None:
        self._frame("read")
        head = len(self._pending)
        out = list(self._pending) + [write] * len(buf)
        got = self._dev.xfer2(out)
        buf[:] = bytes(got[head:])
        self._pending.clear()
        self._read_done = True

    def write_readinto(self, out_buf: bytes | bytearray | memoryview,
                       in_buf: bytearray | memoryview) -> None:
        self._frame("write_readinto")
        head = len(self._pending)
        got = self._dev.xfer2(list(self._pending) + list(bytes(out_buf)))
        in_buf[:] = bytes(got[head:])
        self._pending.clear()
        self._read_done = True

    def close(self) -> None:
        self._dev.close()


class FrameSelect:
    """The chip-select "pin" the driver toggles: the kernel drives the real line, we frame."""

    IN, OUT = 0, 1

    def __init__(self, spi: SpidevSPI) -> None:
        self._spi = spi
        self._level = 1

    def init(self, mode: int = -1, *args: Any, **kwargs: Any) -> None:
        """Nothing to set up: the line belongs to the spidev driver."""

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self._level
        v = 1 if v else 0
        if v == self._level:
            return None
        self._level = v
        if v == 0:
            self._spi.select()
        else:
            self._spi.deselect()
        return None


class GpioPin:
    """machine.Pin-like view of one BCM GPIO through the RPi.GPIO API."""

    IN, OUT = 0, 1
    IRQ_FALLING, IRQ_RISING = 4, 8

    def __init__(self, gpio: Any, number: int, *, wake: Callable[[], None] | None = None) -> None:
        self._gpio = gpio
        self.number = number
        self._wake = wake  # also called on each edge: wakes whoever waits for the interrupt
        self._mode: int | None = None
        self._detecting = False

    def init(self, mode: int = -1, pull: Any = None, value: int | None = None) -> None:
        g = self._gpio
        if mode == self.OUT:
            initial = g.HIGH if value else g.LOW
            g.setup(self.number, g.OUT, initial=initial)
        elif mode == self.IN:
            g.setup(self.number, g.IN, pull_up_down=g.PUD_OFF)
        self._mode = mode if mode != -1 else self._mode

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return 1 if self._gpio.input(self.number) else 0
        self._gpio.output(self.number, self._gpio.HIGH if v else self._gpio.LOW)
        return None

    def irq(self, handler: Callable[[GpioPin], None] | None = None,
            trigger: int = IRQ_RISING) -> None:
        """Call ``handler(pin)`` on the edge (from RPi.GPIO's callback thread)."""
        g = self._gpio
        if self._detecting:
            g.remove_event_detect(self.number)
            self._detecting = False
        if handler is None:
            return
        if trigger == self.IRQ_RISING | self.IRQ_FALLING:
            edge = g.BOTH
        elif trigger == self.IRQ_FALLING:
            edge = g.FALLING
        else:
            edge = g.RISING
        wake = self._wake

        def on_edge(_channel: int) -> None:
            handler(self)
            if wake is not None:
                wake()

        g.add_event_detect(self.number, edge, callback=on_edge)
        self._detecting = True

    def release(self) -> None:
        """Stop interrupts and give the line back (GPIO.cleanup of this pin only)."""
        if self._detecting:
            self._gpio.remove_event_detect(self.number)
            self._detecting = False
        self._gpio.cleanup(self.number)
