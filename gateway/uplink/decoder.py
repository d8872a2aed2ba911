"""Uplink payload -> SenML records in one pass, compiled per FPort from the field table.

The portable codec (``protocol.payload``) decodes to readings and ``to_senml`` then re-encodes
them to check them before mapping each to a record: right on a node, but on the gateway's hot
path that costs about as much as everything else the network side does for an uplink. Here each
FPort's layout is compiled once into a list of field steps that read the raw integers straight
from the payload (one ``int.from_bytes``) and build the same records ``to_senml`` would, in the
same label order, so the stored CBOR is byte for byte the same.

Anything irregular (unknown FPort, short or long payload, a value outside its range, an unknown
enum code, non-zero padding, a wrong format version) is handed to ``protocol.payload`` itself,
so every error is the codec's own ``PayloadError`` with its message; no second set of rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from protocol import payload as codec
from protocol.payload.fields import (
    BOOL,
    ENUM,
    F_BITS,
    F_HI,
    F_KEY,
    F_KIND,
    F_LO,
    F_NAMES,
    F_OPTS,
    F_SCALE,
    F_SENML,
    FLAGS,
    FORMAT_VERSION,
    NUM,
    REQUIRED,
    SEMVER,
    UPLINKS,
    VERSION_BITS,
)

__all__ = ["Decoded", "decode_records"]

Decoded = tuple[str, list[dict[str, Any]], bool]
"""(role, SenML records without base name and time, True when an alarm flag is set)."""

# A step turns the field's raw bits into records appended to ``out``; False = irregular.
_Step = Callable[[int, list[dict[str, Any]]], bool]


class _Irregular(Exception):
    """The payload needs the portable codec's checks (and its error message)."""


def _num_step(f: tuple) -> _Step:
    key, bits, lo, hi = f[F_KEY], f[F_BITS], f[F_LO], f[F_HI]
    unit, mul, div = f[F_SENML]
    den = f[F_SCALE] * div
    sign = 1 << (bits - 1) if lo < 0 else 0
    wrap = 1 << bits

    def step(raw: int, out: list[dict[str, Any]]) -> bool:
        if sign and raw & sign:
            raw -= wrap
        if raw < lo or raw > hi:
            return False
        num = raw * mul
        value = num // den if num % den == 0 else num / den
        out.append({"n": key, "v": value, "u": unit} if unit else {"n": key, "v": value})
        return True

    return step


def _enum_step(f: tuple, label: str) -> _Step:
    key, names = f[F_KEY], f[F_NAMES]

    def step(raw: int, out: list[dict[str, Any]]) -> bool:
        if raw >= len(names):
            return False
        out.append({"n": key, label: names[raw]})
        return True

    return step


def _bool_step(f: tuple) -> _Step:
    key = f[F_KEY]

    def step(raw: int, out: list[dict[str, Any]]) -> bool:
        out.append({"n": key, "vb": raw == 1})
        return True

    return step


def _flags_step(f: tuple) -> _Step:
    names = [f[F_SENML] + name for name in f[F_NAMES]]
    top = len(names) - 1

    def step(raw: int, out: list[dict[str, Any]]) -> bool:
        for i, name in enumerate(names):
            out.append({"n": name, "vb": bool(raw >> (top - i) & 1)})
        return True

    return step


def _semver_step(f: tuple) -> _Step:
    key = f[F_KEY]

    def step(raw: int, out: list[dict[str, Any]]) -> bool:
        out.append({"n": key, "vs": f"{raw >> 12}.{raw >> 6 & 63}.{raw & 63}"})
        return True

    return step


def _step(f: tuple) -> _Step:
    kind = f[F_KIND]
    if kind == NUM:
        return _num_step(f)
    if kind == ENUM:
        return _enum_step(f, "vs")
    if kind == BOOL:
        return _bool_step(f)
    if kind == FLAGS:
        return _flags_step(f)
    if kind == SEMVER:
        return _semver_step(f)
    raise ValueError(f"field {f[F_KEY]!r}: lists are not in uplinks; no compiled step")


class _Port:
    """One FPort's compiled layout: presence bits first, then each present field's step."""

    __slots__ = ("optional", "role", "steps")

    def __init__(self, role: str, layout: tuple) -> None:
        self.role = role
        optional = [f for f in layout if not f[F_OPTS] & REQUIRED]
        self.optional = len(optional)
        # (bits, step, presence bit shift or -1 when required, an alarm flags field?)
        self.steps = [
            (f[F_BITS], _step(f),
             -1 if f[F_OPTS] & REQUIRED else len(optional) - 1 - optional.index(f),
             f[F_KEY] == "alarms")
            for f in layout
        ]

    def decode(self, data: bytes) -> tuple[list[dict[str, Any]], bool]:
        total = 8 * len(data)
        pos = total - VERSION_BITS - self.optional
        if pos < 0:
            raise _Irregular
        word = int.from_bytes(data, "big")
        if word >> (total - VERSION_BITS) != FORMAT_VERSION:
            raise _Irregular
        presence = word >> pos
        out: list[dict[str, Any]] = []
        alarm = False
        for bits, step, shift, alarms in self.steps:
            if shift >= 0 and not presence >> shift & 1:
                continue
            pos -= bits
            if pos < 0:
                raise _Irregular
            raw = word >> pos & ((1 << bits) - 1)
            if not step(raw, out):
                raise _Irregular
            if alarms and raw:
                alarm = True
        if pos >= 8 or word & ((1 << pos) - 1):
            raise _Irregular  # trailing bytes or non-zero padding
        return out, alarm


_PORTS: Final[dict[int, _Port]] = {port: _Port(role, layout)
                                   for role, (port, layout) in UPLINKS.items()}


def decode_records(fport: int, data: bytes) -> Decoded:
    """(role, SenML records, alarm set) of an uplink payload; ``PayloadError`` as the codec."""
    port = _PORTS.get(fport) if type(fport) is int else None
    if port is not None:
        try:
            records, alarm = port.decode(data)
        except _Irregular:
            pass
        else:
            return port.role, records, alarm
    return _reference(fport, data)


def _reference(fport: Any, data: bytes) -> Decoded:
    """The portable codec's answer (raises its PayloadError for a bad payload)."""
    role, readings = codec.decode_uplink(fport, data)
    if not readings:
        return role, [], False
    records = codec.to_senml(role, readings, "")
    first = records[0]
    del first["bn"]
    return role, records, bool(readings.get("alarms"))
