"""The latching-valve and flow-meter drivers against the H-bridge/solenoid and flow-meter models."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import ticks
from drivers.valve import FlowMeter, LatchingValve, ValveError
from sim.bus import SimPin
from sim.clock import VirtualClock
from sim.valve import FlowMeterModel, LatchingValveModel
from tests.fixtures.device import on_device


class StuckHighPin(SimPin):
    """An output shorted to the supply: reads 1 whatever is written."""

    def __init__(self, name: str) -> None:
        super().__init__(name, SimPin.OUT, 1)

    def value(self, v=None):
        return 1 if v is None else None


class Rig:
    def __init__(self, pulse_ms: int = 50, min_pulse_us: int = 20_000, enable: bool = False,
                 wire_enable: bool | None = None, close_pin: SimPin | None = None) -> None:
        self.clock = VirtualClock()
        self.a = SimPin("in1", SimPin.OUT)
        self.b = close_pin if close_pin is not None else SimPin("in2", SimPin.OUT)
        self.en = SimPin("nsleep", SimPin.OUT) if enable or wire_enable else None
        self.model = LatchingValveModel(
            self.clock, self.a, self.b, enable=self.en if (wire_enable or enable) else None,
            min_pulse_us=min_pulse_us,
        )
        self.valve = LatchingValve(self.a, self.b, pulse_ms, enable=self.en if enable else None)

    def run(self, fn, *args):
        return on_device(self.clock, fn, *args)


def test_open_and_close_pulses_move_the_valve_with_the_right_polarity():
    rig = Rig()
    assert rig.model.state == "closed"
    rig.run(rig.valve.open)
    assert rig.model.state == "open"
    rig.run(rig.valve.close)
    assert rig.model.state == "closed"
    assert [(p.direction, p.length_us, p.moved) for p in rig.model.pulses] == [
        ("open", 50_000, True), ("close", 50_000, True)]
    assert rig.model.both_high == 0 and not rig.model.fault
    assert rig.valve.pulses == 2
    assert rig.a.value() == 0 and rig.b.value() == 0  # coasting: no coil current between pulses


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 200), st.integers(1_000, 150_000))
def test_only_a_long_enough_pulse_moves_the_plunger(pulse_ms, min_pulse_us):
    rig = Rig(pulse_ms=pulse_ms, min_pulse_us=min_pulse_us)
    rig.run(rig.valve.open)
    long_enough = pulse_ms * 1000 >= min_pulse_us
    assert rig.model.state == ("open" if long_enough else "closed")
    assert rig.model.pulses[-1].length_us == pulse_ms * 1000


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["open", "close"]), max_size=12))
def test_the_valve_ends_where_the_last_command_left_it_and_never_sees_both_inputs_high(cmds):
    rig = Rig()

    def run_all():
        for c in cmds:
            getattr(rig.valve, c)()
            ticks.sleep_ms(1000)

    rig.run(run_all)
    expected = "closed"
    changes = 0
    for c in cmds:
        new = "open" if c == "open" else "closed"
        changes += new != expected
        expected = new
    assert rig.model.state == expected
    assert rig.model.moves == changes
    assert len(rig.model.pulses) == len(cmds)
    assert rig.model.both_high == 0


def test_both_inputs_high_is_a_fault_of_the_model_and_moves_nothing():
    clock = VirtualClock()
    a, b = SimPin("in1", SimPin.OUT), SimPin("in2", SimPin.OUT)
    model = LatchingValveModel(clock, a, b)
    a.value(1)
    b.value(1)
    clock.run(until_us=100_000)
    a.value(0)
    b.value(0)
    assert model.fault and model.both_high == 1
    assert model.state == "closed"
    assert all(not p.moved for p in model.pulses)
    model.clear_fault()
    assert not model.fault


def test_a_stuck_high_close_input_refuses_to_open_and_drives_nothing():
    stuck = StuckHighPin("in2")
    rig = Rig(close_pin=stuck)
    with pytest.raises(ValveError, match="reads high"):
        rig.run(rig.valve.open)
    assert rig.a.value() == 0
    assert rig.model.state == "closed"
    assert not any(p.direction == "open" for p in rig.model.pulses)
    assert rig.valve.pulses == 0


def test_an_input_shorted_to_the_other_aborts_the_pulse_and_leaves_the_coil_unpowered():
    clock = VirtualClock()
    a, b = SimPin("in1", SimPin.OUT), SimPin("in2", SimPin.OUT)
    a.watch(lambda level: b._set(level))  # a solder bridge between IN1 and IN2
    model = LatchingValveModel(clock, a, b)
    valve = LatchingValve(a, b)
    with pytest.raises(ValveError, match="both H-bridge inputs read high"):
        on_device(clock, valve.open)
    assert a.value() == 0 and b.value() == 0
    assert model.state == "closed" and model.moves == 0
    assert model.fault  # the model saw the brake state, for an instant of zero length


def test_the_bridge_enable_pin_is_high_only_around_the_pulse():
    rig = Rig(enable=True)
    levels: list[tuple[int, int]] = []
    rig.en.watch(lambda lv: levels.append((rig.clock.now_us(), lv)))
    rig.run(rig.valve.open)
    assert rig.model.state == "open"
    assert levels == [(0, 1), (51_000, 0)]  # 1 ms wake-up, 50 ms pulse


def test_a_sleeping_bridge_moves_nothing():
    rig = Rig(wire_enable=True)  # nSLEEP wired on the model, but the driver never raises it
    rig.run(rig.valve.open)
    assert rig.model.state == "closed" and rig.model.moves == 0


def test_pulse_length_out_of_range_is_refused():
    a, b = SimPin("a", SimPin.OUT), SimPin("b", SimPin.OUT)
    with pytest.raises(ValueError, match="pulse_ms"):
        LatchingValve(a, b, pulse_ms=0)


def test_coil_energy_of_a_pulse_follows_ohms_law():
    rig = Rig()
    rig.run(rig.valve.open)
    assert rig.model.energy_j == pytest.approx(9.0**2 / 4.5 * 0.05)  # 0.9 J for 50 ms at 2 A


# -- flow meter ------------------------------------------------------------------------------------


def test_flow_pulses_are_counted_while_the_valve_is_open_only():
    rig = Rig()
    pin = SimPin("flow", SimPin.IN)
    flow = FlowMeterModel(rig.clock, pin, rig.model, litres_per_pulse=0.1, flow_lpm=6.0)
    meter = FlowMeter(pin, 0.1)

    def water():
        ticks.sleep_ms(10_000)
        closed_before = meter.take()
        rig.valve.open()
        ticks.sleep_ms(60_000)
        rig.valve.close()
        during = meter.take()
        ticks.sleep_ms(60_000)
        return closed_before, during, meter.take()

    closed_before, during, after = rig.run(water)
    assert closed_before == 0 and after == 0
    assert during == flow.pulses
    assert meter.litres(during) == pytest.approx(6.0, abs=0.2)  # 6 L/min for one minute


def test_a_leaking_valve_shows_flow_while_closed():
    rig = Rig()
    pin = SimPin("flow", SimPin.IN)
    FlowMeterModel(rig.clock, pin, rig.model, litres_per_pulse=0.5, leak_lpm=1.0)
    meter = FlowMeter(pin, 0.5)
    rig.clock.run(until_us=60_000_000)
    assert meter.take() == 2


def test_flow_meter_refuses_a_nonsense_calibration():
    with pytest.raises(ValueError, match="litres_per_pulse"):
        FlowMeter(SimPin("f"), 0)
