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
from dataclasses import dataclass
from pathlib import Path

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
from gateway.store import Device, Store
from sim.clock import VirtualClock
from sim.district import District, random_node, ring_positions

log = logging.getLogger("cityedge.demo")


@dataclass
class DemoOptions:
    nodes: int = 4
    speed: float = 10.0
    interval_s: int = 60
    duration_s: float | None = None
    broker: str | None = None
    workdir: str | None = None
    live: bool = True


@dataclass
class Row:
    msg: HypervisorMessage
    count: int = 1


class View:
    """The hypervisor's table: one row per device, latest verified values."""

    def __init__(self, agent: Agent, district: District, clock: VirtualClock, live: bool) -> None:
        self.agent = agent
        self.district = district
        self.clock = clock
        self.live = live
        self.rows: dict[str, Row] = {}
        self.status: HypervisorMessage | None = None
        self.unverified = 0
        self.total = 0

    def add(self, msg: HypervisorMessage) -> None:
        self.total += 1
        if not msg.verified:
            self.unverified += 1
        if msg.kind == "status":
            self.status = msg
        elif msg.dev_eui:
            prev = self.rows.get(msg.dev_eui)
            self.rows[msg.dev_eui] = Row(msg, (prev.count + 1) if prev else 1)
        if not self.live:
            from cityedge.hypervisor import format_line

            print(format_line(msg), flush=True)

    def render(self) -> Group:
        t = Table(title="cityedge demo: readings as the hypervisor sees them", expand=False)
        for col in ("device", "role", "temp °C", "RH %", "battery V", "RSSI dBm", "SNR dB",
                    "FCnt", "msgs", "signature"):
            t.add_column(col, justify="right" if col not in ("device", "role", "signature")
                         else "left")
        roles = {n.spec.dev_eui: n.spec.role for n in self.district.nodes}
        for dev, row in sorted(self.rows.items()):
            v = row.msg.values()
            sig = Text("verified " + (row.msg.kid or ""), style="green") if row.msg.verified \
                else Text("NOT VERIFIED", style="bold red")
            t.add_row(
                dev, roles.get(dev, "?"), _fmt(v.get("temperature"), 2), _fmt(v.get("humidity"), 1),
                _fmt(v.get("battery"), 3), _fmt(v.get("rssi"), 0), _fmt(v.get("snr"), 1),
                _fmt(v.get("fcnt"), 0), str(row.count), sig,
            )
        c = self.agent.counters
        ch = self.district.channel.totals
        virt = time.strftime("%H:%M:%S", time.localtime(self.clock.epoch()))
        gw = "online" if self.status and (self.status.status or {}).get("state") == "online" \
            else "waiting for birth"
        foot = Text(
            f"virtual time {virt} ({self.clock.speed:g}x)  gateway {gw}  accepted {c['accepted']}  "
            f"rejected {sum(v for k, v in c.items() if k.startswith('rejected_'))}  "
            f"on air: sent {ch.sent} lost {ch.lost_sensitivity + ch.lost_collision}  "
            f"messages {self.total} (unverified {self.unverified})   Ctrl-C to stop"
        )
        return Group(t, foot)


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return "-"


async def run_demo(opts: DemoOptions) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    keep = opts.workdir is not None
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="cityedge-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    console = Console()
    console.print(f"[bold]cityedge demo[/] in {workdir}: building the node firmware (mpy-cross)...")
    clock = VirtualClock(speed=opts.speed, epoch=time.time())
    district = District(clock, workdir / "district")
    district.image()
    gw_dir = workdir / "gateway"
    config = default_config("demo-gateway", gw_dir)
    key = generate_signing_key(Path(config.gateway.signing_key), force=True)
    store = Store.open(config.store.path)
    for i, pos in enumerate(ring_positions(opts.nodes)):
        spec = random_node(i + 1, position=pos, interval_s=opts.interval_s)
        district.add_node(spec)
        store.upsert_device(Device(dev_eui=spec.dev_eui, role=spec.role, dev_addr=spec.dev_addr,
                                   nwk_s_key=spec.nwk_s_key, app_s_key=spec.app_s_key,
                                   dev_class="A", name=f"air-{i + 1}"))
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
        console.print(f"broker {host}:{port_n}, gateway demo-gateway, {opts.nodes} nodes, "
                      f"{opts.speed:g}x virtual time, reporting every {opts.interval_s} s")
        frontend = SimFrontEnd(config.radio, concentrator=district.concentrator, clock=clock)
        agent = Agent(config, frontend=frontend, signing_key=key, store=store)
        district.start()
        sim_thread = threading.Thread(target=clock.run, kwargs={"raise_errors": False},
                                      name="sim-scheduler", daemon=True)
        sim_thread.start()
        stack.callback(district.stop)
        stack.callback(clock.stop)
        view = View(agent, district, clock, live=opts.live)
        agent_task = asyncio.create_task(agent.run(), name="gateway")
        try:
            await asyncio.wait_for(_watch(view, host, port_n, key, console, opts),
                                   timeout=opts.duration_s)
        except (TimeoutError, asyncio.CancelledError, KeyboardInterrupt):
            pass
        finally:
            agent_task.cancel()
            with contextlib.suppress(BaseException):
                await agent_task
    store.close()
    console.print(f"stopped. {view.total} messages, {view.unverified} unverified.")
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
