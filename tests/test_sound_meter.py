"""The PCBA-DBM decibel meter driver against its register-level model, and the noise statistics
against a reference computed the slow way (property tests)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import pcba_dbm, ticks
from drivers.pcba_dbm import DecibelMeter, SensorError
from firmware.noise_stats import LevelStats
from sim.bus import SimI2C
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.pcba_dbm import DecibelMeterModel
from tests.fixtures.device import on_device as run_on_device


def on_device(clock: VirtualClock, fn, *args):
    """Node code run to its end; virtual time then runs on to a day later."""
    return run_on_device(clock, fn, *args, run_s=24 * 3600)


class Rig:
    def __init__(self, source=None, **options) -> None:
        self.clock = VirtualClock()
        self.bus = SimI2C()
        self.model = DecibelMeterModel(self.clock, source=source or (lambda e: 62.0), **options)
        self.bus.attach(self.model.address, self.model)
        self.meter = DecibelMeter(self.bus)

    def run(self, fn):
        return on_device(self.clock, fn)


def wait_ms(ms: int) -> None:
    ticks.sleep_ms(ms)


# -- driver against the model ------------------------------------------------------------------------

def test_identity_and_bus_check() -> None:
    rig = Rig(unique_id=0x12345678)

    assert rig.meter.version() == (3, 1)
    assert rig.meter.unique_id() == 0x12345678
    rig.meter.check_bus(0x5A)
    assert rig.model.regs[5] == 0x5A


def test_levels_read_zero_until_the_first_average_then_the_sound_level() -> None:
    rig = Rig(source=lambda epoch: 62.4)

    def steps():
        first = rig.meter.decibel()
        wait_ms(1100)
        return first, rig.meter.decibel(), rig.meter.min_max()

    first, level, (lo, hi) = rig.run(steps)

    assert first == 0  # DS: 0 = not yet computed
    assert level == 62
    assert lo == hi == 62


def test_configure_sets_weighting_and_averaging_time() -> None:
    rig = Rig(source=lambda epoch: 60.0)

    def steps():
        rig.meter.configure(pcba_dbm.C_WEIGHTING, 125)
        settings_now = rig.meter.settings()
        wait_ms(130)
        return settings_now, rig.meter.decibel()

    (weighting, tavg, down), level = rig.run(steps)

    assert (weighting, tavg, down) == (pcba_dbm.C_WEIGHTING, 125, False)
    assert level == 64  # C reads the model's low-frequency offset (4 dB) more than A
    with pytest.raises(ValueError):
        rig.meter.configure(3, 1000)
    with pytest.raises(ValueError):
        rig.meter.configure(pcba_dbm.A_WEIGHTING, 5)


def test_min_max_and_history_follow_the_levels_and_clear() -> None:
    second_levels = [50.0, 70.0, 60.0, 55.0]
    rig = Rig()
    rig.model.source = lambda epoch: second_levels[min(3, int(epoch - rig.clock.epoch0))]

    def steps():
        wait_ms(4000)
        hist = rig.meter.history(bytearray(5))
        mm = rig.meter.min_max()
        rig.meter.clear()
        return bytes(hist), mm, rig.meter.min_max(), bytes(rig.meter.history(bytearray(2)))

    hist, mm, cleared, hist_cleared = rig.run(steps)

    assert hist == bytes([55, 60, 70, 50, 0])  # newest first, 0 = empty
    assert mm == (50, 70)
    assert cleared == (0, 0)
    assert hist_cleared == b"\0\0"
    with pytest.raises(ValueError):
        rig.meter.history(bytearray(101))


def test_the_averaging_is_energetic_not_arithmetic() -> None:
    # Half the second at 70 dB, half at 50 dB: 10 log10((10^7 + 10^5) / 2) = 67.03 dB.
    rig = Rig(source=lambda epoch: 70.0 if (epoch * 1000) % 1000 < 500 else 50.0)

    def steps():
        wait_ms(1000)
        return rig.meter.decibel()

    assert rig.run(steps) == 67


def test_the_microphone_range_clips_levels() -> None:
    rig = Rig(source=lambda epoch: 20.0)

    def steps():
        wait_ms(1000)
        return rig.meter.decibel()

    assert rig.run(steps) == 35


def test_a_reset_nacks_for_5_ms_and_restores_power_up_settings() -> None:
    rig = Rig()

    def steps():
        rig.meter.configure(pcba_dbm.Z_WEIGHTING, 250)
        rig.bus.writeto(0x48, b"\x09\x08")  # RESET: system reset, without the driver's wait
        try:
            rig.meter.decibel()
            nacked = False
        except SensorError:
            nacked = True
        wait_ms(pcba_dbm.READY_MS)
        return nacked, rig.meter.settings()

    nacked, settings_after = rig.run(steps)

    assert nacked
    assert settings_after == (pcba_dbm.A_WEIGHTING, 1000, False)


def test_a_missing_or_stuck_module_raises_sensor_error() -> None:
    rig = Rig(stuck=True)
    with pytest.raises(SensorError, match="0x48"):
        rig.meter.decibel()
    rig.bus.detach(0x48)
    with pytest.raises(SensorError, match="no sound level module"):
        rig.meter.configure()


def test_impossible_register_values_raise_sensor_error() -> None:
    rig = Rig(version=0xFF)
    with pytest.raises(SensorError, match="VERSION reads 0xff"):
        rig.meter.version()
    rig.model.regs[0x0A] = 0xFF  # a floating data line
    with pytest.raises(SensorError, match="beyond"):
        rig.meter.decibel()


def test_a_dead_microphone_never_produces_a_level() -> None:
    rig = Rig(dead_mic=True)

    def steps():
        wait_ms(5000)
        return rig.meter.decibel(), rig.meter.min_max()

    assert rig.run(steps) == (0, (0, 0))


def test_power_down_stops_the_averaging() -> None:
    rig = Rig()

    def steps():
        rig.meter.power_down()
        wait_ms(3000)
        return rig.meter.decibel(), rig.meter.settings()[2]

    assert rig.run(steps) == (0, True)


def test_the_default_source_is_the_environments_street_noise() -> None:
    clock = VirtualClock()
    env = Environment(seed=3)
    model = DecibelMeterModel(clock, env)
    bus = SimI2C()
    bus.attach(0x48, model)
    meter = DecibelMeter(bus)

    def steps():
        ticks.sleep_ms(10_000)
        return meter.min_max()

    lo, hi = on_device(clock, steps)

    assert env.sound_night_dba - 5 <= lo <= hi <= env.sound_day_dba + 5
    with pytest.raises(ValueError):
        DecibelMeterModel(clock)


# -- statistics: property tests against a reference ------------------------------------------------

def reference(samples: list[int]) -> dict[str, float]:
    """The textbook definitions on a sorted list, in double precision."""
    loud_first = sorted(samples, reverse=True)
    n = len(samples)

    def exceeded(pct: int) -> int:
        return loud_first[math.ceil(pct * n / 100) - 1]

    energy = math.fsum(10 ** (s / 100) for s in samples) / n
    return {"leq": 10 * math.log10(energy), "max": max(samples), "min": min(samples),
            "l10": exceeded(10), "l90": exceeded(90), "l50": exceeded(50)}


levels = st.integers(200, 1300)


@settings(max_examples=300)
@given(st.lists(levels, min_size=1, max_size=400))
def test_statistics_match_the_reference_definitions(samples: list[int]) -> None:
    stats = LevelStats()
    for s in samples:
        stats.add(s)
    ref = reference(samples)

    assert stats.count == len(samples)
    assert stats.max_tenths() == ref["max"]
    assert stats.min_tenths() == ref["min"]
    assert stats.exceeded_tenths(10) == ref["l10"]
    assert stats.exceeded_tenths(90) == ref["l90"]
    assert stats.exceeded_tenths(50) == ref["l50"]
    assert stats.leq() == pytest.approx(ref["leq"], abs=1e-9)
    assert ref["min"] / 10 <= stats.leq() <= ref["max"] / 10 + 1e-9


@given(st.lists(levels, min_size=1, max_size=200))
def test_leq_never_falls_below_the_arithmetic_mean(samples: list[int]) -> None:
    stats = LevelStats()
    for s in samples:
        stats.add(s)
    assert stats.leq() >= sum(samples) / len(samples) / 10 - 1e-9
    assert stats.exceeded_tenths(10) >= stats.exceeded_tenths(90)


@given(st.lists(st.integers(0, 2000), min_size=1, max_size=200))
def test_levels_beyond_the_range_land_in_the_edge_bins(samples: list[int]) -> None:
    stats = LevelStats()
    for s in samples:
        stats.add(s)
    clamped = [min(1300, max(200, s)) for s in samples]
    assert stats.max_tenths() == max(clamped)
    assert stats.min_tenths() == min(clamped)
    assert stats.clipped == sum(1 for s in samples if not 200 <= s <= 1300)
    assert stats.leq() == pytest.approx(reference(clamped)["leq"], abs=1e-9)


@given(st.lists(levels, min_size=1, max_size=50), st.lists(levels, min_size=1, max_size=50))
def test_clear_starts_a_new_interval(first: list[int], second: list[int]) -> None:
    stats = LevelStats()
    for s in first:
        stats.add(s)
    stats.clear()
    for s in second:
        stats.add(s)
    assert stats.count == len(second)
    assert stats.max_tenths() == max(second)
    assert stats.leq() == pytest.approx(reference(second)["leq"], abs=1e-9)
