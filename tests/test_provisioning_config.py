"""Writing a node's config.json to a virtual board: valid, read back, never silently replaced."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from firmware import config as node_config
from provisioning.board import Board
from provisioning.errors import ConfigInvalid, ConfigRefused
from provisioning.nodeconfig import build_config, masked, write_config
from sim.vm.serial import SerialBoard

JOIN_EUI = "70b3d57ed0000000"


def soil_config(dev_eui: str) -> dict:
    return build_config(dev_eui=dev_eui, role="soil", board="heltec-lora32-v2",
                        join_eui=JOIN_EUI, interval_s=900, lat=43.5297, lon=5.4474,
                        street="Cours Mirabeau", asset="AIX-SOIL-0042",
                        settings={"max_open_s": 1800})


@pytest.mark.vm
def test_config_is_written_last_read_back_and_accepted_by_the_node(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    with SerialBoard(flash, name="tray-4") as sb, Board.connect(sb.port) as board:
        cfg = soil_config(board.info.dev_eui or "")
        first = write_config(board, cfg)
        again = write_config(board, cfg)
    time.sleep(0.2)
    on_flash = json.loads((flash / "config.json").read_text())
    assert on_flash == cfg and first.written and not again.written
    node = node_config.Config(on_flash)  # the board's own check
    assert node.dev_eui_hex == first.dev_eui and node.activation == "otaa"
    assert len(node.app_key) == 16 and node.asset == "AIX-SOIL-0042"
    assert not [p.name for p in flash.iterdir() if p.name.endswith(".part")]


@pytest.mark.vm
def test_a_board_of_another_dev_eui_is_refused_unless_replace(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    old = soil_config("70b3d57ed0000001")
    (flash / "config.json").write_text(json.dumps(old))
    new = soil_config("70b3d57ed0000002")
    with SerialBoard(flash, name="tray-5") as sb, Board.connect(sb.port) as board:
        with pytest.raises(ConfigRefused, match="already node 70b3d57ed0000001") as refused:
            write_config(board, new)
        assert json.loads(board.read_file("config.json") or b"") == old
        done = write_config(board, new, replace=True)
    time.sleep(0.2)
    assert done.replaced_dev_eui == "70b3d57ed0000001"
    assert json.loads((flash / "config.json").read_text()) == new
    for key in (old["otaa"]["app_key"], new["otaa"]["app_key"]):
        assert key not in str(refused.value)


def test_keys_come_fresh_from_the_csprng_and_are_masked_for_display() -> None:
    a, b = soil_config("70b3d57ed0000003"), soil_config("70b3d57ed0000003")
    assert a["otaa"]["app_key"] != b["otaa"]["app_key"]
    shown = json.dumps(masked(a))
    assert a["otaa"]["app_key"] not in shown and "16 bytes hidden" in shown
    abp = build_config(dev_eui="70b3d57ed0000004", role="lighting", board="pico-rfm95",
                       activation="abp")
    assert node_config.Config(abp).dev_class == "C"
    assert abp["abp"]["nwk_s_key"] not in json.dumps(masked(abp))


def test_a_configuration_the_node_would_refuse_is_never_built() -> None:
    with pytest.raises(ConfigInvalid, match="role = 'parking'"):
        build_config(dev_eui="70b3d57ed0000005", role="parking", board="heltec-lora32-v2",
                     join_eui=JOIN_EUI)
    with pytest.raises(ConfigInvalid, match="interval_s"):
        build_config(dev_eui="70b3d57ed0000005", role="air", board="heltec-lora32-v2",
                     join_eui=JOIN_EUI, interval_s=1)
    with pytest.raises(ConfigInvalid, match="JoinEUI"):
        build_config(dev_eui="70b3d57ed0000005", role="air", board="heltec-lora32-v2")
