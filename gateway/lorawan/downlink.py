"""Downlinks: the handle a caller follows (queued, sent, acked, failed) and the receive windows.

Class A devices listen only after an uplink: RX1 opens RECEIVE_DELAY1 (RxDelay, 1 s by default;
JOIN_ACCEPT_DELAY1 = 5 s for a join-accept) after the end of the uplink, on the uplink's
frequency at DR = uplink DR - RX1DROffset; RX2 one second later on its own frequency and DR
(869.525 MHz, DR0 in EU868 unless RXParamSetupReq changed them). Class C devices listen on the
RX2 parameters whenever they are not transmitting or in their own RX1, so their downlinks go
at once, except around their own uplinks: ``class_c_free_at`` says from when a Class C device is
back on continuous reception after one. Times are concentrator timestamps (``RxFrame.tmst_us``,
µs at the end of the uplink).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from gateway.lorawan.mac import MacState
from protocol import region_eu868 as region
from protocol.airtime import symbol_time_us, time_on_air_us

log = logging.getLogger("cityedge.lorawan.downlink")

DownlinkStatus = Literal["queued", "sent", "acked", "failed"]
STATUSES: Final = ("queued", "sent", "acked", "failed")
FINAL: Final = frozenset({"acked", "failed"})
MAX_ATTEMPTS: Final = 3  # transmissions of a confirmed downlink before it is failed
_ids = itertools.count(1)

# Downlink frame overhead: MHDR(1) + DevAddr(4) FCtrl(1) FCnt(2) + MIC(4)
FRAME_OVERHEAD: Final = 12
# A device's receive window waits this many symbols for a preamble (firmware/device.py: 8),
# opened early and closed late by this margin (clock drift, its own latency).
RX_WINDOW_SYMBOLS: Final = 8
RX_WINDOW_MARGIN_US: Final = 40_000
CLASS_C_GUARD_US: Final = 50_000  # after a device's last window closed, before a Class C frame


class DownlinkHandle:
    """One application downlink queued for a device; follow it with ``wait`` or ``on_change``.

    ``status`` moves queued -> sent (-> acked for a confirmed downlink) or -> failed with a
    ``reason``; an unconfirmed downlink is done once sent. ``fcnt_down`` is the frame counter it
    last went out with, ``attempts`` how many times it was transmitted.
    """

    def __init__(self, dev_eui: str, fport: int, payload: bytes, confirmed: bool) -> None:
        self.id = next(_ids)
        self.dev_eui = dev_eui
        self.fport = fport
        self.payload = payload
        self.confirmed = confirmed
        self.status: DownlinkStatus = "queued"
        self.reason: str | None = None
        self.fcnt_down: int | None = None
        self.attempts = 0
        self.created_at = time.time()
        self.sent_at: float | None = None
        self.in_flight = False  # being transmitted now: too late to cancel
        self._listeners: list[Callable[[DownlinkHandle], None]] = []
        self._waiters: list[tuple[frozenset[str], asyncio.Future[str]]] = []

    @property
    def done(self) -> bool:
        """No further change will come: acked, failed, or sent when unconfirmed."""
        return self.status in FINAL or (self.status == "sent" and not self.confirmed)

    def on_change(self, listener: Callable[[DownlinkHandle], None]) -> None:
        """Call ``listener(handle)`` at every status change (e.g. to publish a command status)."""
        self._listeners.append(listener)

    async def wait(self, *statuses: DownlinkStatus) -> DownlinkStatus:
        """Wait until the status is one of ``statuses`` (default: until ``done``); returns it."""
        wanted = frozenset(statuses)
        if self._reached(wanted):
            return self.status
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, fut))
        return await fut  # type: ignore[return-value]

    def _reached(self, wanted: frozenset[str]) -> bool:
        if wanted:
            return self.status in wanted or self.status == "failed"
        return self.done

    def _set(self, status: DownlinkStatus, reason: str | None = None) -> None:
        if self.status in FINAL:
            return
        self.status = status
        self.reason = reason
        if status == "sent":
            self.sent_at = time.time()
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # a listener must not break the radio path
                log.exception("downlink %d: status listener failed", self.id)
        still = []
        for wanted, fut in self._waiters:
            if fut.done():
                continue
            if self._reached(wanted):
                fut.set_result(status)
            else:
                still.append((wanted, fut))
        self._waiters = still

    def _delayed(self, reason: str) -> None:
        """Still queued, now for ``reason`` (e.g. "duty_cycle"): listeners hear it once."""
        if self.status == "queued" and self.reason != reason:
            self._set("queued", reason)

    def __repr__(self) -> str:
        return (f"<DownlinkHandle #{self.id} {self.dev_eui} FPort {self.fport} "
                f"{len(self.payload)} B {'confirmed ' if self.confirmed else ''}{self.status}>")


@dataclass(frozen=True, slots=True)
class Window:
    """Where and when a downlink can go: RX1, RX2 (Class A) or C (at once, RX2 parameters)."""

    name: Literal["RX1", "RX2", "C"]
    tmst_us: int | None  # None: as soon as possible
    freq_hz: int
    data_rate: int

    @property
    def sf_bw(self) -> tuple[int, int]:
        """(spreading factor, bandwidth Hz) of the window's data rate."""
        return region.data_rate(self.data_rate)

    def fits(self, mac_payload_len: int) -> bool:
        """Does a MACPayload of this length fit the window's data rate (RP002 M)?"""
        return mac_payload_len <= region.max_payload(self.data_rate)[0]

    def airtime_us(self, phy_len: int) -> int:
        """Time on air of a downlink of ``phy_len`` bytes (no payload CRC on downlinks)."""
        sf, bw = self.sf_bw
        return time_on_air_us(phy_len, sf, bw, 1, 8, True, False)


def class_a_windows(tmst_us: int, uplink_dr: int, freq_hz: int, state: MacState,
                    join: bool = False) -> list[Window]:
    """RX1 and RX2 after an uplink that ended at ``tmst_us``; for a join-accept, the join
    delays and the default RX1DROffset 0 / RX2 DR0 on 869.525 MHz apply (§6.2.5)."""
    if join:
        d1 = region.JOIN_ACCEPT_DELAY1_S
        d2 = region.JOIN_ACCEPT_DELAY2_S
        rx1 = region.rx1_dr(uplink_dr, 0)
        rx2_freq, rx2_dr = region.RX2_FREQ_HZ, region.RX2_DR
    else:
        d1 = state.rx_delay_s or 1
        d2 = d1 + 1
        rx1 = region.rx1_dr(uplink_dr, state.rx1_dr_offset)
        rx2_freq, rx2_dr = state.rx2_freq_hz, state.rx2_dr
    return [
        Window("RX1", tmst_us + d1 * 1_000_000, freq_hz, rx1),
        Window("RX2", tmst_us + d2 * 1_000_000, rx2_freq, rx2_dr),
    ]


def class_c_window(state: MacState, tmst_us: int | None = None) -> Window:
    """A Class C device's continuous receive window on the RX2 parameters: at ``tmst_us``, or
    as soon as possible when None."""
    return Window("C", tmst_us, state.rx2_freq_hz, state.rx2_dr)


def rx_window_us(data_rate: int) -> int:
    """How long a device's receive window at ``data_rate`` stays open when nothing comes."""
    sf, bw = region.data_rate(data_rate)
    return symbol_time_us(sf, bw) * RX_WINDOW_SYMBOLS + 2 * RX_WINDOW_MARGIN_US


def class_c_free_at(uplink_end_us: int, uplink_dr: int, uplink_len: int, state: MacState, *,
                    repeats: int = 1) -> int:
    """Concentrator time from which a Class C device whose uplink (``uplink_len`` bytes at
    ``uplink_dr``) ended at ``uplink_end_us`` is back on continuous RX2 reception.

    LoRaWAN 1.0.4 §6.2 has a Class C device listen on RX2 again as soon as RX1 closes, but
    simple devices (ours: firmware/device.py) first run the Class A RX2 window and only then
    resume continuous reception, so we wait for both windows to close, plus a guard. With
    ``repeats`` > 1 (NbTrans, nothing answered in its windows) the device sends the frame again
    after each pair of windows, so the wait covers every repetition.
    """
    d1 = (state.rx_delay_s or 1) * 1_000_000
    try:
        rx1_close = d1 + rx_window_us(region.rx1_dr(uplink_dr, state.rx1_dr_offset))
    except ValueError:
        rx1_close = d1
    cycle = max(rx1_close, d1 + 1_000_000 + rx_window_us(state.rx2_dr))
    sf, bw = region.data_rate(uplink_dr)
    again = time_on_air_us(uplink_len, sf, bw, 1, 8, True, True) + cycle
    return uplink_end_us + cycle + max(0, repeats - 1) * again + CLASS_C_GUARD_US
