"""`cityedge provision`, `node check` and `inventory export` on virtual boards, through the
real mpremote transport, a real gateway store (SQLite) and real label files."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import segno

from cityedge.cli import main
from firmware import config as node_config
from firmware.boards import BOARDS
from gateway.config import load_config
from gateway.store import Store
from provisioning.label import Label
from sim.channel import RadioChannel
from sim.environment import Environment
from sim.sht4x import SHT4xModel
from sim.sx1276 import SX1276Model
from sim.vm.board import BoardHardware
from sim.vm.serial import SerialBoard

pytestmark = pytest.mark.vm
JOIN = "70b3d57ed0000000"


@pytest.fixture
def gateway(tmp_path: Path) -> Path:
    assert main(["gateway", "init", "--id", "gw-aix-1", "--dir", str(tmp_path / "gw")]) == 0
    return tmp_path / "gw" / "gateway.toml"


def store_devices(toml: Path) -> dict:
    path = load_config(toml).store.path
    if not path.exists():
        return {}
    store = Store.open(path)
    try:
        return {d.dev_eui: d for d in store.list_devices()}
    finally:
        store.close()


def qr_png(payload: str) -> bytes:
    """The PNG segno makes of ``payload``: what a phone decodes back to the payload."""
    buf = io.BytesIO()
    segno.make(payload, error="m", micro=False).save(buf, kind="png", scale=6, border=4)
    return buf.getvalue()


def text_chunk(payload: str) -> bytes:
    body = b"cityedge\0" + payload.encode()
    return (struct.pack(">I", len(body)) + b"tEXt" + body
            + struct.pack(">I", zlib.crc32(b"tEXt" + body)))


def common(tmp_path: Path) -> list[str]:
    return ["--join-eui", JOIN, "--label-dir", str(tmp_path / "labels"),
            "--inventory", str(tmp_path / "inv" / "inventory.jsonl")]


def test_a_tray_of_three_boards_is_provisioned_registered_labelled_and_rerun_is_a_noop(
    tmp_path: Path, gateway: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flashes = [tmp_path / f"flash{i}" for i in range(3)]
    boards = [SerialBoard(f, name=f"tray-{i}") for i, f in enumerate(flashes)]
    for b in boards:
        b.start()
    try:
        rows = [("air", "heltec-lora32-v2", "AIX-AIR-1", "Cours Mirabeau", "43.5263", "5.4454", ""),
                ("soil", "pico-rfm95", "AIX-SOIL-2", "Parc Jourdan", "43.5227", "5.4443", "1800"),
                ("noise", "feather-rp2040-rfm95", "AIX-NOISE-3", "Place d'Albertas", "", "", "")]
        csv = tmp_path / "tray.csv"
        csv.write_text("port,role,board,asset,street,lat,lon,max_open_s\n" + "".join(
            f"{b.port},{r[0]},{r[1]},{r[2]},\"{r[3]}\",{r[4]},{r[5]},{r[6]}\n"
            for b, r in zip(boards, rows, strict=True)))
        argv = ["provision", "--batch", str(csv), "--gateway-config", str(gateway),
                *common(tmp_path)]
        assert main(argv) == 0
        first = capsys.readouterr()
        assert main(argv) == 0  # the same tray again
        again = capsys.readouterr().out
    finally:
        for b in boards:
            b.close()
    devices = store_devices(gateway)
    configs = [json.loads((f / "config.json").read_text()) for f in flashes]
    assert sorted(devices) == sorted(c["dev_eui"] for c in configs)
    for cfg, row in zip(configs, rows, strict=True):
        node = node_config.Config(json.loads(json.dumps(cfg)))  # what the board accepts at boot
        dev = devices[cfg["dev_eui"]]
        assert node.role == row[0] and cfg["board"] == row[1] and node.asset == row[2]
        assert dev.app_key == node.app_key and dev.join_eui == JOIN and dev.asset_id == row[2]
        assert (flashes[configs.index(cfg)] / "main.py").exists()
        png = tmp_path / "labels" / f"{cfg['dev_eui']}.png"
        pdf = tmp_path / "labels" / f"{cfg['dev_eui']}.pdf"
        label = Label(cfg["dev_eui"], JOIN, row[0], row[2], row[3])
        payload = label.payload()
        assert payload.encode() in png.read_bytes() and payload.encode() in pdf.read_bytes()
        assert f"DevEUI {cfg['dev_eui'].upper()}".encode() in pdf.read_bytes()
        assert png.read_bytes().replace(text_chunk(payload), b"") == qr_png(payload)
        dark = sum(sum(row) for row in segno.make(payload, error="m").matrix)
        assert pdf.read_bytes().count(b" re\n") == dark  # one square per dark module
        assert cfg["otaa"]["app_key"] not in payload
        for out in (first.out, first.err, again, png.read_bytes().decode("latin-1"),
                    pdf.read_bytes().decode("latin-1")):
            assert cfg["otaa"]["app_key"] not in out and cfg["otaa"]["app_key"].upper() not in out
    assert configs[1]["settings"] == {"max_open_s": 1800}
    assert "provisioned 3 of 3" in first.out and first.out.count("provisioned") >= 3
    assert again.count("already provisioned identically") == 3 and "provisioned 3 of 3" in again
    inv = [json.loads(x) for x in (tmp_path / "inv" / "inventory.jsonl").read_text().splitlines()]
    assert len(inv) == 6 and {r["gateway"] for r in inv} == {"gw-aix-1"}
    assert {r["port"] for r in inv} == {b.port for b in boards}
    assert all(r["who"] and r["machine"] and r["unique_id"] for r in inv)
    assert main(["inventory", "export", "--csv", str(tmp_path / "inv.csv"),
                 "--inventory", str(tmp_path / "inv" / "inventory.jsonl")]) == 0
    exported = (tmp_path / "inv.csv").read_text().splitlines()
    assert exported[0].startswith("when,who,dev_eui") and len(exported) == 7


def test_a_tray_with_a_bad_row_names_row_and_field_and_does_nothing(
    tmp_path: Path, gateway: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "tray.csv"
    csv.write_text("port,role,board,asset,lat,lon\n"
                   "/dev/ttyUSB0,air,heltec-lora32-v2,A-1,43.5,5.4\n"
                   "/dev/ttyUSB1,soil,heltec-lora32-v2,A-2,143.5,5.4\n")
    argv = ["provision", "--batch", str(csv), "--gateway-config", str(gateway),
            *common(tmp_path)]
    assert main(argv) == 2
    assert "row 3: lat: 143.5 is outside -90..90" in capsys.readouterr().err
    csv.write_text("port,role,board\n/dev/ttyUSB0,parking,heltec-lora32-v2\n")
    assert main(argv) == 2
    assert "row 2: role: 'parking'" in capsys.readouterr().err
    assert not (tmp_path / "labels").exists() and not (tmp_path / "inv").exists()
    assert store_devices(gateway) == {}


def test_a_dev_eui_registered_with_other_keys_is_refused_and_the_board_left_alone(
    tmp_path: Path, gateway: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "old.key"
    key.write_text("2b7e151628aed2a6abf7158809cf4f3c\n")
    key.chmod(0o600)
    eui = "70b3d57ed0000042"
    assert main(["gateway", "nodes", "add", eui, "--role", "air", "--join-eui", JOIN,
                 "--app-key-file", str(key), "--config", str(gateway)]) == 0
    flash = tmp_path / "flash"
    with SerialBoard(flash, name="tray-9") as sb:
        code = main(["provision", "--port", sb.port, "--role", "air", "--board",
                     "heltec-lora32-v2", "--dev-eui", eui, "--gateway-config", str(gateway),
                     "--no-deploy", *common(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"node {eui} is already registered" in err and "--replace" in err
    assert "2b7e1516" not in err
    assert not (flash / "config.json").exists()
    assert store_devices(gateway)[eui].app_key == bytes.fromhex(key.read_text().strip())


def test_unplugged_mid_provision_says_so_and_a_rerun_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flash = tmp_path / "flash"
    export = tmp_path / "nodes.jsonl"
    argv = ["provision", "--role", "air", "--board", "ttgo-lora32-v21", "--asset", "AIX-AIR-7",
            "--export", str(export), *common(tmp_path)]
    sb = SerialBoard(flash, name="tray-7")
    sb.start()
    stop = threading.Event()

    def pull_cable_half_way() -> None:
        while not stop.is_set():
            if len(list((flash / "protocol").rglob("*.mpy"))) >= 5:
                sb.unplug()
                return
            time.sleep(0.01)

    puller = threading.Thread(target=pull_cable_half_way)
    puller.start()
    try:
        assert main([*argv, "--port", sb.port]) == 1
    finally:
        stop.set()
        puller.join()
        sb.close()
    out = capsys.readouterr()
    assert "lost the board" in out.err and "run the command again" in out.err
    assert not (flash / "config.json").exists() and not export.exists()
    with SerialBoard(flash, name="tray-7") as sb:
        assert main([*argv, "--port", sb.port]) == 0
    cfg = json.loads((flash / "config.json").read_text())
    rows = [json.loads(x) for x in export.read_text().splitlines()]
    assert rows[1]["dev_eui"] == cfg["dev_eui"] and rows[1]["app_key"] == cfg["otaa"]["app_key"]
    assert export.stat().st_mode & 0o777 == 0o600
    assert not [p for p in flash.rglob("*.part")]


def test_node_check_shows_version_masked_config_sensors_and_radio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flash = tmp_path / "flash"
    name = "heltec-lora32-v2"
    spi_id, _sck, _mosi, _miso, cs, reset, dio0, i2c_id, *_ = BOARDS[name]
    hw = BoardHardware()
    sb = SerialBoard(flash, name="bench-1", hardware=hw)
    radio = SX1276Model(sb.clock, RadioChannel(sb.clock), dio0=hw.pin(dio0), reset=hw.pin(reset))
    hw.spi_bus(spi_id).attach(hw.pin(cs), radio)
    hw.i2c_bus(i2c_id).attach(0x44, SHT4xModel(sb.clock, Environment()))
    with sb:
        assert main(["provision", "--port", sb.port, "--role", "air", "--board", name,
                     "--asset", "AIX-AIR-9", *common(tmp_path)]) == 0
        capsys.readouterr()
        code = main(["node", "check", "--port", sb.port])
    out = capsys.readouterr().out
    key = json.loads((flash / "config.json").read_text())["otaa"]["app_key"]
    assert key not in out and "16 bytes hidden" in out
    assert re.search(r"firmware: \d+\.\d+\.\d+", out)
    assert "I2C 0x44: SHT4x temperature/humidity" in out
    assert "radio: SX127x RegVersion 0x12 (OK)" in out
    assert "temperature=" in out
    # no SPS30 (particulate matter) is wired: reported as a fault, so the check fails
    assert "problem: sensor fault: particulate" in out and code == 1


def test_node_check_on_a_board_without_radio_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SerialBoard(tmp_path / "flash", name="bench-2") as sb:
        code = main(["node", "check", "--port", sb.port, "--board", "pico-rfm95"])
    out = capsys.readouterr().out
    assert code == 1
    assert "no node application on the board" in out and "no config.json" in out
    assert "no SX127x answers on SPI (RegVersion 0xff)" in out or "RegVersion 0x00" in out


def test_a_batch_goes_past_a_missing_board_and_allocates_dev_euis_from_a_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "nodes.jsonl"
    flashes = [tmp_path / "f0", tmp_path / "f1"]
    boards = [SerialBoard(f, name=f"range-{i}") for i, f in enumerate(flashes)]
    for b in boards:
        b.start()
    try:
        csv = tmp_path / "tray.csv"
        csv.write_text("port,role,board,asset\n"
                       f"{boards[0].port},air,heltec-lora32-v2,R-1\n"
                       "/dev/ttyGONE7,air,heltec-lora32-v2,R-2\n"
                       f"{boards[1].port},lighting,pico-rfm95,R-3\n")
        argv = ["provision", "--batch", str(csv), "--eui-range", "70b3d57ed0001000/4",
                "--export", str(export), "--no-deploy", *common(tmp_path)]
        assert main(argv) == 1  # one board failed
        first = capsys.readouterr()
        assert main(argv) == 1  # the missing board is still missing; the others are unchanged
        again = capsys.readouterr().out
    finally:
        for b in boards:
            b.close()
    assert "/dev/ttyGONE7: FAILED: no serial port /dev/ttyGONE7" in first.err
    assert "provisioned 2 of 3" in first.out
    assert again.count("already provisioned identically") == 2
    euis = [json.loads((f / "config.json").read_text())["dev_eui"] for f in flashes]
    assert euis == ["70b3d57ed0001000", "70b3d57ed0001001"]
    rows = [json.loads(x) for x in export.read_text().splitlines()[1:]]
    assert [r["dev_eui"] for r in rows] == euis and rows[1]["class"] == "C"
