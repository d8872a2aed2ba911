"""The semtech-udp front end over real loopback UDP, spoken to by the test packet forwarder.

Every test runs the real protocol v2 (PUSH_DATA/PUSH_ACK, PULL_DATA/PULL_ACK, PULL_RESP/TX_ACK)
between ``gateway.radio.semtech_udp.SemtechUdpFrontEnd`` and one or more
``sim.packet_forwarder.PacketForwarder`` instances, each with its own gateway EUI and sockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from gateway.config import default_config
from gateway.counters import Counters
from gateway.radio import RxFrame, TxRequest, open_frontend
from gateway.radio.semtech_udp import (
    ListenError,
    NoRouteError,
    ProtocolError,
    PullData,
    PushData,
    SemtechUdpFrontEnd,
    TxAck,
    TxAckTimeout,
    TxCollision,
    TxFrequencyRejected,
    TxGpsUnlocked,
    TxPowerRejected,
    TxRejected,
    TxTooEarly,
    TxTooLate,
    encode_pull_data,
    encode_pull_resp,
    encode_push_data,
    encode_tx_ack,
    parse_downstream,
    parse_upstream,
    txpk_for,
)
from sim.channel import Concentrator, Endpoint, RadioChannel
from sim.clock import VirtualClock
from sim.packet_forwarder import PacketForwarder, rxpk

EUIS = ("aa555a0000000001", "aa555a0000000002", "aa555a0000000003")
GUARD_S = 10.0  # only a hang guard: no assertion depends on how fast anything is

# A LoRaWAN unconfirmed data up from DevAddr 0x26011f00 (MIC not checked by the front end).
UPLINK = bytes.fromhex("40001f0126000100010203040506070809")
DOWNLINK = bytes.fromhex("60001f012600010001aabbccdd")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def network(n: int = 1, **fe_kwargs: Any
                  ) -> AsyncIterator[tuple[SemtechUdpFrontEnd, list[PacketForwarder]]]:
    """A front end on a free loopback port and ``n`` forwarders that have sent PULL_DATA."""
    fe_kwargs.setdefault("bind", "127.0.0.1")
    fe_kwargs.setdefault("port", 0)
    async with SemtechUdpFrontEnd(**fe_kwargs) as fe, AsyncExitStack() as stack:
        pfs = []
        for eui in EUIS[:n]:
            pf = await stack.enter_async_context(PacketForwarder(fe.address[:2], eui))
            await asyncio.wait_for(pf.pull_acked.wait(), GUARD_S)
            pfs.append(pf)
        yield fe, pfs


async def next_frame(fe: SemtechUdpFrontEnd) -> RxFrame:
    return await asyncio.wait_for(fe.queue.get(), GUARD_S)


# ------------------------------------------------------------------------------- uplinks


def test_uplink_reaches_the_queue_with_the_rxpk_metadata() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            acked = await pf.uplink(UPLINK, tmst=3_512_348_611, freq_hz=868_300_000, sf=9,
                                    bw_khz=125, rssi_dbm=-97, snr_db=-4.25, coding_rate="4/6",
                                    chan=2, rfch=1, time_utc=1_700_000_000.5)
            assert acked, "PUSH_DATA is acknowledged with PUSH_ACK"
            f = await next_frame(fe)
            assert f.phy == UPLINK
            assert (f.tmst_us, f.freq_hz, f.sf, f.bw_khz) == (3_512_348_611, 868_300_000, 9, 125)
            assert (f.rssi_dbm, f.snr_db, f.crc_ok, f.coding_rate) == (-97.0, -4.2, True, "4/6")
            assert f.gateway_eui == EUIS[0] and f.heard_by == (EUIS[0],)
            assert f.extra == {"chan": 2, "rfch": 1, "time": "2023-11-14T22:13:20.500000Z"}
            assert fe.forwarders[EUIS[0]].rxpk == 1
            assert fe.counters["semtech_uplinks"] == 1

    run(scenario())


def test_several_rxpk_in_one_push_data_each_become_a_frame_and_a_bad_one_is_counted() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            bad = rxpk(b"\x40zzzz", tmst=2)
            bad["data"] = "not base64 at all!"
            packets = [rxpk(UPLINK, tmst=1, sf=7), bad, rxpk(UPLINK + b"\x01", tmst=3, sf=12,
                                                               crc_ok=False)]
            assert await pf.push(packets)
            first, second = await next_frame(fe), await next_frame(fe)
            assert (first.phy, first.sf, first.crc_ok) == (UPLINK, 7, True)
            assert (second.phy, second.sf, second.crc_ok) == (UPLINK + b"\x01", 12, False)
            assert fe.counters["semtech_bad_base64"] == 1
            assert fe.queue.empty()

    run(scenario())


def test_same_frame_from_two_forwarders_is_delivered_once_with_the_best_metadata() -> None:
    async def scenario() -> None:
        async with network(3) as (fe, [a, b, c]):
            await a.uplink(UPLINK, rssi_dbm=-110, snr_db=-6.0)
            await b.uplink(UPLINK, rssi_dbm=-72, snr_db=9.5)
            await c.uplink(UPLINK, rssi_dbm=-90, snr_db=2.0)
            f = await next_frame(fe)
            assert (f.rssi_dbm, f.snr_db, f.gateway_eui) == (-72.0, 9.5, EUIS[1])
            assert f.heard_by == tuple(EUIS)
            assert fe.counters["semtech_duplicate"] == 2
            assert fe.counters["semtech_uplinks"] == 1
            assert fe.forwarders[EUIS[1]].best_receptions == 1
            assert fe.route_for(0x26011F00) == EUIS[1]
            # a copy that comes after delivery is counted, never delivered again
            await a.uplink(UPLINK, rssi_dbm=-100, snr_db=0.0)
            await a.uplink(UPLINK + b"\x02", rssi_dbm=-100, snr_db=0.0)
            assert (await next_frame(fe)).phy == UPLINK + b"\x02"
            assert fe.counters["semtech_duplicate"] == 3

    run(scenario())


def test_frame_heard_by_one_of_two_forwarders_is_delivered_when_the_window_ends() -> None:
    async def scenario() -> None:
        async with network(2, dedup_window_s=0.05) as (fe, [a, _b]):
            await a.uplink(UPLINK, rssi_dbm=-80, snr_db=5.0)
            f = await next_frame(fe)
            assert f.gateway_eui == EUIS[0] and f.heard_by == (EUIS[0],)
            assert fe.counters["semtech_duplicate"] == 0

    run(scenario())


def test_a_retransmission_after_the_window_is_delivered_again() -> None:
    async def scenario() -> None:
        async with network(1, dedup_window_s=0.0) as (fe, [pf]):
            await pf.uplink(UPLINK)
            await next_frame(fe)
            await pf.uplink(UPLINK)  # the node sent the same frame again, later
            await next_frame(fe)
            assert fe.counters["semtech_uplinks"] == 2

    run(scenario())


def test_stat_reports_are_kept_per_forwarder_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cityedge.radio.semtech_udp")

    async def scenario() -> None:
        async with network(2) as (fe, [a, b]):
            a.location = (43.5297, 5.4474, 173.0)
            await a.uplink(UPLINK)
            await a.uplink(UPLINK + b"\x01", crc_ok=False)
            assert await a.push_stat()
            assert await b.push(stat={"rxnb": 0, "rxok": 0, "rxfw": 0, "ackr": 0.0, "dwnb": 3,
                                      "txnb": 2})
            sa, sb = fe.forwarders[EUIS[0]].stat, fe.forwarders[EUIS[1]].stat
            assert sa is not None and sb is not None
            assert (sa.rxnb, sa.rxok, sa.rxfw, sa.ackr) == (2, 1, 2, 100.0)
            assert (sa.lati, sa.long, sa.alti) == (43.5297, 5.4474, 173)
            assert (sb.dwnb, sb.txnb, sb.lati) == (3, 2, None)
            assert fe.counters["semtech_stat"] == 2

    run(scenario())
    assert any(f"forwarder {EUIS[0]} stat" in r.getMessage() and "rxok=1" in r.getMessage()
               for r in caplog.records)


def test_a_flood_beyond_the_queue_bound_is_counted_not_buffered() -> None:
    async def scenario() -> None:
        async with network(1, max_queue=2) as (fe, [pf]):
            assert await pf.push([rxpk(UPLINK + bytes([i]), tmst=i) for i in range(5)])
            assert fe.queue.qsize() == 2
            assert fe.counters["semtech_queue_full"] == 3
            assert fe.counters["semtech_uplinks"] == 2

    run(scenario())


def test_gateways_beyond_the_limit_are_refused_and_counted() -> None:
    async def scenario() -> None:
        async with network(2, max_forwarders=2) as (fe, [a, _b]):
            a.send_raw(encode_pull_data(1, "0102030405060708"), downstream=True)
            assert await a.uplink(UPLINK)  # sync: the server has handled the PULL_DATA
            assert fe.counters["semtech_too_many_forwarders"] == 1
            assert set(fe.forwarders) == set(EUIS[:2])

    run(scenario())


def test_a_forwarder_left_alone_keeps_its_route_open_and_reports_its_stat() -> None:
    async def scenario() -> None:
        async with SemtechUdpFrontEnd(bind="127.0.0.1", port=0) as fe, \
                PacketForwarder(fe.address[:2], EUIS[0], keepalive_s=0.02,
                                stat_interval_s=0.02) as pf:
            async with asyncio.timeout(GUARD_S):
                while fe.counters["semtech_stat"] < 2 or fe.counters["semtech_pull_data"] < 2:
                    await asyncio.sleep(0.01)
            state = fe.forwarders[EUIS[0]]
            assert state.stat is not None and state.stat.ackr is not None
            assert state.pull_addr == pf._down.get_extra_info("sockname")

    run(scenario())


# ----------------------------------------------------------------------------- downlinks


def test_downlink_goes_back_through_the_forwarder_that_heard_the_device_best() -> None:
    async def scenario() -> None:
        async with network(2) as (fe, [a, b]):
            await a.uplink(UPLINK, rssi_dbm=-115, snr_db=-9.0)
            await b.uplink(UPLINK, rssi_dbm=-80, snr_db=6.0)
            up = await next_frame(fe)
            tx = TxRequest(phy=DOWNLINK, tmst_us=up.tmst_us + 1_000_000, freq_hz=869_525_000,
                           sf=9, tx_power_dbm=27)
            result = await fe.send(tx)  # no gateway named: routed by DevAddr
            assert result.gateway_eui == EUIS[1] and result.warning is None
            dl = await asyncio.wait_for(b.downlinks.get(), GUARD_S)
            assert dl.error == "NONE" and a.downlinks.empty()
            t = dl.txpk
            assert (t.phy, t.tmst, t.immediate) == (DOWNLINK, (up.tmst_us + 1_000_000) % 2**32,
                                                    False)
            assert (t.freq_hz, t.sf, t.bw_khz, t.power_dbm) == (869_525_000, 9, 125, 27)
            assert (t.iq_inverted, t.no_crc, t.coding_rate, t.rf_chain) == (True, True, "4/5", 0)
            # naming the forwarder overrides the route
            await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=12,
                                    gateway_eui=EUIS[0]))
            dl = await asyncio.wait_for(a.downlinks.get(), GUARD_S)
            assert dl.txpk.immediate and dl.txpk.tmst is None and dl.txpk.sf == 12
            assert fe.forwarders[EUIS[0]].tx_acks["NONE"] == 1

    run(scenario())


def test_the_pull_resp_goes_to_the_address_of_the_pull_data_not_of_the_push_data() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            await pf.uplink(UPLINK)
            await next_frame(fe)
            state = fe.forwarders[EUIS[0]]
            assert state.pull_addr != state.push_addr  # two sockets, like lora_pkt_fwd
            await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9))
            await asyncio.wait_for(pf.downlinks.get(), GUARD_S)
            assert pf.counters["pull_resp_on_up_socket"] == 0

    run(scenario())


@pytest.mark.parametrize(("error", "exc_type"), [
    ("TOO_LATE", TxTooLate),
    ("TOO_EARLY", TxTooEarly),
    ("COLLISION_PACKET", TxCollision),
    ("COLLISION_BEACON", TxCollision),
    ("TX_FREQ", TxFrequencyRejected),
    ("TX_POWER", TxPowerRejected),
    ("GPS_UNLOCKED", TxGpsUnlocked),
])
def test_every_tx_ack_error_raises_its_own_exception(error: str, exc_type: type) -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            pf.tx_error.append(error)
            with pytest.raises(exc_type) as info:
                await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9))
            assert isinstance(info.value, TxRejected)
            assert info.value.error == error and info.value.gateway_eui == EUIS[0]
            assert fe.counters["semtech_tx_" + error.lower()] == 1

    run(scenario())


def test_the_forwarder_refuses_what_it_cannot_emit_and_the_caller_learns_why() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            base = {"phy": DOWNLINK, "freq_hz": 869_525_000, "sf": 9}
            with pytest.raises(TxTooLate):
                await fe.send(TxRequest(tmst_us=pf.tmst() - 1_000, **base))
            with pytest.raises(TxTooEarly):
                await fe.send(TxRequest(tmst_us=pf.tmst() + 120_000_000, **base))
            with pytest.raises(TxFrequencyRejected):
                await fe.send(TxRequest(tmst_us=None, **{**base, "freq_hz": 915_000_000}))
            with pytest.raises(TxPowerRejected):
                await fe.send(TxRequest(tmst_us=None, tx_power_dbm=30, **base))
            result = await fe.send(TxRequest(tmst_us=pf.tmst() + 1_000_000, **base))
            assert result.gateway_eui == EUIS[0]

    run(scenario())


def test_a_txpk_with_only_a_gps_time_is_refused_by_a_forwarder_without_gps() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            txpk = txpk_for(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9))
            del txpk["imme"]
            txpk["time"] = "2026-01-01T00:00:00.000000Z"
            # sent as the server would, through the forwarder's downlink address
            fe._sendto(encode_pull_resp(77, txpk), fe.forwarders[EUIS[0]].pull_addr)
            dl = await asyncio.wait_for(pf.downlinks.get(), GUARD_S)
            assert dl.error == "GPS_UNLOCKED"

    run(scenario())


def test_downlink_for_a_gateway_that_never_sent_pull_data_is_refused_and_counted() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, _):
            with pytest.raises(NoRouteError, match="PULL_DATA"):
                await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9,
                                        gateway_eui="0102030405060708"))
            assert fe.counters["semtech_unknown_gateway"] == 1
        async with network(0) as (fe, _):
            with pytest.raises(NoRouteError):
                await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9))
            assert fe.counters["semtech_no_route"] == 1

    run(scenario())


def test_with_two_forwarders_and_no_route_the_downlink_is_refused() -> None:
    async def scenario() -> None:
        async with network(2) as (fe, _):
            with pytest.raises(NoRouteError):
                await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=9))

    run(scenario())


def test_a_pull_resp_the_forwarder_cannot_parse_gets_no_tx_ack_and_send_times_out() -> None:
    async def scenario() -> None:
        async with network(1, tx_ack_timeout_s=0.3) as (fe, [pf]):
            with pytest.raises(TxAckTimeout):
                await fe.send(TxRequest(phy=DOWNLINK, tmst_us=None, freq_hz=869_525_000, sf=13))
            assert pf.counters["rejected_txpk_bad_field"] == 1
            assert fe.counters["semtech_tx_ack_timeout"] == 1

    run(scenario())


def test_a_tx_ack_nobody_waits_for_is_counted() -> None:
    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            pf.send_raw(encode_tx_ack(4242, EUIS[0], "NONE"), downstream=True)
            await pf.uplink(UPLINK)  # PUSH_ACK: the server has handled what came before
            assert fe.counters["semtech_tx_ack_unknown_token"] == 1

    run(scenario())


# ----------------------------------------------------------------- the simulated channel


class _Node(Endpoint):
    """A transmitter on the simulated channel (it listens to nothing)."""

    def __init__(self, name: str, position: tuple[float, float]) -> None:
        self.name, self.position = name, position


def test_forwarders_on_the_simulated_channel_feed_the_front_end_and_emit_its_downlinks() -> None:
    clock = VirtualClock(speed=None)
    channel = RadioChannel(clock, seed=3)
    near = Concentrator(clock, channel, position=(100.0, 0.0), name="near")
    far = Concentrator(clock, channel, position=(2_000.0, 0.0), name="far")
    node = channel.attach(_Node("node", (0.0, 0.0)))

    async def scenario() -> None:
        async with SemtechUdpFrontEnd(bind="127.0.0.1", port=0) as fe, \
                PacketForwarder(fe.address[:2], EUIS[0], concentrator=far, clock=clock) as pf_far, \
                PacketForwarder(fe.address[:2], EUIS[1], concentrator=near, clock=clock) as pf_near:
            await asyncio.wait_for(pf_far.pull_acked.wait(), GUARD_S)
            await asyncio.wait_for(pf_near.pull_acked.wait(), GUARD_S)
            tx = channel.transmit(node, UPLINK, freq_hz=868_300_000, sf=8, tx_power_dbm=14)
            clock.run(until_us=tx.end_us + 1)  # both concentrators hear it
            up = await next_frame(fe)
            assert up.phy == UPLINK and up.gateway_eui == EUIS[1]  # the near one: best SNR
            assert set(up.heard_by) == set(EUIS[:2])
            assert up.tmst_us == tx.end_us and (up.freq_hz, up.sf) == (868_300_000, 8)

            rx1 = TxRequest(phy=DOWNLINK, tmst_us=up.tmst_us + 1_000_000, freq_hz=868_300_000,
                            sf=8, gateway_eui=up.gateway_eui)
            assert (await fe.send(rx1)).gateway_eui == EUIS[1]
            with pytest.raises(TxCollision):
                await fe.send(rx1)  # the same slot again: the transmitter is booked
            clock.run(until_us=tx.end_us + 3_000_000)
            assert near.downlinks_sent == 1 and far.downlinks_sent == 0
            with pytest.raises(TxTooLate):
                await fe.send(rx1)  # its time has passed on the concentrator's clock
            assert pf_near.txnb == 1

    run(scenario())


# ---------------------------------------------------------------------------- open_frontend


def test_open_frontend_builds_the_semtech_udp_server_from_the_config(tmp_path) -> None:
    import dataclasses

    from gateway.config import SemtechUdpConfig

    cfg = default_config("gw", tmp_path)
    cfg = dataclasses.replace(cfg, radio=dataclasses.replace(
        cfg.radio, frontend="semtech-udp",
        semtech_udp=SemtechUdpConfig(bind="127.0.0.1", port=0)))
    counters = Counters()
    fe = open_frontend(cfg, counters=counters)
    assert isinstance(fe, SemtechUdpFrontEnd) and fe.counters is counters

    async def scenario() -> None:
        async with fe, PacketForwarder(fe.address[:2], EUIS[0]) as pf:
            assert fe.address[0] == "127.0.0.1" and fe.address[1] > 0
            assert await pf.uplink(UPLINK)
            assert (await next_frame(fe)).phy == UPLINK

    run(scenario())


def test_a_port_already_in_use_is_a_clear_error_naming_the_config_keys() -> None:
    async def scenario() -> None:
        async with SemtechUdpFrontEnd(bind="127.0.0.1", port=0) as fe:
            with pytest.raises(ListenError, match=r"radio\.semtech_udp.*already listens"):
                async with SemtechUdpFrontEnd(bind="127.0.0.1", port=fe.address[1]):
                    pass

    run(scenario())


# ------------------------------------------------------------------------ malformed input

EUI = bytes.fromhex(EUIS[0])


def _hdr(ident: int, token: int = 0x1234, version: int = 2) -> bytes:
    return bytes([version]) + token.to_bytes(2, "big") + bytes([ident])


def _push(body: bytes) -> bytes:
    return _hdr(0) + EUI + body


def _rx(**changes: Any) -> bytes:
    obj = rxpk(UPLINK, tmst=1)
    for k, v in changes.items():
        if v is None:
            obj.pop(k)
        else:
            obj[k] = v
    return _push(json.dumps({"rxpk": [obj]}).encode())


MALFORMED = [
    ("empty datagram", b"", "truncated"),
    ("half a header", b"\x02\x00", "truncated"),
    ("protocol version 1", _hdr(0, version=1) + EUI + b"{}", "bad_version"),
    ("unknown identifier", _hdr(9) + EUI, "unknown_identifier"),
    ("PUSH_ACK sent to the server", _hdr(1), "wrong_direction"),
    ("PULL_RESP sent to the server", _hdr(3) + b'{"txpk":{}}', "wrong_direction"),
    ("PUSH_DATA without its EUI", _hdr(0) + b"\xaa\x55", "truncated"),
    ("PULL_DATA with trailing bytes", _hdr(2) + EUI + b"x", "bad_length"),
    ("cut JSON", _push(b'{"rxpk":['), "bad_json"),
    ("not UTF-8", _push(b"\xff\xfe{}"), "bad_json"),
    ("JSON array at the root", _push(b"[]"), "bad_json"),
    ("deeply nested JSON", _push(b"[" * 30000 + b"]" * 30000), "bad_json"),
    ("rxpk is an object", _push(b'{"rxpk":{}}'), "bad_field"),
    ("stat is an array", _push(b'{"stat":[]}'), "bad_field"),
    ("rxpk entry is a number", _push(b'{"rxpk":[3]}'), "bad_field"),
    ("bad base64", _rx(data="@@@@"), "bad_base64"),
    ("tmst as a string", _rx(tmst="12"), "bad_field"),
    ("tmst as a boolean", _rx(tmst=True), "bad_field"),
    ("tmst beyond 32 bits", _rx(tmst=2**32), "bad_field"),
    ("no data", _rx(data=None), "missing_field"),
    ("no freq", _rx(freq=None), "missing_field"),
    ("no tmst", _rx(tmst=None), "missing_field"),
    ("freq NaN", _rx(freq=float("nan")), "bad_field"),
    ("rssi infinite", _rx(rssi=float("inf")), "bad_field"),
    ("SF13", _rx(datr="SF13BW125"), "bad_field"),
    ("garbage datr", _rx(datr="fast"), "bad_field"),
    ("FSK", _rx(modu="FSK", datr=50000), "unsupported_modulation"),
    ("size mismatch", _rx(size=99), "size_mismatch"),
    ("stat 2", _rx(stat=2), "bad_field"),
    ("codr nonsense", _rx(codr="9/9"), "bad_field"),
    ("stat counters as text", _push(b'{"stat":{"rxnb":"many"}}'), "bad_field"),
    ("TX_ACK cut JSON", _hdr(5) + EUI + b"{oops", "bad_json"),
    ("TX_ACK without txpk_ack", _hdr(5) + EUI + b'{"x":1}', "bad_field"),
    ("TX_ACK for no downlink", _hdr(5) + EUI, "tx_ack_unknown_token"),
]


@pytest.mark.parametrize(("datagram", "reason"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_datagram_is_counted_by_reason_and_the_server_carries_on(
        datagram: bytes, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cityedge.radio.semtech_udp")

    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            pf.send_raw(datagram)
            pf.send_raw(datagram)
            assert await pf.uplink(UPLINK + b"\xee")  # the server still answers and delivers
            assert (await next_frame(fe)).phy == UPLINK + b"\xee"
            assert fe.counters["semtech_" + reason] == 2
            assert fe.counters["semtech_internal_error"] == 0
            assert fe.queue.empty()

    run(scenario())
    warnings = [r for r in caplog.records if f"({reason})" in r.getMessage()]
    assert len(warnings) == 1, "a reason is logged as a warning once, then counted quietly"


# --------------------------------------------------------------------------- wire format


def test_parsers_read_what_the_encoders_write() -> None:
    msg = parse_upstream(encode_push_data(7, EUIS[2], [rxpk(UPLINK, tmst=5)], {"rxnb": 1}))
    assert isinstance(msg, PushData) and msg.token == 7 and msg.gateway_eui == EUIS[2]
    assert base64.b64decode(msg.rxpk[0]["data"]) == UPLINK and msg.stat == {"rxnb": 1}
    assert parse_upstream(_hdr(2, token=9) + EUI) == PullData(9, EUIS[0])
    assert parse_upstream(encode_tx_ack(3, EUIS[0], "TOO_LATE")) == TxAck(3, EUIS[0], "TOO_LATE")
    assert parse_upstream(_hdr(5, token=4) + EUI + b"\x00") == TxAck(4, EUIS[0], "NONE")
    warn = _hdr(5, token=4) + EUI + b'{"txpk_ack":{"warn":"TX_POWER","value":20}}'
    assert parse_upstream(warn) == TxAck(4, EUIS[0], "NONE", "TX_POWER")
    resp = parse_downstream(encode_pull_resp(11, {"imme": True}))
    assert resp.token == 11 and resp.txpk == {"imme": True}
    with pytest.raises(ProtocolError) as info:
        parse_downstream(_hdr(0) + EUI)
    assert info.value.reason == "wrong_direction"


# ------------------------------------------------------------------------------- review fixes


def test_a_downlink_scheduled_from_an_uplink_tmst_near_2_pow_32_wraps_in_the_txpk() -> None:
    from gateway.lorawan.downlink import class_a_windows
    from gateway.lorawan.mac import MacState

    async def scenario() -> None:
        async with network(1) as (fe, [pf]):
            tmst = 2**32 - 300_000  # the concentrator counter wraps 0.3 s after this uplink
            await pf.uplink(UPLINK, tmst=tmst)
            up = await next_frame(fe)
            assert up.tmst_us == tmst
            rx1, rx2 = class_a_windows(up.tmst_us, 5, up.freq_hz, MacState())
            assert rx1.tmst_us is not None and rx1.tmst_us >= 2**32  # unwrapped internally
            assert txpk_for(TxRequest(phy=DOWNLINK, tmst_us=rx1.tmst_us, freq_hz=rx1.freq_hz,
                                      sf=7))["tmst"] == 700_000
            result = await fe.send(TxRequest(phy=DOWNLINK, tmst_us=rx2.tmst_us,
                                             freq_hz=rx2.freq_hz, sf=12))
            assert result.gateway_eui == EUIS[0]
            dl = await asyncio.wait_for(pf.downlinks.get(), GUARD_S)
            assert dl.error == "NONE"
            assert dl.txpk.tmst == 1_700_000 and dl.txpk.phy == DOWNLINK

    run(scenario())


def test_open_frontend_takes_the_dedup_window_and_the_gateway_allowlist_from_the_config(
        tmp_path) -> None:
    import dataclasses

    from gateway.config import SemtechUdpConfig

    cfg = default_config("gw", tmp_path)
    cfg = dataclasses.replace(cfg, radio=dataclasses.replace(
        cfg.radio, frontend="semtech-udp",
        semtech_udp=SemtechUdpConfig(bind="127.0.0.1", port=0, dedup_window_ms=50,
                                     gateways=(EUIS[0].upper(),))))
    counters = Counters()
    fe = open_frontend(cfg, counters=counters)
    assert fe.dedup_window_s == 0.05
    assert fe.gateways == frozenset({EUIS[0]})

    async def scenario() -> None:
        async with fe, PacketForwarder(fe.address[:2], EUIS[1], push_timeout_s=0.3) as other, \
                PacketForwarder(fe.address[:2], EUIS[0]) as allowed:
            assert not await other.uplink(UPLINK), "an unlisted forwarder gets no PUSH_ACK"
            assert await allowed.uplink(UPLINK)
            assert (await next_frame(fe)).gateway_eui == EUIS[0]
            assert fe.queue.empty()
            assert EUIS[1] not in fe.forwarders and EUIS[0] in fe.forwarders
            assert counters["semtech_gateway_not_allowed"] >= 1  # its PULL_DATA too
            assert counters["semtech_uplinks"] == 1

    run(scenario())
