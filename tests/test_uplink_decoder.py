"""The gateway's compiled uplink decoder gives exactly what the portable codec and to_senml give."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.uplink.decoder import _PORTS, decode_records
from protocol import payload as codec
from protocol.payload.fields import UPLINKS
from tests.test_payload_strategies import readings


def _reference(fport, data):
    """(role, records without the base name, alarm) from decode_uplink + to_senml."""
    role, values = codec.decode_uplink(fport, data)
    records = codec.to_senml(role, values, "urn:x:") if values else []
    if records:
        assert records[0].pop("bn") == "urn:x:"
    return role, records, bool(values.get("alarms"))


def _same(fport, data):
    try:
        expected = _reference(fport, data)
    except codec.PayloadError as exc:
        with pytest.raises(codec.PayloadError) as raised:
            decode_records(fport, data)
        assert str(raised.value) == str(exc)
        return
    got = decode_records(fport, data)
    assert got == expected
    # same label order too: the stored CBOR keeps it
    assert [list(r) for r in got[1]] == [list(r) for r in expected[1]]
    assert [[type(v) for v in r.values()] for r in got[1]] == \
        [[type(v) for v in r.values()] for r in expected[1]]


@pytest.mark.parametrize("role", sorted(UPLINKS))
@given(data=st.data())
def test_every_valid_reading_set_decodes_to_the_codecs_records(role, data):
    values = data.draw(readings(role))
    fport, payload = codec.encode_uplink(role, values)
    _same(fport, payload)
    # and on the compiled path, not through the codec fallback
    assert _PORTS[fport].decode(payload) == decode_records(fport, payload)[1:]


@given(fport=st.sampled_from([p for p, _ in UPLINKS.values()] + [0, 1, 99, 255]),
       payload=st.binary(max_size=24))
def test_any_bytes_decode_or_fail_exactly_as_the_codec(fport, payload):
    _same(fport, payload)


@pytest.mark.parametrize("role", sorted(UPLINKS))
@given(data=st.data())
def test_damaged_valid_payloads_fail_or_decode_exactly_as_the_codec(role, data):
    fport, payload = codec.encode_uplink(role, data.draw(readings(role)))
    cut = data.draw(st.integers(0, len(payload)))
    flip = data.draw(st.integers(0, 255))
    damaged = bytearray(payload[:cut] + data.draw(st.binary(max_size=3)))
    if damaged:
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= flip
    _same(fport, bytes(damaged))


def test_an_alarm_flag_is_reported_and_an_empty_payload_has_no_records():
    port, data = codec.encode_uplink("lighting", {"alarms": ["door_open"]})
    role, records, alarm = decode_records(port, data)
    assert (role, alarm) == ("lighting", True)
    assert {"n": "alarm_door_open", "vb": True} in records
    port, data = codec.encode_uplink("air", {})
    assert decode_records(port, data) == ("air", [], False)
