"""Watering rules: open a park's valves from the gateway when the soil stays dry, hypervisor or not.

A rule (``[[rules.watering]]`` in the gateway config) watches the soil nodes its selectors name.
When ``readings`` consecutive readings are under ``moisture_below`` it asks the dispatcher for a
``valve_open`` of ``open_s`` seconds (key "rule:<name>"), unless: it is outside the local hours
window, rain was seen in the last ``rain_skip_h`` hours, the operator paused the rules for the
device, an operator valve command is still valid (operators take precedence), the valve's daily
time or volume budget is spent, the valve is reported faulty, or our previous opening may still
be running. Every opening and every skip an operator would want to know (once per episode, not
once per reading) is an event record ``rule`` saved in the same transaction as the rule's state,
so it is forwarded like everything else, as history when the broker was away.

Readings are SenML values (``readings_from_senml``): ``soil_moisture`` a ratio 0..1,
``water_volume`` m3 since the last report, ``valve`` "closed"/"open"/"fault", optional ``rain``
(mm/h). Budgets count per valve per local calendar day in the rule's time zone; an operator's
valve_open counts towards them too (the valve's day, whoever opened it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Protocol

from gateway.commands.model import CommandRow
from gateway.counters import Counters
from gateway.rules.hours import in_window, local_day, zone
from gateway.store.model import NewRecord

__all__ = [
    "MIN_OPEN_S",
    "RAIN_RISE",
    "WateringRuleLike",
    "WateringRules",
    "readings_from_senml",
    "selects",
]

log = logging.getLogger("cityedge.rules")

RAIN_RISE: Final = 0.05  # moisture ratio rise between two readings that means rain (design §7)
WATERING_EFFECT_S: Final = 3 * 3600  # a rise this long after a valve opened is the valve's doing
MIN_OPEN_S: Final = 60  # a budget remainder shorter than this is not worth opening the valve
FRESH_S: Final = 3600  # tick() acts on the last reading only while it is this recent
MIN_LIFE_S: Final = 900  # a rule command expires 2 reporting intervals after issue, within these
MAX_LIFE_S: Final = 3600
VALVE_ACTIONS: Final = frozenset({"valve_open", "valve_close"})
_ID_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._:-]")

Submit = Callable[[list[CommandRow]], Awaitable[Any]]
Key = tuple[str, str]  # (rule name, dev_eui)


class WateringRuleLike(Protocol):
    """The fields of ``gateway.config.WateringRule`` the engine reads (read-only)."""

    @property
    def name(self) -> str: ...
    @property
    def devices(self) -> Sequence[str]: ...
    @property
    def moisture_below(self) -> float: ...
    @property
    def readings(self) -> int: ...
    @property
    def hours_start_min(self) -> int: ...
    @property
    def hours_end_min(self) -> int: ...
    @property
    def timezone(self) -> str: ...
    @property
    def open_s(self) -> int: ...
    @property
    def max_daily_s(self) -> int: ...
    @property
    def max_daily_litres(self) -> float: ...
    @property
    def rain_skip_h(self) -> float: ...


def selects(selectors: Iterable[str], dev_eui: str, role: str | None,
            groups: Mapping[str, Sequence[str]]) -> bool:
    """True when one of ``selectors`` ("*", a dev_eui, "group:<name>", "role:<role>") names the
    device (the same syntax as a trusted key's ``devices``)."""
    eui = dev_eui.lower()
    for sel in selectors:
        if sel == "*" or sel.lower() == eui:
            return True
        if sel.startswith("group:") and eui in (m.lower() for m in groups.get(sel[6:], ())):
            return True
        if sel.startswith("role:") and role is not None and sel[5:] == role:
            return True
    return False


def readings_from_senml(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The named values of an uplink's SenML records (``Accepted.records``): name -> v/vs/vb."""
    values: dict[str, Any] = {}
    for rec in records:
        name = rec.get("n")
        if not isinstance(name, str):
            continue
        for label in ("v", "vs", "vb"):
            if label in rec:
                values[name] = rec[label]
                break
    return values


def _number(value: Any, lo: float, hi: float) -> float | None:
    """``value`` as a float if it is a finite real number within [lo, hi], else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) and lo <= x <= hi else None


def _fresh_state() -> dict[str, Any]:
    return {
        "day": "", "used_s": 0, "used_l": 0.0, "opens": 0,  # today's budget use
        "below": 0, "m": None, "at": None, "gap": None,  # the recent readings
        "rain_until": 0.0, "watered_at": None, "busy_until": 0.0, "fault": False,
        "paused_until": 0.0, "override_until": 0.0, "override_cmd": None,
        "flow_l": 0.0, "flow_s": 0,  # lifetime litres and open seconds: the valve's flow rate
        "told": {},  # skip reason -> the episode already reported
        "ev": 0,  # number of the next event record
    }


class WateringRules:
    """The watering rules of one gateway (see the module docstring).

    ``submit`` is the dispatcher's ``submit``: the rule's rows take the operators' path. State
    lives in ``store`` (``RuleStoreMixin``), loaded at construction, so a restart keeps pauses,
    budgets and the readings counted so far.
    """

    def __init__(self, rules: Sequence[WateringRuleLike], groups: Mapping[str, Sequence[str]],
                 store: Any, gateway_id: str, counters: Counters, *, submit: Submit,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._gateway_id = gateway_id
        self._counters = counters
        self._submit = submit
        self._clock = clock
        self._lock = asyncio.Lock()
        self._states: dict[Key, dict[str, Any]] = {}
        self._saves: dict[Key, int] = {}
        self._rules: dict[str, WateringRuleLike] = {}
        self.reload(rules, groups)

    def reload(self, rules: Sequence[WateringRuleLike], groups: Mapping[str, Sequence[str]]
               ) -> None:
        """Take a new configuration (SIGHUP): a rule keeps its state under the same name."""
        for rule in rules:
            zone(rule.timezone)  # unknown zone: ValueError now, not at the first dry morning
        self._rules = {rule.name: rule for rule in rules}
        self._groups = groups
        for name in self._rules:
            if any(key[0] == name for key in self._states):
                continue
            for eui, state in self._store.rule_states(name).items():
                self._states[(name, eui)] = {**_fresh_state(), **state}

    # ------------------------------------------------------------------ inputs

    async def on_uplink(self, dev_eui: str, role: str, readings: Mapping[str, Any],
                        received_at: float) -> list[CommandRow]:
        """Evaluate the rules naming this device on one accepted uplink; returns the rows opened."""
        if role != "soil":
            return []
        eui = dev_eui.lower()
        opened: list[CommandRow] = []
        async with self._lock:
            for rule in self._matching(eui, role):
                row = await self._on_reading(rule, eui, readings, received_at)
                if row is not None:
                    opened.append(row)
        return opened

    async def tick(self, now: float | None = None) -> list[CommandRow]:
        """Housekeeping on a timer: day rollover, ended pauses and overrides; and, when the
        window opens on a recent dry reading, the opening the next uplink would have asked."""
        t = self._clock() if now is None else now
        opened: list[CommandRow] = []
        async with self._lock:
            for (name, eui), state in list(self._states.items()):
                rule = self._rules.get(name)
                if rule is None:
                    continue
                before = copy.deepcopy(state)
                records: list[NewRecord] = []
                self._housekeep(rule, eui, state, t, records)
                row = None
                fresh = state["at"] is not None and 0 <= t - state["at"] <= FRESH_S
                if (fresh and in_window(t, rule.timezone, rule.hours_start_min,
                                        rule.hours_end_min)
                        and selects(rule.devices, eui, self._role(eui), self._groups)):
                    row = self._decide(rule, eui, state, t, records, count=False)
                if state != before or records:
                    await self._save(rule, eui, records)
                if row is not None and await self._send(rule, eui, row):
                    opened.append(row)
        return opened

    def pause(self, dev_eui: str, until: float) -> int:
        """Pause every rule naming the device until ``until`` (rules_pause); how many rules."""
        return self._operator_change(dev_eui, "pause", until)

    def resume(self, dev_eui: str) -> int:
        """End a pause now (rules_resume); how many rules it concerned."""
        return self._operator_change(dev_eui, "resume", 0.0)

    def operator_command(self, row: CommandRow) -> None:
        """An operator's valve command for ``row.dev_eui``: the rules stand aside until it expires
        (its valve_open seconds count in the valve's daily budget)."""
        if row.action not in VALVE_ACTIONS or row.kid.startswith("rule:"):
            return
        eui = row.dev_eui.lower()
        now = self._clock()
        seconds = row.args.get("seconds") if row.action == "valve_open" else None
        for rule in self._matching(eui, self._role(eui)):
            state = self._state(rule, eui)
            self._housekeep(rule, eui, state, now, [])
            state["override_until"] = max(state["override_until"], float(row.expires_at))
            state["override_cmd"] = row.cmd_id
            if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
                state["used_s"] += seconds
                state["flow_s"] += seconds
                state["watered_at"] = now
                state["busy_until"] = max(state["busy_until"], float(row.expires_at) + seconds)
            self._save_now(rule, eui, [])

    def local_action(self, row: CommandRow) -> str:
        """The dispatcher's handler for the gateway-local rules_pause / rules_resume: the node
        answer to report ("done")."""
        if row.action == "rules_pause":
            hours = row.args.get("hours", 24)
            self.pause(row.dev_eui, self._clock() + float(hours) * 3600)
        elif row.action == "rules_resume":
            self.resume(row.dev_eui)
        else:
            return "unknown_command"
        return "done"

    def state(self, rule: str, dev_eui: str) -> dict[str, Any] | None:
        """A copy of a rule's state for a device (status page, tests), or None."""
        found = self._states.get((rule, dev_eui.lower()))
        return None if found is None else copy.deepcopy(found)

    # ------------------------------------------------------------------ one reading

    async def _on_reading(self, rule: WateringRuleLike, eui: str, readings: Mapping[str, Any],
                          t: float) -> CommandRow | None:
        state = self._state(rule, eui)
        records: list[NewRecord] = []
        self._housekeep(rule, eui, state, t, records)
        moisture = self._value(readings, "soil_moisture", 0.0, 1.0)
        volume = self._value(readings, "water_volume", 0.0, 1e6)
        litres = 0.0 if volume is None else volume * 1000.0
        rain = self._value(readings, "rain", 0.0, 1e4)
        valve = readings.get("valve")
        state["fault"] = valve == "fault"
        if not state["fault"]:
            state["told"].pop("valve_fault", None)
        if litres > 0:
            state["used_l"] += litres
            state["flow_l"] += litres
        if litres > 0 or valve == "open":
            state["watered_at"] = t if state["watered_at"] is None else max(state["watered_at"], t)
        row = None
        if moisture is not None and state["at"] is not None and t <= state["at"]:
            self._counters["rule_reading_stale"] += 1  # older than one already counted
        elif moisture is not None:
            self._rain(rule, eui, state, t, moisture, rain, records)
            state["below"] = state["below"] + 1 if moisture < rule.moisture_below else 0
            if state["at"] is not None:
                state["gap"] = t - state["at"]
            state["m"], state["at"] = moisture, t
            row = self._decide(rule, eui, state, t, records)
        elif rain:
            self._rain(rule, eui, state, t, None, rain, records)
        await self._save(rule, eui, records)
        if row is not None and not await self._send(rule, eui, row):
            return None
        return row

    def _value(self, readings: Mapping[str, Any], name: str, lo: float, hi: float
               ) -> float | None:
        if name not in readings:
            return None
        value = _number(readings[name], lo, hi)
        if value is None:
            self._counters[f"rule_reading_rejected_{name}"] += 1
        return value

    def _rain(self, rule: WateringRuleLike, eui: str, state: dict[str, Any], t: float,
              moisture: float | None, rain: float | None, records: list[NewRecord]) -> None:
        """Note rain from a rain reading or from soil wetting that no valve explains."""
        why = None
        rise = None
        if rain:
            why = "rain_reading"
        elif moisture is not None and state["m"] is not None:
            rise = moisture - state["m"]
            watered = state["watered_at"]
            by_valve = watered is not None and watered >= state["at"] - WATERING_EFFECT_S
            if rise >= RAIN_RISE - 1e-9 and not by_valve:
                why = "moisture_rise"
        if why is None or rule.rain_skip_h <= 0:
            return
        new_episode = state["rain_until"] <= t
        state["rain_until"] = max(state["rain_until"], t + rule.rain_skip_h * 3600)
        state["below"] = 0
        self._counters["rule_rain_detected"] += 1
        if new_episode:
            values: dict[str, Any] = {"until": state["rain_until"]}
            if moisture is not None:
                values["moisture"] = moisture
            if rise is not None:
                values["rise"] = round(rise, 4)
            if rain:
                values["rain"] = rain
            records.append(self._event(rule, eui, state, t, "rain", why, values))

    # ------------------------------------------------------------------ deciding

    def _decide(self, rule: WateringRuleLike, eui: str, state: dict[str, Any], now: float,
                records: list[NewRecord], *, count: bool = True) -> CommandRow | None:
        """The valve_open this state calls for (state and event updated), or None (a skip
        reported once per episode when an operator would want to know; counted per reading
        unless ``count`` is False, as on the timer)."""
        if state["below"] < rule.readings:
            return None
        told = state["told"]
        if in_window(now, rule.timezone, rule.hours_start_min, rule.hours_end_min):
            blocker = self._blocker(rule, state, now)
        else:
            blocker = ("outside_hours", "out")
        seconds = 0
        if blocker is None:
            seconds, blocker = self._budget(rule, state)
        if blocker is not None:
            why, episode = blocker
            if count:
                self._counters[f"rule_skip_{why}"] += 1
            if why != "in_flight" and told.get(why) != episode:
                told[why] = episode
                records.append(self._event(rule, eui, state, now, "skip", why, {
                    "moisture": state["m"], "used_s": state["used_s"]}))
            return None
        life = MAX_LIFE_S if state["gap"] is None else min(MAX_LIFE_S,
                                                           max(MIN_LIFE_S, 2 * state["gap"]))
        state["opens"] += 1
        name = _ID_UNSAFE.sub("_", rule.name)
        row = CommandRow(
            cmd_id=f"rule-{name}-{eui}-{state['day']}-{state['opens']}",
            kid=f"rule:{rule.name}", key_name=f"rule:{rule.name}", dev_eui=eui,
            action="valve_open", args={"seconds": seconds}, issued_at=now,
            expires_at=now + life, created_at=now, updated_at=now,
        )
        state["used_s"] += seconds
        state["flow_s"] += seconds
        state["below"] = 0  # the next opening needs a new run of dry readings
        state["watered_at"] = now
        state["busy_until"] = row.expires_at + seconds
        for why in ("budget_time", "budget_volume"):
            told.pop(why, None)
        self._counters["rule_open"] += 1
        records.append(self._event(rule, eui, state, now, "open", "dry", {
            "moisture": state["m"], "seconds": seconds, "used_s": state["used_s"],
            "cmd": row.cmd_id}))
        return row

    @staticmethod
    def _blocker(rule: WateringRuleLike, state: dict[str, Any], now: float
                 ) -> tuple[str, Any] | None:
        """Why the rule may not open now (reason, episode), in the order operators read them."""
        if state["paused_until"] > now:
            return "paused", state["paused_until"]
        if state["override_until"] > now:
            return "operator", state["override_cmd"]
        if state["rain_until"] > now:
            return "rain", state["rain_until"]
        if state["fault"]:
            return "valve_fault", "fault"
        if state["busy_until"] > now:
            return "in_flight", None
        return None

    @staticmethod
    def _budget(rule: WateringRuleLike, state: dict[str, Any]) -> tuple[int, tuple[str, Any] | None]:
        """Seconds to open within today's time and volume budgets, or the budget that is spent."""
        seconds = min(rule.open_s, rule.max_daily_s - state["used_s"])
        limit = "budget_time"
        if rule.max_daily_litres > 0:
            left_l = rule.max_daily_litres - state["used_l"]
            if left_l <= 0:
                return 0, ("budget_volume", state["day"])
            if state["flow_s"] > 0 and state["flow_l"] > 0:
                by_volume = int(left_l * state["flow_s"] / state["flow_l"])  # at the seen flow
                if by_volume < seconds:
                    seconds, limit = by_volume, "budget_volume"
        if seconds < min(MIN_OPEN_S, rule.open_s):
            return 0, (limit, state["day"])
        return seconds, None

    def _housekeep(self, rule: WateringRuleLike, eui: str, state: dict[str, Any], now: float,
                   records: list[NewRecord]) -> None:
        """New local day: budgets start again; a pause or an override that ran out ends; inside
        the window, the next stretch outside it will be told again."""
        if in_window(now, rule.timezone, rule.hours_start_min, rule.hours_end_min):
            state["told"].pop("outside_hours", None)
        day = local_day(now, rule.timezone)
        if day > state["day"]:  # "YYYYMMDD" sorts by date; a late reading never goes back
            state.update(day=day, used_s=0, used_l=0.0, opens=0)
        if state["paused_until"] and state["paused_until"] <= now:
            state["paused_until"] = 0.0
            state["told"].pop("paused", None)
            records.append(self._event(rule, eui, state, now, "resume", "pause_ended", {}))
        if state["override_until"] and state["override_until"] <= now:
            state["override_until"], state["override_cmd"] = 0.0, None

    # ------------------------------------------------------------------ plumbing

    def _matching(self, eui: str, role: str | None) -> list[WateringRuleLike]:
        return [r for r in self._rules.values() if selects(r.devices, eui, role, self._groups)]

    def _role(self, eui: str) -> str | None:
        device = self._store.get_device(eui)
        return None if device is None else device.role

    def _state(self, rule: WateringRuleLike, eui: str) -> dict[str, Any]:
        key = (rule.name, eui)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _fresh_state()
            state["day"] = local_day(self._clock(), rule.timezone)
        return state

    def _event(self, rule: WateringRuleLike, eui: str, state: dict[str, Any], now: float,
               action: str, why: str, values: Mapping[str, Any]) -> NewRecord:
        """The event record ``rule`` (SenML): rule name, action, why, then the values."""
        n = state["ev"]
        state["ev"] = n + 1
        rid = f"{self._gateway_id}:{eui}:rule:{rule.name}:{n}"
        records: list[dict[str, Any]] = [
            {"bn": f"urn:dev:mac:{eui}:", "bt": now, "n": "rule", "vs": rule.name},
            {"n": "action", "vs": action},
            {"n": "why", "vs": why},
        ]
        units = {"moisture": "/", "rise": "/", "seconds": "s", "used_s": "s"}  # until: Unix s
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, str):
                records.append({"n": name, "vs": value})
            else:
                rec = {"n": name, "v": value}
                if name in units:
                    rec["u"] = units[name]
                records.append(rec)
        for rec in records:
            rec["rid"] = rid
        log.info("rule %s %s on %s: %s", rule.name, action, eui, why)
        return NewRecord(rid=rid, dev_eui=eui, kind="event", records=records, priority=1,
                         created_at=now)

    async def _save(self, rule: WateringRuleLike, eui: str, records: list[NewRecord]) -> None:
        """Save the state and its events off the event loop; a sync save (pause, operator)
        that raced with it is written again after, so the latest state is the one kept."""
        key = (rule.name, eui)
        mine = self._saves.get(key, 0) + 1
        self._saves[key] = mine
        snapshot = copy.deepcopy(self._states[key])
        await asyncio.to_thread(self._store.save_rule_state, rule.name, eui, snapshot, records)
        if self._saves[key] != mine:
            self._save_now(rule, eui, [])

    def _save_now(self, rule: WateringRuleLike, eui: str, records: list[NewRecord]) -> None:
        key = (rule.name, eui)
        self._saves[key] = self._saves.get(key, 0) + 1
        self._store.save_rule_state(rule.name, eui, copy.deepcopy(self._states[key]), records)

    async def _send(self, rule: WateringRuleLike, eui: str, row: CommandRow) -> bool:
        """Hand the opening to the dispatcher; if that fails, give its budget back (with an
        event) so the valve is not charged for water it never gave."""
        try:
            await self._submit([row])
            return True
        except Exception as exc:  # noqa: BLE001 - a failing dispatcher must not stop the rules
            log.error("rule %s: could not submit %s for %s: %s", rule.name, row.cmd_id, eui, exc)
            self._counters["rule_submit_failed"] += 1
            state = self._state(rule, eui)
            seconds = row.args["seconds"]
            state["used_s"] = max(0, state["used_s"] - seconds)
            state["flow_s"] = max(0, state["flow_s"] - seconds)
            state["busy_until"] = 0.0
            event = self._event(rule, eui, state, self._clock(), "open_failed",
                                type(exc).__name__, {"cmd": row.cmd_id})
            await self._save(rule, eui, [event])
            return False

    def _operator_change(self, dev_eui: str, action: str, until: float) -> int:
        eui = dev_eui.lower()
        now = self._clock()
        rules = self._matching(eui, self._role(eui))
        for rule in rules:
            state = self._state(rule, eui)
            records: list[NewRecord] = []
            self._housekeep(rule, eui, state, now, records)
            state["paused_until"] = float(until)
            state["told"].pop("paused", None)
            values = {"until": float(until)} if action == "pause" else {}
            records.append(self._event(rule, eui, state, now, action, "operator", values))
            self._save_now(rule, eui, records)
        return len(rules)
