"""The backlog reader's plan: one compact run of seqs per (kind, device), in seq order."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import BacklogReader, NewRecord, Store
from tests.test_store import EUIS, uplink


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "cityedge.db")
    yield s
    s.close()


def _event(n: int, i: int) -> NewRecord:
    rid = f"event-{n}-{i}"
    return NewRecord(rid=rid, dev_eui=EUIS[n], kind="event",
                     records=[{"n": "door", "vb": True, "rid": rid}])


def _plan(store: Store, after: int, limit: int) -> tuple[list[list[int]], int, int]:
    reader = BacklogReader(store.path)
    try:
        plan = reader.plan(after, limit)
        return [list(run) for run in plan.runs()], plan.rows, plan.last_seq
    finally:
        reader.close()


def test_runs_group_each_kind_of_each_device_in_seq_order_within_the_limit(
        store: Store) -> None:
    store.accept_uplinks([uplink(1, 1), uplink(0, 1)])  # seqs 1, 2
    store.add_records([_event(0, 1)])  # 3
    store.accept_uplinks([uplink(0, 2), uplink(1, 2), uplink(0, 3)])  # 4, 5, 6
    store.add_records([_event(0, 2)])  # 7
    runs, rows, last = _plan(store, 0, 100)
    assert sorted(runs) == [[1, 5], [2, 4, 6], [3, 7]]
    assert (rows, last) == (7, 7)
    runs, rows, last = _plan(store, 2, 3)  # seqs 3..5 only
    assert sorted(runs) == [[3], [4], [5]] and (rows, last) == (3, 5)
    assert _plan(store, 7, 100) == ([], 0, 0)


def test_seqs_beyond_four_bytes_are_planned_exactly(store: Store) -> None:
    store.accept_uplinks([uplink(0, 1)])
    with sqlite3.connect(store.path) as other:  # as if ~5 billion records had gone through
        other.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'records'", (5 << 30,))
    store.accept_uplinks([uplink(0, 2), uplink(1, 1)])
    runs, rows, last = _plan(store, 0, 100)
    assert sorted(runs) == [[1, (5 << 30) + 1], [(5 << 30) + 2]]
    assert (rows, last) == (3, (5 << 30) + 2)


def test_a_reader_reuses_its_buffer_and_a_shorter_plan_shows_only_its_own_seqs(
        store: Store) -> None:
    store.accept_uplinks([uplink(0, 1), uplink(1, 1), uplink(0, 2), uplink(1, 2)])
    reader = BacklogReader(store.path)
    try:
        assert sorted(list(r) for r in reader.plan(0, 10).runs()) == [[1, 3], [2, 4]]
        short = reader.plan(2, 10)
        assert sorted(list(r) for r in short.runs()) == [[3], [4]] and short.rows == 2
        assert list(reader.plan(4, 10).runs()) == []
    finally:
        reader.close()
