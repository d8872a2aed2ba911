"""Following a command: its signed cmd-status records, per device, until each reaches a final state.

A status is a SenML pack on ``{prefix}/cmd-status/{dev_eui}`` (docs/asyncapi.yaml,
``CommandStatusPack``): records named ``cmd`` (the id), ``status``, ``reason``, ``answer``...
Only verified messages count; duplicates (same rid) and stale ones (a lower sequence number than
already seen for that device) are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cityedge.hypervisor.command import TargetKind, command_topic
from cityedge.hypervisor.messages import HypervisorMessage, decode_message
from gateway.commands.model import FINAL

__all__ = ["CommandProgress", "StatusUpdate", "describe", "follow", "publish_command", "status_topic",
           "status_update", "subscribe_statuses"]

log = logging.getLogger(__name__)

STATUSES = frozenset({"accepted", "rejected", "queued", "sent", "acked", "failed", "expired"})
_TEXT_FIELDS = ("cmd", "status", "action", "reason", "detail", "answer", "group", "key")
_NUMBER_FIELDS = ("fcnt_down", "attempts")


@dataclass(frozen=True)
class StatusUpdate:
    """One verified state change of a command on one device (or of a command rejected whole)."""

    cmd_id: str  # "" in a rejection whose id the gateway could not read (see ``follow``)
    target: str  # the topic's last level: the device, or what a rejected command named
    status: str
    rid: str
    n: int | None = None  # the status's sequence number for this (command, device), from the rid
    action: str | None = None
    reason: str | None = None
    detail: str | None = None
    answer: str | None = None  # the node's own answer
    group: str | None = None
    key: str | None = None  # the trusted key's name, as the gateway's config calls it
    fcnt_down: int | None = None
    attempts: int | None = None
    time: float | None = None
    historical: bool = False
    kid: str | None = None  # the gateway key that signed it
    topic: str = ""

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def status_update(msg: HypervisorMessage) -> StatusUpdate | None:
    """The status a verified cmd-status message carries; None when it is not one we can read."""
    if not msg.verified or msg.kind != "cmd-status" or not msg.records:
        return None
    fields: dict[str, Any] = {}
    for rec in msg.records:
        name = rec.get("n")
        if name in _TEXT_FIELDS and isinstance(rec.get("vs"), str):
            fields[name] = rec["vs"]
        elif name in _NUMBER_FIELDS and type(rec.get("v")) is int:
            fields[name] = rec["v"]
    rid = msg.records[0].get("rid")
    named = any(rec.get("n") == "cmd" for rec in msg.records)
    if not named or fields.get("status") not in STATUSES or not isinstance(rid, str):
        return None
    if "cmd" not in fields and fields["status"] != "rejected":
        return None  # only a rejection may lack the id (the gateway could not read it)
    tail = rid.rsplit(":", 1)[-1]
    return StatusUpdate(
        cmd_id=fields.pop("cmd", ""), target=msg.dev_eui or "", status=fields.pop("status"), rid=rid,
        n=int(tail) if tail.isascii() and tail.isdigit() else None, time=msg.records[0].get("bt"),
        historical=msg.historical, kid=msg.kid, topic=msg.topic, **fields,
    )


def describe(u: StatusUpdate) -> str:
    """One line for a person: the target, the status, and what explains it."""
    parts = [f"{u.target}  {u.status}"]
    if u.n == 0 and u.action:
        parts.append(f"action={u.action}")
    for name in ("reason", "answer", "group", "key", "fcnt_down", "attempts"):
        value = getattr(u, name)
        if value is not None and not (name in ("group", "key") and u.n):
            parts.append(f"{name}={value}")
    if u.detail:
        parts.append(f"({u.detail})")
    if not u.cmd_id:
        parts.append("[no command id: the gateway could not read it; taken as ours]")
    if u.historical:
        parts.append("[historical]")
    return "  ".join(parts)


def status_topic(prefix: str, kind: TargetKind, target: str) -> str:
    """Where a command's statuses arrive: the device's topic, or every device's for a group."""
    return f"{prefix}/cmd-status/{target if kind == 'cmd' else '+'}"


async def subscribe_statuses(client: aiomqtt.Client, prefix: str, kind: TargetKind,
                             target: str) -> None:
    """Subscribe (QoS 1, SUBACK awaited) before publishing, so no status can be missed."""
    await client.subscribe(status_topic(prefix, kind, target), qos=1)


async def publish_command(client: aiomqtt.Client, prefix: str, kind: TargetKind, target: str,
                          signed: bytes) -> None:
    """Publish a signed command at QoS 1 (returns once the broker has it)."""
    await client.publish(command_topic(prefix, kind, target), signed, qos=1)


def _warn_unverified(msg: HypervisorMessage) -> None:
    log.warning("ignored a message on %s: %s", msg.topic, msg.error or "not a command status")


async def follow(
    client: aiomqtt.Client,
    cmd_id: str,
    keys: Mapping[bytes, Ed25519PublicKey],
    *,
    target: str | None = None,
    on_ignored: Callable[[HypervisorMessage], None] = _warn_unverified,
) -> AsyncIterator[StatusUpdate]:
    """Verified statuses of command ``cmd_id`` from the client's subscriptions, each rid once.

    The gateway rejects a command whose signature it cannot check (unknown_key, bad_signature)
    without reading it, so that rejection carries no id: with ``target`` (the topic's last
    level the command was sent to), such id-less rejections on that target's topic are
    yielded too (``cmd_id`` ""). Messages that fail verification, or are not readable statuses,
    go to ``on_ignored`` and never count. Runs until the caller stops iterating.
    """
    level = target.lower() if target is not None else None
    seen: set[str] = set()
    identified = False
    async for m in client.messages:
        msg = decode_message(str(m.topic), bytes(m.payload), keys)
        if msg.kind != "cmd-status":
            continue
        update = status_update(msg)
        if update is None:
            if msg.verified and not msg.error:
                msg.error = "signed by a gateway but not a readable command status"
            on_ignored(msg)
            continue
        # An id-less rejection is ours only while the gateway has said nothing of our id.
        anonymous = not update.cmd_id and update.target == level and not identified
        if (update.cmd_id != cmd_id and not anonymous) or update.rid in seen:
            continue
        identified = identified or update.cmd_id == cmd_id
        seen.add(update.rid)
        yield update


class CommandProgress:
    """The latest status of each target of one command, and whether and how it is over.

    For a group the members are learnt from their ``accepted`` statuses, which the gateway
    stores in one transaction and so publishes before any later status of the command.
    """

    def __init__(self, kind: TargetKind, target: str) -> None:
        self.kind = kind
        self.target = target
        self.latest: dict[str, StatusUpdate] = {}

    def add(self, update: StatusUpdate) -> bool:
        """Record ``update``; False when it is older than what is known for that target."""
        known = self.latest.get(update.target)
        if known is not None and (known.final or (
                update.n is not None and known.n is not None and update.n <= known.n)):
            return False
        self.latest[update.target] = update
        return True

    @property
    def done(self) -> bool:
        """Every target heard of has reached a final status (a group rejected whole counts)."""
        return bool(self.latest) and all(u.final for u in self.latest.values())

    @property
    def succeeded(self) -> bool:
        return self.done and all(u.status == "acked" for u in self.latest.values())

    def pending(self) -> list[str]:
        """Targets still open (for the timeout message)."""
        return [t for t, u in self.latest.items() if not u.final] or [self.target]
