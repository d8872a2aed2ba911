"""What the gateway benchmarks share: the event loop, CPU pinning, a private Mosquitto, benchmark
nodes and their frames, and a packet forwarder in a process of its own.

The measured agent runs pinned to CPU 0; the load generator (a stand-in for the concentrator's
packet forwarder, another machine in a real deployment) and the broker run on CPU 1, so the
agent's figures are its own.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, GatewaySection, SemtechUdpConfig, default_config
from gateway.store import Device, Store
from protocol import lorawan
from protocol import payload as codec

GW = "b827ebfffe0be7c4"
EUI_BASE = "70b3d57ed0"
FORWARDER_EUI = "0016c001ff10a235"
AGENT_CPU = 0
HELPER_CPU = 1  # load generator and broker
WINDOW = 32  # PUSH_DATA datagrams in flight before the generator waits for PUSH_ACKs

_DEFAULT_LOOP = GatewaySection.__dataclass_fields__["event_loop"].default


# ------------------------------------------------------------------------- loop, CPUs, load


def _loop_setting() -> str:
    return os.environ.get("CITYEDGE_EVENT_LOOP") or _DEFAULT_LOOP


def run(main: Any) -> Any:
    """Run ``main`` on the agent's default event loop (``[gateway] event_loop``; the
    environment's CITYEDGE_EVENT_LOOP=asyncio|uvloop picks one, to compare them)."""
    from gateway.service import run_on_loop

    return run_on_loop(main, _loop_setting())


def loop_name() -> str:
    """The event loop ``run`` uses (asyncio or uvloop)."""
    from gateway.service import event_loop_factory

    return event_loop_factory(_loop_setting()).__module__.split(".")[0]


def pin(cpu: int, pid: int = 0) -> None:
    """Run process ``pid`` (0: this one) on ``cpu`` when the machine has it (best effort)."""
    try:
        if cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


@contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process on ``cpu`` inside the block, its former CPUs restored after."""
    try:
        before = os.sched_getaffinity(0)
    except AttributeError:  # no affinity on this platform: nothing to pin or restore
        yield
        return
    pin(cpu)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ------------------------------------------------------------------------- broker


@contextmanager
def private_broker(directory: Path) -> Iterator[Any]:
    """A Mosquitto of our own on a free port (never the shared 1883), as the tests start one,
    on the helper CPU (``start_broker`` it again after stopping it)."""
    from tests.fixtures.mosquitto import Broker, _base_lines, find_mosquitto, free_port

    if find_mosquitto() is None:
        raise SystemExit("mosquitto is not installed: make mosquitto")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = Broker(host="127.0.0.1", port=port, directory=directory,
                    config_lines=_base_lines(directory, port) + ["allow_anonymous true"])
    start_broker(broker)
    try:
        yield broker
    finally:
        broker.kill()


def start_broker(broker: Any) -> None:
    """Start ``broker`` (a tests.fixtures Broker) on the helper CPU."""
    broker.start()
    pin(HELPER_CPU, broker.process.pid)


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


def uplinks(nodes: Sequence[Node], count: int) -> list[bytes]:
    """``count`` valid air-quality uplinks (PHYPayloads), round robin over ``nodes``, each
    node's frame counter going up."""
    aes = lorawan.default_aes()
    port, data = codec.encode_uplink("air", {"temperature": 21.37, "humidity": 48.2,
                                             "pm2_5": 12.0, "battery": 3.01})
    out = []
    for i in range(count):
        node = nodes[i % len(nodes)]
        node.fcnt += 1
        out.append(lorawan.build_data_frame(aes, lorawan.MTYPE_UNCONFIRMED_UP, node.dev_addr,
                                            node.fcnt, port, data, node.nwk_s_key,
                                            node.app_s_key))
    return out


def push_data(phys: Sequence[bytes], per_datagram: int) -> list[bytes]:
    """PUSH_DATA datagrams (Semtech UDP protocol v2) carrying ``phys``, ``per_datagram`` rxpk
    entries each."""
    from gateway.radio.semtech_udp import encode_push_data
    from sim.packet_forwarder import rxpk

    out = []
    for n, i in enumerate(range(0, len(phys), per_datagram)):
        packets = [rxpk(phy, tmst=(i + j) * 1000, rssi_dbm=-90, snr_db=7.5)
                   for j, phy in enumerate(phys[i:i + per_datagram])]
        out.append(encode_push_data(n & 0xFFFF, FORWARDER_EUI, packets))
    return out


def gateway_config(data: Path, port: int) -> GatewayConfig:
    """The agent's configuration: semtech-udp on a free local port, the broker on ``port``."""
    cfg = default_config(GW, data, frontend="semtech-udp")
    return dataclasses.replace(
        cfg,
        mqtt=dataclasses.replace(cfg.mqtt, host="127.0.0.1", port=port),
        radio=dataclasses.replace(cfg.radio, semtech_udp=SemtechUdpConfig("127.0.0.1", 0)),
    )


# ------------------------------------------------------------------------- packet forwarder


def _forward(server: tuple[str, int], datagrams: list[bytes], window: int,
             rate_per_s: float | None, done: Any) -> None:
    """Child process: send ``datagrams`` as fast as PUSH_ACKs come back (``window`` in flight),
    or one at a time at ``rate_per_s``; report how many acks never came."""
    pin(HELPER_CPU)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect(server)
    sock.settimeout(2.0)
    in_flight = lost = 0
    t0 = time.monotonic()
    for i, datagram in enumerate(datagrams):
        if rate_per_s is not None:  # paced: datagram i leaves at t0 + i / rate
            due = t0 + i / rate_per_s
            while (now := time.monotonic()) < due:
                time.sleep(min(due - now, 0.0005))
        sock.send(datagram)
        in_flight += 1
        while in_flight >= window or (rate_per_s is not None and in_flight > 0):
            try:
                sock.recv(64)
                in_flight -= 1
            except TimeoutError:
                lost += in_flight
                in_flight = 0
            if rate_per_s is not None:
                break
    while in_flight > 0:
        try:
            sock.recv(64)
            in_flight -= 1
        except TimeoutError:
            lost += in_flight
            break
    done.put(lost)


class PacketForwarder:
    """A packet forwarder in a forked process on the helper CPU, sending pre-encoded PUSH_DATA
    to ``server``: ``lost()`` after the run says how many PUSH_ACKs never came."""

    def __init__(self, server: tuple[str, int], datagrams: list[bytes], *,
                 window: int = WINDOW, rate_per_s: float | None = None) -> None:
        ctx = mp.get_context("fork")
        self._done = ctx.Queue()
        self._proc = ctx.Process(target=_forward, daemon=True,
                                 args=(server, datagrams, window, rate_per_s, self._done))
        self._proc.start()

    def lost(self) -> str:
        """PUSH_ACKs that never came, once the process ended ("?" if it did not report)."""
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
            return "?"
        try:
            return str(self._done.get(timeout=5))
        except queue.Empty:
            return "?"
