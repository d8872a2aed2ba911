"""The store's command tables on a real SQLite file: rows and their statuses commit together,
node seqs wrap per device, replay ids and calendars survive a restart."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.commands.model import CommandRow
from gateway.commands.status import rejection_record, status_record
from gateway.store import NewRecord, Store, StoreError
from gateway.store.commands import ReplayError
from gateway.uplink.senml import decode_pack

GW = "b827ebfffe123456"
EUI1, EUI2 = "70b3d57ed0000001", "70b3d57ed0000002"
NOW = 1_790_000_000.0
KID = "00112233aabbccdd"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cityedge.db"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = Store.open(path)
    yield s
    s.close()


def row(cmd_id: str = "c1", dev_eui: str = EUI1, action: str = "dim", **kw: object) -> CommandRow:
    args = kw.pop("args", {"level": 40})
    return CommandRow(cmd_id=cmd_id, kid=KID, key_name="control-centre",
                      dev_eui=dev_eui, action=action, args=args,  # type: ignore[arg-type]
                      issued_at=NOW, expires_at=NOW + 600, **kw)  # type: ignore[arg-type]


def accepted(store: Store, rows: list[CommandRow]) -> list[CommandRow]:
    return store.add_commands(rows, [status_record(GW, r, NOW) for r in rows])


def test_add_commands_stores_rows_and_status_records_together(store: Store) -> None:
    rows = accepted(store, [row(dev_eui=EUI1, group="street"), row(dev_eui=EUI2, group="street")])
    assert [r.row_id for r in rows] == [1, 2]
    assert [r.node_seq for r in rows] == [0, 0]  # per device
    assert all(r.status == "accepted" and r.created_at > 0 for r in rows)
    assert store.get_commands("c1") == rows
    pending = store.pending(10)
    assert [p.rid for p in pending] == [f"{GW}:{EUI1}:cmd:{KID}:c1:0", f"{GW}:{EUI2}:cmd:{KID}:c1:0"]
    assert {p.kind for p in pending} == {"cmd-status"} and {p.priority for p in pending} == {1}
    pack = decode_pack(pending[0].body)
    assert pack[0]["bn"] == f"urn:dev:mac:{EUI1}:" and pack[0]["vs"] == "c1"
    by_name = {r["n"]: r.get("vs", r.get("v")) for r in pack}
    assert by_name["status"] == "accepted" and by_name["group"] == "street"
    assert by_name["action"] == "dim" and by_name["key"] == "control-centre"


def test_a_failing_insert_stores_neither_rows_nor_records(store: Store) -> None:
    accepted(store, [row("c1")])
    with pytest.raises(StoreError):
        accepted(store, [row("c2"), row("c1")])  # (kid, id, device) already there
    assert store.get_commands("c2") == []
    assert [p.rid for p in store.pending(10)] == [f"{GW}:{EUI1}:cmd:{KID}:c1:0"]


def test_node_seq_counts_per_device_and_wraps_at_256(store: Store) -> None:
    for n in range(257):
        accepted(store, [row(f"c{n}")])
    assert store.get_commands("c255")[0].node_seq == 255
    assert store.get_commands("c256")[0].node_seq == 0
    assert accepted(store, [row("other", dev_eui=EUI2)])[0].node_seq == 0


def test_gateway_local_actions_get_no_node_seq(store: Store) -> None:
    accepted(store, [row("c1", action="valve_open", args={"seconds": 60})])
    local = accepted(store, [row("p1", action="rules_pause", args={"hours": 24})])[0]
    assert local.node_seq is None
    assert accepted(store, [row("c2", action="valve_close", args={})])[0].node_seq == 1


def test_update_command_writes_the_row_and_its_status_record(store: Store) -> None:
    stored = accepted(store, [row()])[0]
    stored.status, stored.status_n, stored.fcnt_down, stored.attempts = "sent", 2, 17, 1
    store.update_command(stored, status_record(GW, stored, NOW + 1))
    stored.status, stored.status_n, stored.answer = "acked", 3, "done"
    store.update_command(stored, status_record(GW, stored, NOW + 2))
    again = store.get_commands("c1", "00112233aabbccdd")[0]
    assert (again.status, again.status_n, again.fcnt_down, again.attempts, again.answer) == (
        "acked", 3, 17, 1, "done")
    assert again.updated_at >= again.created_at
    assert [p.rid[-2:] for p in store.pending(10)] == [":0", ":2", ":3"]
    assert store.open_commands() == []


def test_update_command_refuses_an_unstored_row_or_a_bad_status(store: Store) -> None:
    with pytest.raises(ValueError, match="not stored"):
        store.update_command(row(), None)
    stored = accepted(store, [row()])[0]
    stored.status = "bogus"  # type: ignore[assignment]
    with pytest.raises(StoreError, match="bogus"):
        store.update_command(stored, status_record(GW, dataclasses.replace(stored, status_n=1),
                                                   NOW))
    assert store.get_commands("c1")[0].status == "accepted"
    assert len(store.pending(10)) == 1  # the status record was rolled back with the row


def test_open_commands_oldest_first_and_command_by_seq_finds_the_newest_open(
        store: Store) -> None:
    first = accepted(store, [row("a", dev_eui=EUI1), row("a", dev_eui=EUI2)])
    accepted(store, [row("b", dev_eui=EUI1)])
    assert [(r.cmd_id, r.dev_eui) for r in store.open_commands()] == [
        ("a", EUI1), ("a", EUI2), ("b", EUI1)]
    assert [r.cmd_id for r in store.open_commands(EUI1.upper())] == ["a", "b"]
    assert store.command_by_seq(EUI1, 1).cmd_id == "b"  # type: ignore[union-attr]
    done = first[0]
    done.status, done.status_n = "acked", 1
    store.update_command(done, None)
    assert store.command_by_seq(EUI1, 0) is None
    assert store.command_by_seq(EUI2, 0).cmd_id == "a"  # type: ignore[union-attr]


def test_replay_ids_survive_a_restart_and_are_pruned_after_keep_until(path: Path) -> None:
    with Store.open(path) as store:
        assert store.admit_command_id("kid1", "c1", NOW + 60)
        assert not store.admit_command_id("kid1", "c1", NOW + 60)
        assert store.admit_command_id("kid2", "c1", NOW + 60)  # ids are per key
    with Store.open(path) as store:
        assert not store.admit_command_id("kid1", "c1", NOW + 60)
        assert store.prune_command_ids(NOW) == 0
        assert store.prune_command_ids(NOW + 61) == 2
        assert store.admit_command_id("kid1", "c1", NOW + 120)


def test_commands_and_calendars_survive_a_restart(path: Path) -> None:
    points = [{"ref": "dusk", "minutes": -15, "level": 80}, {"ref": "clock", "minutes": 60,
                                                              "level": 30}]
    with Store.open(path) as store:
        accepted(store, [row("cal", action="calendar", args={"points": points})])
        assert store.calendar(EUI1) is None
        store.save_calendar(EUI1, points, "cal")
    with Store.open(path) as store:
        (again,) = store.open_commands()
        assert again.args == {"points": points} and again.node_seq == 0
        assert store.calendar(EUI1.upper()) == points
        store.save_calendar(EUI1, points[:1], "cal2")
        assert store.calendar(EUI1) == points[:1]


def test_rejection_records_are_stored_under_distinct_ids(store: Store) -> None:
    records = [rejection_record(GW, EUI1, "replay", "seen before", NOW, cmd_id="c1",
                                action="dim", key_name="control-centre") for _ in range(2)]
    bad_topic = rejection_record(GW, "no such/level", "unknown_device", "?", NOW, cmd_id=None,
                                 action=None, key_name=None)
    assert store.add_records([*records, bad_topic]) == [True, True, True]
    assert store.get_commands("c1") == []
    assert bad_topic.dev_eui == "invalid-target"
    pack = decode_pack(store.pending(10)[2].body)
    assert {r["n"]: r.get("vs") for r in pack}["target"] == "no such/level"


def test_a_record_that_does_not_encode_is_skipped_not_fatal(store: Store) -> None:
    bad = NewRecord(rid="x", dev_eui=EUI1, kind="cmd-status", records=[{"n": "bad name!"}])
    (stored,) = store.add_commands([row()], [bad])
    assert stored.row_id == 1 and store.pending(10) == []


def test_status_records_carry_the_rows_life_as_senml(store: Store) -> None:
    stored = accepted(store, [row(group="street")])[0]
    stored.status, stored.status_n, stored.reason, stored.answer = "failed", 3, "refused", "busy"
    stored.fcnt_down, stored.attempts = 41, 2
    record = status_record(GW, stored, NOW + 5, detail="the node said busy\n")
    assert (record.rid, record.kind, record.priority, record.created_at) == (
        f"{GW}:{EUI1}:cmd:{KID}:c1:3", "cmd-status", 1, NOW + 5)
    store.update_command(stored, record)
    pack = decode_pack(store.pending(10)[-1].body)
    assert pack[0] == {"bn": f"urn:dev:mac:{EUI1}:", "bt": NOW + 5, "n": "cmd", "vs": "c1",
                       "rid": record.rid}
    assert all(r["rid"] == record.rid for r in pack)
    fields = {r["n"]: r.get("vs", r.get("v")) for r in pack[1:]}
    assert fields == {"status": "failed", "action": "dim", "reason": "refused",
                      "detail": "the node said busy?", "answer": "busy", "group": "street",
                      "key": "control-centre", "fcnt_down": 41, "attempts": 2}


ADMIT = (KID, "c1", NOW + 660)


def test_accepting_spends_the_id_in_the_rows_transaction_and_a_replay_stores_nothing(
        store: Store) -> None:
    assert not store.command_id_seen(KID, "c1")
    rows = [row()]
    [stored] = store.add_commands(rows, [status_record(GW, r, NOW) for r in rows], admit=ADMIT)
    assert store.command_id_seen(KID, "c1") and not store.command_id_seen("other-kid", "c1")
    records = store.count()
    again = [row(dev_eui=EUI2)]
    with pytest.raises(ReplayError, match="already used"):
        store.add_commands(again, [status_record(GW, r, NOW) for r in again], admit=ADMIT)
    assert store.get_commands("c1") == [stored]  # the whole transaction rolled back
    assert store.count() == records


def test_a_rejection_spends_its_id_with_its_status_record(path: Path) -> None:
    record = rejection_record(GW, EUI1, "out_of_bounds", "level 101", NOW, cmd_id="c1",
                              action="dim", key_name="control-centre")
    with Store.open(path) as store:
        store.add_rejection(record, admit=ADMIT)
        assert store.count() == 1 and store.command_id_seen(KID, "c1")
    with Store.open(path) as store:  # a rejected id is not reusable, even after a restart
        with pytest.raises(ReplayError):
            store.add_commands([row()], [], admit=ADMIT)
        assert store.get_commands("c1") == []


def test_one_id_racing_from_many_threads_is_accepted_exactly_once(store: Store) -> None:
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        rows = [row(dev_eui=EUI1 if n % 2 else EUI2)]
        start.wait()
        try:
            store.add_commands(rows, [status_record(GW, r, NOW) for r in rows], admit=ADMIT)
            outcomes.append("accepted")
        except ReplayError:
            outcomes.append("replay")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["accepted"] + ["replay"] * 7
    assert len(store.get_commands("c1")) == 1 and store.count() == 1
