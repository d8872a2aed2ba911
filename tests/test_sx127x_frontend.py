"""The `sx127x` front end through its Pi adapters, against the register-level SX1276 model.

What cannot exist here is mocked at its real interface, and only that: the kernel's spidev
device (``SimSpidev``: one ``xfer2`` = chip select asserted for the transfer, clocked through
the simulated SPI bus into the SX1276 model) and the RPi.GPIO module (``SimGPIO``: BCM lines
backed by the model's DIO0/NRESET pins). Everything above them, the adapters in
``gateway.radio.pi``, the shared driver and the front end, is the code that runs on a Pi.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from drivers import ticks
from drivers.sx127x import SX127x
from gateway.config import RadioConfig, Sx127xConfig
from gateway.counters import Counters
from gateway.radio import open_frontend
from gateway.radio.frame import TxRequest
from gateway.radio.pi import FrameSelect, GpioPin, SpidevSPI, SpiFrameError
from gateway.radio.sx127x import Sx127xFrontEnd, TxError
from protocol.airtime import time_on_air_us
from sim.bus import SimPin, SimSPI
from sim.channel import RadioChannel
from sim.clock import VirtualClock
from sim.sx1276 import SX1276Model

DIO0, RESET = 22, 25


class SimSpidev:
    """Stands for /dev/spidev0.1: each transfer asserts chip select for exactly its length."""

    def __init__(self, spi: SimSPI | None, cs: SimPin | None) -> None:
        self._spi, self._cs = spi, cs
        self.max_speed_hz = 0
        self.mode = -1
        self.transfers: list[list[int]] = []
        self.closed = False

    def open(self, bus: int, device: int) -> None:
        if self._spi is None:
            raise FileNotFoundError(f"/dev/spidev{bus}.{device}")

    def xfer2(self, data: list[int]) -> list[int]:
        assert self._spi is not None and self._cs is not None
        self.transfers.append(list(data))
        got = bytearray(len(data))
        self._cs.value(0)
        self._spi.write_readinto(bytes(data), got)
        self._cs.value(1)
        return list(got)

    def close(self) -> None:
        self.closed = True


class SimGPIO:
    """The RPi.GPIO API over simulated lines (BCM numbering)."""

    BCM, IN, OUT, HIGH, LOW, PUD_OFF = 11, 1, 0, 1, 0, 20
    RISING, FALLING, BOTH = 31, 32, 33

    def __init__(self, pins: dict[int, SimPin]) -> None:
        self.pins = pins
        self.mode: int | None = None
        self.cleaned: list[int] = []

    def setwarnings(self, flag: bool) -> None:
        pass

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setup(self, pin: int, direction: int, initial: int | None = None,
              pull_up_down: int | None = None) -> None:
        assert self.mode == self.BCM, "setmode(BCM) first"
        p = self.pins[pin]
        p.init(SimPin.OUT if direction == self.OUT else SimPin.IN)
        if initial is not None:
            p.value(initial)

    def output(self, pin: int, value: int) -> None:
        self.pins[pin].value(value)

    def input(self, pin: int) -> int:
        return self.pins[pin].value()

    def add_event_detect(self, pin: int, edge: int, callback: Callable[[int], None]) -> None:
        trigger = {self.RISING: SimPin.IRQ_RISING, self.FALLING: SimPin.IRQ_FALLING,
                   self.BOTH: SimPin.IRQ_RISING | SimPin.IRQ_FALLING}[edge]
        self.pins[pin].irq(handler=lambda _p: callback(pin), trigger=trigger)

    def remove_event_detect(self, pin: int) -> None:
        self.pins[pin].irq(None)

    def cleanup(self, pin: int | None = None) -> None:
        self.cleaned.append(pin)


def bound(clock: VirtualClock) -> Callable[[str, Callable[[], None]], Any]:
    """A spawner running a target as a participant of ``clock`` with drivers.ticks bound."""
    def spawn(name: str, target: Callable[[], None]) -> Any:
        box: dict[str, Any] = {}

        def run() -> None:
            ticks.bind(box["p"])
            try:
                target()
            finally:
                ticks.bind(None)

        box["p"] = clock.spawn(name, run)
        return box["p"]
    return spawn


class Bench:
    """A gateway SX1276 behind spidev/RPi.GPIO stand-ins, and a node radio on the same channel."""

    def __init__(self, *, chip: bool = True) -> None:
        self.clock = VirtualClock(speed=8.0)
        self.channel = RadioChannel(self.clock, seed=5)
        self.gw = SX1276Model(self.clock, self.channel, (0.0, 0.0), name="gw")
        self.node = SX1276Model(self.clock, self.channel, (600.0, 0.0), name="node")
        spi, cs = self.gw.wire() if chip else (None, None)
        self.spidev = SimSpidev(spi, cs)
        self.gpio = SimGPIO({DIO0: self.gw.dio0, RESET: self.gw.reset})
        self.cfg = RadioConfig(frontend="sx127x", frequency_hz=868_100_000, spreading_factor=7,
                               bandwidth_khz=125,
                               sx127x=Sx127xConfig(spi_bus=0, spi_device=1, dio0_gpio=DIO0,
                                                   reset_gpio=RESET))
        self.counters = Counters()
        self.frontend = Sx127xFrontEnd(
            self.cfg, counters=self.counters,
            spidev_module=SimpleNamespace(SpiDev=lambda: self.spidev), gpio_module=self.gpio,
            spawn=bound(self.clock), idle_ms=ticks.sleep_ms, wall=self.clock.epoch)
        self.spawn = bound(self.clock)
        self._runner: threading.Thread | None = None

    def start(self, seconds: float) -> None:
        self._runner = threading.Thread(
            target=self.clock.run, kwargs={"until_us": int(seconds * 1e6)}, daemon=True)
        self._runner.start()

    def stop(self) -> None:
        self.clock.stop()

    def node_driver(self) -> SX127x:
        spi, cs = self.node.wire()
        return SX127x(spi, cs, reset=self.node.reset, dio0=self.node.dio0, freq_hz=868_100_000,
                      sf=7, invert_iq_rx=True)


def test_spidev_adapter_makes_one_transfer_per_chip_select_frame() -> None:
    dev = SimSpidev(*SX1276Model(VirtualClock(), RadioChannel(VirtualClock())).wire())
    spi = SpidevSPI(SimpleNamespace(SpiDev=lambda: dev), 0, 1)
    cs = FrameSelect(spi)
    assert (dev.max_speed_hz, dev.mode) == (5_000_000, 0)
    cs.value(0)
    spi.write(b"\x42")  # RegVersion, read: address byte then one data byte
    buf = bytearray(1)
    spi.readinto(buf)
    cs.value(1)
    assert buf[0] == 0x12 and dev.transfers == [[0x42, 0x00]]
    cs.value(0)
    spi.write(b"\x81")
    spi.write(b"\x80")  # two writes in one frame: one transfer at deselect
    cs.value(1)
    assert dev.transfers[-1] == [0x81, 0x80]
    cs.value(0)
    spi.readinto(buf)
    with pytest.raises(SpiFrameError, match="after a read"):
        spi.write(b"\x00")
    cs.value(1)
    with pytest.raises(SpiFrameError, match="outside a chip-select frame"):
        spi.write(b"\x00")


def test_gpio_pin_adapter_drives_reads_and_calls_back_on_edges() -> None:
    line = SimPin("dio0", SimPin.IN, 0)
    gpio = SimGPIO({4: line})
    gpio.setmode(gpio.BCM)
    woke: list[str] = []
    pin = GpioPin(gpio, 4, wake=lambda: woke.append("wake"))
    pin.init(pin.IN)
    seen: list[GpioPin] = []
    pin.irq(handler=seen.append, trigger=pin.IRQ_RISING)
    line.drive(1)
    line.drive(0)
    assert seen == [pin] and woke == ["wake"] and pin.value() == 0
    pin.release()
    line.drive(1)
    assert len(seen) == 1 and gpio.cleaned == [4]


def test_uplinks_are_heard_and_a_downlink_goes_out_at_its_tmst() -> None:
    bench = Bench()
    rx_at: dict[str, Any] = {}

    def node() -> None:
        radio = bench.node_driver()
        ticks.sleep_ms(300)
        radio.send(b"uplink from the street")
        rx_at["end"] = ticks.ticks_us()
        radio.set_invert_iq(rx=True)
        ticks.sleep_ms(900)
        rx_at["pkt"] = radio.receive(300)  # RX1, one second after the uplink ended
        rx_at["at"] = ticks.ticks_us()

    async def gateway() -> tuple[Any, int]:
        async with bench.frontend as fe:
            bench.spawn("node", node)
            frame = await asyncio.wait_for(fe.queue.get(), 10)
            await fe.send(TxRequest(phy=b"downlink", tmst_us=frame.tmst_us + 1_000_000,
                                    freq_hz=868_100_000, sf=7))
            late = TxRequest(phy=b"late", tmst_us=frame.tmst_us, freq_hz=868_100_000, sf=7)
            with pytest.raises(TxError, match="too late"):
                await fe.send(late)
            await asyncio.sleep(0.5)
            return frame, fe.sent

    bench.start(30)
    try:
        frame, sent = asyncio.run(gateway())
    finally:
        bench.stop()
    assert frame.phy == b"uplink from the street"
    assert (frame.freq_hz, frame.sf, frame.bw_khz) == (868_100_000, 7, 125)
    expected_rssi, _ = bench.channel.link_budget(bench.node.last_tx, bench.gw)
    assert frame.rssi_dbm == pytest.approx(expected_rssi, abs=1.5)
    assert sent == 1 and bench.counters["sx127x_tx_too_late"] == 1
    assert rx_at["pkt"] is not None and rx_at["pkt"][0] == b"downlink"
    # the downlink started one second after the uplink ended (within the driver's poll step)
    toa = time_on_air_us(len(b"downlink"), 7, crc=False)
    started = rx_at["at"] - rx_at["end"] - toa
    assert 1_000_000 - 5_000 <= started <= 1_000_000 + 5_000, started
    assert bench.gw.last_tx is not None and bench.gw.last_tx.iq_inverted


def test_no_chip_on_the_bus_fails_to_open_with_a_clear_message() -> None:
    bench = Bench(chip=False)

    async def go() -> None:
        async with bench.frontend:
            pass

    bench.start(5)
    try:
        with pytest.raises(OSError, match=r"spidev0\.1"):
            asyncio.run(go())
    finally:
        bench.stop()


def test_open_frontend_picks_sx127x_and_imports_no_hardware_module_until_opened() -> None:
    import sys

    cfg = SimpleNamespace(radio=Bench().cfg)
    fe = open_frontend(cfg, counters=Counters())
    assert isinstance(fe, Sx127xFrontEnd)
    assert "spidev" not in sys.modules and "RPi" not in sys.modules


def test_a_confirmed_uplink_is_acked_in_rx1_through_the_network_side(tmp_path) -> None:
    """The front end under the real network side: the ACK leaves one second after the uplink,
    on the uplink's channel and SF, and the node's radio decodes it."""
    from tests.test_network_support import network, open_store, register_abp, uplink_and_reply

    bench = Bench()
    store = open_store(tmp_path)
    node = register_abp(store)
    got: dict[str, Any] = {}

    def device() -> None:
        radio = bench.node_driver()
        ticks.sleep_ms(200)
        radio.send(node.uplink(confirmed=True))
        ticks.sleep_ms(950)
        got["pkt"] = radio.receive(300)

    async def gateway() -> None:
        async with bench.frontend as fe:
            net = network(store)
            net.transmit = fe.send
            bench.spawn("node", device)
            frame = await asyncio.wait_for(fe.queue.get(), 10)
            await uplink_and_reply(net, frame)
            got["counters"] = dict(net.counters)

    bench.start(30)
    try:
        asyncio.run(gateway())
    finally:
        bench.stop()
        store.close()
    assert got["counters"].get("downlink_rx1") == 1, got["counters"]
    assert got["pkt"] is not None
    f, _fcnt, _ = node.open(got["pkt"][0])
    assert f.ack
