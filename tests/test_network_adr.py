"""ADR for static nodes and the gateway's duty-cycle budget: the decisions and their effect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.lorawan import DutyCycleBudget
from gateway.lorawan.adr import HISTORY, AdrDecision, decide, link_margin_db
from protocol import lorawan
from tests.test_network_support import (
    ABP_EUI,
    Air,
    Clock,
    frame,
    network,
    open_store,
    register_abp,
    uplink_and_reply,
)

T = 40_000_000


def test_adr_needs_a_full_history_of_uplinks() -> None:
    assert decide([20.0] * (HISTORY - 1), 0, 0) is None


def test_strong_link_steps_the_data_rate_up_first_then_the_power_down() -> None:
    # SF12 floor -20 dB; best SNR 5 dB; margin 10 dB: 15 dB of headroom = 5 steps of 3 dB
    assert decide([0.0] * 19 + [5.0], 0, 0) == AdrDecision(data_rate=5, tx_power=0)
    # SF7 floor -7.5 dB, best SNR 10 dB: 7.5 dB headroom = 2 steps: power index 0 -> 2
    assert decide([10.0] * HISTORY, 5, 0) == AdrDecision(data_rate=5, tx_power=2)


def test_weak_link_raises_the_power_again_and_never_slows_the_rate() -> None:
    # SF7, best SNR -6 dB: 1.5 - 10 = -8.5 dB -> -3 steps: power index 4 -> 1
    assert decide([-6.0] * HISTORY, 5, 4) == AdrDecision(data_rate=5, tx_power=1)
    assert decide([-6.0] * HISTORY, 5, 0) is None  # already at full power


def test_link_margin_is_snr_above_the_demodulation_floor() -> None:
    assert link_margin_db(-2.5, 9) == 10.0 and link_margin_db(0.0, 12) == 20.0


@given(st.lists(st.floats(-30, 30), min_size=HISTORY, max_size=HISTORY),
       st.integers(0, 6), st.integers(0, 7))
def test_adr_decisions_stay_within_eu868_limits(snr: list[float], dr: int, power: int) -> None:
    d = decide(snr, dr, power)
    if d is not None:
        assert 0 <= d.tx_power <= 7 and dr <= d.data_rate <= max(dr, 5)


def test_adr_request_goes_to_a_static_node_and_its_answer_is_applied(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    for i in range(HISTORY):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True), tmst_us=(i + 1) * T,
                                                sf=12, snr_db=5.0)))
    [tx] = air.sent  # after the 20th uplink
    f, _fcnt, _ = node.open(tx.phy)
    [(cid, req)] = lorawan.parse_mac_commands(f.fopts, False)
    assert cid == lorawan.CID_LINK_ADR
    assert req == {"data_rate": 5, "tx_power": 0, "ch_mask": 0x0007, "ch_mask_cntl": 0,
                   "nb_trans": 1}
    assert f.adr and net.counters["adr_requested"] == 1
    ans = lorawan.encode_mac_command(lorawan.CID_LINK_ADR, True, power_ack=True,
                                     data_rate_ack=True, channel_mask_ack=True)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True, fopts=ans), tmst_us=50 * T,
                                            sf=7, snr_db=5.0)))
    state = net.mac_state(ABP_EUI)
    assert (state.data_rate, state.tx_power) == (5, 0)
    assert net.counters["adr_applied"] == 1 and len(air.sent) == 1


def test_refused_adr_request_pauses_adr_for_the_session(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    for i in range(HISTORY):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True), tmst_us=(i + 1) * T,
                                                sf=12, snr_db=5.0)))
    nack = lorawan.encode_mac_command(lorawan.CID_LINK_ADR, True, power_ack=True,
                                      data_rate_ack=False, channel_mask_ack=True)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True, fopts=nack), tmst_us=30 * T,
                                            sf=12, snr_db=5.0)))
    for i in range(HISTORY + 1):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True), tmst_us=(31 + i) * T,
                                                sf=12, snr_db=5.0)))
    assert net.counters["adr_rejected"] == 1 and net.counters["adr_requested"] == 1
    assert len(air.sent) == 1 and net.mac_state(ABP_EUI).adr_rejected


def test_no_adr_for_a_node_that_does_not_ask_for_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    for i in range(HISTORY + 2):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=(i + 1) * T, sf=12,
                                                snr_db=5.0)))
    assert air.sent == [] and net.counters["adr_requested"] == 0


def test_adr_ack_req_gets_a_downlink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"status_at": 4e9})
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(adr=True, adr_ack_req=True),
                                            tmst_us=T)))
    [tx] = air.sent
    f, _, _ = node.open(tx.phy)
    assert f.fopts == b"" and f.fport is None  # an empty frame proves the link


# ------------------------------------------------------------------ duty-cycle budget


@pytest.mark.parametrize(("freq", "limit_s", "band"), [
    (868_100_000, 36.0, "h1.5"),   # g1 868.0-868.6: 1 %
    (868_900_000, 3.6, "h1.6"),    # g2 868.7-869.2: 0.1 %
    (869_525_000, 360.0, "h1.7"),  # g3 869.4-869.65: 10 %
    (869_800_000, 36.0, "h1.8"),   # g4 869.7-870.0: 1 %
])
def test_each_sub_band_allows_its_share_of_an_hour(freq: int, limit_s: float,
                                                    band: str) -> None:
    clock = Clock()
    budget = DutyCycleBudget(clock)
    assert budget.band_name(freq) == band and budget.limit_s(freq) == pytest.approx(limit_s)
    assert budget.allows(freq, limit_s)
    budget.spend(freq, limit_s - 0.5)
    assert budget.allows(freq, 0.5) and not budget.allows(freq, 0.6)
    assert budget.wait_s(freq, 0.6) == pytest.approx(3600.0)
    clock.t += 3600.0
    assert budget.allows(freq, limit_s)


def test_budget_is_per_sub_band_and_frees_oldest_first() -> None:
    clock = Clock()
    budget = DutyCycleBudget(clock)
    budget.spend(868_100_000, 20.0)
    clock.t += 100.0
    budget.spend(868_300_000, 16.0)  # same sub-band: 36 s used
    assert not budget.allows(868_500_000, 1.0)
    assert budget.allows(869_525_000, 300.0)  # another sub-band is untouched
    assert budget.wait_s(868_100_000, 1.0) == pytest.approx(3500.0)
    assert [(u.name, u.used_s) for u in budget.usage()] == [("h1.5", 36.0)]


def test_outside_every_band_nothing_is_allowed() -> None:
    budget = DutyCycleBudget(Clock())
    assert not budget.allows(870_500_000, 0.001) and budget.wait_s(870_500_000, 0.1) is None
