"""The gateway end to end on this machine, against a private Mosquitto, measured vs. the brief.

Four figures (BRIEF.md, "Numbers the product must reach"):

1. uplinks/s from Semtech UDP PUSH_DATA in to the broker's PUBACK, the agent on one core (one
   asyncio process; the packet forwarder side is pre-encoded datagrams sent from the same loop
   with flow control, so nothing is lost in the socket buffer);
2. p50/p99 latency from the datagram sent to the PUBACK at an offered 1,000 uplinks/s;
3. the drain rate of a backlog of one million records (10,000 devices, 100 records each,
   interleaved as an outage leaves them), by the agent's forwarder once the broker is back;
4. the agent's resident memory (VmRSS) with 10,000 nodes registered and the million records
   buffered (broker down), and its peak (VmHWM) after draining them.

3 and 4 run in a child process (``python -m bench.gateway_e2e child ...``) so that its memory is
the agent's alone. Each figure is printed with its target and whether it is met, as measured.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.agent import Agent
from gateway.config import GatewayConfig, GatewaySection, SemtechUdpConfig, default_config
from gateway.keys import generate_signing_key, load_signing_key
from gateway.store import Device, NewRecord, Store
from gateway.store.model import StoredRecord
from gateway.uplink.senml import encode_pack
from protocol import lorawan
from protocol import payload as codec

GW = "b827ebfffe0be7c4"
EUI_BASE = "70b3d57ed0"
TARGET_UPLINKS_S = 10_000
TARGET_P99_MS = 20.0
TARGET_DRAIN_S = 50_000
TARGET_RSS_MB = 60.0
THROUGHPUT_UPLINKS = 30_000
THROUGHPUT_NODES = 1_000
LATENCY_RATE = 1_000
LATENCY_SECONDS = 10
BACKLOG_NODES = 10_000
BACKLOG_RECORDS = 1_000_000
if os.environ.get("CITYEDGE_BENCH_QUICK"):  # a smoke run of the bench itself, not the figures
    THROUGHPUT_UPLINKS, LATENCY_SECONDS, BACKLOG_RECORDS = 4_000, 2, 100_000
RXPK_PER_DATAGRAM = 8


_DEFAULT_LOOP = GatewaySection.__dataclass_fields__["event_loop"].default


def _run(main: Any) -> Any:
    """Run ``main`` on the agent's default event loop (``[gateway] event_loop``; the
    environment's CITYEDGE_EVENT_LOOP=asyncio|uvloop picks one, to compare them)."""
    from gateway.service import run_on_loop

    return run_on_loop(main, os.environ.get("CITYEDGE_EVENT_LOOP") or _DEFAULT_LOOP)


def _loop_name() -> str:
    from gateway.service import event_loop_factory

    factory = event_loop_factory(os.environ.get("CITYEDGE_EVENT_LOOP") or _DEFAULT_LOOP)
    return factory.__module__.split(".")[0]


# ------------------------------------------------------------------------- broker


@contextmanager
def private_broker(directory: Path) -> Iterator[Any]:
    """A Mosquitto of our own on a free port (never the shared 1883), as the tests start one."""
    from tests.fixtures.mosquitto import Broker, _base_lines, find_mosquitto, free_port

    if find_mosquitto() is None:
        raise SystemExit("mosquitto is not installed: make mosquitto")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = Broker(host="127.0.0.1", port=port, directory=directory,
                    config_lines=_base_lines(directory, port) + ["allow_anonymous true"])
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


# ------------------------------------------------------------------------- nodes and frames


@dataclasses.dataclass
class Node:
    """An ABP node of the benchmark: identity, keys, next frame counter."""

    dev_eui: str
    dev_addr: int
    nwk_s_key: bytes
    app_s_key: bytes
    fcnt: int = 0


def make_nodes(count: int) -> list[Node]:
    """``count`` nodes with fresh random session keys."""
    return [Node(f"{EUI_BASE}{i:06x}", 0x26000000 + i, os.urandom(16), os.urandom(16))
            for i in range(count)]


def register(store: Store, nodes: Sequence[Node]) -> None:
    """Register ``nodes`` in the store's device registry."""
    for node in nodes:
        store.upsert_device(Device(dev_eui=node.dev_eui, role="air",
                                   dev_addr=f"{node.dev_addr:08x}", nwk_s_key=node.nwk_s_key,
                                   app_s_key=node.app_s_key))


def next_uplink(aes: Any, node: Node) -> tuple[bytes, str]:
    """The node's next air-quality uplink (PHYPayload) and the rid the gateway will give it."""
    node.fcnt += 1
    port, data = codec.encode_uplink("air", {"temperature": 21.37, "humidity": 48.2,
                                             "pm2_5": 12.0, "battery": 3.01})
    phy = lorawan.build_data_frame(aes, lorawan.MTYPE_UNCONFIRMED_UP, node.dev_addr, node.fcnt,
                                   port, data, node.nwk_s_key, node.app_s_key)
    return phy, f"{GW}:{node.dev_eui}:{node.fcnt}"


def push_data(token: int, phys: Sequence[bytes]) -> bytes:
    """A PUSH_DATA datagram carrying ``phys`` as rxpk entries (Semtech UDP protocol v2)."""
    from gateway.radio.semtech_udp import encode_push_data
    from sim.packet_forwarder import rxpk

    tmst = int(time.monotonic() * 1e6)
    return encode_push_data(token & 0xFFFF, "0016c001ff10a235",
                            [rxpk(phy, tmst=tmst + i, rssi_dbm=-90, snr_db=7.5)
                             for i, phy in enumerate(phys)])


def gateway_config(data: Path, broker: Any) -> GatewayConfig:
    """The agent's configuration: semtech-udp on a free local port, the private broker."""
    cfg = default_config(GW, data, frontend="semtech-udp")
    return dataclasses.replace(
        cfg,
        mqtt=dataclasses.replace(cfg.mqtt, host=broker.host, port=broker.port),
        radio=dataclasses.replace(cfg.radio, semtech_udp=SemtechUdpConfig("127.0.0.1", 0)),
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ------------------------------------------------------------------------- 1 and 2: live


async def live_figures(tmp: Path, broker: Any) -> dict[str, Any]:
    """Throughput to PUBACK and latency at 1,000 uplinks/s, through the semtech-udp front end."""
    cfg = gateway_config(tmp / "live", broker)
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    nodes = make_nodes(THROUGHPUT_NODES)
    with Store.open(cfg.store.path) as store:
        register(store, nodes)
    agent = Agent(cfg, signing_key=key)
    aes = lorawan.default_aes()
    sent_at: dict[str, float] = {}
    acked_at: dict[str, float] = {}

    def on_acked(records: Sequence[StoredRecord]) -> None:
        now = time.perf_counter()
        for record in records:
            acked_at[record.rid] = now

    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.started.wait(), 10)
    forwarder = agent.forwarder
    assert forwarder is not None
    forwarder.on_acked = on_acked
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(agent.frontend.address[:2])
    out: dict[str, Any] = {}
    try:
        # 1. throughput: pre-encoded datagrams, at most 4,096 uplinks not yet checked
        uplinks = [next_uplink(aes, nodes[i % len(nodes)]) for i in range(THROUGHPUT_UPLINKS)]
        datagrams = [push_data(n, [phy for phy, _ in uplinks[i:i + RXPK_PER_DATAGRAM]])
                     for n, i in enumerate(range(0, len(uplinks), RXPK_PER_DATAGRAM))]
        base_msgs, base_packs = forwarder.stats.messages, forwarder.stats.packs
        start, cpu0 = time.perf_counter(), time.process_time()
        sent = 0
        for datagram in datagrams:
            while sent - agent.counters["accepted"] > 4096:
                await asyncio.sleep(0.0005)
            sock.send(datagram)
            sent += RXPK_PER_DATAGRAM
            await asyncio.sleep(0)
        while len(acked_at) < len(uplinks):
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        out["throughput"] = len(uplinks) / elapsed
        out["throughput_cpu_us"] = (time.process_time() - cpu0) / len(uplinks) * 1e6
        out["throughput_messages"] = forwarder.stats.messages - base_msgs
        out["throughput_packs"] = forwarder.stats.packs - base_packs
        out["rejected"] = sum(v for k, v in agent.counters.items() if k.startswith("rejected"))

        # 2. latency at an offered 1,000 uplinks/s, one rxpk per datagram as they arrive
        acked_at.clear()
        base_hist = forwarder.stats.historical
        total = LATENCY_RATE * LATENCY_SECONDS
        uplinks = [next_uplink(aes, nodes[i % len(nodes)]) for i in range(total)]
        datagrams = [push_data(i, [phy]) for i, (phy, _) in enumerate(uplinks)]
        start, cpu0 = time.perf_counter(), time.process_time()
        for i, datagram in enumerate(datagrams):
            due = start + i / LATENCY_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[uplinks[i][1]] = time.perf_counter()
            sock.send(datagram)
        deadline = time.perf_counter() + 30
        while len(acked_at) < total and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        out["latency_cpu_us"] = (time.process_time() - cpu0) / total * 1e6
        latencies = [(acked_at[rid] - t) * 1000 for rid, t in sent_at.items() if rid in acked_at]
        out["latency_n"] = len(latencies)
        out["latency_lost"] = total - len(latencies)
        out["p50"] = percentile(latencies, 50)
        out["p99"] = percentile(latencies, 99)
        out["max"] = max(latencies)
        out["latency_batched"] = forwarder.stats.historical - base_hist
    finally:
        sock.close()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
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
    cfg = default_config(GW, data, frontend="semtech-udp")
    cfg = dataclasses.replace(
        cfg, mqtt=dataclasses.replace(cfg.mqtt, host="127.0.0.1", port=settings["port"]),
        radio=dataclasses.replace(cfg.radio, semtech_udp=SemtechUdpConfig("127.0.0.1", 0)),
    )
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_e2e", "child",
         json.dumps({"data": str(data), "port": broker.port})],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdin is not None and proc.stdout is not None
        memory = json.loads(proc.stdout.readline())
        broker.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        drain = json.loads(proc.stdout.readline())
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return {**memory, **drain, "build_s": build_s}


# ------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def rows(live: dict[str, Any], backlog: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, verdict) rows."""
    throughput_label = (f"uplinks/s, UDP in -> PUBACK ({THROUGHPUT_UPLINKS:,} uplinks in "
                        f"{live['throughput_messages']:,} messages, "
                        f"{live['throughput_packs']:,} of them packs)")
    p50_label = (f"latency p50 at {LATENCY_RATE:,} uplinks/s ({live['latency_n']:,} uplinks, "
                 f"{live['latency_batched']:,} of them sent in packs)")
    drain_label = (f"backlog drain, {backlog['drained']:,} records of {BACKLOG_NODES:,} devices "
                   f"({backlog['messages']:,} messages)")
    return [
        (throughput_label,
         f"{live['throughput']:,.0f} /s", f">= {TARGET_UPLINKS_S:,} /s",
         _verdict(live["throughput"] >= TARGET_UPLINKS_S)),
        (p50_label,
         f"{live['p50']:.1f} ms", "", ""),
        (f"latency p99 at {LATENCY_RATE:,} uplinks/s (max {live['max']:.1f} ms)",
         f"{live['p99']:.1f} ms", f"< {TARGET_P99_MS:.0f} ms",
         _verdict(live["p99"] < TARGET_P99_MS and live["latency_lost"] == 0)),
        (drain_label,
         f"{backlog['drained'] / backlog['seconds']:,.0f} /s", f">= {TARGET_DRAIN_S:,} /s",
         _verdict(backlog["drained"] / backlog["seconds"] >= TARGET_DRAIN_S)),
        (f"agent RSS, {backlog['devices']:,} nodes + {backlog['buffered']:,} records buffered",
         f"{backlog['rss_mb']:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB",
         _verdict(backlog["rss_mb"] < TARGET_RSS_MB)),
        ("agent peak RSS (VmHWM) after draining them", f"{backlog['hwm_mb']:.1f} MB",
         f"< {TARGET_RSS_MB:.0f} MB", _verdict(backlog["hwm_mb"] < TARGET_RSS_MB)),
    ]


def main() -> None:
    """Run every measurement and print the table."""
    from bench.table import print_table

    logging.disable(logging.WARNING)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with private_broker(tmp / "mosquitto") as broker:
            live = _run(live_figures(tmp, broker))
            backlog = backlog_figures(tmp, broker)
    print_table(("figure (agent on one core)", "measured", "target", ""), rows(live, backlog))
    print(f"\nagent CPU time (all its threads) per uplink: {live['throughput_cpu_us']:.0f} µs "
          f"at full rate (with the in-process sender), {live['latency_cpu_us']:.0f} µs at "
          f"{LATENCY_RATE:,} uplinks/s, {backlog['cpu_s'] / backlog['drained'] * 1e6:.1f} µs "
          f"per drained record ({backlog['cpu_s']:.1f} s CPU for the backlog, i.e. "
          f"{backlog['drained'] / backlog['cpu_s']:,.0f} records per CPU-second)")
    print(f"\n(backlog of {backlog['buffered']:,} records built in {backlog['build_s']:.0f} s; "
          f"{os.cpu_count()} CPUs on this machine, shared with the broker and the load "
          f"generator; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after: "
          f"other work on the machine slows every figure; event loop {_loop_name()})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _run(child(sys.argv[2]))
    else:
        main()
