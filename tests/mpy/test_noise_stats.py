"""Noise statistics (firmware/noise_stats.py): plain-assert tests run by CPython pytest and inside
the MicroPython VM, where floats may be single precision: tolerances are 0.05 dB, half the
payload's 0.1 dB step.
"""

import math

import pytest

from firmware.noise_stats import LevelStats


def _filled(samples):
    s = LevelStats()
    for x in samples:
        s.add(x)
    return s


def test_a_constant_level_gives_that_level_for_every_statistic():
    s = _filled([623] * 50)
    assert s.count == 50
    assert s.max_tenths() == s.min_tenths() == 623
    assert s.exceeded_tenths(10) == s.exceeded_tenths(90) == 623
    assert abs(s.leq() - 62.3) < 0.05
    assert s.leq_tenths() == 623


def test_leq_is_the_energetic_mean():
    # equal time at 60 and 70 dB: 60 + 10 log10((1 + 10) / 2) = 67.40 dB
    s = _filled([600, 700] * 30)
    assert abs(s.leq() - 67.404) < 0.05
    assert s.leq_tenths() == 674
    # one loud second among 99 quiet ones dominates: 10 log10((99 * 10^4 + 10^8) / 100) = 60.04
    s = _filled([400] * 99 + [800])
    assert abs(s.leq() - 60.04) < 0.05


def test_percentiles_use_the_nearest_rank_loudest_first():
    s = _filled(list(range(501, 601)))  # 50.1 .. 60.0 dB, one sample each
    assert s.exceeded_tenths(10) == 591  # 10 samples are >= 59.1 dB
    assert s.exceeded_tenths(90) == 511  # 90 samples are >= 51.1 dB
    assert s.exceeded_tenths(50) == 551
    assert s.max_tenths() == 600 and s.min_tenths() == 501
    one = _filled([700])
    assert one.exceeded_tenths(10) == one.exceeded_tenths(90) == 700


def test_an_empty_interval_has_no_statistics():
    s = LevelStats()
    assert s.count == 0
    assert s.max_tenths() is None and s.min_tenths() is None
    assert s.exceeded_tenths(90) is None
    assert s.leq() is None and s.leq_tenths() is None


def test_levels_outside_the_range_are_clipped_and_counted():
    s = _filled([100, 1500, 650])
    assert s.clipped == 2
    assert s.min_tenths() == 200 and s.max_tenths() == 1300
    assert s.count == 3


def test_clear_forgets_everything_without_reallocating():
    s = _filled([800] * 10)
    bins = s._bins
    s.clear()
    assert s._bins is bins
    assert s.count == 0 and s.max_tenths() is None
    s.add(450)
    assert s.max_tenths() == s.min_tenths() == 450


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="0 < N < 100"):
        LevelStats().exceeded_tenths(100)
    with pytest.raises(ValueError, match="level range"):
        LevelStats(500, 400)


def test_the_histogram_is_small_and_fixed():
    s = LevelStats()
    assert len(s._bins) == 1101  # 20.0 .. 130.0 dB in 0.1 dB bins
    assert len(bytes(s._bins)) == 2202  # 2 bytes a bin
    for x in range(0, 3000, 7):
        s.add(x)
    assert len(s._bins) == 1101


def test_adding_samples_allocates_nothing():
    s = LevelStats()
    s.add(500)  # first call: any lazy set-up happens outside the measurement
    try:
        import gc

        before = gc.mem_alloc()
    except (ImportError, AttributeError):  # CPython: no MicroPython heap to watch
        before = None
    i = 0
    while i < 1000:
        s.add(300 + i)
        i += 1
    if before is not None:
        # The MicroPython VM of the tests never frees during a run, so any allocation shows.
        assert gc.mem_alloc() - before <= 0
    assert s.count == 1001


def test_leq_agrees_with_a_direct_sum():
    samples = [412, 455, 503, 587, 611, 640, 702, 733, 801, 950]
    s = _filled(samples)
    direct = 0.0
    for x in samples:
        direct += math.pow(10.0, x / 100.0)
    assert abs(s.leq() - 10.0 * math.log10(direct / len(samples))) < 0.05
