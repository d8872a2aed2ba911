"""The gateway agent against the brief's four figures on this machine (issue 4, BRIEF.md
"Numbers the product must reach"), each measured once and printed with its target:

1. uplinks/s from Semtech UDP PUSH_DATA in to the broker's PUBACK, the agent on one core (CPU 0);
2. p50/p99 latency at an offered 1,000 uplinks/s, from the datagram's arrival at the agent
   (``RxFrame.received_at``, kept by the store as ``created_at``) to the PUBACK of its record;
3. the drain rate of a backlog of one million records (10,000 devices, 100 records each,
   interleaved as an outage leaves them), by the agent's forwarder once the broker is back;
4. the agent's resident memory (VmRSS) with 10,000 nodes registered and the million records
   buffered (broker down), and its peak (VmHWM) after draining them.

For 1 and 2 a packet forwarder in its own process on CPU 1 sends pre-encoded datagrams (in a
deployment it is another machine), so the agent's CPU time is its own. 3 and 4 run the agent in a
child process (``python -m bench.gateway_e2e child ...``) so that its memory is the agent's alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.gateway_rig import (
    AGENT_CPU,
    GW,
    Node,
    PacketForwarder,
    gateway_config,
    load_average,
    loop_name,
    make_nodes,
    percentile,
    pinned,
    private_broker,
    push_data,
    register,
    run,
    start_broker,
    uplinks,
    verdict,
)
from gateway.agent import Agent
from gateway.config import GatewayConfig, default_config
from gateway.keys import generate_signing_key, load_signing_key
from gateway.store import NewRecord, Store
from gateway.store.model import StoredRecord
from gateway.uplink.senml import encode_pack
from protocol import payload as codec

TARGET_UPLINKS_S = 10_000
TARGET_P99_MS = 20.0
TARGET_DRAIN_S = 50_000
TARGET_RSS_MB = 60.0
THROUGHPUT_UPLINKS = 30_000
THROUGHPUT_NODES = 1_000
RXPK_PER_DATAGRAM = 8
LATENCY_RATE = 1_000
LATENCY_SECONDS = 10
BACKLOG_NODES = 10_000
BACKLOG_RECORDS = 1_000_000
if os.environ.get("CITYEDGE_BENCH_QUICK"):  # a smoke run of the bench itself, not the figures
    THROUGHPUT_UPLINKS, LATENCY_SECONDS, BACKLOG_RECORDS = 4_000, 2, 100_000


# ------------------------------------------------------------------------- 1 and 2: live


class _Acks:
    """The forwarder's ``on_acked`` hook: records acknowledged, and each one's latency."""

    def __init__(self) -> None:
        self.count = 0
        self.latencies: list[float] = []  # seconds, arrival -> PUBACK

    def __call__(self, records: Sequence[StoredRecord]) -> None:
        now = time.time()  # the clock of RxFrame.received_at
        self.count += len(records)
        self.latencies.extend(now - r.created_at for r in records)

    async def until(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` records are acknowledged (False after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.count >= n


async def live_figures(tmp: Path, port: int) -> dict[str, Any]:
    """Throughput to PUBACK and latency at 1,000 uplinks/s, through the semtech-udp front end."""
    cfg = gateway_config(tmp / "live", port)
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    nodes = make_nodes(THROUGHPUT_NODES)
    with Store.open(cfg.store.path) as store:
        register(store, nodes)
    full_rate = push_data(uplinks(nodes, THROUGHPUT_UPLINKS), RXPK_PER_DATAGRAM)
    paced_total = LATENCY_RATE * LATENCY_SECONDS
    paced = push_data(uplinks(nodes, paced_total), 1)
    agent = Agent(cfg, signing_key=key)
    acks = _Acks()
    task = asyncio.create_task(agent.run())
    out: dict[str, Any] = {}
    try:
        await asyncio.wait_for(agent.started.wait(), 10)
        forwarder = agent.forwarder
        assert forwarder is not None
        forwarder.on_acked = acks
        while not forwarder.stats.connected:
            await asyncio.sleep(0.01)
        server = agent.frontend.address[:2]

        # 1. throughput: as fast as the agent acknowledges PUSH_DATA
        base_msgs, base_packs = forwarder.stats.messages, forwarder.stats.packs
        out["throughput_load"] = load_average()
        start, cpu0 = time.perf_counter(), time.process_time()
        sender = PacketForwarder(server, full_rate)
        ok = await acks.until(THROUGHPUT_UPLINKS, timeout=600)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        out["throughput_acks_lost"] = sender.lost()
        out["throughput"] = acks.count / elapsed if ok else 0.0
        out["throughput_cpu_us"] = cpu / max(acks.count, 1) * 1e6
        out["throughput_messages"] = forwarder.stats.messages - base_msgs
        out["throughput_packs"] = forwarder.stats.packs - base_packs
        out["throughput_load_after"] = load_average()

        # 2. latency at an offered 1,000 uplinks/s, one rxpk per datagram as they arrive
        acks.count, acks.latencies = 0, []
        base_hist = forwarder.stats.historical
        out["latency_load"] = load_average()
        cpu0 = time.process_time()
        sender = PacketForwarder(server, paced, window=1, rate_per_s=LATENCY_RATE)
        await acks.until(paced_total, timeout=LATENCY_SECONDS * 10 + 60)
        out["latency_cpu_us"] = (time.process_time() - cpu0) / paced_total * 1e6
        out["latency_acks_lost"] = sender.lost()
        latencies = [s * 1000 for s in acks.latencies]
        out["latency_n"] = len(latencies)
        out["latency_lost"] = paced_total - len(latencies)
        out["p50"] = percentile(latencies, 50) if latencies else float("nan")
        out["p99"] = percentile(latencies, 99) if latencies else float("nan")
        out["max"] = max(latencies, default=float("nan"))
        out["latency_batched"] = forwarder.stats.historical - base_hist
        out["latency_load_after"] = load_average()
        out["rejected"] = sum(v for k, v in agent.counters.items() if k.startswith("rejected"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # shutting down: outcome unused
        agent.store.close()
    return out


# ------------------------------------------------------------------------- 3 and 4: backlog


def build_backlog(cfg: GatewayConfig, nodes: Sequence[Node], per_node: int) -> None:
    """Register ``nodes`` and buffer ``per_node`` uplinks each, interleaved, through the store's
    API (bodies made from one template: only the rid and counter change)."""
    with Store.open(cfg.store.path) as store:
        register(store, nodes)
        created = time.time() - 3600
        width = 7
        template_rid = f"{GW}:{'X' * 16}:{'9' * width}"
        readings = {"temperature": 21.37, "humidity": 48.2, "pm2_5": 12.0, "battery": 3.01}
        records = codec.to_senml("air", readings, "urn:dev:mac:" + "X" * 16 + ":", created)
        records += [{"n": "rssi", "u": "dBm", "v": -90.0}, {"n": "snr", "u": "dB", "v": 6.5},
                    {"n": "fcnt", "v": 9_999_999}]
        for record in records:
            record["rid"] = template_rid
        template = encode_pack(records)
        chunk: list[NewRecord] = []
        for fcnt in range(1, per_node + 1):
            for node in nodes:
                rid = f"{GW}:{node.dev_eui}:{fcnt:0{width}d}"
                body = template.replace(template_rid.encode(), rid.encode()).replace(
                    b"X" * 16, node.dev_eui.encode())
                chunk.append(NewRecord(rid=rid, dev_eui=node.dev_eui, kind="up", body=body,
                                       created_at=created))
                if len(chunk) >= 20_000:
                    store.add_records(chunk)
                    chunk = []
        if chunk:
            store.add_records(chunk)


def _status(field: str) -> float:
    """A VmRSS/VmHWM figure of this process, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def child(config_json: str) -> None:
    """The agent with the buffered backlog: report RSS, wait for 'go', time the drain."""
    logging.disable(logging.ERROR)  # "broker unreachable" while it is down, on purpose
    from gateway.service import limit_malloc_arenas

    limit_malloc_arenas()  # as `cityedge gateway run` does
    settings = json.loads(config_json)
    data = Path(settings["data"])
    cfg = gateway_config(data, settings["port"])
    agent = Agent(cfg, signing_key=load_signing_key(cfg.gateway.signing_key))
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started.wait(), 30)
    forwarder = agent.forwarder
    assert forwarder is not None
    forwarder.backoff.initial, forwarder.backoff.cap = 0.05, 0.1
    await asyncio.sleep(2.0)  # settled, broker down: everything stays buffered
    buffered = await asyncio.to_thread(agent.store.count)
    devices = (await asyncio.to_thread(agent.store.stats)).devices
    print(json.dumps({"rss_mb": _status("VmRSS"), "buffered": buffered, "devices": devices}),
          flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent started the broker
    while not forwarder.stats.connected:
        await asyncio.sleep(0.001)
    start, cpu0 = time.perf_counter(), time.process_time()
    while forwarder.stats.published < buffered:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    print(json.dumps({"drained": forwarder.stats.published, "seconds": elapsed, "cpu_s": cpu,
                      "messages": forwarder.stats.messages, "hwm_mb": _status("VmHWM"),
                      "rss_after_mb": _status("VmRSS")}), flush=True)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    agent.store.close()


def backlog_figures(tmp: Path, broker: Any) -> dict[str, Any]:
    """Memory with the backlog buffered and its drain rate, in a child process."""
    data = tmp / "backlog"
    cfg = default_config(GW, data)
    generate_signing_key(Path(cfg.gateway.signing_key))
    t0 = time.perf_counter()
    build_backlog(cfg, make_nodes(BACKLOG_NODES), BACKLOG_RECORDS // BACKLOG_NODES)
    build_s = time.perf_counter() - t0
    broker.stop()
    load = load_average()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_e2e", "child",
         json.dumps({"data": str(data), "port": broker.port})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdin is not None and proc.stdout is not None
        memory = json.loads(proc.stdout.readline())
        start_broker(broker)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        drain = json.loads(proc.stdout.readline())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {**memory, **drain, "build_s": build_s, "load": load, "load_after": load_average()}


# ------------------------------------------------------------------------- report


def rows(live: dict[str, Any], backlog: dict[str, Any]) -> list[tuple[str, ...]]:
    """(figure, measured, target, verdict, agent CPU, load average) rows, one per target."""
    live_load = f"{live['throughput_load']:.1f} -> {live['throughput_load_after']:.1f}"
    latency_load = f"{live['latency_load']:.1f} -> {live['latency_load_after']:.1f}"
    backlog_load = f"{backlog['load']:.1f} -> {backlog['load_after']:.1f}"
    latency_cpu = (f"{live['latency_cpu_us']:.0f} µs/uplink = "
                   f"{live['latency_cpu_us'] * LATENCY_RATE / 1e4:.0f}% of the core")
    drain_rate = backlog["drained"] / backlog["seconds"]
    drain_cpu = f"{backlog['cpu_s'] / backlog['drained'] * 1e6:.1f} µs/record"
    throughput_label = (f"uplinks/s, Semtech UDP in -> PUBACK ({THROUGHPUT_UPLINKS:,} uplinks, "
                        f"{RXPK_PER_DATAGRAM} per PUSH_DATA; {live['throughput_messages']:,} "
                        f"MQTT messages, {live['throughput_packs']:,} packs; "
                        f"{live['throughput_acks_lost']} PUSH_ACKs lost)")
    latency_label = (f"latency p99 at {LATENCY_RATE:,} uplinks/s, arrival -> PUBACK "
                     f"({live['latency_n']:,} acked, {live['latency_lost']:,} not; "
                     f"p50 {live['p50']:.1f} ms, max {live['max']:.1f} ms; "
                     f"{live['latency_batched']:,} sent in packs)")
    drain_label = (f"backlog drain, {backlog['drained']:,} records of {BACKLOG_NODES:,} devices "
                   f"({backlog['messages']:,} messages)")
    return [
        (throughput_label, f"{live['throughput']:,.0f} /s", f">= {TARGET_UPLINKS_S:,} /s",
         verdict(live["throughput"] >= TARGET_UPLINKS_S),
         f"{live['throughput_cpu_us']:.0f} µs/uplink", live_load),
        (latency_label, f"{live['p99']:.1f} ms", f"< {TARGET_P99_MS:.0f} ms",
         verdict(live["p99"] < TARGET_P99_MS and live["latency_lost"] == 0),
         latency_cpu, latency_load),
        (drain_label, f"{drain_rate:,.0f} /s", f">= {TARGET_DRAIN_S:,} /s",
         verdict(drain_rate >= TARGET_DRAIN_S), drain_cpu, backlog_load),
        (f"agent RSS, {backlog['devices']:,} nodes + {backlog['buffered']:,} records buffered",
         f"{backlog['rss_mb']:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB",
         verdict(backlog["rss_mb"] < TARGET_RSS_MB), "", backlog_load),
        ("agent peak RSS (VmHWM) after draining them", f"{backlog['hwm_mb']:.1f} MB",
         f"< {TARGET_RSS_MB:.0f} MB", verdict(backlog["hwm_mb"] < TARGET_RSS_MB), "",
         backlog_load),
    ]


def main() -> None:
    """Run every measurement and print the table (``make bench`` / ``python -m bench
    gateway_e2e``)."""
    from bench.table import print_table

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with private_broker(tmp / "mosquitto") as broker:
            with pinned(AGENT_CPU):
                live = run(live_figures(tmp, broker.port))
            backlog = backlog_figures(tmp, broker)
    print_table(("figure", "measured", "target", "", "agent CPU", "load 1 min"),
                rows(live, backlog))
    print(f"\n(uplinks/s and latency: the agent pinned to CPU {AGENT_CPU}, the packet forwarder "
          "and the broker on the other CPU; drain and memory: the agent in a child process, "
          f"not pinned; backlog of {backlog['buffered']:,} records built in "
          f"{backlog['build_s']:.0f} s. 'agent CPU' is the agent process's CPU time (all its "
          f"threads). 'load 1 min' is the load average before -> after each measurement, on "
          f"{os.cpu_count()} CPUs: the bench itself adds about 2; more means other work that "
          f"slows every figure. Event loop {loop_name()}.)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        run(child(sys.argv[2]))
    else:
        main()
