"""Watering rules' memory in the store: one JSON state per (rule, device), saved with its events.

The state and the event records it produced go in ONE transaction, so after a crash either both
are there or neither: an opening is never forgotten while its event survives, nor the reverse.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.store.model import NewRecord

if TYPE_CHECKING:
    from gateway.store.db import Store

    _Base = Store
else:
    _Base = object

__all__ = ["RuleStoreMixin"]

log = logging.getLogger("cityedge.store")


def _load(rule: str, dev_eui: str, text: str) -> dict[str, Any] | None:
    """The stored state, or None when it is not a JSON object (logged: the rule starts afresh)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        log.warning("rule %s, device %s: stored state is not a JSON object; starting afresh",
                    rule, dev_eui)
        return None
    return value


class RuleStoreMixin(_Base):
    """``Store`` methods for the ``rule_state`` table (migration 3)."""

    def rule_state(self, rule: str, dev_eui: str) -> dict[str, Any] | None:
        """The saved state of ``rule`` for ``dev_eui``, or None if there is none."""
        eui = dev_eui.lower()
        with self._read(f"reading the state of rule {rule} for {eui}") as conn:
            row = conn.execute("SELECT state FROM rule_state WHERE rule = ? AND dev_eui = ?",
                               (rule, eui)).fetchone()
        return None if row is None else _load(rule, eui, row[0])

    def rule_states(self, rule: str) -> dict[str, dict[str, Any]]:
        """Every saved state of ``rule``, by device (for housekeeping after a restart)."""
        with self._read(f"reading the states of rule {rule}") as conn:
            rows = conn.execute("SELECT dev_eui, state FROM rule_state WHERE rule = ? "
                                "ORDER BY dev_eui", (rule,)).fetchall()
        states = {eui: _load(rule, eui, text) for eui, text in rows}
        return {eui: state for eui, state in states.items() if state is not None}

    def save_rule_state(self, rule: str, dev_eui: str, state: dict[str, Any],
                        records: Sequence[NewRecord] = ()) -> None:
        """Store ``state`` and the rule's event ``records`` in one transaction.

        A record whose rid is already stored is left as it was (same rid = same event).
        Raises ValueError if the state is not JSON-able or a record does not encode, before
        anything is written.
        """
        eui = dev_eui.lower()
        text = json.dumps(state, sort_keys=True, separators=(",", ":"), allow_nan=False)
        bodies = [self._body(item) for item in records]
        for item, body in zip(records, bodies, strict=True):
            if body is None:
                raise ValueError(f"rule {rule}: event {item.rid} does not encode as SenML")
        now = time.time()
        with self._write(f"saving the state of rule {rule} for {eui}") as cur:
            cur.execute(
                "INSERT INTO rule_state (rule, dev_eui, state, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (rule, dev_eui) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (rule, eui, text, now),
            )
            for item, body in zip(records, bodies, strict=True):
                cur.execute(
                    "INSERT INTO records (rid, dev_eui, kind, priority, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rid) DO NOTHING",
                    (item.rid, item.dev_eui.lower(), item.kind, item.priority,
                     item.created_at if item.created_at is not None else now, body),
                )
