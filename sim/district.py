"""A simulated district: virtual boards running the real node firmware on one LoRa channel.

Each node is a `VirtualBoard` whose flash holds what a technician deploys (the firmware compiled
with mpy-cross, `main.py`, `config.json`), wired per its board's pin map to a register-level
SX1276 on the channel and to its role's chip models (which chips, on which address and pins:
`sim.wiring`, whose `wire_node` `cityedge sim board` shares); the district's `Environment` feeds
them: air temperature, humidity, particulates, sound levels, soil plots dried by evaporation and
wetted by rain and by the valve, lamps drawing power through the cabinet's meter.

Nodes are provisioned as an installer would (`NodeSpec`: identity, OTAA or ABP keys, role, board,
settings, location in the district) and registered with the gateway from the same spec
(`device_for`, `District.register`), so the demo and the tests never repeat the wiring. A board
provisioned for real (`cityedge provision` over a serial port, e.g. on a `sim.vm.serial.SerialBoard`)
joins the district as it stands with `District.add_board`: it boots from its own flash folder, and
its config.json decides the chips and radio wired to it and where it stands.

The gateway's concentrator (`GatewayConcentrator`) hears the 8 usual EU868 channels. With the
virtual clock at full speed (``speed=None``) virtual time would run past a receive window while
the agent is still working on the uplink that opens it; `District.pace_agent` makes the scheduler
wait, after each uplink, until the agent has handled it (what a real gateway's few milliseconds
of processing amount to in virtual time).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware import config as node_config
from gateway.lorawan.join import COMMON_EU868_CFLIST_HZ
from gateway.store import Device, Store
from sim.channel import EU868_UPLINK_CHANNELS_HZ, Concentrator, RadioChannel, RxPacket
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.mpy import REPO, compile_tree
from sim.sht4x import SHT4xModel
from sim.sx1276 import SX1276Model
from sim.vm.board import BoardHardware, VirtualBoard
from sim.wiring import wire_node

log = logging.getLogger(__name__)

DIJON = (47.3220, 5.0415)  # the district's centre (lat, lon): the gateway stands here
DEMO_JOIN_EUI = "70b3d57ed0000001"
ROLES = ("air", "noise", "soil", "lighting")
ROLE_CLASS = {"air": "A", "noise": "A", "soil": "A", "lighting": "C"}
# The mix of a district of N nodes: the first N of this cycle, repeated.
ROLE_CYCLE = ("air", "noise", "soil", "lighting", "air", "lighting")
# The three default EU868 channels plus the five most networks announce in the CFList.
EU868_8CH_HZ: tuple[int, ...] = tuple(EU868_UPLINK_CHANNELS_HZ) + tuple(COMMON_EU868_CFLIST_HZ)

# Role pins on a Heltec WiFi LoRa 32 V2 (the lighting and soil roles' own defaults, plus a flow
# meter input on a free GPIO).
LIGHTING_PINS = {"pwm": 25, "relay": 13, "door": 34, "presence": 35, "s0": 32}
SOIL_PINS = {"valve_open": 32, "valve_close": 33, "flow": 23}
# The SPS30 warm-up the district's air nodes wait per cycle (datasheet: 30 s for stable readings);
# the role feeds the board's watchdog (``hw.wdt``, handed over by firmware/app.py) meanwhile.
AIR_WARMUP_S = 30
ROLE_SETTINGS: dict[str, dict[str, Any]] = {
    "air": {"pm_warmup_s": AIR_WARMUP_S, "pm_samples": 3, "pm2_5_alarm": 50},
    "noise": {"window_s": 10, "laeq_alarm": 85},
    "soil": {"pins": SOIL_PINS, "max_open_s": 900, "litres_per_pulse": 0.1},
    "lighting": {"pins": LIGHTING_PINS, "ramp_s": 2, "presence_s": 120, "utc_offset_min": 60,
                 "voltage_ratio": 10, "pulses_per_kwh": 1000},
}


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


def position_to_latlon(position: tuple[float, float],
                       origin: tuple[float, float] = DIJON) -> tuple[float, float]:
    """(lat, lon) of a point ``position`` = (east, north) metres from ``origin``."""
    lat0, lon0 = origin
    east, north = position
    lat = lat0 + north / 111_320.0
    lon = lon0 + east / (111_320.0 * math.cos(math.radians(lat0)))
    return round(lat, 6), round(lon, 6)


def latlon_to_position(latlon: tuple[float, float],
                       origin: tuple[float, float] = DIJON) -> tuple[float, float]:
    """(east, north) metres of the point ``latlon`` from ``origin``: `position_to_latlon` inverted."""
    lat0, lon0 = origin
    lat, lon = latlon
    return ((lon - lon0) * 111_320.0 * math.cos(math.radians(lat0)), (lat - lat0) * 111_320.0)


@dataclass
class NodeSpec:
    """What an installer provisions: identity, keys, role, board, place, settings.

    OTAA when ``app_key`` is given (``join_eui`` defaults to the demo JoinEUI), ABP when the
    session (``dev_addr``, ``nwk_s_key``, ``app_s_key``) is. ``position`` is in metres east/north
    of the gateway (the radio channel's frame); ``location`` (lat, lon) is derived from it around
    the district's centre unless given. ``settings`` are merged over the role's district defaults,
    unless ``board_settings`` says they are exactly what a board provisioned elsewhere holds
    (`from_config`).
    """

    dev_eui: str
    dev_addr: str | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None
    role: str = "air"
    board: str = "heltec-lora32-v2"
    position: tuple[float, float] = (0.0, 0.0)
    interval_s: int = 60
    sf: int = 7
    settings: dict[str, Any] = field(default_factory=dict)
    app_key: bytes | None = None
    join_eui: str | None = None
    location: tuple[float, float] | None = None
    name: str | None = None
    board_settings: bool = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any], position: tuple[float, float] | None = None,
                    origin: tuple[float, float] = DIJON) -> NodeSpec:
        """The spec of a board from its config.json (ConfigError, a ValueError, when the node
        would refuse it); it stands at ``position`` or, by default, at its configured location
        (metres from ``origin``; at the gateway when it has none)."""
        node = node_config.Config(json.loads(json.dumps(cfg)))  # a copy: Config fills in defaults
        location = None if node.latitude is None else (node.latitude, node.longitude)
        if position is None:
            position = (0.0, 0.0) if location is None else latlon_to_position(location, origin)
        if node.activation == "otaa":
            keys: dict[str, Any] = {"app_key": node.app_key, "join_eui": node.join_eui.hex()}
        else:
            keys = {"dev_addr": f"{node.dev_addr:08x}", "nwk_s_key": node.nwk_s_key,
                    "app_s_key": node.app_s_key}
        return cls(dev_eui=node.dev_eui_hex, role=node.role, board=node.board, position=position,
                   interval_s=node.interval_s, sf=node.sf, settings=dict(cfg.get("settings", {})),
                   location=location, name=node.asset or None, board_settings=True, **keys)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ROLES)}")
        if self.app_key is None and None in (self.dev_addr, self.nwk_s_key, self.app_s_key):
            raise ValueError(f"node {self.dev_eui}: give app_key (OTAA) or dev_addr and both "
                             "session keys (ABP)")
        if self.app_key is not None and self.join_eui is None:
            self.join_eui = DEMO_JOIN_EUI
        if self.location is None:
            self.location = position_to_latlon(self.position)
        if self.name is None:
            self.name = f"{self.role}-{self.dev_eui[-4:]}"

    @property
    def activation(self) -> str:
        """"otaa" or "abp"."""
        return "otaa" if self.app_key is not None else "abp"

    @property
    def dev_class(self) -> str:
        """LoRaWAN class of the role: C for the mains-powered lighting cabinet, A otherwise."""
        return ROLE_CLASS[self.role]

    def role_settings(self) -> dict[str, Any]:
        """The role's settings as written to the board: district defaults, then this node's
        (with ``board_settings``: this node's alone)."""
        if self.board_settings:
            return json.loads(json.dumps(self.settings))
        merged = json.loads(json.dumps(ROLE_SETTINGS.get(self.role, {})))
        for key, value in self.settings.items():
            if key == "pins" and isinstance(value, dict):
                merged.setdefault("pins", {}).update(value)
            else:
                merged[key] = value
        return merged

    def config_json(self) -> str:
        """The board's config.json, as provisioning writes it."""
        cfg: dict[str, Any] = {
            "version": 1, "dev_eui": self.dev_eui, "role": self.role, "board": self.board,
            "activation": self.activation,
            "radio": {"sf": self.sf, "tx_power_dbm": 14,
                      "channels": list(EU868_UPLINK_CHANNELS_HZ)},
            "interval_s": self.interval_s,
            "settings": self.role_settings(),
        }
        if self.activation == "otaa":
            assert self.app_key is not None
            cfg["otaa"] = {"join_eui": self.join_eui, "app_key": self.app_key.hex()}
        else:
            assert self.nwk_s_key is not None and self.app_s_key is not None
            cfg["abp"] = {"dev_addr": self.dev_addr, "nwk_s_key": self.nwk_s_key.hex(),
                          "app_s_key": self.app_s_key.hex()}
        if self.location is not None:
            cfg["location"] = {"lat": self.location[0], "lon": self.location[1],
                               "asset": self.name or ""}
        return json.dumps(cfg)


def device_for(spec: NodeSpec) -> Device:
    """The gateway's registry entry for a provisioned node (keys, class, role, place)."""
    lat, lon = spec.location if spec.location is not None else (None, None)
    common: dict[str, Any] = {"dev_eui": spec.dev_eui, "role": spec.role, "name": spec.name,
                              "dev_class": spec.dev_class, "latitude": lat, "longitude": lon}
    if spec.activation == "otaa":
        return Device(app_key=spec.app_key, join_eui=spec.join_eui,
                      dev_nonce_mode="increasing", **common)
    return Device(dev_addr=spec.dev_addr, nwk_s_key=spec.nwk_s_key, app_s_key=spec.app_s_key,
                  **common)


@dataclass
class SimNode:
    """One powered-or-not node: its spec, board, radio and chip models (by name)."""

    spec: NodeSpec
    board: VirtualBoard
    radio: SX1276Model
    hw: BoardHardware
    models: dict[str, Any] = field(default_factory=dict)

    @property
    def sensor(self) -> SHT4xModel | None:
        """The node's SHT4x, where it has one (air nodes)."""
        return self.models.get("sht4x")


class GatewayConcentrator(Concentrator):
    """The district's concentrator; optionally holds virtual time until the gateway has handled
    each uplink (see `District.pace_agent`)."""

    hold_timeout_s = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._raw_on_uplink: Callable[[RxPacket], None] | None = None
        self._cv = threading.Condition()
        self._handed = 0
        self._handled = 0
        self.paced = False
        self.hold_timeouts = 0
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def on_uplink(self) -> Callable[[RxPacket], None] | None:
        """The consumer of heard packets (the SimFrontEnd sets it), wrapped by the pacing."""
        return None if self._raw_on_uplink is None else self._deliver

    @on_uplink.setter
    def on_uplink(self, fn: Callable[[RxPacket], None] | None) -> None:
        self._raw_on_uplink = fn

    def _deliver(self, pkt: RxPacket) -> None:
        fn = self._raw_on_uplink
        if fn is None:
            return
        if not self.paced:
            fn(pkt)
            return
        with self._cv:
            self._handed += 1
            target = self._handed
        fn(pkt)
        with self._cv:  # scheduler thread: virtual time stands still meanwhile
            if not self._cv.wait_for(lambda: self._handled >= target, self.hold_timeout_s):
                self.hold_timeouts += 1
                self._handled = max(self._handled, target)
                log.warning("gateway did not handle an uplink within %.0f s", self.hold_timeout_s)

    def handled(self, n: int) -> None:
        """The gateway has finished with ``n`` more uplinks (any thread)."""
        with self._cv:
            self._handled += n
            self._cv.notify_all()


class District:
    """The channel, the gateway's concentrator, the environment and the nodes, in one clock."""

    def __init__(
        self,
        clock: VirtualClock,
        workdir: Path | None = None,
        seed: int = 1,
        gateway_position: tuple[float, float] = (0.0, 0.0),
        freqs_hz: Iterable[int] = EU868_8CH_HZ,
        origin: tuple[float, float] = DIJON,
    ) -> None:
        self.clock = clock
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cityedge-district-"))
        self.channel = RadioChannel(clock, seed=seed)
        self.concentrator = GatewayConcentrator(clock, self.channel, position=gateway_position,
                                                freqs_hz=freqs_hz)
        self.origin = origin
        self.environment = Environment(seed=seed, latitude=origin[0], longitude=origin[1],
                                       mean_temp_c=12.0, daily_amplitude_c=5.0,
                                       pm2_5_background_ugm3=9.0, pm2_5_traffic_ugm3=14.0,
                                       sound_day_dba=64.0, sound_night_dba=47.0)
        self.seed = seed
        self.nodes: list[SimNode] = []
        self._image: Path | None = None

    def image(self) -> Path:
        """The compiled firmware image (built once per district)."""
        if self._image is None:
            self._image = build_firmware(self.workdir / "image")
        return self._image

    def add_node(self, spec: NodeSpec, on_console: Callable[[str], None] | None = None) -> SimNode:
        """Provision and wire one node (not yet powered)."""
        flash = self.workdir / "nodes" / spec.dev_eui
        if flash.exists():
            shutil.rmtree(flash)
        shutil.copytree(self.image(), flash)
        (flash / "config.json").write_text(spec.config_json())
        return self._wire(spec, flash, None, on_console)

    def add_board(self, flash_dir: str | os.PathLike[str], *, uid: bytes | None = None,
                  position: tuple[float, float] | None = None,
                  on_console: Callable[[str], None] | None = None) -> SimNode:
        """Wire a board provisioned elsewhere (not yet powered); it boots from ``flash_dir`` as is.

        Nothing is copied or rewritten: the application and config.json deployed there are what
        runs. The config decides the role's chips, the board's pin map and where the radio stands
        (``position``, default: the configured location around the district's origin); ``uid``
        keeps the board's unique id (e.g. ``SerialBoard.board.uid``). ValueError when the folder
        holds no node application or a configuration the node would refuse.
        """
        flash = Path(flash_dir)
        if not (flash / "main.py").is_file():
            raise ValueError(f"{flash} holds no node application (main.py): deploy it first")
        try:
            cfg = json.loads((flash / node_config.PATH).read_text())
        except FileNotFoundError:
            raise ValueError(f"{flash} holds no {node_config.PATH}: provision the board "
                             "first") from None
        except ValueError as exc:
            raise ValueError(f"{flash / node_config.PATH}: not valid JSON ({exc})") from None
        spec = NodeSpec.from_config(cfg, position, self.origin)
        if any(n.spec.dev_eui == spec.dev_eui for n in self.nodes):
            raise ValueError(f"node {spec.dev_eui} is already in the district")
        return self._wire(spec, flash, uid, on_console)

    def _wire(self, spec: NodeSpec, flash: Path, uid: bytes | None,
              on_console: Callable[[str], None] | None) -> SimNode:
        """The board booting from ``flash``, with its radio on the channel and its role's chips."""
        hw = BoardHardware()
        radio, models = wire_node(hw, spec.board, spec.role, self.clock, self.channel,
                                  self.environment, settings=spec.role_settings(),
                                  position=spec.position, radio_name=f"node-{spec.dev_eui}",
                                  seed=self.seed + len(self.nodes))
        board = VirtualBoard(self.clock, spec.dev_eui, flash, hw, uid=uid, on_console=on_console)
        node = SimNode(spec, board, radio, hw, models)
        self.nodes.append(node)
        return node

    def register(self, store: Store) -> list[Device]:
        """Register every node of the district in a gateway store (as an installer does)."""
        devices = [device_for(n.spec) for n in self.nodes]
        for dev in devices:
            store.upsert_device(dev)
        return devices

    def pace_agent(self, agent: Any) -> None:
        """Hold virtual time after each uplink until ``agent`` has processed it.

        Wraps the agent instance's ``process`` (the method its receive loop calls for each group
        of frames) so the concentrator learns when a frame is done; needed at full speed
        (``speed=None``), harmless when paced to the wall clock.
        """
        original = agent.process
        conc = self.concentrator

        async def process(frames: list[Any]) -> int:
            try:
                return await original(frames)
            finally:
                conc.handled(len(frames))

        agent.process = process
        conc.paced = True

    def node(self, dev_eui: str) -> SimNode:
        """The node with this DevEUI (KeyError if the district has none)."""
        for n in self.nodes:
            if n.spec.dev_eui == dev_eui:
                return n
        raise KeyError(dev_eui)

    def start(self) -> None:
        """Power every node."""
        for node in self.nodes:
            node.board.start()

    def stop(self) -> None:
        """Power every node off."""
        for node in self.nodes:
            node.board.stop()


def ring_positions(n: int, radius_m: float = 800.0) -> list[tuple[float, float]]:
    """Nodes spread on a ring around the gateway (street-scale distances)."""
    return [
        (radius_m * (0.5 + (i % 3) / 3) * math.cos(2 * math.pi * i / max(n, 1)),
         radius_m * (0.5 + (i % 3) / 3) * math.sin(2 * math.pi * i / max(n, 1)))
        for i in range(n)
    ]


def random_node(index: int, **kwargs: Any) -> NodeSpec:
    """An ABP node with fresh random keys (cryptographic source) and a demo DevEUI/DevAddr."""
    return NodeSpec(
        dev_eui=f"70b3d57ed00{index:05x}",
        dev_addr=f"260b{index:04x}",
        nwk_s_key=os.urandom(16),
        app_s_key=os.urandom(16),
        **kwargs,
    )


def otaa_node(index: int, **kwargs: Any) -> NodeSpec:
    """An OTAA node with a fresh random AppKey (cryptographic source) and a demo DevEUI."""
    return NodeSpec(dev_eui=f"70b3d57ed00{index:05x}", app_key=os.urandom(16), **kwargs)


def mixed_specs(n: int = len(ROLE_CYCLE), *, otaa: bool = True, interval_s: int = 60,
                radius_m: float = 600.0, first_index: int = 1,
                roles: Iterable[str] | None = None) -> list[NodeSpec]:
    """Specs of a mixed district: roles from ``roles`` or the first ``n`` of `ROLE_CYCLE`
    (cycled), spread on a ring around the gateway, OTAA (or ABP) with fresh keys."""
    chosen = list(roles) if roles is not None else [
        ROLE_CYCLE[i % len(ROLE_CYCLE)] for i in range(n)]
    make = otaa_node if otaa else random_node
    return [make(first_index + i, role=role, position=pos, interval_s=interval_s)
            for i, (role, pos) in enumerate(zip(chosen, ring_positions(len(chosen), radius_m),
                                                strict=True))]
