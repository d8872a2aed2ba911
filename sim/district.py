"""A simulated district: virtual boards running the real node firmware on one LoRa channel.

Each node is a `VirtualBoard` whose flash holds what a technician deploys (the firmware compiled
with mpy-cross, `main.py`, `config.json`), wired per its board's pin map to a register-level
SX1276 on the channel and its role's sensor models.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from firmware.boards import pin_map
from sim.bus import SimI2C, SimSPI
from sim.channel import Concentrator, RadioChannel
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.mpy import REPO, compile_tree
from sim.sht4x import SHT4xModel
from sim.sx1276 import SX1276Model
from sim.vm.board import BoardHardware, VirtualBoard

BATTERY_UV = 3_000_000  # 2xAA, fresh


class FirmwareBuildError(RuntimeError):
    """mpy-cross refused a file of the node application."""


def build_firmware(out_dir: Path) -> Path:
    """Compile drivers/, protocol/ and firmware/ to .mpy in ``out_dir`` (what deploy copies)."""
    report = compile_tree(out_dir)
    if report.errors:
        raise FirmwareBuildError(
            "; ".join(f"{e.source}: {e.error}" for e in report.errors)
        )
    shutil.copyfile(REPO / "firmware" / "main.py", out_dir / "main.py")
    return out_dir


@dataclass
class NodeSpec:
    """What an installer provisions: identity, keys, role, board, place, settings."""

    dev_eui: str
    dev_addr: str
    nwk_s_key: bytes
    app_s_key: bytes
    role: str = "air"
    board: str = "heltec-lora32-v2"
    position: tuple[float, float] = (0.0, 0.0)
    interval_s: int = 60
    sf: int = 7
    settings: dict = field(default_factory=dict)

    def config_json(self) -> str:
        """The board's config.json, as provisioning writes it."""
        return json.dumps({
            "version": 1, "dev_eui": self.dev_eui, "role": self.role, "board": self.board,
            "activation": "abp",
            "abp": {"dev_addr": self.dev_addr, "nwk_s_key": self.nwk_s_key.hex(),
                    "app_s_key": self.app_s_key.hex()},
            "radio": {"sf": self.sf, "tx_power_dbm": 14},
            "interval_s": self.interval_s,
            "settings": self.settings,
        })


@dataclass
class SimNode:
    spec: NodeSpec
    board: VirtualBoard
    radio: SX1276Model
    sensor: SHT4xModel


class District:
    """The channel, the gateway's concentrator and the nodes, in one virtual clock."""

    def __init__(
        self,
        clock: VirtualClock,
        workdir: Path | None = None,
        seed: int = 1,
        gateway_position: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.clock = clock
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cityedge-district-"))
        self.channel = RadioChannel(clock, seed=seed)
        self.concentrator = Concentrator(clock, self.channel, position=gateway_position)
        self.environment = Environment(seed=seed)
        self.nodes: list[SimNode] = []
        self._image: Path | None = None

    def image(self) -> Path:
        if self._image is None:
            self._image = build_firmware(self.workdir / "image")
        return self._image

    def add_node(self, spec: NodeSpec, on_console=None) -> SimNode:
        """Provision and wire one node (not yet powered)."""
        flash = self.workdir / "nodes" / spec.dev_eui
        if flash.exists():
            shutil.rmtree(flash)
        shutil.copytree(self.image(), flash)
        (flash / "config.json").write_text(spec.config_json())
        spi_id, _sck, _mosi, _miso, cs, reset, dio0, i2c_id, _sda, _scl, adc, div = pin_map(
            spec.board)
        hw = BoardHardware()
        radio = SX1276Model(self.clock, self.channel, position=spec.position,
                            name=f"node-{spec.dev_eui}", dio0=hw.pin(dio0), reset=hw.pin(reset))
        spi: SimSPI = hw.spi_bus(spi_id)
        spi.attach(hw.pin(cs), radio)
        i2c: SimI2C = hw.i2c_bus(i2c_id)
        sensor = SHT4xModel(self.clock, self.environment)
        i2c.attach(0x44, sensor)
        if adc is not None:
            hw.adc[adc] = lambda: int(BATTERY_UV / div)
        board = VirtualBoard(self.clock, spec.dev_eui, flash, hw, on_console=on_console)
        node = SimNode(spec, board, radio, sensor)
        self.nodes.append(node)
        return node

    def start(self) -> None:
        for node in self.nodes:
            node.board.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.board.stop()


def ring_positions(n: int, radius_m: float = 800.0) -> list[tuple[float, float]]:
    """Nodes spread on a ring around the gateway (street-scale distances)."""
    return [
        (radius_m * (0.5 + (i % 3) / 3) * math.cos(2 * math.pi * i / max(n, 1)),
         radius_m * (0.5 + (i % 3) / 3) * math.sin(2 * math.pi * i / max(n, 1)))
        for i in range(n)
    ]


def random_node(index: int, **kwargs) -> NodeSpec:
    """A node with fresh random keys (cryptographic source) and a demo DevEUI/DevAddr."""
    return NodeSpec(
        dev_eui=f"70b3d57ed00{index:05x}",
        dev_addr=f"260b{index:04x}",
        nwk_s_key=os.urandom(16),
        app_s_key=os.urandom(16),
        **kwargs,
    )
