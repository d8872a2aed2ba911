"""The `sim` front end: the gateway's concentrator on the simulated LoRa channel.

The channel lives in the simulation's scheduler thread and in virtual time; this front end hands
each heard frame to the agent's asyncio loop and schedules downlinks at a concentrator timestamp,
exactly as a Semtech concentrator does (`tmst`).
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

from gateway.radio.frame import RxFrame, TxRequest


class SimFrontEnd:
    """``async with SimFrontEnd(radio_cfg, concentrator=c, clock=k) as fe:`` then read ``fe.queue``."""

    def __init__(self, radio_cfg: Any, *, concentrator: Any, clock: Any) -> None:
        self.radio_cfg = radio_cfg
        self.concentrator = concentrator
        self.clock = clock
        self.queue: asyncio.Queue[RxFrame] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.heard = 0

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self.concentrator.on_uplink = self._on_uplink
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.concentrator.on_uplink = None

    def now(self) -> float:
        """The front end's clock, virtual Unix seconds: what ``RxFrame.received_at`` is read
        from (the network side times Class C downlinks with it, never with wall time)."""
        return float(self.clock.epoch())

    def _on_uplink(self, pkt: Any) -> None:
        """Scheduler thread: wrap the packet and pass it to the event loop."""
        frame = RxFrame(
            phy=bytes(pkt.payload), tmst_us=pkt.tmst_us, freq_hz=pkt.freq_hz, sf=pkt.sf,
            bw_khz=pkt.bw_khz, rssi_dbm=float(pkt.rssi_dbm), snr_db=float(pkt.snr_db),
            received_at=self.clock.epoch(), crc_ok=pkt.crc_ok,
        )
        self.heard += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.queue.put_nowait, frame)

    async def send(self, tx: TxRequest) -> None:
        """Transmit a downlink at ``tx.tmst_us`` (virtual µs) or as soon as possible."""
        at = tx.tmst_us if tx.tmst_us is not None else self.clock.now_us()
        self.concentrator.send_at(
            at, tx.freq_hz, tx.sf, tx.bw_khz, tx.phy, tx_power_dbm=tx.tx_power_dbm,
            iq_inverted=tx.iq_inverted,
        )
