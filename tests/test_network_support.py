"""Shared parts of the network-side tests (tests/test_network_*.py): a node built from
protocol.lorawan on CPython, a front end that keeps what it is asked to transmit, a settable
clock for the duty-cycle budget. No tests here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.counters import Counters
from gateway.lorawan import DutyCycleBudget, JoinSettings, NetworkSide
from gateway.radio import RxFrame, TxRequest
from gateway.store import Device, Store
from protocol import lorawan
from protocol import payload as codec

AES = lorawan.default_aes()
GW = "test-gw"
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
JOIN_EUI = "70b3d57ed0000000"
OTAA_EUI = "70b3d57ed00000a1"
ABP_EUI = "70b3d57ed00000b1"
ABP_ADDR = 0x260B00B1
NWK = bytes(range(16))
APP = bytes(range(16, 32))


class Clock:
    """Monotonic seconds the test moves by hand (for the duty-cycle budget)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Air:
    """A front end's transmit side that keeps every TxRequest; ``refuse`` names the timestamps
    it answers with an error (as a concentrator does for a slot that has passed)."""

    def __init__(self) -> None:
        self.sent: list[TxRequest] = []
        self.refuse: set[int | None] = set()

    async def send(self, tx: TxRequest) -> None:
        if tx.tmst_us in self.refuse:
            raise RuntimeError(f"TOO_LATE for tmst {tx.tmst_us}")
        self.sent.append(tx)


@dataclass
class Node:
    """The device side of a session, on CPython: builds uplinks, opens downlinks."""

    dev_addr: int
    nwk_s_key: bytes
    app_s_key: bytes
    fcnt_up: int = 0
    fcnt_down: int = 0
    received: list[lorawan.DataFrame] = field(default_factory=list)

    def uplink(self, fport: int | None = 10, payload: bytes | None = None, *,
               confirmed: bool = False, fopts: bytes = b"", ack: bool = False,
               adr: bool = False, adr_ack_req: bool = False, fcnt: int | None = None) -> bytes:
        if payload is None and fport == 10:
            _port, payload = codec.encode_uplink("air", {"temperature": 20.5, "humidity": 50.0})
        n = self.fcnt_up if fcnt is None else fcnt
        if fcnt is None:
            self.fcnt_up += 1
        mtype = lorawan.MTYPE_CONFIRMED_UP if confirmed else lorawan.MTYPE_UNCONFIRMED_UP
        key = self.nwk_s_key if fport == 0 else self.app_s_key
        return lorawan.build_data_frame(AES, mtype, self.dev_addr, n, fport, payload or b"",
                                        self.nwk_s_key, key, fopts=fopts, ack=ack, adr=adr,
                                        adr_ack_req=adr_ack_req)

    def open(self, phy: bytes) -> tuple[lorawan.DataFrame, int, bytes]:
        """Check a downlink as a device does: DevAddr, counter ahead, MIC; decrypt it."""
        f = lorawan.parse_frame(phy)
        assert f.devaddr == self.dev_addr
        fcnt = lorawan.fcnt32_from16(self.fcnt_down - 1, f.fcnt16)
        assert fcnt >= self.fcnt_down, "downlink counter reused"
        lorawan.check_mic(AES, f, self.nwk_s_key, fcnt)
        self.fcnt_down = fcnt + 1
        clear = b""
        if f.fport is not None:
            key = self.nwk_s_key if f.fport == 0 else self.app_s_key
            clear = lorawan.decrypt_payload(AES, f, key, fcnt)
        self.received.append(f)
        return f, fcnt, clear


def frame(phy: bytes, *, tmst_us: int = 10_000_000, freq_hz: int = 868_100_000, sf: int = 7,
          snr_db: float = 5.0, rssi_dbm: float = -90.0) -> RxFrame:
    """An RxFrame as a front end reports it."""
    return RxFrame(phy=phy, tmst_us=tmst_us, freq_hz=freq_hz, sf=sf, bw_khz=125,
                   rssi_dbm=rssi_dbm, snr_db=snr_db, received_at=time.time())


def open_store(tmp: Path) -> Store:
    return Store.open(tmp / "gw" / "cityedge.db")


def register_abp(store: Store, **kw: object) -> Node:
    store.upsert_device(Device(dev_eui=ABP_EUI, role="air", dev_addr=f"{ABP_ADDR:08x}",
                               nwk_s_key=NWK, app_s_key=APP, **kw))  # type: ignore[arg-type]
    return Node(ABP_ADDR, NWK, APP)


def register_otaa(store: Store, **kw: object) -> None:
    store.upsert_device(Device(dev_eui=OTAA_EUI, role="air", app_key=APP_KEY,
                               join_eui=JOIN_EUI, **kw))  # type: ignore[arg-type]


def network(store: Store, air: Air | None = None, clock: Clock | None = None,
            **kw: object) -> NetworkSide:
    return NetworkSide(store, GW, Counters(), budget=DutyCycleBudget(clock or Clock()),
                       transmit=air.send if air is not None else None,
                       join_settings=kw.pop("join_settings", JoinSettings()),  # type: ignore[arg-type]
                       **kw)  # type: ignore[arg-type]


def join_request(dev_nonce: int, *, app_key: bytes = APP_KEY, join_eui: str = JOIN_EUI,
                 dev_eui: str = OTAA_EUI) -> bytes:
    return lorawan.build_join_request(AES, app_key, bytes.fromhex(join_eui),
                                      bytes.fromhex(dev_eui), dev_nonce)


async def uplink_and_reply(net: NetworkSide, rx: RxFrame) -> object:
    """What the agent does with one frame: check it, then send what it calls for."""
    result = net.handle(rx)
    states = net.take_mac_states()
    from gateway.store import Accepted

    if isinstance(result, Accepted) or states:
        net.store.accept_uplinks([result] if isinstance(result, Accepted) else [], states)
    await net.send_replies(net.take_replies())
    return result
