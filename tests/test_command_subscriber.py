"""Commands in through a real Mosquitto: the agent subscribes on every connection, checks each
command and publishes its statuses, signed; bad messages never stop it; a retained command
delivered again after a reconnection is refused as a replay."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self

import aiomqtt
import cbor2
import pytest

from cityedge.hypervisor.command import build_command, sign_command
from gateway.agent import Agent
from gateway.commands.subscriber import CommandSubscriber
from gateway.config import CommandsConfig, TrustedKey, default_config
from gateway.keys import SigningKey, generate_signing_key
from gateway.store import Device, Store
from gateway.uplink.cose import verify1
from tests.test_network_support import ABP_ADDR, APP, NWK, Air

pytestmark = pytest.mark.broker

LAMP = "70b3d57ed0000c01"
PREFIX = "cityedge/v1/test-gw"


class Radio:
    """A front end that hears nothing and keeps what it is asked to transmit."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.air = Air()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, tx: Any) -> None:
        await self.air.send(tx)


class Gateway:
    """An agent with one trusted operator key, a group and a Class C lighting cabinet."""

    def __init__(self, tmp: Path, broker: Any) -> None:
        self.operator = generate_signing_key(tmp / "operator.pem")
        cfg = default_config("test-gw", tmp / "gw")
        self.config = dataclasses.replace(
            cfg, mqtt=dataclasses.replace(cfg.mqtt, host=broker.host, port=broker.port),
            commands=CommandsConfig(keys=(TrustedKey(
                "control-centre", tmp / "operator.pem.pub", ("*",), ("*",)),)),
            groups={"rue-de-la-republique": (LAMP,)})
        self.key = generate_signing_key(Path(self.config.gateway.signing_key))
        self.store = Store.open(self.config.store.path)
        self.store.upsert_device(Device(dev_eui=LAMP, role="lighting", dev_class="C",
                                        dev_addr=f"{ABP_ADDR:08x}", nwk_s_key=NWK,
                                        app_s_key=APP))
        self.radio = Radio()
        self.agent = Agent(self.config, frontend=self.radio, signing_key=self.key,
                           store=self.store)

    def command(self, action: str, args: dict[str, Any] | None, cmd_id: str, *,
                key: SigningKey | None = None, target: str = LAMP, kind: str = "cmd") -> bytes:
        return sign_command(key or self.operator,
                            build_command(action, args, target, kind=kind,  # type: ignore[arg-type]
                                          cmd_id=cmd_id))


class Statuses:
    """The hypervisor's side: every cmd-status message, verified with the gateway's key."""

    def __init__(self, gateway_key: SigningKey) -> None:
        self.keys = {gateway_key.kid: gateway_key.public_key}
        self.seen: list[dict[str, Any]] = []

    def add(self, topic: str, payload: bytes) -> None:
        pack = cbor2.loads(verify1(payload, self.keys).payload)
        values = {r[0]: r.get(3, r.get(2)) for r in pack if 0 in r}
        values["topic"] = topic.rsplit("/", 1)[-1]
        self.seen.append(values)

    def of(self, cmd_id: str | None) -> list[tuple[str, str | None]]:
        """(status, reason) of one command; None: rejections that could not name one."""
        return [(s["status"], s.get("reason")) for s in self.seen if s.get("cmd") == cmd_id]

    async def until(self, client: aiomqtt.Client, cmd_id: str, status: str,
                    timeout: float = 20.0) -> None:
        if any(s == status for s, _ in self.of(cmd_id)):
            return
        async with asyncio.timeout(timeout):
            async for m in client.messages:
                self.add(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
                if any(s == status for s, _ in self.of(cmd_id)):
                    return


async def _hypervisor(broker: Any) -> aiomqtt.Client:
    client = aiomqtt.Client(broker.host, broker.port)
    await client.__aenter__()
    await client.subscribe(f"{PREFIX}/cmd-status/#", qos=1)
    return client


def test_commands_arrive_are_checked_and_followed_across_a_broker_restart(
        tmp_path: Path, mosquitto: Any) -> None:
    gw = Gateway(tmp_path, mosquitto)
    statuses = Statuses(gw.key)
    stranger = SigningKey.generate()

    async def scenario() -> None:
        agent_task = asyncio.create_task(gw.agent.run())
        try:
            hv = await _hypervisor(mosquitto)
            async with asyncio.timeout(10):
                while not (gw.agent.forwarder and gw.agent.forwarder.stats.connected):
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # the subscription is made right after the birth
            # noise first: none of it may stop the subscriber
            await hv.publish(f"{PREFIX}/cmd/{LAMP}", b"\x00 not cose", qos=1)
            await hv.publish(f"{PREFIX}/cmd/{LAMP}",
                             gw.command("dim", {"level": 5}, "op-x", key=stranger), qos=1)
            await hv.publish(f"{PREFIX}/cmd/{LAMP}",
                             gw.command("dim", {"level": 40}, "op-1"), qos=1)
            await statuses.until(hv, "op-1", "sent")  # after the two refusals, in order
            # a group command, retained on the broker
            await hv.publish(f"{PREFIX}/cmd-group/rue-de-la-republique",
                             gw.command("switch", {"on": True}, "op-2",
                                        target="rue-de-la-republique", kind="cmd-group"),
                             qos=1, retain=True)
            await statuses.until(hv, "op-2", "queued")
            await hv.__aexit__(None, None, None)

            await asyncio.to_thread(mosquitto.restart, 0.5)
            hv = await _hypervisor(mosquitto)
            # reconnected and subscribed again: the retained op-2 comes back and is a replay,
            # and a new command is taken
            await statuses.until(hv, "op-2", "rejected", timeout=30)
            await hv.publish(f"{PREFIX}/cmd/{LAMP}",
                             gw.command("dim", {"level": 70}, "op-3"), qos=1)
            await statuses.until(hv, "op-3", "queued", timeout=30)
            await hv.publish(f"{PREFIX}/cmd-group/rue-de-la-republique", b"", qos=1,
                             retain=True)  # clear the retained command
            await hv.__aexit__(None, None, None)
        finally:
            agent_task.cancel()
            await asyncio.gather(agent_task, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        gw.store.close()
    assert statuses.of("op-1")[:3] == [("accepted", None), ("queued", None), ("sent", None)]
    # an untrusted key's message cannot even be read for its id
    assert statuses.of(None) == [("rejected", "malformed"), ("rejected", "unknown_key")]
    assert statuses.of("op-2")[:2] == [("accepted", None), ("queued", None)]
    assert ("rejected", "replay") in statuses.of("op-2")
    assert ("accepted", None) in statuses.of("op-3")
    group = [s for s in statuses.seen if s.get("cmd") == "op-2" and s["status"] == "accepted"]
    assert group[0]["group"] == "rue-de-la-republique" and group[0]["topic"] == LAMP
    assert gw.agent.counters["command_rejected_malformed"] == 1  # the garbage
    assert gw.agent.counters["command_accepted"] == 3
    assert gw.agent.forwarder is not None and gw.agent.forwarder.stats.connections >= 2


def test_a_message_the_gateway_cannot_handle_is_counted_and_never_raises(
        tmp_path: Path) -> None:
    gw = Gateway(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    sub = CommandSubscriber(PREFIX, gw.agent.intake, gw.agent.dispatcher, gw.agent.counters)
    gw.store.close()  # the store fails under the check: the gateway's fault, not the message's

    async def scenario() -> None:
        await sub.handle(f"{PREFIX}/cmd/{LAMP}", gw.command("dim", {"level": 1}, "op-1"))
        await sub.handle(f"{PREFIX}/cmd/{LAMP}", gw.command("dim", {"level": 2}, "op-2"))
        await sub.handle(f"{PREFIX}/status", b"z")  # not a command topic: not even checked
        await sub.handle(f"{PREFIX}/cmd/{LAMP}", b"")  # a retained command being deleted

    asyncio.run(scenario())
    assert sub.counters["command_intake_error"] == 2
    assert sub.counters["command_topic_ignored"] == 1
    assert sub.counters["command_empty_ignored"] == 1
    assert sub.parse_topic(f"{PREFIX}/cmd-group/parc") == ("cmd-group", "parc")
    assert sub.parse_topic(f"{PREFIX}/cmd/a/b") is None
    assert sub.parse_topic("other/cmd/x") is None


def test_sighup_reload_takes_a_newly_trusted_key(tmp_path: Path) -> None:
    from gateway.config import load_config, write_config
    from gateway.service import reload_devices

    gw = Gateway(tmp_path, SimpleNamespace(host="127.0.0.1", port=1))
    path = write_config(tmp_path / "gateway.toml", gw.config)
    agent = Agent(load_config(path), frontend=Radio(), signing_key=gw.key, store=gw.store)
    late = generate_signing_key(tmp_path / "late.pem")
    command = gw.command("dim", {"level": 30}, "op-late", key=late)
    first = agent.intake.check("cmd", LAMP, command)
    with path.open("a", encoding="utf-8") as f:
        f.write('\n[[commands.keys]]\nname = "late"\npublic_key = "late.pem.pub"\n'
                'actions = ["dim"]\ndevices = ["*"]\n')
    try:
        assert asyncio.run(reload_devices(agent)) == 1  # SIGHUP: registry and keys
        second = agent.intake.check("cmd", LAMP, command)
        (tmp_path / "gateway.toml").write_text("not = [toml")  # a broken file keeps the keys
        assert not agent.reload_commands()
        third = agent.intake.check("cmd", LAMP, gw.command("dim", {"level": 31}, "op-late-2",
                                                           key=late))
    finally:
        gw.store.close()
    assert getattr(first, "reason", None) == "unknown_key"
    assert [r.key_name for r in second.rows] == ["late"]  # type: ignore[union-attr]
    assert [r.cmd_id for r in third.rows] == ["op-late-2"]  # type: ignore[union-attr]
