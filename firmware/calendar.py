"""The lighting calendar (TALQ-like): switch points on clock time, dusk or dawn, a reduced level
after a set hour and a default level; which level is in force at any instant.

A switch point is ``(ref, minutes, level)`` as the "calendar" downlink carries it
(protocol.payload.fields COMMANDS): ``ref`` "clock" with ``minutes`` after local midnight
(0..1439), or "dusk"/"dawn" with ``minutes`` of offset (-720..720) from that day's sunset or
sunrise (firmware.astro, at the calendar's horizon altitude). A point fires every day; the level in
force is the one of the last point fired (points that fire at the same instant: the later in the
list wins). With no point at all, the default level holds.

Reduced level: between ``reduce[0]`` and ``reduce[1]`` (local minutes, the window may wrap past
midnight) a lit level is capped at ``reduce[2]``; it never switches lamps on.

Polar days and nights: on a day the Sun does not set, dusk points do not fire and dawn points fire
at local midnight; on a day it does not rise, dawn points do not fire and dusk points fire at
local midnight. A dusk-to-dawn program thus keeps the lamps off through a polar day and on through
a polar night.

Local time is UTC plus ``utc_offset_min``, plus one hour of summer time when ``dst`` is "eu"
(last Sunday of March 01:00 UTC to last Sunday of October 01:00 UTC). Times given to the calendar
are the board's ``time.time()`` seconds (UTC), whatever the port's epoch.

Persistence: a small JSON file written to a temporary name and renamed over the old one.
"""

import json
import os
import time

from firmware import astro

REFS = ("clock", "dusk", "dawn")
MAX_POINTS = 16
_DAY = 86400


def epoch_day():
    """Day number (from 2000-01-01) of this interpreter's time epoch (1970 or 2000)."""
    t = time.gmtime(0)
    return astro.days_from_civil(t[0], t[1], t[2])


def epoch_seconds(y, mo, d, h=0, mi=0, s=0):
    """``time.time()`` seconds of a UTC date and time on this interpreter."""
    return (astro.days_from_civil(y, mo, d) - epoch_day()) * _DAY + h * 3600 + mi * 60 + s


def write_json(path, data):
    """Write ``data`` as JSON to a temporary file renamed over ``path`` (atomic on LittleFS)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    try:
        os.rename(tmp, path)
    except OSError:  # a filesystem whose rename does not replace
        os.remove(path)
        os.rename(tmp, path)


def int_in(v, lo, hi):
    """Is ``v`` an int (not a bool) within lo..hi? Settings and commands come from JSON."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_points(points):
    """None when ``points`` is a valid program, else a message saying what is wrong."""
    if not isinstance(points, (list, tuple)):
        return "points must be a list"
    if len(points) > MAX_POINTS:
        return "at most %d switch points, got %d" % (MAX_POINTS, len(points))
    for i, p in enumerate(points):
        if isinstance(p, dict):
            ref, minutes, level = p.get("ref"), p.get("minutes"), p.get("level")
        elif isinstance(p, (list, tuple)) and len(p) == 3:
            ref, minutes, level = p
        else:
            return "point %d: expected {ref, minutes, level}" % i
        if ref not in REFS:
            return "point %d: ref must be clock, dusk or dawn, got %r" % (i, ref)
        if ref == "clock":
            if not int_in(minutes, 0, 1439):
                return "point %d: clock minutes must be 0..1439, got %r" % (i, minutes)
        elif not int_in(minutes, -720, 720):
            return "point %d: %s offset must be -720..720 minutes, got %r" % (i, ref, minutes)
        if not int_in(level, 0, 100):
            return "point %d: level must be 0..100, got %r" % (i, level)
    return None


def _reduce_ok(r):
    return (isinstance(r, (list, tuple)) and len(r) == 3 and int_in(r[0], 0, 1439)
            and int_in(r[1], 0, 1439) and int_in(r[2], 0, 100))


def _normalise(points):
    out = []
    for p in points:
        if isinstance(p, dict):
            p = (p["ref"], p["minutes"], p["level"])
        out.append((REFS.index(p[0]), p[1], p[2]))
    return out


def _last_sunday(y, m):
    last = astro.days_from_civil(y + 1, 1, 1) - 1 if m == 12 else astro.days_from_civil(y, m + 1, 1) - 1
    return last - (astro.weekday(last) + 1) % 7


class Calendar:
    """A lighting program for one location; ``level_at(t)`` gives the level in force."""

    def __init__(self, lat, lon, points=(), default_level=0, reduce=None, utc_offset_min=0,
                 dst=None, altitude=astro.SUNRISE_SUNSET, path=None):
        if not -90 <= lat <= 90 or not -180 <= lon <= 180:
            raise ValueError("calendar: latitude -90..90, longitude -180..180, got %r, %r"
                             % (lat, lon))
        if dst not in (None, "eu"):
            raise ValueError("calendar: dst must be None or 'eu', got %r" % (dst,))
        if not int_in(utc_offset_min, -840, 840):
            raise ValueError("calendar: utc_offset_min must be -840..840, got %r" % (utc_offset_min,))
        self.lat = lat
        self.lon = lon
        self.utc_offset_min = utc_offset_min
        self.dst = dst
        self.altitude = altitude
        self.path = path
        self._epoch_day = epoch_day()
        self._cache_day = None
        self._cache = None
        self.points = []
        self.default_level = 0
        self.reduce = None
        self.set_program(points, default_level, reduce)

    # -- the program ------------------------------------------------------------------------
    def set_program(self, points, default_level=None, reduce=None):
        """Replace the switch points (and default level / reduce window when given)."""
        err = check_points(points)
        if err is None and default_level is not None and not int_in(default_level, 0, 100):
            err = "default level must be 0..100, got %r" % (default_level,)
        if err is None and reduce is not None and not _reduce_ok(reduce):
            err = "reduce must be [from minute, to minute, level], got %r" % (reduce,)
        if err is not None:
            raise ValueError("calendar: " + err)
        self.points = _normalise(points)
        if default_level is not None:
            self.default_level = default_level
        if reduce is not None:
            self.reduce = tuple(reduce)
        self._cache_day = None

    def to_dict(self):
        return {"points": [[REFS[r], m, lv] for r, m, lv in self.points],
                "default": self.default_level,
                "reduce": list(self.reduce) if self.reduce is not None else None}

    def save(self):
        """Write the program to ``path`` (temporary file, then rename: a power cut keeps one)."""
        if self.path is not None:
            write_json(self.path, self.to_dict())

    def load(self):
        """Read the program saved at ``path``; False (program unchanged) if absent or bad."""
        if self.path is None:
            return False
        try:
            with open(self.path) as f:
                d = json.loads(f.read())
            self.set_program(d["points"], d.get("default"), d.get("reduce"))
            return True
        except (OSError, ValueError, KeyError, TypeError):
            return False

    # -- time -------------------------------------------------------------------------------------
    def utc_offset(self, t):
        """Seconds to add to UTC ``t`` for local time (standard offset plus EU summer time)."""
        off = self.utc_offset_min * 60
        if self.dst == "eu":
            day = t // _DAY + self._epoch_day
            y = astro.civil_from_days(day)[0]
            start = (_last_sunday(y, 3) - self._epoch_day) * _DAY + 3600
            end = (_last_sunday(y, 10) - self._epoch_day) * _DAY + 3600
            if start <= t < end:
                off += 3600
        return off

    def _day_events(self, day):
        """Switch instants of one local day: [(seconds after its local midnight, index, level)]."""
        ev = []
        noon = (day - self._epoch_day) * _DAY + _DAY // 2
        off = self.utc_offset(noon - self.utc_offset_min * 60)
        state, rise, sset = astro.sun_times(self.lat, self.lon, day, self.altitude)
        for i, (ref, minutes, level) in enumerate(self.points):
            if ref == 0:
                at = minutes * 60
            elif state == astro.RISES_AND_SETS:
                at = (sset if ref == 1 else rise) + off + minutes * 60
            elif (ref == 1) == (state == astro.POLAR_NIGHT):
                at = 0  # dusk in a polar night / dawn in a polar day: from midnight
            else:
                continue
            ev.append((at, i, level))
        return ev

    def _window(self, day):
        """Events of days day-2..day+2, relative to the day's midnight. An offset of up to 12 h
        moves an event into the next or previous day: the last event before now may belong to
        the day before yesterday, the next one to the day after tomorrow."""
        if self._cache_day != day:
            ev = []
            if self.points:
                for shift in (-2, -1, 0, 1, 2):
                    for at, i, level in self._day_events(day + shift):
                        ev.append((at + shift * _DAY, i, level))
            self._cache = ev
            self._cache_day = day
        return self._cache

    def level_at(self, t):
        """(level in force at UTC seconds ``t``, seconds until the next switch or None)."""
        local = t + self.utc_offset(t)
        day = local // _DAY + self._epoch_day
        now = local % _DAY
        best = None  # (instant, index, level)
        nxt = None
        for at, i, level in self._window(day):
            if at <= now:
                if best is None or at > best[0] or (at == best[0] and i > best[1]):
                    best = (at, i, level)
            elif nxt is None or at < nxt:
                nxt = at
        level = self.default_level if best is None else best[2]
        if self.reduce is not None:
            start, end, cap = self.reduce
            start *= 60
            end *= 60
            inside = start <= now < end if start <= end else (now >= start or now < end)
            if inside and level > cap:
                level = cap
            for b in (start, end, start + _DAY, end + _DAY):
                if b > now and (nxt is None or b < nxt):
                    nxt = b
        return level, (None if nxt is None else nxt - now)
