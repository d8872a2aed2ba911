"""Downlink command codec: round trips, tiny frames, and refusal of anything unknown or out of range."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.payload import PayloadError, decode_command, encode_command
from protocol.payload.bits import BitWriter
from protocol.payload.fields import COMMANDS, MAX_SWITCH_POINTS
from tests.test_payload_strategies import commands

# EU868 DR0 (SF12/125 kHz) carries at most 51 bytes of FRMPayload (RP002 regional parameters).
_DR0_MAX_FRM_PAYLOAD = 51
_KNOWN_OPCODES = {opcode for opcode, _ in COMMANDS.values()}


def _frame(opcode, seq=0, version=1, tail=b""):
    w = BitWriter()
    w.write(version, 3)
    w.write(opcode, 5)
    w.write(seq, 8)
    return w.getvalue() + tail


@settings(max_examples=500)
@given(cmd=commands())
def test_any_valid_command_round_trips(cmd):
    assert decode_command(encode_command(cmd)) == cmd


@settings(max_examples=2000)
@given(data=st.binary(max_size=60))
def test_arbitrary_bytes_decode_or_raise_payload_error_only(data):
    try:
        cmd = decode_command(data)
    except PayloadError:
        return
    assert encode_command(cmd) == data


@pytest.mark.parametrize("opcode", sorted(set(range(32)) - _KNOWN_OPCODES))
def test_unknown_opcodes_are_refused(opcode):
    with pytest.raises(PayloadError, match=f"unknown opcode {opcode}"):
        decode_command(_frame(opcode, tail=b"\x00" * 4))


@pytest.mark.parametrize("version", [0, 2, 3, 4, 5, 6, 7])
def test_unknown_format_versions_are_refused(version):
    with pytest.raises(PayloadError, match=f"format version {version} is unknown"):
        decode_command(_frame(COMMANDS["reboot"][0], version=version))


def test_commands_are_tiny():
    sizes = {name: len(encode_command(cmd)) for name, cmd in (
        ("dim", {"cmd": "dim", "seq": 1, "level": 40, "ramp_s": 5, "expiry_min": 120}),
        ("switch", {"cmd": "switch", "seq": 1, "on": True, "expiry_min": 60}),
        ("valve_open", {"cmd": "valve_open", "seq": 1, "seconds": 900}),
        ("valve_close", {"cmd": "valve_close", "seq": 1}),
        ("set_interval", {"cmd": "set_interval", "seq": 1, "seconds": 900}),
        ("reboot", {"cmd": "reboot", "seq": 1}),
    )}
    assert sizes == {"dim": 6, "switch": 4, "valve_open": 4, "valve_close": 2,
                     "set_interval": 5, "reboot": 2}


def test_a_full_calendar_fits_the_smallest_downlink():
    points = [{"ref": "dawn", "minutes": -720, "level": 100}] * MAX_SWITCH_POINTS
    data = encode_command({"cmd": "calendar", "seq": 1, "points": points})
    assert len(data) <= _DR0_MAX_FRM_PAYLOAD


def test_a_calendar_point_out_of_its_reference_range_is_refused_when_decoded():
    # calendar, seq 0, one point: dusk (01), minutes 1000 (12 bits), level 50
    w = BitWriter()
    for value, bits in ((1, 3), (COMMANDS["calendar"][0], 5), (0, 8), (1, 5), (1, 2),
                        (1000, 12), (50, 7)):
        w.write(value, bits)
    with pytest.raises(PayloadError, match="a dusk offset is -720..720 minutes, got 1000"):
        decode_command(w.getvalue())


_JUNK = (st.none() | st.booleans() | st.integers(-300, 100000) | st.floats() | st.text(max_size=6)
         | st.lists(st.dictionaries(st.sampled_from(["ref", "minutes", "level", "x"]),
                                    st.integers(-2000, 2000) | st.text(max_size=5)), max_size=3))


@settings(max_examples=1000)
@given(name=st.sampled_from(sorted(COMMANDS) + ["bogus"]), data=st.data())
def test_arbitrary_command_dicts_encode_or_raise_payload_error_only(name, data):
    keys = ["seq", "level", "ramp_s", "expiry_min", "on", "seconds", "points", "x"]
    cmd = data.draw(st.dictionaries(st.sampled_from(keys), _JUNK, max_size=4))
    cmd["cmd"] = name
    try:
        out = encode_command(cmd)
    except PayloadError:
        return
    assert decode_command(out)["cmd"] == name


def test_non_dict_and_non_bytes_are_refused():
    for bad in (None, "dim", ["dim"], 7):
        with pytest.raises(PayloadError):
            encode_command(bad)
    for bad in (None, "2101", [0x21, 0x01], 7):
        with pytest.raises(PayloadError):
            decode_command(bad)
