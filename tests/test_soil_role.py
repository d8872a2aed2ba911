"""The soil role inside the real MicroPython VM: seesaw model on the I2C bus, valve H-bridge on pins.

Each test boots a VirtualBoard whose main.py builds a minimal hardware object (machine, I2C bus 0,
a battery ADC) and the role, as firmware/app.py will. drivers/, firmware/ and protocol/ are
compiled with mpy-cross (only the modules the role needs) and mounted read-only at /_repo. Times
below are virtual microseconds of the simulation clock, exact by construction, not wall time.

The last test is a property test of the safety limit on CPython (the role module is portable):
random lives of the node, commands, polling, deep sleeps, watchdog resets and power cuts included.
"""

from __future__ import annotations

import json
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import ticks
from firmware.roles import soil as soil_module
from protocol.payload import decode_uplink
from sim.bus import SimI2C, SimPin
from sim.clock import VirtualClock
from sim.mpy import compile_file
from sim.seesaw import SeesawSoilModel
from sim.valve import FlowMeterModel, LatchingValveModel
from sim.vm import DEEPSLEEP_RESET, PWRON_RESET, WDT_RESET, BoardHardware, VirtualBoard
from sim.vm.board import REPO

VM = pytest.mark.vm

VALVE_OPEN, VALVE_CLOSE, FLOW, BATTERY_ADC, PROBE_POWER = 25, 26, 27, 35, 32
SETTINGS = {"pins": {"valve_open": VALVE_OPEN, "valve_close": VALVE_CLOSE}, "max_open_s": 600}
CLOSED = '{"state": "closed"}'
MODULES = [
    "drivers/__init__.py", "drivers/ticks.py", "drivers/seesaw.py", "drivers/valve.py",
    "firmware/__init__.py", "firmware/roles/__init__.py", "firmware/roles/soil.py",
    "protocol/__init__.py",
] + sorted(p.relative_to(REPO).as_posix() for p in (REPO / "protocol" / "payload").glob("*.py"))

PRELUDE = """
import json, machine, time
from binascii import hexlify
from firmware.roles.soil import SoilRole

class HW:
    def __init__(self):
        self.machine = machine
        self.i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), freq=100000)
        self._adc = machine.ADC(machine.Pin(35))

    def battery_mv(self):
        return self._adc.read_uv() * 2 // 1000

role = SoilRole(HW(), json.loads(SETTINGS))
cause = machine.reset_cause()
role.boot(cause)
print("BOOT", cause, role.valve_state)

def water_until_closed():
    while True:
        ms = role.poll()
        if ms is None:
            return
        time.sleep_ms(ms)

def send(readings):
    from protocol.payload import encode_uplink
    fport, data = encode_uplink(role.name, readings)
    print("UPLINK", fport, hexlify(data).decode(), "faults=" + ",".join(role.faults), role.alarm())
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("soil-mpy")
    for rel in MODULES:
        done = compile_file(REPO / rel, out / Path(rel).with_suffix(".mpy"), rel)
        assert done.ok, done.error
    return out


class RecordingSeesaw(SeesawSoilModel):
    """The seesaw model, noting the virtual instant of every transfer."""

    def __init__(self, clock: VirtualClock, **kw) -> None:
        super().__init__(clock, **kw)
        self.accesses: list[int] = []

    def i2c_write(self, data: bytes, stop: bool = True) -> None:
        self.accesses.append(self.clock.now_us())
        super().i2c_write(data, stop)


class StuckHighPin(SimPin):
    """An H-bridge input shorted to the supply."""

    def __init__(self, name: int) -> None:
        super().__init__(name, SimPin.OUT, 1)

    def value(self, v=None):
        return 1 if v is None else None


class Node:
    """A virtual soil node: board, seesaw model, valve model (and optional flow meter)."""

    def __init__(self, make_board, compiled: Path, body: str, *, state: str | None = CLOSED,
                 settings: dict | None = None, probe: bool = True, flow: bool = False,
                 pins: dict | None = None, power_pin: int | None = None) -> None:
        self.clock = VirtualClock()
        self.hw = BoardHardware(pins=pins, adc={BATTERY_ADC: lambda: 1_500_000})
        self.probe = RecordingSeesaw(
            self.clock, moisture=42.0, temperature_c=12.5, noise_counts=0,
            power=self.hw.pin(power_pin) if power_pin is not None else None)
        if probe:
            self.hw.i2c_bus(0).attach(0x36, self.probe)
        self.valve = LatchingValveModel(self.clock, self.hw.pin(VALVE_OPEN), self.hw.pin(VALVE_CLOSE))
        self.flow = None
        if flow:
            self.flow = FlowMeterModel(self.clock, self.hw.pin(FLOW), self.valve,
                                       litres_per_pulse=0.1, flow_lpm=6.0)
        files = {"soil_valve.json": state} if state is not None else {}
        self.settings = settings or SETTINGS
        self.board: VirtualBoard = make_board(
            self.clock, self.main(body), files=files, hardware=self.hw,
            mounts=[(compiled / pkg, f"/_repo/{pkg}") for pkg in ("drivers", "firmware", "protocol")],
            sys_path=["/_repo"], heap_bytes=256 * 1024,
        )
        self.flash = self.board.flash_dir
        assert self.flash is not None
        # What the flash held at the instant each opening pulse began.
        self.file_at_open: list[str] = []
        self.hw.pin(VALVE_OPEN).watch(
            lambda level: level and self.file_at_open.append(self.state_file()))
        self.board.start()

    def main(self, body: str) -> str:
        return f"SETTINGS = {json.dumps(self.settings)!r}\n" + PRELUDE + body

    def rewrite_main(self, body: str) -> None:
        (self.flash / "main.py").write_text(self.main(body))

    def state_file(self) -> str:
        path = self.flash / "soil_valve.json"
        return path.read_text() if path.exists() else ""

    def lines(self, tag: str) -> list[list[str]]:
        return [line.split()[1:] for line in self.board.console if line.startswith(tag + " ")]

    def run(self, seconds: float) -> None:
        self.clock.run_for(seconds)
        assert self.board.crashed is None, self.board.crashed

    def uplinks(self) -> list[tuple[dict, str, str]]:
        out = []
        for fport, hexdata, faults, alarm in self.lines("UPLINK"):
            role, readings = decode_uplink(int(fport), bytes.fromhex(hexdata))
            assert role == "soil"
            out.append((readings, faults[len("faults="):], alarm))
        return out


def pulses(valve: LatchingValveModel) -> list[tuple[str, int, bool]]:
    return [(p.direction, p.start_us, p.moved) for p in valve.pulses]


# -- the hard maximum open time ----------------------------------------------------------------------


@VM
def test_valve_opens_for_n_seconds_and_poll_closes_it_at_the_deadline(make_board, compiled):
    node = Node(make_board, compiled, """
print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": 30}))
water_until_closed()
print("DONE", role.valve_state)
""")
    node.run(60)

    assert node.lines("CMD") == [["done"]] and node.lines("DONE") == [["closed"]]
    (d_open, t_open, moved_open), (d_close, t_close, moved_close) = pulses(node.valve)
    assert (d_open, moved_open, d_close, moved_close) == ("open", True, "close", True)
    assert t_close - t_open == 30_000_000
    assert node.valve.state == "closed" and node.valve.both_high == 0
    # The open state and its deadline were on flash before the opening pulse began.
    deadline = node.clock.epoch0 + t_open // 1_000_000 + 30
    assert [json.loads(s) for s in node.file_at_open] == [{"state": "open", "deadline": deadline}]
    assert json.loads(node.state_file()) == {"state": "closed"}


@VM
@pytest.mark.parametrize("restart_s", [120, 30])
def test_power_cut_while_open_closes_the_valve_first_thing_at_the_next_boot(make_board, compiled, restart_s):
    node = Node(make_board, compiled, """
print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": 60}))
time.sleep(3600)
""")
    node.run(10)
    assert node.valve.state == "open"
    node.board.power_cut()
    node.rewrite_main('send(role.read())\n')
    node.run(restart_s - 10)
    assert node.valve.state == "open"  # latched: nothing closes it while the node is off
    restart_us = node.clock.now_us()
    accesses_before = len(node.probe.accesses)
    node.board.start()
    node.run(5)

    assert node.board.reset_causes == [PWRON_RESET, PWRON_RESET]
    assert node.lines("BOOT")[-1] == [str(PWRON_RESET), "closed"]
    close = node.valve.pulses[-1]
    assert (close.direction, close.moved) == ("close", True)
    assert close.start_us == restart_us  # the first thing the board did after power came back
    assert all(t >= close.start_us + close.length_us for t in node.probe.accesses[accesses_before:])
    assert node.valve.state == "closed"
    assert json.loads(node.state_file()) == {"state": "closed"}
    assert node.uplinks()[-1][0]["valve"] == "closed"


@VM
def test_watchdog_reset_mid_watering_keeps_the_original_deadline(make_board, compiled):
    node = Node(make_board, compiled, """
if cause == machine.PWRON_RESET:
    print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": 60}))
    machine.WDT(timeout=5000)
    time.sleep(3600)  # stuck without feeding the watchdog
else:
    water_until_closed()
    print("DONE", role.valve_state)
""")
    node.run(120)

    assert node.board.reset_causes == [PWRON_RESET, WDT_RESET]
    assert node.lines("BOOT") == [[str(PWRON_RESET), "closed"], [str(WDT_RESET), "open"]]
    assert [(d, moved) for d, _, moved in pulses(node.valve)] == [("open", True), ("close", True)]
    t_open, t_close = node.valve.pulses[0].start_us, node.valve.pulses[1].start_us
    assert 59_000_000 <= t_close - t_open <= 60_000_000  # never later than asked (whole-second epoch)
    assert node.lines("DONE") == [["closed"]]


@VM
@pytest.mark.parametrize("sleep", ["role.poll()", "120000"])
def test_deep_sleep_wake_after_the_deadline_closes_the_valve(make_board, compiled, sleep):
    node = Node(make_board, compiled, f"""
if cause == machine.PWRON_RESET:
    print("CMD", role.command({{"cmd": "valve_open", "seq": 1, "seconds": 30}}))
    machine.deepsleep({sleep})
else:
    send(role.read())
""")
    node.run(200)

    assert node.board.reset_causes == [PWRON_RESET, DEEPSLEEP_RESET]
    wake_us = node.board.history[1].started_us
    assert node.lines("BOOT")[1] == [str(DEEPSLEEP_RESET), "closed"]
    (_, t_open, _), (d_close, t_close, moved) = pulses(node.valve)
    assert (d_close, moved) == ("close", True)
    assert t_close == wake_us
    if sleep == "role.poll()":  # an app that bounds its sleep by poll() closes on time
        assert t_close - t_open == 30_000_000
    assert node.uplinks()[0][0]["valve"] == "closed"


@VM
def test_the_whole_node_deep_sleeps_while_watering_and_wakes_to_close_by_the_deadline(
        micropython_vm: object) -> None:
    # The real firmware (firmware/app.py) on the bench's Heltec board, one uplink per 15 min: a
    # 2-minute watering commanded in RX1 of the second reading.
    from bench.node_run import run_node

    run = run_node("soil", cycles=3, commands={2: {"cmd": "valve_open", "seq": 7, "seconds": 120}})
    ((opened, closed),) = run.valve_open_us
    assert 119_000_000 <= closed - opened <= 120_000_000  # never past it (deadline in whole s)
    opener = next(b for b in run.boots if b.started_us <= opened <= b.ended_us)
    assert opener.outcome == "deepsleep" and opener.ended_us - opened < 30_000_000
    closer = next(b for b in run.boots if b.started_us <= closed <= b.ended_us)
    assert closer.cause == DEEPSLEEP_RESET and 0 < closed - closer.started_us <= 1_500_000
    # the wake at the deadline reports the closed valve, then the node sleeps to its next cycle
    after = [u for u in run.uplinks if u.fport == 12 and u.at_us > closed]
    assert after and after[0].at_us - closed < 10_000_000
    assert closer.outcome == "deepsleep" and len(run.valve_pulses_us) == 3  # boot, open, close


@VM
def test_the_valve_closes_at_its_deadline_even_when_the_radio_dies_mid_watering(
        micropython_vm: object) -> None:
    # The real firmware: the radio chip stops answering 10 s after the command's uplink, so every
    # later boot fails with a hardware fault; the role still closes the valve on time.
    from bench.node_run import run_node

    run = run_node("soil", cycles=3, commands={2: {"cmd": "valve_open", "seq": 8, "seconds": 120}},
                   radio_dies_after=2)
    ((opened, closed),) = run.valve_open_us
    assert 118_000_000 <= closed - opened <= 120_000_000, (opened, closed)
    assert "FAULT hardware" in run.console  # every boot after the chip died


@VM
def test_out_of_range_or_malformed_seconds_are_refused_and_nothing_moves(make_board, compiled):
    node = Node(make_board, compiled, """
for seconds in (601, 0, -5, 65535, "60", True, 1.5, None):
    print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": seconds}))
print("CMD", role.command({"cmd": "valve_open", "seq": 2}))
print("CMD", role.command({"cmd": "dim", "seq": 3, "level": 50}))
print("CMD", role.command("garbage"))
print("POLL", role.poll())
""")
    writes: list[int] = []
    for pin in (VALVE_OPEN, VALVE_CLOSE):
        node.hw.pin(pin).watch(lambda level: writes.append(level))
    node.run(10)

    assert node.lines("CMD") == [["out_of_range"]] * 9 + [["not_supported"]] * 2
    assert node.lines("POLL") == [["None"]]
    assert node.valve.pulses == [] and writes == []
    assert node.state_file() == CLOSED and node.file_at_open == []


@VM
def test_first_boot_without_a_state_file_closes_the_valve_once(make_board, compiled):
    node = Node(make_board, compiled, 'print("POLL", role.poll())\n', state=None)
    node.valve._state = "open"  # left open by whoever installed it
    node.run(5)

    assert node.lines("BOOT") == [[str(PWRON_RESET), "closed"]]
    assert [(d, moved) for d, _, moved in pulses(node.valve)] == [("close", True)]
    assert json.loads(node.state_file()) == {"state": "closed"}


# -- readings -----------------------------------------------------------------------------------------


@VM
def test_readings_with_flow_encode_on_the_node_and_decode_on_the_gateway(make_board, compiled):
    settings = dict(SETTINGS, pins=dict(SETTINGS["pins"], flow=FLOW), litres_per_pulse=0.1)
    node = Node(make_board, compiled, """
send(role.read())
print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": 60}))
time.sleep(20)
send(role.read())
water_until_closed()
send(role.read())
""", settings=settings, flow=True)
    node.run(120)

    assert node.flow is not None
    (first, _, _), (during, _, _), (after, faults, alarm) = node.uplinks()
    for readings in (first, during, after):
        assert readings["soil_moisture"] == pytest.approx(42.0)  # 200 + 1800 * 42 % = 956 counts
        assert readings["soil_temperature"] == pytest.approx(12.5)
        assert readings["battery"] == 3000
    assert first["valve"] == "closed" and first["water_volume"] == 0
    assert during["valve"] == "open"
    assert after["valve"] == "closed" and (faults, alarm) == ("", "False")
    total = during["water_volume"] + after["water_volume"]
    assert total == pytest.approx(node.flow.litres)
    assert total == pytest.approx(6.0, abs=0.2)  # 6 L/min for one minute


@VM
def test_a_missing_probe_is_a_soil_fault_and_the_rest_still_reports(make_board, compiled):
    node = Node(make_board, compiled, "send(role.read())\n", probe=False)
    node.run(5)

    ((readings, faults, alarm),) = node.uplinks()
    assert faults == "soil" and alarm == "False"
    assert "soil_moisture" not in readings and "soil_temperature" not in readings
    assert readings["valve"] == "closed" and readings["battery"] == 3000


@VM
def test_a_bridge_input_stuck_high_is_a_valve_fault_alarm_and_opening_is_refused(make_board, compiled):
    stuck = StuckHighPin(VALVE_CLOSE)
    node = Node(make_board, compiled, """
send(role.read())
print("CMD", role.command({"cmd": "valve_open", "seq": 1, "seconds": 60}))
print("POLL", role.poll())
""", state=None, pins={VALVE_CLOSE: stuck})
    node.run(5)

    ((readings, faults, alarm),) = node.uplinks()
    assert readings["valve"] == "fault" and faults == "valve" and alarm == "True"
    assert node.lines("CMD") == [["failed"]]
    assert node.lines("POLL") == [["60000"]]  # keeps trying to close once a minute
    assert node.file_at_open == [] and node.valve.moves == 0
    assert node.state_file() == ""  # never claimed closed


@VM
def test_a_switched_probe_is_powered_only_while_it_is_read(make_board, compiled):
    settings = dict(SETTINGS, pins=dict(SETTINGS["pins"], sensor_power=PROBE_POWER))
    node = Node(make_board, compiled, """
send(role.read())
time.sleep(900)
send(role.read())
""", settings=settings, power_pin=PROBE_POWER)
    edges: list[tuple[int, int]] = []
    node.hw.pin(PROBE_POWER).watch(lambda level: edges.append((node.clock.now_us(), level)))
    node.run(1000)

    readings = [r for r, _, _ in node.uplinks()]
    assert len(readings) == 2
    for r in readings:
        assert r["soil_moisture"] == pytest.approx(42.0) and r["soil_temperature"] == pytest.approx(12.5)
    assert [level for _, level in edges] == [1, 0, 1, 0]
    assert node.probe.power_ups == 2 and node.hw.pin(PROBE_POWER).value() == 0
    on_times = [edges[i + 1][0] - edges[i][0] for i in (0, 2)]
    # firmware start-up (30 ms in the model, polled every 10 ms) + HW_ID + touch + temperature
    assert all(t <= 50_000 for t in on_times), on_times


# -- the safety limit as a property, on CPython in virtual time ---------------------------------------
# The same role module runs here under CPython: drivers.ticks is bound to a clock participant and the
# role's epoch clock (time.time/time_ns) is the virtual wall clock, so a random life of the node
# (commands, polling, deep sleeps, watchdog resets, power cuts) takes no real time.

MAX_OPEN_S = 120

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(-5, MAX_OPEN_S + 30)),
        st.tuples(st.just("close"), st.just(0)),
        st.tuples(st.just("run"), st.integers(1, 300_000)),  # awake, polling, for ms
        st.tuples(st.just("deep_sleep"), st.integers(1, 300_000)),  # bounded by poll()
        st.tuples(st.just("watchdog"), st.just(0)),
        st.tuples(st.just("power_cut"), st.integers(1, 300_000)),  # off for ms, then power on
    ),
    max_size=14,
)


def _sim_machine(pins: dict[int, SimPin]) -> types.SimpleNamespace:
    def pin(pid, mode=-1, pull=-1, value=None):
        p = pins.setdefault(pid, SimPin(pid))
        p.init(mode, pull, value)
        return p

    pin.OUT, pin.IN, pin.PULL_UP, pin.IRQ_RISING = SimPin.OUT, SimPin.IN, SimPin.PULL_UP, SimPin.IRQ_RISING
    return types.SimpleNamespace(Pin=pin, PWRON_RESET=1, HARD_RESET=2, WDT_RESET=3,
                                 DEEPSLEEP_RESET=4, SOFT_RESET=5)


def on_cpython(clock: VirtualClock, fn):
    outcome: dict[str, object] = {}

    def body() -> None:
        ticks.bind(part)
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test below
            outcome["error"] = exc
        finally:
            ticks.bind(None)

    part = clock.spawn("node", body)
    clock.run(until_us=clock.now_us() + 30 * 24 * 3600 * 1_000_000)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    assert "value" in outcome
    return outcome["value"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ACTIONS)
def test_the_valve_is_never_open_past_its_deadline_while_the_node_has_power(monkeypatch, actions):
    clock = VirtualClock()
    pins = {VALVE_OPEN: SimPin(VALVE_OPEN, SimPin.OUT), VALVE_CLOSE: SimPin(VALVE_CLOSE, SimPin.OUT)}
    valve = LatchingValveModel(clock, pins[VALVE_OPEN], pins[VALVE_CLOSE])
    hw = types.SimpleNamespace(machine=_sim_machine(pins), i2c=SimI2C(), battery_mv=lambda: 3000)
    virtual_time = types.SimpleNamespace(
        time=lambda: clock.epoch0 + clock.now_us() // 1_000_000,
        time_ns=lambda: clock.epoch0 * 1_000_000_000 + clock.now_us() * 1000,
    )
    monkeypatch.setattr(soil_module, "time", virtual_time)
    settings_ = dict(SETTINGS, max_open_s=MAX_OPEN_S, state_file=tempfile.mkdtemp() + "/soil_valve.json")
    opened: list[tuple[int, int]] = []  # (virtual us of an accepted valve_open, seconds)
    power_on: list[int] = []  # instants the node booted after a power cut
    refused = []

    def life():
        role = soil_module.SoilRole(hw, settings_)
        role.boot("power_on")

        def reboot(cause):
            nonlocal role
            role = soil_module.SoilRole(hw, settings_)
            role.boot(cause)

        for what, arg in actions + [("run", (MAX_OPEN_S + 1) * 1000)]:
            if what == "open":
                now = clock.now_us()
                result = role.command({"cmd": "valve_open", "seq": 1, "seconds": arg})
                if 1 <= arg <= MAX_OPEN_S:
                    assert result == "done"
                    opened.append((now, arg))
                else:
                    refused.append((arg, result))
            elif what == "close":
                assert role.command({"cmd": "valve_close", "seq": 2}) == "done"
            elif what == "run":
                end = ticks.ticks_add(ticks.ticks_ms(), arg)
                while (left := ticks.ticks_diff(end, ticks.ticks_ms())) > 0:
                    due = role.poll()
                    ticks.sleep_ms(left if due is None else min(left, due))
                role.poll()
            elif what == "deep_sleep":
                due = role.poll()
                ticks.sleep_ms(arg if due is None else min(arg, due))
                reboot("deep_sleep")
            elif what == "watchdog":
                reboot("watchdog")
            else:  # power cut: nothing runs, nothing can close the latched valve until power returns
                ticks.sleep_ms(arg)
                power_on.append(clock.now_us())
                reboot("power_on")
        return role

    role = on_cpython(clock, life)

    assert all(result == "out_of_range" for _, result in refused)
    assert valve.both_high == 0
    assert valve.state == "closed" and role.valve_state == "closed"
    # Pair each opening move with the closing move that ended it.
    moves = [(p.direction, p.start_us) for p in valve.pulses if p.moved]
    for (d_open, t_open), (d_close, t_close) in zip(moves[::2], moves[1::2]):
        assert (d_open, d_close) == ("open", "close")
        last_t, last_s = [o for o in opened if o[0] <= t_close][-1]  # the deadline then in force
        deadline = last_t + last_s * 1_000_000
        # Closed by its deadline, or at the first power-on after it if the node was off then.
        assert t_close <= deadline or t_close in power_on, (t_open, t_close, deadline, actions)
        if t_close > deadline:
            assert not any(deadline <= t < t_close for t in power_on), "a later power-on left it open"
