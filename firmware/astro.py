"""Astronomical clock: sunrise and sunset (the lighting calendar's dawn and dusk) on the node.

The NOAA solar calculator's equations (Meeus, "Astronomical Algorithms"): the Sun's apparent
longitude, declination and the equation of time for an instant, then the hour angle at which
the Sun's centre is at ``altitude`` degrees. Each event is computed twice, the second time with
the Sun's position at the first estimate (the NOAA calculator refines the same way), which keeps
the result within a minute of published tables between latitudes 65 S and 65 N.

Dusk and dawn are *sunset and sunrise* by default: the Sun's upper limb on a sea-level horizon,
i.e. its centre at -0.833 degrees (34' refraction + 16' semi-diameter, the NOAA/USNO convention).
Civil twilight (centre at -6 degrees) is available as ``CIVIL``.

Float maths only (no datetime); days are counted from 2000-01-01 so that single-precision floats
(ESP32 builds of MicroPython) keep the angles to about 0.001 degree.
"""

import math

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


SUNRISE_SUNSET = -0.833  # degrees: refraction at the horizon plus the Sun's semi-diameter
CIVIL = -6.0

# The Sun's state on a date.
RISES_AND_SETS = const(0)
POLAR_DAY = const(1)  # above the altitude all day
POLAR_NIGHT = const(2)  # below it all day

_RAD = math.pi / 180.0
_J2000_OFFSET = 0.5  # 2000-01-01 00:00 UTC is J2000.0 (2000-01-01 12:00 TT) minus half a day


def days_from_civil(y, m, d):
    """Days from 2000-01-01 to the proleptic Gregorian date y-m-d (negative before 2000)."""
    # Howard Hinnant's days_from_civil, shifted from 1970-01-01 (719468) to 2000-01-01.
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + 9 if m <= 2 else m - 3) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 730425


def civil_from_days(days):
    """(year, month, day) of a day number counted from 2000-01-01."""
    z = days + 730425
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def weekday(days):
    """Day of the week of a day number, Monday = 0 (2000-01-01 was a Saturday)."""
    return (days + 5) % 7


def sun_position(t):
    """(declination degrees, equation of time minutes) at t days after 2000-01-01 00:00 UTC."""
    jc = (t - _J2000_OFFSET) / 36525.0  # Julian centuries from J2000.0
    l0 = (280.46646 + jc * (36000.76983 + jc * 0.0003032)) % 360.0
    m = (357.52911 + jc * (35999.05029 - 0.0001537 * jc)) % 360.0
    e = 0.016708634 - jc * (0.000042037 + 0.0000001267 * jc)
    mr = m * _RAD
    c = (math.sin(mr) * (1.914602 - jc * (0.004817 + 0.000014 * jc))
         + math.sin(2 * mr) * (0.019993 - 0.000101 * jc) + math.sin(3 * mr) * 0.000289)
    omega = (125.04 - 1934.136 * jc) * _RAD
    app_long = (l0 + c - 0.00569 - 0.00478 * math.sin(omega)) * _RAD
    eps0 = 23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.00059 - jc * 0.001813))) / 60.0) / 60.0
    eps = (eps0 + 0.00256 * math.cos(omega)) * _RAD
    decl = math.asin(math.sin(eps) * math.sin(app_long))
    y = math.tan(eps / 2)
    y *= y
    l0r = l0 * _RAD
    eqt = (y * math.sin(2 * l0r) - 2 * e * math.sin(mr) + 4 * e * y * math.sin(mr) * math.cos(2 * l0r)
           - 0.5 * y * y * math.sin(4 * l0r) - 1.25 * e * e * math.sin(2 * mr))
    return decl / _RAD, 4.0 * eqt / _RAD


def _cos_hour_angle(lat, decl, altitude):
    latr = lat * _RAD
    dr = decl * _RAD
    return ((math.sin(altitude * _RAD) - math.sin(latr) * math.sin(dr))
            / (math.cos(latr) * math.cos(dr)))


def _event(lat, lon, day, altitude, sign, guess_min):
    """Minutes after 00:00 UTC of ``day`` when the Sun crosses ``altitude`` (sign -1 rising)."""
    minutes = guess_min
    state = RISES_AND_SETS
    for _ in range(2):
        decl, eqt = sun_position(day + minutes / 1440.0)
        cos_h = _cos_hour_angle(lat, decl, altitude)
        if cos_h > 1.0:
            state, cos_h = POLAR_NIGHT, 1.0
        elif cos_h < -1.0:
            state, cos_h = POLAR_DAY, -1.0
        else:
            state = RISES_AND_SETS
        ha = math.acos(cos_h) / _RAD
        minutes = 720.0 - 4.0 * lon - eqt + sign * 4.0 * ha
    return state, minutes


def sun_times(lat, lon, day, altitude=SUNRISE_SUNSET):
    """(state, rise, set) for a date: state RISES_AND_SETS, POLAR_DAY or POLAR_NIGHT; rise and
    set in seconds after 00:00 UTC of the date (may fall outside 0..86399 far from Greenwich).

    ``lat`` degrees north, ``lon`` degrees east, ``day`` from :func:`days_from_civil`.
    On a polar day or night rise and set are both solar noon.
    """
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise ValueError("latitude must be -90..90 and longitude -180..180 degrees, got %r, %r"
                         % (lat, lon))
    lat = max(-89.99, min(89.99, lat))  # the poles themselves: the hour angle is undefined
    noon = 720.0 - 4.0 * lon
    decl, eqt = sun_position(day + noon / 1440.0)
    noon -= eqt
    cos_h = _cos_hour_angle(lat, decl, altitude)
    if cos_h > 1.0 or cos_h < -1.0:
        state = POLAR_NIGHT if cos_h > 1.0 else POLAR_DAY
        n = int(noon * 60.0)
        return state, n, n
    ha4 = 4.0 * math.acos(cos_h) / _RAD
    s1, rise = _event(lat, lon, day, altitude, -1, noon - ha4)
    s2, sset = _event(lat, lon, day, altitude, 1, noon + ha4)
    if s1 != RISES_AND_SETS or s2 != RISES_AND_SETS:  # grazing the horizon: keep the estimate
        rise, sset = noon - ha4, noon + ha4
    return RISES_AND_SETS, int(rise * 60.0 + 0.5), int(sset * 60.0 + 0.5)


def solar_noon(lon, day):
    """Seconds after 00:00 UTC of ``day`` when the Sun crosses the meridian at ``lon``."""
    noon = 720.0 - 4.0 * lon
    noon -= sun_position(day + noon / 1440.0)[1]
    return int(noon * 60.0 + 0.5)
