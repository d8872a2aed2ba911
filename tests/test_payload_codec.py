"""Uplink codec properties: round trips, sizes, the field table, and bad bytes from the air."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.payload import PayloadError, decode_uplink, encode_uplink
from protocol.payload.bits import BitReader, BitWriter, from_twos, to_twos
from protocol.payload.fields import (
    BOOL,
    COMMAND_FPORT,
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
    F_SENML,
    FLAGS,
    LIST,
    NUM,
    SATURATES,
    SEMVER,
    UPLINKS,
)
from tests.test_payload_strategies import readings, wire_bits

ROLES = sorted(UPLINKS)
FPORTS = sorted(port for port, _ in UPLINKS.values())


def _all_layouts():
    for role in ROLES:
        yield "uplink " + role, UPLINKS[role][1]
    for name in sorted(COMMANDS):
        yield "command " + name, COMMANDS[name][1]
        for f in COMMANDS[name][1]:
            if f[F_KIND] == LIST:
                yield f"command {name} {f[F_KEY]} item", f[F_NAMES]


def test_fports_follow_the_architecture_table():
    assert {role: port for role, (port, _) in UPLINKS.items()} == {
        "air": 10, "noise": 11, "soil": 12, "lighting": 13, "health": 20, "ack": 30}
    assert COMMAND_FPORT == 40


@pytest.mark.parametrize("where,layout", list(_all_layouts()), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_every_field_fits_its_bits_and_keys_are_unique(where, layout):
    keys = [f[F_KEY] for f in layout]
    assert len(keys) == len(set(keys)), where
    for f in layout:
        kind, bits, lo, hi = f[F_KIND], f[F_BITS], f[F_LO], f[F_HI]
        if kind == NUM:
            assert isinstance(f[F_SCALE], int) and f[F_SCALE] >= 1
            if lo < 0:
                assert -(1 << (bits - 1)) <= lo and hi < 1 << (bits - 1), f[F_KEY]
            else:
                assert hi < 1 << bits, f[F_KEY]
            assert lo < hi
        elif kind == ENUM:
            assert len(f[F_NAMES]) <= 1 << bits and hi == len(f[F_NAMES]) - 1
        elif kind == FLAGS:
            assert bits == len(f[F_NAMES]) and f[F_SENML].endswith("_")
        elif kind == LIST:
            assert hi < 1 << bits
        else:
            assert kind in (BOOL, SEMVER)


@pytest.mark.parametrize("role", ROLES)
@settings(max_examples=300)
@given(data=st.data())
def test_any_reading_set_at_resolution_round_trips(role, data):
    values = data.draw(readings(role))
    fport, payload = encode_uplink(role, values)
    assert fport == UPLINKS[role][0]
    assert decode_uplink(fport, payload) == (role, values)


@pytest.mark.parametrize("role", ROLES)
@given(data=st.data())
def test_size_is_version_presence_and_present_fields_only(role, data):
    values = data.draw(readings(role))
    layout = UPLINKS[role][1]
    _, payload = encode_uplink(role, values)
    assert len(payload) == (3 + wire_bits(layout, values) + 7) // 8


@pytest.mark.parametrize("role", ROLES)
@given(data=st.data())
def test_none_means_absent(role, data):
    values = data.draw(readings(role))
    with_nones = dict(values)
    for f in UPLINKS[role][1]:
        with_nones.setdefault(f[F_KEY], None)
    if role != "ack":  # both ack fields are required
        assert encode_uplink(role, with_nones) == encode_uplink(role, values)


@settings(max_examples=2000)
@given(fport=st.sampled_from(FPORTS) | st.integers(-5, 300), data=st.binary(max_size=40))
def test_arbitrary_bytes_decode_or_raise_payload_error_only(fport, data):
    try:
        role, values = decode_uplink(fport, data)
    except PayloadError:
        return
    # whatever decodes is canonical: encoding it again gives the same bytes
    assert encode_uplink(role, values) == (fport, data)


@settings(max_examples=500)
@given(port=st.sampled_from(FPORTS), data=st.data())
def test_every_shorter_payload_is_rejected(port, data):
    role = next(r for r in ROLES if UPLINKS[r][0] == port)
    _, payload = encode_uplink(role, data.draw(readings(role)))
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(PayloadError):
        decode_uplink(port, payload[:cut])


def test_odd_arguments_raise_payload_error():
    for fport, data in ((10, None), (10, "abc"), (10, [1, 2]), ("10", b"\x20\x00"),
                        (None, b"\x20\x00"), (10.0, b"\x20\x00"), (True, b"\x20\x00"),
                        ([10], b"\x20\x00")):
        with pytest.raises(PayloadError):
            decode_uplink(fport, data)
    for role, values in (("air", None), ("air", [("temperature", 1)]), (None, {}), (10, {}),
                         ("air", {"temperature": [1]}), ("air", {"battery": 10 ** 400}), ("air", {"battery": -1e308}),
                         ("lighting", {"alarms": "door_open"}), ("health", {"firmware": 1}),
                         ("health", {"firmware": "1.2"}), ("health", {"firmware": "a.b.c"})):
        with pytest.raises(PayloadError):
            encode_uplink(role, values)


_JUNK = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
         | st.binary(max_size=3) | st.lists(st.integers(), max_size=2)
         | st.lists(st.text(max_size=12), max_size=3) | st.dictionaries(st.text(), st.integers()))


@settings(max_examples=1000)
@given(role=st.sampled_from(ROLES), data=st.data())
def test_arbitrary_values_encode_or_raise_payload_error_only(role, data):
    keys = [f[F_KEY] for f in UPLINKS[role][1]] + ["bogus"]
    values = data.draw(st.dictionaries(st.sampled_from(keys), _JUNK, max_size=4))
    try:
        fport, payload = encode_uplink(role, values)
    except PayloadError:
        return
    assert decode_uplink(fport, payload)[0] == role


@pytest.mark.parametrize("role,key", [(role, f[F_KEY]) for role in ROLES
                                      for f in UPLINKS[role][1] if f[F_KIND] == NUM])
def test_out_of_range_numbers_raise_unless_the_sensor_saturates(role, key):
    f = next(f for f in UPLINKS[role][1] if f[F_KEY] == key)
    scale = f[F_SCALE]
    others = {g[F_KEY]: g[F_LO] for g in UPLINKS[role][1] if g[F_KEY] != key
              and g[F_OPTS] & 1 and g[F_KIND] == NUM}
    if role == "ack":
        others["cmd_result"] = "done"
    for beyond, edge in (((f[F_LO] - 1) / scale, f[F_LO]), ((f[F_HI] + 1) / scale, f[F_HI])):
        values = dict(others, **{key: beyond})
        if f[F_OPTS] & SATURATES:
            fport, payload = encode_uplink(role, values)
            assert decode_uplink(fport, payload)[1][key] == edge / scale
        else:
            with pytest.raises(PayloadError, match=f"{key} = .* is outside"):
                encode_uplink(role, values)


@given(st.integers(1, 40).flatmap(lambda bits: st.tuples(
    st.just(bits), st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))))
def test_twos_complement_round_trips(case):
    bits, value = case
    raw = to_twos(value, bits)
    assert 0 <= raw < 1 << bits
    assert from_twos(raw, bits) == value


@given(st.lists(st.integers(1, 33).flatmap(
    lambda bits: st.tuples(st.just(bits), st.integers(0, (1 << bits) - 1))), max_size=20))
def test_bit_writer_and_reader_agree_msb_first(fields):
    w = BitWriter()
    for bits, value in fields:
        w.write(value, bits)
    data = w.getvalue()
    total = sum(bits for bits, _ in fields)
    assert len(data) == (total + 7) // 8
    assert int.from_bytes(data, "big") == sum(
        value << (8 * len(data) - sum(b for b, _ in fields[:i + 1]))
        for i, (bits, value) in enumerate(fields))
    r = BitReader(data, "test")
    assert [r.read(bits) for bits, _ in fields] == [value for _, value in fields]
    r.finish()
