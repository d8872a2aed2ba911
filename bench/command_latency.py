"""Gateway processing latency of a Class C command, airtime aside (brief: p99 under 50 ms).

The whole agent runs (``gateway.agent.Agent``: intake, dispatcher, network side, forwarder) on
a real store (SQLite on disk, WAL, synchronous=FULL as the product runs) with a private
Mosquitto. A control centre publishes signed commands (``cityedge.hypervisor`` build_command +
sign_command) at QoS 1, one ``dim`` to each of ``COMMANDS`` Class C lighting cabinets (distinct
ids, a permissive rate limit), at ``RATE`` commands/s. Latency is measured from the payload
being handed to the command subscriber's handler (the first instant the agent's own code sees
it; the MQTT client's read before that cannot be timestamped from outside) to the TxRequest
reaching the front end's ``send()`` (a stand-in front end that only records the instant: the
radio's airtime is not the gateway's). The cabinets use RX2 at DR5, as a private network sets
with RXParamSetupReq, so the duty-cycle budget never delays one (that would be airtime again).

The stages the time goes through are timed too (each wraps the store method the path calls):
the intake's read-only replay check (``command_id_seen``), storing the replay id, the rows and
their "accepted" statuses (``add_commands``: the one fsync on the path) and the downlink counter
(``reserve_fcnt_down``: from a block reserved ahead, no fsync).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiomqtt

from bench.gateway_rig import percentile, private_broker
from cityedge.hypervisor import build_command, publish_command, sign_command
from gateway.agent import Agent
from gateway.config import CommandsConfig, GatewayConfig, TrustedKey, default_config
from gateway.keys import SigningKey, generate_signing_key
from gateway.radio import TxRequest
from gateway.store import Device, Store

GW = "b827ebfffe0c0001"
PREFIX = f"cityedge/v1/{GW}"
COMMANDS = 1000
RATE = 100.0  # commands per second from the control centre
TARGET_P99_MS = 50.0
EUI_BASE = "70b3d57ec0"
STAGES = ("command_id_seen", "add_commands", "reserve_fcnt_down")


class Stopwatch:
    """A front end that transmits nothing: it notes when each downlink reaches ``send()``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: dict[int, float] = {}  # DevAddr -> first send() instant (perf_counter)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def now(self) -> float:
        return time.time()

    async def send(self, tx: TxRequest) -> None:
        at = time.perf_counter()
        self.sent.setdefault(int.from_bytes(tx.phy[1:5], "little"), at)


def cabinets(count: int) -> list[Device]:
    """Class C lighting cabinets (ABP sessions) whose RX2 is DR5."""
    return [Device(dev_eui=f"{EUI_BASE}{i:06x}", role="lighting", dev_class="C",
                   dev_addr=f"{0x27000000 + i:08x}", nwk_s_key=os.urandom(16),
                   app_s_key=os.urandom(16), mac_state={"rx2_dr": 5})
            for i in range(count)]


def bench_config(data: Path, broker: Any, operator: SigningKey) -> GatewayConfig:
    """The agent's config: the private broker, one trusted key, limits out of the way."""
    cfg = default_config(GW, data)
    data.mkdir(parents=True, exist_ok=True)
    public = data / "operator.pub"
    public.write_bytes(operator.public_pem())
    key = TrustedKey("bench", public, ("*",), ("*",), rate_per_minute=1_000_000)
    return dataclasses.replace(
        cfg, mqtt=dataclasses.replace(cfg.mqtt, host=broker.host, port=broker.port),
        commands=CommandsConfig(device_rate_per_minute=1_000_000, keys=(key,)))


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    """``fn`` noting each call's duration (ms) in ``into``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append((time.perf_counter() - t0) * 1e3)
    return wrapper


async def measure(tmp: Path, broker: Any, count: int = COMMANDS, rate: float = RATE
                  ) -> dict[str, Any]:
    """Send ``count`` commands and return the latencies (ms) and stage durations (ms)."""
    operator = SigningKey.generate()
    cfg = bench_config(tmp / "gw", broker, operator)
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    devices = cabinets(count)
    store = Store.open(cfg.store.path)
    store.upsert_devices(devices)
    front = Stopwatch()
    agent = Agent(cfg, frontend=front, signing_key=key, store=store)
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for name in STAGES:
        setattr(store, name, timed(getattr(store, name), stages[name]))
    handed: dict[int, float] = {}  # DevAddr -> handler entry instant
    addr_of = {d.dev_eui: int(d.dev_addr or "0", 16) for d in devices}
    now = time.time()
    signed = [(d.dev_eui, sign_command(operator, build_command(
        "dim", {"level": 40}, d.dev_eui, cmd_id=f"bench-{i}", expires_in=3600, now=now)))
        for i, d in enumerate(devices)]
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        for _ in range(100):  # the command subscription is made once connected
            if agent.subscriber is not None and agent.forwarder is not None \
                    and agent.forwarder.stats.connections:
                break
            await asyncio.sleep(0.05)
        subscriber = agent.subscriber
        assert subscriber is not None
        handle = subscriber.handle

        async def stamped(topic: str, payload: Any) -> None:
            handed.setdefault(addr_of.get(topic.rsplit("/", 1)[-1], -1), time.perf_counter())
            await handle(topic, payload)

        subscriber.handle = stamped  # type: ignore[method-assign]
        await asyncio.sleep(0.5)
        async with aiomqtt.Client(broker.host, broker.port) as client:
            start = time.perf_counter()
            for i, (eui, payload) in enumerate(signed):
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                await publish_command(client, PREFIX, "cmd", eui, payload)
            deadline = time.perf_counter() + 30
            while len(front.sent) < count and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        store.close()
    latencies = [(front.sent[a] - handed[a]) * 1e3 for a in handed if a in front.sent]
    return {"latencies": latencies, "lost": count - len(latencies), "stages": stages,
            "rejected": sum(v for k, v in agent.counters.items()
                            if k.startswith("command_rejected_"))}


def _ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p):.1f} ms" if values else "-"


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    lat = result["latencies"]
    n = len(lat)
    ok = n > 0 and result["lost"] == 0 and percentile(lat, 99) < TARGET_P99_MS
    out = [
        (f"handler -> front end send(), p50 ({n:,} commands at {RATE:g}/s)", _ms(lat, 50), "",
         ""),
        ("handler -> front end send(), p90", _ms(lat, 90), "", ""),
        ("handler -> front end send(), p99", _ms(lat, 99), f"< {TARGET_P99_MS:.0f} ms",
         "met" if ok else "NOT met"),
        ("handler -> front end send(), max", f"{max(lat):.1f} ms" if lat else "-", "", ""),
        ("commands lost / rejected", f"{result['lost']} / {result['rejected']}", "0 / 0", ""),
    ]
    for name in STAGES:
        values = result["stages"][name]
        out.append((f"  stage {name} (one SQLite transaction), p50 / p99",
                    f"{_ms(values, 50)} / {_ms(values, 99)}", "", ""))
    return out


def main() -> None:
    """Measure and print the table."""
    from bench.table import print_table

    logging.disable(logging.WARNING)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with private_broker(tmp / "mosquitto") as broker:
            result = asyncio.run(measure(tmp, broker))
    print_table(("figure (Class C command, airtime aside)", "measured", "target", ""),
                rows(result))
    print(f"\n({os.cpu_count()} CPUs, shared with the broker and the control centre; load "
          f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")


if __name__ == "__main__":
    main()
    sys.exit(0)
