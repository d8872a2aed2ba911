"""A mixed district end to end, with real parts only.

Air, noise, soil and lighting nodes (the real firmware in the real MicroPython VM, each role on
register-level models of its chips) join over the air through the gateway agent's OTAA join
server, send their readings through the simulated channel to an 8-channel concentrator, and the
agent publishes them, signed, to a private Mosquitto; the test reads them back as the hypervisor
would and verifies every signature with pycose. Commands go down through the agent's network
side: a dim to the Class C lighting cabinet at once, a valve_open to the Class A soil node after
its next uplink; each node's acknowledgement comes back on FPort 30 and is published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from gateway.agent import Agent
from gateway.config import default_config
from gateway.keys import generate_signing_key
from gateway.radio.sim import SimFrontEnd
from gateway.store import Store
from protocol.payload import encode_command
from sim.clock import VirtualClock
from sim.district import (
    DIJON,
    EU868_8CH_HZ,
    District,
    NodeSpec,
    device_for,
    mixed_specs,
    random_node,
)
from tests.test_end_to_end import Slice

pytestmark = [pytest.mark.broker, pytest.mark.vm]

DIM_SEQ = 7
VALVE_SEQ = 9


def _pycose_verify(message: bytes, public_bytes: bytes) -> bytes:
    """Verify with pycose (not our code) and return the payload."""
    msg = Sign1Message.decode(message)
    msg.key = OKPKey(crv=Ed25519, x=public_bytes)
    assert msg.verify_signature(), "pycose rejects the gateway's signature"
    return msg.payload


@dataclasses.dataclass
class Published:
    """One verified message: topic kind, device, SenML values by name."""

    kind: str
    dev: str
    values: dict[str, Any]


def _values(pack: list[dict[int, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in pack:
        name = rec.get(0)
        for label in (2, 3, 4):  # v, vs, vb
            if label in rec:
                out[name] = rec[label]
    return out


class MixedDistrict(Slice):
    """Broker, agent and a mixed district in one virtual clock at full speed, paced by the agent."""

    def __init__(self, tmp: Path, broker: Any, specs: list[NodeSpec]) -> None:
        super().__init__(tmp, broker, specs)
        self.hooks: list[Callable[[], None]] = []  # run after each processed group, time held
        original = self.agent.process

        async def process(frames: list[Any]) -> int:
            n = await original(frames)
            for hook in list(self.hooks):
                hook()
            return n

        self.agent.process = process  # type: ignore[method-assign]
        self.district.pace_agent(self.agent)
        self.errors: list[BaseException] = []
        self.clock.on_error = lambda part, exc: self.errors.append(exc)

    def hold_until(self, ready: Callable[[], bool]) -> None:
        """Hold virtual time from now until ``ready()``: like ``pace_agent``, the gateway's few
        milliseconds of work (here: handing a downlink to the concentrator) take no virtual
        time."""

        def wait() -> None:  # scheduler thread
            for _ in range(1000):  # wall-clock bound only: the assertions say what went wrong
                if ready():
                    return
                time.sleep(0.005)

        self.clock.call_later(0, wait)

    async def collect(self, broker: Any, done: Callable[[list[Published]], bool],
                      timeout: float) -> list[Published]:
        """Verified messages under up/ and event/ until ``done(messages)`` or ``timeout``."""
        got: list[Published] = []
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.subscribe("cityedge/v1/test-gw/up/#", qos=1)
            await client.subscribe("cityedge/v1/test-gw/event/#", qos=1)
            try:
                async with asyncio.timeout(timeout):
                    async for m in client.messages:
                        parts = str(m.topic).split("/")
                        payload = _pycose_verify(bytes(m.payload), self.key.public_bytes)
                        decoded = cbor2.loads(payload)
                        values = _values(decoded) if isinstance(decoded, list) else {}
                        got.append(Published(parts[3], parts[4], values))
                        if done(got):
                            break
            except TimeoutError:
                pass  # the assertions say what is missing
        return got

    def run_collecting(self, broker: Any, done: Callable[[list[Published]], bool], *,
                       seconds: float, timeout: float) -> list[Published]:
        """Run the agent and ``seconds`` of the district, collecting what the broker gets until
        ``done`` or ``timeout``; the clock and the agent stop either way."""
        async def scenario() -> list[Published]:
            agent_task = asyncio.create_task(self.agent.run())
            await asyncio.wait_for(self.agent.started.wait(), 10)
            collector = asyncio.create_task(self.collect(broker, done, timeout=timeout))
            await asyncio.sleep(0.3)
            self.run_district(seconds)
            try:
                return await collector
            finally:
                self.clock.stop()
                agent_task.cancel()

        return asyncio.run(scenario())


def _readings(got: list[Published], dev: str, key: str) -> list[dict[str, Any]]:
    return [p.values for p in got if p.kind == "up" and p.dev == dev and key in p.values]


def _ack(got: list[Published], dev: str, seq: int) -> dict[str, Any] | None:
    for p in got:
        if p.kind == "up" and p.dev == dev and p.values.get("cmd_seq") == seq:
            return p.values
    return None


def test_mixed_district_joins_reports_and_obeys_commands_through_the_agent(
    tmp_path: Path, mosquitto
) -> None:
    specs = mixed_specs(roles=["air", "noise", "soil", "lighting"], interval_s=60)
    specs.append(random_node(9, role="air", position=(-250.0, 120.0), interval_s=60))  # ABP
    air, noise, soil, light, abp = (s.dev_eui for s in specs)
    m = MixedDistrict(tmp_path, mosquitto, specs)
    soil_node = m.district.node(soil)
    light_node = m.district.node(light)
    queued: dict[str, Any] = {}

    def queue_commands() -> None:
        """Once a node has a session, queue its command (virtual time held)."""
        cabinet = m.store.get_device(light)
        if "dim" not in queued and cabinet.dev_addr is not None:
            # Class C, as soon as it has a session: the network side holds it until the new
            # session is confirmed by an uplink and that uplink's receive windows have closed.
            # Confirmed, as commands are: should the cabinet miss it (it does not listen while
            # it waits for its own duty cycle), its next uplink without ACK brings it again.
            queued["dim"] = m.agent.network.queue_downlink(
                light, 40, encode_command({"cmd": "dim", "seq": DIM_SEQ, "level": 40,
                                           "ramp_s": 0}), confirmed=True)
        dim = queued.get("dim")
        if (dim is not None and cabinet.fcnt_up >= 0
                and dim in m.agent.network.queued(light)):  # about to go out
            attempts = dim.attempts
            m.hold_until(lambda: dim.attempts > attempts or dim.done)
        if "valve" not in queued and m.store.get_device(soil).fcnt_up >= 1:
            queued["valve"] = m.agent.network.queue_downlink(
                soil, 40, encode_command({"cmd": "valve_open", "seq": VALVE_SEQ,
                                          "seconds": 120}))
            queued["valve_fcnt"] = m.store.get_device(soil).fcnt_up

    m.hooks.append(queue_commands)

    def done(got: list[Published]) -> bool:
        return (all(_readings(got, d, k) for d, k in ((air, "pm2_5"), (noise, "laeq"),
                                                      (soil, "soil_moisture"), (abp, "temperature")))
                and _ack(got, light, DIM_SEQ) is not None and _ack(got, soil, VALVE_SEQ) is not None)

    try:
        got = m.run_collecting(mosquitto, done, seconds=600, timeout=90)
        sessions = {dev: m.store.get_device(dev) for dev in (air, noise, soil, light)}
    finally:
        m.close()

    assert not m.errors, m.errors
    summary = [(p.kind, p.dev[-4:], p.values.get("fcnt"),
                sorted(k for k in p.values if not k.startswith("fault_"))) for p in got]
    assert done(got), summary
    # OTAA: each of the four joined through the agent's join server, the ABP node did not need to.
    joined = {p.dev for p in got if p.kind == "event"}
    assert {air, noise, soil, light} <= joined
    assert m.agent.counters["joins"] >= 4
    for dev, d in sessions.items():
        assert d.dev_addr is not None and d.nwk_s_key is not None, f"{dev} has no session"
    # Each role's readings, decoded and published, signed (every message passed pycose).
    pm = _readings(got, air, "pm2_5")
    assert pm and 0 < pm[0]["pm2_5"] < 500 * 1e-9, pm  # kg/m3
    assert -30 < pm[0]["temperature"] < 45 and 0 <= pm[0]["humidity"] <= 100
    noise_r = _readings(got, noise, "laeq")[0]
    assert 30 < noise_r["laeq"] < 100 and noise_r["lamax"] >= noise_r["laeq"] >= noise_r["la90"]
    soil_r = _readings(got, soil, "soil_moisture")[0]
    assert 0.05 < soil_r["soil_moisture"] < 0.5  # a ratio: 5 % .. 50 % volumetric
    assert _readings(got, abp, "temperature")
    light_r = [p.values for p in got if p.kind == "up" and p.dev == light and "level" in p.values]
    assert light_r, "the cabinet reports its level"
    # Class C: the dim lands at once, the lamps follow, the ack comes back on FPort 30.
    dim_ack = _ack(got, light, DIM_SEQ)
    assert dim_ack is not None and dim_ack["cmd_result"] == "done", dim_ack
    assert queued["dim"].status == "acked"  # the answer uplink carried the frame's ACK
    assert m.agent.counters["downlink_class_c_held"] >= 1, "timed after the cabinet's windows"
    lamps = light_node.models["lamps"]
    assert lamps()[0] == pytest.approx(0.4 * lamps.full_a, rel=0.1), "lamps at 40 %"
    assert [p.values["level"] for p in got if p.dev == light and "level" in p.values][-1] \
        == pytest.approx(0.4)
    # Class A: the valve command waited for the soil node's next uplink, then opened the valve.
    valve_ack = _ack(got, soil, VALVE_SEQ)
    assert valve_ack is not None and valve_ack["cmd_result"] == "done", valve_ack
    assert soil_node.models["valve"].moves >= 1
    assert sessions[soil].fcnt_up > queued["valve_fcnt"] + 1
    # The concentrator hears 8 channels, consistent with the agent's (empty) CFList for sim.
    assert m.district.concentrator.freqs_hz == EU868_8CH_HZ
    assert m.district.concentrator.hold_timeouts == 0


def test_node_specs_become_config_files_and_registry_entries(tmp_path: Path) -> None:
    import json

    specs = mixed_specs(6, interval_s=300)
    assert [s.role for s in specs] == ["air", "noise", "soil", "lighting", "air", "lighting"]
    for spec in specs:
        cfg = json.loads(spec.config_json())
        dev = device_for(spec)
        assert cfg["activation"] == "otaa" and bytes.fromhex(cfg["otaa"]["app_key"]) == spec.app_key
        assert dev.app_key == spec.app_key and dev.join_eui == cfg["otaa"]["join_eui"]
        assert dev.dev_class == ("C" if spec.role == "lighting" else "A")
        lat, lon = cfg["location"]["lat"], cfg["location"]["lon"]
        assert abs(lat - DIJON[0]) < 0.01 and abs(lon - DIJON[1]) < 0.01  # within ~1 km
        assert (dev.latitude, dev.longitude) == (lat, lon)
        if spec.role == "lighting":
            assert cfg["settings"]["pins"]["relay"] == 13 and cfg["settings"]["pins"]["s0"] == 32
        if spec.role == "soil":
            assert cfg["settings"]["max_open_s"] <= 1800
    abp = random_node(3, role="noise", settings={"window_s": 5})
    cfg = json.loads(abp.config_json())
    assert cfg["activation"] == "abp" and cfg["settings"]["window_s"] == 5
    assert device_for(abp).nwk_s_key == abp.nwk_s_key and device_for(abp).app_key is None
    with pytest.raises(ValueError, match="app_key"):
        NodeSpec(dev_eui="70b3d57ed0000099")
    with pytest.raises(ValueError, match="role"):
        random_node(4, role="parking")


def test_demo_view_shows_joins_role_readings_and_command_acks(tmp_path: Path) -> None:
    from rich.console import Console

    from cityedge.demo import View, readings_text
    from cityedge.hypervisor import HypervisorMessage

    clock = VirtualClock(speed=None)
    district = District(clock, tmp_path / "district")
    cfg = default_config("demo-gw", tmp_path / "gw")
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    store = Store.open(cfg.store.path)
    agent = Agent(cfg, frontend=SimFrontEnd(cfg.radio, concentrator=district.concentrator,
                                            clock=clock), signing_key=key, store=store)
    try:
        view = View(agent, district, clock, live=True)

        def msg(kind: str, dev: str, verified: bool = True, **values: Any) -> HypervisorMessage:
            recs: list[dict] = [{"bn": f"urn:dev:mac:{dev}:"}]
            for k, v in values.items():
                recs.append({"n": k, ("vs" if isinstance(v, str) else "v"): v})
            return HypervisorMessage(f"cityedge/v1/demo-gw/{kind}/{dev}", "demo-gw", kind, dev,
                                     verified=verified, records=recs)

        lamp = "70b3d57ed0000004"
        view.add(msg("event", lamp, join="01020304"))
        view.add(msg("up", lamp, level=0.4, level_source="override", lamp_current=0.8, fcnt=3))
        view.command_sent(lamp, 7, "dim 40 %")
        assert view.rows[lamp].command == "dim 40 % -> queued"
        view.add(msg("up", lamp, cmd_seq=7, cmd_result="done", fcnt=4))
        row = view.rows[lamp]
        assert row.joined and row.command == "dim 40 % -> done" and view.acks == 1
        assert "level 40 %" in readings_text("lighting", row.readings)  # the ack kept the readings
        view.add(msg("up", "70b3d57ed0000009", verified=False))
        assert view.unverified == 1 and view.rows["70b3d57ed0000009"].verified is False
        console = Console(width=200, record=True)
        console.print(view.render())
        text = console.export_text()
        assert "NOT VERIFIED" in text and "dim 40 % -> done" in text and "joins" in text
    finally:
        store.close()
    assert readings_text("air", {"pm2_5": 1.25e-8, "pm10": 2e-8, "temperature": 14.2,
                                 "humidity": 71}).startswith("PM2.5 12.5 PM10 20.0 µg/m³")
    assert readings_text("noise", {"laeq": 62.14, "lamax": 70, "la90": 55}) \
        == "LAeq 62.1 Lmax 70.0 L90 55.0 dB(A)"
    assert "moisture 31 %" in readings_text("soil", {"soil_moisture": 0.31, "valve": "open"})


def test_soil_plot_dries_in_the_sun_and_is_wetted_by_rain_and_by_its_valve() -> None:
    from sim.environment import Environment, SoilPlot

    env = Environment(seed=3, latitude=DIJON[0], longitude=DIJON[1], mean_temp_c=25.0)
    day = 86_400.0
    t0 = 1_750_000_000.0
    rainy = [t0 + h * 600.0 for h in range(6 * 24 * 10) if env.rain_mm_h(t0 + h * 600.0) > 0]
    dry = [t0 + h * 600.0 for h in range(6 * 24 * 10) if env.rain_mm_h(t0 + h * 600.0) == 0]
    assert rainy and len(dry) > len(rainy), "showers now and then, dry most of the time"

    class NoRain(Environment):
        def rain_mm_h(self, epoch_s: float) -> float:
            return 0.0

    hot = NoRain(seed=3, mean_temp_c=25.0)
    plot = SoilPlot(hot, start_moisture=35.0)
    plot.moisture(t0)
    assert plot.moisture(t0 + 2 * day) < 34.0, "evaporation dries the bed"
    valve_open = {"on": False}
    watered = SoilPlot(hot, start_moisture=20.0,
                       watering_lpm=lambda: 6.0 if valve_open["on"] else 0.0)
    before = watered.moisture(t0)
    valve_open["on"] = True
    after = watered.moisture(t0 + 600.0)  # 10 min at 6 L/min on 4 m2 = 15 mm
    assert after - before == pytest.approx(7.5, abs=0.5) and watered.watered_l == pytest.approx(60)
    wet = SoilPlot(env, start_moisture=20.0)
    wet.moisture(rainy[0] - 1800.0)
    assert wet.moisture(rainy[0] + 1800.0) > 20.0 and wet.rain_mm > 0
