"""Packs a dict into a field layout's bit stream and back, checking every value against fields.py.

Shared by uplinks, commands and the SenML mapping; `what` names the FPort or command in errors.
"""

from protocol.payload.bits import from_twos, to_twos
from protocol.payload.errors import PayloadError
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
    FLAGS,
    LIST,
    NUM,
    REQUIRED,
    SATURATES,
    SEMVER,
)

_SEMVER_BITS = (4, 6, 6)


def _shown(f, raw):
    """A raw value in reading units, for messages."""
    return raw if f[F_SCALE] == 1 else raw / f[F_SCALE]


def quantize(f, value, what):
    """The raw integer of a numeric reading: rounded to the field's resolution, range-checked."""
    key = f[F_KEY]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PayloadError(f"{what}: {key} = {value!r}: expected a number")
    x = value * f[F_SCALE]
    if x - x != 0:  # NaN or infinity
        raise PayloadError(f"{what}: {key} = {value!r}: expected a finite number")
    lo = f[F_LO]
    hi = f[F_HI]
    raw = round(x) if lo - 1 < x < hi + 1 else None  # round() only what can fit
    if raw is None or raw < lo or raw > hi:
        if not f[F_OPTS] & SATURATES:
            raise PayloadError(f"{what}: {key} = {value!r} is outside "
                               f"{_shown(f, lo)}..{_shown(f, hi)}")
        raw = lo if x < lo else hi
    return raw


def _flag_bits(f, value, what):
    names = f[F_NAMES]
    if not isinstance(value, (list, tuple, set)):
        raise PayloadError(f"{what}: {f[F_KEY]} = {value!r}: expected a list of names from "
                           f"{', '.join(names)}")
    mask = 0
    for name in value:
        if name not in names:
            raise PayloadError(f"{what}: {f[F_KEY]}: unknown name {name!r} "
                               f"(known: {', '.join(names)})")
        mask |= 1 << (len(names) - 1 - names.index(name))
    return mask


def _semver_parts(f, value, what):
    parts = value.split(".") if isinstance(value, str) else ()
    if len(parts) == 3:
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = ()
        if (len(nums) == 3 and all(str(n) == p for n, p in zip(nums, parts))
                and all(0 <= n < (1 << b) for n, b in zip(nums, _SEMVER_BITS))):
            return nums
    raise PayloadError(f"{what}: {f[F_KEY]} = {value!r}: expected 'major.minor.patch' "
                       "within 15.63.63")


def _write_value(w, f, value, what):
    kind = f[F_KIND]
    bits = f[F_BITS]
    if kind == NUM:
        w.write(to_twos(quantize(f, value, what), bits), bits)
    elif kind == ENUM:
        if value not in f[F_NAMES]:
            raise PayloadError(f"{what}: {f[F_KEY]} = {value!r}: expected one of "
                               f"{', '.join(f[F_NAMES])}")
        w.write(f[F_NAMES].index(value), bits)
    elif kind == BOOL:
        if value is not True and value is not False:
            raise PayloadError(f"{what}: {f[F_KEY]} = {value!r}: expected True or False")
        w.write(1 if value else 0, 1)
    elif kind == FLAGS:
        w.write(_flag_bits(f, value, what), bits)
    elif kind == SEMVER:
        for n, b in zip(_semver_parts(f, value, what), _SEMVER_BITS):
            w.write(n, b)
    else:  # LIST
        if not isinstance(value, (list, tuple)) or len(value) > f[F_HI]:
            raise PayloadError(f"{what}: {f[F_KEY]}: expected a list of at most {f[F_HI]} items")
        w.write(len(value), bits)
        for i, item in enumerate(value):
            encode_layout(w, f[F_NAMES], item, f"{what}: {f[F_KEY]}[{i}]")


def _read_value(r, f, what):
    kind = f[F_KIND]
    bits = f[F_BITS]
    if kind == SEMVER:
        major, minor, patch = (r.read(b) for b in _SEMVER_BITS)
        return f"{major}.{minor}.{patch}"
    raw = r.read(bits)
    if kind == FLAGS:
        names = f[F_NAMES]
        return tuple(n for i, n in enumerate(names) if raw & (1 << (len(names) - 1 - i)))
    if kind == BOOL:
        return raw == 1
    if kind == NUM and f[F_LO] < 0:
        raw = from_twos(raw, bits)
    if raw < f[F_LO] or raw > f[F_HI]:
        if kind == ENUM:
            raise PayloadError(f"{what}: {f[F_KEY]}: unknown code {raw}")
        if kind == LIST:
            raise PayloadError(f"{what}: {f[F_KEY]}: {raw} items, at most {f[F_HI]} allowed")
        raise PayloadError(f"{what}: {f[F_KEY]} = {_shown(f, raw)} is outside "
                           f"{_shown(f, f[F_LO])}..{_shown(f, f[F_HI])}")
    if kind == ENUM:
        return f[F_NAMES][raw]
    if kind == LIST:
        return [decode_layout(r, f[F_NAMES], f"{what}: {f[F_KEY]}[{i}]")
                for i in range(raw)]
    return _shown(f, raw)


def find(layout, key):
    """The field named `key` in `layout`, or None."""
    for f in layout:
        if f[F_KEY] == key:
            return f
    return None


def encode_layout(w, layout, values, what, skip=()):
    """Write presence bits then the present fields of `values` (a dict; None = absent)."""
    if not isinstance(values, dict):
        raise PayloadError(f"{what}: expected a dict, got {values!r}")
    for key in values:
        if key not in skip and find(layout, key) is None:
            known = ", ".join(f[F_KEY] for f in layout)
            raise PayloadError(f"{what}: unknown field {key!r} (known: {known})")
    for f in layout:
        if not f[F_OPTS] & REQUIRED:
            w.write(0 if values.get(f[F_KEY]) is None else 1, 1)
    for f in layout:
        value = values.get(f[F_KEY])
        if value is not None:
            _write_value(w, f, value, what)
        elif f[F_OPTS] & REQUIRED:
            raise PayloadError(f"{what}: {f[F_KEY]} is required")


def decode_layout(r, layout, what):
    """Read what `encode_layout` wrote; returns a dict of the present fields."""
    present = [f[F_OPTS] & REQUIRED or r.read(1) for f in layout]
    values = {}
    for f, here in zip(layout, present):
        if here:
            values[f[F_KEY]] = _read_value(r, f, what)
    return values
