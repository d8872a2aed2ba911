"""`cityedge sim plan` and `cityedge sim feed`: the planning model against pure ALOHA, the CLI end
to end, and simulated nodes feeding a real gateway agent over Semtech UDP into a real Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import stat
import threading
from pathlib import Path

import aiomqtt
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityedge.cli import main
from cityedge.sim_cli import parse_duration, parse_nodes
from gateway.agent import Agent
from gateway.config import SemtechUdpConfig, default_config, write_config
from gateway.keys import generate_signing_key
from gateway.registry import read_registry
from gateway.store import Store
from gateway.uplink.cose import verify1
from protocol import lorawan
from protocol.payload import decode_uplink, encode_uplink
from sim.feed import FeedError, new_nodes, run_feed
from sim.planning import (
    TYPICAL_READINGS,
    PlanConfig,
    PlanError,
    Site,
    disc_sites,
    run_plan,
    sites_from_csv,
    split_mix,
    typical_frame,
)

ONE_CHANNEL = (868_100_000,)


# -- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval_s", [260.0, 90.0])
def test_pdr_without_capture_follows_pure_aloha_e_minus_2g(interval_s: float) -> None:
    # 1,000 nodes, one channel, one SF, no capture, Poisson arrivals: every overlap is a loss,
    # so the delivery ratio must be pure ALOHA's e^(-2G) for the offered load G.
    sites = disc_sites({"air": 1000}, 300.0, seed=1)
    result = run_plan(PlanConfig(tuple(sites), ((0.0, 0.0),), interval_s=interval_s,
                                 duration_s=900.0, sf=7, freqs_hz=ONE_CHANNEL, poisson=True,
                                 capture=False, seed=3))
    (sf7,) = result.per_sf
    assert result.lost_sensitivity == 0 and result.sent > 3000
    assert 0.25 < sf7.load_erlang < 0.9
    assert result.pdr == pytest.approx(math.exp(-2 * sf7.load_erlang), abs=0.025)
    assert result.delivered + result.collisions == result.sent


def test_capture_and_more_gateways_deliver_more_of_the_same_traffic() -> None:
    sites = tuple(disc_sites(split_mix(600), 6000.0, seed=2))
    base = PlanConfig(sites, ((0.0, 0.0),), interval_s=300.0, duration_s=1800.0, seed=2)
    no_capture = run_plan(dataclasses.replace(base, capture=False))
    capture = run_plan(base)
    three = run_plan(dataclasses.replace(
        base, gateways=((3300.0, 0.0), (-1650.0, 2858.0), (-1650.0, -2858.0))))
    assert no_capture.sent == capture.sent == three.sent  # same seed, same traffic
    assert no_capture.pdr < capture.pdr < three.pdr
    assert sum(g.best_for for g in three.gateways) == 600
    # more gateways: nodes move to faster spreading factors
    mean_sf = [sum(n.sf for n in r.nodes) / len(r.nodes) for r in (capture, three)]
    assert mean_sf[1] < mean_sf[0]


def test_every_node_keeps_to_the_one_percent_duty_cycle() -> None:
    # SF12 frames every 20 s would be 6 % of the time: the sources must wait instead.
    sites = tuple(Site(f"n{i}", "air", (100.0 * i, 0.0)) for i in range(5))
    result = run_plan(PlanConfig(sites, interval_s=20.0, duration_s=3600.0, sf=12))
    frame_us = result.nodes[0].airtime_us
    for node in result.nodes:
        assert node.deferred > 0
        assert node.max_duty_cycle <= 0.01 + frame_us / 3600e6
    assert result.deferred == sum(n.deferred for n in result.nodes)


def test_a_node_out_of_range_is_lost_below_sensitivity_and_named_worst() -> None:
    sites = (Site("near", "soil", (500.0, 0.0)), Site("far", "soil", (40_000.0, 0.0)))
    result = run_plan(PlanConfig(sites, interval_s=600.0, duration_s=3600.0))
    far = next(n for n in result.nodes if n.name == "far")
    assert far.sf == 12 and far.margin_db < 0
    assert far.sent > 0 and far.lost_sensitivity == far.sent and far.delivered == 0
    assert result.worst(1)[0].name == "far"
    assert result.gateways[0].lost_sensitivity == far.sent


def test_plan_frames_are_real_lorawan_frames_of_the_codec_payload() -> None:
    for role, readings in TYPICAL_READINGS.items():
        phy = typical_frame(role)
        frame = lorawan.parse_frame(phy)
        fport, payload = encode_uplink(role, readings)
        assert frame.fport == fport and len(phy) == 13 + len(payload)


_CSV_HEADERS = st.sampled_from(["", "x_m,y_m\n", "x_m,y_m,role,name\n",
                                 "latitude,longitude,role\n"])


@settings(max_examples=300, deadline=None)
@given(_CSV_HEADERS, st.text(max_size=300))
def test_positions_csv_is_parsed_or_refused_with_a_plan_error(header: str, body: str) -> None:
    text = header + body
    try:
        sites, _grid = sites_from_csv(text, "nodes.csv")
    except PlanError as exc:
        assert str(exc).startswith("nodes.csv")
        return
    assert sites and all(math.isfinite(c) for s in sites for c in s.position)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_duration_and_node_arguments_are_parsed_or_refused(text: str) -> None:
    for parse in (parse_duration, parse_nodes):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError:
            continue
        assert value > 0 if parse is parse_duration else all(n >= 0 for n in value.values())


def test_positions_in_degrees_put_gateways_on_the_same_grid() -> None:
    text = "latitude,longitude,role\n43.5297,5.4474,air\n43.5397,5.4474,lighting\n"
    sites, grid = sites_from_csv(text, "aix.csv")
    assert grid is not None and [s.role for s in sites] == ["air", "lighting"]
    dist = math.dist(sites[0].position, sites[1].position)
    assert dist == pytest.approx(1112, rel=0.01)  # 0.01 degree of latitude
    assert math.dist(grid.to_xy(43.5297, 5.4474), sites[0].position) < 0.01


# -- the command line -----------------------------------------------------------------------------


def test_cli_plan_json_reports_per_sf_per_gateway_and_passes_a_reachable_target(capsys) -> None:
    rc = main(["sim", "plan", "--nodes", "air=20,lighting=10", "--radius-m", "3000",
               "--gateways", "2", "--duration", "30min", "--interval", "5min",
               "--target-pdr", "0.5", "--json", "--worst", "3"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["verdict"]["pass"] is True
    assert doc["inputs"]["roles"] == {"air": 20, "noise": 0, "soil": 0, "lighting": 10}
    assert doc["inputs"]["frame_bytes"] == {"air": 27, "lighting": 25}
    assert sum(s["nodes"] for s in doc["per_sf"]) == 30
    assert sum(s["sent"] for s in doc["per_sf"]) == doc["overall"]["sent"] > 0
    assert [g["name"] for g in doc["gateways"]] == ["gw1", "gw2"]
    assert len(doc["worst_nodes"]) == 3


def test_cli_plan_fails_an_overloaded_network_with_exit_status_1(capsys) -> None:
    rc = main(["sim", "plan", "--nodes", "300", "--radius-m", "7000", "--interval", "1min",
               "--duration", "10min", "--sf", "12", "--target-pdr", "0.9"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "per spreading factor" in out and "per gateway" in out and "worst-served" in out
    assert "FAIL" in out and "waited for the duty cycle" in out


def test_cli_plan_reads_a_positions_file_and_gateways_in_degrees(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "nodes.csv"
    csv.write_text("latitude,longitude,role,name\n43.53,5.44,air,cours-mirabeau\n"
                   "43.52,5.45,soil,parc-jourdan\n")
    rc = main(["sim", "plan", "--positions", str(csv), "--gateway", "43.525,5.445",
               "--duration", "1h", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["inputs"]["nodes"] == 2
    assert {n["name"] for n in doc["worst_nodes"]} == {"cours-mirabeau", "parc-jourdan"}
    assert all(n["nearest_gateway_m"] < 1000 for n in doc["worst_nodes"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--positions", "missing.csv"], "cannot read it"),
    (["--positions", "{bad}"], "line 3: role 'lamp'"),
    (["--nodes", "0"], "no nodes to simulate"),
    (["--positions", "{bad}", "--nodes", "5"], "the positions file lists the nodes"),
    (["--gateways", "0"], "expected at least 1"),
    (["--path-loss-exponent", "-1"], "path loss exponent"),
])
def test_cli_plan_refuses_bad_input_with_one_line_and_status_2(
        tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x_m,y_m,role\n10,20,air\n30,40,lamp\n")
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    rc = main(["sim", "plan", "--duration", "10min", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--interval", "15 fortnights"], "expected a duration"),
    (["--area-ha", "-5"], "expected a positive number"),
    (["--radius-m", "nan"], "expected a positive number"),
    (["--gateway", "1,2,3"], "expected two numbers"),
    (["--target-pdr", "95"], "expected a fraction"),
    (["--worst", "-1"], "expected a whole number"),
])
def test_cli_plan_rejects_malformed_arguments_at_parse_time(
        capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "plan", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- feeding a real gateway -------------------------------------------------------------------------


def test_feed_without_a_gateway_says_what_to_check() -> None:
    async def scenario() -> None:
        await run_feed(new_nodes(1), ("127.0.0.1", 9), duration_s=10, connect_timeout_s=0.3)

    with pytest.raises(FeedError, match="no PULL_ACK from 127.0.0.1:9.*semtech-udp"):
        asyncio.run(scenario())


@pytest.mark.broker
def test_fed_frames_reach_the_gateway_agent_and_are_published(
        tmp_path: Path, mosquitto, capsys) -> None:
    registry = tmp_path / "sim-nodes.jsonl"
    assert main(["sim", "feed", "--nodes", "4", "--registry-out", str(registry),
                 "--registry-only"]) == 0
    assert stat.S_IMODE(os.stat(registry).st_mode) == 0o600
    entries = read_registry(registry).entries
    assert {e.role for e in entries} == {"air", "noise", "soil", "lighting"}
    written = capsys.readouterr().out
    for e in entries:  # keys never on screen
        assert e.nwk_s_key.hex() not in written and e.app_s_key.hex() not in written

    # The integrator's steps: a semtech-udp gateway, the nodes imported, the agent started.
    cfg = default_config("sim-gw", tmp_path / "gw", frontend="semtech-udp")
    config_path = write_config(tmp_path / "gateway.toml", cfg)
    cfg = dataclasses.replace(  # the agent under test: this broker, a free UDP port
        cfg, mqtt=dataclasses.replace(cfg.mqtt, host=mosquitto.host, port=mosquitto.port),
        radio=dataclasses.replace(cfg.radio, semtech_udp=SemtechUdpConfig(bind="127.0.0.1",
                                                                           port=0)))
    key = generate_signing_key(Path(cfg.gateway.signing_key))
    assert main(["gateway", "nodes", "import", str(registry), "--config",
                 str(config_path)]) == 0
    assert "4 added" in capsys.readouterr().out
    store = Store.open(cfg.store.path)
    agent = Agent(cfg, signing_key=key, store=store)
    results: dict[str, int] = {}

    async def scenario() -> list[aiomqtt.Message]:
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 10)
        host, port = agent.frontend.address[:2]
        got: list[aiomqtt.Message] = []
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("cityedge/v1/sim-gw/up/#", qos=1)
            feeder = threading.Thread(target=lambda: results.setdefault("rc", main([
                "sim", "feed", "--registry", str(registry), "--forward", f"{host}:{port}",
                "--speed", "40", "--interval", "10s", "--duration", "40s", "--quiet"])))
            feeder.start()
            try:
                async with asyncio.timeout(60):
                    async for m in client.messages:
                        got.append(m)
                        if len(got) >= 12:
                            break
            finally:
                await asyncio.to_thread(feeder.join, 60)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got

    try:
        messages = asyncio.run(scenario())
    finally:
        store.close()

    assert results["rc"] == 0
    report = capsys.readouterr().out
    assert "PUSH_DATA acknowledged" in report
    by_eui = {e.dev_eui: e for e in entries}
    seen: dict[str, list[int]] = {}
    for m in messages:
        dev_eui = str(m.topic).rsplit("/", 1)[1]
        pack = cbor2.loads(verify1(bytes(m.payload), {key.kid: key.public_key}).payload)
        values = {rec.get(0): rec.get(2) for rec in pack}
        seen.setdefault(dev_eui, []).append(values["fcnt"])
        assert values["spreading_factor"] in range(7, 13)
        if by_eui[dev_eui].role == "air":
            assert 15 < values["temperature"] < 30
    assert set(seen) == set(by_eui), "every simulated node was heard and published"
    assert agent.counters["accepted"] >= 12
    assert agent.counters["rejected_retransmission"] == 0
    # the file now holds each node's last frame counter, so the next run is no replay
    after = {e.dev_eui: e.fcnt_up for e in read_registry(registry).entries}
    for dev_eui, fcnts in seen.items():
        assert after[dev_eui] is not None and after[dev_eui] >= max(fcnts)


def test_feed_refuses_to_overwrite_a_registry_and_needs_a_destination(
        tmp_path: Path, capsys) -> None:
    registry = tmp_path / "nodes.jsonl"
    registry.write_text("keep me\n")
    assert main(["sim", "feed", "--registry-out", str(registry), "--registry-only"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert registry.read_text() == "keep me\n"
    assert main(["sim", "feed", "--registry", str(registry)]) == 2
    assert "--forward HOST:PORT" in capsys.readouterr().err
    assert main(["sim", "feed", "--registry", str(registry), "--forward", "127.0.0.1:1700"]) == 2
    assert "line 1" in capsys.readouterr().err


def test_decoded_feed_readings_stay_within_the_codec() -> None:
    import random

    from sim.feed import readings

    rng = random.Random(5)
    for role in TYPICAL_READINGS:
        for _ in range(50):
            fport, data = encode_uplink(role, readings(role, rng, 900))
            assert decode_uplink(fport, data)[0] == role
