"""Command intake with real keys, a real store and a clock the test moves: every rejection
reason is produced, and a refused command leaves no command row, only its "rejected" status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.commands import REJECTION_REASONS
from gateway.commands.actions import ACTIONS, ALL_ROLES, to_node_command
from gateway.commands.intake import Accepted, Intake, Rejected
from gateway.keys import SigningKey
from gateway.registry import ROLES
from gateway.store import Store
from gateway.store.commands import ReplayError
from protocol.payload import decode_command, encode_command
from tests.fixtures.commands import (
    AIR,
    GW,
    LAMP1,
    LAMP2,
    NOW,
    SOIL,
    UNREGISTERED,
    Gateway,
    command,
    make_config,
    open_gateway,
    sign,
    write_public_key,
)


def _flip_last(message: bytes) -> bytes:
    """The message with the last byte of its signature changed (always a different byte)."""
    return message[:-1] + bytes([message[-1] ^ 0x01])



@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(tmp_path, commands={"device_rate_per_minute": 6})
    yield g
    g.store.close()


def rejected(gw: Gateway, result: Accepted | Rejected, reason: str) -> Rejected:
    """Assert ``result`` is a rejection for ``reason`` that stored no command row and exactly
    one status record, "rejected" with that reason; count it."""
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result
    assert result.reason in REJECTION_REASONS
    assert gw.counters[f"command_rejected_{reason}"] >= 1
    assert (gw.rows_added, gw.records_added) == (0, 1)
    last = gw.statuses()[-1]
    assert (last["status"], last["reason"]) == ("rejected", reason)
    assert last["detail"] == result.detail[:200]
    return result


def accepted(result: Accepted | Rejected) -> Accepted:
    assert isinstance(result, Accepted), result
    return result


# ------------------------------------------------------------------------- accepted


def test_a_valid_dim_is_accepted_with_normalised_arguments(gw: Gateway) -> None:
    result = accepted(gw.submit(command(args={"level": 40, "for_min": 30})))
    (row,) = result.rows
    assert (row.cmd_id, row.dev_eui, row.action, row.args) == (
        "c1", LAMP1, "dim", {"level": 40, "for_min": 30})
    assert row.kid == gw.operator.kid.hex() and row.key_name == "control-centre"
    assert (row.issued_at, row.expires_at, row.group) == (NOW, NOW + 600, None)
    (stored,) = gw.store.open_commands()
    assert stored.node_seq == 0 and stored.status == "accepted"
    (status,) = gw.statuses()
    assert status["status"] == "accepted" and status["topic_level"] == LAMP1
    assert gw.counters["command_accepted"] == 1


def test_a_group_command_fans_out_one_row_per_member(gw: Gateway) -> None:
    result = accepted(gw.submit(command(target="street"), kind="cmd-group"))
    assert [(r.dev_eui, r.group) for r in result.rows] == [(LAMP1, "street"), (LAMP2, "street")]
    assert [s["topic_level"] for s in gw.statuses()] == [LAMP1, LAMP2]
    assert {s["group"] for s in gw.statuses()} == {"street"}


def test_a_restricted_key_may_do_what_it_is_allowed(gw: Gateway) -> None:
    accepted(gw.submit(command(action="valve_open", args={"seconds": 1800}, target=SOIL),
                       key=gw.keys["parks"]))


def test_two_keys_may_use_the_same_id_for_one_device_and_both_lives_are_kept(
        gw: Gateway) -> None:
    valve = command("op-1", action="valve_open", args={"seconds": 60}, target=SOIL)
    first = accepted(gw.submit(valve))
    assert (gw.rows_added, gw.records_added) == (1, 1)
    second = accepted(gw.submit(valve, key=gw.keys["parks"]))
    assert (gw.rows_added, gw.records_added) == (1, 1), "the second key's status is stored too"
    kids = {first.rows[0].kid, second.rows[0].kid}
    assert kids == {gw.operator.kid.hex(), gw.keys["parks"].kid.hex()}
    assert {r.kid for r in gw.store.get_commands("op-1")} == kids
    pending = [r for r in gw.store.pending(100) if r.kind == "cmd-status"]
    assert sorted(r.rid for r in pending) == sorted(
        f"{GW}:{SOIL}:cmd:{kid}:op-1:0" for kid in kids)
    assert {s["key"] for s in gw.statuses()} == {"control-centre", "parks"}


def test_rules_pause_is_local_with_a_default_duration(gw: Gateway) -> None:
    (row,) = accepted(gw.submit(command(action="rules_pause", target=SOIL))).rows
    assert row.args == {"hours": 24}
    assert gw.store.open_commands()[0].node_seq is None
    with pytest.raises(ValueError, match="carried out by the gateway"):
        to_node_command("rules_pause", row.args, 0)


def test_clock_skew_is_allowed_both_ways(gw: Gateway) -> None:
    accepted(gw.submit(command("early", iat=NOW + 60, exp=NOW + 120)))
    gw.clock.now = NOW + 600 + 60
    accepted(gw.submit(command("late", iat=NOW, exp=NOW + 600)))


# ------------------------------------------------------------------------- rejections, in order


@pytest.mark.parametrize("body", [
    "not a map",
    [1, 2, 3],
    {1: "integer keys"},
    command(extra_key=1),
    {k: v for k, v in command().items() if k != "exp"},
    command(cmd_id=""),
    command(cmd_id="has space"),
    command(cmd_id="x" * 65),
    command(action=7),
    command(args=[1]),
    command(iat="yesterday"),
    command(exp=float("nan")),
    command(iat=True),
    command(target=LAMP2),
    command(exp=NOW),  # exp <= iat
    command(exp=NOW + 86_401),  # longer than max_lifetime_s
    command(args={"level": "high"}),
    command(args={"level": 40, "colour": "red"}),
    command(args={}),  # level is required
    command(action="switch", args={"on": 1}),
    command(action="calendar", args={"points": [{"ref": "noon", "minutes": 0, "level": 1}]}),
], ids=repr)
def test_malformed_messages_are_rejected(gw: Gateway, body: object) -> None:
    rejected(gw, gw.submit(body, target=LAMP1), "malformed")


@pytest.mark.parametrize("payload", [b"", b"\xff\x00", b"\xd2\x84\x40\xa0\xf6\x40",
                                     bytes.fromhex("a10102")])
def test_bytes_that_are_not_cose_sign1_are_malformed(gw: Gateway, payload: bytes) -> None:
    r = rejected(gw, gw.submit_raw(payload), "malformed")
    assert r.cmd_id is None and r.kid is None


def test_content_type_other_than_cbor_is_malformed(gw: Gateway) -> None:
    rejected(gw, gw.submit_raw(sign(gw.operator, command(), content_type=112)), "malformed")


def test_a_key_the_gateway_does_not_trust_is_unknown(gw: Gateway) -> None:
    rejected(gw, gw.submit(command(), key=SigningKey.generate()), "unknown_key")


def test_without_configured_keys_every_command_is_unknown_key(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path, key_entries=[])
    try:
        rejected(gw, gw.submit(command()), "unknown_key")
    finally:
        gw.store.close()


def test_an_altered_message_has_a_bad_signature(gw: Gateway) -> None:
    payload = bytearray(sign(gw.operator, command()))
    payload[-1] ^= 0x01  # last byte of the signature
    rejected(gw, gw.submit_raw(bytes(payload)), "bad_signature")
    # another key's signature under the operator's kid
    other = SigningKey.generate()
    forged = sign(other, command()).replace(b"\xa1\x04\x48" + other.kid,
                                            b"\xa1\x04\x48" + gw.operator.kid)
    rejected(gw, gw.submit_raw(forged), "bad_signature")


def test_expired_and_not_yet_valid(gw: Gateway) -> None:
    gw.clock.now = NOW + 600 + 61
    rejected(gw, gw.submit(command("old")), "expired")
    gw.clock.now = NOW
    rejected(gw, gw.submit(command("future", iat=NOW + 61, exp=NOW + 600)), "not_yet_valid")


def test_a_replayed_id_is_refused_even_after_a_restart(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path)
    payload = sign(gw.operator, command())
    accepted(gw.submit_raw(payload))
    rejected(gw, gw.submit_raw(payload), "replay")
    # a different command under a used id is a replay too
    rejected(gw, gw.submit(command(args={"level": 90})), "replay")
    config = gw.intake.config
    gw.store.close()
    with Store.open(tmp_path / "cityedge.db") as store:
        again = Gateway(store, Intake(config, store, gw.counters, clock=gw.clock), gw.counters,
                        gw.clock, gw.operator)
        rejected(again, again.submit_raw(payload), "replay")
        assert len(store.get_commands("c1")) == 1  # only the first, accepted one
        # the same id from another key is its own command
        assert store.admit_command_id("another-kid", "c1", NOW + 660)


def test_intake_only_reads_the_replay_table_and_the_store_lets_one_of_a_race_through(
        gw: Gateway) -> None:
    payload = sign(gw.operator, command("race"))
    first, second = (gw.intake.check("cmd", LAMP1, payload) for _ in range(2))
    assert isinstance(first, Accepted) and isinstance(second, Accepted)  # both before storing
    assert first.admit == (first.rows[0].kid, "race", NOW + 600 + 60)
    assert not gw.store.command_id_seen(first.rows[0].kid, "race")
    gw.store.add_commands(first.rows, [], admit=first.admit)
    with pytest.raises(ReplayError):
        gw.store.add_commands(second.rows, [], admit=second.admit)
    assert len(gw.store.get_commands("race")) == 1
    rejected(gw, gw.submit_raw(payload), "replay")


def test_a_command_refused_after_the_replay_check_spends_its_id(gw: Gateway) -> None:
    r = rejected(gw, gw.submit(command("once", args={"level": 101})), "out_of_bounds")
    assert r.admit is not None
    rejected(gw, gw.submit(command("once")), "replay")  # corrected, but the id is spent
    early = rejected(gw, gw.submit(command("later", iat=NOW + 300, exp=NOW + 900)),
                     "not_yet_valid")
    assert early.admit is None  # refused before the replay check: the id stays free
    accepted(gw.submit(command("later")))


@pytest.mark.parametrize(("kind", "target"), [
    ("cmd", UNREGISTERED), ("cmd", LAMP1.upper()), ("cmd", "not-an-eui"),
    ("cmd-group", "no-such-group"), ("cmd-group", "ghosts"),
])
def test_unknown_devices_and_groups(gw: Gateway, kind: str, target: str) -> None:
    r = rejected(gw, gw.submit(command(target=target), kind=kind), "unknown_device")
    assert gw.statuses()[-1]["topic_level"] == target.lower()
    assert r.key_name == "control-centre" and r.cmd_id == "c1"


def test_unknown_action(gw: Gateway) -> None:
    rejected(gw, gw.submit(command(action="launch", args={})), "unknown_action")


@pytest.mark.parametrize(("kind", "body"), [
    ("cmd", command(action="valve_open", args={"seconds": 60}, target=LAMP1)),
    ("cmd", command(action="dim", target=AIR)),
    ("cmd-group", command(action="dim", target="mixed")),  # one member is a soil node
])
def test_an_action_the_role_lacks(gw: Gateway, kind: str, body: dict) -> None:
    rejected(gw, gw.submit(body, kind=kind), "not_for_role")


def test_a_key_outside_its_authority_is_not_allowed(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path, key_entries=[
        {"name": "control-centre", "public_key": "operator.pub", "actions": ["dim"],
         "devices": [LAMP1]},
        {"name": "parks", "public_key": "parks.pub", "actions": ["valve_open", "valve_close"],
         "devices": ["role:soil"]},
    ])
    try:
        rejected(gw, gw.submit(command("a", action="reboot", args=None)), "not_allowed")
        rejected(gw, gw.submit(command("b", target=LAMP2)), "not_allowed")
        # a group: every member must be allowed (LAMP2 is not)
        rejected(gw, gw.submit(command("c", target="street"), kind="cmd-group"), "not_allowed")
        rejected(gw, gw.submit(command("d", action="valve_open", args={"seconds": 9},
                                       target=SOIL)), "not_allowed")
        # the parks key may water but not dim
        rejected(gw, gw.submit(command("e", target=LAMP1), key=gw.keys["parks"]), "not_allowed")
        accepted(gw.submit(command("f", target=LAMP1)))
    finally:
        gw.store.close()


@pytest.mark.parametrize("body", [
    command(args={"level": 101}),
    command(args={"level": -1}),
    command(args={"level": 50, "ramp_s": 256}),
    command(args={"level": 50, "for_min": 10081}),
    command(args={"level": 50, "for_min": 0}),
    command(action="valve_open", args={"seconds": 1801}, target=SOIL),
    command(action="valve_open", args={"seconds": 0}, target=SOIL),
    command(action="set_interval", args={"seconds": 59}, target=AIR),
    command(action="rules_pause", args={"hours": 721}, target=SOIL),
    command(action="calendar", args={"points": []}),
    command(action="calendar", args={"points": [{"ref": "clock", "minutes": 1440,
                                                 "level": 10}]}),
    command(action="calendar", args={"points": [{"ref": "dusk", "minutes": -721,
                                                 "level": 10}]}),
    command(action="calendar", args={"points": [{"ref": "dawn", "minutes": 0,
                                                 "level": 10}] * 17}),
], ids=repr)
def test_arguments_out_of_bounds(gw: Gateway, body: dict) -> None:
    r = rejected(gw, gw.submit(body), "out_of_bounds")
    assert "allowed" in r.detail


def test_the_valve_bound_comes_from_the_config(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path, commands={"max_valve_open_s": 600})
    try:
        r = rejected(gw, gw.submit(command("a", action="valve_open", args={"seconds": 601},
                                           target=SOIL)), "out_of_bounds")
        assert "1..600" in r.detail
        accepted(gw.submit(command("b", action="valve_open", args={"seconds": 600},
                                   target=SOIL)))
    finally:
        gw.store.close()


def test_the_device_rate_limit_is_a_token_bucket(gw: Gateway) -> None:
    for n in range(6):
        accepted(gw.submit(command(f"c{n}")))
    rejected(gw, gw.submit(command("c6")), "rate_limited")
    accepted(gw.submit(command("other", target=LAMP2)))  # per device
    gw.clock.now += 10  # 6 a minute: one token back every 10 s
    accepted(gw.submit(command("c7")))
    rejected(gw, gw.submit(command("c8")), "rate_limited")


def test_a_group_takes_a_token_from_every_member_or_none(gw: Gateway) -> None:
    for n in range(6):
        accepted(gw.submit(command(f"c{n}", target=LAMP2)))
    r = rejected(gw, gw.submit(command("g", target="street"), kind="cmd-group"), "rate_limited")
    assert LAMP2 in r.detail
    for n in range(6):  # LAMP1's bucket was left untouched
        accepted(gw.submit(command(f"d{n}", target=LAMP1)))


def test_the_key_rate_limit(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path, key_entries=[
        {"name": "control-centre", "public_key": "operator.pub", "actions": ["*"],
         "devices": ["*"], "rate_per_minute": 2},
    ])
    try:
        accepted(gw.submit(command("a", target=LAMP1)))
        accepted(gw.submit(command("b", target=LAMP2)))
        r = rejected(gw, gw.submit(command("c", target=SOIL, action="reboot")), "rate_limited")
        assert "control-centre" in r.detail
        gw.clock.now += 30
        accepted(gw.submit(command("d", target=SOIL, action="reboot")))
    finally:
        gw.store.close()


def test_reload_replaces_the_trusted_keys(gw: Gateway, tmp_path: Path) -> None:
    newcomer = SigningKey.generate()
    write_public_key(tmp_path, "newcomer", newcomer)

    gw.intake.reload(make_config(tmp_path, [
        {"name": "newcomer", "public_key": "newcomer.pub", "actions": ["*"], "devices": ["*"]}]))
    rejected(gw, gw.submit(command("a")), "unknown_key")
    accepted(gw.submit(command("b"), key=newcomer))


# ------------------------------------------------------------------------- actions


@pytest.mark.parametrize(("action", "args", "expected"), [
    ("dim", {"level": 40, "ramp_s": 5, "for_min": 30},
     {"cmd": "dim", "level": 40, "ramp_s": 5, "expiry_min": 30}),
    ("dim", {"level": 0}, {"cmd": "dim", "level": 0}),
    ("switch", {"on": True, "for_min": 60}, {"cmd": "switch", "on": True, "expiry_min": 60}),
    ("calendar", {"points": [{"ref": "dusk", "minutes": -15, "level": 100},
                             {"ref": "clock", "minutes": 1380, "level": 30},
                             {"ref": "dawn", "minutes": 20, "level": 0}]},
     {"cmd": "calendar", "points": [{"ref": "dusk", "minutes": -15, "level": 100},
                                    {"ref": "clock", "minutes": 1380, "level": 30},
                                    {"ref": "dawn", "minutes": 20, "level": 0}]}),
    ("valve_open", {"seconds": 1800}, {"cmd": "valve_open", "seconds": 1800}),
    ("valve_close", {}, {"cmd": "valve_close"}),
    ("set_interval", {"seconds": 900}, {"cmd": "set_interval", "seconds": 900}),
    ("reboot", {}, {"cmd": "reboot"}),
])
def test_node_commands_encode_for_fport_40(gw: Gateway, action: str, args: dict,
                                           expected: dict) -> None:
    checked = ACTIONS[action].check_args(args, gw.intake.config.commands)
    cmd = to_node_command(action, checked, 201)
    assert cmd == {**expected, "seq": 201}
    assert decode_command(encode_command(cmd)) == cmd


def test_the_action_table_knows_every_node_role() -> None:
    assert frozenset(ROLES) == ALL_ROLES
    assert {a.node_command for a in ACTIONS.values()} - {None} <= {
        "dim", "switch", "calendar", "valve_open", "valve_close", "set_interval", "reboot"}


def test_every_rejection_reason_comes_out_in_order_of_the_checks(gw: Gateway) -> None:
    """One command per reason, each failing exactly the check that names it."""
    stranger = SigningKey.generate()
    attempts = {
        "malformed": lambda: gw.submit_raw(b"not cbor"),
        "unknown_key": lambda: gw.submit(command("k"), key=stranger),
        "bad_signature": lambda: gw.submit_raw(_flip_last(sign(gw.operator, command("s")))),
        "expired": lambda: gw.submit(command("e", iat=NOW - 900, exp=NOW - 300)),
        "not_yet_valid": lambda: gw.submit(command("n", iat=NOW + 300, exp=NOW + 900)),
        "replay": lambda: (gw.submit(command("r")), gw.submit(command("r")))[1],
        "unknown_device": lambda: gw.submit(command("u", target=UNREGISTERED)),
        "unknown_action": lambda: gw.submit(command("a", action="launch", args={})),
        "not_for_role": lambda: gw.submit(command("f", target=SOIL)),
        "not_allowed": lambda: gw.submit(command("p", target=LAMP1), key=gw.keys["parks"]),
        "out_of_bounds": lambda: gw.submit(command("o", args={"level": 101})),
        "rate_limited": lambda: [gw.submit(command(f"l{n}", target=LAMP2))
                                 for n in range(7)][-1],
    }
    assert tuple(attempts) == REJECTION_REASONS
    for reason, attempt in attempts.items():
        rejected(gw, attempt(), reason)
    assert sum(v for k, v in gw.counters.items() if k.startswith("command_rejected_")) == 12
    assert gw.counters["command_accepted"] == 1 + 6  # the first "r" and six to LAMP2
