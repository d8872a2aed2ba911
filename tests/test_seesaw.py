"""The seesaw soil-sensor driver against the seesaw register model on a simulated I2C bus.

The driver runs in a ``VirtualClock`` participant thread bound to ``drivers.ticks``, so its
pauses between register write and read advance virtual time only.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.seesaw import Seesaw, SensorError, centi_celsius_16_16, moisture_permille
from sim.bus import SimI2C
from sim.clock import VirtualClock
from sim.seesaw import SeesawSoilModel, fixed_16_16
from tests.fixtures.device import on_device


class Rig:
    def __init__(self, **model_options) -> None:
        self.clock = VirtualClock()
        self.bus = SimI2C()
        self.model = SeesawSoilModel(self.clock, **model_options)
        self.bus.attach(self.model.address, self.model)
        self.ss = Seesaw(self.bus)

    def run(self, fn, *args):
        return on_device(self.clock, fn, *args)


# -- pure conversions --------------------------------------------------------------------------------


@given(st.integers(-(2**31), 2**31 - 1))
def test_16_16_conversion_rounds_to_the_nearest_hundredth(raw):
    b = (raw & 0xFFFF_FFFF).to_bytes(4, "big")
    exact = Fraction(raw, 65536) * 100
    got = centi_celsius_16_16(*b)
    assert abs(Fraction(got) - exact) <= Fraction(1, 2)


def test_16_16_conversion_known_values():
    assert centi_celsius_16_16(*fixed_16_16(21.53)) == 2153
    assert centi_celsius_16_16(*fixed_16_16(-12.25)) == -1225
    assert centi_celsius_16_16(0, 0, 0, 0) == 0
    assert centi_celsius_16_16(0xFF, 0xFF, 0x80, 0x00) == -50  # -0.5 degC


@given(st.integers(0, 5000), st.integers(0, 3000), st.integers(1, 3000))
def test_moisture_is_monotonic_and_clamped_between_the_calibration_points(raw, dry, span):
    wet = dry + span
    p = moisture_permille(raw, dry, wet)
    assert 0 <= p <= 1000
    assert moisture_permille(raw + 1, dry, wet) >= p
    if raw <= dry:
        assert p == 0
    elif raw >= wet:
        assert p == 1000
    else:
        assert abs(Fraction(p) - Fraction((raw - dry) * 1000, span)) <= Fraction(1, 2)


def test_calibration_with_wet_not_above_dry_is_refused():
    with pytest.raises(ValueError, match="wet point"):
        moisture_permille(500, 2000, 200)


# -- against the model -------------------------------------------------------------------------------


def test_begin_checks_the_hardware_id_without_reading_early():
    rig = Rig()
    assert rig.run(rig.ss.begin) == 0x55
    assert rig.ss.hw_id == 0x55
    assert rig.run(rig.ss.version) >> 16 == 4026
    assert rig.model.early_reads == 0


def test_a_device_with_another_hardware_id_is_not_taken_for_a_seesaw():
    rig = Rig()
    rig.model.hw_id = 0x42
    with pytest.raises(SensorError, match="HW_ID 0x42"):
        rig.run(rig.ss.begin)


def test_a_missing_sensor_raises_sensor_error_naming_the_address():
    rig = Rig()
    rig.bus.detach(0x36)
    with pytest.raises(SensorError, match="no seesaw answering at 0x36"):
        rig.run(rig.ss.touch)


@settings(max_examples=30, deadline=None)
@given(st.floats(0, 100), st.integers(1, 1000))
def test_touch_counts_follow_the_soil_moisture(moisture, seed):
    rig = Rig(moisture=moisture, seed=seed)
    raw = rig.run(rig.ss.touch)
    expected = 200 + 1800 * moisture / 100
    assert abs(raw - expected) <= rig.model.noise_counts + 1
    assert raw == rig.model.last_touch
    permille = moisture_permille(raw, 200, 2000)
    assert abs(permille / 10 - moisture) <= (rig.model.noise_counts + 1) * 100 / 1800 + 0.05


def test_a_touch_read_waits_the_preparation_time_in_virtual_time():
    rig = Rig()

    def timed():
        t0 = rig.clock.now_us()
        rig.ss.touch()
        return rig.clock.now_us() - t0

    took = rig.run(timed)
    assert took == 5_000  # one register write, the 5 ms pause, one read
    assert rig.model.early_reads == 0 and rig.model.touch_reads == 1


def test_bad_touch_reads_are_retried():
    rig = Rig(moisture=50.0, noise_counts=0)
    rig.model.bad_touch_reads = 2
    assert rig.run(rig.ss.touch) == 1100
    assert rig.model.touch_reads == 3


def test_a_chip_slower_than_the_pause_gives_junk_and_then_a_sensor_error():
    rig = Rig(touch_us=6_000)
    with pytest.raises(SensorError, match="no valid touch reading in 4 tries"):
        rig.run(rig.ss.touch)
    assert rig.model.early_reads == 4


@settings(max_examples=30, deadline=None)
@given(st.floats(-40, 85))
def test_temperature_reads_the_soil_temperature_to_the_hundredth(temp):
    rig = Rig(temperature_c=temp)
    centi = rig.run(rig.ss.temperature_centi)
    assert isinstance(centi, int)
    assert abs(centi / 100 - temp) <= 0.005 + 1 / 65536 + 1e-9


def test_an_implausible_temperature_is_a_sensor_error():
    rig = Rig(temperature_c=300.0)
    with pytest.raises(SensorError, match="implausible temperature"):
        rig.run(rig.ss.temperature_centi)


def test_soft_reset_waits_until_the_chip_answers_again():
    rig = Rig(reset_us=25_000)

    def reset_then_read():
        t0 = rig.clock.now_us()
        rig.ss.begin(reset=True)
        return rig.clock.now_us() - t0

    took = rig.run(reset_then_read)
    assert rig.model.resets == 1
    assert 25_000 <= took <= 45_000  # polled every 10 ms until the chip was back, then HW_ID


def test_a_chip_that_never_comes_back_from_reset_raises():
    rig = Rig(reset_us=10_000_000)
    with pytest.raises(SensorError, match="did not answer 100 ms after a software reset"):
        rig.run(rig.ss.soft_reset)


def test_a_stuck_bus_raises_instead_of_hanging():
    rig = Rig()
    rig.model.stuck = True
    with pytest.raises(SensorError):
        rig.run(rig.ss.temperature_centi)


def test_a_switched_sensor_is_read_after_its_firmware_has_started():
    from sim.bus import SimPin

    clock = VirtualClock()
    bus = SimI2C()
    power = SimPin("sensor_power", SimPin.OUT)
    model = SeesawSoilModel(clock, moisture=50.0, noise_counts=0, power=power, boot_us=35_000)
    bus.attach(0x36, model)
    ss = Seesaw(bus)

    def unpowered():
        with pytest.raises(SensorError, match="no seesaw answering"):
            ss.read_hw_id()
        power.value(1)
        t0 = clock.now_us()
        ss.wait_ready()
        waited = clock.now_us() - t0
        ss.begin()
        raw = ss.touch()
        power.value(0)
        return waited, raw

    waited, raw = on_device(clock, unpowered)
    assert waited == 40_000  # polled every 10 ms: the first poll after the 35 ms boot succeeds
    assert raw == 1100 and model.power_ups == 1


def test_a_switched_sensor_that_never_starts_is_reported():
    from sim.bus import SimPin

    clock = VirtualClock()
    bus = SimI2C()
    power = SimPin("sensor_power", SimPin.OUT)  # never raised
    bus.attach(0x36, SeesawSoilModel(clock, power=power))
    with pytest.raises(SensorError, match="did not answer 600 ms after power-up"):
        on_device(clock, Seesaw(bus).wait_ready)
