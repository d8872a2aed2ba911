"""Commands as the hypervisor makes them: typed arguments, the CBOR command map, its COSE_Sign1.

The shapes are those of docs/asyncapi.yaml (schema ``Command``): a map with text keys ``id``,
``action``, ``args``, ``iat``, ``exp``, ``target``, signed with EdDSA, content type 60
(application/cbor) and the operator key's kid. The gateway checks everything again (authority,
bounds, time); the checks here only spare the operator a round trip for a typo.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import cbor2

from gateway.commands.actions import ACTIONS
from gateway.keys import SigningKey
from gateway.uplink import cose

__all__ = [
    "ACTION_ARGS",
    "REQUIRED_ARGS",
    "CommandError",
    "TargetKind",
    "build_command",
    "check_target",
    "command_topic",
    "new_command_id",
    "parse_action_args",
    "sign_command",
]

TargetKind = Literal["cmd", "cmd-group"]

# The arguments each action takes, typed, from the gateway's own table (gateway.commands.actions):
# bounds stay the gateway's business (it rejects with `out_of_bounds` naming the range).
_KINDS: Final[dict[str, type]] = {"int": int, "bool": bool, "points": list}
ACTION_ARGS: Final[dict[str, dict[str, type]]] = {
    name: {arg.name: _KINDS[arg.kind] for arg in action.args} for name, action in ACTIONS.items()}
REQUIRED_ARGS: Final[dict[str, tuple[str, ...]]] = {
    name: tuple(arg.name for arg in action.args if arg.required)
    for name, action in ACTIONS.items()}
_ID_RE: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_DEV_EUI_RE: Final = re.compile(r"[0-9a-f]{16}")
# A group name travels as one MQTT topic level.
_GROUP_RE: Final = re.compile(r"[^/+#\x00]{1,128}")


class CommandError(ValueError):
    """A command cannot be built as asked; the message names the argument and what is expected."""


def _typed(text: str) -> Any:
    """A ``k=v`` value: true/false, an int, a float, JSON (lists, maps, quoted strings), or text."""
    if text in ("true", "false"):
        return text == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text[:1] in "[{\"":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{text[:40]!r}: not valid JSON ({exc.msg} at {exc.pos})") from None
        except RecursionError:
            raise CommandError(f"{text[:40]!r}: JSON nested too deeply") from None
    return text


def _type_name(kind: type) -> str:
    return {int: "an integer", bool: "true or false", list: "a JSON list",
            float: "a number"}.get(kind, kind.__name__)


def parse_action_args(action: str, pairs: Iterable[str]) -> dict[str, Any]:
    """``["level=40", "ramp_s=5"]`` -> ``{"level": 40, "ramp_s": 5}``, typed for ``action``."""
    if action not in ACTION_ARGS:
        raise CommandError(f"unknown action {action!r}; expected one of {', '.join(ACTION_ARGS)}")
    allowed = ACTION_ARGS[action]
    args: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"{pair!r}: expected NAME=VALUE")
        if name not in allowed:
            takes = ", ".join(allowed) or "no arguments"
            raise CommandError(f"{action}: unknown argument {name!r} (it takes {takes})")
        if name in args:
            raise CommandError(f"{action}: argument {name!r} given twice")
        value = _typed(text)
        kind = allowed[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise CommandError(f"{action} {name}={text}: expected {_type_name(kind)}")
        if kind is not int and not isinstance(value, kind):
            raise CommandError(f"{action} {name}={text}: expected {_type_name(kind)}")
        args[name] = value
    missing = [n for n in REQUIRED_ARGS[action] if n not in args]
    if missing:
        raise CommandError(f"{action}: missing argument {missing[0]} "
                           f"({_type_name(allowed[missing[0]])})")
    return args


def new_command_id() -> str:
    """A fresh command id: ``cmd-`` and a random UUID (unique per key without coordination)."""
    return f"cmd-{uuid.uuid4().hex}"


def check_target(kind: TargetKind, target: str) -> str:
    """The topic's last level for a device (16 lower-case hex digits) or a group name."""
    if kind == "cmd":
        dev_eui = target.lower()
        if not _DEV_EUI_RE.fullmatch(dev_eui):
            raise CommandError(f"device {target!r}: expected a DevEUI of 16 hex digits")
        return dev_eui
    if not _GROUP_RE.fullmatch(target):
        raise CommandError(f"group {target!r}: expected a name without '/', '+' or '#'")
    return target


def build_command(
    action: str,
    args: Mapping[str, Any] | None,
    target: str,
    *,
    kind: TargetKind = "cmd",
    cmd_id: str | None = None,
    expires_in: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """The command map the gateway expects (unsigned): id, action, args, iat, exp, target."""
    if action not in ACTION_ARGS:
        raise CommandError(f"unknown action {action!r}; expected one of {', '.join(ACTION_ARGS)}")
    cmd_id = new_command_id() if cmd_id is None else cmd_id
    if not _ID_RE.fullmatch(cmd_id):
        raise CommandError(f"id {cmd_id!r}: expected 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    if not expires_in >= 1:
        raise CommandError(f"expires in {expires_in} s: expected at least 1 second")
    iat = int(time.time() if now is None else now)
    command: dict[str, Any] = {"id": cmd_id, "action": action, "iat": iat,
                               "exp": iat + int(expires_in), "target": check_target(kind, target)}
    if args:
        command["args"] = dict(args)
    return command


def sign_command(key: SigningKey, command: Mapping[str, Any]) -> bytes:
    """The COSE_Sign1 to publish: EdDSA, content type 60, the key's kid, over the CBOR map."""
    return cose.sign1(cbor2.dumps(dict(command)), key, cose.CONTENT_CBOR)


def command_topic(prefix: str, kind: TargetKind, target: str) -> str:
    """``{prefix}/cmd/{dev_eui}`` or ``{prefix}/cmd-group/{group}``."""
    return f"{prefix}/{kind}/{target}"
