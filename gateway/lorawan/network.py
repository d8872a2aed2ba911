"""Uplink checks on the network side: who sent it, is it genuine, is it new, what does it say.

A frame becomes an ``Accepted`` uplink only after: a parsable LoRaWAN data frame, a registered
DevAddr, a 32-bit frame counter reconstructed ahead of the last accepted one, a valid MIC, and a
payload the role's codec decodes. Every other outcome is a counted ``Rejection``; nothing here
raises on bad input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.counters import Counters
from gateway.radio.frame import RxFrame
from gateway.store import Accepted, Device, Store
from protocol import lorawan
from protocol import payload as codec

log = logging.getLogger("cityedge.lorawan")

UPLINK_MTYPES = (lorawan.MTYPE_UNCONFIRMED_UP, lorawan.MTYPE_CONFIRMED_UP)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a frame was not accepted; ``reason`` is also the counter's name."""

    reason: str
    detail: str
    dev_eui: str | None = None


def record_id(gateway_id: str, dev_eui: str, fcnt: int) -> str:
    """The stable id of an uplink: the same frame heard twice gets the same id."""
    return f"{gateway_id}:{dev_eui}:{fcnt}"


class NetworkSide:
    """Checks, decrypts and decodes uplinks for the devices registered in the store."""

    def __init__(self, store: Store, gateway_id: str, counters: Counters | None = None) -> None:
        self.store = store
        self.gateway_id = gateway_id
        self.counters = counters if counters is not None else Counters()
        self.aes = lorawan.default_aes()
        self._by_addr: dict[int, Device] = {}
        self.reload_devices()

    def reload_devices(self) -> None:
        """Refresh the in-memory registry (after `gateway nodes add`, or at start)."""
        self._by_addr = {
            int(d.dev_addr, 16): d for d in self.store.list_devices() if d.dev_addr
        }

    def handle(self, frame: RxFrame) -> Accepted | Rejection:
        """Turn one received frame into an accepted uplink or a counted rejection."""
        result = self._check(frame)
        if isinstance(result, Rejection):
            self.counters["rejected_" + result.reason] += 1
            log.info(
                "frame rejected reason=%s dev_eui=%s detail=%s",
                result.reason, result.dev_eui or "-", result.detail,
            )
        else:
            self.counters["accepted"] += 1
        return result

    def _check(self, frame: RxFrame) -> Accepted | Rejection:
        if not frame.crc_ok:
            return Rejection("crc", "radio CRC error")
        try:
            parsed = lorawan.parse_frame(frame.phy)
        except lorawan.FrameError as exc:
            return Rejection("garbage", str(exc))
        if parsed.mtype not in UPLINK_MTYPES:
            return Rejection("not_uplink", f"message type {parsed.mtype} is not a data uplink")
        dev = self._by_addr.get(parsed.devaddr)
        if dev is None:
            return Rejection("unknown_devaddr", f"DevAddr {parsed.devaddr:08x} is not registered")
        try:
            fcnt = lorawan.fcnt32_from16(dev.fcnt_up, parsed.fcnt16)
        except lorawan.FrameError as exc:
            return Rejection("fcnt", str(exc), dev.dev_eui)
        try:
            lorawan.check_mic(self.aes, parsed, dev.nwk_s_key, fcnt)
        except lorawan.MICError:
            return Rejection("bad_mic", "MIC does not match the registered NwkSKey", dev.dev_eui)
        if fcnt == dev.fcnt_up:
            return Rejection("retransmission", f"FCnt {fcnt} already received", dev.dev_eui)
        if fcnt < dev.fcnt_up:
            return Rejection(
                "replay", f"FCnt {fcnt} is behind the last accepted {dev.fcnt_up}", dev.dev_eui
            )
        if parsed.fport is None:
            readings: dict = {}
            role = dev.role
            body_port = None
        else:
            key = dev.nwk_s_key if parsed.fport == 0 else dev.app_s_key
            clear = lorawan.decrypt_payload(self.aes, parsed, key, fcnt)
            body_port = parsed.fport
            if parsed.fport == 0:
                readings, role = {}, dev.role
            else:
                try:
                    role, readings = codec.decode_uplink(parsed.fport, clear)
                except codec.PayloadError as exc:
                    # Genuine frame (MIC ok): advance the counter so it cannot be replayed, but
                    # keep nothing we cannot decode.
                    dev.fcnt_up = fcnt
                    return Rejection("payload", str(exc), dev.dev_eui)
        dev.fcnt_up = fcnt
        rid = record_id(self.gateway_id, dev.dev_eui, fcnt)
        records = self._senml(dev, role, readings, frame, fcnt, rid)
        return Accepted(
            dev_eui=dev.dev_eui,
            fcnt_up=fcnt,
            rid=rid,
            kind="up",
            priority=1 if readings.get("alarms") else 0,
            created_at=frame.received_at,
            records=records,
            fport=body_port,
        )

    def _senml(
        self, dev: Device, role: str, readings: dict, frame: RxFrame, fcnt: int, rid: str
    ) -> list[dict]:
        base = f"urn:dev:mac:{dev.dev_eui}:"
        records = codec.to_senml(role, readings, base, frame.received_at) if readings else [
            {"bn": base, "bt": frame.received_at}
        ]
        records.extend(radio_records(frame, fcnt))
        for r in records:
            r["rid"] = rid
        return records


def radio_records(frame: RxFrame, fcnt: int) -> list[dict]:
    """Radio metadata as SenML records (relative to the pack's base name and time)."""
    return [
        {"n": "rssi", "u": "dBm", "v": frame.rssi_dbm},
        {"n": "snr", "u": "dB", "v": frame.snr_db},
        {"n": "frequency", "u": "Hz", "v": frame.freq_hz},
        {"n": "spreading_factor", "v": frame.sf},
        {"n": "fcnt", "v": fcnt},
    ]
