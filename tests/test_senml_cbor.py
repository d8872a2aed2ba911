"""SenML CBOR (RFC 8428 §6) checked against the RFC's own example bytes and its label table."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.uplink.senml import (
    CBOR_LABELS,
    SenMLError,
    _head,
    _item,
    batchable,
    decode_pack,
    encode_pack,
    join_packs,
    mark_historical,
    validate_pack,
)

# RFC 8428 §6: "the same example as the one in Section 5.1.2 [multiple measurements], in CBOR"
# (hex dump as published; 195 bytes).
RFC8428_CBOR_EXAMPLE = bytes.fromhex(
    "87a721781b75726e3a6465763a6f773a"
    "31306532303733613031303830303 63a".replace(" ", "")
    + "22fb41d303a15b001062236141200500"
    "67766f6c74616765016156 02fb405e06".replace(" ", "")
    + "6666666666a3006763757272656e7406"
    "2402fb3ff3333333333333a300676375"
    "7272656e74062302fb3ff4cccccccccc"
    "cda3006763757272656e74062202fb3f"
    "f6666666666666a3006763757272656e"
    "74062102f93e00a3006763757272656e"
    "74062002fb3ff999999999999aa30067"
    "63757272656e74060002fb3ffb333333"
    "333333"
)

# The same pack as JSON-labelled dicts (RFC 8428 §5.1.2), labels in the order the RFC writes them.
RFC8428_JSON_PACK = [
    {"bn": "urn:dev:ow:10e2073a0108006:", "bt": 1.276020076001e09, "bu": "A", "bver": 5,
     "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "t": 0, "v": 1.7},  # the CBOR dump carries t = 0 here (06 00)
]

# Other packs of RFC 8428 §5.1 (single datapoint, multiple datapoints, multiple data types,
# a collection of resources), transcribed by hand.
RFC8428_OTHER_PACKS = [
    [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}],
    [
        {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "u": "A", "v": 1.2},
    ],
    [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e09, "bu": "%RH", "v": 20},
        {"u": "lon", "v": 24.30621},
        {"u": "lat", "v": 60.07965},
        {"t": 60, "v": 20.3},
        {"u": "lon", "t": 60, "v": 24.30622},
        {"u": "lat", "t": 60, "v": 60.07965},
        {"t": 120, "v": 20.7},
    ],
    [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320078429e09, "n": "temperature",
         "u": "Cel", "v": 27.2},
        {"n": "humidity", "u": "%RH", "v": 80},
        {"n": "light", "u": "lux", "v": 100},
        {"n": "heat", "vb": True},
        {"n": "serial", "vs": "A1B2"},
        {"n": "energy", "u": "J", "s": 1500.5},
        {"n": "blob", "vd": b"\x00\x01\xfe"},
        {"n": "update", "ut": 300, "v": 1},
    ],
]


def test_rfc8428_cbor_example_decodes_to_the_rfc_json_pack() -> None:
    assert len(RFC8428_CBOR_EXAMPLE) == 0xC3
    assert decode_pack(RFC8428_CBOR_EXAMPLE) == RFC8428_JSON_PACK


def test_encoding_the_rfc_pack_gives_the_rfc_bytes_exactly() -> None:
    # Same label order, same preferred (shortest) float forms: 1.5 is a half float there.
    assert encode_pack(RFC8428_JSON_PACK) == RFC8428_CBOR_EXAMPLE


def test_label_table_is_rfc8428_table_6() -> None:
    # RFC 8428 §6 Table 6, read independently: Name / JSON label / CBOR label.
    table = """
        Base Version bver -1 | Base Name bn -2 | Base Time bt -3 | Base Unit bu -4
        Base Value bv -5 | Base Sum bs -6 | Name n 0 | Unit u 1 | Value v 2
        String Value vs 3 | Boolean Value vb 4 | Value Sum s 5 | Time t 6
        Update Time ut 7 | Data Value vd 8
    """
    expected = {}
    for row in table.replace("\n", "|").split("|"):
        words = row.split()
        if words:
            expected[words[-2]] = int(words[-1])
    assert expected == CBOR_LABELS


def test_integer_labels_on_the_wire_follow_the_table() -> None:
    raw = cbor2.loads(encode_pack([{"bn": "x:", "bt": 1.5, "bu": "V", "bv": 2, "bs": 3,
                                    "bver": 10, "n": "a", "u": "V", "v": 1, "t": 2, "ut": 3},
                                   {"n": "b", "vs": "s"}, {"n": "c", "vb": False},
                                   {"n": "d", "vd": b"\x01"}, {"n": "e", "s": 4.25}]))
    assert list(raw[0]) == [-2, -3, -4, -5, -6, -1, 0, 1, 2, 6, 7]
    assert raw[1] == {0: "b", 3: "s"}
    assert raw[2] == {0: "c", 4: False}
    assert raw[3] == {0: "d", 8: b"\x01"}
    assert raw[4] == {0: "e", 5: 4.25}


def test_our_extension_labels_stay_text_keys() -> None:
    pack = [{"bn": "urn:dev:mac:0011223344556677:", "rid": "gw:0011223344556677:42",
             "n": "temperature", "u": "Cel", "v": 21.5, "hist": True}]
    raw = cbor2.loads(encode_pack(pack))
    assert raw == [{-2: "urn:dev:mac:0011223344556677:", "rid": "gw:0011223344556677:42",
                    0: "temperature", 1: "Cel", 2: 21.5, "hist": True}]
    assert decode_pack(encode_pack(pack)) == pack


def test_floats_use_the_shortest_exact_form() -> None:
    assert encode_pack([{"n": "a", "v": 1.5}])[-3:] == b"\xf9\x3e\x00"  # half
    assert encode_pack([{"n": "a", "v": 100000.0}])[-5:] == b"\xfa\x47\xc3\x50\x00"  # single
    assert encode_pack([{"n": "a", "v": 0.1}])[-9:] == cbor2.dumps(0.1)  # double
    assert encode_pack([{"n": "a", "v": 1e300}])[-9:] == cbor2.dumps(1e300)  # no overflow


@pytest.mark.parametrize("pack", RFC8428_OTHER_PACKS)
def test_rfc_example_packs_round_trip(pack: list[dict]) -> None:
    assert decode_pack(encode_pack(pack)) == pack


def test_base_only_record_is_allowed() -> None:
    pack = [{"bn": "urn:dev:mac:0011223344556677:", "bt": 1.7e9}, {"n": "rssi", "v": -97}]
    assert decode_pack(encode_pack(pack)) == pack


@pytest.mark.parametrize(
    ("pack", "message"),
    [
        ([], "at least one record"),
        ({"n": "a"}, "list of records"),
        (["x"], "record 0: a record is a map"),
        ([{"n": "a", "value": 1}], "unknown label 'value'"),
        ([{"n": "a", "v": 1, "vs": "x"}], "more than one value field"),
        ([{"n": "a", "v": "1"}], "'v' must be a number"),
        ([{"n": "a", "v": True}], "'v' must be a number"),
        ([{"n": "a", "v": math.nan}], "finite"),
        ([{"n": "a", "v": math.inf}], "finite"),
        ([{"n": "a", "vb": 1}], "'vb' must be true or false"),
        ([{"n": "a", "vd": "AAE"}], "'vd' must be bytes"),
        ([{"n": 5, "v": 1}], "'n' must be a text string"),
        ([{"n": "bad name", "v": 1}], "not a valid SenML name"),
        ([{"n": "-starts-badly", "v": 1}], "not a valid SenML name"),
        ([{"bn": "x y:", "n": "a", "v": 1}], "base name"),
        ([{"n": "a", "v": 1, "bver": 0}], "'bver' must be a positive integer"),
        ([{"n": "a", "v": 1, "hist": "yes"}], "'hist' must be true or false"),
        ([{"n": "a", "v": 1, "rid": 7}], "'rid' must be a text string"),
    ],
)
def test_invalid_packs_are_refused_with_a_reason(pack: object, message: str) -> None:
    with pytest.raises(SenMLError, match=message):
        encode_pack(pack)  # type: ignore[arg-type]


def test_decoder_ignores_unknown_labels_but_not_must_understand_ones() -> None:
    assert decode_pack(cbor2.dumps([{0: "a", 2: 1, 99: "future", "foo": 1}])) == [
        {"n": "a", "v": 1}
    ]
    with pytest.raises(SenMLError, match="must-understand label 'crit_'"):
        decode_pack(cbor2.dumps([{0: "a", 2: 1, "crit_": 1}]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid CBOR"),
        (b"\x1c", "not valid CBOR"),  # reserved additional information (RFC 8949 §3)
        (cbor2.dumps([{0: "a", 2: 1}]) + b"\x00", "bytes after the pack"),
        (cbor2.dumps({0: "a"}), "CBOR array of records"),
        (cbor2.dumps([[0, "a"]]), "record 0: a record is a CBOR map"),
        (cbor2.dumps([{0: "a", 2: cbor2.CBORTag(4000, 1)}]), "tagged"),
        (cbor2.dumps([{0.5: "a"}]), "labels must be integers or text"),
    ],
)
def test_malformed_cbor_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(SenMLError, match=message):
        decode_pack(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_to_records_or_senml_error(data: bytes) -> None:
    try:
        pack = decode_pack(data)
    except SenMLError:
        return
    assert isinstance(pack, list) and all(isinstance(r, dict) for r in pack)


names = st.from_regex(r"[a-z][a-z0-9_.:-]{0,12}", fullmatch=True)
numbers = st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
values = st.one_of(
    st.fixed_dictionaries({"v": numbers}),
    st.fixed_dictionaries({"vs": st.text(max_size=10)}),
    st.fixed_dictionaries({"vb": st.booleans()}),
    st.fixed_dictionaries({"vd": st.binary(max_size=10)}),
)
records = st.builds(
    lambda n, value, t, extra: {"n": n, **value, **t, **extra},
    names,
    values,
    st.just({}) | st.fixed_dictionaries({"t": numbers}),
    st.just({}) | st.fixed_dictionaries({"rid": st.text(min_size=1, max_size=20),
                                         "hist": st.booleans()}),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=6))
def test_valid_packs_round_trip(pack: list[dict]) -> None:
    decoded = decode_pack(encode_pack(pack))
    assert decoded == pack
    for before, after in zip(pack, decoded, strict=True):
        for label, value in before.items():
            assert type(after[label]) is type(value) or isinstance(value, float)


# ------------------------------------------------------------------ backlog marks and joins


def _uplink_pack(rid: str, n_readings: int, base: str = "urn:dev:mac:0011223344556677:",
                 first: dict | None = None) -> list[dict]:
    head = first if first is not None else {"bn": base, "bt": 1.7e9}
    pack = [{**head, "n": "r0", "v": 0, "rid": rid}]
    pack += [{"n": f"r{i}", "v": i / 2, "rid": rid} for i in range(1, n_readings)]
    return pack


def test_marking_history_puts_hist_on_the_first_record_only() -> None:
    pack = _uplink_pack("gw:0011223344556677:7", 4)
    marked = decode_pack(mark_historical(encode_pack(pack)))
    assert [r.get("hist", False) for r in marked] == [True, False, False, False]
    assert [{k: v for k, v in r.items() if k != "hist"} for r in marked] == pack


def test_marking_a_first_record_of_23_labels_grows_its_map_head() -> None:
    pack = [{"bn": "urn:x:", "bt": 1.0, "n": "a", "v": 1, "rid": "r", "t": 0, "u": "m"}]
    body = encode_pack(pack)
    # widen the record to 23 pairs with unknown integer labels (ignored by decoders)
    extra = b"".join(bytes((0x18, 100 + i, 0x00)) for i in range(23 - len(pack[0])))
    body = body[:1] + bytes((0xA0 | 23,)) + body[2:] + extra
    marked = decode_pack(mark_historical(body))
    assert marked[0]["hist"] is True and marked[0]["rid"] == "r"


def test_joined_packs_keep_every_uplink_its_rid_base_values_and_order() -> None:
    packs = [_uplink_pack(f"gw:0011223344556677:{fcnt}", 3 + fcnt % 3) for fcnt in range(5)]
    joined = decode_pack(join_packs(encode_pack(p) for p in packs))
    expected = [{**r, "hist": True} if i == 0 else r for p in packs for i, r in enumerate(p)]
    assert [dict(sorted(r.items())) for r in joined] == [dict(sorted(r.items()))
                                                          for r in expected]


def test_packs_that_do_not_start_with_bn_and_bt_are_not_joined() -> None:
    assert batchable(encode_pack(_uplink_pack("r", 2)))
    no_time = encode_pack(_uplink_pack("r", 2, first={"bn": "urn:x:"}))
    no_name = encode_pack([{"n": "urn:x:a", "v": 1}])
    for body in (no_time, no_name, b"", b"\x80", b"\x81\x01", b"\xff"):
        assert not batchable(body)
        with pytest.raises(SenMLError):
            join_packs([body])


@pytest.mark.parametrize("body", [b"", b"\x80", b"\xa1\x01\x02", b"\x81\x01", b"\x81\xbf",
                                  b"\x9f"])
def test_marking_something_that_is_not_a_pack_is_a_senml_error(body: bytes) -> None:
    with pytest.raises(SenMLError):
        mark_historical(body)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=5))
def test_any_joinable_packs_join_to_their_records_in_order(packs: list[list[dict]]) -> None:
    bodies = []
    expected = []
    for i, pack in enumerate(packs):
        pack = [{"bn": "urn:dev:x:", "bt": float(i), **pack[0]}] + pack[1:]
        pack[0].pop("hist", None)
        bodies.append(encode_pack(pack))
        expected += [{**r, "hist": True} if j == 0 else r for j, r in enumerate(pack)]
    assert decode_pack(join_packs(bodies)) == expected


_ANY_VALUE = st.one_of(
    st.text(max_size=6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66), st.binary(max_size=3), st.none(),
    st.sampled_from(["urn:x:", "a", "-bad", "ok/name", "sp ace", "", "Z9"]),
)
_ANY_LABEL = st.sampled_from(sorted(CBOR_LABELS) + ["rid", "hist", "zz", "x_"])


def _generic_bytes(pack: list[dict]) -> bytes:
    """The pack through the plain CBOR writer, label by label (the reference encoding)."""
    out = bytearray()
    _head(4, len(pack), out)
    for record in pack:
        _head(5, len(record), out)
        for label, value in record.items():
            _item(CBOR_LABELS.get(label, label), out)
            _item(value, out)
    return bytes(out)


@settings(max_examples=300)
@given(st.lists(st.dictionaries(_ANY_LABEL, _ANY_VALUE, max_size=4), min_size=0, max_size=4))
def test_encoding_refuses_exactly_what_validation_refuses_with_its_message(pack) -> None:
    try:
        validate_pack(pack)
    except SenMLError as exc:
        with pytest.raises(SenMLError) as raised:
            encode_pack(pack)
        assert str(raised.value) == str(exc)
        return
    body = encode_pack(pack)
    assert body == encode_pack(pack, validate=False) == _generic_bytes(pack)
