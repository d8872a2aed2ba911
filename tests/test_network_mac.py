"""MAC commands on the network side: answers (LinkCheck, DeviceTime), requests in the next
downlink's FOpts and their answers applied (DevStatus, RXParamSetup, RXTimingSetup, DutyCycle),
and the command parser fed any bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.counters import Counters
from gateway.lorawan import MacState
from gateway.lorawan.mac import parse_uplink_commands, process_uplink
from gateway.store import Accepted
from gateway.uplink.senml import decode_pack
from protocol import lorawan
from tests.test_network_support import (
    ABP_EUI,
    Air,
    frame,
    network,
    open_store,
    register_abp,
    uplink_and_reply,
)

T = 30_000_000


def _cmd(cid: int, **fields: object) -> bytes:
    return lorawan.encode_mac_command(cid, True, **fields)


def _down_commands(node, tx) -> list[tuple[int, dict]]:
    f, _fcnt, clear = node.open(tx.phy)
    return lorawan.parse_mac_commands(clear if f.fport == 0 else f.fopts, False)


def test_link_check_is_answered_with_the_margin_above_the_sf_floor_and_gateway_count(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})  # status fresh: no DevStatusReq
    air = Air()
    net = network(store, air)
    up = node.uplink(fopts=_cmd(lorawan.CID_LINK_CHECK))
    asyncio.run(uplink_and_reply(net, frame(up, tmst_us=T, sf=9, snr_db=-2.5)))
    [tx] = air.sent
    assert tx.tmst_us == T + 1_000_000
    assert _down_commands(node, tx) == [(lorawan.CID_LINK_CHECK, {"margin": 10, "gw_cnt": 1})]


def test_link_check_on_fport_0_is_answered_too(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    up = node.uplink(0, _cmd(lorawan.CID_LINK_CHECK))
    result = asyncio.run(uplink_and_reply(net, frame(up, tmst_us=T, sf=7, snr_db=8.0)))
    assert isinstance(result, Accepted)
    assert _down_commands(node, air.sent[0])[0][1]["margin"] == 15


def test_dev_status_is_asked_on_a_downlink_and_the_answer_lands_in_the_uplink_pack(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T)))
    assert (lorawan.CID_DEV_STATUS, {}) in _down_commands(node, air.sent[0])

    answer = _cmd(lorawan.CID_DEV_STATUS, battery=254, margin=-3)
    result = asyncio.run(uplink_and_reply(net, frame(node.uplink(fopts=answer), tmst_us=2 * T)))
    assert isinstance(result, Accepted)
    stored = decode_pack(store.pending(10)[-1].body)
    values = {r.get("n"): r for r in stored}
    assert values["battery_level"]["v"] == 100.0 and values["battery_level"]["u"] == "%EL"
    assert values["margin"]["v"] == -3 and values["margin"]["u"] == "dB"
    assert len(air.sent) == 1  # DevStatusAns needs no downlink
    store.close()
    store = open_store(tmp_path)  # the device status survives a restart
    state = MacState.from_dict(store.get_device(ABP_EUI).mac_state)
    assert (state.battery, state.margin_db, state.pending) == (254, -3, [])


def test_mains_powered_device_reports_external_power(tmp_path: Path) -> None:
    state = MacState()
    state.request("dev_status")
    state.take_requests(15)
    out = process_uplink(state, [(lorawan.CID_DEV_STATUS, {"battery": 0, "margin": 12})],
                         snr_db=0.0, sf=7, gateway_count=1, received_at=1.0,
                         counters=Counters())
    assert out.records == [{"n": "external_power", "vb": True},
                           {"n": "margin", "u": "dB", "v": 12}]


def test_rx_param_setup_is_sent_answered_applied_and_its_sticky_answer_acknowledged(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    net.request_mac(ABP_EUI, "rx_param_setup", rx1_dr_offset=1, rx2_data_rate=3,
                    frequency=869_525_000)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=T)))
    assert _down_commands(node, air.sent[0]) == [(lorawan.CID_RX_PARAM_SETUP, {
        "rx1_dr_offset": 1, "rx2_data_rate": 3, "frequency": 869_525_000})]
    ans = _cmd(lorawan.CID_RX_PARAM_SETUP, rx1_dr_offset_ack=True, rx2_data_rate_ack=True,
               channel_ack=True)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(fopts=ans), tmst_us=2 * T, sf=7)))
    state = net.mac_state(ABP_EUI)
    assert (state.rx1_dr_offset, state.rx2_dr) == (1, 3)
    second = air.sent[1]  # the sticky answer gets a downlink, already in the new settings
    assert second.tmst_us == 2 * T + 1_000_000 and second.sf == 8
    air.refuse.add(3 * T + 1_000_000)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=3 * T)))
    assert air.sent[2].sf == 9  # RX2 now at DR3


def test_refused_rx_param_setup_keeps_the_old_settings(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    net.request_mac(ABP_EUI, "rx_param_setup", rx1_dr_offset=1, rx2_data_rate=3,
                    frequency=869_525_000)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=T)))
    ans = _cmd(lorawan.CID_RX_PARAM_SETUP, rx1_dr_offset_ack=True, rx2_data_rate_ack=False,
               channel_ack=True)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(fopts=ans), tmst_us=2 * T)))
    state = net.mac_state(ABP_EUI)
    assert (state.rx1_dr_offset, state.rx2_dr) == (0, 0)
    assert net.counters["mac_rx_param_setup_rejected"] == 1


def test_rx_timing_setup_moves_rx1(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    net.request_mac(ABP_EUI, "rx_timing_setup", delay=3)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=T)))
    assert _down_commands(node, air.sent[0]) == [(lorawan.CID_RX_TIMING_SETUP, {"delay": 3})]
    ans = _cmd(lorawan.CID_RX_TIMING_SETUP)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(fopts=ans), tmst_us=2 * T)))
    assert air.sent[1].tmst_us == 2 * T + 3_000_000
    store.close()
    store = open_store(tmp_path)
    assert MacState.from_dict(store.get_device(ABP_EUI).mac_state).rx_delay_s == 3


def test_duty_cycle_request_is_applied_when_answered(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    net.request_mac(ABP_EUI, "duty_cycle", max_duty_cycle=7)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=T)))
    assert _down_commands(node, air.sent[0]) == [(lorawan.CID_DUTY_CYCLE, {"max_duty_cycle": 7})]
    asyncio.run(uplink_and_reply(net, frame(node.uplink(fopts=_cmd(lorawan.CID_DUTY_CYCLE)),
                                            tmst_us=2 * T)))
    assert net.mac_state(ABP_EUI).max_duty_cycle == 7
    assert len(air.sent) == 1  # nothing left to say


def test_unanswered_request_is_sent_again_then_given_up(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    net.request_mac(ABP_EUI, "duty_cycle", max_duty_cycle=2)
    for i in range(5):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=(i + 1) * T)))
    assert len(air.sent) == 3
    assert net.counters["mac_request_unanswered"] == 1
    assert not net.mac_state(ABP_EUI).has_request("duty_cycle")


def test_many_answers_beyond_fopts_go_on_fport_0(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    up = node.uplink(0, _cmd(lorawan.CID_LINK_CHECK) * 6)  # six answers: 18 bytes
    asyncio.run(uplink_and_reply(net, frame(up, tmst_us=T)))
    f, _fcnt, _clear = node.open(air.sent[0].phy)
    assert f.fport == 0 and f.fopts == b""
    assert len(lorawan.parse_mac_commands(_clear, False)) == 6


def test_device_time_is_answered_in_gps_time(tmp_path: Path) -> None:
    state = MacState()
    out = process_uplink(state, [(lorawan.CID_DEVICE_TIME, {})], snr_db=0.0, sf=7,
                         gateway_count=1, received_at=1_767_225_600.5, counters=Counters())
    [(cid, fields)] = lorawan.parse_mac_commands(out.answers[0], False)
    assert cid == lorawan.CID_DEVICE_TIME
    assert fields == {"seconds": 1_767_225_600 - 315_964_800 + 18, "fraction": 128}


# ------------------------------------------------------------------ any bytes from the air


@given(st.binary(max_size=64))
def test_uplink_command_parser_never_raises_and_counts_malformed_input(data: bytes) -> None:
    counters = Counters()
    commands = parse_uplink_commands(data, counters)
    state = MacState()
    state.request("link_adr", data_rate=5, tx_power=1, ch_mask=7, ch_mask_cntl=0, nb_trans=1)
    state.request("rx_param_setup", rx1_dr_offset=1, rx2_data_rate=2, frequency=869_525_000)
    state.take_requests(15)
    out = process_uplink(state, commands, snr_db=3.0, sf=7, gateway_count=1,
                         received_at=1.8e9, counters=counters)
    for answer in out.answers:
        lorawan.parse_mac_commands(answer, False)
    try:
        lorawan.parse_mac_commands(data, True)
    except lorawan.MACCommandError:
        assert counters["mac_malformed"] == 1


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fopts=st.binary(max_size=15), confirmed=st.booleans(), adr=st.booleans())
def test_any_fopts_in_a_genuine_uplink_never_crash_the_network_side(
        tmp_path_factory, fopts: bytes, confirmed: bool, adr: bool) -> None:
    store = open_store(tmp_path_factory.mktemp("fopts"))
    try:
        node = register_abp(store)
        air = Air()
        net = network(store, air)
        up = node.uplink(fopts=fopts, confirmed=confirmed, adr=adr)
        result = asyncio.run(uplink_and_reply(net, frame(up, tmst_us=T)))
        assert isinstance(result, Accepted)
        assert net.counters["downlink_error"] == 0 and net.counters["rejected_internal"] == 0
        for tx in air.sent:
            node.open(tx.phy)
    finally:
        store.close()


@given(st.dictionaries(st.sampled_from(list(MacState.__slots__) + ["junk"]),
                       st.one_of(st.none(), st.integers(-5, 10**10), st.text(max_size=3),
                                 st.lists(st.lists(st.one_of(st.text(max_size=15),
                                                             st.integers(), st.dictionaries(
                                                                 st.text(max_size=5),
                                                                 st.integers())),
                                                   max_size=4), max_size=3))))
def test_a_damaged_stored_mac_state_loads_as_something_usable(data: dict) -> None:
    state = MacState.from_dict(data)
    state.take_requests(15)
    state.requeue_unanswered(Counters())
    state.to_dict()
