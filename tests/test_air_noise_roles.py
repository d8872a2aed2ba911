"""The air-quality and noise roles inside the real MicroPython VM, on a virtual board whose I2C bus
carries the chip models (SHT4x, SPS30, PCBA-DBM decibel meter), in virtual time.

Each board runs a small main.py: a minimal ``hw`` (``.machine``, ``.i2c``, ``.battery_mv()``), the
role, a few cycles of ``read()`` encoded with ``protocol.payload.encode_uplink``. The test decodes
those bytes on CPython with ``decode_uplink`` and compares them with what the models measured.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol.payload import decode_uplink
from sim.bus import SimI2C
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.mpy import compile_file, compile_tree
from sim.pcba_dbm import DecibelMeterModel
from sim.sht4x import SHT4xModel
from sim.sps30 import FAN_CLEANING, RESET, SPS30Model, with_crc
from sim.vm import PWRON_RESET, BoardHardware, VirtualBoard
from sim.vm.board import DEFAULT_HEAP_BYTES, REPO

pytestmark = pytest.mark.vm

MakeBoard = Callable[..., VirtualBoard]
TRUE_PM = (5.5, 8.25, 10.5, 13.75)
BATTERY_UV = 1_900_000
  # at the ADC: 3.8 V through the 1:2 divider

MAIN = """
import binascii
import machine
import time

from protocol import payload as codec

SETTINGS = {settings}
CYCLES = {cycles}
PAUSE_S = {pause_s}
WDT_MS = {wdt_ms}


class Hardware:
    def __init__(self):
        self.machine = machine
        self.i2c = machine.I2C(0, sda=machine.Pin(21), scl=machine.Pin(22), freq=100000)
        self._adc = machine.ADC(machine.Pin(35))
        if WDT_MS:
            self.wdt = machine.WDT(timeout=WDT_MS)

    def battery_mv(self):
        return self._adc.read_uv() * 2 // 1000


from firmware.roles.{module} import {cls}

role = {cls}(Hardware(), SETTINGS)
role.boot(machine.reset_cause())
for _ in range(CYCLES):
    t0 = time.ticks_ms()
    readings = role.read()
    port, data = codec.encode_uplink(role.name, readings)
    print("UP", port, binascii.hexlify(data).decode(), ",".join(role.faults) or "-",
          time.ticks_diff(time.ticks_ms(), t0), role.alarm(), role.command({{}}), role.poll())
    for _ in range(PAUSE_S):
        time.sleep(1)
        if WDT_MS:
            role.hw.wdt.feed()
print("DONE")
while WDT_MS:  # an armed watchdog is fed at the REPL by nobody: keep feeding it
    time.sleep(1)
    role.hw.wdt.feed()
"""


# What the two roles' boards run, compiled with mpy-cross as deploy copies it.
NODE_FILES = ("drivers/__init__.py", "drivers/ticks.py", "drivers/sensirion.py", "drivers/sht4x.py",
              "drivers/sps30.py",
              "drivers/pcba_dbm.py", "firmware/__init__.py", "firmware/noise_stats.py",
              "firmware/roles/__init__.py", "firmware/roles/air.py", "firmware/roles/noise.py")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("image")
    report = compile_tree(out, packages=("protocol",))
    report.files.extend(compile_file(REPO / f, out / Path(f).with_suffix(".mpy"), f)
                        for f in NODE_FILES)
    assert not report.errors, [(e.source, e.error) for e in report.errors]
    return out


class Node:
    """A virtual board with an I2C bus 0 and a battery on ADC pin 35."""

    def __init__(self, make_board: MakeBoard, image: Path, module: str, cls: str,
                 settings: dict, cycles: int = 2, pause_s: int = 600,
                 heap_bytes: int = DEFAULT_HEAP_BYTES, wdt_ms: int = 0) -> None:
        self.clock = VirtualClock()
        self.env = Environment(seed=11)
        self.hw = BoardHardware(adc={35: lambda: BATTERY_UV})
        self.bus: SimI2C = self.hw.i2c_bus(0)
        main = MAIN.format(settings=repr(settings), cycles=cycles, pause_s=pause_s,
                           module=module, cls=cls, wdt_ms=wdt_ms)
        self.board = make_board(
            self.clock, main, hardware=self.hw, heap_bytes=heap_bytes,
            mounts=[(image / pkg, f"/_repo/{pkg}") for pkg in ("drivers", "protocol", "firmware")],
            sys_path=["/_repo"])

    def run(self, seconds: float) -> list[tuple[str, dict, tuple[str, ...], int, str]]:
        self.board.start()
        self.clock.run_for(seconds)
        assert self.board.crashed is None, self.board.crashed
        assert "DONE" in self.board.console, self.board.console[-20:]
        ups = []
        for line in self.board.console:
            if line.startswith("UP "):
                _, port, hexdata, faults, took_ms, rest = line.split(" ", 5)
                role, readings = decode_uplink(int(port), bytes.fromhex(hexdata))
                names = () if faults == "-" else tuple(faults.split(","))
                ups.append((role, readings, names, int(took_ms), rest))
        return ups

    @property
    def flash(self) -> Path:
        assert self.board.flash_dir is not None
        return Path(self.board.flash_dir)


# -- air quality -------------------------------------------------------------------------------------

def air_node(make_board: MakeBoard, image: Path, *, sps30: dict | None = None,
             sht4x: dict | None = None, settings: dict | None = None, cycles: int = 2,
             heap_bytes: int = DEFAULT_HEAP_BYTES) -> tuple[Node, SPS30Model | None,
                                                            SHT4xModel | None]:
    node = Node(make_board, image, "air", "AirRole", settings or {}, cycles=cycles,
                heap_bytes=heap_bytes)
    pm = sht = None
    if sps30 is not None:
        sps30.setdefault("source", lambda epoch: TRUE_PM)
        sps30.setdefault("precision", 0.0)
        pm = SPS30Model(node.clock, **sps30)
        node.bus.attach(0x69, pm)
    if sht4x is not None:
        sht = SHT4xModel(node.clock, node.env, **sht4x)
        node.bus.attach(0x44, sht)
    return node, pm, sht


def test_air_role_reports_particulates_after_the_warm_up_and_stops_the_fan(
        make_board: MakeBoard, image: Path) -> None:
    node, pm, sht = air_node(make_board, image, sps30={}, sht4x={})
    assert pm is not None and sht is not None

    ups = node.run(2 * 700)

    assert len(ups) == 2
    for role, readings, faults, took_ms, rest in ups:
        assert role == "air" and faults == ()
        assert [readings[k] for k in ("pm1_0", "pm2_5", "pm4_0", "pm10")] == pytest.approx(
            [round(v, 1) for v in TRUE_PM], abs=1e-9)
        assert readings["battery"] == 3800
        assert 30_000 <= took_ms <= 36_000  # the 30 s warm-up, then three 1 s readings
        assert rest == "False not_supported None"
    assert sht.last_truth is not None
    t_true, rh_true = sht.last_truth
    assert ups[-1][1]["temperature"] == pytest.approx(t_true, abs=0.3)
    assert ups[-1][1]["humidity"] == pytest.approx(rh_true, abs=2.0)
    # the fan ran only while measuring, and the chip sleeps between cycles
    assert 2 * 30e6 <= pm.fan_on_us <= 2 * 36e6
    assert pm.mode == "sleep"


def test_air_role_without_a_particle_sensor_still_reports_temperature_and_humidity(
        make_board: MakeBoard, image: Path) -> None:
    node, _, _ = air_node(make_board, image, sht4x={})

    ups = node.run(2 * 700)

    for _, readings, faults, took_ms, _ in ups:
        assert faults == ("particulate",)
        assert set(readings) == {"temperature", "humidity", "battery"}
        assert took_ms < 1000  # no warm-up wasted on a missing sensor


def test_a_blocked_fan_is_the_particulate_fault_and_no_pm_values(
        make_board: MakeBoard, image: Path) -> None:
    node, pm, _ = air_node(make_board, image, sps30={"fan_blocked": True}, sht4x={})

    ups = node.run(2 * 700)

    for _, readings, faults, _, _ in ups:
        assert faults == ("particulate",)
        assert "pm2_5" not in readings and "temperature" in readings
    assert pm is not None and pm.mode == "sleep"  # stopped and asleep all the same


@pytest.mark.parametrize(("sps30", "sht4x", "expected"), [
    ({"fail_crc": True}, {}, ("particulate",)),
    ({}, {"fail_crc": True}, ("temp_humidity",)),
    ({"stuck": True}, {"stuck": True}, ("particulate", "temp_humidity")),
])
def test_sensor_faults_are_named_never_raised(make_board: MakeBoard, image: Path, sps30: dict,
                                              sht4x: dict,
                                              expected: tuple[str, ...]) -> None:
    node, _, _ = air_node(make_board, image, sps30=sps30, sht4x=sht4x, cycles=1)

    ups = node.run(700)

    (_, readings, faults, _, _), = ups
    assert faults == expected
    assert ("pm2_5" in readings) == ("particulate" not in expected)
    assert ("temperature" in readings) == ("temp_humidity" not in expected)
    assert readings["battery"] == 3800


def test_a_chip_left_measuring_by_a_reset_is_reset_and_read(
        make_board: MakeBoard, image: Path) -> None:
    node, pm, _ = air_node(make_board, image, sps30={}, sht4x={}, cycles=1)
    assert pm is not None
    pm.i2c_write(bytes([0x00, 0x10]) + with_crc(b"\x03\x00"))  # measuring before the node boots
    node.clock.run_for(5)

    ups = node.run(700)

    assert ups[0][2] == ()
    assert ups[0][1]["pm10"] == pytest.approx(13.8)
    assert RESET in pm.commands


def test_the_fan_is_cleaned_by_hand_once_per_interval_and_remembered_in_flash(
        make_board: MakeBoard, image: Path) -> None:
    node, pm, _ = air_node(make_board, image, sps30={}, sht4x={}, cycles=3,
                           settings={"fan_clean_s": 1000})
    assert pm is not None

    ups = node.run(3 * 700)

    # cycle 1 notes the new sensor; cycle 2 (~630 s later) is too early; cycle 3 cleans
    assert pm.commands.count(FAN_CLEANING) == 1
    assert [u[3] >= 40_000 for u in ups] == [False, False, True]  # 10 s cleaning + warm-up
    assert all(u[2] == () for u in ups)
    state = json.loads((node.flash / "air.json").read_text())
    assert isinstance(state["fan_cleaned"], int)


def test_pm_alarm_level_asks_for_a_confirmed_uplink(make_board: MakeBoard, image: Path) -> None:
    node, _, _ = air_node(make_board, image, sps30={}, sht4x={}, cycles=1,
                          settings={"pm2_5_alarm": 8})

    ups = node.run(700)

    assert ups[0][4].startswith("True ")


# -- noise -------------------------------------------------------------------------------------------

def reference_stats(levels: list[int]) -> dict[str, float]:
    loud_first = sorted(levels, reverse=True)
    n = len(levels)
    energy = math.fsum(10 ** (v / 10) for v in levels) / n
    return {"laeq": round(10 * math.log10(energy), 1), "lamax": max(levels),
            "lamin": min(levels), "la10": loud_first[math.ceil(0.1 * n) - 1],
            "la90": loud_first[math.ceil(0.9 * n) - 1]}


def noise_node(make_board: MakeBoard, image: Path, *, meter: dict | None, settings: dict,
               cycles: int = 2, heap_bytes: int = DEFAULT_HEAP_BYTES
               ) -> tuple[Node, DecibelMeterModel | None]:
    node = Node(make_board, image, "noise", "NoiseRole", settings, cycles=cycles,
                heap_bytes=heap_bytes)
    model = None
    if meter is not None:
        meter.setdefault("environment", node.env)
        model = DecibelMeterModel(node.clock, **meter)
        node.bus.attach(0x48, model)
    return node, model


def test_noise_role_reports_the_statistics_of_every_level_of_its_window(
        make_board: MakeBoard, image: Path) -> None:
    # Street noise with a passing lorry every 7 s, so the levels spread over 20 dB.
    def street(epoch: float) -> float:
        return 55.0 + 3.0 * math.sin(epoch / 3.0) + (18.0 if int(epoch) % 7 == 0 else 0.0)

    node, model = noise_node(make_board, image, meter={"source": street, "environment": None},
                             settings={"window_s": 30})
    assert model is not None

    ups = node.run(2 * 700)

    assert len(ups) == 2
    assert len(model.clears) == 2
    for clear_us, (role, readings, faults, took_ms, _) in zip(model.clears, ups, strict=True):
        assert role == "noise" and faults == ()
        assert readings["interval"] == 30
        assert 30_000 <= took_ms <= 32_000
        # the levels the module produced during this cycle's window: each must be read once
        window = [db for t, db in model.levels if clear_us < t <= clear_us + 30_500_000]
        assert len(window) == 30
        expected = reference_stats(window)
        for key, value in expected.items():
            assert readings[key] == pytest.approx(value, abs=0.051), key
        assert readings["la10"] >= readings["la90"]
        assert readings["battery"] == 3800


def test_noise_role_without_a_module_or_with_a_dead_mic_reports_the_sound_fault(
        make_board: MakeBoard, image: Path) -> None:
    for meter in (None, {"dead_mic": True}):
        node, _ = noise_node(make_board, image, meter=meter, settings={"window_s": 5}, cycles=1)

        ups = node.run(700)

        (_, readings, faults, _, _), = ups
        assert faults == ("sound",)
        assert readings == {"battery": 3800}


def test_noise_alarm_when_laeq_reaches_its_level(make_board: MakeBoard, image: Path) -> None:
    node, _ = noise_node(make_board, image, meter={"source": lambda e: 80.0, "environment": None},
                         settings={"window_s": 5, "laeq_alarm": 75}, cycles=1)

    ups = node.run(700)

    (_, readings, faults, _, rest), = ups
    assert faults == ()
    assert readings["laeq"] == pytest.approx(80.0) and readings["lamax"] == pytest.approx(80.0)
    assert rest.startswith("True ")


@pytest.mark.parametrize("role", ["air", "noise"])
def test_long_measurements_feed_the_boards_watchdog(make_board: MakeBoard, image: Path,
                                                    role: str) -> None:
    # A 10 s watchdog, a 30 s warm-up or a 30 s window: only hw.wdt.feed() keeps the board up.
    node = Node(make_board, image, role, "AirRole" if role == "air" else "NoiseRole",
                {"window_s": 30}, cycles=1, wdt_ms=10_000)
    if role == "air":
        node.bus.attach(0x69, SPS30Model(node.clock, source=lambda e: TRUE_PM))
        node.bus.attach(0x44, SHT4xModel(node.clock, node.env))
    else:
        node.bus.attach(0x48, DecibelMeterModel(node.clock, node.env))

    ups = node.run(700)

    assert len(ups) == 1 and ups[0][2] == ()
    assert ups[0][3] >= 30_000
    assert node.board.reset_causes == [PWRON_RESET]


def test_main_script_is_valid_python() -> None:
    compile(textwrap.dedent(MAIN.format(settings="{}", cycles=1, pause_s=1, module="air",
                                        cls="AirRole", wdt_ms=0)), "main.py", "exec")
