"""`cityedge demo`: a simulated district end to end on embedded defaults.

Broker, gateway agent, MicroPython nodes on a simulated LoRa channel, and the hypervisor's view of
what arrives, each message's signature verified. Ctrl-C stops everything cleanly.
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
from cityedge.hypervisor import HypervisorMessage, messages
from gateway.agent import Agent
from gateway.config import default_config
from gateway.keys import generate_signing_key
from gateway.radio.sim import SimFrontEnd
from gateway.store import Store
from protocol.payload import encode_command
from sim.clock import VirtualClock
from sim.district import ROLE_CYCLE, District, mixed_specs

log = logging.getLogger("cityedge.demo")


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
        self.status: HypervisorMessage | None = None
        self.unverified = 0
        self.total = 0
        self.joins = 0
        self.acks = 0
        self.started = time.monotonic()
        self.first_reading_s: float | None = None

    def add(self, msg: HypervisorMessage) -> None:
        """Take one message (verified or not) into the table."""
        self.total += 1
        if not msg.verified:
            self.unverified += 1
        if msg.kind == "status":
            self.status = msg
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
                what = self.commands.get((msg.dev_eui, int(v["cmd_seq"])), f"#{v['cmd_seq']}")
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
            f"{c['downlinks_sent']}  acks {self.acks}\n"
            f"on air: sent {ch.sent} lost {ch.lost_sensitivity + ch.lost_collision}  "
            f"messages {self.total} (unverified {self.unverified})  {first}   Ctrl-C to stop"
        )
        return Group(t, foot)


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "-"


class Operator:
    """The demo's operator: dims the Class C cabinets and waters the soil nodes now and then,
    through the gateway's network side, as the hypervisor's commands would."""

    DIM_LEVELS = (40, 70, 20, 100)
    EVERY_S = 240.0  # virtual seconds between two commands to one node

    def __init__(self, agent: Agent, district: District, view: View, clock: VirtualClock) -> None:
        self.agent = agent
        self.view = view
        self.clock = clock
        self.specs = {n.spec.dev_eui: n.spec for n in district.nodes}
        self.next_at: dict[str, float] = {}
        self.seq: dict[str, int] = {}
        self.rounds: dict[str, int] = {}

    async def run(self) -> None:
        """Every half second (wall), queue what is due."""
        while True:
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):  # a device without session yet: next time
                self.tick()

    def tick(self) -> None:
        """Queue the commands due now."""
        now = self.clock.epoch()
        for dev, spec in self.specs.items():
            row = self.view.rows.get(dev)
            if spec.role not in ("lighting", "soil") or row is None or not row.readings:
                continue
            if now < self.next_at.get(dev, 0.0):
                continue
            n = self.rounds.get(dev, 0)
            seq = (self.seq.get(dev, 0) + 1) % 256
            if spec.role == "lighting":
                level = self.DIM_LEVELS[n % len(self.DIM_LEVELS)]
                cmd = {"cmd": "dim", "seq": seq, "level": level, "ramp_s": 2}
                text = f"dim {level} %"
            else:
                cmd = {"cmd": "valve_open", "seq": seq, "seconds": 60}
                text = "valve open 60 s"
            self.agent.network.queue_downlink(dev, 40, encode_command(cmd))
            self.seq[dev] = seq
            self.rounds[dev] = n + 1
            self.next_at[dev] = now + self.EVERY_S
            self.view.command_sent(dev, seq, text)


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
        operator = Operator(agent, district, view, clock)
        op_task = asyncio.create_task(operator.run(), name="operator") if opts.commands else None
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
                  f"{view.joins} joins, {view.acks} command acks; {first}.")
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
