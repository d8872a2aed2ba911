"""Issue 5 end to end: operators' signed commands over MQTT to a district of MicroPython nodes,
and a night without the hypervisor.

Real parts only: a private Mosquitto, the gateway agent (intake, dispatcher, watering rules,
forwarder) on a real SQLite store, OTAA nodes running the real firmware in the MicroPython VM
on register-level chip models, and the control centre using the hypervisor library
(``build_command`` -> ``sign_command`` -> ``publish_command`` -> ``follow``) exactly as
``cityedge hypervisor send`` does. Everything read back is verified against the gateway key.

Virtual time stands still between the phases of a scenario and runs paced (``COMMAND_SPEED``
virtual seconds per wall second) while commands are in flight, so a command's iat/exp (taken
from the gateway's clock, the virtual one) mean what they say; the night runs at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from cityedge.hypervisor import (
    CommandProgress,
    HypervisorMessage,
    StatusUpdate,
    build_command,
    decode_message,
    follow,
    publish_command,
    resolve,
    sign_command,
    subscribe_statuses,
)
from firmware import astro
from gateway.config import (
    CommandsConfig,
    GatewayConfig,
    RulesConfig,
    TrustedKey,
    WateringRule,
)
from gateway.keys import SigningKey
from sim.clock import DEFAULT_EPOCH
from sim.district import mixed_specs
from tests.test_district import MixedDistrict

pytestmark = [pytest.mark.broker, pytest.mark.vm]

PREFIX = "cityedge/v1/test-gw"
STREET = "rue-de-la-republique"
PARK = "parc-jourdan"
UNREGISTERED = "70b3d57ed00000ff"
COMMAND_SPEED = 40.0  # virtual seconds per wall second while commands are in flight
# name -> (actions, devices, commands per minute): what the gateway trusts each key for.
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...], int]] = {
    "control-centre": (("*",), ("*",), 120),
    "police": (("set_interval",), (f"group:{STREET}",), 120),  # reporting intervals, no dimming
    "parks": (("valve_open", "valve_close", "rules_pause", "rules_resume"), ("role:soil",), 1),
}
MAX_VALVE_OPEN_S = 900
# The park's watering rule: early morning, Paris time; two short openings a day at most.
RULE = WateringRule(name=PARK, devices=(f"group:{PARK}",), moisture_below=0.40, readings=2,
                    hours_start_min=4 * 60 + 30, hours_end_min=6 * 60, timezone="Europe/Paris",
                    open_s=120, max_daily_s=240, max_daily_litres=0.0, rain_skip_h=12.0)


def utc(*fields: int) -> float:
    return dt.datetime(*fields, tzinfo=dt.UTC).timestamp()


class CommandDistrict(MixedDistrict):
    """A street of three Class C lighting cabinets and a Class A soil node in a park, their
    gateway trusting three operator keys and running the park's watering rule."""

    def __init__(self, tmp: Path, broker: Any, *, lamps: int = 3, epoch: float = DEFAULT_EPOCH,
                 lamp_interval_s: int = 300, soil_interval_s: int = 120,
                 place: tuple[float, float] | None = None, utc_offset_min: int = 60,
                 rule: WateringRule = RULE) -> None:
        self.epoch = epoch
        self.rule = rule
        self.operator_keys = {name: SigningKey.generate() for name in KEYS}
        self.key_dir = tmp / "operator-keys"
        self.key_dir.mkdir(parents=True)
        specs = mixed_specs(roles=["lighting"] * lamps + ["soil"])
        for spec in specs:
            spec.interval_s = lamp_interval_s if spec.role == "lighting" else soil_interval_s
            spec.location = place or spec.location
            if spec.role == "lighting":
                spec.settings["utc_offset_min"] = utc_offset_min
        self.lamps = [s.dev_eui for s in specs if s.role == "lighting"]
        self.soil = specs[-1].dev_eui
        super().__init__(tmp, broker, specs)
        self.valve_log: list[tuple[float, str]] = []  # (virtual time, "open"/"closed")
        self.valve.listeners.append(lambda state: self.valve_log.append((self.clock.epoch(),
                                                                         state)))

    def configure(self, config: GatewayConfig) -> GatewayConfig:
        trusted = []
        for name, (actions, devices, rate) in KEYS.items():
            path = self.key_dir / f"{name}.pub"
            path.write_bytes(self.operator_keys[name].public_pem())
            trusted.append(TrustedKey(name, path, actions, devices, rate))
        return dataclasses.replace(
            config, commands=CommandsConfig(max_valve_open_s=MAX_VALVE_OPEN_S,
                                            keys=tuple(trusted)),
            groups={STREET: tuple(self.lamps), PARK: (self.soil,)},
            rules=RulesConfig(watering=(self.rule,)))

    @property
    def valve(self) -> Any:
        return self.district.node(self.soil).models["valve"]

    def lamp_level(self, eui: str) -> int:
        """The lamps' level in % as the cabinet's INA219 model sees their current."""
        lamps = self.district.node(eui).models["lamps"]
        return round(100 * lamps()[0] / lamps.full_a)

    def ready(self) -> bool:
        """Every node joined and heard since (a Class C session is confirmed by an uplink)."""
        devices = [self.store.get_device(e) for e in [*self.lamps, self.soil]]
        return all(d is not None and d.dev_addr is not None and d.fcnt_up >= 0 for d in devices)

    async def advance(self, limit_s: float, until: Callable[[], bool] = lambda: False, *,
                      speed: float | None = None, step_s: float = 1.0) -> bool:
        """Run virtual time for at most ``limit_s`` (in steps of ``step_s``, paced at
        ``speed``) until ``until()``; it stands still afterwards. Returns ``until()``."""
        self.clock.speed = speed
        end = self.clock.now_us() + int(limit_s * 1e6)
        while not until() and self.clock.now_us() < end:
            step = min(end, self.clock.now_us() + int(step_s * 1e6))
            await asyncio.to_thread(self.clock.run, step, False)
        return until()

    @contextlib.asynccontextmanager
    async def time_running(self, speed: float | None = COMMAND_SPEED) -> AsyncIterator[None]:
        """Virtual time runs paced inside the block (commands in flight), stands still after."""
        done = asyncio.Event()
        task = asyncio.create_task(self.advance(3600.0, done.is_set, speed=speed))
        try:
            yield
        finally:
            done.set()
            await task


@dataclasses.dataclass
class Sent:
    """A command as sent, and every verified status it got, per target."""

    command: dict[str, Any]
    signed: bytes
    progress: CommandProgress
    updates: list[StatusUpdate]

    def life(self, target: str) -> list[str]:
        return [u.status for u in self.updates if u.target == target]

    def last(self, target: str) -> StatusUpdate:
        return self.progress.latest[target]


class ControlCentre:
    """The hypervisor: a watcher keeping every verified message (a persistent session, so what
    is published while it is away waits for it at the broker) and an operator console that
    signs, publishes and follows commands."""

    def __init__(self, m: CommandDistrict, broker: Any) -> None:
        self.m = m
        self.broker = broker
        self.gateway_keys = {m.key.kid: m.key.public_key}
        self.received: list[HypervisorMessage] = []
        self.console: aiomqtt.Client | None = None

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        ready = asyncio.Event()

        async def watch() -> None:
            async with aiomqtt.Client(self.broker.host, self.broker.port,
                                      identifier="control-centre-watch",
                                      clean_session=False) as client:
                await client.subscribe(f"{PREFIX}/#", qos=1)
                ready.set()
                async for m in client.messages:
                    msg = decode_message(str(m.topic), bytes(m.payload), self.gateway_keys)
                    if msg.kind in ("up", "event", "cmd-status"):
                        self.received.append(msg)

        task = asyncio.create_task(watch())
        await asyncio.wait_for(ready.wait(), 10)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task

    @contextlib.asynccontextmanager
    async def operating(self) -> AsyncIterator[None]:
        async with aiomqtt.Client(self.broker.host, self.broker.port) as client:
            await subscribe_statuses(client, PREFIX, "cmd-group", "+")  # every device's topic
            self.console = client
            try:
                yield
            finally:
                self.console = None

    async def send(self, key: str | SigningKey, action: str, args: dict[str, Any] | None,
                   target: str, *, kind: str = "cmd", cmd_id: str | None = None,
                   issued: float | None = None, expires_in: float = 3600,
                   signed: bytes | None = None, timeout: float = 60) -> Sent:
        """Sign (with a trusted key by name, or any key) and publish a command, then follow it
        until every target has a final status; ``signed`` resends a message as it was."""
        assert self.console is not None
        signer = self.m.operator_keys[key] if isinstance(key, str) else key
        now = self.m.clock.epoch() if issued is None else issued
        command = build_command(action, args, target, kind=kind,  # type: ignore[arg-type]
                                cmd_id=cmd_id, expires_in=expires_in, now=now)
        if signed is None:
            signed = sign_command(signer, command)
        else:
            command = {"id": cmd_id or "", "target": target}
        progress = CommandProgress(kind, target)  # type: ignore[arg-type]
        updates: list[StatusUpdate] = []
        await publish_command(self.console, PREFIX, kind, target, signed)  # type: ignore[arg-type]
        async with asyncio.timeout(timeout):
            async for update in follow(self.console, command["id"], self.gateway_keys,
                                       target=target):
                updates.append(update)
                progress.add(update)
                if progress.done:
                    break
        return Sent(command, signed, progress, updates)



def _in_order(life: list[str], expected: list[str]) -> bool:
    """``expected`` is a subsequence of ``life`` (retries may add a "queued" or a "sent")."""
    it = iter(life)
    return all(status in it for status in expected)


@dataclasses.dataclass
class Entry:
    """One stored record set as the hypervisor reads it (a backlog message joins several)."""

    kind: str
    dev: str
    t: float
    values: dict[str, Any]
    historical: bool


def _entries(received: list[HypervisorMessage]) -> list[Entry]:
    """Every verified message split per rid, with its time, values and backlog mark."""
    out: list[Entry] = []
    for msg in received:
        assert msg.verified, msg.error
        by_rid: dict[str, list[dict[str, Any]]] = {}
        for rec in resolve(msg.records):
            by_rid.setdefault(rec["rid"], []).append(rec)
        for recs in by_rid.values():
            values = {r["n"].rsplit(":", 1)[-1]: r.get("v", r.get("vs", r.get("vb")))
                      for r in recs}
            out.append(Entry(msg.kind, msg.dev_eui or "", recs[0]["t"], values,
                             any(r.get("hist") for r in recs)))
    return out


async def _start(m: CommandDistrict) -> asyncio.Task[None]:
    task = asyncio.create_task(m.agent.run())
    await asyncio.wait_for(m.agent.started.wait(), 10)
    m.district.start()
    assert await m.advance(900, m.ready, step_s=10), "the district did not join"
    await m.advance(120, step_s=30)  # boot-time uplinks (health, first readings) are done
    return task


def test_an_operator_dims_a_street_and_opens_a_valve_and_sees_every_acknowledgement(
        tmp_path: Path, mosquitto: Any) -> None:
    m = CommandDistrict(tmp_path, mosquitto)
    hq = ControlCentre(m, mosquitto)
    valve_opened: dict[str, float] = {}
    stored: dict[str, Any] = {}

    async def scenario() -> tuple[Sent, Sent, Sent]:
        agent = await _start(m)
        try:
            async with hq.operating(), m.time_running():
                street = await hq.send("control-centre", "dim", {"level": 40, "ramp_s": 0},
                                       STREET, kind="cmd-group", cmd_id="op-2026-0001")
                soil_fcnt = m.store.get_device(m.soil).fcnt_up
                valve = await hq.send("control-centre", "valve_open", {"seconds": 60},
                                      m.soil, cmd_id="op-2026-0002", timeout=90)
                valve_opened["fcnt_up"] = soil_fcnt
                # The police console uses the same id for its own command to the same cabinet.
                same_id = await hq.send("police", "set_interval", {"seconds": 600}, m.lamps[0],
                                        cmd_id="op-2026-0001")
            # The valve closes by itself at its deadline (the node's own timer).
            await m.advance(120, lambda: len(m.valve_log) >= 2, speed=None, step_s=5)
            stored.update(valve=m.store.get_commands("op-2026-0002"),
                          same_id=m.store.get_commands("op-2026-0001"),
                          soil=m.store.get_device(m.soil))
            return street, valve, same_id
        finally:
            m.clock.stop()
            agent.cancel()

    try:
        street, valve, same_id = asyncio.run(scenario())
    finally:
        m.close()

    assert not m.errors, m.errors
    # The street: one command, a status stream per cabinet, each acknowledged by the node.
    assert set(street.progress.latest) == set(m.lamps) and street.progress.succeeded
    for lamp in m.lamps:
        life = street.life(lamp)
        assert _in_order(life, ["accepted", "queued", "sent", "acked"]), (lamp, life)
        acked = street.last(lamp)
        assert (acked.answer, acked.group, acked.key) == ("done", STREET, "control-centre")
        assert all(u.kid == m.key.kid.hex() and not u.historical
                   for u in street.updates if u.target == lamp)
        assert m.lamp_level(lamp) == 40, "the lamps are at the commanded level"
    # The valve (Class A): sent only after the soil node's next uplink, then acked.
    life = valve.life(m.soil)
    assert _in_order(life, ["accepted", "queued", "sent", "acked"]), life
    assert valve.last(m.soil).answer == "done"
    [row] = stored["valve"]
    assert row.status == "acked"
    assert stored["soil"].fcnt_up > valve_opened["fcnt_up"]
    assert [state for _, state in m.valve_log] == ["open", "closed"]
    (opened, _), (closed, _) = m.valve_log
    assert closed - opened == pytest.approx(60, abs=2), "closed by the node at its deadline"
    # Two keys, one id, one device: two command rows, two lives, each under its own rid.
    assert same_id.progress.succeeded and same_id.last(m.lamps[0]).key == "police"
    kids = {m.operator_keys[k].kid.hex() for k in ("control-centre", "police")}
    assert {r.kid for r in stored["same_id"] if r.dev_eui == m.lamps[0]} == kids
    rids = {u.rid.rsplit(":", 1)[0] for u in street.updates + same_id.updates
            if u.target == m.lamps[0]}
    assert rids == {f"test-gw:{m.lamps[0]}:cmd:{kid}:op-2026-0001" for kid in kids}


def _tamper(signed: bytes) -> bytes:
    """The same message with the last byte of its signature flipped."""
    return signed[:-1] + bytes([signed[-1] ^ 0x01])


def test_every_refusal_comes_back_over_mqtt_and_nothing_moves(
        tmp_path: Path, mosquitto: Any) -> None:
    m = CommandDistrict(tmp_path, mosquitto)
    hq = ControlCentre(m, mosquitto)
    lamp, soil = m.lamps[0], m.soil
    before: dict[str, Any] = {}

    async def scenario() -> dict[str, Sent]:
        agent = await _start(m)
        sent: dict[str, Sent] = {}
        try:
            async with hq.operating(), m.time_running():
                before.update(levels=[m.lamp_level(e) for e in m.lamps],
                              queued=m.agent.counters["downlink_queued"])
                now = m.clock.epoch()
                ok = await hq.send("control-centre", "dim", {"level": 10}, lamp)
                sent["bad_signature"] = await hq.send(
                    "control-centre", "dim", {"level": 10}, lamp,
                    signed=_tamper(ok.signed), cmd_id=None)
                sent["unknown_key"] = await hq.send(SigningKey.generate(), "dim", {"level": 10},
                                                    lamp)
                sent["not_allowed"] = await hq.send("police", "dim", {"level": 10}, lamp)
                sent["not_allowed/device"] = await hq.send("police", "set_interval",
                                                           {"seconds": 600}, soil)
                pause = await hq.send("parks", "rules_pause", {"hours": 1}, soil)
                sent["rate_limited"] = await hq.send("parks", "rules_resume", None, soil)
                sent["replay"] = await hq.send("parks", "rules_pause", {"hours": 1}, soil,
                                               signed=pause.signed,
                                               cmd_id=pause.command["id"])
                sent["expired"] = await hq.send("control-centre", "dim", {"level": 10}, lamp,
                                                issued=now - 7200, expires_in=600)
                sent["not_yet_valid"] = await hq.send("control-centre", "dim", {"level": 10},
                                                      lamp, issued=now + 3600)
                sent["unknown_device"] = await hq.send("control-centre", "dim", {"level": 10},
                                                       UNREGISTERED)
                sent["not_for_role"] = await hq.send("control-centre", "valve_open",
                                                     {"seconds": 60}, lamp)
                sent["out_of_bounds"] = await hq.send("control-centre", "dim", {"level": 150},
                                                      lamp)
                sent["out_of_bounds/valve"] = await hq.send(
                    "control-centre", "valve_open", {"seconds": MAX_VALVE_OPEN_S + 1}, soil)
                sent["ok"], sent["pause"] = ok, pause
            # Let the district live a while: a refused command would have landed by now.
            await m.advance(120, speed=None, step_s=10)
            before["open"] = m.store.open_commands()
            return sent
        finally:
            m.clock.stop()
            agent.cancel()

    try:
        sent = asyncio.run(scenario())
    finally:
        m.close()

    assert not m.errors, m.errors
    assert sent.pop("ok").progress.succeeded  # the control centre's own dim (level 10)
    assert sent.pop("pause").progress.succeeded  # gateway-local: accepted -> acked
    for name, s in sent.items():
        reason = name.split("/")[0]
        [target] = s.progress.latest
        update = s.progress.latest[target]
        assert (update.status, update.reason) == ("rejected", reason), (name, update)
        assert [u.status for u in s.updates] == ["rejected"], (name, s.updates)
        assert update.kid == m.key.kid.hex()  # signed by the gateway, verified
        assert m.agent.counters[f"command_rejected_{reason}"] >= 1
    assert sent["unknown_device"].progress.latest[UNREGISTERED].target == UNREGISTERED
    assert sent["bad_signature"].updates[0].cmd_id == ""  # refused unread
    # Nothing moved: the one downlink queued is the accepted dim, the only command a node ran;
    # the valve never moved, the lamps are at the calendar's level but the dimmed one.
    assert m.agent.counters["downlink_queued"] == before["queued"] + 1
    ran = {dev: [line for line in lines if "command seq=" in line]
           for dev, lines in m.console.items()}
    assert len(ran[lamp]) == 1 and "dim -> done" in ran[lamp][0], ran
    assert not any(ran[dev] for dev in ran if dev != lamp), ran
    assert m.valve.moves == 0 and m.valve.state == "closed"
    assert [m.lamp_level(e) for e in m.lamps] == [10] + before["levels"][1:]
    assert before["open"] == []


# ----------------------------------------------------------------------------------- the night

# A short summer night by the Gulf of Bothnia (Simo, 65.7 N, EET/EEST): each Class C cabinet
# listens in 100 ms polls, so a lamp costs the simulation a few ms of wall time per virtual
# second; a night of 40 minutes keeps the test short.
PLACE = (65.66, 25.06)
NIGHT_START = utc(2026, 6, 19, 21, 45)  # 00:45 local; a dry night in the simulated weather
NIGHT_END = utc(2026, 6, 19, 22, 50)  # 01:50 local: after dawn and the watering
# Lighting program: full at dusk, half from 01:15 local, off at dawn.
CALENDAR = [{"ref": "dusk", "minutes": 0, "level": 100},
            {"ref": "clock", "minutes": 75, "level": 50},
            {"ref": "dawn", "minutes": 0, "level": 0}]
# The park is watered from 01:00 to 02:00 local: 120 s, then what is left of the 180 s a day.
NIGHT_RULE = dataclasses.replace(RULE, hours_start_min=60, hours_end_min=120,
                                 timezone="Europe/Helsinki", open_s=120, max_daily_s=180)


def test_a_night_without_the_hypervisor_lights_follow_their_calendars_and_the_park_is_watered(
        tmp_path: Path, mosquitto: Any) -> None:
    m = CommandDistrict(tmp_path, mosquitto, lamps=1, epoch=NIGHT_START, lamp_interval_s=150,
                        soil_interval_s=180, place=PLACE, utc_offset_min=120, rule=NIGHT_RULE)
    hq = ControlCentre(m, mosquitto)
    lat, lon = PLACE
    _, _, dusk = astro.sun_times(lat, lon, astro.days_from_civil(2026, 6, 19))
    _, dawn, _ = astro.sun_times(lat, lon, astro.days_from_civil(2026, 6, 20))
    dusk += utc(2026, 6, 19)
    dawn += utc(2026, 6, 20)  # before midnight UTC: a negative time of day
    one = utc(2026, 6, 19, 22, 15)  # 01:15 local
    assert NIGHT_START + 600 < dusk < one < dawn < NIGHT_END - 300
    samples = {dusk - 240: 0, dusk + 300: 100, one + 300: 50, dawn - 240: 50, dawn + 240: 0}
    lamp = m.lamps[0]
    seen: dict[float, int] = {}
    cut: dict[str, float] = {}

    async def scenario() -> Sent:
        agent = await _start(m)
        try:
            async with hq.watching():
                async with hq.operating(), m.time_running():
                    calendar = await hq.send("control-centre", "calendar", {"points": CALENDAR},
                                             STREET, kind="cmd-group", cmd_id="night-program")
                for at in samples:
                    m.clock.call_at(int((at - m.clock.epoch0) * 1e6),
                                    lambda at=at: seen.__setitem__(at, m.lamp_level(lamp)))
                await asyncio.sleep(1.0)  # what was published before the cut has arrived
                cut["at"] = m.clock.epoch()
                cut["received"] = len(hq.received)
            mosquitto.stop()
            m.agent.forwarder.backoff.cap = 2.0  # back within 2 s (wall) of the broker's return
            assert await m.advance(NIGHT_END - m.clock.epoch(), speed=None, step_s=600) is False
            cut["back"] = m.clock.epoch()
            pending = m.store.count()
            assert pending > 0, "the night's records wait in the store"
            mosquitto.start()
            async with hq.watching():
                for _ in range(600):  # the forwarder reconnects with its backoff
                    if m.store.count() == 0:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
            return calendar
        finally:
            m.clock.stop()
            agent.cancel()

    try:
        calendar = asyncio.run(scenario())
    finally:
        m.close()

    assert not m.errors, m.errors
    assert calendar.progress.succeeded, calendar.updates
    assert m.district.concentrator.hold_timeouts == 0
    # The lamps followed the commanded program through the night (chip models).
    assert seen == samples, seen
    night = _entries(hq.received[cut["received"]:])  # every one signature-verified
    # ... and so say the cabinet's uplinks, buffered through the night and marked historical.
    ups = [e for e in night if e.kind == "up" and e.dev == lamp and "level" in e.values]
    assert ups and all(e.historical for e in ups)
    assert all(cut["at"] < e.t < cut["back"] for e in ups)
    for lo, hi, level in ((cut["at"], dusk - 30, 0.0), (dusk + 60, one - 30, 1.0),
                          (one + 60, dawn - 30, 0.5), (dawn + 60, cut["back"], 0.0)):
        levels = [e.values["level"] for e in ups if lo < e.t < hi]
        assert levels and all(v == pytest.approx(level) for v in levels), (lo, hi, levels)
    # The watering rule opened the valve in its hours, within its daily budget, and said why.
    events = [e for e in night if e.kind == "event" and e.dev == m.soil and "rule" in e.values]
    assert events and all(e.historical for e in events)
    opens = [e.values for e in events if e.values["action"] == "open"]
    assert [(e["why"], e["seconds"]) for e in opens] == [("dry", 120), ("dry", 60)], events
    assert any(e.values["action"] == "skip" and e.values["why"] == "budget_time"
               for e in events), events
    start, end = utc(2026, 6, 19, 22), utc(2026, 6, 19, 23)  # the rule's hours, UTC
    opened = [t for t, state in m.valve_log if state == "open"]
    assert len(opened) == 2 and all(start <= t <= end for t in opened), m.valve_log
    durations = [b - a for (a, sa), (b, sb) in zip(m.valve_log, m.valve_log[1:], strict=False)
                 if (sa, sb) == ("open", "closed")]
    assert durations == [pytest.approx(120, abs=2), pytest.approx(60, abs=2)], m.valve_log
    # The rule's commands went the operators' way; their statuses arrived with the history.
    lives: dict[str, list[str]] = {}
    for e in night:
        if e.kind == "cmd-status" and e.dev == m.soil:
            assert e.values["key"] == f"rule:{PARK}" and e.historical, e
            lives.setdefault(str(e.values["cmd"]), []).append(str(e.values["status"]))
    assert len(lives) == 2 and all(_in_order(life, ["accepted", "queued", "sent", "acked"])
                                   for life in lives.values()), lives
