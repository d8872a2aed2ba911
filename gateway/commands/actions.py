"""The actions a hypervisor may ask for: which roles have them, their bounded arguments, and the
FPort 40 command each becomes (``protocol.payload.encode_command`` checks it again).

This module imports nothing of the gateway's own (the store and the config both use it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from gateway.config import CommandsConfig

__all__ = [
    "ACTIONS",
    "ALL_ROLES",
    "LOCAL_ACTIONS",
    "Action",
    "Arg",
    "ArgumentError",
    "to_node_command",
]

# The node roles of gateway.registry.ROLES (not imported: the store imports this module).
ALL_ROLES: Final = frozenset({"air", "noise", "soil", "lighting"})
CALENDAR_REFS: Final = ("clock", "dusk", "dawn")
MAX_CALENDAR_POINTS: Final = 16  # protocol.payload.fields.MAX_SWITCH_POINTS


class ArgumentError(ValueError):
    """An action's arguments are refused; ``reason`` is the rejection reason, the text says why."""

    def __init__(self, detail: str, reason: str = "out_of_bounds") -> None:
        super().__init__(detail)
        self.reason = reason


Bound = int | Callable[["CommandsConfig"], int]


@dataclass(frozen=True)
class Arg:
    """One argument: an integer lo..hi (hi may come from the config), a bool, or calendar points."""

    name: str
    kind: Literal["int", "bool", "points"] = "int"
    lo: int = 0
    hi: Bound = 0
    required: bool = False
    default: int | None = None
    node_name: str | None = None  # its name in the node command (None: the same)

    def check(self, value: Any, cfg: CommandsConfig) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ArgumentError(f"{self.name} must be true or false", "malformed")
            return value
        if self.kind == "points":
            return _check_points(value)
        hi = self.hi if isinstance(self.hi, int) else self.hi(cfg)
        return _int_in(self.name, value, self.lo, hi)


def _int_in(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be an integer ({lo}..{hi})", "malformed")
    if not lo <= value <= hi:
        raise ArgumentError(f"{name} = {value} is out of bounds: allowed {lo}..{hi}")
    return value


def _check_points(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple):
        raise ArgumentError("points must be an array of {ref, minutes, level}", "malformed")
    if not 1 <= len(value) <= MAX_CALENDAR_POINTS:
        raise ArgumentError(f"points has {len(value)} entries: allowed 1..{MAX_CALENDAR_POINTS}")
    out = []
    for i, point in enumerate(value):
        where = f"points[{i}]"
        if not isinstance(point, Mapping) or set(point) != {"ref", "minutes", "level"}:
            raise ArgumentError(f"{where} must be a map of exactly ref, minutes, level",
                                "malformed")
        ref = point["ref"]
        if not isinstance(ref, str) or ref not in CALENDAR_REFS:
            raise ArgumentError(f"{where}.ref must be one of {', '.join(CALENDAR_REFS)}",
                                "malformed")
        lo, hi = (0, 1439) if ref == "clock" else (-720, 720)
        out.append({"ref": ref, "minutes": _int_in(f"{where}.minutes", point["minutes"], lo, hi),
                    "level": _int_in(f"{where}.level", point["level"], 0, 100)})
    return out


@dataclass(frozen=True)
class Action:
    """An action name, the roles that have it, its arguments and its FPort 40 command
    (``node_command`` None: carried out by the gateway itself)."""

    name: str
    roles: frozenset[str]
    node_command: str | None
    args: tuple[Arg, ...] = ()

    def check_args(self, args: Mapping[str, Any], cfg: CommandsConfig) -> dict[str, Any]:
        """The normalised arguments (defaults filled in); ArgumentError names the bad one."""
        known = {a.name: a for a in self.args}
        for name in args:
            if name not in known:
                allowed = ", ".join(known) or "none"
                raise ArgumentError(f"{self.name}: unknown argument {name!r} (allowed: {allowed})",
                                    "malformed")
        out: dict[str, Any] = {}
        for arg in self.args:
            if arg.name in args:
                out[arg.name] = arg.check(args[arg.name], cfg)
            elif arg.required:
                raise ArgumentError(f"{self.name}: argument {arg.name!r} is required",
                                    "malformed")
            elif arg.default is not None:
                out[arg.name] = arg.default
        return out


def _max_valve_open(cfg: CommandsConfig) -> int:
    return cfg.max_valve_open_s


_FOR_MIN: Final = Arg("for_min", lo=1, hi=10080, node_name="expiry_min")
_LIGHTING: Final = frozenset({"lighting"})
_SOIL: Final = frozenset({"soil"})

ACTIONS: Final[dict[str, Action]] = {a.name: a for a in (
    Action("dim", _LIGHTING, "dim", (Arg("level", lo=0, hi=100, required=True),
                                     Arg("ramp_s", lo=0, hi=255), _FOR_MIN)),
    Action("switch", _LIGHTING, "switch", (Arg("on", "bool", required=True), _FOR_MIN)),
    Action("calendar", _LIGHTING, "calendar", (Arg("points", "points", required=True),)),
    Action("valve_open", _SOIL, "valve_open",
           (Arg("seconds", lo=1, hi=_max_valve_open, required=True),)),
    Action("valve_close", _SOIL, "valve_close"),
    Action("set_interval", ALL_ROLES, "set_interval",
           (Arg("seconds", lo=60, hi=86400, required=True),)),
    Action("reboot", ALL_ROLES, "reboot"),
    Action("rules_pause", _SOIL, None, (Arg("hours", lo=1, hi=720, default=24),)),
    Action("rules_resume", _SOIL, None),
)}
"""Every action by its hypervisor name (docs/mqtt.md, design section 1)."""

LOCAL_ACTIONS: Final = frozenset(name for name, a in ACTIONS.items() if a.node_command is None)


def to_node_command(action: str, args: Mapping[str, Any], seq: int) -> dict[str, Any]:
    """The command dict for ``encode_command``: {"cmd", "seq", <node arguments>}.

    ``args`` are already checked by ``check_args``; ValueError for a gateway-local action.
    """
    spec = ACTIONS[action]
    if spec.node_command is None:
        raise ValueError(f"action {action!r} is carried out by the gateway, not sent to a node")
    cmd: dict[str, Any] = {"cmd": spec.node_command, "seq": seq}
    for arg in spec.args:
        if arg.name in args:
            value = args[arg.name]
            cmd[arg.node_name or arg.name] = ([dict(p) for p in value] if arg.kind == "points"
                                              else value)
    return cmd
