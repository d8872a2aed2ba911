"""Command statuses as records of kind "cmd-status": a SenML pack per state change (design §5).

Each pack is stored like any other record and then signed and published by the forwarder on
``{prefix}/cmd-status/{dev_eui}``. The record id ``{gateway_id}:{dev_eui}:cmd:{kid}:{id}:{n}``
numbers the changes of one command row, so a resend carries the same id and every change a new
one; the key id is in it because command ids are unique per issuing key only.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from gateway.commands.model import CommandRow
from gateway.store.model import NewRecord

__all__ = ["MAX_DETAIL", "TARGET_RE", "rejection_record", "status_record", "status_topic_level"]

PRIORITY: Final = 1  # statuses survive retention like alarms
MAX_DETAIL: Final = 200
# A topic level we publish a rejection under as-is: safe in a SenML name and in a record id.
TARGET_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
INVALID_TARGET: Final = "invalid-target"


def status_topic_level(target: str) -> str:
    """Where a rejection for ``target`` (the topic's last level) is published: the target
    itself (lower-case) when it is a plain name or EUI, else "invalid-target"."""
    return target.lower() if TARGET_RE.fullmatch(target) else INVALID_TARGET


def _pack(rid: str, level: str, now: float, cmd_id: str | None,
          fields: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    head: dict[str, Any] = {"bn": f"urn:dev:mac:{level}:", "bt": now, "n": "cmd", "rid": rid}
    if cmd_id is not None:
        head["vs"] = cmd_id
    records = [head]
    for name, value in fields:
        if value is None:
            continue
        label = "vs" if isinstance(value, str) else "v"
        records.append({"n": name, label: value, "rid": rid})
    return records


def _detail(text: str | None) -> str | None:
    if text is None:
        return None
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def status_record(gateway_id: str, row: CommandRow, now: float, *,
                  detail: str | None = None) -> NewRecord:
    """The status record of ``row`` as it stands (status, reason, answer, counters); its rid
    ends with ``row.status_n``."""
    eui = row.dev_eui.lower()
    rid = f"{gateway_id}:{eui}:cmd:{row.kid}:{row.cmd_id}:{row.status_n}"
    records = _pack(rid, eui, now, row.cmd_id, [
        ("status", row.status), ("action", row.action), ("reason", row.reason),
        ("detail", _detail(detail)), ("answer", row.answer), ("group", row.group),
        ("key", row.key_name), ("fcnt_down", row.fcnt_down),
        ("attempts", row.attempts or None),
    ])
    return NewRecord(rid=rid, dev_eui=eui, kind="cmd-status", records=records,
                     priority=PRIORITY, created_at=now)


def rejection_record(gateway_id: str, target: str, reason: str, detail: str, now: float, *,
                     cmd_id: str | None, action: str | None, key_name: str | None) -> NewRecord:
    """The "rejected" record of a command refused at intake, for the topic of ``target``.

    Its rid ends with "rejected:<random>" instead of a status number: the same command id may
    be refused more than once (a replay of an accepted command is refused under the id of the
    accepted one), and each refusal is its own record.
    """
    level = status_topic_level(target)
    rid = f"{gateway_id}:{level}:cmd:{cmd_id or '-'}:rejected:{uuid.uuid4().hex[:12]}"
    records = _pack(rid, level, now, cmd_id, [
        ("status", "rejected"), ("action", action), ("reason", reason),
        ("detail", _detail(detail)), ("key", key_name),
        ("target", None if level == target.lower() else _detail(target)),
    ])
    return NewRecord(rid=rid, dev_eui=level, kind="cmd-status", records=records,
                     priority=PRIORITY, created_at=now)
