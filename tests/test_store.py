"""The durable store on real SQLite files: group commit, duplicates, retention, a full disk,
a damaged file, kill -9 right after a commit."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store import (
    Accepted,
    Device,
    DeviceConflictError,
    DeviceError,
    NewRecord,
    Store,
    StoreCorruptWarning,
    StoreError,
    StoreFullError,
)
from gateway.store.db import FCNT_DOWN_BLOCK
from gateway.store.schema import LATEST_VERSION
from gateway.uplink.senml import decode_pack

GW = "b827ebfffe123456"
KEY1 = bytes(range(16))
KEY2 = bytes(range(16, 32))
EUIS = ["0011223344556677", "0011223344556688", "00112233445566aa"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data" / "cityedge.db")
    yield s
    s.close()


def device(n: int, **kw: object) -> Device:
    return Device(dev_eui=EUIS[n], role="air", dev_addr=f"26011b{n:02x}", nwk_s_key=KEY1,
                  app_s_key=KEY2, **kw)  # type: ignore[arg-type]


def uplink(n: int, fcnt: int, *, priority: int = 0, created_at: float | None = None,
           value: float = 21.5) -> Accepted:
    eui = EUIS[n]
    rid = f"{GW}:{eui}:{fcnt}"
    return Accepted(
        dev_eui=eui, fcnt_up=fcnt, rid=rid, priority=priority, created_at=created_at,
        records=[{"bn": f"urn:dev:mac:{eui}:", "n": "temperature", "u": "Cel", "v": value,
                  "rid": rid}],
    )


# ------------------------------------------------------------------------- file and settings


def test_database_file_is_0600_in_wal_mode_with_full_sync(store: Store) -> None:
    store.accept_uplinks([uplink(0, 1)])
    assert store.path.stat().st_mode & 0o777 == 0o600
    wal = store.path.with_name(store.path.name + "-wal")
    assert wal.exists() and wal.stat().st_mode & 0o777 == 0o600
    other = sqlite3.connect(store.path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()
    assert store._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version() == LATEST_VERSION


def test_existing_file_with_loose_mode_is_narrowed_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Store.open(path).close()
    path.chmod(0o644)
    Store.open(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_file_from_a_newer_cityedge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 was written by a newer cityedge"):
        Store.open(path)


def test_a_directory_at_the_store_path_is_refused_not_moved(tmp_path: Path) -> None:
    (tmp_path / "c.db").mkdir()
    with pytest.raises(StoreError, match="not a file"):
        Store.open(tmp_path / "c.db")
    assert (tmp_path / "c.db").is_dir()


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "c.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.count()


# ------------------------------------------------------------------------- devices


def test_device_registry_round_trip(store: Store) -> None:
    saved = store.upsert_device(device(0, name="Cours Mirabeau", latitude=43.5263,
                                       longitude=5.4474, asset_id="AQ-12"))
    assert saved.created_at is not None and saved.updated_at is not None
    got = store.get_device(EUIS[0].upper())
    assert got == saved
    assert got.nwk_s_key == KEY1 and got.app_s_key == KEY2 and got.fcnt_up == -1
    assert store.device_by_addr("26011B00") == saved
    store.upsert_device(device(1, dev_class="C"))
    assert [d.dev_eui for d in store.list_devices()] == EUIS[:2]
    # update keeps created_at
    updated = store.upsert_device(device(0, name="renamed"))
    assert updated.name == "renamed" and updated.created_at == saved.created_at
    assert store.remove_device(EUIS[0]) is True
    assert store.remove_device(EUIS[0]) is False
    assert store.get_device(EUIS[0]) is None


def test_device_repr_masks_keys() -> None:
    text = repr(device(0, app_key=bytes(16)))
    assert "nwk_s_key=<16 bytes>" in text and "app_key=<16 bytes>" in text
    assert KEY1.hex() not in text and str(KEY1) not in text


def test_dev_addr_taken_by_another_device_is_a_conflict(store: Store) -> None:
    store.upsert_device(device(0))
    with pytest.raises(DeviceConflictError, match=f"already belongs to device {EUIS[0]}"):
        store.upsert_device(Device(dev_eui=EUIS[1], role="noise", dev_addr="26011b00"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dev_eui": "xyz"}, "expected 16 hex digits"),
        ({"dev_addr": "123"}, "expected 8 hex digits"),
        ({"nwk_s_key": b"short"}, "nwk_s_key must be 16 bytes"),
        ({"dev_class": "B"}, "expected 'A' or 'C'"),
        ({"role": ""}, "role must be a non-empty string"),
        ({"fcnt_up": 2**32}, "fcnt_up"),
    ],
)
def test_invalid_device_fields_are_refused(fields: dict, message: str) -> None:
    base = {"dev_eui": EUIS[0], "role": "air"}
    with pytest.raises(DeviceError, match=message):
        Device(**{**base, **fields})


# ------------------------------------------------------------------------- group commit


def test_burst_of_uplinks_is_one_commit_that_advances_counters(store: Store) -> None:
    for n in range(3):
        store.upsert_device(device(n))
    batch = [uplink(0, 1), uplink(1, 7), uplink(0, 2), uplink(2, 100), uplink(0, 5),
             uplink(1, 8)]
    assert store.accept_uplinks(batch) == [True] * 6
    assert [store.get_device(e).fcnt_up for e in EUIS] == [5, 8, 100]
    pending = store.pending(100)
    assert [r.rid for r in pending] == [u.rid for u in batch]
    assert [r.seq for r in pending] == sorted(r.seq for r in pending)
    first = decode_pack(pending[0].body)
    assert first == [{"bn": f"urn:dev:mac:{EUIS[0]}:", "n": "temperature", "u": "Cel",
                      "v": 21.5, "rid": f"{GW}:{EUIS[0]}:1"}]


def test_duplicate_rid_is_ignored_and_reported_false(store: Store) -> None:
    store.upsert_device(device(0))
    assert store.accept_uplinks([uplink(0, 10)]) == [True]
    assert store.accept_uplinks([uplink(0, 10, value=99.0), uplink(0, 11)]) == [False, True]
    assert store.count() == 2
    assert decode_pack(store.pending(1)[0].body)[0]["v"] == 21.5  # the first one is kept


def test_frame_counter_only_moves_forward(store: Store) -> None:
    store.upsert_device(device(0))
    store.accept_uplinks([uplink(0, 50)])
    assert store.accept_uplinks([uplink(0, 40)]) == [True]  # stored, but no step back
    assert store.get_device(EUIS[0]).fcnt_up == 50


def test_uplink_whose_senml_does_not_encode_is_not_stored_but_the_rest_is(store: Store) -> None:
    bad = Accepted(dev_eui=EUIS[0], fcnt_up=3, rid="bad", records=[{"n": "x", "v": "nan"}])
    assert store.accept_uplinks([uplink(0, 1), bad, uplink(0, 2)]) == [True, False, True]


def test_committed_uplinks_are_visible_to_another_connection_at_once(store: Store) -> None:
    store.accept_uplinks([uplink(0, 1), uplink(0, 2)])
    other = sqlite3.connect(store.path)
    assert other.execute("SELECT count(*) FROM records").fetchone()[0] == 2
    other.close()


def test_commit_survives_kill_minus_9_right_after_accept(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from gateway.store import Store, Accepted
        s = Store.open({str(path)!r})
        s.accept_uplinks([Accepted(dev_eui="0011223344556677", fcnt_up=i, rid=f"r{{i}}",
                                   body=b"\\x81\\xa1\\x00ax") for i in range(25)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60,
                            check=False)
    assert result.returncode == -9, result.stderr.decode()
    with Store.open(path) as reopened:
        assert reopened.recovery is None
        assert [r.rid for r in reopened.pending(100)] == [f"r{i}" for i in range(25)]


def test_events_and_statuses_are_stored_in_the_same_queue(store: Store) -> None:
    store.accept_uplinks([uplink(0, 1)])
    records = [
        NewRecord(rid=f"{GW}:{EUIS[0]}:join:1", dev_eui=EUIS[0], kind="event", priority=1,
                  records=[{"bn": f"urn:dev:mac:{EUIS[0]}:", "n": "join", "vb": True}]),
        NewRecord(rid=f"{GW}:cmd:42:sent", dev_eui=EUIS[1], kind="cmd-status", priority=1,
                  body=b"\x81\xa1\x00aa"),
    ]
    assert store.add_records(records) == [True, True]
    assert store.add_records(records[:1]) == [False]
    assert [r.kind for r in store.pending(10)] == ["up", "event", "cmd-status"]


def test_pending_after_seq_and_delete(store: Store) -> None:
    store.accept_uplinks([uplink(0, i) for i in range(10)])
    first = store.pending(4)
    assert len(first) == 4
    rest = store.pending(100, after_seq=first[-1].seq)
    assert [r.rid for r in first + rest] == [uplink(0, i).rid for i in range(10)]
    assert store.delete([r.seq for r in first]) == 4
    assert store.delete([]) == 0
    assert store.count() == 6
    assert store.pending(1)[0].rid == rest[0].rid


def test_stats_and_session_counter(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path) as s:
        s.upsert_device(device(0))
        s.accept_uplinks([uplink(0, 1, created_at=1000.0), uplink(0, 2, priority=1)])
        assert s.next_session() == 1
        assert s.next_session() == 2
        stats = s.stats()
        assert (stats.records, stats.routine, stats.priority, stats.devices) == (2, 1, 1, 1)
        assert stats.oldest_created_at == 1000.0
        assert stats.db_bytes > 0
    with Store.open(path) as s:
        assert s.next_session() == 3
        assert s.stats().sessions == 3


def test_concurrent_threads_each_commit_whole_batches(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for b in range(20):
                batch = [Accepted(dev_eui=EUIS[0], fcnt_up=t * 10_000 + b * 10 + i,
                                  rid=f"t{t}:b{b}:i{i}", body=b"\x80") for i in range(10)]
                assert store.accept_uplinks(batch) == [True] * 10
                store.pending(5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert store.count() == 800


# ------------------------------------------------------------------------- retention


def test_retention_drops_old_routine_records_and_keeps_alarms(store: Store) -> None:
    now = time.time()
    old = now - 10 * 86400
    batch = [uplink(0, i, created_at=old + i) for i in range(20)]
    batch += [uplink(1, i, priority=1, created_at=old + i) for i in range(5)]
    batch += [uplink(2, i, created_at=now - 10) for i in range(5)]
    store.accept_uplinks(batch)
    result = store.enforce_retention(max_records=1000, max_age_s=7 * 86400, now=now)
    assert (result.dropped_by_age, result.dropped_by_count, result.remaining) == (20, 0, 10)
    assert {r.dev_eui for r in store.pending(100)} == {EUIS[1], EUIS[2]}


def test_retention_over_the_count_drops_oldest_routine_first(store: Store) -> None:
    now = time.time()
    store.accept_uplinks([uplink(1, i, priority=1, created_at=now - 500 + i) for i in range(4)])
    store.accept_uplinks([uplink(0, i, created_at=now - 400 + i) for i in range(10)])
    result = store.enforce_retention(max_records=8, max_age_s=86400, now=now)
    assert result.dropped_by_count == 6 and result.remaining == 8 and result.over_limit == 0
    kept = store.pending(100)
    assert sum(1 for r in kept if r.priority == 1) == 4
    assert [r.rid for r in kept if r.priority == 0] == [uplink(0, i).rid for i in (6, 7, 8, 9)]


def test_retention_never_drops_alarms_even_over_the_limit(store: Store) -> None:
    store.accept_uplinks([uplink(1, i, priority=1) for i in range(12)])
    store.accept_uplinks([uplink(0, i) for i in range(3)])
    result = store.enforce_retention(max_records=10, max_age_s=86400)
    assert result.dropped_by_count == 3
    assert (result.remaining, result.over_limit) == (12, 2)


# ------------------------------------------------------------------------- full disk


def test_full_database_raises_store_full_and_stores_nothing_of_the_batch(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "c.db", max_bytes=128 * 1024)
    s.upsert_device(device(0))
    payload = os.urandom(1500)
    stored = 0
    with pytest.raises(StoreFullError, match="database or disk is full") as info:
        for i in range(1000):
            batch = [Accepted(dev_eui=EUIS[0], fcnt_up=i * 4 + j, rid=f"r{i}:{j}",
                              body=payload) for j in range(4)]
            s.accept_uplinks(batch)
            stored += 4
    assert "free disk space" in str(info.value)
    assert s.count() == stored  # the failing batch left nothing behind
    assert s.get_device(EUIS[0]).fcnt_up == stored - 1
    # the agent counts the loss and carries on: once records are gone, commits work again
    s.delete([r.seq for r in s.pending(stored)])
    assert s.accept_uplinks([Accepted(dev_eui=EUIS[0], fcnt_up=99999, rid="after",
                                      body=payload)]) == [True]
    s.close()


# ------------------------------------------------------------------------- damaged file


def test_garbage_file_is_moved_aside_and_a_fresh_store_starts(tmp_path: Path) -> None:
    path = tmp_path / "cityedge.db"
    garbage = b"this is not a database at all " * 200
    path.write_bytes(garbage)
    with pytest.warns(StoreCorruptWarning, match="moved to"):
        s = Store.open(path)
    assert s.recovery is not None
    moved = Path(s.recovery.moved_to)
    assert moved.name.startswith("cityedge.db.corrupt-")
    assert moved.read_bytes() == garbage  # never silently lost
    assert s.accept_uplinks([uplink(0, 1)]) == [True]
    s.close()


def test_damaged_pages_fail_quick_check_and_the_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "cityedge.db"
    with Store.open(path) as s:
        s.accept_uplinks([uplink(0, i, value=float(i)) for i in range(300)])
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:  # scribble over pages in the middle of the file
        f.seek(4 * 4096)
        f.write(os.urandom(3 * 4096))
    damaged = path.read_bytes()
    with pytest.warns(StoreCorruptWarning):
        s = Store.open(path)
    assert s.recovery is not None and Path(s.recovery.moved_to).read_bytes() == damaged
    assert s.count() == 0
    s.close()


# ------------------------------------------------------------------------- LoRaWAN sessions


def test_a_version_1_file_is_migrated_and_keeps_its_devices(tmp_path: Path) -> None:
    from gateway.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0][1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO devices (dev_eui, dev_addr, role, nwk_s_key, app_s_key, fcnt_up, "
                 "created_at, updated_at) VALUES (?, '26011b00', 'air', ?, ?, 41, 1, 1)",
                 (EUIS[0], KEY1, KEY2))
    conn.commit()
    conn.close()
    with Store.open(path) as s:
        assert s.schema_version() == LATEST_VERSION
        d = s.get_device(EUIS[0])
        assert d.fcnt_up == 41 and d.nwk_s_key == KEY1
        assert (d.join_eui, d.dev_nonce_mode, d.last_dev_nonce, d.join_nonce, d.mac_state) == (
            None, "increasing", -1, 0, None)


def test_otaa_fields_and_mac_state_round_trip(store: Store) -> None:
    saved = store.upsert_device(Device(
        dev_eui=EUIS[0], role="air", app_key=KEY1, join_eui="70B3D57ED0000000",
        dev_nonce_mode="unique", mac_state={"rx_delay_s": 3, "queued": []}))
    assert saved.join_eui == "70b3d57ed0000000" and saved.dev_nonce_mode == "unique"
    assert store.get_device(EUIS[0]).mac_state == {"rx_delay_s": 3, "queued": []}
    store.save_mac_states({EUIS[0]: {"battery": 200}})
    assert store.get_device(EUIS[0]).mac_state == {"battery": 200}
    assert saved.otaa and not device(1).otaa


@pytest.mark.parametrize(("fields", "message"), [
    ({"join_eui": "xyz"}, "join_eui"),
    ({"dev_nonce_mode": "random"}, "dev_nonce_mode"),
    ({"last_dev_nonce": 70000}, "last_dev_nonce"),
    ({"join_nonce": -1}, "join_nonce"),
    ({"mac_state": [1]}, "mac_state"),
])
def test_invalid_otaa_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        Device(dev_eui=EUIS[0], role="air", **fields)


def test_a_damaged_mac_state_reads_as_none(store: Store) -> None:
    store.upsert_device(device(0))
    store._db().execute("UPDATE devices SET mac_state = '{not json'")
    assert store.get_device(EUIS[0]).mac_state is None


def test_commit_join_starts_a_session_and_refuses_a_used_dev_nonce(store: Store) -> None:
    store.upsert_device(Device(dev_eui=EUIS[0], role="air", app_key=KEY1))
    args = {"join_nonce": 1, "dev_addr": "00ABCDEF", "nwk_s_key": KEY1, "app_s_key": KEY2,
            "mac_state": {"rx_delay_s": 1}}
    assert store.commit_join(EUIS[0], dev_nonce=3, **args) is True
    d = store.get_device(EUIS[0])
    assert (d.dev_addr, d.nwk_s_key, d.app_s_key, d.last_dev_nonce, d.join_nonce) == (
        "00abcdef", KEY1, KEY2, 3, 1)
    assert (d.fcnt_up, d.fcnt_down, d.mac_state) == (-1, 0, {"rx_delay_s": 1})
    assert store.commit_join(EUIS[0], dev_nonce=3, **args) is False
    assert store.commit_join(EUIS[0], dev_nonce=2, **args) is False
    assert store.get_device(EUIS[0]).last_dev_nonce == 3


def test_commit_join_in_unique_mode_keeps_every_nonce(store: Store) -> None:
    store.upsert_device(Device(dev_eui=EUIS[0], role="air", app_key=KEY1,
                               dev_nonce_mode="unique"))
    args = {"join_nonce": 1, "dev_addr": "00abcdef", "nwk_s_key": KEY1, "app_s_key": KEY2,
            "mac_state": None}
    assert store.commit_join(EUIS[0], dev_nonce=9, **args)
    assert store.commit_join(EUIS[0], dev_nonce=2, **args)
    assert not store.commit_join(EUIS[0], dev_nonce=9, **args)
    assert store.dev_nonce_used(EUIS[0], 2) and not store.dev_nonce_used(EUIS[0], 3)


def test_commit_join_with_a_taken_dev_addr_is_a_conflict(store: Store) -> None:
    store.upsert_device(device(0))
    store.upsert_device(Device(dev_eui=EUIS[1], role="air", app_key=KEY1))
    with pytest.raises(DeviceConflictError, match="already belongs"):
        store.commit_join(EUIS[1], dev_nonce=0, join_nonce=1, dev_addr="26011b00",
                          nwk_s_key=KEY1, app_s_key=KEY2, mac_state=None)
    assert store.get_device(EUIS[1]).last_dev_nonce == -1  # nothing half-stored
    with pytest.raises(StoreError, match="not registered"):
        store.commit_join(EUIS[2], dev_nonce=0, join_nonce=1, dev_addr="00000001",
                          nwk_s_key=KEY1, app_s_key=KEY2, mac_state=None)


def test_downlink_counters_are_reserved_durably_a_block_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path) as s:
        s.upsert_device(device(0, fcnt_down=7))
        assert [s.reserve_fcnt_down(EUIS[0]) for _ in range(3)] == [7, 8, 9]
        assert s.get_device(EUIS[0]).fcnt_down == 7 + FCNT_DOWN_BLOCK  # the high-water mark
        with pytest.raises(StoreError, match="not registered"):
            s.reserve_fcnt_down(EUIS[1])
        more = [s.reserve_fcnt_down(EUIS[0]) for _ in range(FCNT_DOWN_BLOCK)]
        assert more == list(range(10, 10 + FCNT_DOWN_BLOCK))  # across the block's end
        assert s.get_device(EUIS[0]).fcnt_down == 7 + 2 * FCNT_DOWN_BLOCK
    with Store.open(path) as s:  # a restart skips the rest of the block, never reuses it
        assert s.reserve_fcnt_down(EUIS[0]) == 7 + 2 * FCNT_DOWN_BLOCK


def test_a_rejoin_or_an_import_starts_a_new_counter_block(store: Store) -> None:
    store.upsert_device(device(0, fcnt_down=100))
    assert store.reserve_fcnt_down(EUIS[0]) == 100
    store.upsert_device(device(0, fcnt_down=500))  # e.g. a registry import moved it
    assert store.reserve_fcnt_down(EUIS[0]) == 500
    assert store.commit_join(EUIS[0], dev_nonce=1, join_nonce=1, dev_addr="26011b01",
                             nwk_s_key=KEY1, app_s_key=KEY2, mac_state=None)
    assert [store.reserve_fcnt_down(EUIS[0]) for _ in range(2)] == [0, 1]


def test_the_last_downlink_counters_are_handed_out_then_refused(store: Store) -> None:
    store.upsert_device(device(0, fcnt_down=0xFFFFFFFF - 2))
    assert [store.reserve_fcnt_down(EUIS[0]) for _ in range(2)] == [0xFFFFFFFD, 0xFFFFFFFE]
    with pytest.raises(StoreError, match="exhausted"):
        store.reserve_fcnt_down(EUIS[0])


def test_uplink_commit_saves_mac_states_in_the_same_transaction(store: Store) -> None:
    store.upsert_device(device(0))
    store.accept_uplinks([uplink(0, 1)], {EUIS[0]: {"data_rate": 5}})
    assert store.get_device(EUIS[0]).mac_state == {"data_rate": 5}
    assert store.accept_uplinks([], {EUIS[0]: {"data_rate": 4}}) == []
    assert store.get_device(EUIS[0]).mac_state == {"data_rate": 4}


# ------------------------------------------------------------------------- integration fixes


def test_delete_takes_any_iterable_of_seqs_and_ignores_unknown_ones(store: Store) -> None:
    from array import array

    store.accept_uplinks([uplink(0, i) for i in range(6)])
    seqs = [r.seq for r in store.pending(10)]
    assert store.delete(array("q", seqs[:2])) == 2
    assert store.delete(iter([seqs[2], 999_999])) == 1  # a seq already gone counts nothing
    assert store.delete(s for s in seqs[:3]) == 0
    assert [r.seq for r in store.pending(10)] == seqs[3:]


def test_upsert_devices_writes_all_in_one_transaction(store: Store) -> None:
    saved = store.upsert_devices([device(0), device(1, name="second")])
    assert [d.dev_eui for d in saved] == EUIS[:2]
    assert saved[1].name == "second" and saved[0].created_at is not None
    assert [d.dev_eui for d in store.list_devices()] == EUIS[:2]
    assert store.upsert_devices([]) == []


def test_upsert_devices_with_a_conflict_stores_none_of_them(store: Store) -> None:
    store.upsert_device(device(0))
    taken = Device(dev_eui=EUIS[2], role="air", dev_addr="26011b00", nwk_s_key=KEY1,
                   app_s_key=KEY2)
    with pytest.raises(DeviceConflictError, match=f"already belongs to device {EUIS[0]}"):
        store.upsert_devices([device(1), taken])
    assert store.get_device(EUIS[1]) is None, "the first device was rolled back too"
    assert [d.dev_eui for d in store.list_devices()] == [EUIS[0]]


def test_an_import_plan_is_written_with_one_bulk_call_all_or_nothing(store: Store) -> None:
    from gateway.registry import ImportPlan, RegistryEntry, apply_plan

    calls: list[int] = []
    real = store.upsert_devices

    def counting(devices: list[Device]) -> list[Device]:
        calls.append(len(devices))
        return real(devices)

    store.upsert_devices = counting  # type: ignore[method-assign]
    store.upsert_device(device(0))

    def abp(n: int, addr: str) -> RegistryEntry:
        return RegistryEntry(dev_eui=EUIS[n], role="air", dev_class="A", activation="abp",
                             dev_addr=addr, nwk_s_key=KEY1, app_s_key=KEY2)

    good = ImportPlan(added=[abp(1, "26011b01"), abp(2, "26011b02")])
    assert [d.dev_eui for d in apply_plan(store, good, replace_conflicting=False)] == EUIS[1:]
    assert calls[-1] == 2
    store.remove_device(EUIS[1])
    store.remove_device(EUIS[2])
    clash = ImportPlan(added=[abp(1, "26011b01"), abp(2, "26011b00")])  # device 0's DevAddr
    with pytest.raises(DeviceConflictError):
        apply_plan(store, clash, replace_conflicting=False)
    assert [d.dev_eui for d in store.list_devices()] == [EUIS[0]]


def test_removing_a_device_forgets_its_dev_nonces(store: Store) -> None:
    store.upsert_device(Device(dev_eui=EUIS[0], role="air", app_key=KEY1,
                               dev_nonce_mode="unique"))
    store.commit_join(EUIS[0], dev_nonce=9, join_nonce=1, dev_addr="00abcdef", nwk_s_key=KEY1,
                      app_s_key=KEY2, mac_state=None)
    assert store.dev_nonce_used(EUIS[0], 9)
    assert store.remove_device(EUIS[0]) is True
    assert not store.dev_nonce_used(EUIS[0], 9)
    assert store.remove_device(EUIS[0]) is False
    # registered again, the device may use any DevNonce
    store.upsert_device(Device(dev_eui=EUIS[0], role="air", app_key=KEY1,
                               dev_nonce_mode="unique"))
    assert store.commit_join(EUIS[0], dev_nonce=9, join_nonce=2, dev_addr="00abcdef",
                             nwk_s_key=KEY1, app_s_key=KEY2, mac_state=None)


def test_the_backlog_reader_is_part_of_the_store_package(store: Store) -> None:
    from gateway.store import BacklogReader

    store.accept_uplinks([uplink(0, 1), uplink(1, 1), uplink(0, 2)])
    reader = BacklogReader(store.path)
    try:
        plan = reader.plan(0, 100)
        assert plan.rows == 3
        assert [list(g) for g in plan.groups.values()] == [[1, 3], [2]]
        assert [r.rid for r in reader.pending(10)] == [r.rid for r in store.pending(10)]
        assert sorted(reader.fetch([3, 1, 42])) == [1, 3]
    finally:
        reader.close()
    with pytest.raises(StoreError, match="closed"):
        reader.pending(1)


def test_a_device_added_by_another_process_is_seen_by_an_open_store(tmp_path: Path) -> None:
    # Regression: Store.open used to reopen and close the database file after connecting,
    # which dropped this process's SQLite locks; a second process (the CLI) then thought it
    # was alone, rebuilt the WAL index, and the agent kept reading a stale snapshot.
    path = tmp_path / "cityedge.db"
    store = Store.open(path)
    try:
        assert store.list_devices() == []
        code = textwrap.dedent(f"""
            from gateway.store import Device, Store
            s = Store.open({str(path)!r})
            s.upsert_device(Device(dev_eui={EUIS[1]!r}, role="air"))
            s.close()
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert [d.dev_eui for d in store.list_devices()] == [EUIS[1]]
        store.upsert_device(device(0))  # and this process still writes safely afterwards
        assert store.stats().devices == 2
    finally:
        store.close()
    with Store.open(path) as again:
        assert [d.dev_eui for d in again.list_devices()] == [EUIS[0], EUIS[1]]


def test_uplink_commits_stay_fully_synced_around_a_delete(store: Store) -> None:
    # Deletes skip their own fsync (a lost delete only means a resend under the same rid);
    # every other write must still run at synchronous=FULL (2).
    def level() -> int:
        with store._read("reading the sync level") as conn:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    assert level() == 2
    store.accept_uplinks([uplink(0, 1), uplink(0, 2)])
    assert store.delete([store.pending(1)[0].seq]) == 1
    assert level() == 2
    store.accept_uplinks([uplink(0, 3)])
    assert [r.rid for r in store.pending(10)] == [uplink(0, 2).rid, uplink(0, 3).rid]


def test_counters_reserved_ahead_continue_the_block_and_survive_a_restart(
        tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path) as s:
        s.upsert_devices([device(0), device(1, fcnt_down=40)])
        assert s.prefetch_fcnt_down([EUIS[0], EUIS[1], EUIS[2]]) == 2  # EUIS[2] unknown
        assert s.prefetch_fcnt_down([EUIS[0]]) == 0  # a full block left: nothing to do
        half = FCNT_DOWN_BLOCK // 2
        assert [s.reserve_fcnt_down(EUIS[0]) for _ in range(half + 1)] == list(range(half + 1))
        assert s.fcnt_down_left(EUIS[0]) == FCNT_DOWN_BLOCK - half - 1
        assert s.prefetch_fcnt_down([EUIS[0]]) == 1
        assert s.get_device(EUIS[0]).fcnt_down == half + 1 + FCNT_DOWN_BLOCK
        assert s.reserve_fcnt_down(EUIS[0]) == half + 1  # the same block, extended
        assert s.reserve_fcnt_down(EUIS[1]) == 40
    with Store.open(path) as s:
        assert s.reserve_fcnt_down(EUIS[0]) == half + 1 + FCNT_DOWN_BLOCK
        assert s.reserve_fcnt_down(EUIS[1]) == 40 + FCNT_DOWN_BLOCK


def test_counters_stay_unique_while_blocks_are_reserved_ahead_from_another_thread(
        tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Store.open(path) as s:
        s.upsert_device(device(0))
        taken: list[int] = []
        done = threading.Event()

        def refill() -> None:
            while not done.is_set():
                s.prefetch_fcnt_down([EUIS[0]])

        refiller = threading.Thread(target=refill)
        refiller.start()
        try:
            taken = [s.reserve_fcnt_down(EUIS[0]) for _ in range(20 * FCNT_DOWN_BLOCK)]
        finally:
            done.set()
            refiller.join()
        assert len(set(taken)) == len(taken) and taken == sorted(taken)
        mark = s.get_device(EUIS[0]).fcnt_down
    with Store.open(path) as s:
        assert s.reserve_fcnt_down(EUIS[0]) == mark > taken[-1]
