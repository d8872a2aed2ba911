"""The `semtech-udp` front end: a server for the Semtech UDP packet forwarder, protocol v2.

Any concentrator gateway (SX1301/SX1302) running Semtech's packet forwarder feeds the agent
through this server (facts from Lora-net/packet_forwarder PROTOCOL.TXT, protocol version 2):

    gateway -> server  PUSH_DATA 0x00  ver | token(2) | 0x00 | gateway EUI(8) | {"rxpk":[...], "stat":{...}}
    server -> gateway  PUSH_ACK  0x01  ver | same token | 0x01
    gateway -> server  PULL_DATA 0x02  ver | token(2) | 0x02 | gateway EUI(8)      (keepalive)
    server -> gateway  PULL_ACK  0x04  ver | same token | 0x04
    server -> gateway  PULL_RESP 0x03  ver | token(2) | 0x03 | {"txpk":{...}}      (a downlink)
    gateway -> server  TX_ACK    0x05  ver | same token | 0x05 | gateway EUI(8) | [{"txpk_ack":{"error":...}}]

The server listens on one UDP port for several forwarders at once. PULL_DATA tells it where
each forwarder (by gateway EUI) takes its downlinks; PUSH_DATA is acknowledged at once and each
``rxpk`` becomes an ``RxFrame`` on ``queue``.

Deduplication: when several forwarders hear the same uplink, the agent gets it once. The frame
(keyed by its PHYPayload) is held until every forwarder alive right now has reported it or
``dedup_window_s`` (200 ms) has passed, whichever comes first, so with a single forwarder there is
no added latency. The delivered frame carries the best reception's metadata (CRC ok first, then
the highest SNR, then RSSI), its ``gateway_eui`` and every forwarder in ``heard_by``; a copy heard
later in the window is counted (``semtech_duplicate``), never delivered again, but may still
improve the route back to that device.

Downlinks: ``await fe.send(TxRequest)`` sends PULL_RESP to the forwarder named in
``tx.gateway_eui`` (or, when None, the one that heard the frame's DevAddr best, or the only one)
and waits for its TX_ACK. It returns a ``TxResult`` when the forwarder accepted the packet
(``error`` NONE, possibly with a warning) and raises otherwise: a ``TxRejected`` subclass per
TX_ACK error (``TxTooLate``, ``TxTooEarly``, ``TxCollision``, ``TxFrequencyRejected``,
``TxPowerRejected``, ``TxGpsUnlocked``), ``NoRouteError`` when no forwarder has sent PULL_DATA
that could carry it, ``TxAckTimeout`` when no TX_ACK came back in time.

Bad input never raises out of the server: every malformed datagram or field (bad version,
unknown identifier, truncated, bad JSON, bad base64, wrong field types ...) is counted in
``counters`` as ``semtech_<reason>`` and logged (a warning the first time for each reason, at
debug level after that so a flood cannot fill the journal). With an allowlist of forwarder EUIs
(``[radio.semtech_udp] gateways``), datagrams from any other EUI are counted as
``semtech_gateway_not_allowed`` and dropped unanswered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import errno
import json
import logging
import random
import re
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from gateway.counters import Counters
from gateway.radio.frame import RxFrame, TxRequest

__all__ = [
    "PROTOCOL_VERSION",
    "TMST_MODULO",
    "TX_ERRORS",
    "ForwarderState",
    "GatewayStat",
    "ListenError",
    "NoRouteError",
    "ProtocolError",
    "PullAck",
    "PullData",
    "PullResp",
    "PushAck",
    "PushData",
    "SemtechUdpError",
    "SemtechUdpFrontEnd",
    "TxAck",
    "TxAckTimeout",
    "TxCollision",
    "TxFrequencyRejected",
    "TxGpsUnlocked",
    "TxPowerRejected",
    "TxRejected",
    "TxResult",
    "TxTooEarly",
    "TxTooLate",
    "Txpk",
    "encode_pull_ack",
    "encode_pull_data",
    "encode_pull_resp",
    "encode_push_ack",
    "encode_push_data",
    "encode_tx_ack",
    "parse_downstream",
    "parse_rxpk",
    "parse_rxpk_checked",
    "parse_stat",
    "parse_txpk",
    "parse_upstream",
    "txpk_for",
]

log = logging.getLogger("cityedge.radio.semtech_udp")

PROTOCOL_VERSION: Final = 2
PUSH_DATA: Final = 0x00
PUSH_ACK: Final = 0x01
PULL_DATA: Final = 0x02
PULL_RESP: Final = 0x03
PULL_ACK: Final = 0x04
TX_ACK: Final = 0x05

# PROTOCOL.TXT section 6, txpk_ack "error" values.
TX_ERRORS: Final = (
    "NONE", "TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "COLLISION_BEACON", "TX_FREQ",
    "TX_POWER", "GPS_UNLOCKED",
)
TMST_MODULO: Final = 1 << 32  # tmst is the concentrator's 32-bit microsecond counter
BANDWIDTHS_KHZ: Final = (125, 250, 500)
CODING_RATES: Final = ("4/5", "4/6", "4/7", "4/8", "OFF", "4/5LI", "4/6LI", "4/8LI")
MAX_ROUTES: Final = 100_000  # DevAddr -> forwarder entries kept (oldest forgotten first)
MAX_FORWARDERS: Final = 1024  # gateway EUIs remembered (silent ones forgotten first)
MAX_QUEUE: Final = 100_000  # frames waiting for the agent before new ones are refused

_HEADER = struct.Struct(">BHB")
_DATR = re.compile(r"SF(\d{1,2})BW(\d{3})")
_MTYPE_UPLINKS = (2, 4)  # LoRaWAN unconfirmed / confirmed data up
_MTYPE_DOWNLINKS = (3, 5)


# ----------------------------------------------------------------------------------- errors


class SemtechUdpError(Exception):
    """Base class of this front end's errors."""


class ProtocolError(SemtechUdpError, ValueError):
    """A datagram or field that breaks protocol v2; ``reason`` names the counter it lands in."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ListenError(SemtechUdpError, OSError):
    """The server cannot open its UDP port (in use, no privilege, unknown bind address)."""


class NoRouteError(SemtechUdpError):
    """No forwarder has announced a downlink address (PULL_DATA) that could send this packet."""


class TxAckTimeout(SemtechUdpError):
    """The forwarder did not answer a PULL_RESP with TX_ACK in time (lost, or a v1 forwarder)."""


class TxRejected(SemtechUdpError):
    """The forwarder refused the downlink; ``error`` is the TX_ACK code (PROTOCOL.TXT section 6)."""

    def __init__(self, error: str, gateway_eui: str, detail: str = "") -> None:
        super().__init__(
            f"forwarder {gateway_eui} refused the downlink: {error}" + (f" ({detail})" if detail
                                                                         else "")
        )
        self.error = error
        self.gateway_eui = gateway_eui


class TxTooLate(TxRejected):
    """TOO_LATE: the emission time had already passed when the forwarder got the packet."""


class TxTooEarly(TxRejected):
    """TOO_EARLY: the emission time is too far ahead for the forwarder's queue."""


class TxCollision(TxRejected):
    """COLLISION_PACKET / COLLISION_BEACON: the transmitter is booked at that time."""


class TxFrequencyRejected(TxRejected):
    """TX_FREQ: the frequency is not supported by the TX RF chain."""


class TxPowerRejected(TxRejected):
    """TX_POWER: the requested power is not supported by the gateway."""


class TxGpsUnlocked(TxRejected):
    """GPS_UNLOCKED: a GPS-timed emission was asked of a gateway without GPS lock."""


_TX_ERROR_CLASSES: dict[str, type[TxRejected]] = {
    "TOO_LATE": TxTooLate,
    "TOO_EARLY": TxTooEarly,
    "COLLISION_PACKET": TxCollision,
    "COLLISION_BEACON": TxCollision,
    "TX_FREQ": TxFrequencyRejected,
    "TX_POWER": TxPowerRejected,
    "GPS_UNLOCKED": TxGpsUnlocked,
}


# ----------------------------------------------------------------------------- datagrams


@dataclass(frozen=True, slots=True)
class PushData:
    """PUSH_DATA: raw ``rxpk`` objects (validated one by one later) and an optional ``stat``."""

    token: int
    gateway_eui: str
    rxpk: list[Any]
    stat: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class PullData:
    """PULL_DATA: the forwarder's keepalive, which also opens its downlink route."""

    token: int
    gateway_eui: str


@dataclass(frozen=True, slots=True)
class TxAck:
    """TX_ACK: the forwarder's answer to PULL_RESP ``token``; ``error`` is "NONE" on success."""

    token: int
    gateway_eui: str
    error: str
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class PushAck:
    """PUSH_ACK (server to gateway)."""

    token: int


@dataclass(frozen=True, slots=True)
class PullAck:
    """PULL_ACK (server to gateway)."""

    token: int


@dataclass(frozen=True, slots=True)
class PullResp:
    """PULL_RESP (server to gateway): the raw ``txpk`` object (checked by ``parse_txpk``)."""

    token: int
    txpk: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Txpk:
    """A validated ``txpk``: what a forwarder is asked to emit."""

    phy: bytes
    immediate: bool
    tmst: int | None
    time: str | None
    freq_hz: int
    rf_chain: int
    power_dbm: int
    sf: int
    bw_khz: int
    coding_rate: str
    iq_inverted: bool
    no_crc: bool
    preamble: int | None


@dataclass(frozen=True, slots=True)
class GatewayStat:
    """A forwarder's ``stat`` report (PROTOCOL.TXT section 4); None where it was not sent."""

    time: str | None = None
    lati: float | None = None
    long: float | None = None
    alti: float | None = None
    rxnb: int | None = None
    rxok: int | None = None
    rxfw: int | None = None
    ackr: float | None = None
    dwnb: int | None = None
    txnb: int | None = None

    def line(self) -> str:
        """The report as one log line, fields in protocol order."""
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if getattr(self, f.name) is not None)


@dataclass(frozen=True, slots=True)
class TxResult:
    """A downlink the forwarder accepted (TX_ACK error NONE); ``warning`` as it reported one."""

    gateway_eui: str
    token: int
    warning: str | None = None


def _header(data: bytes) -> tuple[int, int]:
    """(token, identifier) of a datagram, after checking its length and protocol version."""
    if len(data) < 4:
        raise ProtocolError("truncated", f"{len(data)} bytes, a header is 4")
    version, token, ident = _HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {version}, expected 2")
    return token, ident


def _eui(data: bytes, name: str) -> str:
    if len(data) < 12:
        raise ProtocolError("truncated", f"{name} of {len(data)} bytes has no 8-byte gateway EUI")
    return data[4:12].hex()


def _json_object(body: bytes, name: str) -> dict[str, Any]:
    """The JSON object of a datagram body; anything else is ``bad_json``."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise ProtocolError("bad_json", f"{name}: {type(exc).__name__}: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"{name}: the JSON is a {type(obj).__name__}, not an "
                                        "object")
    return obj


def parse_upstream(data: bytes) -> PushData | PullData | TxAck:
    """Parse a datagram a forwarder sends to the server; raises ``ProtocolError``."""
    token, ident = _header(data)
    if ident == PUSH_DATA:
        eui = _eui(data, "PUSH_DATA")
        obj = _json_object(data[12:], "PUSH_DATA")
        rxpk = obj.get("rxpk", [])
        if not isinstance(rxpk, list):
            raise ProtocolError("bad_field", f"PUSH_DATA rxpk is a {type(rxpk).__name__}, not "
                                             "an array")
        stat = obj.get("stat")
        if stat is not None and not isinstance(stat, dict):
            raise ProtocolError("bad_field", f"PUSH_DATA stat is a {type(stat).__name__}, not "
                                             "an object")
        return PushData(token, eui, rxpk, stat)
    if ident == PULL_DATA:
        eui = _eui(data, "PULL_DATA")
        if len(data) != 12:
            raise ProtocolError("bad_length", f"PULL_DATA of {len(data)} bytes, expected 12")
        return PullData(token, eui)
    if ident == TX_ACK:
        eui = _eui(data, "TX_ACK")
        body = data[12:].rstrip(b"\x00 \t\r\n")  # some forwarders end the JSON with a NUL
        if not body:
            return TxAck(token, eui, "NONE")  # PROTOCOL.TXT 5.5: no JSON means no error
        ack = _json_object(body, "TX_ACK").get("txpk_ack")
        if not isinstance(ack, dict):
            raise ProtocolError("bad_field", "TX_ACK without a txpk_ack object")
        error = ack.get("error", "NONE")
        warning = ack.get("warn")
        if not isinstance(error, str) or (warning is not None and not isinstance(warning, str)):
            raise ProtocolError("bad_field", "TX_ACK txpk_ack.error/warn is not a string")
        return TxAck(token, eui, error[:32], warning[:32] if warning else None)
    if ident in (PUSH_ACK, PULL_RESP, PULL_ACK):
        raise ProtocolError("wrong_direction", f"identifier 0x{ident:02x} is sent by a server, "
                                               "not to one")
    raise ProtocolError("unknown_identifier", f"identifier 0x{ident:02x}")


def parse_downstream(data: bytes) -> PushAck | PullAck | PullResp:
    """Parse a datagram the server sends to a forwarder; raises ``ProtocolError``."""
    token, ident = _header(data)
    if ident == PUSH_ACK:
        return PushAck(token)
    if ident == PULL_ACK:
        return PullAck(token)
    if ident == PULL_RESP:
        txpk = _json_object(data[4:], "PULL_RESP").get("txpk")
        if not isinstance(txpk, dict):
            raise ProtocolError("bad_field", "PULL_RESP without a txpk object")
        return PullResp(token, txpk)
    if ident in (PUSH_DATA, PULL_DATA, TX_ACK):
        raise ProtocolError("wrong_direction", f"identifier 0x{ident:02x} is sent by a gateway")
    raise ProtocolError("unknown_identifier", f"identifier 0x{ident:02x}")


# ------------------------------------------------------------------------- field checks


def _num(obj: dict[str, Any], key: str, lo: float, hi: float, where: str) -> float | None:
    """A finite JSON number within [lo, hi], or None when absent (bool is not a number)."""
    v = obj.get(key)
    if v is None:
        return None
    if type(v) not in (int, float) or not lo <= v <= hi:  # NaN fails the range check too
        raise ProtocolError("bad_field", f"{where}.{key} = {str(v)[:40]!r}: expected a number "
                                         f"from {lo:g} to {hi:g}")
    return v


def _int(obj: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int | None:
    """A JSON integer within [lo, hi], or None when absent."""
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError("bad_field", f"{where}.{key} = {str(v)[:40]!r}: expected an integer "
                                         f"from {lo} to {hi}")
    return v


def _str(obj: dict[str, Any], key: str, where: str, max_len: int = 64) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError("bad_field", f"{where}.{key}: expected a string of at most "
                                         f"{max_len} characters")
    return v


def _bool(obj: dict[str, Any], key: str, where: str) -> bool | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is not bool:
        raise ProtocolError("bad_field", f"{where}.{key} = {str(v)[:40]!r}: expected true/false")
    return v


def _required(value: Any, key: str, where: str) -> Any:
    if value is None:
        raise ProtocolError("missing_field", f"{where} has no {key}")
    return value


def _payload(obj: dict[str, Any], where: str) -> bytes:
    """The base64 ``data`` field (padding optional), checked against ``size`` when present."""
    data = obj.get("data")
    if not isinstance(data, str):
        if data is None:
            raise ProtocolError("missing_field", f"{where} has no data")
        raise ProtocolError("bad_field", f"{where}.data is a {type(data).__name__}, not base64 "
                                         "text")
    if len(data) > 400:  # 255 bytes of LoRa payload are 340 characters of base64
        raise ProtocolError("bad_field", f"{where}.data of {len(data)} characters is longer "
                                         "than any LoRa packet")
    try:
        phy = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("bad_base64", f"{where}.data: {exc}") from None
    if not phy:
        raise ProtocolError("bad_field", f"{where}.data is empty: a LoRa packet has 1..255 bytes")
    size = _int(obj, "size", 0, 255, where)
    if size is not None and size != len(phy):
        raise ProtocolError("size_mismatch", f"{where}.size = {size} but data holds "
                                             f"{len(phy)} bytes")
    return phy


def _lora_datr(obj: dict[str, Any], where: str) -> tuple[int, int]:
    modu = obj.get("modu", "LORA")
    datr = obj.get("datr")
    if modu == "FSK" or (type(datr) in (int, float)):
        raise ProtocolError("unsupported_modulation", f"{where} is FSK: only LoRa is received")
    if modu != "LORA":
        raise ProtocolError("bad_field", f"{where}.modu = {str(modu)[:20]!r}: expected LORA")
    if datr is None:
        raise ProtocolError("missing_field", f"{where} has no datr")
    m = _DATR.fullmatch(datr) if isinstance(datr, str) else None
    if m is None:
        raise ProtocolError("bad_field", f"{where}.datr = {str(datr)[:20]!r}: expected "
                                         "SF<5..12>BW<125|250|500>")
    sf, bw = int(m.group(1)), int(m.group(2))
    if not 5 <= sf <= 12 or bw not in BANDWIDTHS_KHZ:
        raise ProtocolError("bad_field", f"{where}.datr = {datr!r}: expected SF5..SF12 at "
                                         "125/250/500 kHz")
    return sf, bw


_DATR_LORA = {f"SF{sf}BW{bw}": (sf, bw) for sf in range(5, 13) for bw in BANDWIDTHS_KHZ}
_CODR = frozenset(CODING_RATES)
_NUMBER = (int, float)


def parse_rxpk(obj: Any, received_at: float, gateway_eui: str | None = None) -> RxFrame:
    """One ``rxpk`` object as an ``RxFrame``; raises ``ProtocolError`` naming the bad field.

    The hot path: a well-formed rxpk is taken in one pass of plain type and range tests; any
    doubt falls back to ``parse_rxpk_checked``, which holds the rules and names what is wrong
    (the fuzz tests prove both give the same answer).
    """
    if type(obj) is dict:
        get = obj.get
        datr, data, freq, tmst = get("datr"), get("data"), get("freq"), get("tmst")
        stat, rssi, lsnr, codr = get("stat"), get("rssi"), get("lsnr"), get("codr")
        chan, rfch, when, size = get("chan"), get("rfch"), get("time"), get("size")
        sf_bw = _DATR_LORA.get(datr) if type(datr) is str else None
        if (sf_bw is not None and get("modu", "LORA") == "LORA"
                and type(data) is str and 0 < len(data) <= 400
                and type(freq) in _NUMBER and 100.0 <= freq <= 1100.0
                and type(tmst) is int and 0 <= tmst < TMST_MODULO
                and type(stat) is int and -1 <= stat <= 1
                and type(rssi) in _NUMBER and -250.0 <= rssi <= 50.0
                and type(lsnr) in _NUMBER and -50.0 <= lsnr <= 50.0
                and (codr is None or (type(codr) is str and codr in _CODR))
                and (chan is None or (type(chan) is int and 0 <= chan <= 255))
                and (rfch is None or (type(rfch) is int and 0 <= rfch <= 255))
                and (when is None or (type(when) is str and len(when) <= 40))
                and (size is None or (type(size) is int and 0 <= size <= 255))):
            try:
                phy = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
            except (binascii.Error, ValueError):
                phy = b""
            if phy and (size is None or size == len(phy)):
                extra: dict[str, Any] = {}
                if chan is not None:
                    extra["chan"] = chan
                if rfch is not None:
                    extra["rfch"] = rfch
                if when is not None:
                    extra["time"] = when
                return RxFrame(
                    phy=phy, tmst_us=tmst, freq_hz=round(freq * 1e6), sf=sf_bw[0],
                    bw_khz=sf_bw[1], rssi_dbm=float(rssi), snr_db=float(lsnr),
                    received_at=received_at, crc_ok=stat >= 0, extra=extra,
                    gateway_eui=gateway_eui,
                    heard_by=(gateway_eui,) if gateway_eui is not None else (), coding_rate=codr,
                )
    return parse_rxpk_checked(obj, received_at, gateway_eui)


def parse_rxpk_checked(obj: Any, received_at: float, gateway_eui: str | None = None) -> RxFrame:
    """``parse_rxpk`` field by field: the rules, and a ``ProtocolError`` naming the bad field."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad_field", f"an rxpk entry is a {type(obj).__name__}, not an object")
    w = "rxpk"
    sf, bw = _lora_datr(obj, w)
    phy = _payload(obj, w)
    freq = _required(_num(obj, "freq", 100.0, 1100.0, w), "freq", w)
    tmst = _required(_int(obj, "tmst", 0, TMST_MODULO - 1, w), "tmst", w)
    stat = _required(_int(obj, "stat", -1, 1, w), "stat", w)
    rssi = _num(obj, "rssi", -250.0, 50.0, w)
    if rssi is None:  # SX1302 forwarders may report only the per-chain "rssis"
        rssi = _required(_num(obj, "rssis", -250.0, 50.0, w), "rssi", w)
    lsnr = _required(_num(obj, "lsnr", -50.0, 50.0, w), "lsnr", w)
    codr = _str(obj, "codr", w, 8)
    if codr is not None and codr not in CODING_RATES:
        raise ProtocolError("bad_field", f"{w}.codr = {codr!r}: expected one of "
                                         f"{', '.join(CODING_RATES)}")
    extra: dict[str, Any] = {}
    for key, value in (("chan", _int(obj, "chan", 0, 255, w)),
                       ("rfch", _int(obj, "rfch", 0, 255, w)),
                       ("time", _str(obj, "time", w, 40))):
        if value is not None:
            extra[key] = value
    return RxFrame(
        phy=phy, tmst_us=tmst, freq_hz=round(freq * 1e6), sf=sf, bw_khz=bw,
        rssi_dbm=float(rssi), snr_db=float(lsnr), received_at=received_at, crc_ok=stat >= 0,
        extra=extra, gateway_eui=gateway_eui,
        heard_by=(gateway_eui,) if gateway_eui is not None else (), coding_rate=codr,
    )


_STAT_COUNTS = ("rxnb", "rxok", "rxfw", "dwnb", "txnb")


def parse_stat(obj: Any) -> GatewayStat:
    """A ``stat`` object; absent fields are None, wrong ones raise ``ProtocolError``."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad_field", "stat is not an object")
    w = "stat"
    counts = {k: _int(obj, k, 0, 2**63, w) for k in _STAT_COUNTS}
    return GatewayStat(
        time=_str(obj, "time", w, 40),
        lati=_num(obj, "lati", -90.0, 90.0, w),
        long=_num(obj, "long", -180.0, 180.0, w),
        alti=_num(obj, "alti", -1000.0, 100_000.0, w),
        ackr=_num(obj, "ackr", 0.0, 100.0, w),
        **counts,
    )


def parse_txpk(obj: Any) -> Txpk:
    """A ``txpk`` object as a validated ``Txpk`` (forwarder side); raises ``ProtocolError``."""
    if not isinstance(obj, dict):
        raise ProtocolError("bad_field", "txpk is not an object")
    w = "txpk"
    sf, bw = _lora_datr(obj, w)
    phy = _payload(obj, w)
    imme = bool(_bool(obj, "imme", w))
    tmst = _int(obj, "tmst", 0, TMST_MODULO - 1, w)
    when = _str(obj, "time", w, 40)
    if not imme and tmst is None and when is None:
        raise ProtocolError("missing_field", "txpk has none of imme, tmst, time")
    freq = _required(_num(obj, "freq", 100.0, 1100.0, w), "freq", w)
    codr = _str(obj, "codr", w, 8) or "4/5"
    if codr not in CODING_RATES:
        raise ProtocolError("bad_field", f"txpk.codr = {codr!r}")
    return Txpk(
        phy=phy, immediate=imme, tmst=tmst, time=when, freq_hz=round(freq * 1e6),
        rf_chain=_int(obj, "rfch", 0, 255, w) or 0,
        power_dbm=_required(_int(obj, "powe", -10, 40, w), "powe", w),
        sf=sf, bw_khz=bw, coding_rate=codr,
        iq_inverted=bool(_bool(obj, "ipol", w)),
        no_crc=bool(_bool(obj, "ncrc", w)),
        preamble=_int(obj, "prea", 6, 65535, w),
    )


# ----------------------------------------------------------------------------- encoders


def _eui_bytes(gateway_eui: str | bytes) -> bytes:
    raw = bytes.fromhex(gateway_eui) if isinstance(gateway_eui, str) else bytes(gateway_eui)
    if len(raw) != 8:
        raise ValueError(f"gateway EUI {gateway_eui!r}: expected 8 bytes (16 hex digits)")
    return raw


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_push_data(token: int, gateway_eui: str | bytes, rxpk: list[dict[str, Any]] | None = None,
                     stat: dict[str, Any] | None = None) -> bytes:
    """PUSH_DATA with ``rxpk`` entries and/or a ``stat`` report."""
    body: dict[str, Any] = {}
    if rxpk:
        body["rxpk"] = rxpk
    if stat is not None:
        body["stat"] = stat
    return _HEADER.pack(PROTOCOL_VERSION, token, PUSH_DATA) + _eui_bytes(gateway_eui) + _json(body)


def encode_push_ack(token: int) -> bytes:
    """PUSH_ACK for the PUSH_DATA ``token``."""
    return _HEADER.pack(PROTOCOL_VERSION, token, PUSH_ACK)


def encode_pull_data(token: int, gateway_eui: str | bytes) -> bytes:
    """PULL_DATA, the forwarder's keepalive."""
    return _HEADER.pack(PROTOCOL_VERSION, token, PULL_DATA) + _eui_bytes(gateway_eui)


def encode_pull_ack(token: int) -> bytes:
    """PULL_ACK for the PULL_DATA ``token``."""
    return _HEADER.pack(PROTOCOL_VERSION, token, PULL_ACK)


def encode_pull_resp(token: int, txpk: dict[str, Any]) -> bytes:
    """PULL_RESP carrying one ``txpk``."""
    return _HEADER.pack(PROTOCOL_VERSION, token, PULL_RESP) + _json({"txpk": txpk})


def encode_tx_ack(token: int, gateway_eui: str | bytes, error: str = "NONE",
                  warning: str | None = None) -> bytes:
    """TX_ACK for PULL_RESP ``token``, with the txpk_ack error (and warning, as v4 forwarders do)."""
    ack: dict[str, Any] = {"error": error}
    if warning is not None:
        ack["warn"] = warning
    return (_HEADER.pack(PROTOCOL_VERSION, token, TX_ACK) + _eui_bytes(gateway_eui)
            + _json({"txpk_ack": ack}))


def txpk_for(tx: TxRequest) -> dict[str, Any]:
    """The ``txpk`` object asking a forwarder to emit ``tx`` (tmst wraps at 32 bits)."""
    txpk: dict[str, Any] = {}
    if tx.tmst_us is None:
        txpk["imme"] = True
    else:
        txpk["tmst"] = tx.tmst_us % TMST_MODULO
    txpk.update(
        freq=round(tx.freq_hz / 1e6, 6), rfch=tx.rf_chain, powe=int(tx.tx_power_dbm),
        modu="LORA", datr=f"SF{tx.sf}BW{tx.bw_khz}", codr=tx.coding_rate,
        ipol=bool(tx.iq_inverted), size=len(tx.phy),
        data=base64.b64encode(tx.phy).decode("ascii"),
    )
    if not tx.crc:
        txpk["ncrc"] = True
    return txpk


# ------------------------------------------------------------------------------- server


@dataclass(eq=False)
class ForwarderState:
    """What the server knows of one packet forwarder, by gateway EUI."""

    gateway_eui: str
    push_addr: Any = None  # where its PUSH_DATA comes from
    pull_addr: Any = None  # where its downlinks go: the source of its last PULL_DATA
    last_seen: float = 0.0  # event-loop time of its last valid datagram
    last_pull: float | None = None
    stat: GatewayStat | None = None
    stat_received_at: float | None = None  # wall clock
    push_data: int = 0
    rxpk: int = 0
    best_receptions: int = 0  # deduplicated uplinks whose metadata came from this forwarder
    downlinks: int = 0
    tx_acks: Counter[str] = field(default_factory=Counter)


class _Heard:
    """An uplink within its deduplication window."""

    __slots__ = ("best", "delivered", "expires", "handle", "heard_by")

    def __init__(self, frame: RxFrame, expires: float) -> None:
        self.best = frame
        self.heard_by: list[str] = [frame.gateway_eui or ""]
        self.expires = expires
        self.delivered = False
        self.handle: asyncio.TimerHandle | None = None


def _better(a: RxFrame, b: RxFrame) -> bool:
    """Is reception ``a`` better than ``b``? CRC ok first, then SNR, then RSSI."""
    return (a.crc_ok, a.snr_db, a.rssi_dbm) > (b.crc_ok, b.snr_db, b.rssi_dbm)


def _devaddr(phy: bytes, mtypes: tuple[int, ...]) -> int | None:
    """The DevAddr of a LoRaWAN data frame of one of ``mtypes`` (FHDR bytes 1..4, LE)."""
    if len(phy) >= 5 and (phy[0] >> 5) in mtypes:
        return int.from_bytes(phy[1:5], "little")
    return None


class SemtechUdpFrontEnd:
    """``async with SemtechUdpFrontEnd(radio_cfg) as fe:`` then read ``fe.queue``, ``fe.send()``."""

    def __init__(
        self,
        radio_cfg: Any = None,
        *,
        bind: str | None = None,
        port: int | None = None,
        counters: Counters | None = None,
        dedup_window_s: float | None = None,
        gateways: Iterable[str] | None = None,
        tx_ack_timeout_s: float = 2.0,
        alive_s: float = 60.0,
        wallclock: Callable[[], float] = time.time,
        receive_buffer_bytes: int = 4 << 20,
        max_forwarders: int = MAX_FORWARDERS,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        udp = getattr(radio_cfg, "semtech_udp", None)
        self.bind = bind if bind is not None else getattr(udp, "bind", "0.0.0.0")
        self.port = port if port is not None else getattr(udp, "port", 1700)
        self.counters = counters if counters is not None else Counters()
        if dedup_window_s is None:
            dedup_window_s = getattr(udp, "dedup_window_ms", 200) / 1000.0
        self.dedup_window_s = dedup_window_s
        if gateways is None:
            gateways = getattr(udp, "gateways", ())
        # An allowlist of forwarder EUIs (empty: any); datagrams from others are counted as
        # semtech_gateway_not_allowed and dropped without an answer.
        self.gateways: frozenset[str] = frozenset(g.lower() for g in gateways)
        self.tx_ack_timeout_s = tx_ack_timeout_s
        self.alive_s = alive_s
        self.wallclock = wallclock
        self.receive_buffer_bytes = receive_buffer_bytes
        self.max_forwarders = max_forwarders
        # Bounded: a flood the agent cannot keep up with is refused and counted, not buffered
        # until memory runs out.
        self.queue: asyncio.Queue[RxFrame] = asyncio.Queue(max_queue)
        self.forwarders: dict[str, ForwarderState] = {}
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heard: dict[bytes, _Heard] = {}
        self._expiry: deque[tuple[float, bytes, _Heard]] = deque()
        self._routes: dict[int, str] = {}
        self._pending: dict[tuple[str, int], asyncio.Future[TxAck]] = {}
        self._logged: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        try:
            infos = socket.getaddrinfo(self.bind, self.port, type=socket.SOCK_DGRAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise ListenError(self._listen_problem(exc)) from exc
        try:
            # Bursts of PUSH_DATA from many forwarders must not overflow the default buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            sock.bind(sockaddr)
            sock.setblocking(False)
            # Our own reader rather than a DatagramTransport: one wake-up drains every datagram
            # waiting (a transport reads one per event-loop turn), which matters under load.
            self._loop.add_reader(sock.fileno(), self._readable)
        except OSError as exc:
            sock.close()
            raise ListenError(self._listen_problem(exc)) from exc
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        log.info("semtech-udp listening on %s port %d", *self.address[:2])
        return self

    def _listen_problem(self, exc: OSError) -> str:
        hint = ""
        if getattr(exc, "errno", None) == errno.EADDRINUSE:
            hint = (": another program already listens there (a second agent, or a ChirpStack "
                    "gateway bridge?)")
        elif getattr(exc, "errno", None) == errno.EACCES:
            hint = ": ports below 1024 need privileges"
        return (f"cannot listen for packet forwarders on {self.bind} UDP port {self.port} "
                f"([radio.semtech_udp] bind/port): {exc.strerror or exc}{hint}")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for h in self._heard.values():
            if h.handle is not None:
                h.handle.cancel()
        self._heard.clear()
        self._expiry.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()

    @property
    def address(self) -> tuple[Any, ...]:
        """The (host, port) the server is bound to (port 0 in the config picks a free one)."""
        if self._sock is None:
            raise RuntimeError("the semtech-udp front end is not started (use async with)")
        return tuple(self._sock.getsockname())

    # -- counting and logging ---------------------------------------------------------------
    def _count_once(self, reason: str, detail: str) -> None:
        """Count a rejection; log it as a warning the first time its reason is seen."""
        self.counters["semtech_" + reason] += 1
        if reason in self._logged:
            log.debug("semtech-udp rejected (%s): %s", reason, detail)
        else:
            self._logged.add(reason)
            log.warning("semtech-udp rejected (%s): %s (further ones are counted as "
                        "semtech_%s and logged at debug level)", reason, detail, reason)

    def _reject(self, exc: ProtocolError, addr: Any) -> None:
        self._count_once(exc.reason, f"from {addr}: {exc.detail}")

    # -- the socket ------------------------------------------------------------------------
    def _readable(self) -> None:
        """Drain the socket (bounded, so other tasks get their turn under a flood)."""
        sock = self._sock
        for _ in range(256):
            if sock is None:
                return
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._count_once("socket_error", f"UDP receive: {exc}")
                return
            self._datagram(data, addr)
            sock = self._sock

    def _sendto(self, data: bytes, addr: Any) -> bool:
        """Send one datagram without blocking; a failure is counted, never raised."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(data, addr)
        except OSError as exc:  # full send buffer, unreachable network: acks are best effort
            self._count_once("socket_error", f"UDP send to {addr}: {exc}")
            return False
        return True

    # -- receiving ---------------------------------------------------------------------------
    def _datagram(self, data: bytes, addr: Any) -> None:
        """Handle one datagram; nothing raised here escapes (a last resort is counted)."""
        try:
            msg = parse_upstream(data)
            if self.gateways and msg.gateway_eui not in self.gateways:
                raise ProtocolError("gateway_not_allowed",
                                    f"gateway {msg.gateway_eui} is not in "
                                    "radio.semtech_udp.gateways")
            if type(msg) is PushData:
                self._push_data(msg, addr)
            elif type(msg) is PullData:
                self._pull_data(msg, addr)
            else:
                self._tx_ack(msg, addr)  # type: ignore[arg-type]
        except ProtocolError as exc:
            self._reject(exc, addr)
        except Exception:  # a last resort: one datagram must never stop the server
            self.counters["semtech_internal_error"] += 1
            log.exception("semtech-udp: datagram from %s not handled", addr)

    def _state(self, eui: str, now: float) -> ForwarderState:
        fwd = self.forwarders.get(eui)
        if fwd is None:
            if len(self.forwarders) >= self.max_forwarders:
                self._forget_silent(now)
                if len(self.forwarders) >= self.max_forwarders:
                    raise ProtocolError("too_many_forwarders",
                                        f"gateway {eui} refused: {len(self.forwarders)} "
                                        f"forwarders are already active")
            fwd = self.forwarders[eui] = ForwarderState(eui)
            log.info("semtech-udp: new forwarder %s", eui)
        fwd.last_seen = now
        return fwd

    def _forget_silent(self, now: float) -> None:
        """Forget forwarders not heard for ``alive_s`` (their routes fall back to the others)."""
        horizon = now - self.alive_s
        for eui in [e for e, f in self.forwarders.items() if f.last_seen < horizon]:
            del self.forwarders[eui]
            log.info("semtech-udp: forwarder %s forgotten (silent for %.0f s)", eui,
                     self.alive_s)

    def _push_data(self, msg: PushData, addr: Any) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        eui = msg.gateway_eui
        fwd = self._state(eui, now)
        self._sendto(encode_push_ack(msg.token), addr)  # "acknowledge immediately"
        fwd.push_addr = addr
        fwd.push_data += 1
        self.counters["semtech_push_data"] += 1
        if msg.rxpk:
            received_at = self.wallclock()
            # Once per datagram, not per rxpk: same clock, same forwarders alive.
            self._sweep(now)
            others = self._alive_others(eui, now)
            for obj in msg.rxpk:
                try:
                    frame = parse_rxpk(obj, received_at, eui)
                except ProtocolError as exc:
                    self._reject(exc, addr)
                    continue
                fwd.rxpk += 1
                self._received(frame, now, others)
        if msg.stat is not None:
            try:
                stat = parse_stat(msg.stat)
            except ProtocolError as exc:
                self._reject(exc, addr)
            else:
                fwd.stat = stat
                fwd.stat_received_at = self.wallclock()
                self.counters["semtech_stat"] += 1
                log.info("forwarder %s stat %s", eui, stat.line())

    def _pull_data(self, msg: PullData, addr: Any) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        fwd = self._state(msg.gateway_eui, now)
        if fwd.pull_addr != addr:
            log.info("forwarder %s takes downlinks at %s", msg.gateway_eui, addr)
        fwd.pull_addr = addr
        fwd.last_pull = now
        self.counters["semtech_pull_data"] += 1
        self._sendto(encode_pull_ack(msg.token), addr)

    def _tx_ack(self, msg: TxAck, addr: Any) -> None:
        fut = self._pending.get((msg.gateway_eui, msg.token))
        if fut is None or fut.done():
            self._count_once("tx_ack_unknown_token",
                             f"TX_ACK from {msg.gateway_eui} at {addr} for token {msg.token}, "
                             "which no downlink waits for")
            return
        fwd = self._state(msg.gateway_eui, self._loop.time())  # type: ignore[union-attr]
        fwd.tx_acks[msg.error] += 1
        fut.set_result(msg)

    # -- deduplication ---------------------------------------------------------------------
    def _alive_others(self, eui: str, now: float) -> int:
        horizon = now - self.alive_s
        return sum(1 for f in self.forwarders.values()
                   if f.gateway_eui != eui and f.last_seen >= horizon)

    def _sweep(self, now: float) -> None:
        """Forget uplinks whose window has passed (delivering any still held)."""
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, phy, heard = expiry.popleft()
            if not heard.delivered:
                self._deliver(heard)
            if self._heard.get(phy) is heard:
                del self._heard[phy]

    def _received(self, frame: RxFrame, now: float, others: int) -> None:
        """Deduplicate one reception; ``others``: forwarders alive besides the one that sent
        it (the caller swept expired uplinks at ``now``)."""
        phy = frame.phy
        eui = frame.gateway_eui or ""
        heard = self._heard.get(phy)
        if heard is None:
            heard = _Heard(frame, now + self.dedup_window_s)
            self._heard[phy] = heard
            self._expiry.append((heard.expires, phy, heard))
            if others == 0:
                self._deliver(heard)  # nobody else could report it: no reason to wait
            else:
                heard.handle = self._loop.call_at(  # type: ignore[union-attr]
                    heard.expires, self._flush, phy, heard)
            return
        self.counters["semtech_duplicate"] += 1
        if eui in heard.heard_by:
            return  # the same forwarder sent the same bytes twice: nothing new
        heard.heard_by.append(eui)
        if _better(frame, heard.best):
            heard.best = frame
            if heard.delivered:
                self._route(frame)  # too late for the metadata, not for the way back
        if not heard.delivered and others <= len(heard.heard_by) - 1:
            # every forwarder alive has now reported it (heard_by holds them all)
            if heard.handle is not None:
                heard.handle.cancel()
            self._deliver(heard)

    def _flush(self, phy: bytes, heard: _Heard) -> None:
        if not heard.delivered:
            self._deliver(heard)

    def _deliver(self, heard: _Heard) -> None:
        heard.delivered = True
        best = heard.best
        if len(heard.heard_by) > 1:
            best = dataclasses.replace(best, heard_by=tuple(heard.heard_by))
        fwd = self.forwarders.get(best.gateway_eui or "")
        if fwd is not None:
            fwd.best_receptions += 1
        self._route(best)
        try:
            self.queue.put_nowait(best)
        except asyncio.QueueFull:
            self._count_once("queue_full", f"{self.queue.maxsize} frames wait for the agent: "
                                           "a new uplink was dropped")
            return
        self.counters["semtech_uplinks"] += 1

    def _route(self, frame: RxFrame) -> None:
        addr = _devaddr(frame.phy, _MTYPE_UPLINKS)
        if addr is None or not frame.crc_ok or frame.gateway_eui is None:
            return
        routes = self._routes
        routes.pop(addr, None)
        routes[addr] = frame.gateway_eui
        if len(routes) > MAX_ROUTES:
            del routes[next(iter(routes))]

    def route_for(self, dev_addr: int) -> str | None:
        """The forwarder that heard ``dev_addr``'s last uplink best, if any."""
        return self._routes.get(dev_addr)

    # -- downlinks ---------------------------------------------------------------------------
    def _target(self, tx: TxRequest) -> ForwarderState:
        eui = tx.gateway_eui
        if eui is None:
            dev_addr = _devaddr(bytes(tx.phy), _MTYPE_DOWNLINKS)
            if dev_addr is not None:
                eui = self._routes.get(dev_addr)
        if eui is None:
            pullable = [f for f in self.forwarders.values() if f.pull_addr is not None]
            if len(pullable) == 1:
                return pullable[0]
            self.counters["semtech_no_route"] += 1
            raise NoRouteError(
                f"no forwarder to send this downlink through: {len(pullable)} have sent "
                "PULL_DATA and none is named by the request or has heard its DevAddr"
            )
        fwd = self.forwarders.get(eui.lower())
        if fwd is None or fwd.pull_addr is None:
            self._count_once("unknown_gateway",
                             f"downlink for forwarder {eui}, which has not sent PULL_DATA")
            raise NoRouteError(
                f"forwarder {eui} has not sent PULL_DATA yet: is its packet forwarder pointed "
                f"at this gateway's port {self.port}?"
            )
        return fwd

    async def send(self, tx: TxRequest) -> TxResult:
        """Send ``tx`` as PULL_RESP and wait for TX_ACK; raises on any refusal (see module doc)."""
        if self._sock is None or self._loop is None:
            raise RuntimeError("the semtech-udp front end is not started (use async with)")
        fwd = self._target(tx)
        datagram = None
        token = 0
        for _ in range(8):
            token = random.getrandbits(16)
            if (fwd.gateway_eui, token) not in self._pending:
                datagram = encode_pull_resp(token, txpk_for(tx))
                break
        if datagram is None:
            raise SemtechUdpError(f"forwarder {fwd.gateway_eui}: too many downlinks in flight")
        key = (fwd.gateway_eui, token)
        fut: asyncio.Future[TxAck] = self._loop.create_future()
        self._pending[key] = fut
        try:
            if not self._sendto(datagram, fwd.pull_addr):
                raise SemtechUdpError(f"forwarder {fwd.gateway_eui}: the PULL_RESP could not "
                                      "be sent (see the semtech_socket_error counter)")
            fwd.downlinks += 1
            self.counters["semtech_pull_resp"] += 1
            try:
                async with asyncio.timeout(self.tx_ack_timeout_s):
                    ack = await fut
            except TimeoutError:
                self.counters["semtech_tx_ack_timeout"] += 1
                raise TxAckTimeout(
                    f"forwarder {fwd.gateway_eui} did not acknowledge the downlink (token "
                    f"{token}) within {self.tx_ack_timeout_s} s"
                ) from None
        finally:
            self._pending.pop(key, None)
        if ack.error == "NONE":
            if ack.warning:
                log.info("forwarder %s accepted a downlink with warning %s", fwd.gateway_eui,
                         ack.warning)
            return TxResult(fwd.gateway_eui, token, ack.warning)
        self.counters["semtech_tx_" + (ack.error.lower() if ack.error in TX_ERRORS
                                       else "unknown_error")] += 1
        cls = _TX_ERROR_CLASSES.get(ack.error, TxRejected)
        raise cls(ack.error, fwd.gateway_eui)
