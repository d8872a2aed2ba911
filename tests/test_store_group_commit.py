"""Group commit in one prepared insert: which uplinks are new, and the counters it moves."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import NewRecord, Store
from gateway.uplink.senml import decode_pack
from tests.test_store import EUIS, device, uplink


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "cityedge.db")
    yield s
    s.close()


def test_a_rid_already_stored_and_a_rid_twice_in_one_group_are_reported_per_item(
        store: Store) -> None:
    store.upsert_device(device(0))
    store.upsert_device(device(1))
    assert store.accept_uplinks([uplink(0, 5)]) == [True]
    group = [uplink(1, 7), uplink(0, 5, value=1.0), uplink(0, 6), uplink(0, 6, value=2.0),
             uplink(1, 8)]
    assert store.accept_uplinks(group) == [True, False, True, False, True]
    bodies = {r.rid: decode_pack(r.body)[0]["v"] for r in store.pending(10)}
    assert bodies == {u.rid: 21.5 for u in (uplink(0, 5), uplink(1, 7), uplink(0, 6),
                                             uplink(1, 8))}  # the first of each rid is kept
    assert [store.get_device(EUIS[i]).fcnt_up for i in (0, 1)] == [6, 8]


def test_a_duplicate_does_not_move_its_devices_counter(store: Store) -> None:
    store.upsert_device(device(0))
    assert store.accept_uplinks([uplink(0, 9)]) == [True]
    store.delete([r.seq for r in store.pending(10)])  # acknowledged and gone
    assert store.accept_uplinks([uplink(0, 3)]) == [True]  # an old frame: stored, no step back
    assert store.get_device(EUIS[0]).fcnt_up == 9
    assert store.accept_uplinks([uplink(0, 3), uplink(0, 12)]) == [False, True]
    assert store.get_device(EUIS[0]).fcnt_up == 12


def test_events_in_one_group_report_new_and_known_rids(store: Store) -> None:
    def event(rid: str) -> NewRecord:
        return NewRecord(rid=rid, dev_eui=EUIS[0], kind="event",
                         records=[{"n": "door", "vb": True, "rid": rid}])

    assert store.add_records([event("a"), event("b")]) == [True, True]
    assert store.add_records([event("b"), event("c"), event("c")]) == [False, True, False]
    assert store.add_records([]) == []
    assert store.count() == 3
