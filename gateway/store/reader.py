"""Reading the store's backlog per device, so a long outage drains in few, large signed packs.

``Store.pending`` hands records back in global seq order. After an outage that order interleaves
every device (10,000 nodes reporting in turn), so a window of a few thousand records holds one
or two records per device and joining them saves almost no signatures. ``BacklogReader`` plans
instead: it scans only ``(seq, kind, dev_eui)`` of a large span of the queue, groups the seqs per
device (8 bytes each, in ``array('q')``), and then fetches the bodies of one group of packs at a
time by seq. Per-device order is the seq order inside each group.

It uses a second SQLite connection of its own, read-only by ``PRAGMA query_only``, on the store's
file: WAL mode lets it read committed data while the agent commits and while the forwarder's
previous delete is still being synced (the store serialises its own calls behind one lock).
Deletions still go through ``Store.delete``. The forwarder reads live windows through it too.
It lives in the store package next to ``gateway.store.schema`` (the ``records`` table), so the
schema is known in one place.
"""

from __future__ import annotations

import json
import sqlite3
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from gateway.store.model import StoredRecord, StoreError
from gateway.store.schema import RECORD_COLUMNS

__all__ = ["BacklogReader", "Plan"]

FETCH_CHUNK: Final = 20_000  # seqs per body query


class Plan:
    """The seqs of a span of the backlog, grouped per (kind, device) in first-seen order."""

    __slots__ = ("groups", "last_seq", "rows")

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str], array[int]] = {}
        self.last_seq = 0
        self.rows = 0


class BacklogReader:
    """Read-only view of the store's record queue for planning and fetching backlog packs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the backlog for reading: {exc}") from None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the backlog reader is closed")
        return self._conn

    def close(self) -> None:
        """Close the reading connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def plan(self, after_seq: int, limit: int) -> Plan:
        """Group the seqs of up to ``limit`` records after ``after_seq`` per (kind, device)."""
        plan = Plan()
        groups = plan.groups
        try:
            rows = self._db().execute(
                "SELECT seq, kind, dev_eui FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            for seq, kind, dev_eui in rows:
                group = groups.get((kind, dev_eui))
                if group is None:
                    group = groups[(kind, dev_eui)] = array("q")
                group.append(seq)
                plan.last_seq = seq
                plan.rows += 1
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: planning the backlog: {exc}") from None
        return plan

    def pending(self, limit: int, after_seq: int = 0) -> list[StoredRecord]:
        """Up to ``limit`` records with seq > ``after_seq`` in seq order (as ``Store.pending``,
        but without waiting for the store's lock while it commits)."""
        try:
            rows = self._db().execute(
                f"SELECT {RECORD_COLUMNS} FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading pending records: {exc}") from None
        return [StoredRecord(*row) for row in rows]

    def fetch(self, seqs: Sequence[int]) -> dict[int, StoredRecord]:
        """The records still stored among ``seqs`` (retention may have dropped some), by seq."""
        out: dict[int, StoredRecord] = {}
        conn = self._db()
        try:
            for start in range(0, len(seqs), FETCH_CHUNK):
                chunk = json.dumps(list(seqs[start:start + FETCH_CHUNK]))
                for row in conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records "
                    "WHERE seq IN (SELECT value FROM json_each(?))", (chunk,),
                ):
                    out[row[0]] = StoredRecord(*row)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading backlog records: {exc}") from None
        return out
