"""Downlinks: ACKs and payloads in RX1/RX2 at the right concentrator time, Class C at once,
confirmed downlinks followed to their ACK, frame counters never reused, retransmissions."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.lorawan import DownlinkError, Rejection
from gateway.store import Accepted, Device
from gateway.store.db import FCNT_DOWN_BLOCK
from protocol import lorawan
from protocol.payload import COMMAND_FPORT
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

T = 20_000_000  # the uplink's concentrator timestamp


def test_confirmed_uplink_is_acked_in_rx1_one_second_later_same_channel_and_dr(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T,
                                            freq_hz=868_300_000, sf=8)))
    [tx] = air.sent
    assert (tx.tmst_us, tx.freq_hz, tx.sf, tx.bw_khz, tx.iq_inverted) == (
        T + 1_000_000, 868_300_000, 8, 125, True)
    f, fcnt, _ = node.open(tx.phy)
    assert f.ack and fcnt == 0 and f.mtype == lorawan.MTYPE_UNCONFIRMED_DOWN
    assert net.counters["downlink_ack_sent"] == 1 and net.counters["downlink_rx1"] == 1


def test_unconfirmed_uplink_with_nothing_to_say_gets_no_downlink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(), tmst_us=T)))
    assert air.sent == [] and net.counters["downlinks_sent"] == 0


def test_rx1_dr_offset_lowers_the_rx1_data_rate(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, mac_state={"rx1_dr_offset": 2})
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T, sf=7)))
    assert air.sent[0].sf == 9  # DR5 - 2 = DR3 = SF9


def test_rx2_is_used_when_rx1_cannot_be_sent(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    air.refuse.add(T + 1_000_000)
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T)))
    [tx] = air.sent
    assert (tx.tmst_us, tx.freq_hz, tx.sf) == (T + 2_000_000, 869_525_000, 12)
    assert net.counters["downlink_tx_error_rx1"] == 1 and net.counters["downlink_rx2"] == 1
    assert node.open(tx.phy)[0].ack


def test_queued_command_goes_after_the_next_uplink_encrypted_with_the_app_s_key(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)

    async def scenario() -> list[str]:
        seen: list[str] = []
        handle = net.queue_downlink(ABP_EUI.upper(), COMMAND_FPORT, b"\x01\x02\x03")
        handle.on_change(lambda h: seen.append(h.status))
        assert handle.status == "queued" and not air.sent  # Class A: waits for an uplink
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=T))
        assert await handle.wait() == "sent" and handle.done
        assert handle.fcnt_down == 0 and handle.attempts == 1
        return seen

    assert asyncio.run(scenario()) == ["sent"]
    f, _fcnt, clear = node.open(air.sent[0].phy)
    assert (f.fport, clear, f.fpending) == (COMMAND_FPORT, b"\x01\x02\x03", False)
    assert net.queued(ABP_EUI) == []


def test_fpending_is_set_while_more_downlinks_wait(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)

    async def scenario() -> None:
        net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"a")
        net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"b")
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=T))
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=2 * T))

    asyncio.run(scenario())
    first, second = (node.open(tx.phy) for tx in air.sent)
    assert (first[2], first[0].fpending) == (b"a", True)
    assert (second[2], second[0].fpending) == (b"b", False)


def test_confirmed_downlink_is_acked_by_the_next_uplink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)

    async def scenario() -> str:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x10", confirmed=True)
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=T))
        assert handle.status == "sent" and not handle.done
        waiter = asyncio.create_task(handle.wait())
        await uplink_and_reply(net, frame(node.uplink(ack=True), tmst_us=2 * T))
        return await waiter

    assert asyncio.run(scenario()) == "acked"
    assert node.open(air.sent[0].phy)[0].mtype == lorawan.MTYPE_CONFIRMED_DOWN
    assert net.counters["downlink_acked"] == 1


def test_unacked_confirmed_downlink_is_resent_with_a_new_counter_then_failed(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)

    async def scenario():
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x10", confirmed=True)
        for i in range(4):
            await uplink_and_reply(net, frame(node.uplink(), tmst_us=(i + 1) * T))
        return handle

    handle = asyncio.run(scenario())
    assert handle.status == "failed" and "no acknowledgement after 3" in handle.reason
    counters = [node.open(tx.phy)[1] for tx in air.sent]
    assert counters == [0, 1, 2]  # every attempt its own FCnt
    assert net.counters["downlink_retry"] == 2 and net.counters["downlink_failed"] == 1


def test_class_c_downlink_goes_at_once_on_the_rx2_parameters(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    air = Air()
    net = network(store, air)

    async def scenario() -> str:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x22")
        return await asyncio.wait_for(handle.wait(), 30)

    assert asyncio.run(scenario()) == "sent"
    [tx] = air.sent
    assert (tx.tmst_us, tx.freq_hz, tx.sf) == (None, 869_525_000, 12)
    assert node.open(tx.phy)[2] == b"\x22"


def test_class_c_confirmed_downlink_is_acked_by_the_next_uplink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C", mac_state={"rx2_dr": 3})
    air = Air()
    net = network(store, air)

    async def scenario() -> str:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x22", confirmed=True)
        assert await asyncio.wait_for(handle.wait("sent"), 30) == "sent"
        await uplink_and_reply(net, frame(node.uplink(ack=True), tmst_us=T))
        return await asyncio.wait_for(handle.wait(), 30)

    assert asyncio.run(scenario()) == "acked"
    assert air.sent[0].sf == 9  # RX2 DR3 set for this device


def test_downlink_counter_is_never_reused_across_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    for i in range(3):
        asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True),
                                                tmst_us=(i + 1) * T)))
    air.refuse = {4 * T + 1_000_000, 4 * T + 2_000_000}  # both windows fail: counter spent
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=4 * T)))
    store.close()

    store = open_store(tmp_path)  # the agent restarts: from the high-water mark
    assert store.get_device(ABP_EUI).fcnt_down == FCNT_DOWN_BLOCK
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=5 * T)))
    counters = [lorawan.parse_frame(tx.phy).fcnt16 for tx in air.sent]
    assert counters == [0, 1, 2, FCNT_DOWN_BLOCK]


_RESERVE_THEN_DIE = """
import os, signal, sys
from gateway.store import Store
store = Store.open(sys.argv[1])
for _ in range(int(sys.argv[3])):
    print(store.reserve_fcnt_down(sys.argv[2]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_downlink_counter_is_never_reused_after_a_kill_in_the_middle_of_a_block(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    path = str(store.path)
    store.close()
    used: list[int] = []
    for count in (5, FCNT_DOWN_BLOCK + 3):  # killed inside the first block, then the second
        child = subprocess.run([sys.executable, "-c", _RESERVE_THEN_DIE, path, ABP_EUI,
                                str(count)], capture_output=True, text=True, timeout=60,
                               cwd=Path(__file__).resolve().parent.parent, check=False)
        assert child.returncode == -signal.SIGKILL, child.stderr
        used += [int(line) for line in child.stdout.split()]
    assert used[:6] == [0, 1, 2, 3, 4, FCNT_DOWN_BLOCK]  # the rest of the first block skipped
    assert len(used) == 5 + FCNT_DOWN_BLOCK + 3

    store = open_store(tmp_path)  # the agent after the second kill
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T)))
    [tx] = air.sent
    assert lorawan.parse_frame(tx.phy).fcnt16 > max(used)
    assert len(set(used)) == len(used) and used == sorted(used)


def test_retransmitted_confirmed_uplink_is_not_stored_again_but_acked_again(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    phy = node.uplink(confirmed=True)
    first = asyncio.run(uplink_and_reply(net, frame(phy, tmst_us=T)))
    again = asyncio.run(uplink_and_reply(net, frame(phy, tmst_us=3 * T)))
    assert isinstance(first, Accepted)
    assert isinstance(again, Rejection) and again.reason == "retransmission"
    assert store.count() == 1
    assert [tx.tmst_us for tx in air.sent] == [T + 1_000_000, 3 * T + 1_000_000]
    assert all(node.open(tx.phy)[0].ack for tx in air.sent)
    assert net.counters["retransmission_acked"] == 1


def test_same_counter_with_other_content_is_a_replay(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    net = network(store, air)
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T)))
    other = node.uplink(10, b"\x00", confirmed=True, fcnt=0)
    result = asyncio.run(uplink_and_reply(net, frame(other, tmst_us=2 * T)))
    assert result.reason == "replay" and len(air.sent) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("ffffffffffffffff", 40, b"x"), "not registered"),
    ((ABP_EUI, 0, b"x"), "application ports are 1..223"),
    ((ABP_EUI, 224, b"x"), "application ports are 1..223"),
    ((ABP_EUI, 40, bytes(243)), "at most 242"),
    ((ABP_EUI, 40, "text"), "must be bytes"),
])
def test_bad_downlink_requests_raise_a_specific_error(tmp_path: Path, args: tuple,
                                                       message: str) -> None:
    store = open_store(tmp_path)
    register_abp(store)
    net = network(store, Air())
    with pytest.raises(DownlinkError, match=message):
        net.queue_downlink(*args)


def test_device_without_a_session_cannot_get_a_downlink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.upsert_device(Device(dev_eui="70b3d57ed00000c1", role="air", app_key=bytes(16)))
    net = network(store, Air())
    with pytest.raises(DownlinkError, match="no session"):
        net.queue_downlink("70b3d57ed00000c1", 40, b"x")


# ------------------------------------------------------------------ duty-cycle budget


def test_exhausted_rx1_sub_band_falls_back_to_rx2_and_is_counted(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    clock = Clock()
    net = network(store, air, clock)
    net.budget.spend(868_100_000, 36.0)  # g1 (1 %): its 36 s of this hour are used up
    asyncio.run(uplink_and_reply(net, frame(node.uplink(confirmed=True), tmst_us=T)))
    [tx] = air.sent
    assert tx.freq_hz == 869_525_000 and tx.tmst_us == T + 2_000_000
    assert net.counters["downlink_dutycycle_rx1"] == 1


def test_no_window_within_budget_defers_the_payload_to_the_next_uplink(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store)
    air = Air()
    clock = Clock()
    net = network(store, air, clock)
    net.budget.spend(868_100_000, 36.0)
    net.budget.spend(869_525_000, 360.0)  # g3 (10 %) used up too

    async def scenario():
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x01")
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=T))
        assert handle.status == "queued" and not air.sent
        assert net.counters["downlink_deferred"] == 1
        clock.t += 3600.0  # an hour later the budget is back
        await uplink_and_reply(net, frame(node.uplink(), tmst_us=2 * T))
        return handle

    assert asyncio.run(scenario()).status == "sent"
    assert air.sent[0].tmst_us == 2 * T + 1_000_000


def test_class_c_downlink_waits_for_the_budget_then_goes(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = register_abp(store, dev_class="C")
    air = Air()
    clock = Clock()
    net = network(store, air, clock)
    net.class_c_recheck_s = 0.01
    net.budget.spend(869_525_000, 360.0)

    async def scenario() -> str:
        handle = net.queue_downlink(ABP_EUI, COMMAND_FPORT, b"\x05")
        while net.counters["downlink_dutycycle_wait"] == 0:
            await asyncio.sleep(0.01)
        assert handle.status == "queued" and not air.sent
        clock.t += 3600.0
        return await asyncio.wait_for(handle.wait(), 30)

    assert asyncio.run(scenario()) == "sent"
    assert node.open(air.sent[0].phy)[2] == b"\x05"
    assert net.budget.used_s(869_525_000) > 0
