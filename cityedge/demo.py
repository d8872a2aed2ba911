"""`cityedge demo`: a simulated district end to end on embedded defaults.

Broker, gateway agent, MicroPython nodes on a simulated LoRa channel, and the hypervisor's view of
what arrives, each message's signature verified. The demo's operator commands the district as a
hypervisor does: commands signed with its own key (trusted by the demo gateway's
``[[commands.keys]]``), published on ``cmd/{dev}`` and ``cmd-group/{street}``, their statuses
(accepted, queued, sent, acked with the node's answer) followed in the live view. Ctrl-C stops
everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cityedge.broker import EmbeddedBroker
from cityedge.hypervisor import (
    HypervisorMessage,
    StatusUpdate,
    build_command,
    messages,
    publish_command,
    sign_command,
    status_update,
)
from cityedge.hypervisor.messages import INBOUND_KINDS
from gateway.agent import Agent
from gateway.config import CommandsConfig, GatewayConfig, TrustedKey, default_config
from gateway.keys import SigningKey, generate_signing_key
from gateway.radio.sim import SimFrontEnd
from gateway.store import Store
from sim.clock import VirtualClock
from sim.district import ROLE_CYCLE, District, mixed_specs

log = logging.getLogger("cityedge.demo")

STREET = "rue-de-la-demo"  # the demo's lighting cabinets, one [groups] entry
OPERATOR = "demo-operator"  # the operator key's name in the demo gateway's config


@dataclass
class DemoOptions:
    """What `cityedge demo` runs: ``nodes`` None is the default mixed district (`ROLE_CYCLE`)."""

    nodes: int | None = None
    speed: float = 10.0
    interval_s: int = 60
    duration_s: float | None = None
    broker: str | None = None
    workdir: str | None = None
    live: bool = True
    commands: bool = True


@dataclass
class Row:
    """What the hypervisor knows of one device, from verified messages only."""

    role: str
    name: str
    dev_class: str
    activation: str
    joined: bool = False
    readings: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    last: HypervisorMessage | None = None
    count: int = 0
    command: str = "-"
    verified: bool | None = None
    kid: str | None = None


def readings_text(role: str, v: dict[str, Any]) -> str:
    """A compact, role-specific summary of one reading set (SenML primary units converted)."""

    def num(key: str, scale: float = 1.0, digits: int = 1) -> str:
        x = v.get(key)
        return f"{x * scale:.{digits}f}" if isinstance(x, (int, float)) else "-"

    if role == "air":
        return (f"PM2.5 {num('pm2_5', 1e9)} PM10 {num('pm10', 1e9)} µg/m³  "
                f"{num('temperature')} °C {num('humidity', digits=0)} %RH")
    if role == "noise":
        return f"LAeq {num('laeq')} Lmax {num('lamax')} L90 {num('la90')} dB(A)"
    if role == "soil":
        return (f"moisture {num('soil_moisture', 100, 0)} % {num('soil_temperature')} °C  "
                f"valve {v.get('valve', '-')} {num('water_volume', 1000, 0)} L")
    if role == "lighting":
        relay = {True: "on", False: "off"}.get(v.get("relay"), "-")  # type: ignore[call-overload]
        return (f"level {num('level', 100, 0)} % ({v.get('level_source', '-')}) relay {relay} "
                f"{num('lamp_current', digits=2)} A")
    return " ".join(f"{k}={x}" for k, x in v.items())


_META = {"rssi", "snr", "fcnt", "frequency", "spreading_factor", "margin"}


class View:
    """The hypervisor's table: one row per device, latest verified values."""

    def __init__(self, agent: Agent, district: District, clock: VirtualClock, live: bool) -> None:
        self.agent = agent
        self.district = district
        self.clock = clock
        self.live = live
        self.rows: dict[str, Row] = {
            n.spec.dev_eui: Row(n.spec.role, n.spec.name or "", n.spec.dev_class,
                                n.spec.activation, joined=n.spec.activation == "abp")
            for n in district.nodes}
        self.commands: dict[tuple[str, int], str] = {}
        self.issued: dict[str, str] = {}  # command id -> what the operator asked
        self.command_counts: dict[str, int] = {}  # final status -> commands (per device)
        self.status: HypervisorMessage | None = None
        self.unverified = 0
        self.total = 0
        self.joins = 0
        self.acks = 0
        self.started = time.monotonic()
        self.first_reading_s: float | None = None

    def add(self, msg: HypervisorMessage) -> None:
        """Take one message (verified or not) into the table; the operators' own commands
        going in (cmd/, cmd-group/) are not the gateway's and are left out."""
        if msg.kind in INBOUND_KINDS:
            return
        self.total += 1
        if not msg.verified:
            self.unverified += 1
        if msg.kind == "status":
            self.status = msg
        elif msg.kind == "cmd-status":
            update = status_update(msg)
            if update is not None:
                self.command_status(update)
        elif msg.dev_eui:
            row = self.rows.setdefault(msg.dev_eui, Row("?", "?", "?", "?"))
            row.count += 1
            row.last = msg
            row.verified = msg.verified
            row.kid = msg.kid
            v = msg.values() if msg.verified else {}
            if msg.kind == "event" and "join" in v:
                row.joined = True
                self.joins += 1
            elif "cmd_seq" in v:
                self.acks += 1
                what = self.commands.get((msg.dev_eui, int(v["cmd_seq"])))
                if what is not None:  # a command followed by its statuses shows those
                    row.command = f"{what} -> {v.get('cmd_result')}"
            elif "supply" in v:
                row.health = v
            elif msg.kind == "up" and v:
                row.joined = True
                row.readings = v
                if self.first_reading_s is None:
                    self.first_reading_s = time.monotonic() - self.started
        if not self.live:
            from cityedge.hypervisor import format_line

            print(format_line(msg), flush=True)

    def command_sent(self, dev_eui: str, seq: int, text: str) -> None:
        """Note a command the demo queued, to show it until its acknowledgement arrives."""
        self.commands[(dev_eui, seq)] = text
        row = self.rows.get(dev_eui)
        if row is not None:
            row.command = f"{text} -> queued"

    def command_issued(self, cmd_id: str, devices: list[str], text: str) -> None:
        """Note a command the operator published, shown on its devices' rows until its
        statuses arrive."""
        self.issued[cmd_id] = text
        for dev in devices:
            row = self.rows.get(dev)
            if row is not None:
                row.command = f"{text}: published"

    def command_status(self, u: StatusUpdate) -> None:
        """One verified status of a command on one device: the row shows the latest."""
        row = self.rows.get(u.target)
        if row is None:
            return
        text = self.issued.get(u.cmd_id) or u.action or u.cmd_id or "command"
        why = " ".join(x for x in (u.reason, u.answer) if x)
        row.command = f"{text}: {u.status}" + (f" {why}" if why else "")
        if u.final:
            self.command_counts[u.status] = self.command_counts.get(u.status, 0) + 1

    def render(self) -> Group:
        """The live table and its footer."""
        t = Table(title="cityedge demo: a district as the hypervisor sees it", expand=False)
        for col, right in (("node", False), ("cl", False), ("radio", False),
                           ("readings", False), ("batt V", True), ("RSSI", True),
                           ("FCnt", True), ("msgs", True), ("last command", False),
                           ("signature", False)):
            t.add_column(col, justify="right" if right else "left")
        for dev, row in sorted(self.rows.items(), key=lambda kv: (kv[1].role, kv[0])):
            v = row.last.values() if row.last is not None and row.last.verified else {}
            if row.verified is None:
                sig = Text("-", style="dim")
            elif row.verified:
                sig = Text("verified", style="green")
            else:
                sig = Text("NOT VERIFIED", style="bold red")
            radio = ("joined" if row.joined else "joining") + f" {row.activation.upper()}"
            batt = row.readings.get("battery", row.health.get("supply"))
            t.add_row(
                row.name, row.dev_class, radio,
                readings_text(row.role, row.readings) if row.readings else "-",
                _fmt(batt, 2), _fmt(v.get("rssi"), 0), _fmt(v.get("fcnt"), 0), str(row.count),
                row.command, sig,
            )
        c = self.agent.counters
        ch = self.district.channel.totals
        virt = time.strftime("%H:%M:%S", time.localtime(self.clock.epoch()))
        gw = "online" if self.status and (self.status.status or {}).get("state") == "online" \
            else "waiting for birth"
        first = (f"first verified reading after {self.first_reading_s:.1f} s"
                 if self.first_reading_s is not None else "waiting for the first reading")
        speed = f"{self.clock.speed:g}x" if self.clock.speed else "full speed"
        foot = Text(
            f"virtual time {virt} ({speed})  gateway {gw}  joins {c['joins']}  "
            f"accepted {c['accepted']}  rejected "
            f"{sum(v for k, v in c.items() if k.startswith('rejected_'))}  downlinks "
            f"{c['downlinks_sent']}  node answers {self.acks}  commands "
            f"{self.command_summary()}\n"
            f"on air: sent {ch.sent} lost {ch.lost_sensitivity + ch.lost_collision}  "
            f"messages {self.total} (unverified {self.unverified})  {first}   Ctrl-C to stop"
        )
        return Group(t, foot)

    def command_summary(self) -> str:
        """How the commands followed so far ended, per device (e.g. "acked 12")."""
        done = self.command_counts
        return (", ".join(f"{k} {v}" for k, v in sorted(done.items())) if done
                else "none finished yet")


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "-"


class Operator:
    """The demo's control centre: every few virtual minutes it dims the street (one group
    command to every lighting cabinet) and waters each soil plot, each command signed with the
    operator key and published on the gateway's command topics, as the hypervisor does; the
    view follows the statuses the gateway publishes."""

    DIM_LEVELS = (40, 70, 20, 100)
    EVERY_S = 240.0  # virtual seconds between two commands to one target
    LIFETIME_S = 900  # each command's exp - iat

    def __init__(self, key: SigningKey, prefix: str, district: District, view: View,
                 clock: VirtualClock) -> None:
        self.key = key
        self.prefix = prefix
        self.view = view
        self.clock = clock
        lamps = [n.spec.dev_eui for n in district.nodes if n.spec.role == "lighting"]
        # (kind, topic target, devices it reaches)
        self.targets: list[tuple[str, str, list[str]]] = [("cmd-group", STREET, lamps)] \
            if lamps else []
        self.targets += [("cmd", n.spec.dev_eui, [n.spec.dev_eui]) for n in district.nodes
                         if n.spec.role == "soil"]
        self.next_at: dict[str, float] = {}
        self.rounds: dict[str, int] = {}

    async def run(self, host: str, port: int) -> None:
        """Every half second (wall), publish what is due; reconnect if the broker drops."""
        while True:
            try:
                async with aiomqtt.Client(host, port, identifier="cityedge-demo-operator") \
                        as client:
                    while True:
                        await asyncio.sleep(0.5)
                        await self.tick(client)
            except aiomqtt.MqttError as exc:
                log.warning("operator: broker link lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def tick(self, client: aiomqtt.Client) -> None:
        """Sign and publish the commands due now (once every device of a target reports)."""
        now = self.clock.epoch()
        for kind, target, devices in self.targets:
            if now < self.next_at.get(target, 0.0):
                continue
            if not all(self.view.rows[d].readings for d in devices if d in self.view.rows):
                continue
            n = self.rounds.get(target, 0)
            if kind == "cmd-group":
                level = self.DIM_LEVELS[n % len(self.DIM_LEVELS)]
                action, args, text = "dim", {"level": level, "ramp_s": 2}, f"dim {level} %"
            else:
                action, args, text = "valve_open", {"seconds": 60}, "valve open 60 s"
            command = build_command(action, args, target, kind=kind,  # type: ignore[arg-type]
                                    now=now, expires_in=self.LIFETIME_S)
            self.view.command_issued(command["id"], devices, text)
            await publish_command(client, self.prefix, kind,  # type: ignore[arg-type]
                                  target, sign_command(self.key, command))
            self.rounds[target] = n + 1
            self.next_at[target] = now + self.EVERY_S


def operator_config(config: GatewayConfig, district: District, key_dir: Path
                    ) -> tuple[GatewayConfig, SigningKey]:
    """The demo gateway's config trusting a fresh operator key (written in ``key_dir``, its
    public half named by a [[commands.keys]] entry) and grouping the lighting cabinets."""
    key_path = key_dir / "operator-key.pem"
    key = generate_signing_key(key_path, force=True)
    trusted = TrustedKey(OPERATOR, key_path.with_name(key_path.name + ".pub"), ("*",), ("*",))
    lamps = tuple(n.spec.dev_eui for n in district.nodes if n.spec.role == "lighting")
    return dataclasses.replace(config, commands=CommandsConfig(keys=(trusted,)),
                               groups={STREET: lamps} if lamps else {}), key


async def run_demo(opts: DemoOptions) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    keep = opts.workdir is not None
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="cityedge-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    started = time.monotonic()
    console.print(f"[bold]cityedge demo[/] in {workdir}: building the node firmware (mpy-cross)...")
    clock = VirtualClock(speed=opts.speed, epoch=time.time())
    district = District(clock, workdir / "district")
    district.image()
    gw_dir = workdir / "gateway"
    config = default_config("demo-gateway", gw_dir)
    key = generate_signing_key(Path(config.gateway.signing_key), force=True)
    store = Store.open(config.store.path)
    n_nodes = opts.nodes if opts.nodes is not None else len(ROLE_CYCLE)
    for spec in mixed_specs(n_nodes, otaa=True, interval_s=opts.interval_s):
        district.add_node(spec)
    district.register(store)
    config, operator_key = operator_config(config, district, workdir / "operator")
    mix = ", ".join(f"{sum(1 for n in district.nodes if n.spec.role == r)} {r}"
                    for r in ("air", "noise", "soil", "lighting")
                    if any(n.spec.role == r for n in district.nodes))
    async with contextlib.AsyncExitStack() as stack:
        if opts.broker:
            host, _, port = opts.broker.rpartition(":")
            host, port_n = host or "127.0.0.1", int(port)
        else:
            broker = await stack.enter_async_context(EmbeddedBroker())
            host, port_n = broker.host, broker.port
        config = dataclasses.replace(
            config, mqtt=dataclasses.replace(config.mqtt, host=host, port=port_n,
                                             protocol="5" if opts.broker
                                             else "3.1.1"))  # amqtt speaks MQTT 3.1.1
        console.print(f"broker {host}:{port_n}, gateway demo-gateway, {n_nodes} OTAA nodes "
                      f"({mix}), {opts.speed:g}x virtual time, reporting every "
                      f"{opts.interval_s} s")
        frontend = SimFrontEnd(config.radio, concentrator=district.concentrator, clock=clock)
        agent = Agent(config, frontend=frontend, signing_key=key, store=store)
        district.pace_agent(agent)
        district.start()
        sim_thread = threading.Thread(target=clock.run, kwargs={"raise_errors": False},
                                      name="sim-scheduler", daemon=True)
        sim_thread.start()
        stack.callback(district.stop)
        stack.callback(clock.stop)
        view = View(agent, district, clock, live=opts.live)
        view.started = started
        agent_task = asyncio.create_task(agent.run(), name="gateway")
        operator = Operator(operator_key, config.mqtt.prefix, district, view, clock)
        op_task = (asyncio.create_task(operator.run(host, port_n), name="operator")
                   if opts.commands else None)
        try:
            await asyncio.wait_for(_watch(view, host, port_n, key, console, opts),
                                   timeout=opts.duration_s)
        except (TimeoutError, asyncio.CancelledError, KeyboardInterrupt):
            pass
        finally:
            if op_task is not None:
                op_task.cancel()
            agent_task.cancel()
            with contextlib.suppress(BaseException):
                await agent_task
    store.close()
    first = (f"first verified reading {view.first_reading_s:.1f} s after start"
             if view.first_reading_s is not None else "no reading yet")
    console.print(f"stopped. {view.total} messages, {view.unverified} unverified, "
                  f"{view.joins} joins, commands {view.command_summary()} "
                  f"({view.acks} node answers); {first}.")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if view.unverified == 0 else 1


async def _watch(view: View, host: str, port: int, key, console: Console, opts: DemoOptions) -> None:
    keys = {key.kid: key.public_key}
    await asyncio.sleep(0.2)
    async with aiomqtt.Client(host, port, identifier="cityedge-demo-hypervisor") as client:
        stream = messages(client, "cityedge/v1/+", keys)
        if not opts.live:
            async for msg in stream:
                view.add(msg)
            return
        with Live(view.render(), console=console, refresh_per_second=4) as live:
            async def refresh() -> None:
                while True:
                    await asyncio.sleep(0.25)
                    live.update(view.render())

            ticker = asyncio.create_task(refresh())
            try:
                async for msg in stream:
                    view.add(msg)
            finally:
                ticker.cancel()
