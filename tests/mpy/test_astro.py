"""Sunrise and sunset on the node (firmware.astro) against published almanac values.

Runs under CPython pytest and inside the MicroPython VM. The property tests at the end use
hypothesis, so they exist only under CPython (the VM collects top-level functions only).

References (local clock times as published, to the minute):
- USNO "Sun and Moon data for one day", Atlanta (33.8 N, 84.4 W), 2009-09-06, EDT: begin civil
  twilight 6:50, sunrise 7:15, sunset 19:56, end civil twilight 20:21 (quoted in the PyEphem
  documentation, "Naval Observatory Risings and Settings").
- Paris, 2019-12-22, CET: sunrise 8:42, sunset 16:56 (dateandtime.info, quoted by Paris Depeches).
- Paris, 2023-06-24, CEST: sunrise 5:48, sunset 21:58 (pariswerewolves.blogspot.com).
- Sydney Observatory (33.86 S, 151.21 E), 2009 Australian Sky Guide, AEDT: sunrise 5:37 on
  2008-12-05, sunset 20:10 on 2009-01-07.
- Hobart (42.88 S, 147.33 E), 2025-06-21, AEST: sunrise 7:42, sunset 16:43 (Geoscience Australia
  figures quoted in the press).
- Tromso (69.65 N): polar night around the December solstice, midnight sun around the June one.
"""

from firmware import astro
from firmware.astro import CIVIL, POLAR_DAY, POLAR_NIGHT, RISES_AND_SETS, days_from_civil, sun_times

_TOLERANCE_S = 120  # published minutes are rounded; the brief asks for a couple of minutes


def _utc_seconds(hhmm, tz_hours):
    h, m = hhmm
    return (h * 60 + m - tz_hours * 60) * 60


def _check(lat, lon, date, tz_hours, rise, sset, altitude=astro.SUNRISE_SUNSET):
    state, r, s = sun_times(lat, lon, days_from_civil(*date), altitude)
    assert state == RISES_AND_SETS
    er = _utc_seconds(rise, tz_hours)
    es = _utc_seconds(sset, tz_hours)
    assert abs(r - er) <= _TOLERANCE_S, "sunrise %d s off at %r %r" % (r - er, (lat, lon), date)
    assert abs(s - es) <= _TOLERANCE_S, "sunset %d s off at %r %r" % (s - es, (lat, lon), date)


def test_atlanta_matches_the_naval_observatory():
    _check(33.8, -84.4, (2009, 9, 6), -4, (7, 15), (19, 56))


def test_atlanta_civil_twilight_matches_the_naval_observatory():
    _check(33.8, -84.4, (2009, 9, 6), -4, (6, 50), (20, 21), CIVIL)


def test_paris_winter_solstice():
    _check(48.8566, 2.3522, (2019, 12, 22), 1, (8, 42), (16, 56))


def test_paris_midsummer():
    _check(48.85, 2.35, (2023, 6, 24), 2, (5, 48), (21, 58))


def test_sydney_earliest_sunrise_and_latest_sunset():
    # Sunrise on the local date 2008-12-05 is on 2008-12-04 in UTC: a negative second count.
    _check(-33.86, 151.21, (2008, 12, 5), 11, (5, 37), (19, 55))
    state, _, sset = sun_times(-33.86, 151.21, days_from_civil(2009, 1, 7))
    assert state == RISES_AND_SETS
    assert abs(sset - _utc_seconds((20, 10), 11)) <= _TOLERANCE_S


def test_hobart_winter_solstice():
    _check(-42.88, 147.33, (2025, 6, 21), 10, (7, 42), (16, 43))


def test_polar_night_and_midnight_sun_at_tromso_and_mcmurdo():
    assert sun_times(69.65, 18.96, days_from_civil(2025, 12, 21))[0] == POLAR_NIGHT
    assert sun_times(69.65, 18.96, days_from_civil(2025, 6, 21))[0] == POLAR_DAY
    assert sun_times(69.65, 18.96, days_from_civil(2025, 11, 20))[0] == RISES_AND_SETS
    assert sun_times(-77.85, 166.67, days_from_civil(2025, 12, 21))[0] == POLAR_DAY
    assert sun_times(-77.85, 166.67, days_from_civil(2025, 6, 21))[0] == POLAR_NIGHT
    assert sun_times(90.0, 0.0, days_from_civil(2025, 6, 21))[0] == POLAR_DAY


def test_a_polar_day_reports_solar_noon_for_both_events():
    day = days_from_civil(2025, 6, 21)
    state, r, s = sun_times(69.65, 18.96, day)
    assert state == POLAR_DAY and r == s
    assert abs(r - astro.solar_noon(18.96, day)) <= 60


def test_bad_coordinates_are_refused():
    import pytest

    with pytest.raises(ValueError, match="latitude"):
        sun_times(91.0, 0.0, 0)
    with pytest.raises(ValueError, match="longitude"):
        sun_times(45.0, 181.0, 0)


def test_day_numbers_round_trip_and_know_the_week():
    for date in ((2000, 1, 1), (2000, 2, 29), (1999, 12, 31), (2024, 2, 29), (2100, 3, 1),
                 (1970, 1, 1)):
        assert astro.civil_from_days(days_from_civil(*date)) == date
    assert days_from_civil(2000, 1, 1) == 0
    assert days_from_civil(1970, 1, 1) == -10957
    assert astro.weekday(days_from_civil(2026, 11, 23)) == 0  # a Monday
    assert astro.weekday(days_from_civil(2000, 1, 1)) == 5  # a Saturday


def test_civil_twilight_brackets_sunrise_and_sunset():
    day = days_from_civil(2026, 3, 20)
    _, rise, sset = sun_times(47.32, 5.04, day)
    _, dawn, dusk = sun_times(47.32, 5.04, day, CIVIL)
    assert dawn < rise < sset < dusk
    assert 20 * 60 < rise - dawn < 45 * 60


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # the MicroPython VM
    given = None

if given is not None:
    import datetime

    _lat = st.floats(min_value=-60.0, max_value=60.0)
    _lon = st.floats(min_value=-180.0, max_value=180.0)
    _day = st.integers(min_value=days_from_civil(1990, 1, 1), max_value=days_from_civil(2060, 12, 31))

    @given(st.dates(min_value=datetime.date(1600, 1, 1), max_value=datetime.date(2400, 12, 31)))
    def test_day_numbers_agree_with_the_gregorian_calendar(date):
        n = days_from_civil(date.year, date.month, date.day)
        assert n == (date - datetime.date(2000, 1, 1)).days
        assert astro.civil_from_days(n) == (date.year, date.month, date.day)
        assert astro.weekday(n) == date.weekday()

    @settings(max_examples=300)
    @given(_lat, _lon, _day)
    def test_solar_noon_lies_midway_between_sunrise_and_sunset(lat, lon, day):
        state, rise, sset = sun_times(lat, lon, day)
        assert state == RISES_AND_SETS
        noon = astro.solar_noon(lon, day)
        assert rise < noon < sset
        # Not exactly midway: the declination moves during the day (most at the equinoxes).
        assert abs((noon - rise) - (sset - noon)) <= 150

    @settings(max_examples=300)
    @given(st.floats(min_value=0.0, max_value=60.0), _lon, _day)
    def test_days_at_opposite_latitudes_add_up_to_a_little_over_24_hours(lat, lon, day):
        _, r1, s1 = sun_times(lat, lon, day)
        _, r2, s2 = sun_times(-lat, lon, day)
        total = (s1 - r1) + (s2 - r2)
        # Refraction and the Sun's radius lengthen both days: 5..45 minutes in all up to 60 deg.
        assert 86400 + 5 * 60 <= total <= 86400 + 45 * 60

    @settings(max_examples=300)
    @given(_lat, st.floats(min_value=-165.0, max_value=180.0), _day)
    def test_fifteen_degrees_west_is_one_hour_later(lat, lon, day):
        _, r1, s1 = sun_times(lat, lon, day)
        _, r2, s2 = sun_times(lat, lon - 15.0, day)
        assert abs((r2 - r1) - 3600) <= 60
        assert abs((s2 - s1) - 3600) <= 60

    @settings(max_examples=200)
    @given(st.floats(min_value=0.0, max_value=64.0), _lon, st.integers(min_value=2020, max_value=2050))
    def test_northern_days_lengthen_with_latitude_in_june_and_shorten_in_december(lat, lon, year):
        june = days_from_civil(year, 6, 21)
        dec = days_from_civil(year, 12, 21)

        def length(la, d):
            _, r, s = sun_times(la, lon, d)
            return s - r

        assert length(lat + 1.0, june) >= length(lat, june)
        assert length(lat + 1.0, dec) <= length(lat, dec)
