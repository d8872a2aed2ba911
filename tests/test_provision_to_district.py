"""From the tray to the air: boards provisioned by `cityedge provision --batch` join and report.

A tray of four virtual MicroPython boards (air, soil, lighting, noise; three board types) is
provisioned from a CSV through the real CLI and the real mpremote transport, each board registered
with the gateway (its SQLite registry). The boards then go out into the simulated district
as they are: each node boots the flash folder provisioning wrote (the compiled application and its
config.json with the AppKey provisioning generated), keeps its unique id, and gets its role's chip
models and a register-level SX1276 at its configured location. The real gateway agent, built from
the `gateway init` configuration and holding the provisioned registry, grants each OTAA join and
publishes the decoded readings, signed, to a private Mosquitto; the test reads them as the
hypervisor would and verifies every signature with pycose against the gateway's ``.pub`` file.
Both ways of registering are run: straight into the gateway's registry (``--gateway-config``), and
through the registry file (``--export``) imported with `cityedge gateway nodes import`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cityedge.cli import main
from gateway.agent import Agent
from gateway.config import load_config
from gateway.radio.sim import SimFrontEnd
from provisioning.identity import dev_eui_from_unique_id
from sim.clock import VirtualClock
from sim.district import District, latlon_to_position
from sim.vm.serial import SerialBoard
from tests.test_district import Published, _pycose_verify, _values

pytestmark = [pytest.mark.broker, pytest.mark.vm]

GATEWAY_ID = "gw-dijon-1"
JOIN_EUI = "70b3d57ed0000001"
# role, board, asset, street, lat, lon, role settings (voltage_ratio: the cabinet's sensing
# divider; window_s: the noise role's measuring window)
TRAY = [
    ("air", "heltec-lora32-v2", "DIJ-AIR-1", "Rue de la Liberté", 47.3222, 5.0380, "", ""),
    ("soil", "ttgo-lora32-v21", "DIJ-SOIL-2", "Jardin Darcy", 47.3229, 5.0341, "", ""),
    ("lighting", "heltec-lora32-v2", "DIJ-LIGHT-3", "Place de la Libération", 47.3216, 5.0412,
     "10", ""),
    ("noise", "feather-rp2040-rfm95", "DIJ-NOISE-4", "Place François Rude", 47.3227, 5.0385,
     "", "10"),
]
READING = {"air": "pm2_5", "soil": "soil_moisture", "lighting": "level", "noise": "laeq"}


def tray_csv(path: Path, ports: list[str]) -> Path:
    """The installer's spreadsheet: one row per board, reporting every minute."""
    lines = ["port,role,board,asset,street,lat,lon,interval,voltage_ratio,window_s"]
    lines += [f'{port},{role},{board},{asset},"{street}",{lat},{lon},60,{ratio},{window}'
              for port, (role, board, asset, street, lat, lon, ratio, window)
              in zip(ports, TRAY, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def point_at_broker(toml: Path, broker: Any) -> None:
    """Edit the [mqtt] section `gateway init` wrote, as an installer does, to the test broker."""
    text = toml.read_text()
    assert 'host = "localhost"\nport = 1883\n' in text
    toml.write_text(text.replace('host = "localhost"\nport = 1883\n',
                                 f'host = "{broker.host}"\nport = {broker.port}\n'))


def flash_digest(flash: Path) -> dict[str, str]:
    """SHA-256 of the application and configuration files on a board's flash."""
    return {p.relative_to(flash).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(flash.rglob("*"))
            if p.is_file() and (p.suffix == ".mpy" or p.name in ("main.py", "config.json"))}


def public_bytes(pub_file: Path) -> bytes:
    """The gateway's raw Ed25519 public key, read from its ``.pub`` file as a hypervisor would."""
    key = serialization.load_pem_public_key(pub_file.read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def published(got: list[Published], kind: str, dev: str, key: str) -> list[dict[str, Any]]:
    """The values of the ``kind`` messages of ``dev`` that carry ``key``, in arrival order."""
    return [p.values for p in got if p.kind == kind and p.dev == dev and key in p.values]


async def collect(broker: Any, public: bytes, devs: dict[str, str],
                  timeout: float) -> list[Published]:
    """Verified messages under up/ and event/ until every node has joined and sent its role's
    reading, or ``timeout`` (the assertions then say what is missing)."""
    got: list[Published] = []

    def done() -> bool:
        return all(published(got, "event", dev, "join") and published(got, "up", dev, READING[role])
                   for dev, role in devs.items())

    prefix = f"cityedge/v1/{GATEWAY_ID}"
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(f"{prefix}/up/#", qos=1)
        await client.subscribe(f"{prefix}/event/#", qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for m in client.messages:
                    _, _, _, kind, dev = str(m.topic).split("/")
                    pack = cbor2.loads(_pycose_verify(bytes(m.payload), public))
                    got.append(Published(kind, dev, _values(pack)))
                    if done():
                        break
        except TimeoutError:
            pass
    return got


@pytest.mark.parametrize("registration", ["gateway-config", "export-import"])
def test_a_provisioned_tray_joins_the_gateway_and_reports_from_the_district(
    tmp_path: Path, mosquitto: Any, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, registration: str,
) -> None:
    caplog.set_level(logging.INFO)
    # -- on the bench: the gateway's configuration, then the tray through `cityedge provision`
    assert main(["gateway", "init", "--id", GATEWAY_ID, "--dir", str(tmp_path / "gw")]) == 0
    toml = tmp_path / "gw" / "gateway.toml"
    point_at_broker(toml, mosquitto)
    flashes = [tmp_path / "tray" / f"slot{i}" for i in range(len(TRAY))]
    boards = [SerialBoard(f, name=f"tray-slot{i}") for i, f in enumerate(flashes)]
    try:
        for b in boards:
            b.start()
        csv = tray_csv(tmp_path / "tray.csv", [b.port for b in boards])
        export = tmp_path / "nodes.jsonl"  # the registry file carried to the gateway
        register = (["--gateway-config", str(toml)] if registration == "gateway-config"
                    else ["--export", str(export)])
        assert main(["provision", "--batch", str(csv), *register, "--join-eui", JOIN_EUI,
                     "--label-dir", str(tmp_path / "labels"),
                     "--inventory", str(tmp_path / "inventory.jsonl")]) == 0
    finally:
        for b in boards:
            b.close()
    if registration == "export-import":
        assert main(["gateway", "nodes", "import", str(export), "--config", str(toml)]) == 0
    bench = capsys.readouterr()
    assert f"provisioned {len(TRAY)} of {len(TRAY)}" in bench.out
    configs = [json.loads((f / "config.json").read_text()) for f in flashes]
    # Each DevEUI comes from its board's unique id; each board holds its own fresh AppKey.
    assert [c["dev_eui"] for c in configs] == [dev_eui_from_unique_id(b.board.uid) for b in boards]
    app_keys = [c["otaa"]["app_key"] for c in configs]
    assert len(set(app_keys)) == len(TRAY)
    roles = {c["dev_eui"]: c["role"] for c in configs}
    written = [flash_digest(f) for f in flashes]

    # -- in the street: those very boards, in the district, heard by the gateway agent
    clock = VirtualClock(speed=None)
    district = District(clock, tmp_path / "district")
    consoles: dict[str, list[str]] = {}
    nodes = [district.add_board(f, uid=b.board.uid,
                                on_console=consoles.setdefault(c["dev_eui"], []).append)
             for f, b, c in zip(flashes, boards, configs, strict=True)]
    config = load_config(toml)
    agent = Agent(config, frontend=SimFrontEnd(config.radio, concentrator=district.concentrator,
                                               clock=clock))
    district.pace_agent(agent)
    errors: list[BaseException] = []
    clock.on_error = lambda _part, exc: errors.append(exc)

    async def scenario() -> list[Published]:
        agent_task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.started.wait(), 10)
        collector = asyncio.create_task(collect(
            mosquitto, public_bytes(Path(f"{config.gateway.signing_key}.pub")), roles, 120))
        await asyncio.sleep(0.3)
        district.start()
        runner = threading.Thread(target=clock.run, kwargs={"until_us": 900 * 1_000_000,
                                                            "raise_errors": False}, daemon=True)
        runner.start()
        try:
            return await collector
        finally:
            clock.stop()
            agent_task.cancel()

    try:
        got = asyncio.run(scenario())
        registry = {d.dev_eui: d for d in agent.store.list_devices()}
    finally:
        clock.stop()
        district.stop()
        agent.store.close()

    assert not errors, errors
    summary = [(p.kind, p.dev[-4:], sorted(p.values)) for p in got]
    # The district booted the provisioned boards themselves: same flash, same unique id, and
    # nothing of what provisioning wrote was replaced.
    for node, flash, board, cfg in zip(nodes, flashes, boards, configs, strict=True):
        assert node.board.flash_dir == flash.resolve() and node.board.uid == board.board.uid
        assert node.spec.role == cfg["role"] and node.spec.board == cfg["board"]
        assert node.radio.position == pytest.approx(latlon_to_position(
            (cfg["location"]["lat"], cfg["location"]["lon"])))
    assert [flash_digest(f) for f in flashes] == written
    by_role: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        dev = cfg["dev_eui"]
        assert any(f"cityedge node {dev} role={cfg['role']}" in line for line in consoles[dev]), \
            consoles[dev]
        # OTAA with the provisioned key: the registry's AppKey is the board's, the join was
        # granted and published, the session it made is the one the node uses.
        device = registry[dev]
        assert device.app_key == bytes.fromhex(cfg["otaa"]["app_key"])
        joins = [v["join"] for v in published(got, "event", dev, "join")]
        assert joins and joins[-1] == device.dev_addr, (dev, joins, summary)
        assert device.nwk_s_key is not None and device.fcnt_up >= 1
        readings = published(got, "up", dev, READING[cfg["role"]])
        assert readings, (dev, summary)
        by_role[cfg["role"]] = readings[0]
        # Its health report at power-on: the role's chips answer (no fault flag raised).
        health = published(got, "up", dev, "firmware")
        assert health and health[0]["reset_cause"] == "power_on", (dev, summary)
        assert not [k for k, v in health[0].items() if k.startswith("fault_") and v], health[0]
    assert 0 < by_role["air"]["pm2_5"] < 500e-9  # kg/m3
    assert -30 < by_role["air"]["temperature"] < 45
    assert 0.05 < by_role["soil"]["soil_moisture"] < 0.5
    assert 30 < by_role["noise"]["laeq"] < 100
    assert 0 <= by_role["lighting"]["level"] <= 1
    assert by_role["lighting"]["lamp_voltage"] == pytest.approx(230, abs=2)  # voltage_ratio 10
    assert agent.counters["joins"] >= len(TRAY)
    assert district.concentrator.hold_timeouts == 0
    # What the installer reads on the gateway afterwards: every node with its session.
    assert main(["gateway", "nodes", "list", "--config", str(toml), "--json"]) == 0
    listed = {v["dev_eui"]: v for v in json.loads(capsys.readouterr().out)}
    assert {dev: (v["dev_addr"], v["asset_id"]) for dev, v in listed.items()} == {
        c["dev_eui"]: (registry[c["dev_eui"]].dev_addr, c["location"]["asset"]) for c in configs}
    # The AppKeys never appear: not on the bench, not on a node's console, not in the logs.
    seen = "\n".join([bench.out, bench.err, caplog.text, json.dumps(listed),
                      *("\n".join(lines) for lines in consoles.values())]).lower()
    assert all(key not in seen for key in app_keys)
    assert sum("joined as DevAddr" in r.getMessage() for r in caplog.records) >= len(TRAY)


def test_a_board_without_application_or_configuration_is_refused_by_name(tmp_path: Path) -> None:
    district = District(VirtualClock(speed=None), tmp_path / "district")
    flash = tmp_path / "flash"
    flash.mkdir()
    with pytest.raises(ValueError, match=r"no node application \(main.py\): deploy it first"):
        district.add_board(flash)
    (flash / "main.py").write_text("import firmware.app\n")
    with pytest.raises(ValueError, match="no config.json: provision the board first"):
        district.add_board(flash)
    (flash / "config.json").write_text('{"version": 1, "dev_eui": "70b3d57ed0000001"')
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        district.add_board(flash)
    (flash / "config.json").write_text(json.dumps({
        "version": 1, "dev_eui": "70b3d57ed0000001", "role": "parking",
        "board": "heltec-lora32-v2", "activation": "otaa"}))
    with pytest.raises(ValueError, match="role = 'parking'"):
        district.add_board(flash)
    assert district.nodes == []
