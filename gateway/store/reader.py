"""Reading the store's backlog per device, so a long outage drains in few, large signed packs.

``Store.pending`` hands records back in global seq order. After an outage that order interleaves
every device (10,000 nodes reporting in turn), so a window of a few thousand records holds one
or two records per device and joining them saves almost no signatures. ``BacklogReader`` plans
instead: it scans only ``(seq, kind, dev_eui)`` of a large span of the queue, has SQLite sort
them per device (8 bytes a seq, in one ``array('q')``), and then fetches the bodies of one group
of packs at a time by seq. Per-device order is the seq order inside each group.

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from gateway.store.model import StoredRecord, StoreError
from gateway.store.schema import RECORD_COLUMNS

__all__ = ["BacklogReader", "Plan", "Row"]

Row = tuple[int, str, str, str, int, float, bytes]
"""A records row in ``RECORD_COLUMNS`` order: seq, rid, dev_eui, kind, priority, created_at,
body."""

FETCH_CHUNK: Final = 20_000  # seqs per body query
_SEQ32_ROOM: Final = 1 << 31  # 4-byte seqs below this (room above for commits meanwhile)
CACHE_KIB: Final = 512  # page cache of the reading connection (SQLite default: 2,000 KiB)


class Plan:
    """The seqs of a span of the backlog, grouped per (kind, device).

    Compact on purpose (a plan spans 262,144 records of up to 10,000 devices): one flat array
    of seqs (4 bytes each while they fit, else 8), each group's run consecutive and in seq
    order, and the offset where each run starts; no per-device Python objects (those cost
    ~10 MB per plan). ``seqs`` is the reader's reusable buffer (only its first ``rows`` count):
    a plan is valid until the same reader makes the next one.
    """

    __slots__ = ("last_seq", "rows", "seqs", "starts")

    def __init__(self) -> None:
        self.seqs: array[int] = array("q")
        self.starts: array[int] = array("q")
        self.last_seq = 0
        self.rows = 0

    def runs(self) -> Iterator[array[int]]:
        """Each group's seqs (a copy of its run), group after group."""
        seqs, starts = self.seqs, self.starts
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else self.rows
            yield seqs[start:end]

    @property
    def groups(self) -> dict[int, array[int]]:
        """The runs by group number (for inspection; ``runs`` does not build a dict)."""
        return dict(enumerate(self.runs()))


class BacklogReader:
    """Read-only view of the store's record queue for planning and fetching backlog packs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA query_only = 1")
            self._seqs: array[int] | None = None
            # It reads each page once, in order: a small cache (which also bounds the plan's
            # sorter before it spills to a temporary file) keeps the drain's memory low.
            self._conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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
        """Group the seqs of up to ``limit`` records after ``after_seq`` per (kind, device).

        SQLite sorts the span by (kind, device, seq) in C, within its own bounded sorter
        memory, so Python only stores seqs and notes where each group starts. The seq array is
        allocated at its full size at once (not grown), so each plan reuses the memory the
        previous one freed instead of fragmenting the heap.
        """
        plan = Plan()
        last = 0
        rows = 0
        previous: tuple[str, str] | None = None
        try:
            conn = self._db()
            (highest,) = conn.execute("SELECT max(seq) FROM records").fetchone()
            # 4 bytes a seq while seqs fit (~2 billion records), else 8
            typecode = "I" if highest is None or highest < _SEQ32_ROOM else "q"
            seqs = plan.seqs = self._buffer(typecode, limit)
            starts = plan.starts
            cursor = conn.execute(
                "SELECT seq, kind, dev_eui FROM (SELECT seq, kind, dev_eui FROM records "
                "WHERE seq > ? ORDER BY seq LIMIT ?) ORDER BY kind, dev_eui, seq",
                (after_seq, limit),
            )
            for seq, kind, dev_eui in cursor:
                if previous is None or dev_eui != previous[1] or kind != previous[0]:
                    starts.append(rows)
                    previous = (kind, dev_eui)
                seqs[rows] = seq
                rows += 1
                last = max(last, seq)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: planning the backlog: {exc}") from None
        plan.last_seq = last
        plan.rows = rows
        return plan

    def _buffer(self, typecode: str, limit: int) -> array[int]:
        """The seq array plans fill: allocated once at its full size and reused (a plan is
        read before the next is made), so draining neither grows arrays nor fragments the
        heap, and a short plan costs no large allocation."""
        buffer = self._seqs
        if buffer is None or buffer.typecode != typecode or len(buffer) < limit:
            self._seqs = None  # the old one goes before the new one is allocated
            buffer = self._seqs = array(typecode, [0]) * max(0, limit)
        return buffer

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
        return {seq: StoredRecord(*row) for seq, row in self.fetch_rows(seqs).items()}

    def fetch_rows(self, seqs: Sequence[int]) -> dict[int, Row]:
        """As ``fetch``, but the plain rows (``RECORD_COLUMNS`` order): the drain packs their
        bodies and lets them go at once, keeping only what it needs after the broker's ack."""
        out: dict[int, Row] = {}
        conn = self._db()
        try:
            for start in range(0, len(seqs), FETCH_CHUNK):
                chunk = json.dumps(list(seqs[start:start + FETCH_CHUNK]))
                for row in conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM records "
                    "WHERE seq IN (SELECT value FROM json_each(?))", (chunk,),
                ):
                    out[row[0]] = row
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: reading backlog records: {exc}") from None
        return out
