"""Issue 3's proof, one district run: each role lives through boot, join, cycles, a command and a
reboot, and the gateway's network side keeps accepting what it sends.

Air, noise, soil and lighting nodes (the real firmware in the real MicroPython VM on register-level
models of their chips) join over the air through the agent's join server. After three readings
decoded by the gateway each gets the command of its role, acknowledged "done" on FPort 30, then a
reboot: the ``reboot`` command (air, and soil in the middle of its watering) or a power cut (noise
during its deep sleep, the lighting cabinet during its override). Everything is judged on what the
network side accepted and decoded (each frame through ``NetworkSide.handle``): no rejoin, every
counter above the ones used before the reboot and no frame rejected, the health uplink naming the
reset, and the command's effect or safety across the reboot: the commanded interval spacing the
readings, the valve closed at the new boot (never open past its deadline), the cabinet back on
its calendar once the power returns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from gateway.lorawan.join import JoinGranted
from gateway.lorawan.network import Rejection
from gateway.store.model import Accepted
from protocol.payload import encode_command
from sim.district import mixed_specs
from tests.test_district import MixedDistrict, Published

pytestmark = [pytest.mark.broker, pytest.mark.vm]

INTERVAL_S = 60
NEW_INTERVAL_S = 180  # set_interval for air and noise: must show in the spacing after the reboot
VALVE_S = 240  # valve_open for soil: the deadline falls long after the reboot
CYCLES = 3  # readings the gateway decodes before the command
AFTER = 2  # readings it must decode after the reboot
READING_KEY = {"air": "pm2_5", "noise": "laeq", "soil": "soil_moisture", "lighting": "level"}
SEQ = {"air": (31, 32), "noise": (41,), "soil": (51, 52), "lighting": (61,)}
POWER_OFF_S = 10
RUN_S = 1500  # virtual seconds at most; the run ends once every node has shown its new boot


@dataclass
class Up:
    """One uplink the network side accepted: virtual instant, 32-bit counter, decoded values."""

    t_us: int
    fcnt: int
    values: dict[str, Any]


def _values(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {r["n"]: r[k] for r in records if "n" in r for k in ("v", "vs", "vb") if k in r}


class Judge:
    """Records every verdict of the agent's network side, per device, in virtual time."""

    def __init__(self, m: MixedDistrict) -> None:
        self.ups: dict[str, list[Up]] = {}
        self.joins: Counter[str] = Counter()
        self.rejections: list[tuple[str | None, str, str]] = []
        network = m.agent.network
        handle = network.handle

        def judged(frame: Any) -> Any:
            result = handle(frame)
            if isinstance(result, Accepted):
                self.ups.setdefault(result.dev_eui, []).append(
                    Up(m.clock.now_us(), result.fcnt_up, _values(result.records or [])))
            elif isinstance(result, JoinGranted):
                self.joins[result.dev_eui] += 1
            elif isinstance(result, Rejection):
                self.rejections.append((result.dev_eui, result.reason, result.detail))
            return result

        network.handle = judged  # type: ignore[method-assign]

    def readings(self, dev: str, role: str) -> list[Up]:
        return [u for u in self.ups.get(dev, []) if READING_KEY[role] in u.values]

    def ack(self, dev: str, seq: int) -> Up | None:
        return next((u for u in self.ups.get(dev, []) if u.values.get("cmd_seq") == seq), None)

    def boots(self, dev: str) -> list[Up]:
        """The health uplinks, one per boot that was not a deep-sleep wake."""
        return [u for u in self.ups.get(dev, []) if "reset_cause" in u.values]


@dataclass
class Life:
    """Where one node is in its scenario."""

    role: str
    dev: str
    queued_us: int | None = None
    reboot_us: int | None = None  # power cut, or the reboot command's acknowledgement
    handles: list[Any] = field(default_factory=list)

    def new_boot(self, judge: Judge) -> Up | None:
        """The health uplink that opens the boot after the reboot."""
        if self.reboot_us is None:
            return None
        return next((u for u in judge.boots(self.dev) if u.t_us > self.reboot_us), None)

    def after(self, judge: Judge) -> list[Up]:
        """Readings decoded after that health uplink."""
        boot = self.new_boot(judge)
        if boot is None:
            return []
        return [u for u in judge.readings(self.dev, self.role) if u.t_us > boot.t_us]

    def done(self, judge: Judge) -> bool:
        return len(self.after(judge)) >= AFTER


def _commands(role: str) -> list[dict[str, Any]]:
    """The role's command, then (air, soil) the reboot; Class A: one per uplink, in order."""
    if role == "lighting":
        return [{"cmd": "dim", "seq": SEQ[role][0], "level": 40, "ramp_s": 0, "expiry_min": 30}]
    if role == "soil":
        return [{"cmd": "valve_open", "seq": SEQ[role][0], "seconds": VALVE_S},
                {"cmd": "reboot", "seq": SEQ[role][1]}]
    cmds: list[dict[str, Any]] = [
        {"cmd": "set_interval", "seq": SEQ[role][0], "seconds": NEW_INTERVAL_S}]
    if role == "air":
        cmds.append({"cmd": "reboot", "seq": SEQ[role][1]})
    return cmds


def test_every_role_survives_a_reboot_and_the_gateway_keeps_accepting_it(
    tmp_path: Path, mosquitto
) -> None:
    specs = mixed_specs(roles=["air", "noise", "soil", "lighting"], interval_s=INTERVAL_S)
    m = MixedDistrict(tmp_path, mosquitto, specs)
    judge = Judge(m)
    lives = {s.role: Life(s.role, s.dev_eui) for s in specs}
    network = m.agent.network

    def power_cycle(dev: str) -> None:
        board = m.district.node(dev).board
        m.clock.call_later(5_000_000, board.power_cut)
        m.clock.call_later((5 + POWER_OFF_S) * 1_000_000, board.start)

    def step() -> None:
        """After each processed uplink (virtual time held): move every node's scenario on."""
        for life in lives.values():
            if life.queued_us is None and len(judge.readings(life.dev, life.role)) >= CYCLES:
                life.queued_us = m.clock.now_us()
                for cmd in _commands(life.role):
                    life.handles.append(network.queue_downlink(life.dev, 40, encode_command(cmd)))
            if life.role == "lighting" and any(h.status == "queued" for h in life.handles):
                # Class C: the network side sends it once the last uplink's windows have closed;
                # virtual time stands still while it hands it to the concentrator
                m.hold_until(lambda hs=life.handles: all(h.status != "queued" for h in hs))
            if life.reboot_us is not None or life.queued_us is None:
                continue
            last = judge.ack(life.dev, SEQ[life.role][-1])
            if last is None:
                continue
            if life.role == "noise":  # power gone while it deep-sleeps
                life.reboot_us = m.clock.now_us()
                power_cycle(life.dev)
            elif life.role == "lighting":  # power gone while the override is in force
                seen = [u for u in judge.readings(life.dev, "lighting") if u.t_us > last.t_us]
                if seen and seen[-1].values.get("level_source") == "override":
                    life.reboot_us = m.clock.now_us()
                    power_cycle(life.dev)
            else:  # air, soil: the reboot command's acknowledgement is the last word before it
                life.reboot_us = last.t_us

    def guarded() -> None:
        try:
            step()
        except Exception as exc:  # the agent's receive loop would end silently
            m.errors.append(exc)
            raise

    m.hooks.append(guarded)

    def done(_got: list[Published]) -> bool:
        return all(life.done(judge) for life in lives.values())

    try:
        got = m.run_collecting(mosquitto, done, seconds=RUN_S, timeout=100)
    finally:
        m.close()

    assert not m.errors, m.errors
    progress = [(life.role, len(judge.readings(life.dev, life.role)), life.queued_us,
                 life.reboot_us, m.district.node(life.dev).board.reset_causes)
                for life in lives.values()]
    assert done(got), f"at {m.clock.now_s():.0f} s (role, readings, queued, reboot, resets): " \
        f"{progress}; rejected: {judge.rejections}"
    # The network side rejected nothing: no replayed or reused counter, no rejoin needed.
    assert judge.rejections == [], judge.rejections
    assert m.agent.counters["rejected_replay"] == 0
    assert dict(judge.joins) == {life.dev: 1 for life in lives.values()}, "a reboot rejoined"
    published = {(p.dev, p.values.get("fcnt")) for p in got if p.kind == "up"}

    for life in lives.values():
        dev, role = life.dev, life.role
        ups = judge.ups[dev]
        fcnts = [u.fcnt for u in ups]
        assert fcnts == sorted(set(fcnts)), f"{role}: a counter went back or was reused: {fcnts}"
        before = [u for u in ups if life.reboot_us is not None and u.t_us <= life.reboot_us]
        after = [u for u in ups if life.reboot_us is not None and u.t_us > life.reboot_us]
        assert len(judge.readings(dev, role)) - len(life.after(judge)) >= CYCLES
        for seq in SEQ[role]:
            ack = judge.ack(dev, seq)
            assert ack is not None and ack.values["cmd_result"] == "done", (role, seq, ack)
            assert ack.t_us <= life.reboot_us  # type: ignore[operator]
        # (the first boot's health uplink may be lost: the gateway cannot hear while it sends
        # the other nodes' join-accepts)
        assert {u.values["reset_cause"] for u in judge.boots(dev) if u in before} <= {"power_on"}
        cut = role in ("noise", "lighting")
        assert after[0] is life.new_boot(judge), f"{role}: the health uplink opens the new boot"
        assert after[0].values["reset_cause"] == ("power_on" if cut else "hard"), role
        first_after = after[0].fcnt
        if cut:  # no RTC memory after a power cut: resumes at the flash reservation ahead
            assert before[-1].fcnt < first_after <= before[-1].fcnt + 32, (role, fcnts)
        else:  # exact counters kept in RTC memory across the reset: none skipped
            assert first_after == before[-1].fcnt + 1, (role, fcnts)
        assert (dev, after[-1].fcnt) in published, f"{role}: not published after the reboot"

    # The commanded interval (kept on flash) spaces the readings after the reboot.
    for role in ("air", "noise"):
        life = lives[role]
        early = judge.readings(life.dev, role)[:CYCLES]
        late = life.after(judge)
        assert all(b.t_us - a.t_us < 0.95 * NEW_INTERVAL_S * 1e6
                   for a, b in pairwise(early)), role
        gaps = [b.t_us - a.t_us for a, b in pairwise(late)]
        assert gaps and all(g >= 0.95 * NEW_INTERVAL_S * 1e6 for g in gaps), (role, gaps)

    # Soil: the valve opened on command; the reboot came in the middle of the watering and the
    # node closed the valve first thing at the new boot (machine.reset() is a HARD_RESET, which the
    # role does not trust to have kept its clock), long before the deadline; it stayed closed.
    soil = lives["soil"]
    valve = m.district.node(soil.dev).models["valve"]
    moved = [(p.direction, p.start_us) for p in valve.pulses if p.moved]
    assert [d for d, _ in moved] == ["open", "close"], valve.pulses
    (_, opened), (_, closed) = moved
    assert opened < judge.ack(soil.dev, SEQ["soil"][0]).t_us < soil.reboot_us  # type: ignore
    assert soil.reboot_us < closed < soil.new_boot(judge).t_us  # type: ignore
    assert closed <= opened + VALVE_S * 1_000_000
    assert {u.values["valve"] for u in soil.after(judge)} == {"closed"}
    assert valve.state == "closed"

    # Lighting: dimmed to 40 % by the override, back on its calendar (night: 100 %) after the
    # power cut, as the role promises ("a reboot ends an override").
    light = lives["lighting"]
    levels = [(u.values["level"], u.values.get("level_source"))
              for u in judge.readings(light.dev, "lighting")]
    assert levels[CYCLES - 1] == (pytest.approx(1.0), "calendar"), levels
    assert (pytest.approx(0.4), "override") in levels, levels
    assert {src for _, src in levels[-AFTER:]} == {"calendar"}, levels
    assert levels[-1][0] == pytest.approx(1.0), levels
    lamps = m.district.node(light.dev).models["lamps"]
    assert lamps()[0] == pytest.approx(lamps.full_a, rel=0.1), "lamps back at full"
