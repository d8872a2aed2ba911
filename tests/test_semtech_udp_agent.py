"""The gateway agent fed by Semtech UDP: test packet forwarders -> agent -> private Mosquitto.

Two forwarders (real UDP sockets, protocol v2) hear the same LoRaWAN frames of a registered
node; the agent receives each once through the semtech-udp front end, checks, stores, signs and
publishes it, and the test reads the signed SenML back from the broker as the hypervisor would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import aiomqtt
import cbor2
import pytest

from gateway.agent import Agent
from gateway.config import SemtechUdpConfig, default_config
from gateway.keys import generate_signing_key
from gateway.radio.semtech_udp import SemtechUdpFrontEnd
from gateway.store import Device, Store
from gateway.uplink.cose import verify1
from protocol import lorawan
from protocol import payload as codec
from sim.packet_forwarder import PacketForwarder

pytestmark = [pytest.mark.broker]

DEV_EUI = "70b3d57ed0000042"
DEV_ADDR = "26011f42"


def test_agent_publishes_uplinks_received_through_semtech_udp_once_with_best_metadata(
        tmp_path: Path, mosquitto) -> None:
    cfg = default_config("udp-gw", tmp_path / "gw")
    cfg = dataclasses.replace(
        cfg,
        mqtt=dataclasses.replace(cfg.mqtt, host=mosquitto.host, port=mosquitto.port),
        radio=dataclasses.replace(cfg.radio, frontend="semtech-udp",
                                  semtech_udp=SemtechUdpConfig(bind="127.0.0.1", port=0)),
    )
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    store = Store.open(cfg.store.path)
    nwk, app = os.urandom(16), os.urandom(16)
    store.upsert_device(Device(dev_eui=DEV_EUI, role="air", dev_addr=DEV_ADDR, nwk_s_key=nwk,
                               app_s_key=app))
    agent = Agent(cfg, signing_key=key, store=store)  # front end chosen by the config
    assert isinstance(agent.frontend, SemtechUdpFrontEnd)
    aes = lorawan.default_aes()

    def frame(fcnt: int) -> bytes:
        port, data = codec.encode_uplink("air", {"temperature": 20.0 + fcnt, "humidity": 50.0})
        return lorawan.build_data_frame(aes, lorawan.MTYPE_UNCONFIRMED_UP, int(DEV_ADDR, 16),
                                        fcnt, port, data, nwk, app)

    async def scenario() -> list[aiomqtt.Message]:
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 10)
        server = agent.frontend.address[:2]
        got: list[aiomqtt.Message] = []
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client, \
                PacketForwarder(server, "aa555a0000000001") as near, \
                PacketForwarder(server, "aa555a0000000002") as far:
            await client.subscribe("cityedge/v1/udp-gw/up/#", qos=1)
            await asyncio.wait_for(near.pull_acked.wait(), 10)
            await asyncio.wait_for(far.pull_acked.wait(), 10)
            for fcnt in range(1, 6):
                phy = frame(fcnt)
                assert await far.uplink(phy, rssi_dbm=-118, snr_db=-12.5, sf=10)
                assert await near.uplink(phy, rssi_dbm=-64 - fcnt, snr_db=9.0, sf=10)
            bad = {"rxpk": [{"datr": "SF7BW125", "data": 17}]}
            assert await near.push(bad["rxpk"])  # a broken rxpk is counted, nothing else
            async with asyncio.timeout(60):
                async for m in client.messages:
                    got.append(m)
                    if len(got) >= 5:
                        break
            assert not task.done(), "the agent keeps running"
        task.cancel()
        return got

    try:
        messages = asyncio.run(scenario())
    finally:
        store.close()

    fcnts = []
    for m in messages:
        assert str(m.topic) == f"cityedge/v1/udp-gw/up/{DEV_EUI}"
        pack = cbor2.loads(verify1(bytes(m.payload), {key.kid: key.public_key}).payload)
        values = {rec.get(0): rec.get(2) for rec in pack}
        fcnt = values["fcnt"]
        fcnts.append(fcnt)
        assert values["rssi"] == -64 - fcnt, "metadata of the best reception (the near one)"
        assert values["snr"] == 9.0 and values["spreading_factor"] == 10
        assert values["temperature"] == pytest.approx(20.0 + fcnt, abs=0.01)
    assert sorted(fcnts) == [1, 2, 3, 4, 5]
    c = agent.frontend.counters
    assert c["semtech_uplinks"] == 5 and c["semtech_duplicate"] == 5
    assert c["semtech_bad_field"] == 1
    assert agent.counters["accepted"] == 5
    assert agent.counters["rejected_retransmission"] == 0, "duplicates never reach the network"


def test_the_agent_acknowledges_a_confirmed_uplink_through_the_forwarder_that_heard_it_best(
        tmp_path: Path, mosquitto) -> None:
    cfg = default_config("udp-gw", tmp_path / "gw")
    cfg = dataclasses.replace(
        cfg,
        mqtt=dataclasses.replace(cfg.mqtt, host=mosquitto.host, port=mosquitto.port),
        radio=dataclasses.replace(cfg.radio, frontend="semtech-udp",
                                  semtech_udp=SemtechUdpConfig(bind="127.0.0.1", port=0)),
    )
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    store = Store.open(cfg.store.path)
    nwk, app = os.urandom(16), os.urandom(16)
    store.upsert_device(Device(dev_eui=DEV_EUI, role="air", dev_addr=DEV_ADDR, nwk_s_key=nwk,
                               app_s_key=app))
    agent = Agent(cfg, signing_key=key, store=store)
    aes = lorawan.default_aes()
    port, data = codec.encode_uplink("air", {"temperature": 21.5, "humidity": 40.0})
    phy = lorawan.build_data_frame(aes, lorawan.MTYPE_CONFIRMED_UP, int(DEV_ADDR, 16), 1, port,
                                   data, nwk, app)

    async def scenario() -> None:
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 10)
        server = agent.frontend.address[:2]
        async with PacketForwarder(server, "aa555a0000000001") as weak, \
                PacketForwarder(server, "aa555a0000000002") as strong:
            await asyncio.wait_for(weak.pull_acked.wait(), 10)
            await asyncio.wait_for(strong.pull_acked.wait(), 10)
            tmst = strong.tmst()
            await weak.uplink(phy, tmst=weak.tmst(), rssi_dbm=-119, snr_db=-11.0, sf=9)
            await strong.uplink(phy, tmst=tmst, rssi_dbm=-70, snr_db=8.0, sf=9,
                                freq_hz=868_300_000)
            dl = await asyncio.wait_for(strong.downlinks.get(), 30)
            assert dl.error == "NONE" and weak.downlinks.empty()
            assert dl.txpk.tmst == (tmst + 1_000_000) % 2**32  # RX1, one second after
            assert dl.txpk.freq_hz == 868_300_000 and dl.txpk.sf == 9 and dl.txpk.iq_inverted
            down = lorawan.parse_frame(dl.txpk.phy)
            assert down.devaddr == int(DEV_ADDR, 16)
            assert down.mtype == lorawan.MTYPE_UNCONFIRMED_DOWN and down.ack
            assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(scenario())
    finally:
        store.close()
