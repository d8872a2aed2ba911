"""The lighting cabinet role inside the real MicroPython VM, on a virtual board.

The board carries the INA219 model on I2C bus 0 measuring sim.ina219.LampCircuit (its current
follows the contactor pin and the PWM duty the firmware sets), the 1-10 V PWM output, the contactor, door,
presence and S0 meter pins, and a mains-voltage ADC. Its main.py builds a minimal hardware object
(machine, I2C bus 0) and the role, as firmware/app.py will, then follows a plan: poll between
planned actions (sleeping in machine.lightsleep so a pin IRQ wakes it, as the app's loop must),
read and encode an uplink, send a command, note a downlink, reset. drivers/, firmware/ and
protocol/ modules are compiled with mpy-cross and mounted read-only at /_repo.

Times are virtual (exact by construction); the calendar runs on the board's UTC clock, set by
the simulation's epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firmware import astro
from firmware.calendar import epoch_seconds
from protocol.payload import decode_uplink
from sim.clock import VirtualClock
from sim.ina219 import INA219Model, LampCircuit
from sim.mpy import compile_file
from sim.vm import BoardHardware, VirtualBoard
from sim.vm.board import REPO

pytestmark = pytest.mark.vm

PWM, RELAY, DOOR, PIR, S0, MAINS = 25, 13, 34, 35, 32, 36
DIJON = (47.322, 5.041)
FULL = 65535
MODULES = [
    "drivers/__init__.py", "drivers/ina219.py",
    "firmware/__init__.py", "firmware/astro.py", "firmware/calendar.py",
    "firmware/roles/__init__.py", "firmware/roles/lighting.py",
    "protocol/__init__.py",
] + sorted(p.relative_to(REPO).as_posix() for p in (REPO / "protocol" / "payload").glob("*.py"))

SETTINGS: dict[str, Any] = {
    "pins": {"pwm": PWM, "relay": RELAY, "door": DOOR, "presence": PIR, "s0": S0,
             "mains_adc": MAINS},
    "lat": DIJON[0], "lon": DIJON[1], "utc_offset_min": 60, "dst": "eu",
    "calendar": {"points": [["dusk", 0, 100], ["dawn", 0, 0]], "default": 0, "reduce": None},
    "ramp_s": 4, "presence_level": 100, "presence_s": 60, "fallback_min": 30,
    "pulses_per_kwh": 1000, "shunt_ohms": 0.1, "max_current_a": 3.2,
    "current_ratio": 1, "voltage_ratio": 10, "mains_ratio": 100,
    "lamp_fail_ma": 1000, "relay_fail_ma": 50, "settle_s": 5,
}

MAIN = """
import json, machine, time
from firmware.roles.lighting import LightingRole
from protocol.payload import encode_uplink

class HW:
    def __init__(self):
        self.machine = machine
        self.i2c = machine.I2C(0, scl=machine.Pin(15), sda=machine.Pin(4), freq=100000)

    def battery_mv(self):
        return 0

try:
    with open("boots.txt") as f:
        boot = int(f.read())
except OSError:
    boot = 0
with open("boots.txt", "w") as f:
    f.write(str(boot + 1))
role = LightingRole(HW(), json.loads(SETTINGS))
role.boot(machine.reset_cause())
t0 = time.ticks_ms()

def read(tag):
    r = role.read()
    fport, data = encode_uplink(role.name, r)
    print(tag, time.ticks_ms(), json.dumps(r), role.alarm(), ",".join(role.faults), fport,
          data.hex())

for at, action, arg in json.loads(PLANS)[boot]:
    while True:
        left = at - time.ticks_diff(time.ticks_ms(), t0)
        if left <= 0:
            break
        wait = role.poll()
        if role.urgent:
            read("URGENT")
            continue
        machine.lightsleep(max(1, min(wait, left)))
    if action == "read":
        read("READ")
    elif action == "cmd":
        print("CMD", time.ticks_ms(), role.command(arg))
    elif action == "dl":
        role.downlink_seen()
    elif action == "reset":
        machine.reset()
print("END", time.ticks_ms())
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lighting-mpy")
    for rel in MODULES:
        done = compile_file(REPO / rel, out / Path(rel).with_suffix(".mpy"), rel)
        assert done.ok, done.error
    return out


class Cabinet:
    """A virtual lighting cabinet: board, INA219 model, lamps; PWM and contactor recorded."""

    def __init__(self, make_board, compiled: Path, start: tuple[int, ...], plans: list[list[Any]],
                 settings: dict[str, Any] | None = None, heap_bytes: int = 256 * 1024) -> None:
        self.start_epoch = epoch_seconds(*start)
        self.clock = VirtualClock(epoch=self.start_epoch)
        self.pwm: list[tuple[int, int | None]] = []
        self.hw = BoardHardware(adc={MAINS: lambda: 2_310_000},
                                on_pwm=lambda pin, f, d: self.pwm.append((self.clock.now_us(), d)))
        # The lamps: 2 A at full output, 230 V seen as 23 V through the sensing divider.
        self.lamps = LampCircuit(self.hw.pin(RELAY), self.hw.pin(PWM))
        self.ina = INA219Model(0x40, 0.1, source=self.lamps)
        self.hw.i2c_bus(0).attach(0x40, self.ina)
        self.relay: list[tuple[int, int]] = []
        self.hw.pin(RELAY).watch(lambda level: self.relay.append((self.clock.now_us(), level)))
        self.hw.pin(S0).drive(1)  # the meter's open collector output, pulled up, idle high
        s = dict(SETTINGS)
        s.update(settings or {})
        main = f"SETTINGS = {json.dumps(s)!r}\nPLANS = {json.dumps(plans)!r}\n" + MAIN
        self.board: VirtualBoard = make_board(
            self.clock, main, hardware=self.hw,
            mounts=[(compiled / pkg, f"/_repo/{pkg}") for pkg in ("drivers", "firmware", "protocol")],
            sys_path=["/_repo"], heap_bytes=heap_bytes,
        )
        assert self.board.flash_dir is not None
        self.flash: Path = self.board.flash_dir

    def at(self, seconds: float, fn, *args) -> None:
        self.clock.call_at(int(seconds * 1_000_000), fn, *args)

    def pulse(self, pin: int, at_s: float, width_s: float = 0.03, idle: int = 1) -> None:
        self.at(at_s, self.hw.pin(pin).drive, 1 - idle)
        self.at(at_s + width_s, self.hw.pin(pin).drive, idle)

    def run(self, seconds: float) -> None:
        self.board.start()
        self.clock.run_for(seconds)
        assert self.board.crashed is None, self.board.crashed

    def lines(self, tag: str) -> list[list[str]]:
        return [ln.split(" ") for ln in self.board.console if ln.startswith(tag + " ")]

    def reads(self, tag: str = "READ") -> list[dict[str, Any]]:
        """Each reading the board printed: ms, readings, alarm(), faults, and the decoded uplink."""
        out = []
        for ln in self.board.console:
            if not ln.startswith(tag + " "):
                continue
            _, ms, rest = ln.split(" ", 2)
            readings, rest = rest.rsplit("} ", 1)
            alarm, faults, fport, data = rest.split(" ")
            role, uplink = decode_uplink(int(fport), bytes.fromhex(data))
            assert role == "lighting"
            uplink["alarms"] = list(uplink.get("alarms", ()))
            out.append({"ms": int(ms), "r": json.loads(readings + "}"), "alarm": alarm == "True",
                        "faults": [f for f in faults.split(",") if f], "fport": int(fport),
                        "uplink": uplink})
        return out

    def duty_at(self, us: int) -> int | None:
        duty = None
        for t, d in self.pwm:
            if t <= us:
                duty = d
        return duty



def _sunset_us(date: tuple[int, int, int], start: tuple[int, ...]) -> int:
    """Dijon's sunset on ``date``, in virtual us from a simulation started at ``start`` (UTC)."""
    _, _, sset = astro.sun_times(DIJON[0], DIJON[1], astro.days_from_civil(*date))
    return (epoch_seconds(*date) + sset - epoch_seconds(*start)) * 1_000_000


def _plan(*steps: tuple[float, str, Any]) -> list[list[Any]]:
    return [[int(at * 1000), action, arg] for at, action, arg in steps]


# -- the calendar ------------------------------------------------------------------------------------

def test_the_calendar_switches_the_contactor_and_ramps_the_lamps_up_at_dusk(make_board, compiled) -> None:
    start = (2026, 11, 15, 15, 45)
    sunset = _sunset_us((2026, 11, 15), start)
    assert 10 * 60e6 < sunset < 30 * 60e6  # Dijon sunset 16:0x UTC on that day
    dusk_s = sunset / 1e6
    cab = Cabinet(make_board, compiled, start, [_plan(
        (dusk_s - 60, "read", None),
        (dusk_s + 30, "read", None),
    )])
    cab.run(dusk_s + 40)

    before, after = cab.reads()
    assert before["r"]["level"] == 0 and before["r"]["relay"] is False
    assert before["r"]["alarms"] == [] and before["r"]["level_source"] == "calendar"
    assert after["r"]["level"] == 100 and after["r"]["relay"] is True
    assert after["r"]["lamp_current"] == pytest.approx(2000, abs=2)
    assert after["r"]["lamp_voltage"] == 230.0 and after["r"]["mains_voltage"] == 231.0
    assert after["r"]["alarms"] == [] and after["alarm"] is False and after["faults"] == []
    # The uplink the gateway decodes carries the same readings.
    assert after["fport"] == 13
    up = after["uplink"]
    assert (up["level"], up["relay"], up["level_source"]) == (100, True, "calendar")
    assert up["lamp_current"] == after["r"]["lamp_current"]

    # Contactor first, then a linear 4 s ramp from dark to full, starting at sunset.
    assert [lv for _, lv in cab.relay] == [1]
    closed_at = cab.relay[0][0]
    assert sunset <= closed_at <= sunset + 1_500_000
    ramp = [(t, d) for t, d in cab.pwm if d]
    assert ramp[0][0] >= closed_at
    duties = [d for _, d in ramp]
    assert duties == sorted(duties) and duties[-1] == FULL and len(duties) > 20
    assert ramp[-1][0] - closed_at == pytest.approx(4_000_000, abs=100_000)
    mid_t = closed_at + 2_000_000
    assert cab.duty_at(mid_t) == pytest.approx(FULL // 2, abs=FULL // 20)


# -- presence -----------------------------------------------------------------------------------------

def test_presence_raises_the_night_level_for_the_set_time_then_the_calendar_resumes(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(
        (10, "read", None), (30, "read", None), (75, "read", None), (100, "read", None),
    )], settings={"calendar": {"points": [["dusk", 0, 40], ["dawn", 0, 0]]}})
    cab.pulse(PIR, 20.0, width_s=1.0, idle=0)
    cab.run(110)

    quiet, raised, still, back = cab.reads()
    assert (quiet["r"]["level"], quiet["r"]["level_source"]) == (40, "calendar")
    assert (raised["r"]["level"], raised["r"]["level_source"]) == (100, "presence")
    assert (still["r"]["level"], still["r"]["level_source"]) == (100, "presence")
    assert (back["r"]["level"], back["r"]["level_source"]) == (40, "calendar")
    forty = FULL * 40 // 100
    assert cab.duty_at(19_900_000) == forty
    assert cab.duty_at(24_100_000) == FULL  # the detection at 20 s, ramped over 4 s
    # The last detection was at 20 s: presence ends 60 s later and the lamps ramp back down.
    assert cab.duty_at(80_000_000) == FULL
    assert forty < cab.duty_at(82_500_000) < FULL
    assert cab.duty_at(85_100_000) == forty


def test_presence_does_not_light_the_lamps_by_day(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 6, 15, 10, 0), [_plan((30, "read", None))])
    cab.pulse(PIR, 10.0, width_s=1.0, idle=0)
    cab.run(40)

    (day,) = cab.reads()
    assert (day["r"]["level"], day["r"]["relay"], day["r"]["level_source"]) == (0, False, "calendar")
    assert not any(d for _, d in cab.pwm) and cab.relay == []


# -- operator overrides -----------------------------------------------------------------------------

def test_an_override_holds_until_its_expiry_then_the_calendar_resumes(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(
        (10, "cmd", {"cmd": "dim", "seq": 1, "level": 20, "ramp_s": 6, "expiry_min": 2}),
        (30, "read", None), (125, "read", None), (140, "read", None),
        (150, "cmd", {"cmd": "switch", "seq": 2, "on": False, "expiry_min": 1}),
        (170, "read", None), (220, "read", None),
    )])
    cab.run(230)

    assert [c[2] for c in cab.lines("CMD")] == ["done", "done"]
    dimmed, holding, resumed, off, on_again = cab.reads()
    assert (dimmed["r"]["level"], dimmed["r"]["level_source"]) == (20, "override")
    assert dimmed["uplink"]["level_source"] == "override"
    assert (holding["r"]["level"], holding["r"]["level_source"]) == (20, "override")
    assert (resumed["r"]["level"], resumed["r"]["level_source"]) == (100, "calendar")
    assert (off["r"]["level"], off["r"]["relay"], off["r"]["level_source"]) == (0, False, "override")
    assert (on_again["r"]["level"], on_again["r"]["relay"]) == (100, True)
    assert on_again["r"]["level_source"] == "calendar"
    # The dim ramp took the 6 s it was given; the override ended at 10 s + 2 min.
    assert cab.duty_at(10_000_000) == FULL
    assert cab.duty_at(13_000_000) == pytest.approx((FULL + FULL // 5) // 2, abs=FULL // 30)
    assert cab.duty_at(16_100_000) == FULL * 20 // 100
    assert cab.duty_at(129_900_000) == FULL * 20 // 100
    assert cab.duty_at(135_000_000) == FULL
    # Switch off: ramp down, then the contactor opens; a minute later it closes again.
    opened = [t for t, lv in cab.relay if lv == 0]
    closed = [t for t, lv in cab.relay if lv == 1]
    assert len(opened) == 1 and 153_900_000 <= opened[0] <= 155_000_000
    assert closed[-1] == pytest.approx(210_000_000, abs=1_100_000)


def test_bad_commands_are_refused_and_leave_the_outputs_alone(make_board, compiled) -> None:
    bad = [
        {"cmd": "dim", "seq": 1, "level": 101},
        {"cmd": "dim", "seq": 2, "level": -1},
        {"cmd": "dim", "seq": 3, "level": "50"},
        {"cmd": "dim", "seq": 4, "level": True},
        {"cmd": "dim", "seq": 5},
        {"cmd": "dim", "seq": 6, "level": 50, "ramp_s": 300},
        {"cmd": "dim", "seq": 7, "level": 50, "expiry_min": 0},
        {"cmd": "dim", "seq": 8, "level": 50, "expiry_min": 10081},
        {"cmd": "switch", "seq": 9, "on": "yes"},
        {"cmd": "switch", "seq": 10, "on": 0},
        {"cmd": "calendar", "seq": 11, "points": [{"ref": "noon", "minutes": 0, "level": 10}]},
        {"cmd": "calendar", "seq": 12, "points": [{"ref": "clock", "minutes": 1440, "level": 10}]},
        {"cmd": "calendar", "seq": 13, "points": "dusk"},
        {"cmd": "valve_open", "seq": 14, "seconds": 60},
        {"cmd": "frobnicate", "seq": 15},
        "dim 50",
    ]
    steps = [(20 + i, "cmd", c) for i, c in enumerate(bad)]
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(*steps, (60, "read", None))])
    cab.run(70)

    results = [c[2] for c in cab.lines("CMD")]
    assert results == ["out_of_range"] * 13 + ["not_supported"] * 3
    # The night ramp ended long before the first command; nothing moved afterwards.
    assert cab.pwm and cab.pwm[-1][0] < 20_000_000 and cab.pwm[-1][1] == FULL
    assert [lv for _, lv in cab.relay] == [1]
    (after,) = cab.reads()
    assert (after["r"]["level"], after["r"]["level_source"]) == (100, "calendar")
    assert not (cab.flash / "calendar.json").exists()


# -- alarms ---------------------------------------------------------------------------------------------

def test_lamp_and_relay_failures_raise_alarms_once_each(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(
        (20, "read", None), (40, "read", None), (50, "read", None),
        (60, "cmd", {"cmd": "switch", "seq": 1, "on": False, "expiry_min": 10}),
        (80, "read", None),
    )])
    cab.at(30, setattr, cab.lamps, "failed", True)
    cab.at(55, setattr, cab.lamps, "welded", True)
    cab.run(90)

    healthy, failed, still_failed, welded = cab.reads()
    assert healthy["r"]["alarms"] == [] and healthy["alarm"] is False
    assert failed["r"]["alarms"] == ["lamp_failure"] and failed["alarm"] is True
    assert failed["r"]["lamp_current"] == pytest.approx(50, abs=1)
    assert still_failed["r"]["alarms"] == ["lamp_failure"] and still_failed["alarm"] is False
    assert welded["r"]["relay"] is False
    assert welded["r"]["alarms"] == ["relay_failure"] and welded["alarm"] is True
    assert welded["r"]["lamp_current"] == pytest.approx(300, abs=1)
    assert welded["uplink"]["alarms"] == ["relay_failure"]


def test_an_opened_door_is_reported_at_once_even_if_closed_again(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(
        (10, "read", None), (40, "read", None),
    )])
    cab.pulse(DOOR, 20.0, width_s=2.0, idle=0)  # the contact opens for 2 s
    cab.run(50)

    urgent = cab.reads("URGENT")
    assert len(urgent) == 1
    assert urgent[0]["ms"] == 20_000
    assert urgent[0]["r"]["alarms"] == ["door_open"] and urgent[0]["alarm"] is True
    assert urgent[0]["uplink"]["alarms"] == ["door_open"]
    closed_before, closed_after = cab.reads()
    assert closed_before["r"]["alarms"] == [] and closed_after["r"]["alarms"] == []


def test_without_downlinks_the_node_runs_its_calendar_in_fallback_and_says_so(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan(
        (5, "dl", None), (60, "read", None), (200, "read", None), (210, "read", None),
        (220, "dl", None), (230, "read", None),
    )], settings={"fallback_min": 3})
    cab.run(240)

    contact, lost, still_lost, back = cab.reads()
    assert (contact["r"]["level_source"], contact["r"]["alarms"]) == ("calendar", [])
    assert (lost["r"]["level"], lost["r"]["level_source"]) == (100, "fallback")
    assert lost["r"]["alarms"] == ["calendar_fallback"] and lost["alarm"] is True
    assert lost["uplink"]["level_source"] == "fallback"
    assert still_lost["alarm"] is False
    assert (back["r"]["level_source"], back["r"]["alarms"]) == ("calendar", [])
    assert not any(t > 10_000_000 for t, _ in cab.pwm)  # the lamps never noticed


# -- energy and persistence ------------------------------------------------------------------------------

def test_energy_pulses_are_counted_and_never_go_backwards_across_reboots(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 12, 0), [
        _plan((2, "cmd", {"cmd": "calendar", "seq": 1,
                          "points": [{"ref": "clock", "minutes": 0, "level": 30}]}),
              (40, "read", None), (41, "reset", None)),
        _plan((5, "read", None), (30, "read", None), (60, "read", None)),
        _plan((5, "read", None)),
    ])
    for i in range(250):  # 250 pulses at 1000 imp/kWh: 250 Wh
        cab.pulse(S0, 5.0 + i * 0.1, idle=1)
    for i in range(30):  # second boot, which starts at 41 s
        cab.pulse(S0, 50.0 + i * 0.1, idle=1)
    for i in range(5):  # after the last reading, just before the power goes
        cab.pulse(S0, 110.0 + i * 0.1, idle=1)
    cab.board.start()
    cab.clock.run_for(115)
    assert cab.board.crashed is None, cab.board.crashed
    cab.board.power_cut()
    cab.board.start()
    cab.clock.run_for(10)
    assert cab.board.crashed is None, cab.board.crashed

    assert [c[2] for c in cab.lines("CMD")] == ["done"]
    first, rebooted, counted, more, powered = cab.reads()
    assert first["r"]["energy"] == 250 and first["uplink"]["energy"] == 250
    assert first["r"]["level"] == 30  # the new program is in force at once
    assert rebooted["r"]["energy"] == 250  # restored from flash after the reset
    assert rebooted["r"]["level"] == 30  # and so is the program
    assert counted["r"]["energy"] == 280 and more["r"]["energy"] == 280
    # The power cut lost the 5 pulses after the last save, never what was already metered.
    assert powered["r"]["energy"] == 280
    state = json.loads((cab.flash / "lighting.json").read_text())
    assert state == {"base_j": 0, "pulses": 280, "ppk": 1000}
    cal = json.loads((cab.flash / "calendar.json").read_text())
    assert cal["points"] == [["clock", 0, 30]]
    assert not any(p.name.endswith(".tmp") for p in cab.flash.iterdir())


def test_a_missing_lamp_sensor_is_a_fault_not_a_crash(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan((20, "read", None))])
    cab.hw.i2c_bus(0).detach(0x40)
    cab.run(30)

    (r,) = cab.reads()
    assert r["faults"] == ["energy_meter"]
    assert "lamp_current" not in r["r"] and r["r"]["alarms"] == []
    assert r["r"]["level"] == 100  # the lamps still follow the calendar


def test_a_sensor_brown_out_is_repaired_before_it_can_look_like_a_lamp_failure(make_board, compiled) -> None:
    cab = Cabinet(make_board, compiled, (2026, 11, 15, 21, 0), [_plan((20, "read", None))])
    cab.at(15, cab.ina.brown_out)  # the INA219 forgets its calibration: Current would read 0
    cab.run(30)

    (r,) = cab.reads()
    assert r["r"]["lamp_current"] == pytest.approx(2000, abs=2)
    assert r["r"]["alarms"] == [] and r["faults"] == []


def test_without_a_set_clock_the_lamps_stay_lit_and_the_clock_fault_is_reported(make_board, compiled) -> None:
    # A board whose RTC was never set counts from its epoch: the calendar cannot tell the hour.
    cab = Cabinet(make_board, compiled, (1970, 1, 1, 12, 0), [_plan((20, "read", None))])
    cab.run(30)

    (r,) = cab.reads()
    assert r["faults"] == ["clock"]
    assert (r["r"]["level"], r["r"]["relay"], r["r"]["level_source"]) == (100, True, "calendar")
    assert cab.pwm[-1][1] == FULL
