"""Class C timing: a Class C device is deaf around its own uplinks (it transmits, then runs its
RX1 and RX2 windows, and repeats NbTrans times when nothing answered), so a downlink queued then
is timed, in the front end's own clock, for when it listens again; replies in its windows keep
their lower frame counters on the air first. The last test runs the real lighting firmware in
the simulated district: a dim queued just after the cabinet's uplink reaches it and is obeyed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from gateway.agent import Agent
from gateway.config import default_config
from gateway.counters import Counters
from gateway.keys import generate_signing_key
from gateway.lorawan import DutyCycleBudget, NetworkSide
from gateway.lorawan.downlink import class_c_window, rx_window_us
from gateway.lorawan.mac import MacState
from gateway.radio import RxFrame, TxRequest
from gateway.radio.sim import SimFrontEnd
from gateway.store import Device, Store
from protocol import lorawan
from protocol.airtime import time_on_air_us
from protocol.payload import COMMAND_FPORT, encode_command
from sim.clock import VirtualClock
from sim.district import District, random_node
from tests.test_network_support import (
    ABP_EUI,
    APP,
    GW,
    NWK,
    Air,
    Clock,
    Node,
    frame,
    open_store,
    register_abp,
    uplink_and_reply,
)

T = 20_000_000  # the uplink's concentrator timestamp (µs, end of reception)
RX2_CLOSED_US = 2_000_000 + rx_window_us(0)  # RX2 (DR0) opens 2 s after the uplink ended


def _net(store: Store, air: Air, front: Clock, **kw: Any) -> NetworkSide:
    return NetworkSide(store, GW, Counters(), budget=DutyCycleBudget(Clock()),
                       transmit=air.send, clock=front, **kw)


def _heard(node: Node, front: Clock, tmst_us: int = T, **kw: Any) -> RxFrame:
    """An uplink as the front end reports it, received now on the front end's clock."""
    return dataclasses.replace(frame(node.uplink(**kw), tmst_us=tmst_us), received_at=front.t)


async def _sent(handle: Any) -> str:
    return await asyncio.wait_for(handle.wait("sent"), 10)


def test_downlink_queued_just_after_an_uplink_goes_once_both_windows_have_closed(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    air, front = Air(), Clock()
    net = _net(store, air, front)

    async def scenario() -> None:
        await uplink_and_reply(net, _heard(node, front))
        front.t += 0.3  # 300 ms after the uplink: the device waits for its RX1
        assert await _sent(net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x22")) == "sent"

    asyncio.run(scenario())
    [tx] = air.sent
    assert tx.tmst_us is not None, "timed on the concentrator's clock, not 'at once'"
    assert T + RX2_CLOSED_US < tx.tmst_us < T + RX2_CLOSED_US + 500_000
    assert (tx.freq_hz, tx.sf) == (869_525_000, 12)
    assert node.open(tx.phy)[2] == b"\x22"
    assert net.counters["downlink_class_c_held"] == 1


def test_the_wait_follows_the_devices_rx_delay(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C", mac_state={"rx_delay_s": 5})
    air, front = Air(), Clock()
    net = _net(store, air, front)

    async def scenario() -> None:
        await uplink_and_reply(net, _heard(node, front))
        front.t += 1.0
        await _sent(net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x01"))

    asyncio.run(scenario())
    [tx] = air.sent
    assert tx.tmst_us is not None and tx.tmst_us > T + 4_000_000 + RX2_CLOSED_US


def test_downlink_queued_once_the_device_listens_again_goes_at_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    air, front = Air(), Clock()
    net = _net(store, air, front)

    async def scenario() -> None:
        await uplink_and_reply(net, _heard(node, front))
        front.t += 5.0  # its windows are long over
        await _sent(net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x01"))

    asyncio.run(scenario())
    assert [tx.tmst_us for tx in air.sent] == [None]
    assert net.counters["downlink_class_c_held"] == 0


def test_nb_trans_repetitions_are_waited_out(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C", mac_state={"nb_trans": 3})
    air, front = Air(), Clock()
    net = _net(store, air, front)
    rx = _heard(node, front)

    async def scenario() -> None:
        await uplink_and_reply(net, rx)
        await _sent(net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x01"))

    asyncio.run(scenario())
    [tx] = air.sent
    toa = time_on_air_us(len(rx.phy), 7, 125_000, 1, 8, True, True)
    # two more transmissions, each followed by its own RX1 and RX2
    assert tx.tmst_us is not None and tx.tmst_us > T + 3 * RX2_CLOSED_US + 2 * toa


def test_reply_in_rx1_goes_first_and_the_class_c_payload_after_it_with_a_higher_fcnt(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    air, front = Air(), Clock()
    net = _net(store, air, front)

    async def scenario() -> tuple[str, str]:
        first = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x01", confirmed=True)
        await _sent(first)
        second = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x02")  # waits for first's ACK
        await asyncio.sleep(0.05)
        assert len(air.sent) == 1
        front.t += 10.0
        # a confirmed uplink that acknowledges the first: its ACK goes in RX1
        await uplink_and_reply(net, _heard(node, front, confirmed=True, ack=True))
        return await asyncio.wait_for(first.wait(), 10), await _sent(second)

    assert asyncio.run(scenario()) == ("acked", "sent")
    c1, ack, c2 = air.sent
    assert c1.tmst_us is None and ack.tmst_us == T + 1_000_000
    assert c2.tmst_us is not None and c2.tmst_us > T + RX2_CLOSED_US
    counters = [node.open(tx.phy)[1] for tx in (c1, ack, c2)]  # opening checks they grow
    assert counters == [0, 1, 2]
    assert node.received[1].ack and node.received[2].fport == COMMAND_FPORT


def test_downlinks_to_several_class_c_devices_follow_each_other_on_the_transmitter(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    others = [f"70b3d57ed00000c{i}" for i in range(2)]
    for i, eui in enumerate(others):
        store.upsert_device(Device(dev_eui=eui, role="lighting", dev_class="C",
                                   dev_addr=f"{0x260B00C0 + i:08x}", nwk_s_key=NWK,
                                   app_s_key=APP))
    air, front = Air(), Clock()
    net = _net(store, air, front)

    async def scenario() -> None:
        await uplink_and_reply(net, _heard(node, front))  # the concentrator's clock, known
        front.t += 10.0
        handles = [net.queue_downlink(eui, COMMAND_FPORT, bytes(20))
                   for eui in (ABP_EUI, *others)]  # a street dimmed at once
        for handle in handles:
            await _sent(handle)

    asyncio.run(scenario())
    now = T + 10_000_000
    first, *rest = air.sent
    assert first.tmst_us is None, "the first goes at once"
    end = now + class_c_window(MacState()).airtime_us(len(first.phy))
    for tx in rest:  # each booked after the previous one's last symbol
        assert tx.tmst_us is not None and tx.tmst_us >= end
        end = tx.tmst_us + class_c_window(MacState()).airtime_us(len(tx.phy))


def test_a_queued_downlink_can_be_taken_back_before_it_is_sent(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)  # Class A: it waits for the next uplink
    air, front = Air(), Clock()
    net = _net(store, air, front)
    seen: list[tuple[str, str | None]] = []

    async def scenario() -> None:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x07", confirmed=True)
        handle.on_change(lambda h: seen.append((h.status, h.reason)))
        assert net.cancel_downlink(handle, "expired")
        assert not net.cancel_downlink(handle, "expired")  # already gone
        await uplink_and_reply(net, _heard(node, front))
        later = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x08")
        await uplink_and_reply(net, _heard(node, front, tmst_us=2 * T))
        assert later.status == "sent" and not net.cancel_downlink(later, "expired")

    asyncio.run(scenario())
    assert seen == [("failed", "expired")]
    assert [node.open(tx.phy)[2] for tx in air.sent] == [b"\x08"], "the cancelled one never went"
    assert net.counters["downlink_cancelled"] == 1


def test_a_class_c_downlink_delayed_by_the_duty_cycle_says_so_once(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    register_abp(store, dev_class="C")
    air, budget_clock = Air(), Clock()
    net = NetworkSide(store, GW, Counters(), budget=DutyCycleBudget(budget_clock),
                      transmit=air.send)
    net.class_c_recheck_s = 0.01
    net.budget.spend(869_525_000, 360.0)
    seen: list[tuple[str, str | None]] = []

    async def scenario() -> None:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x05")
        handle.on_change(lambda h: seen.append((h.status, h.reason)))
        while net.counters["downlink_dutycycle_wait"] < 3:
            await asyncio.sleep(0.01)
        budget_clock.t += 3600.0
        await _sent(handle)

    asyncio.run(scenario())
    assert seen == [("queued", "duty_cycle"), ("sent", None)]


def test_class_a_payload_deferred_by_the_budget_is_reported_as_duty_cycle(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air, budget_clock = Air(), Clock()
    net = NetworkSide(store, GW, Counters(), budget=DutyCycleBudget(budget_clock),
                      transmit=air.send)
    for freq in (868_100_000, 869_525_000):  # RX1's and RX2's sub-bands both spent
        net.budget.spend(freq, 3600.0)

    async def scenario() -> tuple[str, str | None]:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x05")
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=T))
        return handle.status, handle.reason

    assert asyncio.run(scenario()) == ("queued", "duty_cycle")
    assert not air.sent


# ------------------------------------------------------------------ the real firmware


def test_lighting_firmware_obeys_a_dim_queued_just_after_its_uplink(tmp_path: Path) -> None:
    clock = VirtualClock(speed=None)
    district = District(clock, tmp_path / "district")
    spec = random_node(4, role="lighting", interval_s=600)
    cabinet = district.add_node(spec)
    config = default_config("timing-gw", tmp_path / "gw")
    store = Store.open(config.store.path)
    district.register(store)
    frontend = SimFrontEnd(config.radio, concentrator=district.concentrator, clock=clock)
    agent = Agent(config, frontend=frontend,
                  signing_key=generate_signing_key(Path(config.gateway.signing_key)), store=store)
    sent: list[tuple[TxRequest, int]] = []
    heard: list[int] = []  # end of each of the cabinet's uplinks (concentrator µs)
    transmit = agent.network.transmit
    assert transmit is not None

    async def recording(tx: TxRequest) -> Any:
        sent.append((tx, clock.now_us()))
        return await transmit(tx)

    agent.network.transmit = recording
    dim: dict[str, Any] = {}
    original = agent.process

    async def process(frames: list[RxFrame]) -> int:
        heard.extend(f.tmst_us for f in frames)
        n = await original(frames)
        if "handle" not in dim and store.get_device(spec.dev_eui).fcnt_up >= 1:
            # queued the moment the gateway has handled the cabinet's first reading (after its
            # boot health report it goes straight to that reading), virtual time held
            dim["at_us"] = clock.now_us()
            dim["handle"] = handle = agent.network.queue_downlink(
                spec.dev_eui, COMMAND_FPORT,
                encode_command({"cmd": "dim", "seq": 5, "level": 40, "ramp_s": 0}))

            def hand_over() -> None:  # scheduler thread: the gateway's work takes no virtual time
                for _ in range(1000):
                    if handle.status != "queued":
                        return
                    time.sleep(0.005)

            clock.call_later(0, hand_over)
        return n

    agent.process = process  # type: ignore[method-assign]
    district.pace_agent(agent)

    async def scenario() -> None:
        async with frontend:
            runner = asyncio.get_running_loop().run_in_executor(
                None, lambda: clock.run(until_us=60_000_000, raise_errors=False))
            try:
                while not runner.done():
                    try:
                        frames = [await asyncio.wait_for(frontend.queue.get(), 0.2)]
                    except TimeoutError:
                        continue
                    await agent.process(frames)
            finally:
                clock.stop()
                await runner

    district.start()
    try:
        asyncio.run(scenario())
        answers = [_values(r.body) for r in store.pending(1000)]
    finally:
        clock.stop()
        district.stop()
        store.close()
    assert "handle" in dim, "the cabinet's uplink never reached the gateway"
    handle = dim["handle"]
    assert handle.status == "sent"
    [(tx, handed_at)] = [(tx, at) for tx, at in sent
                         if lorawan.parse_frame(tx.phy).fport == COMMAND_FPORT]
    uplink_end = max(t for t in heard if t <= dim["at_us"])
    assert handed_at == dim["at_us"], "handed to the concentrator at once, timed"
    assert tx.tmst_us is not None and tx.tmst_us > uplink_end + RX2_CLOSED_US
    # the node got it in continuous reception, obeyed, and answered on FPort 30
    lamps = cabinet.models["lamps"]
    assert lamps()[0] == pytest.approx(0.4 * lamps.full_a, rel=0.1), "lamps at 40 %"
    assert {"cmd_seq": 5, "cmd_result": "done"} in [
        {k: v for k, v in a.items() if k.startswith("cmd_")} for a in answers]


def _values(body: bytes) -> dict[str, Any]:
    """SenML values by name of a stored record's CBOR pack."""
    return {r[0]: r.get(2, r.get(3, r.get(4))) for r in cbor2.loads(body) if 0 in r}
