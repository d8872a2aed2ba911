"""Hypothesis strategies drawing readings and commands at each field's resolution, from fields.py.

Shared by the other tests/test_payload_*.py files; the tests here check the strategies themselves.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.payload.fields import (
    BOOL,
    COMMANDS,
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
    SEMVER,
    UPLINKS,
)


def value_of(f):
    """A value of field `f` that survives encoding unchanged (on its resolution grid)."""
    kind = f[F_KIND]
    if kind == NUM:
        scale = f[F_SCALE]
        raws = st.integers(f[F_LO], f[F_HI])
        return raws if scale == 1 else raws.map(lambda raw: raw / scale)
    if kind == ENUM:
        return st.sampled_from(f[F_NAMES])
    if kind == BOOL:
        return st.booleans()
    if kind == FLAGS:
        names = f[F_NAMES]
        return st.lists(st.booleans(), min_size=len(names), max_size=len(names)).map(
            lambda bits: tuple(n for n, b in zip(names, bits) if b))
    if kind == SEMVER:
        return st.tuples(st.integers(0, 15), st.integers(0, 63), st.integers(0, 63)).map(
            lambda v: ".".join(str(n) for n in v))
    assert kind == LIST
    return st.lists(layout_values(f[F_NAMES]), max_size=f[F_HI])


def layout_values(layout):
    """A dict for `layout`: every required field, any subset of the optional ones."""
    required = {f[F_KEY]: value_of(f) for f in layout if f[F_OPTS] & REQUIRED}
    optional = {f[F_KEY]: value_of(f) for f in layout if not f[F_OPTS] & REQUIRED}
    return st.fixed_dictionaries(required, optional=optional)


def readings(role):
    """Any reading set of `role`, at resolution."""
    return layout_values(UPLINKS[role][1])


def calendar_point():
    """A switch point the node accepts: clock 0..1439, dusk/dawn offset -720..720 minutes."""
    clock = st.fixed_dictionaries({"ref": st.just("clock"), "minutes": st.integers(0, 1439),
                                   "level": st.integers(0, 100)})
    astro = st.fixed_dictionaries({"ref": st.sampled_from(("dusk", "dawn")),
                                   "minutes": st.integers(-720, 720),
                                   "level": st.integers(0, 100)})
    return clock | astro


@st.composite
def commands(draw):
    """Any valid command dict."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    cmd = {"cmd": name, "seq": draw(st.integers(0, 255))}
    if name == "calendar":
        cmd["points"] = draw(st.lists(calendar_point(), max_size=16))
    else:
        cmd.update(draw(layout_values(COMMANDS[name][1])))
    return cmd


def wire_bits(layout, values):
    """Bits a layout takes for `values`: presence bits plus the widths of the present fields."""
    bits = sum(1 for f in layout if not f[F_OPTS] & REQUIRED)
    for f in layout:
        value = values.get(f[F_KEY])
        if value is None:
            continue
        bits += f[F_BITS]
        if f[F_KIND] == LIST:
            bits += sum(wire_bits(f[F_NAMES], item) for item in value)
    return bits


@pytest.mark.parametrize("role", sorted(UPLINKS))
@given(data=st.data())
def test_drawn_readings_use_only_the_roles_fields(role, data):
    drawn = data.draw(readings(role))
    keys = [f[F_KEY] for f in UPLINKS[role][1]]
    assert set(drawn) <= set(keys)
    assert all(f[F_KEY] in drawn for f in UPLINKS[role][1] if f[F_OPTS] & REQUIRED)


@given(cmd=commands())
def test_drawn_commands_name_a_known_command_and_a_byte_seq(cmd):
    assert cmd["cmd"] in COMMANDS and 0 <= cmd["seq"] <= 255
