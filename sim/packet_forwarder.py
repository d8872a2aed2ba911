"""A test packet forwarder: Semtech UDP protocol v2 over real datagram sockets.

It behaves like Semtech's ``lora_pkt_fwd`` as seen from the network: its own gateway EUI, two
UDP sockets (upstream for PUSH_DATA, downstream for PULL_DATA keepalives and PULL_RESP, so the
server must remember the downstream address by EUI), PUSH_DATA with ``rxpk`` arrays and ``stat``
reports, and a TX_ACK with a ``txpk_ack.error`` for every PULL_RESP.

Two ways to use it:

- standalone: ``await pf.uplink(phy, rssi_dbm=..., snr_db=...)`` injects frames; downlinks land
  in ``pf.downlinks``; its concentrator counter is the wall clock's microseconds (32-bit, like
  ``tmst``), and ``pf.tx_error`` forces the next TX_ACK errors;
- on the simulated channel: ``PacketForwarder(..., concentrator=c, clock=k)`` forwards every
  ``RxPacket`` the ``sim.channel.Concentrator`` hears, and transmits PULL_RESP downlinks with
  ``Concentrator.send_at``, mapping its ``TooLate``/``TxConflict`` to TOO_LATE/COLLISION_PACKET.

Checks made before any emission, as the real forwarder does: a ``time`` (GPS) emission without
GPS is GPS_UNLOCKED, a frequency outside ``tx_freq_range_hz`` is TX_FREQ, a power above
``max_tx_power_dbm`` is TX_POWER, a ``tmst`` more than ``max_advance_us`` ahead is TOO_EARLY and
one already passed is TOO_LATE. A PULL_RESP whose JSON is malformed gets no TX_ACK at all.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from gateway.radio.semtech_udp import (
    TMST_MODULO,
    TX_ERRORS,
    ProtocolError,
    PullAck,
    PullResp,
    PushAck,
    Txpk,
    encode_pull_data,
    encode_push_data,
    encode_tx_ack,
    parse_downstream,
    parse_txpk,
)

__all__ = ["PacketForwarder", "ReceivedDownlink", "rxpk"]

log = logging.getLogger("cityedge.sim.packet_forwarder")

_CR = {"4/5": 1, "4/6": 2, "4/7": 3, "4/8": 4}  # codr -> the channel's coding rate index


def _utc_compact(epoch: float) -> str:
    """ISO 8601 'compact' UTC time with microseconds, as rxpk.time is written."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rxpk(
    phy: bytes,
    *,
    tmst: int,
    freq_hz: int = 868_100_000,
    sf: int = 7,
    bw_khz: int = 125,
    rssi_dbm: float = -80,
    snr_db: float = 7.0,
    crc_ok: bool = True,
    coding_rate: str = "4/5",
    chan: int = 0,
    rfch: int = 0,
    time_utc: float | None = None,
) -> dict[str, Any]:
    """One ``rxpk`` object for ``phy`` with the given radio metadata."""
    obj: dict[str, Any] = {}
    if time_utc is not None:
        obj["time"] = _utc_compact(time_utc)
    obj.update(
        tmst=tmst % TMST_MODULO, chan=chan, rfch=rfch, freq=round(freq_hz / 1e6, 6),
        stat=1 if crc_ok else -1, modu="LORA", datr=f"SF{sf}BW{bw_khz}", codr=coding_rate,
        rssi=round(rssi_dbm), lsnr=round(snr_db, 1), size=len(phy),
        data=base64.b64encode(phy).decode("ascii"),
    )
    return obj


@dataclass(frozen=True, slots=True)
class ReceivedDownlink:
    """A PULL_RESP the forwarder received and the TX_ACK error it answered."""

    token: int
    txpk: Txpk
    error: str
    at_us: int | None = None  # full-width concentrator time it was (to be) emitted at


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, owner: PacketForwarder, name: str) -> None:
        self.owner = owner
        self.name = name

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """Hand a server datagram to the forwarder, with the socket it came in on."""
        self.owner._datagram(self.name, data)

    def error_received(self, exc: Exception) -> None:
        """Count socket errors (e.g. ICMP port unreachable while the server is down)."""
        self.owner.counters["socket_error"] += 1


class PacketForwarder:
    """``async with PacketForwarder(("127.0.0.1", port), "aa555a0000000001") as pf:``."""

    def __init__(
        self,
        server: tuple[str, int],
        gateway_eui: str,
        *,
        concentrator: Any = None,
        clock: Any = None,
        keepalive_s: float = 5.0,
        stat_interval_s: float | None = None,
        push_timeout_s: float = 1.0,
        location: tuple[float, float, float] | None = None,
        max_tx_power_dbm: int = 27,
        tx_freq_range_hz: tuple[int, int] = (863_000_000, 870_000_000),
        max_advance_us: int = 60_000_000,
    ) -> None:
        if len(bytes.fromhex(gateway_eui)) != 8:
            raise ValueError(f"gateway EUI {gateway_eui!r}: expected 16 hex digits")
        self.server = server
        self.gateway_eui = gateway_eui.lower()
        self.concentrator = concentrator
        self.clock = clock
        self.keepalive_s = keepalive_s
        self.stat_interval_s = stat_interval_s
        self.push_timeout_s = push_timeout_s
        self.location = location
        self.max_tx_power_dbm = max_tx_power_dbm
        self.tx_freq_range_hz = tx_freq_range_hz
        self.max_advance_us = max_advance_us
        self.tx_error: list[str] = []  # forced TX_ACK errors, used first-in first-out
        self.downlinks: asyncio.Queue[ReceivedDownlink] = asyncio.Queue()
        self.counters: Counter[str] = Counter()
        # stat counters, as lora_pkt_fwd keeps them between two reports
        self.rxnb = self.rxok = self.rxfw = self.dwnb = self.txnb = 0
        self.pushed = self.push_acked = 0
        self.pull_acked = asyncio.Event()
        self._up: asyncio.DatagramTransport | None = None
        self._down: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._t0 = time.monotonic()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._loop = loop = asyncio.get_running_loop()
        self._up, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self, "up"), remote_addr=self.server)
        self._down, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(self, "down"), remote_addr=self.server)
        self._spawn(self._keepalive())
        if self.stat_interval_s:
            self._spawn(self._stats())
        if self.concentrator is not None:
            self.concentrator.on_uplink = self._on_sim_uplink
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.concentrator is not None:
            self.concentrator.on_uplink = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # shutting down: outcomes unused
        for tr in (self._up, self._down):
            if tr is not None:
                tr.close()
        self._up = self._down = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the concentrator counter ----------------------------------------------------------
    def now_us(self) -> int:
        """Full-width concentrator microseconds: the virtual clock, or the wall clock."""
        if self.clock is not None:
            return int(self.clock.now_us())
        return int((time.monotonic() - self._t0) * 1e6)

    def tmst(self) -> int:
        """The 32-bit ``tmst`` counter now."""
        return self.now_us() % TMST_MODULO

    def _full_time(self, tmst: int) -> int:
        """The full-width time ≡ ``tmst`` (mod 2^32) nearest to now (at most 2^31 away)."""
        now = self.now_us()
        ahead = (tmst - now) % TMST_MODULO
        if ahead >= TMST_MODULO // 2:
            ahead -= TMST_MODULO
        return now + ahead

    def _epoch(self) -> float:
        return self.clock.epoch() if self.clock is not None else time.time()

    # -- upstream ----------------------------------------------------------------------------
    def _token(self, kind: str) -> int:
        for _ in range(16):
            token = random.getrandbits(16)
            if (kind, token) not in self._waiting:
                return token
        return random.getrandbits(16)

    async def _send_and_wait(self, kind: str, transport: asyncio.DatagramTransport | None,
                             make: Any, wait: bool) -> bool:
        if transport is None:
            raise RuntimeError("the packet forwarder is not started (use async with)")
        token = self._token(kind)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[(kind, token)] = fut
        try:
            transport.sendto(make(token))
            if not wait:
                return True
            try:
                async with asyncio.timeout(self.push_timeout_s):
                    await fut
                return True
            except TimeoutError:
                self.counters[f"{kind}_ack_timeout"] += 1
                return False
        finally:
            if wait or fut.done():
                self._waiting.pop((kind, token), None)
            else:  # fire and forget: the ack still counts for ackr if it comes in time
                asyncio.get_running_loop().call_later(self.push_timeout_s, self._give_up,
                                                      (kind, token), fut)

    def _give_up(self, key: tuple[str, int], fut: asyncio.Future[None]) -> None:
        if self._waiting.get(key) is fut:
            del self._waiting[key]
        if not fut.done():
            self.counters[f"{key[0]}_ack_timeout"] += 1
            fut.cancel()

    async def push(self, packets: Iterable[dict[str, Any]] = (), stat: dict[str, Any] | None = None,
                   *, wait_ack: bool = True) -> bool:
        """Send one PUSH_DATA (rxpk objects and/or stat); True once PUSH_ACK came back."""
        packets = list(packets)
        self.pushed += 1
        ok = await self._send_and_wait(
            "push", self._up, lambda t: encode_push_data(t, self.gateway_eui, packets, stat),
            wait_ack)
        return ok

    async def uplink(self, phy: bytes, *, wait_ack: bool = True, **meta: Any) -> bool:
        """Forward one received frame (metadata as for ``rxpk``; tmst defaults to now)."""
        meta.setdefault("tmst", self.tmst())
        meta.setdefault("time_utc", self._epoch())
        self.rxnb += 1
        if meta.get("crc_ok", True):
            self.rxok += 1
        self.rxfw += 1
        return await self.push([rxpk(phy, **meta)], wait_ack=wait_ack)

    async def pull(self) -> bool:
        """Send PULL_DATA; True once PULL_ACK came back (the server then knows our address)."""
        return await self._send_and_wait(
            "pull", self._down, lambda t: encode_pull_data(t, self.gateway_eui), True)

    def stat(self) -> dict[str, Any]:
        """A ``stat`` report of the counters since the last one (then reset, like lora_pkt_fwd)."""
        report: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(self._epoch(), dt.UTC).strftime(
                "%Y-%m-%d %H:%M:%S GMT"),
            "rxnb": self.rxnb, "rxok": self.rxok, "rxfw": self.rxfw,
            "ackr": round(100.0 * self.push_acked / self.pushed, 1) if self.pushed else 0.0,
            "dwnb": self.dwnb, "txnb": self.txnb,
        }
        if self.location is not None:
            report["lati"], report["long"], report["alti"] = (
                self.location[0], self.location[1], round(self.location[2]))
        self.rxnb = self.rxok = self.rxfw = self.dwnb = self.txnb = 0
        self.pushed = self.push_acked = 0
        return report

    async def push_stat(self) -> bool:
        """Send a ``stat`` report now."""
        return await self.push(stat=self.stat())

    async def _keepalive(self) -> None:
        while True:
            if await self.pull():
                self.pull_acked.set()
            await asyncio.sleep(self.keepalive_s)

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(self.stat_interval_s or 30.0)
            await self.push_stat()

    def send_raw(self, data: bytes, *, downstream: bool = False) -> None:
        """Send arbitrary bytes from the up (or down) socket: for fuzzing the server."""
        transport = self._down if downstream else self._up
        if transport is None:
            raise RuntimeError("the packet forwarder is not started (use async with)")
        if data:
            transport.sendto(data)
            return
        # asyncio silently drops empty datagrams; a plain socket does send them
        peer = transport.get_extra_info("peername")
        with socket.socket(socket.AF_INET6 if ":" in peer[0] else socket.AF_INET,
                           socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", peer[:2])

    # -- the simulated channel -------------------------------------------------------------
    def _on_sim_uplink(self, pkt: Any) -> None:
        """Scheduler thread: hand the concentrator's packet to the event loop for PUSH_DATA."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        epoch = self._epoch()
        loop.call_soon_threadsafe(self._spawn, self.uplink(
            bytes(pkt.payload), wait_ack=False, tmst=pkt.tmst_us, freq_hz=pkt.freq_hz, sf=pkt.sf,
            bw_khz=pkt.bw_khz, rssi_dbm=pkt.rssi_dbm, snr_db=pkt.snr_db, crc_ok=pkt.crc_ok,
            coding_rate=f"4/{4 + pkt.cr}", time_utc=epoch))

    # -- downstream ----------------------------------------------------------------------------
    def _datagram(self, socket_name: str, data: bytes) -> None:
        try:
            msg = parse_downstream(data)
        except ProtocolError as exc:
            self.counters["rejected_" + exc.reason] += 1
            log.warning("forwarder %s: bad datagram from the server: %s", self.gateway_eui, exc)
            return
        if isinstance(msg, PushAck | PullAck):
            kind = "push" if isinstance(msg, PushAck) else "pull"
            fut = self._waiting.get((kind, msg.token))
            if fut is None or fut.done():
                self.counters[f"{kind}_ack_unexpected"] += 1
                return
            if kind == "push":
                self.push_acked += 1
            fut.set_result(None)
            return
        assert isinstance(msg, PullResp)
        if socket_name != "down":
            self.counters["pull_resp_on_up_socket"] += 1
        self.dwnb += 1
        try:
            txpk = parse_txpk(msg.txpk)
        except ProtocolError as exc:
            # lora_pkt_fwd drops a PULL_RESP it cannot parse, without TX_ACK
            self.counters["rejected_txpk_" + exc.reason] += 1
            log.warning("forwarder %s: PULL_RESP dropped: %s", self.gateway_eui, exc)
            return
        error, at_us = self._schedule(txpk)
        if error == "NONE":
            self.txnb += 1
        self.counters["tx_" + error.lower()] += 1
        if self._down is not None:
            self._down.sendto(encode_tx_ack(msg.token, self.gateway_eui, error))
        self.downlinks.put_nowait(ReceivedDownlink(msg.token, txpk, error, at_us))

    def _schedule(self, txpk: Txpk) -> tuple[str, int | None]:
        """Check and (on the simulated channel) book the emission; returns the TX_ACK error."""
        if self.tx_error:
            forced = self.tx_error.pop(0)
            if forced not in TX_ERRORS:
                raise ValueError(f"{forced!r} is not a TX_ACK error code")
            return forced, None
        if not txpk.immediate and txpk.tmst is None:
            return "GPS_UNLOCKED", None  # a "time" emission needs GPS, which we do not have
        lo, hi = self.tx_freq_range_hz
        if not lo <= txpk.freq_hz <= hi:
            return "TX_FREQ", None
        if txpk.power_dbm > self.max_tx_power_dbm:
            return "TX_POWER", None
        now = self.now_us()
        at = now if txpk.immediate else self._full_time(txpk.tmst or 0)
        if at < now:
            return "TOO_LATE", at
        if at - now > self.max_advance_us:
            return "TOO_EARLY", at
        if self.concentrator is None:
            return "NONE", at
        from sim.channel import TooLate, TxConflict

        try:
            self.concentrator.send_at(
                at, txpk.freq_hz, txpk.sf, txpk.bw_khz, txpk.phy, tx_power_dbm=txpk.power_dbm,
                iq_inverted=txpk.iq_inverted, cr=_CR.get(txpk.coding_rate[:3], 1),
                preamble=txpk.preamble or 8, crc=not txpk.no_crc)
        except TooLate:
            return "TOO_LATE", at
        except TxConflict:
            return "COLLISION_PACKET", at
        except ValueError:
            return "TX_FREQ", at  # a setting the concentrator cannot emit
        return "NONE", at
