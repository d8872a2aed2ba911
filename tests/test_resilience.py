"""Nothing lost: the whole agent (network checks, SQLite store, forwarder) against a real
Mosquitto, through broker outages and through SIGKILL of the agent process at random moments.

Every message the watcher receives is verified with pycose (an independent COSE library). An
uplink counts as "acknowledged" once the agent's store committed it (the child process prints
its rid right after ``accept_uplinks`` returned); each of those must reach the broker, and a
reading delivered twice must carry the same rid and the same records.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
import textwrap
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from gateway.agent import Agent
from gateway.config import GatewayConfig, default_config
from gateway.keys import SigningKey, generate_signing_key
from gateway.radio import RxFrame
from gateway.store import Device, Store
from gateway.uplink.senml import decode_pack
from protocol import lorawan
from protocol import payload as codec
from tests.fixtures.mosquitto import Broker, free_port
from tests.test_forwarder import Watcher, background, per_device, pycose_verify, run

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]
GW = "b827ebfffe00c0de"
AES = lorawan.default_aes()


@dataclasses.dataclass
class Node:
    """A simulated ABP node: keys and its next frame counter."""

    dev_eui: str
    dev_addr: int
    nwk_s_key: bytes
    app_s_key: bytes
    fcnt: int = 0

    def frame(self) -> tuple[bytes, str]:
        """The next uplink's PHYPayload and the rid the gateway will give it."""
        self.fcnt += 1
        port, data = codec.encode_uplink("air", {"temperature": 20.0 + self.fcnt % 50 / 10,
                                                 "humidity": 50.0, "pm2_5": 12.0})
        phy = lorawan.build_data_frame(AES, lorawan.MTYPE_UNCONFIRMED_UP, self.dev_addr,
                                       self.fcnt, port, data, self.nwk_s_key, self.app_s_key)
        return phy, f"{GW}:{self.dev_eui}:{self.fcnt}"


def setup_gateway(tmp_path: Path, broker: Broker, n_nodes: int) -> tuple[GatewayConfig,
                                                                          SigningKey, list[Node]]:
    """A gateway configuration on ``broker``, its signing key and registered nodes."""
    cfg = default_config(GW, tmp_path / "gw")
    cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, host=broker.host,
                                                            port=broker.port, keepalive=5))
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    nodes = [Node(f"70b3d57ed0{i:06x}", 0x26100000 + i, os.urandom(16), os.urandom(16))
             for i in range(n_nodes)]
    with Store.open(cfg.store.path) as store:
        for node in nodes:
            store.upsert_device(Device(dev_eui=node.dev_eui, role="air",
                                       dev_addr=f"{node.dev_addr:08x}",
                                       nwk_s_key=node.nwk_s_key, app_s_key=node.app_s_key))
    return cfg, key, nodes


@dataclasses.dataclass
class Delivered:
    """What the watcher received, checked: every message verified by pycose."""

    per_rid: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    order: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    duplicates: int = 0


def check_deliveries(watcher: Watcher, key: SigningKey) -> Delivered:
    """Verify every 'up' message and collect its uplinks; a repeated rid must repeat the same
    records (only the backlog mark may differ)."""
    out = Delivered()
    for message in watcher.on("up"):
        pack = decode_pack(pycose_verify(message.payload, key))
        dev_eui = message.topic.rsplit("/", 1)[1]
        by_rid: dict[str, list[dict[str, Any]]] = {}
        for record in pack:
            record = {k: v for k, v in record.items() if k != "hist"}
            by_rid.setdefault(record["rid"], []).append(record)
        for rid, records in by_rid.items():
            assert rid.split(":")[1] == dev_eui, f"{rid} published on {message.topic}"
            if rid in out.per_rid:
                out.duplicates += 1
                assert out.per_rid[rid] == records, f"{rid}: a duplicate with other content"
            else:
                out.per_rid[rid] = records
            out.order.append((dev_eui, rid))
    return out


# ------------------------------------------------------------------------- broker outage


class QueueFrontEnd:
    """An in-process front end the test feeds directly (the radio is not under test here)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RxFrame] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def feed(self, phy: bytes) -> None:
        self.queue.put_nowait(RxFrame(phy=phy, tmst_us=0, freq_hz=868_100_000, sf=7,
                                      bw_khz=125, rssi_dbm=-91.0, snr_db=7.5,
                                      received_at=time.time()))


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_down_while_uplinks_arrive_loses_nothing_and_keeps_device_order(
        mosquitto: Broker, tmp_path: Path, how: str) -> None:
    """``stop``: every uplink reaches the hypervisor. ``kill`` (SIGKILL of the broker): the
    broker itself may lose messages it acknowledged but had not yet saved or delivered, so
    every uplink must reach the hypervisor or have been acknowledged before the kill."""
    cfg, key, nodes = setup_gateway(tmp_path, mosquitto, n_nodes=8)
    frontend = QueueFrontEnd()
    sent: list[str] = []
    acked_at: dict[str, float] = {}
    killed_at = float("-inf")  # after a broker kill: what it acknowledged may be lost
    # A killed broker may also have lost the hypervisor's session (saved once a second): what
    # it acknowledged after its restart but before the hypervisor subscribed again had nobody
    # to go to. The gateway's part (delete only after PUBACK) is what is checked.
    resubscribed_at = float("-inf")

    def on_acked(records: Any) -> None:
        now = time.monotonic()
        for record in records:
            acked_at.setdefault(record.rid, now)

    def unaccounted(received: set[str]) -> set[str]:
        """Sent uplinks neither delivered nor acknowledged by the broker before a kill."""
        return {rid for rid in sent if rid not in received
                and not acked_at.get(rid, float("inf")) < killed_at
                and not killed_at < acked_at.get(rid, float("inf")) < resubscribed_at}

    async def stream(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for node in nodes:
                phy, rid = node.frame()
                frontend.feed(phy)
                sent.append(rid)
            await asyncio.sleep(0.01)

    async def main() -> None:
        nonlocal killed_at, resubscribed_at
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            agent = Agent(cfg, frontend=frontend, signing_key=key)
            async with background(agent.run()):
                await asyncio.wait_for(agent.started.wait(), 10)
                assert agent.forwarder is not None
                agent.forwarder.on_acked = on_acked
                agent.forwarder.backoff.initial, agent.forwarder.backoff.cap = 0.1, 0.5
                agent.forwarder.publisher.publish_timeout = 3
                await stream(0.5)
                await asyncio.to_thread(mosquitto.kill if how == "kill" else mosquitto.stop)
                await stream(2.0)  # the broker is down; uplinks keep coming
                stored_while_down = agent.store.count()
                assert stored_while_down > 0
                if how == "kill":
                    # any PUBACK seen until now came from the killed broker (some may still
                    # have been in the socket when it died)
                    killed_at = time.monotonic()
                await asyncio.to_thread(mosquitto.start)
                await stream(0.5)
                await watcher.wait_until(
                    lambda: agent.store.count() == 0 and len(agent.store.pending(1)) == 0,
                    timeout=30, what="the store drained after the restart")
                await watcher.wait_until(lambda: watcher.subscribed_at > killed_at,
                                         timeout=30, what="the hypervisor subscribed again")
                if how == "kill":
                    resubscribed_at = watcher.subscribed_at
                try:
                    await watcher.wait_until(
                        lambda: not unaccounted({rid for _, rid in _rids(watcher)}),
                        timeout=30, what="every uplink at the watcher")
                except AssertionError:
                    lost = sorted(unaccounted({rid for _, rid in _rids(watcher)}))
                    raise AssertionError(
                        f"{len(lost)} uplinks missing, e.g. {lost[:3]}; acked "
                        f"{[acked_at.get(r, 0) - killed_at for r in lost[:3]]} s after the "
                        f"restart; {agent.forwarder.stats}") from None
                assert agent.forwarder.stats.connections >= 2
                assert agent.counters["accepted"] == len(sent)
            agent.store.close()
        delivered = check_deliveries(watcher, key)
        assert not unaccounted(set(delivered.per_rid))
        assert set(delivered.per_rid) <= set(sent)
        if how == "stop":
            assert set(delivered.per_rid) == set(sent)
        for dev_eui, fcnts in per_device(delivered.order).items():
            assert fcnts == sorted(fcnts), f"{dev_eui}: first deliveries out of order"

    run(main(), timeout=90)


def _rids(watcher: Watcher) -> list[tuple[str, str]]:
    """(dev_eui, rid) of every uplink received so far, without verifying (for waiting)."""
    out = []
    for message in watcher.on("up"):
        dev_eui = message.topic.rsplit("/", 1)[1]
        for record in decode_pack(_payload(message.payload)):
            out.append((dev_eui, record["rid"]))
    return out


def _payload(message: bytes) -> bytes:
    import cbor2

    return cbor2.loads(message).value[2]


# ------------------------------------------------------------------------- kill -9 of the agent

CHILD = textwrap.dedent("""
    import asyncio, dataclasses, sys, time
    sys.path.insert(0, {root!r})
    from gateway.agent import Agent
    from gateway.config import default_config
    from gateway.keys import load_signing_key
    from gateway.radio import RxFrame
    from gateway.store import Store

    class UdpTestFrontEnd:
        # test-only front end: one datagram = one PHYPayload, on 127.0.0.1
        def __init__(self, port):
            self.port = port
            self.queue = asyncio.Queue()

        async def __aenter__(self):
            queue = self.queue

            class Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    queue.put_nowait(RxFrame(phy=data, tmst_us=0, freq_hz=868100000, sf=7,
                                             bw_khz=125, rssi_dbm=-90.0, snr_db=7.0,
                                             received_at=time.time()))

            loop = asyncio.get_running_loop()
            self.transport, _ = await loop.create_datagram_endpoint(
                Protocol, local_addr=("127.0.0.1", self.port))
            return self

        async def __aexit__(self, *exc):
            self.transport.close()

    async def main():
        cfg = default_config({gw!r}, {data!r})
        cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(
            cfg.mqtt, host="127.0.0.1", port={mqtt_port}, keepalive=5))
        store = Store.open(cfg.store.path)
        commit = store.accept_uplinks

        def accept_and_report(batch, *args, **kwargs):
            results = commit(batch, *args, **kwargs)
            # committed now (or already, for a repeated rid): this is the acknowledgement
            sys.stdout.write("".join("C " + a.rid + chr(10) for a in batch))
            sys.stdout.flush()
            return results

        store.accept_uplinks = accept_and_report
        agent = Agent(cfg, frontend=UdpTestFrontEnd({udp_port}),
                      signing_key=load_signing_key(cfg.gateway.signing_key), store=store)
        task = asyncio.create_task(agent.run())
        await agent.started.wait()
        agent.forwarder.backoff.initial, agent.forwarder.backoff.cap = 0.1, 0.3
        print("READY", flush=True)
        await task

    asyncio.run(main())
""")


class ChildAgent:
    """The agent in a subprocess, with the rids it acknowledged as committed."""

    def __init__(self, script: str, acked: set[str]) -> None:
        self.script = script
        self.acked = acked
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", self.script, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=None, limit=1 << 20)
        self._reader = asyncio.create_task(self._read(self.proc))
        await asyncio.wait_for(self.ready.wait(), 30)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            if not line.endswith(b"\n"):
                return  # cut by the kill: not an acknowledgement
            if line.startswith(b"C "):
                self.acked.add(line[2:-1].decode())
            elif line == b"READY\n":
                self.ready.set()

    async def stop(self, *, kill: bool) -> None:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            proc.kill() if kill else proc.terminate()
        await proc.wait()
        assert self._reader is not None
        await self._reader


def test_agent_killed_with_sigkill_many_times_loses_no_acknowledged_uplink(
        mosquitto: Broker, tmp_path: Path) -> None:
    kills = 12
    _, key, nodes = setup_gateway(tmp_path, mosquitto, n_nodes=20)
    udp_port = free_port()
    script = CHILD.format(root=str(ROOT), gw=GW, data=str(tmp_path / "gw"),
                          mqtt_port=mosquitto.port, udp_port=udp_port)
    acked: set[str] = set()
    sent: set[str] = set()
    rng = random.Random(4)

    async def send_for(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", udp_port))
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for node in rng.sample(nodes, 5):
                    phy, rid = node.frame()
                    transport.sendto(phy)
                    sent.add(rid)
                await asyncio.sleep(0.005)  # ~1,000 uplinks/s
        finally:
            transport.close()

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            child = ChildAgent(script, acked)
            for _ in range(kills):
                await child.start()
                # SIGKILL at a random moment of the stream: in a commit, a publish, a delete
                await send_for(rng.uniform(0.1, 0.8))
                await child.stop(kill=True)
            await child.start()
            try:
                await send_for(0.3)
                await watcher.wait_until(
                    lambda: acked <= {rid for _, rid in _rids(watcher)}, timeout=40,
                    what="every acknowledged uplink at the watcher")
            finally:
                await child.stop(kill=False)
        assert len(acked) > 200, "the stream was too thin to prove anything"
        delivered = check_deliveries(watcher, key)
        missing = acked - set(delivered.per_rid)
        assert not missing, f"{len(missing)} acknowledged uplinks never published"
        assert set(delivered.per_rid) <= sent  # nothing invented
        for dev_eui, fcnts in per_device(delivered.order).items():
            assert fcnts == sorted(fcnts), f"{dev_eui}: first deliveries out of order"

    run(main(), timeout=120)
