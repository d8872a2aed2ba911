"""The `sx127x` front end: one SX1276 on the Pi's SPI bus, a single-channel, single-SF gateway.

The shared node driver (``drivers.sx127x``) runs in one worker thread that owns the chip: it
listens continuously on ``[radio]`` frequency/SF/bandwidth, timestamps each packet on its own
microsecond counter (the ``tmst`` the network side plans RX1/RX2 from), and transmits downlinks
at the requested ``tmst``, then goes back to listening. The SX1276 is half duplex: while it
transmits, it hears nothing. ``spidev`` and ``RPi.GPIO`` are imported only when this front end
is opened without bus modules passed in, so the rest of the gateway runs anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from drivers import ticks
from gateway.counters import Counters
from gateway.radio.frame import RxFrame, TxRequest
from gateway.radio.pi import FrameSelect, GpioPin, SpidevSPI

log = logging.getLogger("cityedge.radio.sx127x")

TX_LEAD_US: Final = 3_000  # reconfiguring and filling the FIFO before the first preamble symbol
TX_LATE_US: Final = 1_000  # a downlink later than this past its tmst is refused (TOO_LATE)
TX_TOO_EARLY_US: Final = 20_000_000  # nothing is planned further ahead than RX2 of a join
POLL_MS: Final = 2  # worker idle step; DIO0 wakes it earlier
CODING_RATES: Final = {"4/5": 1, "4/6": 2, "4/7": 3, "4/8": 4}


class TxError(Exception):
    """A downlink was not transmitted; the message says why (too late, too early, radio)."""


@dataclass(slots=True)
class _Tx:
    request: TxRequest
    future: asyncio.Future[None]


class _Counter:
    """A 64-bit microsecond counter extended from the wrapping ``ticks_us`` (2**30)."""

    def __init__(self) -> None:
        self._last = ticks.ticks_us()
        self._total = 0

    def now(self) -> int:
        t = ticks.ticks_us()
        self._total += ticks.ticks_diff(t, self._last)
        self._last = t
        return self._total


def _open_hardware(cfg: Any, spidev_module: Any, gpio: Any, wake: Callable[[], None]
                   ) -> tuple[SpidevSPI, FrameSelect, GpioPin, GpioPin]:
    """The SPI device and GPIO lines of ``[radio.sx127x]`` behind the driver's bus shapes."""
    gpio.setwarnings(False)
    gpio.setmode(gpio.BCM)
    spi = SpidevSPI(spidev_module, cfg.spi_bus, cfg.spi_device)
    return (spi, FrameSelect(spi), GpioPin(gpio, cfg.reset_gpio),
            GpioPin(gpio, cfg.dio0_gpio, wake=wake))


class Sx127xFrontEnd:
    """``async with Sx127xFrontEnd(radio_cfg) as fe:`` then read ``fe.queue``; ``await fe.send(tx)``.

    ``spidev_module``/``gpio_module`` default to the real ``spidev`` and ``RPi.GPIO``; ``spawn``
    runs the worker (a daemon thread by default), ``idle_ms`` is how the worker waits between
    polls (by default on the DIO0 event, at most ``POLL_MS``), ``wall`` the clock of
    ``received_at``. Tests pass a simulation's participant spawner and virtual sleeps.
    """

    def __init__(
        self,
        radio_cfg: Any,
        *,
        counters: Counters | None = None,
        spidev_module: Any = None,
        gpio_module: Any = None,
        spawn: Callable[[str, Callable[[], None]], Any] | None = None,
        idle_ms: Callable[[int], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = radio_cfg
        self.counters = counters if counters is not None else Counters()
        self.queue: asyncio.Queue[RxFrame] = asyncio.Queue()
        self._spidev = spidev_module
        self._gpio = gpio_module
        self._spawn = spawn or _daemon_thread
        self._wake = threading.Event()
        self._idle = idle_ms or self._wait_for_irq
        self._wall = wall
        self._txq: queue.SimpleQueue[_Tx] = queue.SimpleQueue()
        self._stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._done = threading.Event()
        self._pins: list[GpioPin] = []
        self._spi: SpidevSPI | None = None
        self.radio: Any = None
        self.heard = 0
        self.sent = 0

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> Self:
        if self._spidev is None or self._gpio is None:
            try:
                import RPi.GPIO as gpio
                import spidev
            except ImportError as exc:
                raise OSError(
                    f"radio.frontend = \"sx127x\" needs the Pi's SPI and GPIO modules ({exc}): "
                    "install with `pip install spidev rpi-lgpio` (or RPi.GPIO) on the Pi") from exc
            self._spidev = self._spidev or spidev
            self._gpio = self._gpio or gpio
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._spawn("sx127x-gateway", self._worker)
        await self._ready
        log.info("SX127x listening on %.3f MHz SF%d/%d kHz", self.cfg.frequency_hz / 1e6,
                 self.cfg.spreading_factor, self.cfg.bandwidth_khz)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop = True
        self._wake.set()
        await asyncio.to_thread(self._done.wait, 5.0)

    # ------------------------------------------------------------------ asyncio side

    async def send(self, tx: TxRequest) -> None:
        """Transmit ``tx`` at its ``tmst_us`` (or at once); raises TxError if it could not go."""
        assert self._loop is not None, "send() before the front end was opened"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._txq.put(_Tx(tx, fut))
        self._wake.set()
        await fut

    def _resolve(self, fut: asyncio.Future[None], error: BaseException | None) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def settle() -> None:
            if fut.done():
                return
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

        loop.call_soon_threadsafe(settle)

    # ------------------------------------------------------------------ worker thread

    def _wait_for_irq(self, ms: int) -> None:
        self._wake.wait(ms / 1000)
        self._wake.clear()

    def _worker(self) -> None:
        try:
            self._open_radio()
        except Exception as exc:  # noqa: BLE001 - reported to the opener, who raises it
            assert self._ready is not None
            self._resolve(self._ready, OSError(f"SX127x front end did not start: {exc}"))
            self._done.set()
            return
        assert self._ready is not None
        self._resolve(self._ready, None)
        try:
            self._serve()
        finally:
            self._close_radio()
            self._done.set()

    def _open_radio(self) -> None:
        from drivers.sx127x import SX127x

        cfg = self.cfg
        spi, cs, reset, dio0 = _open_hardware(cfg.sx127x, self._spidev, self._gpio,
                                              self._wake.set)
        self._spi, self._pins = spi, [reset, dio0]
        self.radio = SX127x(spi, cs, reset=reset, dio0=dio0, freq_hz=cfg.frequency_hz,
                            sf=cfg.spreading_factor, bw_hz=cfg.bandwidth_khz * 1000,
                            sync_word=cfg.sync_word, crc=True, invert_iq_rx=False)
        self.clock = _Counter()
        self.radio.start_receive()

    def _close_radio(self) -> None:
        if self.radio is not None:
            try:
                self.radio.sleep()
            except Exception:  # noqa: BLE001 - closing: nothing more to do with the chip
                log.warning("SX127x did not go to sleep on close")
        for pin in self._pins:
            pin.release()
        if self._spi is not None:
            self._spi.close()

    def _serve(self) -> None:
        planned: list[_Tx] = []
        while not self._stop:
            pkt = self.radio.poll()
            if pkt is not None:
                self._heard(pkt, self.clock.now())
                continue
            while True:
                try:
                    planned.append(self._txq.get_nowait())
                except queue.Empty:
                    break
            wait_ms = POLL_MS
            if planned:
                planned.sort(key=lambda t: -1 if t.request.tmst_us is None else t.request.tmst_us)
                nxt = planned[0]
                due = nxt.request.tmst_us
                ahead = 0 if due is None else due - self.clock.now()
                if ahead <= TX_LEAD_US:
                    planned.pop(0)
                    self._transmit(nxt, ahead)
                    continue
                wait_ms = max(0, min(POLL_MS, (ahead - TX_LEAD_US) // 1000))
            self._idle(wait_ms)
        for tx in planned:
            self._resolve(tx.future, TxError("gateway stopping"))

    def _heard(self, pkt: tuple[bytes, float, float], tmst_us: int) -> None:
        payload, rssi, snr = pkt
        cfg = self.cfg
        frame = RxFrame(phy=bytes(payload), tmst_us=tmst_us, freq_hz=cfg.frequency_hz,
                        sf=cfg.spreading_factor, bw_khz=cfg.bandwidth_khz, rssi_dbm=float(rssi),
                        snr_db=float(snr), received_at=self._wall(), coding_rate="4/5")
        self.heard += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.queue.put_nowait, frame)

    def _transmit(self, tx: _Tx, ahead_us: int) -> None:
        req = tx.request
        if req.tmst_us is not None and ahead_us < -TX_LATE_US:
            self.counters["sx127x_tx_too_late"] += 1
            self._resolve(tx.future, TxError(f"too late: tmst passed {-ahead_us} us ago"))
            return
        if req.tmst_us is not None and ahead_us > TX_TOO_EARLY_US:
            self.counters["sx127x_tx_too_early"] += 1
            self._resolve(tx.future, TxError(f"too early: tmst is {ahead_us} us ahead"))
            return
        r, cfg = self.radio, self.cfg
        try:
            r.set_frequency(req.freq_hz)
            r.set_spreading_factor(req.sf)
            r.set_bandwidth(req.bw_khz * 1000)
            r.set_coding_rate(CODING_RATES.get(req.coding_rate, 1))
            r.set_crc(req.crc)
            r.set_tx_power(min(req.tx_power_dbm, 20))
            r.set_invert_iq(tx=req.iq_inverted)
            if req.tmst_us is not None:
                left = req.tmst_us - self.clock.now()
                if left > 0:
                    ticks.sleep_us(left)
            r.send(req.phy)
        except Exception as exc:  # noqa: BLE001 - the network side tries its next window
            self.counters["sx127x_tx_error"] += 1
            self._resolve(tx.future, TxError(f"radio: {exc}"))
        else:
            self.sent += 1
            self._resolve(tx.future, None)
        finally:
            try:
                r.set_frequency(cfg.frequency_hz)
                r.set_spreading_factor(cfg.spreading_factor)
                r.set_bandwidth(cfg.bandwidth_khz * 1000)
                r.set_coding_rate(1)
                r.set_crc(True)
                r.start_receive()
            except Exception:
                self.counters["sx127x_rx_restart_error"] += 1
                log.exception("SX127x did not go back to listening")


def _daemon_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t
