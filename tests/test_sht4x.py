"""The SHT4x driver against the SHT4x chip model on a simulated I2C bus, in virtual time.

The driver runs in a ``VirtualClock`` participant thread that binds ``drivers.ticks`` to itself
(``ticks.bind``, per thread), so every ``ticks.sleep_ms`` of the driver advances virtual time only.
"""

from __future__ import annotations

import errno
import itertools
import math
import re
import time
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import sht4x, ticks
from drivers.sht4x import SensorError, SHT4x, centi_celsius, centi_rh, crc8
from sim.bus import SimI2C
from sim.clock import VirtualClock
from sim.environment import Environment, dew_point_c, relative_humidity
from sim.sht4x import SHT4xModel, ticks_from_celsius, ticks_from_rh
from tests.fixtures.device import on_device as run_on_device

# SHT40 typical accuracy (datasheet) plus one 0.01 step of rounding and the 16-bit quantisation.
T_TOLERANCE_C = 0.2 + 0.01 + 175 / 65535
RH_TOLERANCE = 1.8 + 0.01 + 125 / 65535


def on_device(clock: VirtualClock, fn, *args):
    """Node code run to its end; virtual time then runs on to a week later."""
    return run_on_device(clock, fn, *args, run_s=7 * 24 * 3600)


class Rig:
    """A virtual clock, an environment, an I2C bus and one SHT4x model attached to it."""

    def __init__(self, **model_options) -> None:
        self.clock = VirtualClock()
        self.env = Environment(seed=7)
        self.bus = SimI2C()
        self.model = SHT4xModel(self.clock, self.env, **model_options)
        self.bus.attach(self.model.address, self.model)

    def run(self, fn, *args):
        return on_device(self.clock, fn, *args)


def timed(clock: VirtualClock, fn, *args):
    """Call ``fn`` (inside a participant) and return (result, virtual microseconds it took)."""
    start = clock.now_us()
    result = fn(*args)
    return result, clock.now_us() - start


# -- measurements ----------------------------------------------------------------------------------


def test_measurements_over_a_day_match_the_environment_within_datasheet_accuracy():
    rig = Rig()
    sensor = SHT4x(rig.bus)

    def day():
        readings = []
        for _ in range(24):
            t, rh = sensor.measure()
            readings.append((t, rh, rig.model.last_truth))
            ticks.sleep_ms(3_600_000)
        return readings

    readings = rig.run(day)
    temps = [t for t, _, _ in readings]
    assert max(temps) - min(temps) > 500  # the daily cycle is visible: more than 5 degC swing
    for t, rh, (true_t, true_rh) in readings:
        assert isinstance(t, int) and isinstance(rh, int)
        assert abs(t / 100 - true_t) <= T_TOLERANCE_C
        assert abs(rh / 100 - true_rh) <= RH_TOLERANCE
        assert 0 <= rh <= 10000


@pytest.mark.parametrize(
    ("precision", "wait_ms"), [(sht4x.HIGH, 9), (sht4x.MEDIUM, 5), (sht4x.LOW, 2)]
)
def test_each_precision_waits_its_datasheet_time_in_virtual_time(precision, wait_ms):
    rig = Rig()
    sensor = SHT4x(rig.bus)
    wall = time.monotonic()
    (t, _), took_us = rig.run(timed, rig.clock, sensor.measure, precision)
    assert took_us == wait_ms * 1000  # one read after the datasheet maximum, no retry needed
    assert rig.model.nacks == 0
    assert abs(t / 100 - rig.model.last_truth[0]) <= T_TOLERANCE_C
    assert time.monotonic() - wall < 1.0  # virtual milliseconds, not real ones


def test_reading_before_the_conversion_ends_is_nacked_like_the_chip():
    rig = Rig()

    def early_then_on_time():
        rig.bus.writeto(0x44, b"\xfd")
        with pytest.raises(OSError) as early:
            rig.bus.readfrom(0x44, 6)
        ticks.sleep_us(8_300)
        return early.value.errno, rig.bus.readfrom(0x44, 6)

    code, data = rig.run(early_then_on_time)
    assert code == errno.ENODEV
    assert len(data) == 6 and crc8(data, 0, 2) == data[2] and crc8(data, 3, 5) == data[5]


def test_driver_retries_while_a_slow_chip_is_still_converting():
    rig = Rig(slow_us=3_000)  # 11.3 ms instead of the datasheet's 8.3 ms
    sensor = SHT4x(rig.bus)
    (t, _), took_us = rig.run(timed, rig.clock, sensor.measure)
    assert rig.model.nacks >= 1  # the first reads were refused
    assert took_us == 12_000  # 9 ms wait, then 1 ms retries until the data is there
    assert abs(t / 100 - rig.model.last_truth[0]) <= T_TOLERANCE_C


def test_driver_gives_up_after_a_bounded_number_of_retries():
    rig = Rig(slow_us=1_000_000)
    sensor = SHT4x(rig.bus)
    with pytest.raises(SensorError, match=r"^SHT4x at 0x44: no measurement after 18 ms"):
        rig.run(sensor.measure)
    assert rig.model.nacks == 10


def test_measure_float_is_the_integer_reading_in_units():
    rig = Rig(temp_accuracy_c=0.0, rh_accuracy=0.0)
    rig.env.weather_noise_c = 0.0
    rig.env.dew_point_noise_c = 0.0
    sensor = SHT4x(rig.bus)
    (t, rh), (tf, rhf) = rig.run(lambda: (sensor.measure(), sensor.measure_float()))
    assert isinstance(tf, float) and isinstance(rhf, float)
    assert abs(tf * 100 - t) <= 1 and abs(rhf * 100 - rh) <= 1


def test_measure_raw_returns_the_16_bit_ticks():
    rig = Rig(temp_accuracy_c=0.0, rh_accuracy=0.0)
    s_t, s_rh = rig.run(SHT4x(rig.bus).measure_raw)
    true_t, true_rh = rig.model.last_truth
    assert s_t == ticks_from_celsius(true_t)
    assert s_rh == ticks_from_rh(true_rh)


# -- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fail", "word"), [(True, "temperature"), ("humidity", "humidity")])
def test_crc_mismatch_names_the_word_and_both_checksums(fail, word):
    rig = Rig(fail_crc=fail)
    with pytest.raises(SensorError) as err:
        rig.run(SHT4x(rig.bus).measure)
    message = str(err.value)
    m = re.fullmatch(
        rf"SHT4x at 0x44: CRC mismatch on {word} word \(got 0x([0-9a-f]{{2}}), "
        r"expected 0x([0-9a-f]{2})\)",
        message,
    )
    assert m, message
    assert int(m.group(1), 16) == int(m.group(2), 16) ^ 0x01  # the model flips one bit


def test_missing_sensor_is_reported_with_a_wiring_hint():
    sensor = SHT4x(SimI2C(), address=0x45)
    with pytest.raises(SensorError) as err:
        on_device(VirtualClock(), sensor.measure)
    assert str(err.value) == "no SHT4x answering at 0x45 on I2C: check wiring and address"


def test_sensor_unplugged_after_working_is_reported_as_missing():
    rig = Rig()
    sensor = SHT4x(rig.bus)

    def measure_unplug_measure():
        first = sensor.measure()
        rig.bus.detach(0x44)
        try:
            sensor.measure()
        except SensorError as exc:
            return first, str(exc)
        return first, None

    first, message = rig.run(measure_unplug_measure)
    assert first is not None
    assert message == "no SHT4x answering at 0x44 on I2C: check wiring and address"


def test_stuck_sensor_that_nacks_everything_is_reported_not_waited_for():
    rig = Rig(stuck=True)
    with pytest.raises(SensorError, match="^no SHT4x answering at 0x44"):
        rig.run(SHT4x(rig.bus).measure)


def test_bad_precision_and_address_are_rejected_with_the_allowed_values():
    bus = SimI2C()
    with pytest.raises(ValueError, match="0x44, 0x45 or 0x46"):
        SHT4x(bus, address=0x40)
    with pytest.raises(ValueError, match="HIGH, MEDIUM or LOW"):
        SHT4x(bus).measure(precision=3)


# -- chip services ---------------------------------------------------------------------------------


def test_serial_number_is_read_and_crc_checked():
    rig = Rig(serial=0xDEADBEEF, address=0x46)
    assert rig.run(SHT4x(rig.bus, address=0x46).serial_number) == 0xDEADBEEF
    rig.model.fail_crc = True
    with pytest.raises(SensorError, match="CRC mismatch on serial number high word"):
        rig.run(SHT4x(rig.bus, address=0x46).serial_number)


def test_soft_reset_discards_an_unread_result_and_the_chip_answers_again():
    rig = Rig()
    sensor = SHT4x(rig.bus)

    def scenario():
        rig.bus.writeto(0x44, b"\xfd")
        ticks.sleep_ms(9)
        sensor.soft_reset()
        with pytest.raises(OSError):
            rig.bus.readfrom(0x44, 6)  # the measurement was thrown away by the reset
        return sensor.measure()

    t, _ = rig.run(scenario)
    assert abs(t / 100 - rig.model.last_truth[0]) <= T_TOLERANCE_C


def test_heater_reading_is_hot_and_dry_then_the_sensor_cools_back():
    rig = Rig()
    sensor = SHT4x(rig.bus)

    def scenario():
        hot, took_us = timed(rig.clock, sensor.heater, 200, 1000)
        hot_truth = rig.model.last_truth
        ticks.sleep_ms(15_000)
        after = sensor.measure()
        return hot, hot_truth, took_us, after, rig.model.last_truth

    hot, hot_truth, took_us, after, after_truth = rig.run(scenario)
    assert took_us == 1_100_000  # the heater's 1 s plus the datasheet margin
    assert hot[0] / 100 > hot_truth[0] + 10  # the element is far warmer than the air
    assert hot[1] / 100 < hot_truth[1] - 10  # and therefore reads much drier
    assert abs(after[0] / 100 - after_truth[0]) <= T_TOLERANCE_C  # cooled back after 15 s
    assert abs(after[1] / 100 - after_truth[1]) <= RH_TOLERANCE


def test_heater_keeps_to_the_datasheet_10_percent_duty_cycle():
    rig = Rig()
    sensor = SHT4x(rig.bus)

    def scenario():
        sensor.heater(20, 100)
        with pytest.raises(ValueError, match=r"wait \d+ ms more .*10% duty cycle"):
            sensor.heater(20, 100)
        ticks.sleep_ms(900)
        return sensor.heater(20, 100)

    assert rig.run(scenario) is not None


def test_heater_accepts_only_the_datasheet_power_and_duration_pairs():
    sensor = SHT4x(SimI2C())
    with pytest.raises(ValueError, match="200, 110 or 20 .* 1000 or 100"):
        sensor.heater(150, 1000)
    with pytest.raises(ValueError, match="got 200 mW for 500 ms"):
        sensor.heater(200, 500)


# -- the chip model on its own ---------------------------------------------------------------------


def test_model_answers_a_partial_read_and_refuses_a_second_read_of_the_same_result():
    rig = Rig()

    def scenario():
        rig.bus.writeto(0x44, b"\xe0")
        ticks.sleep_us(1_700)
        first = rig.bus.readfrom(0x44, 3)  # the master may stop after the temperature word
        with pytest.raises(OSError):
            rig.bus.readfrom(0x44, 6)
        return first

    first = rig.run(scenario)
    assert len(first) == 3 and crc8(first, 0, 2) == first[2]


def test_model_nacks_unknown_and_multi_byte_commands_but_acks_an_address_probe():
    bus = Rig().bus
    bus.writeto(0x44, b"")  # what a bus scan does
    for bad in (b"\x00", b"\xfd\x00"):
        with pytest.raises(OSError):
            bus.writeto(0x44, bad)


def test_models_of_the_same_serial_and_seed_read_the_same():
    def five_readings():
        rig = Rig(seed=3)
        return rig.run(lambda: [SHT4x(rig.bus).measure() for _ in range(5)])

    assert five_readings() == five_readings()


# -- properties of the formulas ----------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.integers(0, 23))
def test_crc_detects_every_single_bit_flip_of_a_word_and_its_crc(word, bit):
    frame = bytearray(word.to_bytes(2, "big"))
    frame.append(crc8(frame))
    frame[bit // 8] ^= 1 << (bit % 8)
    assert crc8(frame, 0, 2) != frame[2]


def test_conversions_are_monotone_and_in_range_for_every_raw_value():
    temps = [centi_celsius(s) for s in range(65536)]
    hums = [centi_rh(s) for s in range(65536)]
    assert temps[0] == -4500 and temps[-1] == 13000
    assert all(a <= b for a, b in itertools.pairwise(temps))
    assert all(a <= b for a, b in itertools.pairwise(hums))
    assert min(hums) == 0 and max(hums) == 10000


@given(st.integers(0, 0xFFFF))
def test_integer_conversions_are_the_exact_formulas_rounded_to_nearest(s):
    exact_t = Fraction(-4500) + Fraction(17500 * s, 65535)
    exact_rh = Fraction(-600) + Fraction(12500 * s, 65535)
    assert centi_celsius(s) == math.floor(exact_t + Fraction(1, 2))
    assert centi_rh(s) == min(10000, max(0, math.floor(exact_rh + Fraction(1, 2))))
    assert abs(sht4x.celsius(s) * 100 - exact_t) < 1e-6


@given(st.floats(-45.0, 130.0), st.floats(-6.0, 119.0))
def test_model_quantisation_round_trips_through_the_driver_formulas(temp_c, rh):
    half_step_t = 175 / 65535 / 2 * 100
    half_step_rh = 125 / 65535 / 2 * 100
    assert abs(centi_celsius(ticks_from_celsius(temp_c)) - temp_c * 100) <= 0.5 + half_step_t
    expected_rh = min(10000.0, max(0.0, rh * 100))
    assert abs(centi_rh(ticks_from_rh(rh)) - expected_rh) <= 0.5 + half_step_rh


# -- the environment -----------------------------------------------------------------------------

JAN_1_2026 = 1_767_225_600


def test_environment_is_a_pure_function_of_seed_and_time():
    a, b = Environment(seed=1), Environment(seed=1)
    times = [JAN_1_2026 + k * 977 for k in range(200)]
    forward = [(a.temperature_c(t), a.humidity_rh(t)) for t in times]
    backward = [(b.temperature_c(t), b.humidity_rh(t)) for t in reversed(times)][::-1]
    assert forward == backward
    other = Environment(seed=2)
    assert forward != [(other.temperature_c(t), other.humidity_rh(t)) for t in times]


def test_afternoon_is_warmer_and_drier_than_dawn():
    env = Environment(seed=5, daily_amplitude_c=5.0, weather_noise_c=0.5)
    for day in range(7):
        midnight_solar = JAN_1_2026 + day * 86_400 - env.longitude / 15 * 3600
        dawn = midnight_solar + env.sunrise_hour(midnight_solar) * 3600
        afternoon = midnight_solar + 15 * 3600
        assert env.temperature_c(afternoon) > env.temperature_c(dawn) + 7
        assert env.humidity_rh(afternoon) < env.humidity_rh(dawn) - 10


def test_humidity_is_anti_correlated_with_temperature_and_stays_in_range():
    env = Environment(seed=11)
    times = [JAN_1_2026 + k * 600 for k in range(6 * 24 * 3)]
    temps = [env.temperature_c(t) for t in times]
    hums = [env.humidity_rh(t) for t in times]
    mt, mh = sum(temps) / len(temps), sum(hums) / len(hums)
    cov = sum((t - mt) * (h - mh) for t, h in zip(temps, hums))
    corr = cov / math.sqrt(sum((t - mt) ** 2 for t in temps) * sum((h - mh) ** 2 for h in hums))
    assert corr < -0.8
    assert all(0.0 <= h <= 100.0 for h in hums)
    assert all(env.dew_point_c(t) <= env.temperature_c(t) for t in times)


def test_winter_days_are_shorter_and_seasons_flip_between_hemispheres():
    july = JAN_1_2026 + 200 * 86_400
    north = Environment(latitude=43.5, annual_amplitude_c=8.0)
    south = Environment(latitude=-33.9, annual_amplitude_c=8.0)
    assert north.sunrise_hour(JAN_1_2026) > north.sunrise_hour(july) + 1.5
    assert north.seasonal_mean_c(july) > north.seasonal_mean_c(JAN_1_2026) + 12
    assert south.seasonal_mean_c(july) < south.seasonal_mean_c(JAN_1_2026) - 12


def test_magnus_helpers_invert_each_other():
    for temp_c, rh in ((-10.0, 80.0), (0.0, 55.0), (21.5, 40.0), (35.0, 95.0)):
        assert relative_humidity(temp_c, dew_point_c(temp_c, rh)) == pytest.approx(rh)
    assert relative_humidity(10.0, 12.0) == 100.0  # supersaturated air is reported as fog


def test_environment_rejects_impossible_parameters():
    with pytest.raises(ValueError, match="latitude"):
        Environment(latitude=91)
    with pytest.raises(ValueError, match="mean_rh"):
        Environment(mean_rh=0)
    with pytest.raises(ValueError, match="daily_amplitude_c"):
        Environment(daily_amplitude_c=-1)


def test_placeholder_pm_and_sound_follow_the_city_day():
    env = Environment(seed=4)
    midnight_solar = JAN_1_2026 - env.longitude / 15 * 3600
    rush, night = midnight_solar + 8 * 3600, midnight_solar + 3 * 3600
    assert env.pm2_5_ugm3(rush) > env.pm2_5_ugm3(night)
    assert env.pm10_ugm3(rush) > env.pm2_5_ugm3(rush) > env.pm1_ugm3(rush) > 0
    assert env.sound_level_dba(midnight_solar + 14 * 3600) > env.sound_level_dba(night) + 5
