"""The store's side of the command path: command rows, replay ids, calendars (migration 3).

``CommandStoreMixin`` is mixed into ``Store``: it uses the store's one connection through
``_write``/``_read``, so every method below is one transaction under the store's lock. A command
row and the status record that announces it are always committed together, so a crash never
leaves a status published for a row that does not exist (or the other way round).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Final

from gateway.commands.actions import ACTIONS
from gateway.commands.model import FINAL, OPEN, CommandRow
from gateway.store.model import NewRecord, StoreError

__all__ = ["Admit", "CommandStoreMixin", "ReplayError"]

# (kid, command id, keep_until): a command id to spend in the transaction that stores its fate.
Admit = tuple[str, str, float]

_COLUMNS: Final = (
    "row_id", "cmd_id", "kid", "key_name", "dev_eui", "grp", "action", "args", "issued_at",
    "expires_at", "status", "status_n", "reason", "answer", "node_seq", "fcnt_down", "attempts",
    "created_at", "updated_at",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM commands"
_OPEN_SQL: Final = "(" + ", ".join(f"'{s}'" for s in sorted(OPEN)) + ")"
_ANY_STATUS_SQL: Final = "(" + ", ".join(f"'{s}'" for s in sorted(OPEN | FINAL)) + ")"


def _row(values: Sequence[Any]) -> CommandRow:
    v = dict(zip(_COLUMNS, values, strict=True))
    return CommandRow(
        cmd_id=v["cmd_id"], kid=v["kid"], key_name=v["key_name"], dev_eui=v["dev_eui"],
        action=v["action"], args=json.loads(v["args"]), issued_at=v["issued_at"],
        expires_at=v["expires_at"], group=v["grp"], status=v["status"],
        status_n=v["status_n"], reason=v["reason"], answer=v["answer"],
        node_seq=v["node_seq"], fcnt_down=v["fcnt_down"], attempts=v["attempts"],
        row_id=v["row_id"], created_at=v["created_at"], updated_at=v["updated_at"],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class ReplayError(StoreError):
    """The command id was already used with its key: nothing of the command was stored."""


def _spend_id(cur: sqlite3.Cursor, admit: Admit) -> bool:
    """Record (kid, id) until keep_until; False if it was already there."""
    cur.execute("INSERT INTO command_ids (kid, cmd_id, keep_until) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING", admit)
    return bool(cur.rowcount == 1)


class CommandStoreMixin:
    """Command persistence for ``Store`` (see the module docstring)."""

    # Provided by Store.
    _write: Any
    _read: Any
    _body: Any
    _insert_records: Any
    path: Any

    # ------------------------------------------------------------ replay protection

    def admit_command_id(self, kid: str, cmd_id: str, keep_until: float) -> bool:
        """Remember (kid, id) until ``keep_until``; False if it was already seen (a replay).
        The command path spends ids inside ``add_commands``/``add_rejection`` instead."""
        with self._write(f"admitting command id {cmd_id!r}") as cur:
            return _spend_id(cur, (kid, cmd_id, keep_until))

    def command_id_seen(self, kid: str, cmd_id: str) -> bool:
        """True if (kid, id) was spent and not yet pruned (read only: intake's replay check)."""
        reader: AbstractContextManager[sqlite3.Connection] = self._read(
            f"checking command id {cmd_id!r}")
        with reader as conn:
            row = conn.execute("SELECT 1 FROM command_ids WHERE kid = ? AND cmd_id = ?",
                               (kid, cmd_id)).fetchone()
        return row is not None

    def add_rejection(self, record: NewRecord, *, admit: Admit | None = None) -> None:
        """Store a rejection's status ``record`` and, in the same transaction, spend its id
        (``admit``) so a command refused after the replay check can never be sent again."""
        body = self._body(record)
        with self._write("storing a command rejection") as cur:
            if admit is not None:
                _spend_id(cur, admit)
            self._insert_records(cur, [record], [body], time.time())

    def prune_command_ids(self, now: float) -> int:
        """Forget ids that can no longer be valid (kept until their exp plus skew)."""
        with self._write("pruning command ids") as cur:
            cur.execute("DELETE FROM command_ids WHERE keep_until < ?", (now,))
            return int(cur.rowcount)

    # ------------------------------------------------------------ command rows

    def add_commands(self, rows: list[CommandRow], records: list[NewRecord], *,
                     admit: Admit | None = None) -> list[CommandRow]:
        """Insert ``rows`` (status accepted, node_seq allocated per device) and their status
        ``records`` in ONE transaction; returns copies with ``row_id`` and ``node_seq`` set.
        With ``admit`` the command id is spent first, in the same transaction (one fsync for
        the whole acceptance): ReplayError, and nothing stored, when it was already spent."""
        if not rows and not records and admit is None:
            return []
        bodies = [self._body(r) for r in records]
        now = time.time()
        out: list[CommandRow] = []
        try:
            with self._write(f"storing {len(rows)} command rows") as cur:
                if admit is not None and not _spend_id(cur, admit):
                    raise ReplayError(f"{self.path}: command id {admit[1]!r} was already used "
                                      "with this key")
                for row in rows:
                    out.append(self._insert_command(cur, row, now))
                self._insert_records(cur, records, bodies, now)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: storing command rows: {exc}") from None
        return out

    @staticmethod
    def _insert_command(cur: sqlite3.Cursor, row: CommandRow, now: float) -> CommandRow:
        eui = row.dev_eui.lower()
        seq = None
        action = ACTIONS.get(row.action)
        if action is None or action.node_command is not None:
            # "status IN (every status)" lets SQLite seek the (status, dev_eui) index
            # instead of scanning the whole table for a device's last row.
            last = cur.execute(
                "SELECT node_seq FROM commands WHERE row_id = (SELECT max(row_id) FROM commands "
                f"WHERE status IN {_ANY_STATUS_SQL} AND dev_eui = ? AND node_seq IS NOT NULL)",
                (eui,)).fetchone()
            seq = 0 if last is None else (last[0] + 1) % 256
        created = row.created_at or now
        stored = replace(row, dev_eui=eui, status="accepted", node_seq=seq,
                         created_at=created, updated_at=row.updated_at or created)
        cur.execute(
            f"INSERT INTO commands ({', '.join(_COLUMNS[1:])}) "
            f"VALUES ({', '.join('?' * (len(_COLUMNS) - 1))})",
            (stored.cmd_id, stored.kid, stored.key_name, eui, stored.group, stored.action,
             _dumps(stored.args), stored.issued_at, stored.expires_at, stored.status,
             stored.status_n, stored.reason, stored.answer, seq, stored.fcnt_down,
             stored.attempts, stored.created_at, stored.updated_at))
        stored.row_id = cur.lastrowid
        return stored

    def update_command(self, row: CommandRow, record: NewRecord | None) -> None:
        """Write the row's status, status_n, reason, answer, fcnt_down and attempts together
        with its status ``record`` in one transaction; sets ``row.updated_at``."""
        if row.row_id is None:
            raise ValueError(f"command {row.cmd_id} for {row.dev_eui}: not stored yet (no row_id)")
        bodies = [] if record is None else [self._body(record)]
        now = time.time()
        try:
            with self._write(f"updating command {row.cmd_id} for {row.dev_eui}") as cur:
                cur.execute(
                    "UPDATE commands SET status = ?, status_n = ?, reason = ?, answer = ?, "
                    "fcnt_down = ?, attempts = ?, updated_at = ? WHERE row_id = ?",
                    (row.status, row.status_n, row.reason, row.answer, row.fcnt_down,
                     row.attempts, now, row.row_id))
                if cur.rowcount != 1:
                    raise StoreError(f"{self.path}: command row {row.row_id} does not exist")
                if record is not None:
                    self._insert_records(cur, [record], bodies, now)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: updating command {row.cmd_id}: status "
                             f"{row.status!r}: {exc}") from None
        row.updated_at = now

    def open_commands(self, dev_eui: str | None = None) -> list[CommandRow]:
        """Rows still in progress (accepted, queued, sent), oldest first."""
        sql = f"{_SELECT} WHERE status IN {_OPEN_SQL}"
        params: tuple[Any, ...] = ()
        if dev_eui is not None:
            sql += " AND dev_eui = ?"
            params = (dev_eui.lower(),)
        return self._select(sql + " ORDER BY row_id", params, "reading open commands")

    def command_by_seq(self, dev_eui: str, node_seq: int) -> CommandRow | None:
        """The newest open row of ``dev_eui`` sent with ``node_seq``, or None."""
        rows = self._select(
            f"{_SELECT} WHERE status IN {_OPEN_SQL} AND dev_eui = ? AND node_seq = ? "
            "ORDER BY row_id DESC LIMIT 1", (dev_eui.lower(), node_seq),
            f"finding the command of {dev_eui} seq {node_seq}")
        return rows[0] if rows else None

    def get_commands(self, cmd_id: str, kid: str | None = None) -> list[CommandRow]:
        """Every row of one command id (one per device), optionally of one key only."""
        sql, params = f"{_SELECT} WHERE cmd_id = ?", (cmd_id,)
        if kid is not None:
            sql, params = sql + " AND kid = ?", (cmd_id, kid)
        return self._select(sql + " ORDER BY row_id", params, f"reading command {cmd_id!r}")

    def _select(self, sql: str, params: tuple[Any, ...], what: str) -> list[CommandRow]:
        reader: AbstractContextManager[sqlite3.Connection] = self._read(what)
        with reader as conn:
            return [_row(r) for r in conn.execute(sql, params).fetchall()]

    # ------------------------------------------------------------ calendars

    def save_calendar(self, dev_eui: str, points: list[dict[str, Any]], cmd_id: str) -> None:
        """Remember the calendar a lighting node accepted, to re-send it when it rejoins."""
        with self._write(f"saving the calendar of {dev_eui}") as cur:
            cur.execute(
                "INSERT INTO calendars (dev_eui, points, cmd_id, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (dev_eui) DO UPDATE SET points = excluded.points, "
                "cmd_id = excluded.cmd_id, updated_at = excluded.updated_at",
                (dev_eui.lower(), _dumps(points), cmd_id, time.time()))

    def calendar(self, dev_eui: str) -> list[dict[str, Any]] | None:
        """The last calendar ``dev_eui`` accepted (its points), or None."""
        reader: AbstractContextManager[sqlite3.Connection] = self._read(
            f"reading the calendar of {dev_eui}")
        with reader as conn:
            row = conn.execute("SELECT points FROM calendars WHERE dev_eui = ?",
                               (dev_eui.lower(),)).fetchone()
        return None if row is None else list(json.loads(row[0]))
