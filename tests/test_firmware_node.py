"""The node firmware core in the real MicroPython VM on the simulated LoRa channel.

Each test boots the firmware image (compiled with mpy-cross, as deployed) on a virtual board whose
SX1276 is the register-level model on the simulated channel. The network side is a minimal
LoRaWAN responder written here on CPython with protocol.lorawan, attached to the simulated
concentrator: it answers Join-requests, checks every uplink's MIC and counter, decodes the payload
and sends the downlinks a test queues, in RX1, RX2 or (Class C) at any time.

The role is a small stand-in written into the board's flash (firmware/roles/<role>.py replacing
the compiled module), so that these tests prove the firmware around the roles on its own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from firmware.boards import pin_map
from protocol import lorawan
from protocol import payload as codec
from protocol import region_eu868 as region
from protocol.airtime import time_on_air_us
from protocol.payload.bits import BitWriter
from sim.channel import Concentrator, RxPacket
from sim.clock import VirtualClock
from sim.district import District
from sim.sx1276 import SX1276Model
from sim.vm.board import BoardHardware, VirtualBoard

pytestmark = pytest.mark.vm

AES = lorawan.default_aes()
APP_KEY = bytes(range(16, 32))
JOIN_EUI = bytes.fromhex("70b3d57ed0000000")
BATTERY_UV = 3_000_000
CFLIST = [867100000, 867300000, 867500000, 867700000, 867900000]
EIGHT_CHANNELS = (868100000, 868300000, 868500000, *CFLIST)

AIR_ROLE = '''
class AirRole:
    name = "air"
    device_class = "A"

    def __init__(self, hw, settings):
        self.hw = hw
        self.faults = ()

    def boot(self, reset_cause):
        print("ROLE boot", reset_cause)

    def read(self):
        return {"temperature": 21.5, "humidity": 40.0, "battery": self.hw.battery_mv()}

    def alarm(self):
        return False

    def command(self, cmd):
        return "not_supported"

    def poll(self):
        return None
'''

LIGHTING_ROLE = '''
class LightingRole:
    name = "lighting"
    device_class = "C"

    def __init__(self, hw, settings):
        self.level = 100
        self.n = 0
        self.faults = ()

    def boot(self, reset_cause):
        pass

    def read(self):
        self.n += 1
        return {"level": self.level, "relay": True,
                "alarms": ["door_open"] if self.n in (2, 3) else []}

    def alarm(self):
        return self.n in (2, 3)

    def command(self, cmd):
        if cmd["cmd"] == "dim":
            self.level = cmd["level"]
            return "done"
        if cmd["cmd"] == "switch":
            raise RuntimeError("a role bug")
        return "not_supported"

    def poll(self):
        return 5000
'''


class Network:
    """A minimal LoRaWAN network side for one device (CPython, protocol.lorawan)."""

    def __init__(self, district: District, dev_eui: bytes, *, ignore_joins: int = 0,
                 rx_delay: int = 1, rx2_dr: int = 0, cflist: list[int] | None = None,
                 abp: tuple[int, bytes, bytes] | None = None,
                 ack_policy: Callable[[int, int], bool] | None = None) -> None:
        self.clock = district.clock
        # an 8-channel gateway: the three default channels and the CFList ones
        self.conc = Concentrator(district.clock, district.channel, freqs_hz=EIGHT_CHANNELS,
                                 on_uplink=self.on_uplink, name="test-network")
        self.dev_eui = dev_eui
        self.ignore_joins = ignore_joins
        self.rx_delay = rx_delay
        self.rx1_offset = 0
        self.pending: dict[str, int] = {}  # receive parameters asked for, not yet confirmed
        self.rx2_dr = rx2_dr
        self.cflist = cflist
        self.ack_policy = ack_policy or (lambda fcnt, tries: True)
        self.joins: list[dict[str, Any]] = []
        self.uplinks: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.queue: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.join_nonce = 0
        self.session = abp
        self.last_fcnt = -1
        self.fcnt_down = 0

    # -- uplinks ---------------------------------------------------------------------------------
    def on_uplink(self, pkt: RxPacket) -> None:
        phy = pkt.payload
        if not pkt.crc_ok or not phy:
            return
        mtype = phy[0] >> 5
        if mtype == lorawan.MTYPE_JOIN_REQUEST:
            self._join(pkt)
        elif mtype in (lorawan.MTYPE_UNCONFIRMED_UP, lorawan.MTYPE_CONFIRMED_UP):
            self._data(pkt)

    def _join(self, pkt: RxPacket) -> None:
        req = lorawan.parse_join_request(pkt.payload)
        lorawan.check_join_request_mic(AES, req, APP_KEY)
        assert req.dev_eui == self.dev_eui and req.join_eui == JOIN_EUI
        self.joins.append({"t": pkt.tmst_us, "dev_nonce": req.dev_nonce, "freq": pkt.freq_hz,
                           "toa": pkt.time_on_air_us})
        if len(self.joins) <= self.ignore_joins:
            return
        self.join_nonce += 1
        devaddr = 0x260B0000 + len(self.joins)
        cfl = lorawan.encode_cflist_eu868(self.cflist) if self.cflist else None
        accept = lorawan.build_join_accept(AES, APP_KEY, self.join_nonce, 0x000013, devaddr,
                                           rx2_dr=self.rx2_dr, rx_delay=self.rx_delay,
                                           cflist=cfl)
        nwk, app = lorawan.derive_session_keys(AES, APP_KEY, self.join_nonce, 0x000013,
                                               req.dev_nonce)
        self.session = (devaddr, nwk, app)
        self.last_fcnt = -1
        self.fcnt_down = 0
        self.conc.send_at(pkt.tmst_us + region.JOIN_ACCEPT_DELAY1_S * 1_000_000, pkt.freq_hz,
                          pkt.sf, 125, accept)

    def _data(self, pkt: RxPacket) -> None:
        assert self.session is not None, "uplink before any session"
        devaddr, nwk, app = self.session
        f = lorawan.parse_frame(pkt.payload)
        if f.devaddr != devaddr:
            self.rejected.append("devaddr")
            return
        fcnt = lorawan.fcnt32_from16(max(self.last_fcnt, 0), f.fcnt16)
        try:
            lorawan.check_mic(AES, f, nwk, fcnt)
        except lorawan.MICError:
            self.rejected.append("mic")
            return
        if fcnt < self.last_fcnt:
            self.rejected.append(f"replay {fcnt}")
            return
        repeat = fcnt == self.last_fcnt  # NbTrans repetition or confirmed retransmission
        self.last_fcnt = fcnt
        data = lorawan.decrypt_payload(AES, f, app if f.fport else nwk, fcnt) \
            if f.fport is not None else b""
        rec: dict[str, Any] = {
            "t": pkt.tmst_us, "start": pkt.tmst_us - pkt.time_on_air_us, "toa": pkt.time_on_air_us,
            "freq": pkt.freq_hz, "sf": pkt.sf, "fcnt": fcnt, "fport": f.fport,
            "confirmed": f.confirmed, "ack": f.ack,
            "fopts": lorawan.parse_mac_commands(f.fopts, True) if f.fopts else [],
            "readings": None, "repeat": repeat,
        }
        if f.fport:
            rec["role"], rec["readings"] = codec.decode_uplink(f.fport, data)
        self.uplinks.append(rec)
        # the device confirmed new receive parameters: use them from now on
        for cid, _ in rec["fopts"]:
            if cid == lorawan.CID_RX_TIMING_SETUP and "rx_delay" in self.pending:
                self.rx_delay = self.pending.pop("rx_delay")
            if cid == lorawan.CID_RX_PARAM_SETUP and "rx1_offset" in self.pending:
                self.rx1_offset = self.pending.pop("rx1_offset")
        tries = sum(1 for u in self.uplinks if u["fcnt"] == fcnt)
        ack = f.confirmed and self.ack_policy(fcnt, tries)
        item = None if repeat else next(
            (q for q in self.queue if q.get("when", lambda r: True)(rec)), None)
        if item is not None:
            self.queue.remove(item)
        if item is None and not ack:
            return
        item = item or {}
        window = item.get("window", 1)
        if window == 1:
            at = pkt.tmst_us + self.rx_delay * 1_000_000
            freq = pkt.freq_hz
            sf = region.data_rate(region.rx1_dr(region.dr_of(pkt.sf), self.rx1_offset))[0]
        else:
            at = pkt.tmst_us + (self.rx_delay + 1) * 1_000_000
            freq, sf = region.RX2_FREQ_HZ, region.data_rate(self.rx2_dr)[0]
        self.downlink(at, freq, sf, item, ack=ack)

    # -- downlinks -------------------------------------------------------------------------------
    def downlink(self, at_us: int, freq: int, sf: int, item: dict[str, Any],
                 ack: bool = False) -> None:
        devaddr, nwk, app = self.session
        mtype = lorawan.MTYPE_CONFIRMED_DOWN if item.get("confirmed") else \
            lorawan.MTYPE_UNCONFIRMED_DOWN
        payload = item.get("payload", b"")
        fport = item.get("fport", codec.COMMAND_FPORT if payload else None)
        phy = lorawan.build_data_frame(AES, mtype, devaddr, self.fcnt_down, fport, payload, nwk,
                                       app, fopts=item.get("fopts", b""), ack=ack)
        self.fcnt_down += 1
        self.sent.append({"at": at_us, "phy": phy, **item})
        self.conc.send_at(at_us, freq, sf, 125, phy)

    def raw_class_c(self, at_us: int, phy: bytes) -> None:
        """Send any bytes on the RX2 parameters at at_us (garbage, forgeries, replays)."""
        self.clock.call_at(at_us, lambda: self.conc.send_at(
            self.clock.now_us() + 1000, region.RX2_FREQ_HZ, region.data_rate(self.rx2_dr)[0],
            125, phy))

    def class_c(self, at_us: int, item: dict[str, Any]) -> None:
        """Send at any time on the RX2 parameters (a Class C device listens there)."""
        self.clock.call_at(at_us, lambda: self.downlink(
            self.clock.now_us() + 1000, region.RX2_FREQ_HZ,
            region.data_rate(self.rx2_dr)[0], item))

    def acks(self) -> list[tuple[int, str]]:
        return [(u["readings"]["cmd_seq"], u["readings"]["cmd_result"])
                for u in self.uplinks if u["fport"] == 30 and not u["repeat"]]

    def of_port(self, fport: int) -> list[dict[str, Any]]:
        return [u for u in self.uplinks if u["fport"] == fport]


def command(cmd: dict[str, Any]) -> bytes:
    return codec.encode_command(cmd)


def raw_set_interval(seq: int, seconds: int) -> bytes:
    """A set_interval the encoder would refuse (seconds out of 60..86400), built bit by bit."""
    w = BitWriter()
    w.write(1, 3)
    w.write(codec.COMMANDS["set_interval"][0], 5)
    w.write(seq, 8)
    w.write(seconds, 17)
    return w.getvalue()


def down_mac(cid: int, **fields: Any) -> bytes:
    return lorawan.encode_mac_command(cid, False, **fields)


_IMAGE: dict[str, Path] = {}


def image(tmp_root: Path) -> Path:
    """The firmware image, built once per test session."""
    if "dir" not in _IMAGE:
        from sim.district import build_firmware

        _IMAGE["dir"] = build_firmware(tmp_root / "image")
    return _IMAGE["dir"]


class Node:
    """One virtual board with the firmware image, a config.json and a stand-in role."""

    def __init__(self, district: District, tmp: Path, img: Path, cfg: dict[str, Any],
                 role_source: str | None, position: tuple[float, float] = (300.0, 0.0)) -> None:
        self.clock = district.clock
        flash = tmp / f"flash-{cfg['dev_eui']}"
        shutil.copytree(img, flash)
        (flash / "config.json").write_text(json.dumps(cfg))
        if role_source is not None:
            (flash / "firmware" / "roles" / f"{cfg['role']}.mpy").unlink(missing_ok=True)
            (flash / "firmware" / "roles" / f"{cfg['role']}.py").write_text(role_source)
        spi_id, _sck, _mosi, _miso, cs, reset, dio0, _i2c, _sda, _scl, adc, div = pin_map(
            cfg["board"])
        hw = BoardHardware()
        self.radio = SX1276Model(self.clock, district.channel, position=position,
                                 name=f"node-{cfg['dev_eui']}", dio0=hw.pin(dio0),
                                 reset=hw.pin(reset))
        hw.spi_bus(spi_id).attach(hw.pin(cs), self.radio)
        if adc is not None:
            hw.adc[adc] = lambda: int(BATTERY_UV / div)
        self.board = VirtualBoard(self.clock, cfg["dev_eui"], flash, hw, hang_timeout_s=30.0)
        self.flash = flash

    def run_until(self, done: Callable[[], bool], limit_s: float, step_s: float = 5.0) -> None:
        limit = self.clock.now_us() + int(limit_s * 1e6)
        while not done() and self.clock.now_us() < limit:
            self.clock.run(until_us=self.clock.now_us() + int(step_s * 1e6))
            assert self.board.crashed is None, self.board.output
        assert done(), f"not done after {limit_s} s of virtual time:\n{self.board.output[-4000:]}"


def otaa_config(dev_eui: str, **over: Any) -> dict[str, Any]:
    cfg = {"version": 1, "dev_eui": dev_eui, "role": "air", "board": "heltec-lora32-v2",
           "activation": "otaa", "otaa": {"join_eui": JOIN_EUI.hex(), "app_key": APP_KEY.hex()},
           "radio": {"sf": 7, "tx_power_dbm": 14}, "interval_s": 60, "settings": {}}
    cfg.update(over)
    return cfg


def abp_config(dev_eui: str, devaddr: int, nwk: bytes, app: bytes, **over: Any) -> dict[str, Any]:
    cfg = {"version": 1, "dev_eui": dev_eui, "role": "air", "board": "ttgo-lora32-v21",
           "activation": "abp", "abp": {"dev_addr": f"{devaddr:08x}", "nwk_s_key": nwk.hex(),
                                        "app_s_key": app.hex()},
           "radio": {"sf": 7, "tx_power_dbm": 14}, "interval_s": 60, "settings": {}}
    cfg.update(over)
    return cfg


@pytest.fixture
def district(tmp_path: Path, micropython_vm: object):
    clock = VirtualClock(speed=None)
    d = District(clock, tmp_path / "district")
    boards: list[VirtualBoard] = []
    d.boards = boards  # type: ignore[attr-defined]
    yield d
    for b in boards:
        b.stop()
    clock.stop()


def _node(district: District, tmp: Path, cfg: dict[str, Any], role: str | None) -> Node:
    n = Node(district, tmp, image(tmp.parent), cfg, role)
    district.boards.append(n.board)  # type: ignore[attr-defined]
    return n


# -- OTAA, Class A, deep sleep: the whole life of a battery node ----------------------------------

def test_otaa_node_backs_off_joins_then_reports_answers_commands_and_keeps_counters_on_reboot(
        district: District, tmp_path: Path) -> None:
    dev_eui = bytes.fromhex("0004a30b001c0530")
    net = Network(district, dev_eui, ignore_joins=1, rx_delay=2, rx2_dr=3,
                  cflist=[867100000, 867300000, 867500000, 867700000, 867900000])
    net.queue += [
        # answers the boot health uplink in RX1 (RxDelay 2 s from the Join-accept)
        {"when": lambda r: r["fport"] == 20,
         "fopts": down_mac(lorawan.CID_LINK_ADR, data_rate=5, tx_power=2, ch_mask=0x00FF,
                           ch_mask_cntl=0, nb_trans=1) + down_mac(lorawan.CID_DEV_STATUS),
         "payload": command({"cmd": "set_interval", "seq": 7, "seconds": 120})},
        # undecodable opcode, in RX2 at the Join-accept's RX2 data rate (DR3 = SF9), with new
        # receive parameters: RX1 3 s after the uplink, one data rate below it
        {"when": lambda r: r["fport"] == 30, "window": 2, "payload": b"\x3f\x09",
         "fopts": down_mac(lorawan.CID_RX_TIMING_SETUP, delay=3) + down_mac(
             lorawan.CID_RX_PARAM_SETUP, rx1_dr_offset=1, rx2_data_rate=3,
             frequency=region.RX2_FREQ_HZ)},
        # ... which the next command uses (RX1 at +3 s, SF8 for an SF7 uplink)
        {"when": lambda r: r["fport"] == 30, "payload": raw_set_interval(10, 30)},
        {"when": lambda r: r["fport"] == 10 and len(net.of_port(10)) >= 2,
         "payload": command({"cmd": "reboot", "seq": 11})},
    ]
    net.pending = {"rx_delay": 3, "rx1_offset": 1}
    node = _node(district, tmp_path, otaa_config(dev_eui.hex()), AIR_ROLE)
    node.board.start()

    def rebooted_and_reported() -> bool:
        after = [h for h in net.of_port(20) if h["readings"]["reset_cause"] == "hard"]
        return bool(after) and any(u["t"] > after[0]["t"] for u in net.of_port(10))

    node.run_until(rebooted_and_reported, limit_s=900)

    # the join: the first request went unanswered, the second came after the back-off
    assert [j["dev_nonce"] for j in net.joins] == [0, 1]
    gap = net.joins[1]["t"] - net.joins[1]["toa"] - net.joins[0]["t"]
    assert gap >= 99 * net.joins[0]["toa"], "1 % join duty cycle of the first hour broken"
    assert gap > 6_000_000, "retried before the second join-accept window had passed"
    assert net.rejected == []

    # boot health, then the answers: MAC in FOpts of the next uplink, command acks on FPort 30
    health = net.of_port(20)[0]["readings"]
    assert health["reset_cause"] == "power_on" and health["firmware"] == "0.2.0"
    assert health["supply"] == 3000
    first_ack = net.of_port(30)[0]
    answers = dict(first_ack["fopts"])
    assert answers[lorawan.CID_LINK_ADR] == {"power_ack": True, "data_rate_ack": True,
                                             "channel_mask_ack": True}
    assert answers[lorawan.CID_DEV_STATUS]["battery"] == 1 + 1000 * 253 // 1200
    assert net.acks()[:4] == [(7, "done"), (9, "unknown_command"), (10, "out_of_range"),
                              (11, "done")]
    # RXTimingSetupAns and RXParamSetupAns ride along until the next downlink, then stop
    ack9, ack10 = net.of_port(30)[1:3]
    assert {c for c, _ in ack9["fopts"]} == {lorawan.CID_RX_TIMING_SETUP,
                                             lorawan.CID_RX_PARAM_SETUP}
    assert dict(ack9["fopts"])[lorawan.CID_RX_PARAM_SETUP] == {
        "rx1_dr_offset_ack": True, "rx2_data_rate_ack": True, "channel_ack": True}
    assert ack10["fopts"] == [] and net.rx_delay == 3 and net.rx1_offset == 1

    # the new interval (set_interval 120 s, persisted) spaces the readings
    readings = net.of_port(10)
    assert len(readings) >= 2
    assert readings[1]["t"] - readings[0]["t"] >= 114_000_000

    # reboot on command: no new join, counters continue, never reused
    assert len(net.joins) == 2
    assert node.board.reset_causes[-1] == 2  # HARD_RESET
    fcnts = [u["fcnt"] for u in net.uplinks]
    assert fcnts == list(range(len(fcnts))), "a reset kept in RTC memory skips no counter"
    assert "ROLE boot 2" in node.board.output

    # a power cut (flash only, no RTC memory): the session stays, counters jump ahead, no rejoin
    last = net.uplinks[-1]["fcnt"]
    node.board.power_cut()
    district.clock.run(until_us=district.clock.now_us() + 1000)  # the old power-on ends
    node.board.start()
    n = len(net.uplinks)
    node.run_until(lambda: len(net.uplinks) > n, limit_s=120)
    assert len(net.joins) == 2
    assert last < net.uplinks[n]["fcnt"] <= last + 32
    assert net.uplinks[n]["readings"]["reset_cause"] == "power_on"


# -- ABP, Class C, mains: commands land at once; alarms go confirmed ------------------------------

def test_class_c_node_executes_a_command_between_uplinks_and_retries_confirmed_alarms(
        district: District, tmp_path: Path) -> None:
    devaddr, nwk, app = 0x260B1234, bytes(range(1, 17)), bytes(range(2, 18))
    dev_eui = bytes.fromhex("0004a30b001c0531")
    first_alarm: list[int] = []

    def ack_policy(fcnt: int, tries: int) -> bool:
        if not first_alarm:
            first_alarm.append(fcnt)
        return fcnt == first_alarm[0] and tries >= 3  # the 2nd alarm is never acknowledged

    net = Network(district, dev_eui, abp=(devaddr, nwk, app), ack_policy=ack_policy)
    cfg = abp_config(dev_eui.hex(), devaddr, nwk, app, role="lighting", interval_s=60)
    node = _node(district, tmp_path, cfg, LIGHTING_ROLE)
    node.board.start()
    node.run_until(lambda: len(net.of_port(13)) >= 1, limit_s=60)
    first = net.of_port(13)[0]
    # between uplinks, at no receive window of any uplink: RX2 frequency and data rate
    net.class_c(first["t"] + 20_000_000, {"payload": command(
        {"cmd": "dim", "seq": 21, "level": 40, "expiry_min": 60}), "confirmed": True})
    net.class_c(first["t"] + 30_000_000, {"payload": command(
        {"cmd": "switch", "seq": 22, "on": False})})
    node.run_until(lambda: len({u["fcnt"] for u in net.of_port(13)}) >= 4, limit_s=600)

    acks = net.acks()
    assert acks[:2] == [(21, "done"), (22, "failed")]  # a role that raises: "failed", no crash
    ack21 = next(u for u in net.of_port(30) if u["readings"]["cmd_seq"] == 21)
    assert ack21["ack"], "the confirmed downlink is acknowledged in the next uplink"
    assert ack21["t"] - first["t"] < 25_000_000, "Class C: the command is answered at once"
    levels = [u["readings"]["level"] for u in net.of_port(13)]
    assert levels[0] == 100 and levels[-1] == 40

    # alarms go confirmed: the first ACKed on its 3rd transmission, the second never (4 tries)
    alarms = [u for u in net.of_port(13) if u["readings"].get("alarms")]
    counts: dict[int, int] = {}
    for u in alarms:
        assert u["confirmed"]
        counts[u["fcnt"]] = counts.get(u["fcnt"], 0) + 1
    assert list(counts.values()) == [3, 4]
    assert not any(u["confirmed"] for u in net.of_port(13) if not u["readings"].get("alarms"))
    assert node.board.reset_causes == [1], "no reset, no crash"


# -- duty cycle: SF12 frames close the sub-band, across deep sleep --------------------------------

def test_duty_cycle_waits_hold_across_deep_sleep(district: District, tmp_path: Path) -> None:
    devaddr, nwk, app = 0x260B2222, bytes(range(3, 19)), bytes(range(4, 20))
    dev_eui = bytes.fromhex("0004a30b001c0532")
    net = Network(district, dev_eui, abp=(devaddr, nwk, app))
    cfg = abp_config(dev_eui.hex(), devaddr, nwk, app, interval_s=10,
                     radio={"sf": 12, "tx_power_dbm": 14})
    node = _node(district, tmp_path, cfg, AIR_ROLE)
    node.board.start()
    node.run_until(lambda: len(net.uplinks) >= 4, limit_s=900, step_s=20)

    ups = net.uplinks
    assert all(u["sf"] == 12 and 868_000_000 <= u["freq"] <= 868_600_000 for u in ups)
    for prev, nxt in pairwise(ups):  # one sub-band (h1.5, 1 %): 99 x airtime of silence
        assert nxt["start"] - prev["t"] >= 99 * prev["toa"] - 1000
    assert node.board.reset_causes.count(4) >= 2, "it deep-slept between cycles"
    assert "duty cycle: waiting" in node.board.output
    toa = time_on_air_us(len(lorawan.build_data_frame(
        AES, lorawan.MTYPE_UNCONFIRMED_UP, devaddr, 0, 10, b"x" * 7, nwk, app)), 12)
    assert ups[2]["toa"] == toa


# -- configuration faults ---------------------------------------------------------------------------

def test_a_bad_configuration_stops_the_node_with_a_fault_naming_the_key(
        district: District, tmp_path: Path) -> None:
    dev_eui = "0004a30b001c0533"
    secret = "00112233445566778899aabbccddee"  # one byte short
    cfg = otaa_config(dev_eui)
    cfg["otaa"]["app_key"] = secret
    node = _node(district, tmp_path, cfg, AIR_ROLE)
    node.board.start()
    district.clock.run(until_us=district.clock.now_us() + 120_000_000)
    out = node.board.output
    assert "FAULT config: config.json: otaa.app_key: expected 32 hex characters" in out
    assert secret not in out
    assert node.board.state == "repl" and node.board.reset_causes == [1]


# -- the watchdog guards the role ------------------------------------------------------------------

HANGING_ROLE = '''
import time


class AirRole:
    name = "air"

    def __init__(self, hw, settings):
        self.faults = ()

    def read(self):
        try:
            open("hung-once").close()
        except OSError:
            with open("hung-once", "w") as f:
                f.write("1")
            time.sleep(600)  # a sensor that never answers
        return {"temperature": 20.0}
'''


def test_a_hanging_role_is_reset_by_the_watchdog_and_the_node_says_so(
        district: District, tmp_path: Path) -> None:
    devaddr, nwk, app = 0x260B3333, bytes(range(5, 21)), bytes(range(6, 22))
    dev_eui = bytes.fromhex("0004a30b001c0534")
    net = Network(district, dev_eui, abp=(devaddr, nwk, app))
    node = _node(district, tmp_path, abp_config(dev_eui.hex(), devaddr, nwk, app), HANGING_ROLE)
    node.board.start()
    node.run_until(lambda: len(net.of_port(10)) >= 1, limit_s=300)

    assert node.board.reset_causes[:2] == [1, 3]  # power on, then WDT_RESET
    causes = [h["readings"]["reset_cause"] for h in net.of_port(20)]
    assert causes == ["power_on", "watchdog"]
    fcnts = [u["fcnt"] for u in net.uplinks]
    assert fcnts == list(range(len(fcnts)))


# -- bad downlinks: refused and counted, never executed, never a crash -----------------------------

def test_forged_replayed_and_garbage_downlinks_never_actuate(district: District,
                                                            tmp_path: Path) -> None:
    devaddr, nwk, app = 0x260B4444, bytes(range(7, 23)), bytes(range(8, 24))
    dev_eui = bytes.fromhex("0004a30b001c0535")
    net = Network(district, dev_eui, abp=(devaddr, nwk, app))
    node = _node(district, tmp_path, abp_config(dev_eui.hex(), devaddr, nwk, app,
                                                role="lighting"), LIGHTING_ROLE)
    node.board.start()
    node.run_until(lambda: len(net.of_port(13)) >= 1, limit_s=60)
    t0 = net.of_port(13)[0]["t"]
    net.class_c(t0 + 10_000_000, {"payload": command({"cmd": "dim", "seq": 1, "level": 60})})
    node.run_until(lambda: net.acks() == [(1, "done")], limit_s=60)

    forged = lorawan.build_data_frame(AES, lorawan.MTYPE_UNCONFIRMED_DOWN, devaddr, 50, 40,
                                      command({"cmd": "dim", "seq": 2, "level": 0}),
                                      bytes(16), bytes(16))
    other = lorawan.build_data_frame(AES, lorawan.MTYPE_UNCONFIRMED_DOWN, devaddr + 1, 51, 40,
                                     command({"cmd": "dim", "seq": 3, "level": 0}), nwk, app)
    replay = net.sent[0]["phy"]  # the dim to 60 again, same counter
    t1 = net.uplinks[-1]["t"]
    for i, phy in enumerate((b"\x60\x01\x02", forged, other, replay, bytes(40))):
        net.raw_class_c(t1 + (5 + 4 * i) * 1_000_000, phy)
    # then a good frame whose FOpts ask for two transmissions of every unconfirmed uplink
    # (LinkADRReq NbTrans 2) and hold an unknown MAC command after it, which ends parsing
    net.class_c(t1 + 30_000_000, {"fopts": down_mac(
        lorawan.CID_LINK_ADR, data_rate=5, tx_power=1, ch_mask=7, ch_mask_cntl=0, nb_trans=2)
        + b"\x7f\x01", "payload": command({"cmd": "valve_open", "seq": 4, "seconds": 30})})
    node.run_until(lambda: len(net.acks()) >= 2, limit_s=120)
    n = len(net.of_port(13))
    node.run_until(lambda: len(net.of_port(13)) > n, limit_s=120)

    assert net.acks() == [(1, "done"), (4, "not_supported")]
    refused = [ln for ln in node.board.console if "downlink refused" in ln]
    assert len(refused) == 5, refused
    assert any("MIC mismatch" in ln for ln in refused)
    assert any("replayed" in ln for ln in refused)
    ack4 = next(u for u in net.of_port(30) if u["readings"]["cmd_seq"] == 4)
    assert dict(ack4["fopts"])[lorawan.CID_LINK_ADR]["channel_mask_ack"]
    # NbTrans 2: the unconfirmed ack went out twice with one counter (no downlink answered it)
    assert [u["repeat"] for u in net.uplinks if u["fcnt"] == ack4["fcnt"]] == [False, True]
    assert net.of_port(13)[-1]["readings"]["level"] == 60  # the forged dim to 0 never ran
    assert node.board.reset_causes == [1] and node.board.crashed is None
