"""The durable store: SQLite in WAL mode with synchronous=FULL, where "received" means committed.

Threading: a ``Store`` owns exactly one ``sqlite3`` connection and guards it with one lock, so any
thread may call it (the agent uses ``asyncio.to_thread``; the forwarder does too) and calls are
serialised. One connection (not a pool) because SQLite allows one writer anyway, and because a
single connection keeps group commit simple: a whole burst of uplinks is one transaction and one
fsync. Long maintenance (retention) works in chunks and releases the lock between them so uplink
commits are never held up for long.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the WAL at every commit, so once
``accept_uplinks`` returns, the records survive kill -9 and power loss. Deleting acknowledged
records is the one write without its own fsync: a delete lost to a power cut only means those
records are sent again, under the same record ids. The file is created 0600
(SQLite gives its -wal/-shm files the same mode): it holds device session keys.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Self

from gateway.store.commands import CommandStoreMixin
from gateway.store.model import (
    Accepted,
    Device,
    DeviceConflictError,
    NewRecord,
    RetentionResult,
    StoreCorruptWarning,
    StoredRecord,
    StoreError,
    StoreFullError,
    StoreRecovery,
    StoreStats,
)
from gateway.store.rules import RuleStoreMixin
from gateway.store.schema import LATEST_VERSION, MIGRATIONS, RECORD_COLUMNS
from gateway.uplink.senml import SenMLError, encode_pack

__all__ = ["Store"]

log = logging.getLogger("cityedge.store")

RETENTION_CHUNK: Final = 5_000
CACHE_KIB: Final = 1024
FCNT_DOWN_BLOCK: Final = 16  # downlink counters reserved per fsync (at most 15 skipped by a crash)
_FCNT_DOWN_MAX: Final = 0xFFFFFFFF
_DEVICE_COLUMNS: Final = (
    "dev_eui", "dev_addr", "role", "name", "nwk_s_key", "app_s_key", "app_key", "fcnt_up",
    "fcnt_down", "dev_class", "latitude", "longitude", "location", "asset_id", "created_at",
    "updated_at", "join_eui", "dev_nonce_mode", "last_dev_nonce", "join_nonce", "mac_state",
)
_MAC_STATE_AT: Final = _DEVICE_COLUMNS.index("mac_state")


def _errorcode(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF  # primary code of an extended one


def _is_full(exc: sqlite3.Error) -> bool:
    return _errorcode(exc) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = _errorcode(exc)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _secure_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if missing; narrow an existing file (and its WAL) to 0600.

    Call it only before this process connects to ``path``: closing any descriptor of a file
    drops every POSIX lock the process holds on it, SQLite's included, after which another
    process (the CLI adding a node) would believe it is alone and rebuild the WAL index under
    our connection. Once connected, use ``_secure_sides``.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    _secure_sides(path)


def _secure_sides(path: Path) -> None:
    """Narrow the -wal/-shm files of ``path`` to 0600 (by name: no descriptor is opened)."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chmod(side, 0o600)


def _quick_check(path: Path) -> str | None:
    """None when the file passes ``PRAGMA quick_check``; otherwise why it does not."""
    try:
        conn = sqlite3.connect(path, timeout=10)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from None
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        if _is_corrupt(exc):
            return str(exc)
        raise StoreError(f"{path}: cannot check the database: {exc}") from None
    finally:
        conn.close()
    if rows and rows[0][0] == "ok":
        return None
    return "; ".join(str(r[0]) for r in rows[:3]) or "quick_check returned nothing"


def _move_aside(path: Path, reason: str) -> StoreRecovery:
    """Rename a damaged database (and its -wal/-shm, kept paired) to ``<name>.corrupt-<ts>``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
    return StoreRecovery(original=str(path), moved_to=str(target), reason=reason)


def _row_to_device(row: Sequence[Any]) -> Device:
    values = dict(zip(_DEVICE_COLUMNS, row, strict=True))
    values["mac_state"] = _load_mac_state(values["mac_state"])
    return Device(**values)


def _load_mac_state(text: str | None) -> dict[str, Any] | None:
    """The stored MAC state, or None (a damaged one is logged and dropped: defaults apply)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("a device's stored MAC state is not a JSON object; using defaults")
        return None
    return value


def _dump_mac_state(state: Mapping[str, Any] | None) -> str | None:
    return None if state is None else json.dumps(state, sort_keys=True, separators=(",", ":"))


def _row_to_record(row: Sequence[Any]) -> StoredRecord:
    return StoredRecord(*row)


class Store(CommandStoreMixin, RuleStoreMixin):
    """Device registry and outgoing record queue in one SQLite file (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path,
                 recovery: StoreRecovery | None = None) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()
        self.path = path
        self.recovery = recovery  # set when a damaged file was moved aside at open
        # dev_eui -> (next counter, persisted high-water mark): see reserve_fcnt_down. Guarded
        # by _fcnt_lock, and checked on a reader connection of its own, so handing out a
        # counter never waits for another thread's commit.
        self._fcnt_blocks: dict[str, tuple[int, int]] = {}
        self._fcnt_lock = threading.Lock()
        self._fcnt_reader: sqlite3.Connection | None = None

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Store:
        """Open (or create) the store at ``path``, checking its integrity first.

        A file that fails ``PRAGMA quick_check`` is renamed ``<name>.corrupt-<timestamp>``
        (never deleted), a ``StoreCorruptWarning`` is issued, ``store.recovery`` says what
        happened, and a fresh database is created. ``max_bytes`` caps the file's size (a
        full store raises ``StoreFullError`` rather than filling the SD card).
        """
        file = Path(path)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{file.parent}: cannot create the data directory: "
                             f"{exc.strerror or exc}") from None
        recovery = None
        if file.exists() and not file.is_file():
            raise StoreError(f"{file}: exists but is not a file; point store.path at a file")
        if file.exists() and file.stat().st_size > 0:
            reason = _quick_check(file)
            if reason is not None:
                recovery = _move_aside(file, reason)
                msg = (f"{file}: failed its integrity check ({reason}); moved to "
                       f"{recovery.moved_to} and started a fresh store")
                log.error(msg)
                warnings.warn(StoreCorruptWarning(msg), stacklevel=2)
        try:
            _secure_file(file)
            conn = sqlite3.connect(file, timeout=10, isolation_level=None,
                                   check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{file}: cannot open the database: {exc}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{file}: cannot switch to WAL mode (got {mode!r}); "
                                 "is it on a network filesystem?")
            conn.execute("PRAGMA synchronous=FULL")
            # 1 MiB of page cache (SQLite's default is ~2 MiB): the queue is written and read
            # once per record, so the OS page cache serves it as well; a Pi keeps the RAM.
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if max_bytes is not None:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(2, int(max_bytes) // page_size)}")
            store = cls(conn, file, recovery)
            store._migrate()
        except BaseException:
            conn.close()
            raise
        _secure_sides(file)  # the -wal/-shm files exist now (never reopen the db file itself)
        return store

    def close(self) -> None:
        """Checkpoint and close; further calls raise StoreError."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("%s: checkpoint at close failed: %s", self.path, exc)
            self._conn.close()
            self._conn = None
            with self._fcnt_lock:
                if self._fcnt_reader is not None:
                    self._fcnt_reader.close()
                    self._fcnt_reader = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._conn

    def _translate(self, exc: sqlite3.Error, what: str) -> StoreError:
        if _is_full(exc):
            return StoreFullError(
                f"{self.path}: {what}: database or disk is full; the write was rolled back "
                "(free disk space, or lower store.max_records so retention makes room)"
            )
        return StoreError(f"{self.path}: {what}: {exc}")

    @contextmanager
    def _write(self, what: str, *, sync: bool = True) -> Iterator[sqlite3.Cursor]:
        """One IMMEDIATE transaction under the lock; SQLite errors become StoreError(s).

        ``sync=False`` commits without its own fsync (``synchronous=NORMAL`` for this one
        transaction): only for writes whose loss on power failure is harmless, like deleting
        acknowledged records (at worst they are sent again, under the same record id). The next
        fsynced commit makes it durable along with everything before it in the WAL.
        """
        with self._lock:
            conn = self._db()
            try:
                if not sync:
                    conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                yield conn.cursor()
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, what) from None
                raise
            finally:
                if not sync:
                    try:
                        conn.execute("PRAGMA synchronous=FULL")
                    except sqlite3.Error as exc:  # never leave the connection at NORMAL
                        self._conn = None
                        conn.close()
                        raise StoreError(f"{self.path}: cannot restore synchronous=FULL "
                                         f"({exc}); the store is closed") from None

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._db()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._translate(exc, what) from None

    def _migrate(self) -> None:
        with self._write("creating the schema") as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = cur.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] or 0
        if version > LATEST_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} was written by a newer cityedge "
                f"(this one knows up to {LATEST_VERSION}); upgrade cityedge"
            )
        for number, statements in MIGRATIONS:
            if number <= version:
                continue
            with self._write(f"migrating the schema to version {number}") as cur:
                for statement in statements:
                    cur.execute(statement)
                cur.execute("DELETE FROM schema_version")
                cur.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            log.info("%s: schema migrated to version %d", self.path, number)

    def schema_version(self) -> int:
        """The schema version of the open file."""
        with self._read("reading the schema version") as conn:
            return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A small persistent value (counters, markers) by name."""
        with self._read(f"reading meta {key!r}") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, key: str, value: Any) -> None:
        """Store a small persistent value under ``key``."""
        with self._write(f"writing meta {key!r}") as cur:
            cur.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def next_session(self) -> int:
        """Increment and return the MQTT session counter (1 on the first connection ever)."""
        with self._write("incrementing the session counter") as cur:
            row = cur.execute(
                "INSERT INTO meta (key, value) VALUES ('session', 1) "
                "ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value"
            ).fetchone()
        return int(row[0])

    # ---------------------------------------------------------------- devices

    @staticmethod
    def _device_values(device: Device, now: float) -> list[Any]:
        values = [getattr(device, c) for c in _DEVICE_COLUMNS]
        values[_MAC_STATE_AT] = _dump_mac_state(device.mac_state)
        values[_DEVICE_COLUMNS.index("created_at")] = device.created_at or now
        values[_DEVICE_COLUMNS.index("updated_at")] = now
        return values

    def _conflict(self, device: Device, exc: sqlite3.IntegrityError) -> StoreError:
        """The error for a failed device write: DeviceConflictError when its DevAddr is taken."""
        other = self.device_by_addr(device.dev_addr) if device.dev_addr else None
        if other is not None and other.dev_eui != device.dev_eui:
            return DeviceConflictError(
                f"dev_addr {device.dev_addr} already belongs to device {other.dev_eui}; "
                "remove that device or give this one another DevAddr"
            )
        return StoreError(f"{self.path}: saving device {device.dev_eui}: {exc}")

    def upsert_device(self, device: Device) -> Device:
        """Insert or replace a device's entry (created_at is kept on update); returns it as
        stored."""
        return self.upsert_devices([device])[0]

    def upsert_devices(self, devices: Sequence[Device]) -> list[Device]:
        """Insert or replace several devices in ONE transaction (all or none), in order; returns
        them as stored. Raises DeviceConflictError when a DevAddr belongs to another device."""
        if not devices:
            return []
        now = time.time()
        updates = ", ".join(f"{c} = excluded.{c}" for c in _DEVICE_COLUMNS
                            if c not in ("dev_eui", "created_at"))
        insert = (f"INSERT INTO devices ({', '.join(_DEVICE_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(_DEVICE_COLUMNS))}) "
                  f"ON CONFLICT (dev_eui) DO UPDATE SET {updates}")
        select = f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices WHERE dev_eui = ?"
        rows: list[Sequence[Any]] = []
        current: Device = devices[0]
        what = (f"saving device {current.dev_eui}" if len(devices) == 1
                else f"saving {len(devices)} devices")
        try:
            with self._write(what) as cur:
                for current in devices:
                    cur.execute(insert, self._device_values(current, now))
                    rows.append(cur.execute(select, (current.dev_eui,)).fetchone())
        except sqlite3.IntegrityError as exc:
            raise self._conflict(current, exc) from None
        return [_row_to_device(row) for row in rows]

    def get_device(self, dev_eui: str) -> Device | None:
        """The device with this DevEUI (any case), or None."""
        with self._read(f"reading device {dev_eui}") as conn:
            row = conn.execute(
                f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices WHERE dev_eui = ?",
                (dev_eui.lower(),),
            ).fetchone()
        return None if row is None else _row_to_device(row)

    def device_by_addr(self, dev_addr: str) -> Device | None:
        """The device holding this DevAddr (8 hex digits, any case), or None."""
        with self._read(f"looking up DevAddr {dev_addr}") as conn:
            row = conn.execute(
                f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices WHERE dev_addr = ?",
                (dev_addr.lower(),),
            ).fetchone()
        return None if row is None else _row_to_device(row)

    def list_devices(self) -> list[Device]:
        """All registered devices, by DevEUI."""
        with self._read("listing devices") as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_DEVICE_COLUMNS)} FROM devices ORDER BY dev_eui"
            ).fetchall()
        return [_row_to_device(r) for r in rows]

    def remove_device(self, dev_eui: str) -> bool:
        """Forget a device and the DevNonces it used (its queued records stay and are still
        sent); True if it existed."""
        eui = dev_eui.lower()
        with self._write(f"removing device {dev_eui}") as cur:
            cur.execute("DELETE FROM devices WHERE dev_eui = ?", (eui,))
            existed = cur.rowcount > 0
            cur.execute("DELETE FROM dev_nonces WHERE dev_eui = ?", (eui,))
            return existed

    # ---------------------------------------------------------------- LoRaWAN sessions

    def commit_join(
        self,
        dev_eui: str,
        *,
        dev_nonce: int,
        join_nonce: int,
        dev_addr: str,
        nwk_s_key: bytes,
        app_s_key: bytes,
        mac_state: Mapping[str, Any] | None,
    ) -> bool:
        """Start a new OTAA session in ONE transaction, checking the DevNonce against replay.

        The DevNonce must be above the last one ("increasing" devices) or never used before
        ("unique" devices); when it is not, nothing changes and False is returned. Otherwise the
        nonce is recorded, the new DevAddr, session keys, JoinNonce and MAC state are stored,
        both frame counters restart, and True is returned. Raises DeviceConflictError if
        another device holds ``dev_addr`` and StoreError if the device is unknown.
        """
        eui = dev_eui.lower()
        now = time.time()
        try:
            with self._write(f"starting a session for {eui}") as cur:
                row = cur.execute(
                    "SELECT dev_nonce_mode, last_dev_nonce FROM devices WHERE dev_eui = ?", (eui,)
                ).fetchone()
                if row is None:
                    raise StoreError(f"{self.path}: join of device {eui}: it is not registered")
                mode, last = row
                if mode == "unique":
                    cur.execute(
                        "INSERT INTO dev_nonces (dev_eui, dev_nonce, used_at) VALUES (?, ?, ?) "
                        "ON CONFLICT DO NOTHING", (eui, dev_nonce, now))
                    if cur.rowcount != 1:
                        return False
                elif dev_nonce <= last:
                    return False
                cur.execute(
                    "UPDATE devices SET dev_addr = ?, nwk_s_key = ?, app_s_key = ?, "
                    "fcnt_up = -1, fcnt_down = 0, join_nonce = ?, "
                    "last_dev_nonce = max(last_dev_nonce, ?), mac_state = ?, updated_at = ? "
                    "WHERE dev_eui = ?",
                    (dev_addr.lower(), nwk_s_key, app_s_key, join_nonce, dev_nonce,
                     _dump_mac_state(mac_state), now, eui),
                )
        except sqlite3.IntegrityError:
            raise DeviceConflictError(
                f"dev_addr {dev_addr} already belongs to another device; the join of {eui} "
                "was not stored"
            ) from None
        return True

    def dev_nonce_used(self, dev_eui: str, dev_nonce: int) -> bool:
        """True if a "unique"-mode device already used this DevNonce."""
        with self._read(f"checking a DevNonce of {dev_eui}") as conn:
            row = conn.execute(
                "SELECT 1 FROM dev_nonces WHERE dev_eui = ? AND dev_nonce = ?",
                (dev_eui.lower(), dev_nonce),
            ).fetchone()
        return row is not None

    def reserve_fcnt_down(self, dev_eui: str) -> int:
        """Take the device's next downlink frame counter, never used before even across a crash;
        raises StoreError for an unknown device or an exhausted counter.

        The device's stored ``fcnt_down`` is a high-water mark: counters are reserved
        ``FCNT_DOWN_BLOCK`` at a time (one commit) and handed out from memory in between, so a
        restart starts at the mark and skips at most a block's unused rest (LoRaWAN allows
        gaps). The block is trusted only while the stored mark is still its own; a rejoin's
        reset, a registry import or another process moving it starts a new block.
        """
        eui = dev_eui.lower()
        with self._fcnt_lock:
            block = self._fcnt_blocks.pop(eui, None)
            if block is not None and block[0] < block[1] and self._stored_mark(eui) == block[1]:
                self._fcnt_blocks[eui] = (block[0] + 1, block[1])
                return block[0]
        with self._lock:  # a new block: the commit (and prefetch_fcnt_down's) one at a time
            with self._write(f"reserving downlink counters for {eui}") as cur:
                block = self._next_fcnt_block(cur, eui, None)
            if block is None:
                raise StoreError(f"{self.path}: no downlink counter for {eui}: device not "
                                 "registered or its counter is exhausted (rejoin it)")
            with self._fcnt_lock:
                self._fcnt_blocks[eui] = (block[0] + 1, block[1])
            return block[0]

    def fcnt_down_left(self, dev_eui: str) -> int:
        """How many downlink counters the device has reserved in memory (0: the next
        ``reserve_fcnt_down`` commits a block)."""
        block = self._fcnt_blocks.get(dev_eui.lower())
        return 0 if block is None else block[1] - block[0]

    def prefetch_fcnt_down(self, dev_euis: Iterable[str]) -> int:
        """Reserve a block ahead, in ONE transaction, for each device with less than half a
        block left in memory (at start, and in the background as a block runs low), so a
        downlink rarely waits for a commit; returns how many were reserved. Unknown devices
        and exhausted counters are skipped (``reserve_fcnt_down`` reports them)."""
        with self._lock:
            with self._fcnt_lock:
                low = {e: self._fcnt_blocks.get(e) for e in {d.lower() for d in dev_euis}
                       if self.fcnt_down_left(e) < FCNT_DOWN_BLOCK // 2}
            if not low:
                return 0
            blocks: dict[str, tuple[int, int]] = {}
            with self._write(f"reserving downlink counters for {len(low)} devices") as cur:
                for eui, seen in low.items():
                    block = self._next_fcnt_block(cur, eui, seen)
                    if block is not None:
                        blocks[eui] = block
            with self._fcnt_lock:  # only once committed
                for eui, (first, mark) in blocks.items():
                    seen, now = low[eui], self._fcnt_blocks.get(eui)
                    if seen is None or first != seen[0]:
                        self._fcnt_blocks[eui] = (first, mark)  # a new block from the mark
                    elif now is not None and now[1] == seen[1]:
                        # the block extended; reserve_fcnt_down may have handed out some since
                        self._fcnt_blocks[eui] = (now[0], mark)
                    # else reserve_fcnt_down dropped the block meanwhile: these are skipped
            return len(blocks)

    def _next_fcnt_block(self, cur: sqlite3.Cursor, eui: str, seen: tuple[int, int] | None
                         ) -> tuple[int, int] | None:
        """Inside a write: move the stored mark to FCNT_DOWN_BLOCK past the next counter to
        hand out (``seen``'s, the block in memory, while the stored mark is still its own;
        else the stored mark); (next, new mark), or None for an unknown device or an exhausted
        counter."""
        row = cur.execute("SELECT fcnt_down FROM devices WHERE dev_eui = ?", (eui,)).fetchone()
        if row is None:
            return None
        stored = int(row[0])
        first = seen[0] if seen is not None and seen[1] == stored else stored
        if first >= _FCNT_DOWN_MAX:
            return None
        mark = max(stored, min(first + FCNT_DOWN_BLOCK, _FCNT_DOWN_MAX))
        if mark != stored:
            cur.execute("UPDATE devices SET fcnt_down = ? WHERE dev_eui = ?", (mark, eui))
        return first, mark

    def _stored_mark(self, eui: str) -> int | None:
        """The device's stored fcnt_down, read on the counters' own reader connection (WAL:
        it never waits for a commit in progress). Call under ``_fcnt_lock``."""
        try:
            if self._fcnt_reader is None:
                if self._conn is None:
                    raise StoreError(f"{self.path}: the store is closed")
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._fcnt_reader = sqlite3.connect(uri, uri=True, timeout=10,
                                                    isolation_level=None,
                                                    check_same_thread=False)
            row = self._fcnt_reader.execute("SELECT fcnt_down FROM devices WHERE dev_eui = ?",
                                            (eui,)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc, f"reading the downlink counter of {eui}") from None
        return None if row is None else int(row[0])

    def save_mac_states(self, states: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Store the MAC state of several devices in one transaction."""
        if not states:
            return
        with self._write(f"saving the MAC state of {len(states)} devices") as cur:
            self._put_mac_states(cur, states)

    @staticmethod
    def _put_mac_states(cur: sqlite3.Cursor, states: Mapping[str, Mapping[str, Any] | None]
                        ) -> None:
        cur.executemany(
            "UPDATE devices SET mac_state = ? WHERE dev_eui = ?",
            [(_dump_mac_state(state), eui.lower()) for eui, state in states.items()],
        )

    # ---------------------------------------------------------------- records

    @staticmethod
    def _body(item: Accepted | NewRecord) -> bytes | None:
        if item.body is not None:
            return item.body
        try:
            return encode_pack(item.records or [])
        except SenMLError as exc:
            log.error("record %s not stored: its SenML does not encode: %s", item.rid, exc)
            return None

    def accept_uplinks(
        self,
        batch: Sequence[Accepted],
        mac_states: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> list[bool]:
        """Commit a burst of accepted uplinks in ONE transaction (one fsync: group commit).

        Per item: insert its record and move the device's fcnt_up forward (never back).
        ``mac_states`` (dev_eui -> MAC state) are saved in the same transaction.
        Returns, per item, True if stored now, False if its rid was already stored (a
        duplicate) or its records could not be encoded (logged). Raises StoreFullError (with
        nothing of the batch stored) when the database or disk is full.
        """
        results = [False] * len(batch)
        bodies = [self._body(item) for item in batch]
        if not batch and not mac_states:
            return results
        now = time.time()
        with self._write(f"committing {len(batch)} uplinks") as cur:
            if mac_states:
                self._put_mac_states(cur, mac_states)
            results = self._insert_records(cur, batch, bodies, now)
            newest: dict[str, int] = {}  # device -> highest counter stored now
            for item, stored in zip(batch, results, strict=True):
                if stored:
                    eui = item.dev_eui.lower()
                    newest[eui] = max(newest.get(eui, -1), item.fcnt_up)
            if newest:
                cur.executemany(
                    "UPDATE devices SET fcnt_up = ?, updated_at = ? "
                    "WHERE dev_eui = ? AND fcnt_up < ?",
                    [(fcnt, now, eui, fcnt) for eui, fcnt in newest.items()],
                )
        return results

    @staticmethod
    def _insert_records(cur: sqlite3.Cursor, items: Sequence[Accepted | NewRecord],
                        bodies: Sequence[bytes | None], now: float) -> list[bool]:
        """Insert the items that have a body, in one prepared statement, skipping rids already
        stored; per item True if stored now. Runs inside the caller's transaction, so the
        seqs above the last one before it are exactly this insert's."""
        rows = [(item.rid, item.dev_eui.lower(), item.kind, item.priority,
                 item.created_at if item.created_at is not None else now, body)
                for item, body in zip(items, bodies, strict=True) if body is not None]
        results = [False] * len(items)
        if not rows:
            return results
        row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        last = row[0] if row else 0
        cur.executemany(
            "INSERT INTO records (rid, dev_eui, kind, priority, created_at, body) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rid) DO NOTHING", rows)
        if cur.rowcount == len(rows):
            inserted = {r[0] for r in rows}
        else:  # some were already stored (or one rid came twice): ask which went in
            inserted = {rid for (rid,) in cur.execute(
                "SELECT rid FROM records WHERE seq > ?", (last,))}
        for i, (item, body) in enumerate(zip(items, bodies, strict=True)):
            if body is not None and item.rid in inserted:
                inserted.discard(item.rid)  # the same rid twice: only the first is new
                results[i] = True
        return results

    def add_records(self, records: Sequence[NewRecord]) -> list[bool]:
        """Commit events / command statuses / status reports in one transaction; per item True
        if stored, False if its rid was already there (or it did not encode, logged)."""
        bodies = [self._body(item) for item in records]
        if not records:
            return []
        with self._write(f"committing {len(records)} records") as cur:
            return self._insert_records(cur, records, bodies, time.time())

    def pending(self, limit: int, after_seq: int = 0) -> list[StoredRecord]:
        """Up to ``limit`` records with seq > ``after_seq``, in send (seq) order."""
        with self._read("reading pending records") as conn:
            rows = conn.execute(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [_row_to_record(r) for r in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete records by seq (after the broker acknowledged them) in one statement, without
        an fsync of its own (see ``_write``); returns how many."""
        keys = seqs if isinstance(seqs, list) else list(seqs)
        if not keys:
            return 0
        # No fsync of its own: a delete lost to a power cut only means a resend (same rid).
        with self._write(f"deleting {len(keys)} records", sync=False) as cur:
            cur.execute("DELETE FROM records WHERE seq IN (SELECT value FROM json_each(?))",
                        (json.dumps(keys),))
            return cur.rowcount

    def count(self) -> int:
        """How many records wait for the broker."""
        with self._read("counting records") as conn:
            return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])

    def stats(self) -> StoreStats:
        """Counts and sizes for the status page."""
        with self._read("reading statistics") as conn:
            total, routine, oldest = conn.execute(
                "SELECT count(*), coalesce(sum(priority = 0), 0), min(created_at) FROM records"
            ).fetchone()
            devices = conn.execute("SELECT count(*) FROM devices").fetchone()[0]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            row = conn.execute("SELECT value FROM meta WHERE key = 'session'").fetchone()
        return StoreStats(
            records=int(total),
            routine=int(routine),
            priority=int(total) - int(routine),
            oldest_created_at=oldest,
            devices=int(devices),
            db_bytes=int(pages) * int(page_size),
            sessions=int(row[0]) if row else 0,
        )

    def enforce_retention(
        self, max_records: int, max_age_s: float, *, now: float | None = None
    ) -> RetentionResult:
        """Drop routine (priority 0) records older than ``max_age_s``, then the oldest routine
        ones beyond ``max_records``; alarms and command results (priority >= 1) are kept.

        Works in chunks of RETENTION_CHUNK rows, each its own transaction, so uplink commits
        interleave instead of waiting for the whole clean-up.
        """
        cutoff = (time.time() if now is None else now) - max_age_s
        by_age = 0
        while True:
            with self._write("dropping old routine records") as cur:
                cur.execute(
                    "DELETE FROM records WHERE seq IN (SELECT seq FROM records "
                    "WHERE priority = 0 AND created_at < ? ORDER BY created_at LIMIT ?)",
                    (cutoff, RETENTION_CHUNK),
                )
                n = cur.rowcount
            by_age += n
            if n < RETENTION_CHUNK:
                break
        by_count = 0
        while True:
            excess = self.count() - max_records
            if excess <= 0:
                break
            with self._write("dropping routine records over the limit") as cur:
                cur.execute(
                    "DELETE FROM records WHERE seq IN (SELECT seq FROM records "
                    "WHERE priority = 0 ORDER BY created_at, seq LIMIT ?)",
                    (min(excess, RETENTION_CHUNK),),
                )
                n = cur.rowcount
            by_count += n
            if n == 0:
                break  # only priority records are left over the limit: keep them
        remaining = self.count()
        result = RetentionResult(by_age, by_count, remaining, max(0, remaining - max_records))
        if result.dropped:
            log.warning("retention dropped %d routine records (%d by age, %d over %d); "
                        "%d remain", result.dropped, by_age, by_count, max_records, remaining)
        return result
