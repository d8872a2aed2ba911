"""Local time for the rules: is an instant inside a daily "HH:MM-HH:MM" window, which local day.

Windows are minutes after local midnight in the rule's zoneinfo zone, so daylight-saving changes
move them with the clock the park's staff read. A window whose end is before its start wraps
midnight ("22:00-02:00"); equal ends mean all day.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["in_window", "local_day", "local_minute", "zone"]


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The zoneinfo zone ``name`` (ValueError naming it if the system does not know it)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: {exc}") from None


def _local(epoch_s: float, tz: str) -> datetime:
    return datetime.fromtimestamp(epoch_s, zone(tz))


def local_minute(epoch_s: float, tz: str) -> int:
    """Minutes after local midnight (0..1439) at ``epoch_s``."""
    t = _local(epoch_s, tz)
    return t.hour * 60 + t.minute


def local_day(epoch_s: float, tz: str) -> str:
    """The local calendar day at ``epoch_s`` as "YYYYMMDD" (the unit of the daily budgets)."""
    return _local(epoch_s, tz).strftime("%Y%m%d")


def in_window(epoch_s: float, tz: str, start_min: int, end_min: int) -> bool:
    """True when local time at ``epoch_s`` is in [start, end), wrapping midnight if end < start."""
    if start_min == end_min:
        return True
    m = local_minute(epoch_s, tz)
    if start_min < end_min:
        return start_min <= m < end_min
    return m >= start_min or m < end_min
