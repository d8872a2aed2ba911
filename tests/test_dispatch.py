"""The dispatcher: accepted commands stored, sent as confirmed FPort 40 downlinks and followed to
the node's own FPort 30 answer, each change a stored cmd-status record with a growing number.

Real parts: a SQLite store, the network side with a front end that keeps what it is asked to
send, a CPython node that opens the downlinks (MIC, counters, decryption) and decodes the
command; the last test runs the agent's own commit path with the node's answer uplink.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from gateway.agent import Agent
from gateway.commands.dispatch import Dispatcher
from gateway.commands.intake import Rejected
from gateway.commands.model import CommandRow
from gateway.config import default_config
from gateway.counters import Counters
from gateway.keys import generate_signing_key
from gateway.lorawan import DutyCycleBudget, NetworkSide
from gateway.store import Device, Store
from gateway.store.db import FCNT_DOWN_BLOCK
from protocol.payload import COMMAND_FPORT, decode_command, encode_uplink
from tests.test_network_support import (
    ABP_ADDR,
    APP,
    GW,
    NWK,
    Air,
    Clock,
    Node,
    frame,
    open_store,
    uplink_and_reply,
)

LAMP = "70b3d57ed0000c01"  # Class C lighting cabinet
SOIL = "70b3d57ed0000a01"  # Class A soil node
T = 20_000_000


def _register(store: Store, eui: str, role: str, dev_class: str, addr: int) -> Node:
    store.upsert_device(Device(dev_eui=eui, role=role, dev_class=dev_class,
                               dev_addr=f"{addr:08x}", nwk_s_key=NWK, app_s_key=APP))
    return Node(addr, NWK, APP)


def _row(eui: str, action: str, args: dict[str, Any], *, cmd_id: str = "op-1",
         lifetime_s: float = 300.0, group: str | None = None) -> CommandRow:
    now = time.time()
    return CommandRow(cmd_id=cmd_id, kid="0011223344556677", key_name="control-centre",
                      dev_eui=eui, action=action, args=args, issued_at=now,
                      expires_at=now + lifetime_s, group=group, created_at=now,
                      updated_at=now)


class Rig:
    """Store, network side, recording air and dispatcher, as the agent wires them."""

    def __init__(self, tmp: Path, *, answer_timeout_s: float = 3600.0,
                 store: Store | None = None) -> None:
        self.store = store or open_store(tmp)
        self.air = Air()
        self.budget_clock = Clock()
        self.network = NetworkSide(self.store, GW, Counters(),
                                   budget=DutyCycleBudget(self.budget_clock),
                                   transmit=self.air.send)
        self.network.class_c_recheck_s = 0.01
        self.wakes = 0
        self.dispatcher = Dispatcher(self.network, self.store, GW, self.network.counters,
                                     answer_timeout_s=answer_timeout_s, notify=self._wake)

    def _wake(self) -> None:
        self.wakes += 1

    async def until_sent(self, n: int = 1) -> None:
        async with asyncio.timeout(10):
            while len(self.air.sent) < n:
                await asyncio.sleep(0.005)
        await self.dispatcher.idle()

    def statuses(self, eui: str, cmd_id: str = "op-1") -> list[dict[str, Any]]:
        """The stored cmd-status packs of one command on one device, in order, as name ->
        value (plus "rid")."""
        out = []
        for rec in self.store.pending(10_000):
            if rec.kind != "cmd-status" or rec.dev_eui != eui:
                continue
            pack = cbor2.loads(rec.body)
            values = {r[0]: r.get(3, r.get(2)) for r in pack if 0 in r}
            if values.get("cmd") == cmd_id:
                values["rid"] = rec.rid
                out.append(values)
        return out


def test_class_c_command_goes_at_once_and_is_acked_by_the_nodes_answer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)

    async def scenario() -> CommandRow:
        [row] = await rig.dispatcher.submit([_row(LAMP, "dim", {"level": 40, "ramp_s": 2})])
        await rig.until_sent()
        assert row.node_seq is not None
        await rig.dispatcher.on_answer(LAMP, row.node_seq, "done")
        await rig.dispatcher.idle()
        await rig.dispatcher.aclose()
        return row

    row = asyncio.run(scenario())
    [tx] = rig.air.sent
    f, fcnt, clear = node.open(tx.phy)
    assert f.fport == COMMAND_FPORT and f.mtype == 5  # confirmed data down
    assert decode_command(clear) == {"cmd": "dim", "seq": row.node_seq, "level": 40, "ramp_s": 2}
    got = rig.statuses(LAMP)
    assert [s["status"] for s in got] == ["accepted", "queued", "sent", "acked"]
    assert [s["rid"] for s in got] == [f"{GW}:{LAMP}:cmd:0011223344556677:op-1:{n}" for n in range(4)]
    assert got[2]["fcnt_down"] == fcnt and got[2]["attempts"] == 1
    assert got[3]["answer"] == "done" and all(s["key"] == "control-centre" for s in got)
    [stored] = rig.store.get_commands("op-1")
    assert (stored.status, stored.answer, stored.status_n) == ("acked", "done", 3)
    assert rig.wakes >= 2, "the forwarder is woken for the statuses"


def test_a_node_that_refuses_fails_the_command_with_its_own_answer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)

    async def scenario() -> None:
        [row] = await rig.dispatcher.submit([_row(LAMP, "switch", {"on": True})])
        await rig.until_sent()
        await rig.dispatcher.on_answer(LAMP, row.node_seq or 0, "busy")
        await rig.dispatcher.on_answer(LAMP, row.node_seq or 0, "done")  # too late: final
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    last = rig.statuses(LAMP)[-1]
    assert (last["status"], last["reason"], last["answer"]) == ("failed", "refused", "busy")
    assert rig.network.counters["command_answer_unmatched"] == 1


def test_class_a_command_waits_for_the_next_uplink(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = _register(rig.store, SOIL, "soil", "A", ABP_ADDR)

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(SOIL, "valve_open", {"seconds": 120})])
        await asyncio.sleep(0.05)
        await rig.dispatcher.idle()
        assert [s["status"] for s in rig.statuses(SOIL)] == ["accepted", "queued"]
        assert not rig.air.sent
        await uplink_and_reply(rig.network, frame(node.uplink(), tmst_us=T))
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    [tx] = rig.air.sent
    assert tx.tmst_us == T + 1_000_000  # RX1 of that uplink
    assert decode_command(node.open(tx.phy)[2])["cmd"] == "valve_open"
    assert [s["status"] for s in rig.statuses(SOIL)] == ["accepted", "queued", "sent"]


def test_command_not_sent_before_its_expiry_is_taken_back_and_expired(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = _register(rig.store, SOIL, "soil", "A", ABP_ADDR)
    rig.dispatcher.clock = lambda: time.time() + 59.5  # the command has half a second left

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(SOIL, "valve_close", {}, lifetime_s=60)])
        await rig.dispatcher.idle()
        assert [s["status"] for s in rig.statuses(SOIL)] == ["accepted", "queued"]
        await asyncio.sleep(0.8)
        await uplink_and_reply(rig.network, frame(node.uplink(), tmst_us=T))
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    assert [s["status"] for s in rig.statuses(SOIL)] == ["accepted", "queued", "expired"]
    assert not rig.air.sent, "never sent"
    assert not rig.network.queued(SOIL)


def test_sent_command_without_an_answer_fails_with_no_answer(tmp_path: Path) -> None:
    rig = Rig(tmp_path, answer_timeout_s=0.1)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(LAMP, "reboot", {})])
        await rig.until_sent()
        await asyncio.sleep(0.3)
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    last = rig.statuses(LAMP)[-1]
    assert (last["status"], last["reason"]) == ("failed", "no_answer")


def test_budget_delay_is_published_as_queued_with_reason_duty_cycle(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)
    rig.network.budget.spend(869_525_000, 360.0)

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(LAMP, "dim", {"level": 10})])
        async with asyncio.timeout(10):
            while rig.network.counters["downlink_dutycycle_wait"] == 0:
                await asyncio.sleep(0.005)
        await rig.dispatcher.idle()
        await rig.network.aclose()

    asyncio.run(scenario())
    got = rig.statuses(LAMP)
    assert [(s["status"], s.get("reason")) for s in got] == [
        ("accepted", None), ("queued", None), ("queued", "duty_cycle")]


def test_radio_failures_fail_the_command_with_the_radios_reason(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)
    rig.network.class_c_retry_s = 0.01
    rig.air.refuse = {None}  # the front end refuses every immediate transmission

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(LAMP, "dim", {"level": 10})])
        async with asyncio.timeout(10):
            while rig.network.counters["downlink_failed"] == 0:
                await asyncio.sleep(0.005)
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    last = rig.statuses(LAMP)[-1]
    assert (last["status"], last["reason"]) == ("failed", "not_delivered")
    assert "did not transmit" in last["detail"]


def test_gateway_local_actions_are_acked_by_their_handler(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, SOIL, "soil", "A", ABP_ADDR)
    paused: list[tuple[str, int]] = []

    def pause(row: CommandRow) -> str:
        paused.append((row.dev_eui, row.args["hours"]))
        return "done"

    rig.dispatcher.local_handler("rules_pause", pause)
    with pytest.raises(ValueError, match="not a gateway-local"):
        rig.dispatcher.local_handler("dim", pause)

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(SOIL, "rules_pause", {"hours": 6})])
        await rig.dispatcher.submit([_row(SOIL, "rules_resume", {}, cmd_id="op-2")])
        await rig.dispatcher.idle()

    asyncio.run(scenario())
    assert paused == [(SOIL, 6)]
    assert [(s["status"], s.get("answer")) for s in rig.statuses(SOIL)] == [
        ("accepted", None), ("acked", "done")]
    assert [(s["status"], s.get("reason")) for s in rig.statuses(SOIL, "op-2")] == [
        ("accepted", None), ("failed", "not_supported")]  # no handler registered
    assert not rig.air.sent


def test_rejection_is_stored_on_the_topics_target(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def scenario() -> None:
        await rig.dispatcher.reject(Rejected("bad_signature", "signature does not verify",
                                             "op-9", "rue-de-la-republique"))

    asyncio.run(scenario())
    [rec] = [r for r in rig.store.pending(100) if r.kind == "cmd-status"]
    values = {r[0]: r.get(3) for r in cbor2.loads(rec.body) if 0 in r}
    assert rec.dev_eui == "rue-de-la-republique"
    assert (values["status"], values["reason"], values["cmd"]) == ("rejected", "bad_signature",
                                                                    "op-9")


def test_open_commands_are_resumed_after_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = _register(rig.store, SOIL, "soil", "A", ABP_ADDR)

    async def before() -> None:
        await rig.dispatcher.submit([_row(SOIL, "valve_open", {"seconds": 60})])
        await rig.dispatcher.aclose()

    asyncio.run(before())
    again = Rig(tmp_path, store=rig.store)  # the agent restarts: new network side, dispatcher

    async def after() -> int:
        n = await again.dispatcher.resume()
        await uplink_and_reply(again.network, frame(node.uplink(), tmst_us=T))
        await again.dispatcher.idle()
        return n

    assert asyncio.run(after()) == 1
    [tx] = again.air.sent
    assert decode_command(node.open(tx.phy)[2])["seconds"] == 60
    got = again.statuses(SOIL)
    assert [s["status"] for s in got] == ["accepted", "queued", "sent"]
    assert got[-1]["rid"].endswith(":2"), "numbering continues from the stored row"


def test_accepted_calendar_is_saved_and_sent_again_when_the_node_rejoins(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    node = _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)
    points = [{"ref": "dusk", "minutes": 0, "level": 100},
              {"ref": "clock", "minutes": 1380, "level": 40}]

    async def scenario() -> CommandRow | None:
        [row] = await rig.dispatcher.submit([_row(LAMP, "calendar", {"points": points})])
        await rig.until_sent()
        # its answer uplink also carries the ACK of the confirmed downlink
        _port, answer = encode_uplink("ack", {"cmd_seq": row.node_seq, "cmd_result": "done"})
        await uplink_and_reply(rig.network, frame(node.uplink(30, answer, ack=True), tmst_us=T))
        await rig.dispatcher.on_answer(LAMP, row.node_seq or 0, "done")
        await rig.dispatcher.idle()
        resend = await rig.dispatcher.on_join(LAMP)
        await rig.until_sent(2)
        return resend

    resend = asyncio.run(scenario())
    assert rig.store.calendar(LAMP) == points
    assert resend is not None and resend.cmd_id == "calendar-resend-1"
    assert resend.key_name == "gateway"
    first, second = (decode_command(node.open(tx.phy)[2]) for tx in rig.air.sent)
    assert first["cmd"] == second["cmd"] == "calendar" and second["seq"] == first["seq"] + 1
    assert [p["level"] for p in second["points"]] == [100, 40]
    assert [s["status"] for s in rig.statuses(LAMP, "calendar-resend-1")] == [
        "accepted", "queued", "sent"]


def test_no_calendar_no_resend(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)
    assert asyncio.run(rig.dispatcher.on_join(LAMP)) is None
    assert not rig.air.sent


def test_agent_hands_the_nodes_answer_uplink_to_the_dispatcher(tmp_path: Path) -> None:
    config = default_config("test-gw", tmp_path / "gw")
    store = Store.open(config.store.path)
    node = _register(store, SOIL, "soil", "A", ABP_ADDR)
    air = Air()

    class FrontEnd:
        queue: asyncio.Queue[Any]
        send = air.send

    agent = Agent(config, frontend=FrontEnd(),
                  signing_key=generate_signing_key(Path(config.gateway.signing_key)),
                  store=store)

    async def scenario() -> None:
        [row] = await agent.dispatcher.submit([_row(SOIL, "valve_open", {"seconds": 30})])
        await agent.process([frame(node.uplink(), tmst_us=T)])  # the command goes in RX1
        cmd = decode_command(node.open(air.sent[0].phy)[2])
        assert cmd["seq"] == row.node_seq
        _port, answer = encode_uplink("ack", {"cmd_seq": cmd["seq"], "cmd_result": "done"})
        await agent.process([frame(node.uplink(30, answer, ack=True), tmst_us=2 * T)])
        await agent.dispatcher.idle()
        await agent.dispatcher.aclose()

    try:
        asyncio.run(scenario())
        [stored] = store.get_commands("op-1")
    finally:
        store.close()
    assert (stored.status, stored.answer) == ("acked", "done")


def test_the_same_command_submitted_twice_at_once_is_sent_once_and_rejected_once(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    _register(rig.store, LAMP, "lighting", "C", ABP_ADDR)
    row = _row(LAMP, "dim", {"level": 40})
    admit = (row.kid, row.cmd_id, row.expires_at + 60)

    async def scenario() -> list[list[CommandRow]]:
        results = await asyncio.gather(*(rig.dispatcher.submit([_row(LAMP, "dim", {"level": 40})],
                                                               admit=admit) for _ in range(2)))
        await rig.until_sent()
        await rig.dispatcher.aclose()
        return list(results)

    results = asyncio.run(scenario())
    assert sorted(len(r) for r in results) == [0, 1]
    assert len(rig.air.sent) == 1 and len(rig.store.get_commands("op-1")) == 1
    got = [(s["status"], s.get("reason")) for s in rig.statuses(LAMP)]
    assert ("rejected", "replay") in got and got.count(("accepted", None)) == 1
    assert rig.dispatcher.counters["command_rejected_replay"] == 1


def test_a_rejection_after_the_replay_check_spends_the_id_with_its_status(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    admit = ("0011223344556677", "op-3", time.time() + 600)

    async def scenario() -> list[CommandRow]:
        await rig.dispatcher.reject(Rejected("out_of_bounds", "level 101 not in 0..100", "op-3",
                                             LAMP, admit[0], "control-centre", "dim", admit))
        return await rig.dispatcher.submit([_row(LAMP, "dim", {"level": 40}, cmd_id="op-3")],
                                           admit=admit)

    assert asyncio.run(scenario()) == []
    assert rig.store.command_id_seen(admit[0], "op-3")
    assert [(s["status"], s["reason"]) for s in rig.statuses(LAMP, "op-3")] == [
        ("rejected", "out_of_bounds"), ("rejected", "replay")]


def test_class_c_counters_are_reserved_when_the_network_starts_not_per_command(
        tmp_path: Path) -> None:
    store = open_store(tmp_path)
    node = _register(store, LAMP, "lighting", "C", ABP_ADDR)
    rig = Rig(tmp_path, store=store)
    assert store.get_device(LAMP).fcnt_down == FCNT_DOWN_BLOCK  # before any command

    async def scenario() -> None:
        await rig.dispatcher.submit([_row(LAMP, "reboot", {})])
        await rig.until_sent()
        await rig.dispatcher.aclose()
        await rig.network.aclose()

    asyncio.run(scenario())
    [tx] = rig.air.sent
    assert node.open(tx.phy)[1] == 0
    assert store.get_device(LAMP).fcnt_down == FCNT_DOWN_BLOCK  # no commit of its own
    assert store.fcnt_down_left(LAMP) == FCNT_DOWN_BLOCK - 1
