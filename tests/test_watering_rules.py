"""Watering rules on the gateway: a real SQLite store, a simulated soil plot, an injected clock.

The rule's rows go to a recording ``submit`` (the dispatcher's seat); the soil plot of
``sim.environment`` answers with the water the valve let through, as a node would report it.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.commands.model import CommandRow
from gateway.config import WateringRule
from gateway.counters import Counters
from gateway.rules import WateringRules, in_window, local_day, readings_from_senml, selects
from gateway.store import Device, NewRecord, Store
from gateway.uplink.senml import decode_pack
from sim.environment import Environment, SoilPlot

DEV = "70b3d57ed0000101"
OTHER = "70b3d57ed0000102"
PARIS = ZoneInfo("Europe/Paris")
GW = "gw-test"


RULE = {
    "name": "parc-jourdan", "devices": ("group:parc-jourdan",), "moisture_below": 0.18,
    "readings": 2, "hours_start_min": 5 * 60, "hours_end_min": 9 * 60,
    "timezone": "Europe/Paris", "open_s": 600, "max_daily_s": 1800, "max_daily_litres": 0.0,
    "rain_skip_h": 12.0,
}


def rule_with(**changes: Any) -> WateringRule:
    """The park's rule of these tests (05:00-09:00 Paris, 600 s, 1800 s a day), with changes."""
    return WateringRule(**{**RULE, **changes})


GROUPS = {"parc-jourdan": (DEV,)}


S = Store  # the rules' state lives in the gateway's store (RuleStoreMixin)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def paris(day: int, hour: int, minute: int = 0) -> float:
    """Unix time of 2026-07-<day> hour:minute in Paris (CEST)."""
    return datetime(2026, 7, day, hour, minute, tzinfo=PARIS).timestamp()


def open_store(path: Path, *, fsync: bool = True) -> S:
    store = S.open(path / "gw.sqlite")
    if not fsync:  # many short examples: durability across power loss is not what they test
        store._db().execute("PRAGMA synchronous=OFF")
    store.upsert_devices([Device(dev_eui=DEV, role="soil"), Device(dev_eui=OTHER, role="soil")])
    return store


class Harness:
    """Rules + store + clock + the rows the rules submitted."""

    def __init__(self, path: Path, rule: WateringRule | None = None, t: float | None = None,
                 *, fail_submit: bool = False, fsync: bool = True) -> None:
        self.path = path
        self.rule = rule or rule_with()
        self.clock = Clock(paris(15, 4) if t is None else t)
        self.sent: list[CommandRow] = []
        self.counters = Counters()
        self.fail_submit = fail_submit
        self.fsync = fsync
        self.store = open_store(path, fsync=fsync)
        self.rules = self._engine()

    def _engine(self) -> WateringRules:
        return WateringRules((self.rule,), GROUPS, self.store, GW, self.counters,
                             submit=self._submit, clock=self.clock)

    async def _submit(self, rows: list[CommandRow]) -> list[CommandRow]:
        if self.fail_submit:
            raise OSError("dispatcher unavailable")
        self.sent.extend(rows)
        return rows

    def restart(self) -> None:
        self.store.close()
        self.store = open_store(self.path, fsync=self.fsync)
        self.rules = self._engine()

    def reading(self, t: float, moisture: float | None, **more: Any) -> list[CommandRow]:
        self.clock.t = t
        readings = dict(more)
        if moisture is not None:
            readings["soil_moisture"] = moisture
        return asyncio.run(self.rules.on_uplink(DEV, "soil", readings, t))

    def tick(self, t: float) -> list[CommandRow]:
        self.clock.t = t
        return asyncio.run(self.rules.tick(t))

    def events(self) -> list[dict[str, Any]]:
        """The stored rule events as {name: value} (plus bn, bt, rid), in store order."""
        out = []
        for rec in self.store.pending(10_000):
            if rec.kind != "event":
                continue
            pack = decode_pack(rec.body)
            values = readings_from_senml(pack)
            values.update(bn=pack[0]["bn"], bt=pack[0]["bt"], rid=rec.rid,
                          priority=rec.priority, rids={r["rid"] for r in pack})
            out.append(values)
        return out

    def whys(self, action: str) -> list[str]:
        return [e["why"] for e in self.events() if e["action"] == action]


@pytest.fixture
def h(tmp_path: Path):
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


class DryWeather(Environment):
    """A July day without a shower (the seeded model rains a little most days)."""

    def rain_mm_h(self, epoch_s: float) -> float:
        return 0.0


def simulate_day(h: Harness, plot: SoilPlot, flow_lpm: float, *, start: float, hours: int,
                 every_min: int = 15) -> list[float]:
    """Run a soil node minute by minute: it reports every ``every_min`` minutes (moisture, valve,
    litres since the last report) and opens its valve for the seconds a rule's row asks, from
    the moment the row is submitted. Returns the moisture ratios reported."""
    open_until = 0.0
    reported_l = 0.0
    seen = 0
    ratios = []
    for minute in range(hours * 60):
        t = start + minute * 60
        plot.watering_lpm = (lambda: flow_lpm) if t < open_until else None
        plot.moisture(t)
        if minute % every_min:
            continue
        litres = plot.watered_l - reported_l
        reported_l = plot.watered_l
        ratio = plot.moisture(t) / 100.0
        ratios.append(ratio)
        h.reading(t, ratio, valve="open" if t < open_until else "closed",
                  water_volume=round(litres, 1) / 1000.0)
        for row in h.sent[seen:]:
            open_until = max(open_until, t) + row.args["seconds"]
        seen = len(h.sent)
    return ratios


# --------------------------------------------------------------------------- the park's day


def test_dry_morning_opens_once_when_the_watering_wets_the_bed(h: Harness) -> None:
    plot = SoilPlot(DryWeather(seed=3), start_moisture=15.0)
    simulate_day(h, plot, flow_lpm=10.0, start=paris(15, 0), hours=24)
    assert len(h.sent) == 1
    row = h.sent[0]
    assert in_window(row.issued_at, "Europe/Paris", 300, 540)
    assert row.action == "valve_open" and row.args == {"seconds": 600}
    assert row.kid == row.key_name == "rule:parc-jourdan"
    assert row.cmd_id == f"rule-parc-jourdan-{DEV}-20260715-1"
    assert row.issued_at < row.expires_at <= row.issued_at + 3600
    assert plot.moisture(paris(16, 0)) / 100 > 0.18 - 0.05  # the bed got the water
    assert h.whys("open") == ["dry"]
    assert h.whys("rain") == []  # the rise after watering is ours, not rain
    assert h.whys("skip") == ["outside_hours"]  # the dry night, told once


def test_a_weak_valve_is_opened_until_the_daily_time_budget_and_no_further(h: Harness) -> None:
    plot = SoilPlot(DryWeather(seed=3), start_moisture=12.0)
    simulate_day(h, plot, flow_lpm=0.5, start=paris(15, 0), hours=24)
    assert sum(r.args["seconds"] for r in h.sent) == 1800
    assert [r.cmd_id[-2:] for r in h.sent] == ["-1", "-2", "-3"]
    for before, after in zip(h.sent, h.sent[1:], strict=False):
        # never two in flight: the next waits for the previous to run out or expire
        assert after.issued_at >= before.expires_at + before.args["seconds"]
    assert all(in_window(r.issued_at, "Europe/Paris", 300, 540) for r in h.sent)
    assert h.whys("skip").count("budget_time") == 1
    assert h.counters["rule_skip_budget_time"] >= 2  # every later dry reading, told once
    # the next morning the budget is new
    simulate_day(h, plot, flow_lpm=0.5, start=paris(16, 0), hours=10)
    assert sum(r.args["seconds"] for r in h.sent if "20260716" in r.cmd_id) == 1800


def test_the_last_opening_of_the_day_takes_only_what_is_left(tmp_path: Path) -> None:
    h = Harness(tmp_path, rule_with(open_s=700, max_daily_s=1800))
    for n in range(12):
        h.reading(paris(15, 5) + n * 1200, 0.10)
    assert [r.args["seconds"] for r in h.sent] == [700, 700, 400]


def test_volume_budget_stops_the_rule_once_the_day_s_litres_are_used(tmp_path: Path) -> None:
    h = Harness(tmp_path, rule_with(max_daily_s=7200, max_daily_litres=50))
    h.reading(paris(15, 5), 0.10)
    assert len(h.reading(paris(15, 5, 15), 0.10)) == 1
    h.reading(paris(15, 6, 30), 0.11, water_volume=0.060)  # 60 L went through: over 50
    h.reading(paris(15, 7, 0), 0.10)
    h.reading(paris(15, 7, 30), 0.10)
    assert len(h.sent) == 1
    assert h.whys("skip") == ["budget_volume"]
    assert h.rules.state("parc-jourdan", DEV)["used_l"] == pytest.approx(60.0)


# --------------------------------------------------------------------------- the skips


def test_rain_seen_as_a_rise_the_valve_does_not_explain_skips_watering(h: Harness) -> None:
    h.reading(paris(15, 5), 0.10)
    h.reading(paris(15, 5, 15), 0.16)  # +0.06 and no valve: rain
    assert h.whys("rain") == ["moisture_rise"]
    for n in range(6):
        h.reading(paris(15, 5, 30) + n * 900, 0.12)
    assert h.sent == []
    assert h.whys("skip") == ["rain"]  # told once for the episode
    rain_until = h.events()[0]["until"]
    assert rain_until == paris(15, 17, 15)
    # rain_skip_h later (next morning), dry again: it waters
    h.reading(paris(16, 5), 0.10)
    h.reading(paris(16, 5, 15), 0.10)
    assert len(h.sent) == 1


def test_a_rain_reading_skips_watering_too(h: Harness) -> None:
    h.reading(paris(15, 5), 0.10)
    h.reading(paris(15, 5, 15), 0.10, rain=2.5)
    h.reading(paris(15, 5, 30), 0.10)
    h.reading(paris(15, 5, 45), 0.10)
    assert h.sent == []
    assert h.whys("rain") == ["rain_reading"]


def test_outside_hours_is_told_once_per_stretch_and_watering_waits_for_the_window(
        h: Harness) -> None:
    for n in range(8):  # 12:00 .. 13:45: dry, but the window is 05:00-09:00
        h.reading(paris(15, 12) + n * 900, 0.10)
    assert h.sent == []
    assert h.whys("skip") == ["outside_hours"]
    h.reading(paris(16, 4, 45), 0.10)  # still the same stretch: not told again
    assert h.whys("skip") == ["outside_hours"]
    h.reading(paris(16, 5, 0), 0.30)  # a wet morning: the window passes without watering
    h.reading(paris(16, 12, 0), 0.10)
    h.reading(paris(16, 12, 15), 0.10)
    assert h.whys("skip") == ["outside_hours", "outside_hours"]  # a new stretch: told again
    assert len(h.reading(paris(17, 5, 0), 0.10)) == 1


def test_tick_opens_when_the_window_opens_on_a_recent_dry_reading(h: Harness) -> None:
    h.reading(paris(15, 4, 30), 0.10)
    h.reading(paris(15, 4, 45), 0.10)
    assert h.tick(paris(15, 4, 59)) == []
    opened = h.tick(paris(15, 5, 1))
    assert len(opened) == 1 and h.sent == opened
    assert h.tick(paris(15, 5, 2)) == []  # the same readings never open twice


def test_paused_rules_do_not_water_and_the_pause_ends_by_itself(h: Harness) -> None:
    h.clock.t = paris(15, 4)
    assert h.rules.pause(DEV, paris(16, 4)) == 1
    for n in range(8):
        h.reading(paris(15, 5) + n * 900, 0.10)
    assert h.sent == []
    assert h.whys("pause") == ["operator"]
    assert h.whys("skip") == ["paused"]
    h.tick(paris(16, 4, 1))
    assert h.whys("resume") == ["pause_ended"]
    assert len(h.reading(paris(16, 5), 0.10)) == 1  # still dry: the run of readings goes on


def test_rules_pause_and_resume_actions_through_the_local_handler(h: Harness) -> None:
    pause = CommandRow("op-1", "ab" * 8, "parks", DEV, "rules_pause", {"hours": 48},
                       paris(15, 4), paris(15, 5))
    assert h.rules.local_action(pause) == "done"
    assert h.rules.state("parc-jourdan", DEV)["paused_until"] == paris(17, 4)
    resume = CommandRow("op-2", "ab" * 8, "parks", DEV, "rules_resume", {},
                        paris(15, 4), paris(15, 5))
    assert h.rules.local_action(resume) == "done"
    h.reading(paris(15, 5), 0.10)
    assert len(h.reading(paris(15, 5, 15), 0.10)) == 1
    assert h.whys("resume") == ["operator"]


def test_a_valid_operator_valve_command_takes_precedence_until_it_expires(h: Harness) -> None:
    h.clock.t = paris(15, 4, 50)
    op = CommandRow("op-9", "cd" * 8, "parks", DEV, "valve_close", {}, paris(15, 4, 50),
                    paris(15, 6, 30))
    h.rules.operator_command(op)
    for n in range(6):  # 05:00 .. 06:15
        h.reading(paris(15, 5) + n * 900, 0.10)
    assert h.sent == []
    assert h.whys("skip") == ["operator"]
    assert len(h.reading(paris(15, 6, 30), 0.10)) == 1  # expired: the rule acts again


def test_an_operator_opening_counts_in_the_valve_s_daily_budget(h: Harness) -> None:
    h.clock.t = paris(15, 4)
    op = CommandRow("op-10", "cd" * 8, "parks", DEV, "valve_open", {"seconds": 1500},
                    paris(15, 4), paris(15, 4, 30))
    h.rules.operator_command(op)
    for n in range(16):
        h.reading(paris(15, 5) + n * 900, 0.10)
    assert [r.args["seconds"] for r in h.sent] == [300]  # 1800 - 1500 left for the rule


def test_an_operator_override_survives_a_restart(h: Harness) -> None:
    h.clock.t = paris(15, 4, 50)
    h.rules.operator_command(CommandRow("op-11", "cd" * 8, "parks", DEV, "valve_close", {},
                                        paris(15, 4, 50), paris(15, 8)))
    h.restart()
    for n in range(8):
        h.reading(paris(15, 5) + n * 900, 0.10)
    assert h.sent == []
    assert h.whys("skip") == ["operator"]


def test_a_reload_that_drops_a_device_stops_its_rule(h: Harness) -> None:
    h.reading(paris(15, 4, 45), 0.10)
    h.reading(paris(15, 4, 50), 0.10)
    h.rules.reload((h.rule,), {"parc-jourdan": (OTHER,)})
    assert h.tick(paris(15, 5, 1)) == []
    assert h.reading(paris(15, 5, 5), 0.10) == []
    h.rules.reload((h.rule,), GROUPS)
    assert len(h.tick(paris(15, 5, 6))) == 1  # its state was kept


def test_own_rows_and_other_actions_are_not_operator_overrides(h: Harness) -> None:
    h.clock.t = paris(15, 4)
    h.rules.operator_command(CommandRow("x", "rule:parc-jourdan", "rule:parc-jourdan", DEV,
                                        "valve_open", {"seconds": 600}, paris(15, 4),
                                        paris(15, 23)))
    h.rules.operator_command(CommandRow("y", "cd" * 8, "parks", DEV, "set_interval",
                                        {"seconds": 600}, paris(15, 4), paris(15, 23)))
    h.reading(paris(15, 5), 0.10)
    assert len(h.reading(paris(15, 5, 15), 0.10)) == 1


# --------------------------------------------------------------------------- persistence


def test_a_restart_keeps_budget_pause_and_never_waters_twice_for_one_trigger(
        h: Harness) -> None:
    h.reading(paris(15, 5), 0.10)
    h.reading(paris(15, 5, 15), 0.10)
    assert len(h.sent) == 1
    h.restart()
    h.reading(paris(15, 5, 16), 0.10)  # in flight and a new run of readings needed
    assert len(h.sent) == 1
    h.rules.pause(OTHER, paris(20, 0))  # not in the rule's group: nothing
    h.clock.t = paris(15, 5, 20)
    h.rules.pause(DEV, paris(15, 8))
    h.restart()
    for n in range(4):
        h.reading(paris(15, 6) + n * 900, 0.10)
    assert len(h.sent) == 1
    state = h.rules.state("parc-jourdan", DEV)
    assert state["used_s"] == 600 and state["opens"] == 1
    assert state["paused_until"] == paris(15, 8)
    h.reading(paris(15, 8, 15), 0.10)
    assert [r.cmd_id[-2:] for r in h.sent] == ["-1", "-2"]  # ids stay unique after restarts


def test_events_are_stored_with_the_rule_state_as_priority_senml(h: Harness) -> None:
    h.reading(paris(15, 5), 0.10)
    h.reading(paris(15, 5, 15), 0.12)
    events = h.events()
    assert len(events) == 1
    ev = events[0]
    assert ev["rid"] == f"{GW}:{DEV}:rule:parc-jourdan:0" and ev["rids"] == {ev["rid"]}
    assert ev["priority"] == 1
    assert ev["bn"] == f"urn:dev:mac:{DEV}:" and ev["bt"] == paris(15, 5, 15)
    assert ev["rule"] == "parc-jourdan"
    assert ev["action"] == "open" and ev["why"] == "dry"
    assert ev["moisture"] == pytest.approx(0.12)
    assert ev["seconds"] == 600 and ev["used_s"] == 600
    assert ev["cmd"] == h.sent[0].cmd_id
    assert h.store.rule_state("parc-jourdan", DEV)["ev"] == 1


def test_a_failed_submit_gives_the_budget_back_and_says_so(tmp_path: Path) -> None:
    h = Harness(tmp_path, fail_submit=True)
    h.reading(paris(15, 5), 0.10)
    assert h.reading(paris(15, 5, 15), 0.10) == []
    assert h.whys("open_failed") == ["OSError"]
    assert h.rules.state("parc-jourdan", DEV)["used_s"] == 0
    assert h.counters["rule_submit_failed"] == 1


def test_bad_readings_are_counted_and_ignored(h: Harness) -> None:
    for bad in ("wet", float("nan"), 5.0, -0.1, True, None):
        h.reading(paris(15, 5), None, soil_moisture=bad)
    h.reading(paris(15, 5, 1), 0.10, water_volume=float("inf"))
    assert h.counters["rule_reading_rejected_soil_moisture"] == 6
    assert h.counters["rule_reading_rejected_water_volume"] == 1
    assert h.sent == []
    assert asyncio.run(h.rules.on_uplink(DEV, "air", {"soil_moisture": 0.01}, paris(15, 6))) == []


def test_a_corrupt_stored_state_starts_the_rule_afresh(h: Harness) -> None:
    with h.store._write("test") as cur:
        cur.execute("INSERT OR REPLACE INTO rule_state VALUES ('parc-jourdan', ?, '[1]', 0)",
                    (DEV,))
    assert h.store.rule_state("parc-jourdan", DEV) is None
    h.restart()
    h.reading(paris(15, 5), 0.10)
    assert len(h.reading(paris(15, 5, 15), 0.10)) == 1


def test_state_and_events_are_saved_all_or_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    good = NewRecord(rid="gw:e:0", dev_eui=DEV, kind="event", priority=1,
                     records=[{"bn": f"urn:dev:mac:{DEV}:", "n": "rule", "vs": "r"}])
    bad = NewRecord(rid="gw:e:1", dev_eui=DEV, kind="event", priority=1,
                    records=[{"n": "", "v": float("nan")}])
    with pytest.raises(ValueError, match="gw:e:1"):
        store.save_rule_state("r", DEV, {"used_s": 600}, [good, bad])
    assert store.rule_state("r", DEV) is None and store.count() == 0
    store.save_rule_state("r", DEV.upper(), {"used_s": 600}, [good])
    store.save_rule_state("r", DEV, {"used_s": 1200}, [good])  # same rid: one event
    assert store.rule_state("r", DEV) == {"used_s": 1200}
    assert store.rule_states("r") == {DEV: {"used_s": 1200}}
    assert store.count() == 1
    store.close()


# --------------------------------------------------------------------------- helpers


def test_hours_windows_wrap_midnight_and_follow_local_time() -> None:
    assert in_window(paris(15, 23), "Europe/Paris", 22 * 60, 2 * 60)
    assert in_window(paris(15, 1, 59), "Europe/Paris", 22 * 60, 2 * 60)
    assert not in_window(paris(15, 2), "Europe/Paris", 22 * 60, 2 * 60)
    assert not in_window(paris(15, 5), "UTC", 5 * 60, 9 * 60)  # 03:00 UTC
    assert in_window(paris(15, 12), "Europe/Paris", 0, 0)  # equal ends: all day
    assert local_day(paris(15, 0, 30), "Europe/Paris") == "20260715"
    assert local_day(paris(15, 0, 30), "UTC") == "20260714"
    with pytest.raises(ValueError, match="Mars/Olympus"):
        in_window(0, "Mars/Olympus", 0, 60)


def test_selectors_name_devices_by_eui_group_and_role() -> None:
    assert selects(["*"], DEV, None, {})
    assert selects([DEV.upper()], DEV, None, {})
    assert selects(["group:parc-jourdan"], DEV, "soil", GROUPS)
    assert not selects(["group:parc-jourdan"], OTHER, "soil", GROUPS)
    assert selects(["role:soil"], OTHER, "soil", {})
    assert not selects(["role:soil"], OTHER, None, {})


# --------------------------------------------------------------------------- properties

READING = st.tuples(st.just("reading"), st.integers(5, 60),
                    st.sampled_from([-0.02, -0.01, -0.01, -0.005, 0.0, 0.01, 0.02, 0.06]),
                    st.sampled_from([0.0, 0.0, 0.0, 0.01]))
STEP = st.one_of(
    READING, READING, READING, READING,
    st.tuples(st.just("pause"), st.integers(1, 240), st.integers(1, 48), st.none()),
    st.tuples(st.just("resume"), st.integers(1, 240), st.none(), st.none()),
    st.tuples(st.just("operator"), st.integers(1, 240), st.integers(1, 1800), st.integers(60, 7200)),
    st.tuples(st.just("tick"), st.integers(1, 240), st.none(), st.none()),
    st.tuples(st.just("restart"), st.integers(0, 5), st.none(), st.none()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=20, max_size=80),
       rule=st.builds(rule_with, readings=st.integers(1, 3), open_s=st.integers(60, 900),
                      max_daily_s=st.integers(60, 2400), rain_skip_h=st.integers(0, 12),
                      hours_start_min=st.integers(0, 1439), hours_end_min=st.integers(1, 1440)))
def test_rules_never_overspend_open_outside_hours_or_while_paused(
        steps: list[tuple[Any, ...]], rule: WateringRule) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp), rule, paris(15, 0), fsync=False)
        t = paris(15, 0)
        paused_until = 0.0
        moisture = 0.15  # a random walk: drying, sometimes a jump that looks like rain
        try:
            for kind, minutes, a, b in steps:
                t += minutes * 60
                h.clock.t = t
                before = len(h.sent)
                if kind == "reading":
                    moisture = min(1.0, max(0.0, moisture + a))
                    h.reading(t, moisture, water_volume=b)
                elif kind == "pause":
                    h.rules.pause(DEV, t + a * 3600)
                    paused_until = t + a * 3600
                elif kind == "resume":
                    h.rules.resume(DEV)
                    paused_until = 0.0
                elif kind == "operator":
                    h.rules.operator_command(CommandRow(
                        f"op-{t}", "ef" * 8, "parks", DEV, "valve_open", {"seconds": a}, t,
                        t + b))
                elif kind == "tick":
                    h.tick(t)
                else:
                    h.restart()
                for row in h.sent[before:]:
                    assert row.issued_at == t
                    assert t >= paused_until
                    assert in_window(t, rule.timezone, rule.hours_start_min, rule.hours_end_min)
            spent: dict[str, int] = {}
            for row in h.sent:
                day = local_day(row.issued_at, rule.timezone)
                spent[day] = spent.get(day, 0) + row.args["seconds"]
            assert all(seconds <= rule.max_daily_s for seconds in spent.values())
            for before, after in zip(h.sent, h.sent[1:], strict=False):
                assert after.issued_at >= before.expires_at + before.args["seconds"]
        finally:
            h.store.close()
