"""The foundation slice end to end, with real parts only.

MicroPython nodes (the real firmware, compiled with mpy-cross, in the real VM) read a simulated
SHT4x and send LoRaWAN uplinks through a register-level SX1276 on the simulated channel; the
gateway agent checks, stores, signs and publishes them to a private Mosquitto; the test reads
them back as the hypervisor would and verifies every signature with pycose, an independent COSE
implementation, and decodes the SenML with cbor2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import aiomqtt
import cbor2
import pytest
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from gateway.agent import Agent
from gateway.config import GatewayConfig, default_config
from gateway.keys import generate_signing_key
from gateway.radio import RxFrame
from gateway.radio.sim import SimFrontEnd
from gateway.store import Store
from protocol import lorawan
from sim.clock import DEFAULT_EPOCH, VirtualClock
from sim.district import District, NodeSpec, random_node

pytestmark = [pytest.mark.broker, pytest.mark.vm]

SENML_LABELS = {-2: "bn", -3: "bt", 0: "n", 1: "u", 2: "v", 3: "vs", 4: "vb", 6: "t"}


def _pycose_verify(message: bytes, public_bytes: bytes) -> bytes:
    """Verify with pycose (not our code) and return the payload."""
    msg = Sign1Message.decode(message)
    msg.key = OKPKey(crv=Ed25519, x=public_bytes)
    assert msg.verify_signature(), "pycose rejects the gateway's signature"
    return msg.payload


class Slice:
    """Broker, gateway and a district of VM nodes, wired the way `cityedge demo` wires them.

    Subclasses may start virtual time elsewhere (``epoch``) and add to the gateway's
    configuration (``configure``: trusted keys, groups, rules)."""

    epoch: float = DEFAULT_EPOCH

    def __init__(self, tmp: Path, broker, nodes: list[NodeSpec]) -> None:
        self.clock = VirtualClock(speed=None, epoch=self.epoch)
        self.district = District(self.clock, tmp / "district")
        cfg = default_config("test-gw", tmp / "gw")
        self.config = self.configure(dataclasses.replace(
            cfg, mqtt=dataclasses.replace(cfg.mqtt, host=broker.host, port=broker.port)))
        self.key = generate_signing_key(Path(self.config.gateway.signing_key))
        self.store = Store.open(self.config.store.path)
        self.console: dict[str, list[str]] = {}  # each node's console lines
        for spec in nodes:
            self.district.add_node(spec, on_console=self.console.setdefault(spec.dev_eui, []).append)
        self.district.register(self.store)
        self.frontend = SimFrontEnd(self.config.radio, concentrator=self.district.concentrator,
                                    clock=self.clock)
        self.agent = Agent(self.config, frontend=self.frontend, signing_key=self.key,
                           store=self.store)

    def configure(self, config: GatewayConfig) -> GatewayConfig:
        """The gateway's configuration (the default one, on the test's broker)."""
        return config

    def run_district(self, seconds: float) -> threading.Thread:
        self.district.start()
        t = threading.Thread(target=self.clock.run, kwargs={"until_us": int(seconds * 1e6),
                                                             "raise_errors": False}, daemon=True)
        t.start()
        return t

    def close(self) -> None:
        self.clock.stop()
        self.district.stop()
        self.store.close()


async def _collect(broker, want: int, timeout: float) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("cityedge/v1/test-gw/up/#", qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for m in client.messages:
                    got.append(m)
                    if len(got) >= want:
                        break
        except TimeoutError:
            pass  # the assertions say what is missing
    return got


def test_nodes_readings_arrive_signed_and_verifiable_by_an_independent_cose_library(
    tmp_path: Path, mosquitto
) -> None:
    nodes = [random_node(i + 1, position=(150.0 * (i + 1), 40.0), interval_s=60)
             for i in range(2)]
    s = Slice(tmp_path, mosquitto, nodes)

    async def scenario() -> list[aiomqtt.Message]:
        agent_task = asyncio.create_task(s.agent.run())
        await asyncio.wait_for(s.agent.started.wait(), 10)
        collector = asyncio.create_task(_collect(mosquitto, want=8, timeout=120))
        await asyncio.sleep(0.3)
        s.run_district(300)
        try:
            return await collector
        finally:
            agent_task.cancel()

    try:
        messages = asyncio.run(scenario())
    finally:
        s.close()

    assert len(messages) >= 6
    devs = set()
    rids = set()
    health: set[str] = set()
    readings = 0
    for m in messages:
        payload = _pycose_verify(bytes(m.payload), s.key.public_bytes)
        pack = cbor2.loads(payload)
        assert isinstance(pack, list) and pack
        first = pack[0]
        base = first[-2]
        dev = str(m.topic).rsplit("/", 1)[1]
        assert base == f"urn:dev:mac:{dev}:"
        values = {rec.get(0): rec.get(2) for rec in pack}
        if "supply" in values:  # the node's health uplink (FPort 20), sent at every boot
            assert values["supply"] == pytest.approx(3.0)
            health.add(dev)
        else:
            assert -40 < values["temperature"] < 60
            assert 0 <= values["humidity"] <= 100
            readings += 1
        assert values["rssi"] < -30
        rid = pack[0]["rid"]
        assert rid == f"test-gw:{dev}:{values['fcnt']}"
        assert all(rec["rid"] == rid for rec in pack)
        devs.add(dev)
        rids.add(rid)
    assert devs == {n.dev_eui for n in nodes}
    assert health == devs, "every node reports its health at boot"
    assert readings >= 4
    assert len(rids) == len(messages), "each uplink carries its own stable id"
    assert s.agent.counters["accepted"] >= 6


def _frame(phy: bytes) -> RxFrame:
    return RxFrame(phy=phy, tmst_us=0, freq_hz=868100000, sf=7, bw_khz=125, rssi_dbm=-80.0,
                   snr_db=7.0, received_at=time.time())


def test_bad_frames_are_counted_and_never_stop_the_agent(tmp_path: Path, mosquitto) -> None:
    spec = random_node(7)
    s = Slice(tmp_path, mosquitto, [spec])
    aes = lorawan.default_aes()
    addr = int(spec.dev_addr, 16)

    def up(fcnt: int, key: bytes = spec.nwk_s_key, devaddr: int = addr) -> RxFrame:
        from protocol import payload as codec

        port, data = codec.encode_uplink("air", {"temperature": 20.5, "humidity": 50.0})
        return _frame(lorawan.build_data_frame(aes, lorawan.MTYPE_UNCONFIRMED_UP, devaddr, fcnt,
                                               port, data, key, spec.app_s_key))

    frames = [
        _frame(b""), _frame(b"\x40\x01"), _frame(bytes(range(40))),   # garbage
        up(5, key=bytes(16)),                                        # bad MIC
        up(5, devaddr=0x01020304),                                   # unknown DevAddr
        up(5), up(5),                                                # good, then retransmission
        up(3),                                                       # replayed (behind)
        up(6),                                                       # good
    ]

    async def scenario() -> None:
        task = asyncio.create_task(s.agent.run())
        await asyncio.wait_for(s.agent.started.wait(), 10)
        for f in frames:
            await s.frontend.queue.put(f)
        for _ in range(100):
            if s.store.count() == 0 and s.agent.counters["accepted"] == 2:
                break
            await asyncio.sleep(0.05)
        assert not task.done(), "the agent must keep running"
        task.cancel()

    try:
        asyncio.run(scenario())
        c = s.agent.counters
        assert c["rejected_garbage"] == 3
        assert c["rejected_bad_mic"] == 1
        assert c["rejected_unknown_devaddr"] == 1
        assert c["rejected_retransmission"] == 1
        assert c["rejected_replay"] == 1
        assert c["accepted"] == 2
        assert s.store.get_device(spec.dev_eui).fcnt_up == 6
    finally:
        s.close()
