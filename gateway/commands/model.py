"""The values the command path passes around: one command row per (command, device), statuses.

Shared by intake (checks), the store (persistence), the dispatcher (delivery) and the watering
rules; docs/asyncapi.yaml describes the same shapes on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

CommandStatus = Literal["accepted", "rejected", "queued", "sent", "acked", "failed", "expired"]
OPEN: Final = frozenset({"accepted", "queued", "sent"})
FINAL: Final = frozenset({"rejected", "acked", "failed", "expired"})

# Why a command was refused at intake, in the order the checks run (docs/asyncapi.yaml).
REJECTION_REASONS: Final = (
    "malformed", "unknown_key", "bad_signature", "expired", "not_yet_valid", "replay",
    "unknown_device", "unknown_action", "not_for_role", "not_allowed", "out_of_bounds",
    "rate_limited",
)


@dataclass(slots=True)
class CommandRow:
    """One command for one device, as stored: a group command is one row per member."""

    cmd_id: str
    kid: str  # hex of the signing key's 8-byte id ("gateway" / "rule:<name>" for our own)
    key_name: str
    dev_eui: str
    action: str
    args: dict[str, Any]
    issued_at: float
    expires_at: float
    group: str | None = None
    status: CommandStatus = "accepted"
    status_n: int = 0  # number of the last status published for this row
    reason: str | None = None
    answer: str | None = None  # the node's own answer on FPort 30
    node_seq: int | None = None  # the 8-bit seq sent to the node
    fcnt_down: int | None = None
    attempts: int = 0
    row_id: int | None = None  # set by the store
    created_at: float = 0.0
    updated_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN
