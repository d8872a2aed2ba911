"""The network side of LoRaWAN on the gateway: joins, uplink checks, MAC commands, downlinks.

Uplinks: a frame becomes an ``Accepted`` uplink only after: a parsable LoRaWAN data frame, a
registered DevAddr, a 32-bit frame counter reconstructed ahead of the last accepted one, a valid
MIC, and a payload the role's codec decodes. A join-request becomes a ``JoinGranted`` (see
``gateway.lorawan.join``) that ``complete_join`` stores and answers. Every other outcome is a
counted ``Rejection``; nothing here raises on bad input from the air.

Downlinks: ``handle`` notes, for each accepted uplink, what it calls for (an ACK, MAC answers,
requests of ours, queued application payloads); the agent commits the uplinks, then
``send_replies`` transmits in RX1 or RX2 within the gateway's duty-cycle budget. Application
payloads are queued with ``queue_downlink``, which returns a ``DownlinkHandle`` to follow (and
``cancel_downlink`` takes one back before it is sent); Class C devices get theirs at once, or,
right after one of their uplinks, as soon as its receive windows have closed (a concentrator
timestamp: see ``_class_c_slot``). Every downlink takes a frame counter committed in the store
first, so none is ever used twice, even across a crash; a device's downlinks are composed one at
a time (a lock per device), so frame counters go on the air in increasing order.

Time: ``clock`` is the front end's clock, the one ``RxFrame.received_at`` is read from (the wall
clock for a concentrator, virtual time for the simulated channel). With a frame's ``tmst_us`` it
gives the concentrator's counter now, so a Class C downlink is timed in the front end's own
time, never in the agent's wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.counters import Counters
from gateway.lorawan import adr
from gateway.lorawan.downlink import (
    CLASS_C_GUARD_US,
    FRAME_OVERHEAD,
    MAX_ATTEMPTS,
    DownlinkHandle,
    Window,
    class_a_windows,
    class_c_free_at,
    class_c_window,
)
from gateway.lorawan.dutycycle import DutyCycleBudget
from gateway.lorawan.join import JoinGranted, JoinSettings, allocate_dev_addr, grant
from gateway.lorawan.mac import MacState, parse_uplink_commands, process_uplink
from gateway.radio.frame import RxFrame, TxRequest
from gateway.store import Accepted, Device, NewRecord, Store, StoreError
from gateway.store.db import FCNT_DOWN_BLOCK
from gateway.uplink.decoder import decode_records
from protocol import lorawan
from protocol import payload as codec
from protocol import region_eu868 as region

log = logging.getLogger("cityedge.lorawan")

UPLINK_MTYPES = (lorawan.MTYPE_UNCONFIRMED_UP, lorawan.MTYPE_CONFIRMED_UP)
MAX_FOPTS: Final = 15
MAX_APP_PAYLOAD: Final = 242  # the largest FRMPayload EU868 carries at any data rate (DR4..DR6)
DEV_STATUS_INTERVAL_S: Final = 24 * 3600.0  # ask battery and margin at most once a day
CLASS_C_ACK_TIMEOUT_S: Final = 60.0  # a confirmed Class C downlink not acked by then is resent
CLASS_C_RETRY_S: Final = 1.0  # after a transmit error
CLASS_C_RECHECK_S: Final = 5.0  # a Class C downlink waiting for budget looks again this often
# A Class C downlink held until the device's receive windows close is handed to the front end
# for that concentrator time when it is at most this far ahead (else the sender waits first) ...
CLASS_C_MAX_LEAD_US: Final = 30_000_000
# ... and at least this far ahead, so it is never "too late" by the front end's own latency.
CLASS_C_MIN_LEAD_US: Final = 20_000
CLASS_C_TX_GAP_US: Final = 10_000  # between two downlinks we book on one transmitter

Transmitter = Callable[[TxRequest], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a frame was not accepted; ``reason`` is also the counter's name."""

    reason: str
    detail: str
    dev_eui: str | None = None


@dataclass(slots=True)
class UplinkReply:
    """What one uplink calls for in its receive windows (built by ``handle``)."""

    dev_eui: str
    rid: str | None
    tmst_us: int
    freq_hz: int
    data_rate: int
    gateway_eui: str | None
    ack: bool = False  # a confirmed uplink: the downlink must carry ACK
    needs_downlink: bool = False  # sticky MAC answers or ADRACKReq: send even an empty frame
    answers: list[bytes] = field(default_factory=list)


def record_id(gateway_id: str, dev_eui: str, fcnt: int) -> str:
    """The stable id of an uplink: the same frame heard twice gets the same id."""
    return f"{gateway_id}:{dev_eui}:{fcnt}"


class DownlinkError(ValueError):
    """A downlink cannot be queued (unknown device, no session, bad port or length)."""


class NetworkSide:
    """Joins, checks, decrypts and decodes uplinks and schedules downlinks for the registry."""

    def __init__(
        self,
        store: Store,
        gateway_id: str,
        counters: Counters | None = None,
        *,
        join_settings: JoinSettings | None = None,
        budget: DutyCycleBudget | None = None,
        transmit: Transmitter | None = None,
        dev_status_interval_s: float = DEV_STATUS_INTERVAL_S,
        class_c_ack_timeout_s: float = CLASS_C_ACK_TIMEOUT_S,
        max_tx_power_dbm: int = 27,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.counters = counters if counters is not None else Counters()
        self.aes = lorawan.default_aes()
        self.join_settings = join_settings or JoinSettings()
        self.budget = budget or DutyCycleBudget()
        self.transmit = transmit
        self.dev_status_interval_s = dev_status_interval_s
        self.class_c_ack_timeout_s = class_c_ack_timeout_s
        self.max_tx_power_dbm = max_tx_power_dbm
        self.clock = clock  # the front end's clock (Unix s): what RxFrame.received_at is read from
        self.class_c_recheck_s = CLASS_C_RECHECK_S
        self.class_c_retry_s = CLASS_C_RETRY_S
        self._by_addr: dict[int, Device] = {}
        self._by_eui: dict[str, Device] = {}
        self._mac: dict[str, MacState] = {}
        self._snr: dict[str, deque[float]] = {}
        self._last_up: dict[str, bytes] = {}  # last accepted PHYPayload (retransmissions)
        self._last_gw: dict[str, str | None] = {}
        self._nonces: dict[str, set[int]] = {}  # DevNonces seen since start ("unique" mode)
        self._status_asked: dict[str, float] = {}
        self._queues: dict[str, deque[DownlinkHandle]] = {}
        self._awaiting_ack: dict[str, DownlinkHandle] = {}
        self._replies: list[UplinkReply] = []
        self._dirty: set[str] = set()
        self._class_c_tasks: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._heard_c: dict[str, RxFrame] = {}  # a Class C device's last uplink
        self._ref: dict[str | None, RxFrame] = {}  # per gateway: its last frame (its clock)
        self._booked_until: dict[str | None, int] = {}  # per gateway: end of our last downlink
        self._reply_end: dict[str, int] = {}  # end (tmst) of what we sent in its windows
        self._reply_pending: set[str] = set()  # a reply to its last uplink is not sent yet
        self._locks: dict[str, asyncio.Lock] = {}  # one downlink composed at a time per device
        self._refills: set[asyncio.Task[int]] = set()  # downlink counter blocks reserved ahead
        self.reload_devices()
        # Class C downlinks go at once: their first counters are reserved now (one commit for
        # all), not on a command's path. On failure each downlink reserves its own.
        try:
            self.store.prefetch_fcnt_down(d.dev_eui for d in self._by_eui.values()
                                          if d.dev_class == "C" and d.dev_addr)
        except StoreError as exc:
            log.warning("downlink counters not reserved ahead: %s", exc)

    # ---------------------------------------------------------------- registry

    def reload_devices(self) -> None:
        """Refresh the in-memory registry (after `gateway nodes add`, or at start)."""
        devices = self.store.list_devices()
        self._by_eui = {d.dev_eui: d for d in devices}
        self._by_addr = {int(d.dev_addr, 16): d for d in devices if d.dev_addr}
        for d in devices:
            self._mac[d.dev_eui] = MacState.from_dict(d.mac_state)

    def _device(self, dev_eui: str) -> Device | None:
        """The registered device, looked up in the store when added since the last reload."""
        dev = self._by_eui.get(dev_eui)
        if dev is None:
            dev = self.store.get_device(dev_eui)
            if dev is not None:
                self._by_eui[dev.dev_eui] = dev
                self._mac[dev.dev_eui] = MacState.from_dict(dev.mac_state)
                if dev.dev_addr and int(dev.dev_addr, 16) not in self._by_addr:
                    self._by_addr[int(dev.dev_addr, 16)] = dev
        return dev

    def device(self, dev_eui: str) -> Device | None:
        """The registered device (as of the last reload or first use), or None."""
        return self._device(dev_eui.lower())

    def mac_state(self, dev_eui: str) -> MacState:
        """The MAC state the network keeps for a device (defaults if none yet)."""
        eui = dev_eui.lower()
        state = self._mac.get(eui)
        if state is None:
            state = self._mac[eui] = MacState()
        return state

    def request_mac(self, dev_eui: str, name: str, **fields: Any) -> None:
        """Queue a MAC request ("dev_status", "rx_param_setup", "rx_timing_setup",
        "duty_cycle", "link_adr") for the device's next downlink; fields as in
        ``protocol.lorawan.encode_mac_command``. Raises DownlinkError for an unknown device and
        ValueError for bad fields."""
        eui = dev_eui.lower()
        if self._device(eui) is None:
            raise DownlinkError(f"device {dev_eui} is not registered")
        self.mac_state(eui).request(name, **fields)
        self._dirty.add(eui)
        dev = self._by_eui[eui]
        if dev.dev_class == "C":
            self._start_class_c(eui)

    def take_mac_states(self) -> dict[str, dict[str, Any]]:
        """MAC states changed since the last call, to persist with the next commit."""
        out = {eui: self.mac_state(eui).to_dict() for eui in self._dirty if eui in self._by_eui}
        self._dirty.clear()
        return out

    # ---------------------------------------------------------------- uplinks

    def handle(self, frame: RxFrame) -> Accepted | JoinGranted | Rejection:
        """Turn one received frame into an accepted uplink, a granted join or a counted
        rejection."""
        try:
            result = self._check(frame)
        except Exception as exc:  # a bug must cost one frame, never the agent
            log.exception("frame handling failed")
            result = Rejection("internal", f"{type(exc).__name__}: {exc}")
        if isinstance(result, Rejection):
            self.counters["rejected_" + result.reason] += 1
            log.info(
                "frame rejected reason=%s dev_eui=%s detail=%s",
                result.reason, result.dev_eui or "-", result.detail,
            )
        elif isinstance(result, JoinGranted):
            self.counters["join_granted"] += 1
        else:
            self.counters["accepted"] += 1
        return result

    def take_replies(self) -> list[UplinkReply]:
        """The downlink needs noted by ``handle`` since the last call."""
        out, self._replies = self._replies, []
        return out

    def _check(self, frame: RxFrame) -> Accepted | JoinGranted | Rejection:
        if not frame.crc_ok:
            return Rejection("crc", "radio CRC error")
        if frame.phy[:1] and frame.phy[0] >> 5 == lorawan.MTYPE_JOIN_REQUEST:
            return self._join_request(frame)
        try:
            parsed = lorawan.parse_frame(frame.phy)
        except lorawan.FrameError as exc:
            return Rejection("garbage", str(exc))
        if parsed.mtype not in UPLINK_MTYPES:
            return Rejection("not_uplink", f"message type {parsed.mtype} is not a data uplink")
        dev = self._by_addr.get(parsed.devaddr)
        if dev is None:
            return Rejection("unknown_devaddr", f"DevAddr {parsed.devaddr:08x} is not registered")
        if dev.nwk_s_key is None:
            return Rejection("no_session", "the device has no session keys yet", dev.dev_eui)
        try:
            fcnt = lorawan.fcnt32_from16(dev.fcnt_up, parsed.fcnt16)
        except lorawan.FrameError as exc:
            return Rejection("fcnt", str(exc), dev.dev_eui)
        try:
            lorawan.check_mic(self.aes, parsed, dev.nwk_s_key, fcnt)
        except lorawan.MICError:
            return Rejection("bad_mic", "MIC does not match the registered NwkSKey", dev.dev_eui)
        if fcnt == dev.fcnt_up:
            last = self._last_up.get(dev.dev_eui)
            if last is not None and last != bytes(frame.phy):
                return Rejection("replay", f"FCnt {fcnt} reused with different content",
                                 dev.dev_eui)
            if parsed.confirmed and last is not None:
                # the device did not hear our ACK: acknowledge the retransmission again
                self._note_reply(dev, frame, None, ack=True)
                self.counters["retransmission_acked"] += 1
            return Rejection("retransmission", f"FCnt {fcnt} already received", dev.dev_eui)
        if fcnt < dev.fcnt_up:
            return Rejection(
                "replay", f"FCnt {fcnt} is behind the last accepted {dev.fcnt_up}", dev.dev_eui
            )
        clear = b""
        if parsed.fport is not None:
            key = dev.nwk_s_key if parsed.fport == 0 else dev.app_s_key
            if key is None:
                return Rejection("no_session", "no AppSKey registered", dev.dev_eui)
            clear = lorawan.decrypt_payload(self.aes, parsed, key, fcnt)
        readings: list[dict[str, Any]] = []
        alarm = False
        if parsed.fport:
            try:
                _, readings, alarm = decode_records(parsed.fport, clear)
            except codec.PayloadError as exc:
                # Genuine frame (MIC ok): advance the counter so it cannot be replayed, but
                # keep nothing we cannot decode.
                dev.fcnt_up = fcnt
                self._last_up[dev.dev_eui] = bytes(frame.phy)
                return Rejection("payload", str(exc), dev.dev_eui)
        dev.fcnt_up = fcnt
        self._last_up[dev.dev_eui] = bytes(frame.phy)
        rid = record_id(self.gateway_id, dev.dev_eui, fcnt)
        self._resolve_ack(dev, parsed.ack)
        mac_records = self._mac_uplink(dev, frame, parsed, clear, rid)
        records = self._senml(dev, readings, frame, fcnt, rid, mac_records)
        return Accepted(
            dev_eui=dev.dev_eui,
            fcnt_up=fcnt,
            rid=rid,
            kind="up",
            priority=1 if alarm else 0,
            created_at=frame.received_at,
            records=records,
            fport=parsed.fport,
        )

    def _mac_uplink(self, dev: Device, frame: RxFrame, parsed: lorawan.DataFrame,
                    clear: bytes, rid: str) -> list[dict[str, Any]]:
        """MAC commands, ADR and the reply this uplink calls for; returns SenML records."""
        eui = dev.dev_eui
        state = self.mac_state(eui)
        data_rate = _data_rate(frame)
        raw = clear if parsed.fport == 0 else parsed.fopts
        commands = parse_uplink_commands(raw, self.counters) if raw else []
        had_requests = bool(state.pending)
        outcome = process_uplink(
            state, commands, snr_db=frame.snr_db, sf=frame.sf,
            gateway_count=max(1, len(getattr(frame, "heard_by", ()) or ())),
            received_at=frame.received_at, counters=self.counters,
        )
        if commands or had_requests:
            self._dirty.add(eui)
        if data_rate is not None and state.data_rate != data_rate:
            state.data_rate = data_rate
            self._dirty.add(eui)
        history = self._snr.setdefault(eui, deque(maxlen=adr.HISTORY))
        history.append(frame.snr_db)
        if (parsed.adr and data_rate is not None and not state.adr_rejected
                and not state.has_request("link_adr")):
            decision = adr.decide(list(history), data_rate, state.tx_power)
            if decision is not None:
                state.request("link_adr", data_rate=decision.data_rate,
                              tx_power=decision.tx_power, ch_mask=state.ch_mask,
                              ch_mask_cntl=0, nb_trans=state.nb_trans)
                history.clear()  # judge the new settings on their own uplinks
                self.counters["adr_requested"] += 1
                self._dirty.add(eui)
        self._note_reply(dev, frame, rid, ack=parsed.confirmed, answers=outcome.answers,
                         needs=outcome.needs_downlink or parsed.adr_ack_req)
        return outcome.records

    def _note_reply(self, dev: Device, frame: RxFrame, rid: str | None, *, ack: bool,
                    answers: list[bytes] | None = None, needs: bool = False) -> None:
        gw = getattr(frame, "gateway_eui", None)
        self._last_gw[dev.dev_eui] = gw
        self._ref[gw] = frame
        if dev.dev_class == "C":  # busy around this uplink: Class C downlinks wait (_class_c_slot)
            self._heard_c[dev.dev_eui] = frame
            self._reply_end.pop(dev.dev_eui, None)
        state = self._mac.get(dev.dev_eui)
        if not (ack or answers or needs or self._queues.get(dev.dev_eui)
                or (state is not None and state.wants_downlink())):
            return  # nothing to say: the common case costs no downlink work
        data_rate = _data_rate(frame)
        if data_rate is None:
            self.counters["downlink_unknown_data_rate"] += 1
            return
        self._replies.append(UplinkReply(
            dev.dev_eui, rid, frame.tmst_us, frame.freq_hz, data_rate, gw, ack=ack,
            needs_downlink=needs, answers=list(answers or ())))
        if dev.dev_class == "C":
            self._reply_pending.add(dev.dev_eui)

    def _resolve_ack(self, dev: Device, ack: bool) -> None:
        """A confirmed downlink is acknowledged by the ACK bit of the device's next uplink."""
        waiting = self._awaiting_ack.pop(dev.dev_eui, None)
        if waiting is None:
            return
        self._cancel_timer(waiting)
        if ack:
            waiting._set("acked")
            self.counters["downlink_acked"] += 1
            if dev.dev_class == "C":
                self._start_class_c(dev.dev_eui)
        else:
            self._retry_or_fail(waiting, "no acknowledgement")

    def _retry_or_fail(self, handle: DownlinkHandle, why: str) -> None:
        if handle.attempts >= MAX_ATTEMPTS:
            handle._set("failed", f"{why} after {handle.attempts} transmissions")
            self.counters["downlink_failed"] += 1
            return
        self._queues.setdefault(handle.dev_eui, deque()).appendleft(handle)
        self.counters["downlink_retry"] += 1
        dev = self._by_eui.get(handle.dev_eui)
        if dev is not None and dev.dev_class == "C":
            self._start_class_c(handle.dev_eui)

    def _senml(
        self, dev: Device, readings: list[dict[str, Any]], frame: RxFrame, fcnt: int, rid: str,
        extra: list[dict[str, Any]],
    ) -> list[dict]:
        """The uplink's pack: base name and time, readings, MAC records, radio metadata."""
        first = {"bn": f"urn:dev:mac:{dev.dev_eui}:", "bt": frame.received_at}
        if readings:
            first.update(readings[0])
            readings[0] = first
            records = readings
        else:
            records = [first]
        records.extend(extra)
        records.extend(radio_records(frame, fcnt))
        for r in records:
            r["rid"] = rid
        return records

    # ---------------------------------------------------------------- joins

    def _join_request(self, frame: RxFrame) -> JoinGranted | Rejection:
        try:
            req = lorawan.parse_join_request(frame.phy)
        except lorawan.FrameError as exc:
            return Rejection("garbage", str(exc))
        eui = req.dev_eui.hex()
        dev = self._device(eui)
        if dev is None:
            return Rejection("join_unknown_dev_eui", f"DevEUI {eui} is not registered", eui)
        if dev.app_key is None:
            return Rejection("join_not_otaa", "the device has no AppKey (ABP only)", eui)
        join_eui = req.join_eui.hex()
        if dev.join_eui is not None and dev.join_eui != join_eui:
            return Rejection("join_eui_mismatch",
                             f"JoinEUI {join_eui} is not the registered {dev.join_eui}", eui)
        try:
            lorawan.check_join_request_mic(self.aes, req, dev.app_key)
        except lorawan.MICError:
            return Rejection("join_bad_mic", "join-request MIC does not match the AppKey", eui)
        nonce = req.dev_nonce
        if dev.dev_nonce_mode == "unique":
            seen = self._nonces.setdefault(eui, set())
            if nonce in seen or self.store.dev_nonce_used(eui, nonce):
                return Rejection("dev_nonce_replay", f"DevNonce {nonce} was used before", eui)
            seen.add(nonce)
        elif nonce <= dev.last_dev_nonce:
            return Rejection("dev_nonce_replay",
                             f"DevNonce {nonce} is not above the last one {dev.last_dev_nonce}",
                             eui)
        if _data_rate(frame) is None:
            return Rejection("join_data_rate", f"SF{frame.sf}/{frame.bw_khz} kHz is not an "
                             "EU868 data rate", eui)
        if dev.join_nonce >= 0xFFFFFF:
            return Rejection("join_nonce_exhausted", "JoinNonce counter exhausted", eui)
        dev.last_dev_nonce = max(dev.last_dev_nonce, nonce)
        dev.join_nonce += 1
        dev_addr = allocate_dev_addr(self.join_settings.net_id, self._by_addr.keys())
        return grant(self.aes, self.join_settings, req, dev.app_key, dev.join_nonce, dev_addr,
                     frame, eui)

    async def complete_join(self, granted: JoinGranted) -> bool:
        """Store the new session (DevNonce, JoinNonce, keys, DevAddr), then send the
        join-accept in JOIN_ACCEPT_DELAY1/2; a join event record is queued for the broker."""
        eui = granted.dev_eui
        addr_hex = f"{granted.dev_addr:08x}"
        try:
            ok = await asyncio.to_thread(
                self.store.commit_join, eui, dev_nonce=granted.dev_nonce,
                join_nonce=granted.join_nonce, dev_addr=addr_hex, nwk_s_key=granted.nwk_s_key,
                app_s_key=granted.app_s_key, mac_state=granted.mac_state.to_dict())
        except StoreError as exc:
            self.counters["join_store_failed"] += 1
            log.error("join of %s not stored, no join-accept sent: %s", eui, exc)
            return False
        if not ok:
            self.counters["rejected_dev_nonce_replay"] += 1
            log.info("join of %s refused at commit: DevNonce %d already used", eui,
                     granted.dev_nonce)
            return False
        dev = self._by_eui[eui]
        if dev.dev_addr:
            self._by_addr.pop(int(dev.dev_addr, 16), None)
        dev.dev_addr, dev.nwk_s_key, dev.app_s_key = addr_hex, granted.nwk_s_key, granted.app_s_key
        dev.fcnt_up, dev.fcnt_down = -1, 0
        self._by_addr[granted.dev_addr] = dev
        self._mac[eui] = granted.mac_state
        self._snr.pop(eui, None)
        self._last_up.pop(eui, None)
        old = self._awaiting_ack.pop(eui, None)
        if old is not None:
            self._cancel_timer(old)
            self._retry_or_fail(old, "device rejoined")
        self.counters["joins"] += 1
        log.info("device %s joined as DevAddr %s (JoinNonce %d)", eui, addr_hex,
                 granted.join_nonce)
        frame = granted.frame
        self._ref[getattr(frame, "gateway_eui", None)] = frame
        rid = f"{self.gateway_id}:{eui}:join:{granted.join_nonce}"
        event = NewRecord(rid=rid, dev_eui=eui, kind="event", created_at=frame.received_at,
                          records=[{"bn": f"urn:dev:mac:{eui}:", "bt": frame.received_at,
                                    "n": "join", "vs": addr_hex, "rid": rid}])
        try:
            await asyncio.to_thread(self.store.add_records, [event])
        except StoreError as exc:
            self.counters["event_store_failed"] += 1
            log.error("join event of %s not stored: %s", eui, exc)
        data_rate = _data_rate(frame)
        assert data_rate is not None  # checked in _join_request
        windows = class_a_windows(frame.tmst_us, data_rate, frame.freq_hz, granted.mac_state,
                                  join=True)
        usable = self._usable(windows, len(granted.accept_phy))
        sent = await self._send(usable, granted.accept_phy, getattr(frame, "gateway_eui", None))
        if sent is None:
            self.counters["join_accept_not_sent"] += 1
        else:
            self.counters["join_accept_sent"] += 1
        if dev.dev_class == "C" and self._queues.get(eui):
            self._start_class_c(eui)
        return True

    # ---------------------------------------------------------------- downlinks

    def queue_downlink(self, dev_eui: str, fport: int, payload: bytes, *,
                       confirmed: bool = False) -> DownlinkHandle:
        """Queue an application payload (FPort 1..223, at most 242 bytes) for a device.

        Class A: it goes in RX1/RX2 after the device's next uplink; Class C: at once on the RX2
        parameters. Returns a handle whose status (queued, sent, acked, failed) can be polled,
        awaited (``await handle.wait()``) or followed (``handle.on_change(cb)``). Raises
        DownlinkError for an unknown device, a device without session, or a bad port/length.
        """
        eui = dev_eui.lower() if isinstance(dev_eui, str) else ""
        dev = self._device(eui)
        if dev is None:
            raise DownlinkError(f"device {dev_eui!r} is not registered")
        if dev.dev_addr is None or dev.nwk_s_key is None or dev.app_s_key is None:
            raise DownlinkError(f"device {eui} has no session yet (not joined, no ABP keys)")
        if not isinstance(fport, int) or isinstance(fport, bool) or not 1 <= fport <= 223:
            raise DownlinkError(f"FPort {fport!r}: application ports are 1..223")
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_APP_PAYLOAD:
            raise DownlinkError(f"payload of a downlink must be bytes, at most {MAX_APP_PAYLOAD}")
        handle = DownlinkHandle(eui, fport, bytes(payload), bool(confirmed))
        self._queues.setdefault(eui, deque()).append(handle)
        self.counters["downlink_queued"] += 1
        if dev.dev_class == "C":
            self._start_class_c(eui)
        return handle

    def queued(self, dev_eui: str) -> list[DownlinkHandle]:
        """Application downlinks waiting for a device, oldest first."""
        return list(self._queues.get(dev_eui.lower(), ()))

    async def send_replies(self, replies: list[UplinkReply]) -> None:
        """Answer each uplink in its RX1 or RX2 window (ACK, MAC commands, queued payload)."""
        for reply in replies:
            try:
                await self._reply(reply)
            except Exception:  # a failed downlink must not stop reception
                self.counters["downlink_error"] += 1
                log.exception("downlink to %s failed", reply.dev_eui)

    def replies_dropped(self, replies: list[UplinkReply]) -> None:
        """The agent will not send these replies (their uplinks were not stored): let the
        devices' Class C downlinks go on without them."""
        for reply in replies:
            self._reply_pending.discard(reply.dev_eui)
            dev = self._by_eui.get(reply.dev_eui)
            if dev is not None and dev.dev_class == "C" and self._queues.get(reply.dev_eui):
                self._start_class_c(reply.dev_eui)

    def _lock(self, eui: str) -> asyncio.Lock:
        lock = self._locks.get(eui)
        if lock is None:
            lock = self._locks[eui] = asyncio.Lock()
        return lock

    async def _reply(self, reply: UplinkReply) -> None:
        eui = reply.dev_eui
        try:
            async with self._lock(eui):
                await self._reply_locked(reply)
        finally:
            self._reply_pending.discard(eui)
            dev = self._by_eui.get(eui)
            if dev is not None and dev.dev_class == "C" and (
                    self._queues.get(eui) or self.mac_state(eui).wants_downlink()):
                self._start_class_c(eui)  # held while this reply was pending

    async def _reply_locked(self, reply: UplinkReply) -> None:
        eui = reply.dev_eui
        dev = self._by_eui.get(eui)
        if dev is None or dev.nwk_s_key is None or dev.dev_addr is None:
            return
        state = self.mac_state(eui)
        queue = self._queues.get(eui)
        app = queue[0] if queue and dev.dev_class == "A" and eui not in self._awaiting_ack \
            else None
        if not (reply.ack or reply.answers or reply.needs_downlink or state.wants_downlink()
                or app):
            return
        windows = class_a_windows(reply.tmst_us, reply.data_rate, reply.freq_hz, state)
        self._maybe_ask_status(eui, state)
        snapshot = ([list(q) for q in state.queued], [list(p) for p in state.pending])
        fopts, fport, payload = self._compose(state, reply.answers, app)
        usable = self._usable(windows, FRAME_OVERHEAD + len(fopts) + _port_len(fport, payload))
        if not usable and app is not None:
            state.queued, state.pending = snapshot
            self.counters["downlink_app_deferred"] += 1
            if any(w.fits(len(fopts) + _port_len(fport, payload) + FRAME_OVERHEAD - 5)
                   for w in windows):
                app._delayed("duty_cycle")  # it fitted a window: the budget said no
            fopts, fport, payload = self._compose(state, reply.answers, None)
            app = None
            usable = self._usable(windows, FRAME_OVERHEAD + len(fopts) + _port_len(fport, payload))
        if not usable:
            state.queued, state.pending = snapshot
            self.counters["downlink_deferred"] += 1
            log.info("no downlink to %s after its uplink: no window within the duty-cycle "
                     "budget", eui)
            return
        if app is not None:
            app.in_flight = True
        try:
            fcnt = await self._reserve_fcnt_down(eui)
            dev.fcnt_down = fcnt + 1
            more = bool(queue) and len(queue) > (1 if app is not None else 0)
            phy = self._build(dev, fcnt, fopts, fport, payload, app, ack=reply.ack,
                              fpending=more)
            sent = await self._send(usable, phy, reply.gateway_eui)
        finally:
            if app is not None:
                app.in_flight = False
        self._dirty.add(eui)
        if sent is not None and dev.dev_class == "C" and sent.tmst_us is not None:
            self._reply_end[eui] = sent.tmst_us + sent.airtime_us(len(phy))
        if sent is None:
            state.queued, state.pending = snapshot
            return
        if reply.ack:
            self.counters["downlink_ack_sent"] += 1
        if app is not None:
            self._app_sent(app, fcnt)

    async def _reserve_fcnt_down(self, eui: str) -> int:
        """The device's next downlink counter (StoreError when it has none). When its reserved
        block runs low the next one is reserved in the background, keeping that commit off the
        path of the downlinks to come."""
        fcnt = await asyncio.to_thread(self.store.reserve_fcnt_down, eui)
        if self.store.fcnt_down_left(eui) < FCNT_DOWN_BLOCK // 2:
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self.store.prefetch_fcnt_down, [eui]),
                name=f"fcnt-down-refill-{eui}")
            self._refills.add(task)
            task.add_done_callback(self._refilled)
        return fcnt

    def _refilled(self, task: asyncio.Task[int]) -> None:
        self._refills.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the next reserve_fcnt_down commits a block itself (and reports what is wrong)
            self.counters["fcnt_down_refill_failed"] += 1
            log.warning("downlink counters not reserved ahead: %s", task.exception())

    def _maybe_ask_status(self, eui: str, state: MacState) -> None:
        """Piggyback DevStatusReq on a downlink that goes anyway, at most once per interval."""
        now = self.clock()
        asked = self._status_asked.get(eui)
        fresh = state.status_at is not None and now - state.status_at < self.dev_status_interval_s
        if fresh or (asked is not None and now - asked < self.dev_status_interval_s):
            return
        if not state.has_request("dev_status"):
            state.request("dev_status", eager=False)
            self._status_asked[eui] = now

    def _compose(self, state: MacState, answers: list[bytes], app: DownlinkHandle | None
                 ) -> tuple[bytes, int | None, bytes]:
        """(FOpts, FPort, FRMPayload): MAC answers then requests in FOpts; with no application
        payload and more MAC bytes than FOpts holds, all of them go on FPort 0."""
        mac = b"".join(answers)
        if app is not None or len(mac) <= MAX_FOPTS:
            kept = mac[:MAX_FOPTS] if len(mac) > MAX_FOPTS else mac
            if len(mac) > MAX_FOPTS:
                self.counters["mac_answers_dropped"] += 1
            fopts = kept + b"".join(state.take_requests(MAX_FOPTS - len(kept)))
            if app is None:
                return fopts, None, b""
            return fopts, app.fport, app.payload
        return b"", 0, mac + b"".join(state.take_requests(200))

    def _build(self, dev: Device, fcnt: int, fopts: bytes, fport: int | None, payload: bytes,
               app: DownlinkHandle | None, *, ack: bool, fpending: bool) -> bytes:
        mtype = (lorawan.MTYPE_CONFIRMED_DOWN if app is not None and app.confirmed
                 else lorawan.MTYPE_UNCONFIRMED_DOWN)
        assert dev.dev_addr is not None and dev.nwk_s_key is not None
        return lorawan.build_data_frame(
            self.aes, mtype, int(dev.dev_addr, 16), fcnt, fport, payload, dev.nwk_s_key,
            dev.app_s_key, fopts=fopts, adr=True, ack=ack, fpending=fpending)

    def _app_sent(self, app: DownlinkHandle, fcnt: int) -> None:
        queue = self._queues.get(app.dev_eui)
        if queue and queue[0] is app:
            queue.popleft()
        app.fcnt_down = fcnt
        app.attempts += 1
        if app.confirmed:
            self._awaiting_ack[app.dev_eui] = app
        app._set("sent")
        self.counters["downlink_app_sent"] += 1

    def _usable(self, windows: list[Window], phy_len: int) -> list[Window]:
        """The windows a downlink of ``phy_len`` bytes fits in, size- and budget-wise; each
        refusal is counted (downlink_too_long_<w>, downlink_dutycycle_<w>)."""
        out = []
        for w in windows:
            if not w.fits(phy_len - 5):
                self.counters[f"downlink_too_long_{w.name.lower()}"] += 1
                continue
            if not self.budget.allows(w.freq_hz, w.airtime_us(phy_len) / 1e6):
                self.counters[f"downlink_dutycycle_{w.name.lower()}"] += 1
                log.info("duty-cycle budget of %s exhausted: %s not used",
                         self.budget.band_name(w.freq_hz), w.name)
                continue
            out.append(w)
        return out

    def _book(self, gw: str | None, w: Window, phy_len: int) -> None:
        """Remember until when gateway ``gw``'s transmitter is busy with this downlink."""
        start = w.tmst_us if w.tmst_us is not None else self._concentrator_now(gw)
        if start is None:
            return
        end = start + w.airtime_us(phy_len)
        if end > self._booked_until.get(gw, -1):
            self._booked_until[gw] = end

    def _tx_power(self, freq_hz: int) -> int:
        band = region.sub_band(freq_hz)
        return min(self.max_tx_power_dbm, band[3] if band else 14)

    async def _send(self, windows: list[Window], phy: bytes, gateway_eui: str | None
                    ) -> Window | None:
        """Transmit in the first window the front end accepts; spend its airtime."""
        if self.transmit is None:
            self.counters["downlink_no_transmitter"] += 1
            return None
        for w in windows:
            sf, bw = w.sf_bw
            tx = TxRequest(phy=phy, tmst_us=w.tmst_us, freq_hz=w.freq_hz, sf=sf,
                           bw_khz=bw // 1000, tx_power_dbm=self._tx_power(w.freq_hz),
                           gateway_eui=gateway_eui)
            try:
                await self.transmit(tx)
            except Exception as exc:  # noqa: BLE001 - too late, busy, gone: try the next window
                self.counters[f"downlink_tx_error_{w.name.lower()}"] += 1
                log.info("downlink in %s not sent: %s", w.name, exc)
                continue
            self.budget.spend(w.freq_hz, w.airtime_us(len(phy)) / 1e6)
            self._book(gateway_eui, w, len(phy))
            self.counters["downlinks_sent"] += 1
            self.counters[f"downlink_{w.name.lower()}"] += 1
            return w
        return None

    # ---------------------------------------------------------------- Class C

    def _start_class_c(self, eui: str) -> None:
        task = self._class_c_tasks.get(eui)
        if task is not None and not task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the next uplink's reply path sends it
        self._class_c_tasks[eui] = loop.create_task(self._class_c(eui), name=f"class-c-{eui}")

    async def _class_c(self, eui: str) -> None:
        """Send a Class C device's queued downlinks one by one, at once (or as soon as its
        receive windows after its last uplink have closed), within the budget."""
        try:
            while True:
                async with self._lock(eui):
                    pause = await self._class_c_step(eui)
                if pause is None:
                    return
                if pause > 0:
                    await asyncio.sleep(pause)
        finally:
            self._class_c_tasks.pop(eui, None)

    def _concentrator_now(self, gw: str | None) -> int | None:
        """The concentrator counter of gateway ``gw`` now (µs): its last frame's ``tmst_us``
        plus the front end's clock since; None before it heard anything."""
        ref = self._ref.get(gw)
        if ref is None:
            return None
        return ref.tmst_us + int((self.clock() - ref.received_at) * 1e6)

    def _class_c_slot(self, eui: str, state: MacState, airtime_us: int
                      ) -> tuple[int | None, float]:
        """When a Class C downlink of ``airtime_us`` may go: (concentrator timestamp, or None
        for at once; seconds to wait before asking again, 0 to go now). A slot given is booked
        on the transmitter at once, so concurrent senders never get the same one.

        The device is busy around its own uplinks (transmitting, then its RX1 and RX2 windows,
        then NbTrans repetitions when nothing answered): ``class_c_free_at`` from its last
        uplink, and after whatever we sent in those windows. The gateway's transmitter is busy
        with what we booked on it already (a group command's other downlinks), so this one
        follows them instead of colliding at the concentrator.
        """
        gw = self._last_gw.get(eui)
        now_us = self._concentrator_now(gw)
        if now_us is None:
            return None, 0.0
        start = now_us
        frame = self._heard_c.get(eui)
        data_rate = _data_rate(frame) if frame is not None else None
        if frame is not None and data_rate is not None:
            answered = eui in self._reply_end
            free_at = class_c_free_at(frame.tmst_us, data_rate, len(frame.phy), state,
                                      repeats=1 if answered else state.nb_trans)
            if answered:
                free_at = max(free_at, self._reply_end[eui] + CLASS_C_GUARD_US)
            # relative to that frame's own clock reading: right across a 32-bit tmst wrap
            heard_now = frame.tmst_us + int((self.clock() - frame.received_at) * 1e6)
            start += max(0, free_at - heard_now)
        booked = self._booked_until.get(gw)
        if booked is not None and booked - now_us <= 2 * CLASS_C_MAX_LEAD_US:
            start = max(start, booked + CLASS_C_TX_GAP_US)  # (further: another tmst epoch)
        ahead = start - now_us
        if ahead > CLASS_C_MAX_LEAD_US:
            return None, min((ahead - CLASS_C_MAX_LEAD_US) / 1e6, self.class_c_recheck_s)
        at = None if ahead <= 0 else max(start, now_us + CLASS_C_MIN_LEAD_US)
        self._booked_until[gw] = (now_us if at is None else at) + airtime_us
        if at is not None:
            self.counters["downlink_class_c_held"] += 1
        return at, 0.0

    async def _class_c_step(self, eui: str) -> float | None:
        """One attempt of the Class C sender (under the device's lock): None when there is
        nothing more to do now, else the pause before the next attempt."""
        dev = self._by_eui.get(eui)
        queue = self._queues.get(eui)
        state = self.mac_state(eui)
        if dev is None or eui in self._awaiting_ack or dev.dev_class != "C":
            return None
        if not queue and not state.wants_downlink():
            return None
        if eui in self._reply_pending:
            return None  # the reply to its uplink goes first; it restarts this sender
        if dev.fcnt_up < 0 and dev.app_key is not None:
            # Joined, not heard since: the join-accept may have been lost, so the new session
            # is in use only once an uplink under it arrives (that uplink restarts this sender).
            self.counters["downlink_class_c_unconfirmed_session"] += 1
            return None
        app = queue[0] if queue else None
        window = class_c_window(state)
        snapshot = ([list(q) for q in state.queued], [list(p) for p in state.pending])
        fopts, fport, payload = self._compose(state, [], app)
        phy_len = FRAME_OVERHEAD + len(fopts) + _port_len(fport, payload)
        if not window.fits(phy_len - 5):
            state.queued, state.pending = snapshot
            if app is None or queue is None:
                return None
            queue.popleft()
            app._set("failed", f"{len(app.payload)} bytes do not fit DR{window.data_rate}")
            self.counters["downlink_failed"] += 1
            return 0.0
        wait_s = self.budget.wait_s(window.freq_hz, window.airtime_us(phy_len) / 1e6)
        if wait_s is None:  # longer than the sub-band allows in an hour: never sendable
            state.queued, state.pending = snapshot
            if app is None or queue is None:
                return None
            queue.popleft()
            app._set("failed", "longer than the sub-band's duty cycle ever allows")
            self.counters["downlink_failed"] += 1
            return 0.0
        if wait_s > 0:
            state.queued, state.pending = snapshot
            self.counters["downlink_dutycycle_wait"] += 1
            if app is not None:
                app._delayed("duty_cycle")
            log.info("Class C downlink to %s waits %.1f s for the duty-cycle budget", eui, wait_s)
            return min(wait_s, self.class_c_recheck_s)
        tmst, wait = self._class_c_slot(eui, state, window.airtime_us(phy_len))
        if wait > 0:
            state.queued, state.pending = snapshot
            return wait
        window = class_c_window(state, tmst)
        if app is not None:
            app.in_flight = True
        try:
            fcnt = await self._reserve_fcnt_down(eui)
            dev.fcnt_down = fcnt + 1
            more = bool(queue) and len(queue) > (1 if app is not None else 0)  # type: ignore[arg-type]
            phy = self._build(dev, fcnt, fopts, fport, payload, app, ack=False, fpending=more)
            sent = await self._send([window], phy, self._last_gw.get(eui))
        finally:
            if app is not None:
                app.in_flight = False
        self._dirty.add(eui)
        if sent is None:
            state.queued, state.pending = snapshot
            if app is not None and queue is not None:
                app.attempts += 1
                if app.attempts >= MAX_ATTEMPTS:
                    queue.popleft()
                    app._set("failed", "the radio did not transmit it")
                    self.counters["downlink_failed"] += 1
            return self.class_c_retry_s
        if app is None:
            return 0.0
        self._app_sent(app, fcnt)
        if app.confirmed:
            loop = asyncio.get_running_loop()
            self._timers[app.id] = loop.call_later(
                self.class_c_ack_timeout_s, self._ack_timeout, app)
            return None
        return 0.0

    def cancel_downlink(self, handle: DownlinkHandle, reason: str) -> bool:
        """Take a downlink back before it is transmitted (e.g. its command expired): it fails
        with ``reason`` and is never sent. False when it is too late: being transmitted right
        now, sent and waiting for its acknowledgement, or done."""
        if handle.done or handle.in_flight:
            return False
        queue = self._queues.get(handle.dev_eui)
        if not queue or handle not in queue:
            return False
        queue.remove(handle)
        handle._set("failed", reason)
        self.counters["downlink_cancelled"] += 1
        return True

    def _ack_timeout(self, handle: DownlinkHandle) -> None:
        self._timers.pop(handle.id, None)
        if self._awaiting_ack.get(handle.dev_eui) is handle:
            del self._awaiting_ack[handle.dev_eui]
            self._retry_or_fail(handle, "no acknowledgement in time")

    def _cancel_timer(self, handle: DownlinkHandle) -> None:
        timer = self._timers.pop(handle.id, None)
        if timer is not None:
            timer.cancel()

    async def aclose(self) -> None:
        """Stop the Class C senders and timers (the agent calls this on shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = list(self._class_c_tasks.values())
        for task in tasks:
            task.cancel()
        for task in [*tasks, *self._refills]:  # a refill's commit is let finish
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001, S110
                pass


def _port_len(fport: int | None, payload: bytes) -> int:
    return 0 if fport is None else 1 + len(payload)


def _data_rate(frame: RxFrame) -> int | None:
    """The EU868 data rate of a received frame, or None when its modulation is not one."""
    try:
        return region.dr_of(frame.sf, frame.bw_khz * 1000)
    except (ValueError, TypeError):
        return None


def radio_records(frame: RxFrame, fcnt: int) -> list[dict]:
    """Radio metadata as SenML records (relative to the pack's base name and time)."""
    return [
        {"n": "rssi", "u": "dBm", "v": frame.rssi_dbm},
        {"n": "snr", "u": "dB", "v": frame.snr_db},
        {"n": "frequency", "u": "Hz", "v": frame.freq_hz},
        {"n": "spreading_factor", "v": frame.sf},
        {"n": "fcnt", "v": fcnt},
    ]
