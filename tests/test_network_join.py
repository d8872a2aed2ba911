"""OTAA on the network side: join-request checks, DevNonce replay protection, the join-accept and
its timing, session keys; and a whole join through the simulated radio channel."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.lorawan import COMMON_EU868_CFLIST_HZ, JoinGranted, JoinSettings, Rejection
from gateway.store import Accepted
from protocol import lorawan
from tests.test_network_support import (
    AES,
    APP_KEY,
    OTAA_EUI,
    Air,
    Node,
    frame,
    join_request,
    network,
    open_store,
    register_abp,
    register_otaa,
    uplink_and_reply,
)


def _join(net, air, nonce: int, tmst: int = 50_000_000, **kw) -> JoinGranted | Rejection:
    result = net.handle(frame(join_request(nonce, **kw), tmst_us=tmst, freq_hz=868_300_000,
                              sf=9))
    if isinstance(result, JoinGranted):
        assert asyncio.run(net.complete_join(result)) is True
    return result


def test_join_is_accepted_answered_in_rx1_after_5_s_and_the_session_works(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_otaa(store)
    air = Air()
    net = network(store, air, join_settings=JoinSettings(
        rx1_dr_offset=1, rx2_dr=3, rx_delay_s=2, cflist_hz=COMMON_EU868_CFLIST_HZ))
    granted = _join(net, air, 0)
    assert isinstance(granted, JoinGranted)
    assert net.counters["joins"] == 1 and net.counters["join_accept_sent"] == 1

    tx = air.sent[-1]
    assert tx.tmst_us == 50_000_000 + 5_000_000  # JOIN_ACCEPT_DELAY1, uplink's channel and DR
    assert (tx.freq_hz, tx.sf, tx.bw_khz, tx.iq_inverted) == (868_300_000, 9, 125, True)
    accept = lorawan.open_join_accept(AES, APP_KEY, tx.phy)  # the device's side
    assert (accept.rx1_dr_offset, accept.rx2_dr, accept.rx1_delay_s) == (1, 3, 2)
    assert lorawan.decode_cflist_eu868(accept.cflist) == list(COMMON_EU868_CFLIST_HZ)
    assert accept.join_nonce == 1 and accept.net_id == 0
    assert accept.devaddr >> 25 == 0  # NetID 0 (type 0, NwkID 0): DevAddr prefix 0b0000000
    nwk, app = lorawan.derive_session_keys(AES, APP_KEY, accept.join_nonce, accept.net_id, 0)

    dev = store.get_device(OTAA_EUI)
    assert dev.dev_addr == f"{accept.devaddr:08x}" and dev.last_dev_nonce == 0
    assert (dev.nwk_s_key, dev.app_s_key) == (nwk, app)
    assert (dev.fcnt_up, dev.fcnt_down, dev.join_nonce) == (-1, 0, 1)
    assert dev.mac_state["rx_delay_s"] == 2 and dev.mac_state["ch_mask"] == 0xFF
    events = [r for r in store.pending(10) if r.kind == "event"]
    assert len(events) == 1 and events[0].rid == f"test-gw:{OTAA_EUI}:join:1"

    node = Node(accept.devaddr, nwk, app)
    result = asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True),
                                                     tmst_us=90_000_000, sf=7)))
    assert isinstance(result, Accepted) and result.dev_eui == OTAA_EUI
    ack = air.sent[-1]
    assert ack.tmst_us == 90_000_000 + 2_000_000  # RxDelay 2 s from the join-accept
    assert ack.sf == 8  # DR5 - RX1DROffset 1 = DR4
    f, fcnt, _ = node.open(ack.phy)
    assert f.ack and fcnt == 0


def test_join_accept_goes_in_rx2_after_6_s_when_rx1_cannot_be_sent(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_otaa(store)
    air = Air()
    air.refuse.add(55_000_000)
    net = network(store, air)
    assert isinstance(_join(net, air, 0), JoinGranted)
    tx = air.sent[-1]
    assert (tx.tmst_us, tx.freq_hz, tx.sf) == (56_000_000, 869_525_000, 12)
    assert net.counters["downlink_tx_error_rx1"] == 1 and net.counters["downlink_rx2"] == 1
    lorawan.open_join_accept(AES, APP_KEY, tx.phy)


def test_replayed_dev_nonce_is_rejected_and_counted_even_after_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_otaa(store)
    air = Air()
    net = network(store, air)
    assert isinstance(_join(net, air, 5), JoinGranted)
    assert _join(net, air, 5).reason == "dev_nonce_replay"
    assert _join(net, air, 4).reason == "dev_nonce_replay"  # 1.0.4: must increase
    assert net.counters["rejected_dev_nonce_replay"] == 2
    store.close()

    store = open_store(tmp_path)
    net = network(store, air)
    assert _join(net, air, 5).reason == "dev_nonce_replay"
    assert isinstance(_join(net, air, 6), JoinGranted)
    assert store.get_device(OTAA_EUI).join_nonce == 2  # a fresh JoinNonce for every join
    assert len(air.sent) == 2


def test_unique_mode_accepts_random_nonces_but_never_one_used_before(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_otaa(store, dev_nonce_mode="unique")
    air = Air()
    net = network(store, air)
    assert isinstance(_join(net, air, 40000), JoinGranted)
    assert isinstance(_join(net, air, 7), JoinGranted)  # lower, but new: fine for 1.0.2/1.0.3
    assert _join(net, air, 40000).reason == "dev_nonce_replay"
    store.close()
    store = open_store(tmp_path)
    net = network(store, air)
    assert _join(net, air, 7).reason == "dev_nonce_replay"
    assert store.dev_nonce_used(OTAA_EUI, 40000) and not store.dev_nonce_used(OTAA_EUI, 8)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"app_key": bytes(16)}, "join_bad_mic"),
    ({"dev_eui": "70b3d57ed00000ff"}, "join_unknown_dev_eui"),
    ({"join_eui": "70b3d57ed0000999"}, "join_eui_mismatch"),
])
def test_bad_join_requests_are_rejected_and_counted(tmp_path: Path, kwargs: dict,
                                                     reason: str) -> None:
    store = open_store(tmp_path)
    register_otaa(store)
    air = Air()
    net = network(store, air)
    result = _join(net, air, 1, **kwargs)
    assert isinstance(result, Rejection) and result.reason == reason
    assert net.counters["rejected_" + reason] == 1 and not air.sent
    assert store.get_device(OTAA_EUI).dev_addr is None
    # a rejected request does not burn the DevNonce: the genuine one still joins
    assert isinstance(_join(net, air, 1), JoinGranted)


def test_abp_device_and_garbage_cannot_join(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_abp(store)
    net = network(store, Air())
    phy = join_request(1, dev_eui="70b3d57ed00000b1")
    assert net.handle(frame(phy)).reason == "join_not_otaa"
    assert net.handle(frame(phy[:-1])).reason == "garbage"
    assert net.handle(frame(bytes([0x00]) + bytes(30))).reason == "garbage"


# ------------------------------------------------------------------ through the radio channel


def test_join_then_confirmed_uplink_through_the_simulated_channel(tmp_path: Path) -> None:
    """A CPython node on the simulated channel joins through the agent and gets its ACK."""
    import dataclasses

    from gateway.agent import Agent
    from gateway.config import default_config
    from gateway.keys import generate_signing_key
    from gateway.radio.sim import SimFrontEnd
    from sim.channel import Endpoint, RadioChannel
    from sim.clock import VirtualClock
    from sim.district import District

    clock = VirtualClock(speed=None)
    district = District(clock, tmp_path / "district")
    channel: RadioChannel = district.channel
    cfg = default_config("test-gw", tmp_path / "gw")
    cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, port=1))
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    store = open_store(tmp_path)
    register_otaa(store)
    frontend = SimFrontEnd(cfg.radio, concentrator=district.concentrator, clock=clock)
    agent = Agent(cfg, frontend=frontend, signing_key=key, store=store)

    class NodeRadio(Endpoint):
        """The node's antenna: listens on one channel and SF for inverted-IQ downlinks."""

        name = "otaa-node"
        position = (300.0, 0.0)

        def __init__(self) -> None:
            self.rx: tuple[int, int, int] | None = None
            self.got: list[bytes] = []

        def listening_since(self, tx):
            if self.rx is None or not tx.iq_inverted:
                return None
            freq, sf, since = self.rx
            return since if tx.sf == sf and channel.tunes_to(tx, freq, 125_000) else None

        def deliver(self, rx) -> None:
            self.got.append(rx.payload)

    radio = channel.attach(NodeRadio())
    answered = threading.Event()
    outcome: dict = {}

    def window(p, end_us: int, delay_s: int, freq: int, sf: int) -> bytes | None:
        p.sleep_us(end_us + delay_s * 1_000_000 - 5_000 - clock.now_us())
        radio.rx = (freq, sf, clock.now_us())
        p.sleep_us(400_000)  # long enough for a 33-byte frame at SF9
        radio.rx = None
        return radio.got.pop() if radio.got else None

    def node_main(p) -> None:
        tx = channel.transmit(radio, join_request(1), freq_hz=868_100_000, sf=9)
        p.sleep_us(tx.toa_us)
        assert answered.wait(30), "the agent did not process the join-request"
        answered.clear()
        phy = window(p, tx.end_us, 5, 868_100_000, 9)
        assert phy is not None, "no join-accept in RX1"
        accept = lorawan.open_join_accept(AES, APP_KEY, phy)
        nwk, app = lorawan.derive_session_keys(AES, APP_KEY, accept.join_nonce, accept.net_id, 1)
        node = Node(accept.devaddr, nwk, app)
        p.sleep_us(2_000_000)
        tx = channel.transmit(radio, node.uplink(confirmed=True), freq_hz=868_500_000, sf=7)
        p.sleep_us(tx.toa_us)
        assert answered.wait(30), "the agent did not process the uplink"
        phy = window(p, tx.end_us, 1, 868_500_000, 7)
        assert phy is not None, "no ACK in RX1"
        f, fcnt, _ = node.open(phy)
        outcome.update(ack=f.ack, fcnt=fcnt, devaddr=accept.devaddr)

    errors: list[BaseException] = []
    clock.on_error = lambda part, exc: errors.append(exc)
    holder: list = []
    holder.append(clock.spawn("otaa-node", lambda: node_main(holder[0])))

    async def gateway_side() -> None:
        async with frontend:
            runner = threading.Thread(target=clock.run, kwargs={"until_us": 30_000_000},
                                      daemon=True)
            runner.start()
            for _ in range(2):
                rx = await asyncio.wait_for(frontend.queue.get(), 60)
                await agent.process([rx])
                answered.set()
            await asyncio.to_thread(runner.join, 60)

    try:
        asyncio.run(gateway_side())
    finally:
        clock.stop()
        store.close()
    assert not errors, errors
    assert outcome == {"ack": True, "fcnt": 0, "devaddr": outcome["devaddr"]}
    assert agent.counters["joins"] == 1 and agent.counters["accepted"] == 1
    assert district.concentrator.downlinks_sent == 2
