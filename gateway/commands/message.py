"""The command message: a COSE_Sign1 (content type 60) over a CBOR map with text keys (design §1).

``read_command`` verifies the envelope against the trusted keys and parses the map into a
``CommandMessage``; every way it can fail is a ``MessageError`` whose ``reason`` is one of
``REJECTION_REASONS`` (malformed, unknown_key, bad_signature). Nothing here looks at time,
devices or authority: that is the intake's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.uplink.cose import (
    CONTENT_CBOR,
    BadSignatureError,
    CoseError,
    UnknownKeyError,
    Verified,
    verify1,
)
from gateway.uplink.cose import _loads_exact as loads_exact

__all__ = ["FIELDS", "ID_RE", "CommandMessage", "MessageError", "read_command"]

ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FIELDS: Final = frozenset({"id", "action", "args", "iat", "exp", "target"})
REQUIRED: Final = frozenset({"id", "action", "iat", "exp", "target"})
MAX_ACTION_LENGTH: Final = 64
# Unix seconds a command's iat/exp may take (up to year 5138): beyond that, not a time.
MAX_TIME: Final = 1e11


class MessageError(ValueError):
    """A command message refused before any check of its content; ``reason`` says why."""

    def __init__(self, reason: str, detail: str, *, cmd_id: str | None = None,
                 action: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.cmd_id = cmd_id
        self.action = action


@dataclass(frozen=True)
class CommandMessage:
    """A verified, well-formed command as the operator signed it (arguments not yet checked)."""

    kid: bytes
    cmd_id: str
    action: str
    issued_at: float
    expires_at: float
    target: str
    args: dict[str, Any] = field(default_factory=dict)


def _verify(payload: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> Verified:
    try:
        verified = verify1(payload, keys)
    except UnknownKeyError as exc:
        raise MessageError("unknown_key", str(exc)) from None
    except BadSignatureError as exc:
        raise MessageError("bad_signature", str(exc)) from None
    except CoseError as exc:
        raise MessageError("malformed", f"not a COSE_Sign1 command: {exc}") from None
    if verified.protected.get(3) != CONTENT_CBOR:
        raise MessageError("malformed", "the protected header must carry content type 60 "
                                        "(application/cbor)")
    return verified


def _time(body: Mapping[str, Any], name: str, cmd_id: str, action: str | None) -> float:
    value = body[name]
    # the range test first: math.isfinite overflows on a bignum; NaN fails the range test
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 <= value <= MAX_TIME):
        raise MessageError("malformed", f"{name} must be Unix seconds (a number from 0 to "
                                        f"{MAX_TIME:.0f})", cmd_id=cmd_id, action=action)
    return float(value)


def _body(payload: bytes) -> dict[str, Any]:
    try:
        body = loads_exact(payload)
    except CoseError as exc:
        raise MessageError("malformed", f"the signed payload is {exc}") from None
    if not isinstance(body, Mapping):
        raise MessageError("malformed", "the signed payload must be a CBOR map")
    if not all(isinstance(k, str) for k in body):
        raise MessageError("malformed", "the command map's keys must be text strings")
    return dict(body)


def _check_fields(body: Mapping[str, Any]) -> tuple[str, str]:
    """The command id and action of a map with exactly the known keys, all required present."""
    cmd_id = body.get("id")
    if not isinstance(cmd_id, str) or not ID_RE.fullmatch(cmd_id):
        raise MessageError("malformed", "id must be 1 to 64 characters from A-Z a-z 0-9 . _ : -")
    action = body.get("action")
    if not isinstance(action, str) or not 0 < len(action) <= MAX_ACTION_LENGTH:
        raise MessageError("malformed", f"action must be text of 1 to {MAX_ACTION_LENGTH} "
                                        "characters", cmd_id=cmd_id)
    extra = sorted(set(body) - FIELDS)
    if extra:
        raise MessageError("malformed", f"unknown key(s) {', '.join(map(repr, extra))[:100]}; "
                                        f"known: {', '.join(sorted(FIELDS))}",
                           cmd_id=cmd_id, action=action)
    missing = sorted(REQUIRED - set(body))
    if missing:
        raise MessageError("malformed", f"missing key(s): {', '.join(missing)}",
                           cmd_id=cmd_id, action=action)
    return cmd_id, action


def read_command(payload: bytes, keys: Mapping[bytes, Ed25519PublicKey],
                 topic_target: str) -> CommandMessage:
    """Verify and parse one command message received for ``topic_target`` (the topic's last
    level, which the signed ``target`` must equal); MessageError when refused."""
    verified = _verify(payload, keys)
    body = _body(verified.payload)
    cmd_id, action = _check_fields(body)
    args = body.get("args", {})
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise MessageError("malformed", "args must be a map with text keys",
                           cmd_id=cmd_id, action=action)
    target = body["target"]
    if not isinstance(target, str) or target != topic_target:
        raise MessageError("malformed", "target does not match the topic the command came on",
                           cmd_id=cmd_id, action=action)
    return CommandMessage(
        kid=verified.kid, cmd_id=cmd_id, action=action,
        issued_at=_time(body, "iat", cmd_id, action), expires_at=_time(body, "exp", cmd_id, action),
        target=target, args=dict(args),
    )
