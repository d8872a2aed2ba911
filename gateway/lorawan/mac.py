"""MAC commands on the network side (LoRaWAN 1.0.4 §5): answer the device, ask it, track its state.

``MacState`` is what the network knows of a session's MAC layer (RX window settings, data rate,
TX power, duty-cycle limit, device status, requests in flight), kept JSON-able so the store can
persist it. ``process_uplink`` turns the commands a device sent (FOpts or FPort 0) into answers
(LinkCheckAns), state changes (the *Ans of our own requests) and SenML records (DevStatusAns).
Requests (LinkADRReq, DevStatusReq, RXParamSetupReq, RXTimingSetupReq, DutyCycleReq) wait in
``queued`` until the next downlink carries them, then in ``pending`` until the device answers;
one left unanswered is sent again, ``MAX_REQUEST_ATTEMPTS`` times at most.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.counters import Counters
from gateway.lorawan.adr import link_margin_db
from protocol import lorawan
from protocol import region_eu868 as region

log = logging.getLogger("cityedge.lorawan.mac")

MAX_REQUEST_ATTEMPTS: Final = 3
DEFAULT_CH_MASK: Final = 0x0007  # the three EU868 default channels
GPS_EPOCH_UNIX: Final = 315_964_800  # 1980-01-06T00:00:00Z
GPS_LEAP_SECONDS: Final = 18  # GPS - UTC since 2017-01-01

# Requests the network sends, by the name used in the API and in MacState.
REQUEST_CIDS: Final = {
    "link_adr": lorawan.CID_LINK_ADR,
    "duty_cycle": lorawan.CID_DUTY_CYCLE,
    "rx_param_setup": lorawan.CID_RX_PARAM_SETUP,
    "dev_status": lorawan.CID_DEV_STATUS,
    "rx_timing_setup": lorawan.CID_RX_TIMING_SETUP,
}
_NAME_OF_CID: Final = {cid: name for name, cid in REQUEST_CIDS.items()}


@dataclass(slots=True)
class MacState:
    """The network's view of one session's MAC layer (persisted as JSON with the device)."""

    rx1_dr_offset: int = 0
    rx2_dr: int = region.RX2_DR
    rx2_freq_hz: int = region.RX2_FREQ_HZ
    rx_delay_s: int = region.RECEIVE_DELAY1_S
    max_duty_cycle: int = 0  # device's aggregated duty cycle 1/2^n (DutyCycleReq)
    data_rate: int | None = None  # of the last uplink
    tx_power: int = 0  # TXPower index the device was last told (0 = max EIRP)
    nb_trans: int = 1
    ch_mask: int = DEFAULT_CH_MASK
    battery: int | None = None  # last DevStatusAns: 0 mains, 1..254 level, 255 unknown
    margin_db: int | None = None
    status_at: float | None = None  # when that answer came (gateway clock, Unix s)
    adr_rejected: bool = False  # the device refused our last LinkADRReq: stop asking
    # [name, fields, attempts, eager]; eager requests make a downlink happen, the others only
    # ride on one that goes anyway (the daily DevStatusReq)
    queued: list[list[Any]] = field(default_factory=list)
    pending: list[list[Any]] = field(default_factory=list)  # sent, waiting for the answer

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the store."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MacState:
        """Back from the store; unknown or mistyped entries fall back to defaults."""
        state = cls()
        if not data:
            return state
        for name in cls.__slots__:
            if name in data and _FIELD_OK[name](data[name]):
                setattr(state, name, data[name])
        state.queued = [e for e in state.queued if _valid_entry(e)]
        state.pending = [e for e in state.pending if _valid_entry(e)]
        return state

    # ---------------------------------------------------------------- requests

    def request(self, name: str, *, eager: bool = True, **fields: Any) -> None:
        """Queue a request for the next downlink (one of each kind: the newest wins); an eager
        one makes that downlink happen, otherwise it waits for one that goes anyway."""
        if name not in REQUEST_CIDS:
            raise ValueError(f"unknown MAC request {name!r}: one of {', '.join(REQUEST_CIDS)}")
        lorawan.encode_mac_command(REQUEST_CIDS[name], False, **fields)  # validates the fields
        self.queued = [q for q in self.queued if q[0] != name] + [[name, dict(fields), 0, eager]]

    def has_request(self, name: str) -> bool:
        """True while a request of this kind waits to be sent or answered."""
        return any(q[0] == name for q in self.queued + self.pending)

    def wants_downlink(self) -> bool:
        """True when a queued request should be sent even if nothing else is."""
        return any(_entry(q)[3] for q in self.queued)

    def take_requests(self, room: int) -> list[bytes]:
        """Encode queued requests that fit in ``room`` bytes; they become pending."""
        out: list[bytes] = []
        kept = []
        for entry in self.queued:
            name, fields, attempts, eager = _entry(entry)
            cmd = lorawan.encode_mac_command(REQUEST_CIDS[name], False, **fields)
            if len(cmd) <= room:
                out.append(cmd)
                room -= len(cmd)
                self.pending = [p for p in self.pending if p[0] != name]
                self.pending.append([name, fields, attempts + 1, eager])
            else:
                kept.append([name, fields, attempts, eager])
        self.queued = kept
        return out

    def _answered(self, name: str) -> dict[str, Any] | None:
        for i, entry in enumerate(self.pending):
            if entry[0] == name:
                del self.pending[i]
                return _entry(entry)[1]
        return None

    def requeue_unanswered(self, counters: Counters) -> None:
        """Requests sent before this uplink but not answered in it: send again or give up."""
        for entry in self.pending:
            name, fields, attempts, eager = _entry(entry)
            if attempts >= MAX_REQUEST_ATTEMPTS:
                counters["mac_request_unanswered"] += 1
                log.info("MAC request %s unanswered after %d attempts: given up", name, attempts)
                continue
            if not any(q[0] == name for q in self.queued):
                self.queued.insert(0, [name, fields, attempts, eager])
        self.pending = []


def _int_in(low: int, high: int, none_ok: bool = False) -> Any:
    def ok(v: Any) -> bool:
        if v is None:
            return none_ok
        return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
    return ok


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


# What a stored MacState field may hold; anything else falls back to the default at load.
_FIELD_OK: Final = {
    "rx1_dr_offset": _int_in(0, region.MAX_RX1_DR_OFFSET),
    "rx2_dr": _int_in(0, region.MAX_DR),
    "rx2_freq_hz": lambda v: _int_in(0, 10**10)(v) and region.sub_band(v) is not None,
    "rx_delay_s": _int_in(1, 15),
    "max_duty_cycle": _int_in(0, 15),
    "data_rate": _int_in(0, region.MAX_DR, none_ok=True),
    "tx_power": _int_in(0, len(region.TX_POWER_OFFSETS_DB) - 1),
    "nb_trans": _int_in(1, 15),
    "ch_mask": _int_in(0, 0xFFFF),
    "battery": _int_in(0, 255, none_ok=True),
    "margin_db": _int_in(-32, 31, none_ok=True),
    "status_at": _number_or_none,
    "adr_rejected": lambda v: isinstance(v, bool),
    "queued": lambda v: isinstance(v, list),
    "pending": lambda v: isinstance(v, list),
}


def _valid_entry(entry: Any) -> bool:
    """A stored request that can still be encoded (anything else is dropped at load)."""
    if (not isinstance(entry, list) or not entry or not isinstance(entry[0], str)
            or entry[0] not in REQUEST_CIDS):
        return False
    try:
        lorawan.encode_mac_command(REQUEST_CIDS[entry[0]], False, **_entry(entry)[1])
    except (ValueError, TypeError):
        return False
    return True


def _entry(entry: list[Any]) -> tuple[str, dict[str, Any], int, bool]:
    """A queued/pending request as (name, fields, attempts, eager), whatever its stored form."""
    name = entry[0]
    fields = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    attempts = entry[2] if len(entry) > 2 and isinstance(entry[2], int) else 0
    eager = bool(entry[3]) if len(entry) > 3 else True
    return name, fields, attempts, eager


@dataclass(slots=True)
class MacOutcome:
    """What the commands of one uplink call for."""

    answers: list[bytes] = field(default_factory=list)  # go first in the next downlink's FOpts
    records: list[dict[str, Any]] = field(default_factory=list)  # SenML, into the uplink's pack
    needs_downlink: bool = False  # sticky answers must be acknowledged by a downlink


def parse_uplink_commands(data: bytes, counters: Counters) -> list[tuple[int, dict[str, Any]]]:
    """The MAC commands of an uplink's FOpts or FPort 0 payload; a malformed tail is counted
    (``mac_malformed``) and the commands before it are kept, as a device would."""
    try:
        return lorawan.parse_mac_commands(data, True)
    except lorawan.MACCommandError as exc:
        counters["mac_malformed"] += 1
        log.info("malformed MAC commands in an uplink: %s", exc)
        return list(getattr(exc, "parsed", None) or [])
    except (ValueError, TypeError, IndexError) as exc:  # defensive: never crash on air input
        counters["mac_malformed"] += 1
        log.info("MAC commands could not be parsed: %s", exc)
        return []


def process_uplink(
    state: MacState,
    commands: list[tuple[int, dict[str, Any]]],
    *,
    snr_db: float,
    sf: int,
    gateway_count: int,
    received_at: float,
    counters: Counters,
) -> MacOutcome:
    """Apply a device's MAC commands to ``state`` and say what to answer and record."""
    out = MacOutcome()
    for cid, fields in commands:
        if cid == lorawan.CID_LINK_CHECK:
            margin = max(0, min(254, int(link_margin_db(snr_db, sf))))
            out.answers.append(lorawan.encode_mac_command(
                cid, False, margin=margin, gw_cnt=max(1, min(255, gateway_count))))
            counters["mac_link_check"] += 1
        elif cid == lorawan.CID_DEV_STATUS:
            _dev_status(state, fields, received_at, out)
            state._answered("dev_status")
            counters["mac_dev_status"] += 1
        elif cid == lorawan.CID_LINK_ADR:
            _link_adr_ans(state, fields, counters)
        elif cid == lorawan.CID_DUTY_CYCLE:
            req = state._answered("duty_cycle")
            if req is not None:
                state.max_duty_cycle = req["max_duty_cycle"]
        elif cid == lorawan.CID_RX_PARAM_SETUP:
            out.needs_downlink = True  # sticky until a downlink arrives (§5.4)
            req = state._answered("rx_param_setup")
            if req is not None:
                if all(fields.values()):
                    state.rx1_dr_offset = req["rx1_dr_offset"]
                    state.rx2_dr = req["rx2_data_rate"]
                    state.rx2_freq_hz = req["frequency"]
                else:
                    counters["mac_rx_param_setup_rejected"] += 1
        elif cid == lorawan.CID_RX_TIMING_SETUP:
            out.needs_downlink = True  # sticky until a downlink arrives (§5.7)
            req = state._answered("rx_timing_setup")
            if req is not None:
                state.rx_delay_s = req["delay"] or 1
        elif cid == lorawan.CID_DEVICE_TIME:
            gps = received_at - GPS_EPOCH_UNIX + GPS_LEAP_SECONDS
            seconds = int(gps)
            out.answers.append(lorawan.encode_mac_command(
                cid, False, seconds=seconds & 0xFFFFFFFF,
                fraction=min(255, int((gps - seconds) * 256))))
        else:
            counters["mac_ignored"] += 1
    state.requeue_unanswered(counters)
    return out


def _dev_status(state: MacState, fields: dict[str, Any], received_at: float,
                out: MacOutcome) -> None:
    battery, margin = fields["battery"], fields["margin"]
    state.battery, state.margin_db, state.status_at = battery, margin, received_at
    if battery == 0:
        out.records.append({"n": "external_power", "vb": True})
    elif battery != 255:
        # 1..254 is the battery level from empty to full (§5.5); SenML %EL: percent remaining
        out.records.append({"n": "battery_level", "u": "%EL",
                            "v": round((battery - 1) * 100.0 / 253.0, 1)})
    out.records.append({"n": "margin", "u": "dB", "v": margin})


def _link_adr_ans(state: MacState, fields: dict[str, Any], counters: Counters) -> None:
    req = state._answered("link_adr")
    if req is None:
        return  # an answer to a request we no longer track (restart): nothing to apply
    if all(fields.values()):
        if req["data_rate"] != 15:
            state.data_rate = req["data_rate"]
        if req["tx_power"] != 15:
            state.tx_power = req["tx_power"]
        state.nb_trans = req["nb_trans"] or 1
        state.ch_mask = req["ch_mask"]
        counters["adr_applied"] += 1
    else:
        state.adr_rejected = True
        counters["adr_rejected"] += 1
        log.info("LinkADRReq refused by the device (%s): ADR paused for this session",
                 ", ".join(k for k, v in fields.items() if not v))
