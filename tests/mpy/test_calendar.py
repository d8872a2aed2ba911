"""The lighting calendar (firmware.calendar): switch points on clock, dusk and dawn, reduced level,
default level, polar days and nights, summer time, persistence.

Runs under CPython pytest and inside the MicroPython VM; the hypothesis properties at the end run
under CPython only.
"""

import os

from fresh_dir import in_fresh_dir

from firmware import astro
from firmware.calendar import Calendar, check_points, epoch_seconds

DIJON = (47.322, 5.041)
TROMSO = (69.65, 18.96)
DUSK_TO_DAWN = [("dusk", 0, 100), ("dawn", 0, 0)]


def _sun(lat, lon, date):
    return astro.sun_times(lat, lon, astro.days_from_civil(*date))


def test_without_points_the_default_level_holds():
    cal = Calendar(*DIJON, points=(), default_level=30)
    assert cal.level_at(epoch_seconds(2026, 3, 1, 12, 0)) == (30, None)
    assert cal.level_at(epoch_seconds(2026, 3, 1, 23, 59)) == (30, None)


def test_clock_points_switch_at_local_time_and_carry_over_midnight():
    cal = Calendar(*DIJON, points=[("clock", 18 * 60, 80), ("clock", 23 * 60, 40),
                                   ("clock", 6 * 60, 0)], utc_offset_min=60)
    # 17:59 local (16:59 UTC): still the 06:00 point's level; the next switch is a minute away.
    assert cal.level_at(epoch_seconds(2026, 1, 10, 16, 59)) == (0, 60)
    assert cal.level_at(epoch_seconds(2026, 1, 10, 17, 0)) == (80, 5 * 3600)
    assert cal.level_at(epoch_seconds(2026, 1, 10, 22, 30))[0] == 40
    # 01:30 local the next day: the 23:00 point of the day before is still in force.
    assert cal.level_at(epoch_seconds(2026, 1, 11, 0, 30)) == (40, 4 * 3600 + 30 * 60)


def test_dusk_and_dawn_points_follow_the_sun_with_their_offsets():
    cal = Calendar(*DIJON, points=[("dusk", 15, 100), ("dawn", -10, 0)], utc_offset_min=0)
    _, rise, sset = _sun(DIJON[0], DIJON[1], (2026, 11, 15))
    midnight = epoch_seconds(2026, 11, 15)
    on_at = midnight + sset + 15 * 60
    off_at = midnight + rise - 10 * 60
    assert cal.level_at(on_at - 1) == (0, 1)
    assert cal.level_at(on_at)[0] == 100
    assert cal.level_at(off_at - 1) == (100, 1)
    assert cal.level_at(off_at)[0] == 0
    # Dijon sunset on 2026-11-15 is a little after 16:00 UTC (17:0x CET).
    assert 16 * 3600 <= sset <= 16 * 3600 + 15 * 60


def test_the_reduced_level_caps_lit_lamps_after_the_set_hour_and_never_lights_them():
    cal = Calendar(*DIJON, points=DUSK_TO_DAWN, reduce=(23 * 60, 5 * 60 + 30, 40), utc_offset_min=60)
    assert cal.level_at(epoch_seconds(2026, 1, 10, 21, 0))[0] == 100  # 22:00 local
    assert cal.level_at(epoch_seconds(2026, 1, 10, 22, 0))[0] == 40  # 23:00 local
    assert cal.level_at(epoch_seconds(2026, 1, 11, 3, 0))[0] == 40  # 04:00 local
    level, nxt = cal.level_at(epoch_seconds(2026, 1, 11, 4, 0))  # 05:00 local
    assert (level, nxt) == (40, 30 * 60)
    assert cal.level_at(epoch_seconds(2026, 1, 11, 4, 30))[0] == 100  # 05:30, before dawn
    # A window over daylight hours does not switch the lamps on.
    day = Calendar(*DIJON, points=DUSK_TO_DAWN, reduce=(600, 900, 40))
    assert day.level_at(epoch_seconds(2026, 1, 11, 12, 0))[0] == 0


def test_an_offset_past_midnight_still_holds_just_before_it_fires_again():
    # Dusk + 7 h fires a little after local midnight; just before that, the one in force is the
    # previous night's, which belongs to the day before yesterday.
    cal = Calendar(*DIJON, points=[("dusk", 420, 30)], default_level=0, utc_offset_min=60)
    _, _, sset = _sun(DIJON[0], DIJON[1], (2026, 1, 10))
    fires = epoch_seconds(2026, 1, 10) + sset + 420 * 60
    assert fires > epoch_seconds(2026, 1, 10, 23, 0)  # after local midnight
    assert cal.level_at(fires - 60)[0] == 30
    assert cal.level_at(fires - 60)[1] == 60
    for hour in range(0, 24, 3):
        assert cal.level_at(epoch_seconds(2026, 1, 12, hour, 0))[0] == 30


def test_points_at_the_same_instant_the_later_one_wins():
    cal = Calendar(*DIJON, points=[("clock", 600, 20), ("clock", 600, 70)])
    assert cal.level_at(epoch_seconds(2026, 5, 1, 10, 0))[0] == 70


def test_polar_night_keeps_a_dusk_to_dawn_program_lit_and_polar_day_keeps_it_dark():
    cal = Calendar(*TROMSO, points=DUSK_TO_DAWN, utc_offset_min=60)
    for hour in (0, 6, 11, 12, 18, 23):
        assert cal.level_at(epoch_seconds(2025, 12, 21, hour, 0))[0] == 100
        assert cal.level_at(epoch_seconds(2025, 6, 21, hour, 0))[0] == 0
    # In November the sun still rises at Tromso: dark at night, off around noon.
    assert cal.level_at(epoch_seconds(2025, 11, 20, 11, 0))[0] == 0
    assert cal.level_at(epoch_seconds(2025, 11, 20, 20, 0))[0] == 100


def test_eu_summer_time_moves_clock_points_by_an_hour():
    cal = Calendar(*DIJON, points=[("clock", 23 * 60, 50), ("clock", 6 * 60, 0)],
                   utc_offset_min=60, dst="eu")
    assert cal.utc_offset(epoch_seconds(2026, 1, 15, 12, 0)) == 3600
    assert cal.utc_offset(epoch_seconds(2026, 7, 15, 12, 0)) == 7200
    # 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
    assert cal.utc_offset(epoch_seconds(2026, 3, 29, 0, 59)) == 3600
    assert cal.utc_offset(epoch_seconds(2026, 3, 29, 1, 0)) == 7200
    assert cal.utc_offset(epoch_seconds(2026, 10, 25, 0, 59)) == 7200
    assert cal.utc_offset(epoch_seconds(2026, 10, 25, 1, 0)) == 3600
    assert cal.level_at(epoch_seconds(2026, 7, 15, 21, 0))[0] == 50  # 23:00 CEST
    assert cal.level_at(epoch_seconds(2026, 1, 15, 21, 0))[0] == 0  # 22:00 CET
    assert cal.level_at(epoch_seconds(2026, 1, 15, 22, 0))[0] == 50  # 23:00 CET


def test_bad_programs_are_named_and_leave_the_old_program_in_force():
    assert check_points(DUSK_TO_DAWN) is None
    assert check_points([{"ref": "dusk", "minutes": -30, "level": 100}]) is None
    assert "ref" in check_points([("noon", 0, 100)])
    assert "clock minutes" in check_points([("clock", 1440, 100)])
    assert "offset" in check_points([("dawn", 721, 0)])
    assert "level" in check_points([("clock", 0, 101)])
    assert "level" in check_points([("clock", 0, True)])
    assert "at most 16" in check_points([("clock", i, 0) for i in range(17)])
    assert "list" in check_points("dusk")
    cal = Calendar(*DIJON, points=[("clock", 0, 60)])
    import pytest

    with pytest.raises(ValueError, match="level"):
        cal.set_program([("clock", 0, 20), ("clock", 60, 200)])
    assert cal.level_at(epoch_seconds(2026, 2, 2, 12, 0))[0] == 60


def test_the_program_survives_a_reboot_through_its_file():
    def body():
        cal = Calendar(*DIJON, points=DUSK_TO_DAWN, path="calendar.json")
        cal.set_program([("clock", 0, 10), ("clock", 720, 90)], default_level=5,
                        reduce=(60, 120, 7))
        cal.save()
        assert sorted(os.listdir()) == ["calendar.json"]  # the temporary file was renamed
        again = Calendar(*DIJON, points=DUSK_TO_DAWN, path="calendar.json")
        assert again.load() is True
        assert again.to_dict() == cal.to_dict()
        assert again.level_at(epoch_seconds(2026, 2, 2, 13, 0))[0] == 90
        with open("calendar.json", "w") as f:
            f.write("{not json")
        broken = Calendar(*DIJON, points=DUSK_TO_DAWN, path="calendar.json")
        assert broken.load() is False
        assert broken.to_dict()["points"] == [["dusk", 0, 100], ["dawn", 0, 0]]

    in_fresh_dir(body)


def test_epoch_seconds_agrees_with_gmtime():
    import time

    t = epoch_seconds(2026, 11, 23, 13, 35, 7)
    assert time.gmtime(t)[:6] == (2026, 11, 23, 13, 35, 7)


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # the MicroPython VM
    given = None

if given is not None:
    _point = st.tuples(st.sampled_from(("clock", "dusk", "dawn")),
                       st.integers(min_value=-720, max_value=1439),
                       st.integers(min_value=0, max_value=100)).map(
        lambda p: (p[0], p[1] % 1440 if p[0] == "clock" else max(-720, min(720, p[1])), p[2]))
    _points = st.lists(_point, max_size=16)
    _t = st.integers(min_value=epoch_seconds(2020, 1, 1), max_value=epoch_seconds(2040, 1, 1))
    _lat = st.floats(min_value=-75.0, max_value=75.0)

    @settings(max_examples=200, deadline=None)
    @given(_points, st.integers(min_value=0, max_value=100), _lat, _t)
    def test_the_level_in_force_is_a_point_level_or_the_default(points, default, lat, t):
        cal = Calendar(lat, 5.0, points=points, default_level=default, utc_offset_min=60, dst="eu")
        level, nxt = cal.level_at(t)
        assert level in [p[2] for p in points] + [default]
        if not points:
            assert (level, nxt) == (default, None)

    @settings(max_examples=200, deadline=None)
    @given(_points, _lat, _t)
    def test_the_level_holds_until_the_next_switch_it_announces(points, lat, t):
        cal = Calendar(lat, 5.0, points=points, reduce=(1320, 300, 30), utc_offset_min=60)
        level, nxt = cal.level_at(t)
        if nxt is not None:
            assert nxt > 0
            assert cal.level_at(t + nxt - 1)[0] == level

    @settings(max_examples=200, deadline=None)
    @given(_points, st.integers(min_value=0, max_value=1439), st.integers(min_value=0, max_value=1439),
           st.integers(min_value=0, max_value=100), _t)
    def test_the_reduced_level_only_ever_lowers_a_lit_level(points, start, end, cap, t):
        plain = Calendar(*DIJON, points=points)
        reduced = Calendar(*DIJON, points=points, reduce=(start, end, cap))
        base = plain.level_at(t)[0]
        got = reduced.level_at(t)[0]
        assert got <= base
        assert got == base or got == cap
