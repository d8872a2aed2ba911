"""Payload codec behaviour that must hold on CPython and inside the MicroPython VM alike.

Plain functions and asserts only (no pytest, no hypothesis): the VM harness calls each test_*.
"""

from protocol.payload import (
    PayloadError,
    decode_command,
    decode_uplink,
    encode_command,
    encode_uplink,
    to_senml,
)

FULL = {
    "air": {"temperature": 21.37, "humidity": 48.52, "pm1_0": 4.2, "pm2_5": 7.9, "pm4_0": 9.1,
            "pm10": 12.3, "battery": 3012},
    "noise": {"laeq": 62.4, "lamax": 78.9, "lamin": 41.2, "la10": 66.0, "la90": 48.3,
              "interval": 900, "battery": 2950},
    "soil": {"soil_moisture": 27.5, "soil_temperature": -3.2, "valve": "open",
             "water_volume": 120.5, "battery": 3100},
    "lighting": {"level": 70, "relay": True, "level_source": "override", "energy": 4000000000,
                 "lamp_current": 4230, "lamp_voltage": 229.8, "mains_voltage": 231.2,
                 "alarms": ("relay_failure", "door_open")},
    "health": {"supply": 12050, "reset_cause": "watchdog", "faults": ("particulate", "clock"),
               "firmware": "1.27.3", "uptime": 86400},
    "ack": {"cmd_seq": 17, "cmd_result": "out_of_range"},
}

# The wire format, pinned: a change here breaks every node in the field.
GOLDEN = {
    "air": (10, "3fc42ca5e8015009e02d80f6bc40"),
    "noise": (11, "3fd38315338a50f181c22e18"),
    "soil": (12, "3f44ff8104b560e0"),
    "lighting": (13, "3ff1af7359400084323e9210c0"),
    "health": (20, "3f2f124822d860002a3000"),
    "ack": (30, "2228"),
}

COMMANDS = (
    {"cmd": "dim", "seq": 0, "level": 40},
    {"cmd": "dim", "seq": 1, "level": 100, "ramp_s": 30, "expiry_min": 120},
    {"cmd": "dim", "seq": 2, "level": 0, "expiry_min": 10080},
    {"cmd": "switch", "seq": 3, "on": True},
    {"cmd": "switch", "seq": 4, "on": False, "expiry_min": 1},
    {"cmd": "valve_open", "seq": 5, "seconds": 600},
    {"cmd": "valve_close", "seq": 6},
    {"cmd": "set_interval", "seq": 7, "seconds": 86400},
    {"cmd": "reboot", "seq": 255},
    {"cmd": "calendar", "seq": 8, "points": []},
    {"cmd": "calendar", "seq": 9, "points": [
        {"ref": "dusk", "minutes": -15, "level": 100},
        {"ref": "clock", "minutes": 1380, "level": 50},
        {"ref": "clock", "minutes": 0, "level": 30},
        {"ref": "dawn", "minutes": 720, "level": 0},
    ]},
)


def _error(fn, *args):
    """The PayloadError message of fn(*args); fails if it returns or raises anything else."""
    try:
        fn(*args)
    except PayloadError as exc:
        return str(exc)
    raise AssertionError(f"no PayloadError from {args!r}")


def _hex(data):
    return "".join(f"{b:02x}" for b in data)


def _unhex(text):
    return bytes(int(text[i:i + 2], 16) for i in range(0, len(text), 2))


def test_full_reading_set_of_every_role_round_trips():
    for role, readings in FULL.items():
        fport, data = encode_uplink(role, readings)
        assert decode_uplink(fport, data) == (role, readings), role


def test_golden_bytes_pin_the_wire_format():
    for role, (fport, text) in GOLDEN.items():
        assert encode_uplink(role, FULL[role]) == (fport, _unhex(text)), role
        assert decode_uplink(fport, _unhex(text)) == (role, FULL[role]), role


def test_negative_temperature_is_twos_complement_msb_first():
    # version 001, presence 1000000, -4000 in 15 bits = 111000001100000, zero pad
    assert encode_uplink("air", {"temperature": -40}) == (10, b"\x30\x38\x30\x00")
    assert decode_uplink(10, b"\x30\x38\x30\x00") == ("air", {"temperature": -40})


def test_absent_and_none_readings_cost_no_bytes():
    assert encode_uplink("air", {}) == (10, b"\x20\x00")
    assert encode_uplink("air", {"pm2_5": None}) == encode_uplink("air", {})
    assert decode_uplink(10, b"\x20\x00") == ("air", {})
    one = len(encode_uplink("soil", {"battery": 3000})[1])
    two = len(encode_uplink("soil", {"battery": 3000, "soil_moisture": 25.0})[1])
    assert (one, two) == (3, 4)


def test_readings_are_rounded_to_the_field_resolution():
    _, data = encode_uplink("air", {"temperature": 21.374, "pm2_5": 7.86, "battery": 3012.4})
    assert decode_uplink(10, data)[1] == {"temperature": 21.37, "pm2_5": 7.9, "battery": 3012}


def test_saturating_sensors_are_clamped_to_their_range():
    _, data = encode_uplink("air", {"pm10": 1500, "humidity": 100.6, "temperature": -45})
    assert decode_uplink(10, data)[1] == {"pm10": 1000, "humidity": 100, "temperature": -40}
    _, data = encode_uplink("noise", {"laeq": 15.2, "lamax": 141})
    assert decode_uplink(11, data)[1] == {"laeq": 20, "lamax": 130}


def test_out_of_range_or_wrong_readings_raise():
    assert "battery = 9000 is outside 0..8191" in _error(encode_uplink, "air", {"battery": 9000})
    assert "soil_temperature = 90 is outside -40.0..85.0" in _error(
        encode_uplink, "soil", {"soil_temperature": 90})
    assert "expected a number" in _error(encode_uplink, "air", {"temperature": "21"})
    assert "expected a number" in _error(encode_uplink, "air", {"temperature": True})
    assert "finite" in _error(encode_uplink, "air", {"pm2_5": float("nan")})
    assert "finite" in _error(encode_uplink, "air", {"pm2_5": float("inf")})
    assert "expected one of closed, open, fault" in _error(
        encode_uplink, "soil", {"valve": "ajar"})
    assert "expected True or False" in _error(encode_uplink, "lighting", {"relay": 1})
    assert "unknown name 'fire'" in _error(encode_uplink, "lighting", {"alarms": ("fire",)})
    assert "major.minor.patch" in _error(encode_uplink, "health", {"firmware": "1.64.0"})
    assert "major.minor.patch" in _error(encode_uplink, "health", {"firmware": "1.02.0"})
    assert "unknown field 'co2'" in _error(encode_uplink, "air", {"co2": 400})
    assert "unknown role 'weather'" in _error(encode_uplink, "weather", {})
    assert "cmd_result is required" in _error(encode_uplink, "ack", {"cmd_seq": 1})


def test_decoder_rejects_bad_bytes_with_a_specific_error():
    _, good = encode_uplink("soil", FULL["soil"])
    assert "truncated" in _error(decode_uplink, 12, good[:-1])
    assert "1 unexpected trailing bytes" in _error(decode_uplink, 12, good + b"\x00")
    assert "padding bits are not zero" in _error(decode_uplink, 12, good[:-1] + b"\xff")
    assert "format version 2 is unknown" in _error(decode_uplink, 12, b"\x40" + good[1:])
    assert "empty payload" in _error(decode_uplink, 12, b"")
    assert "FPort 41 carries no sensor payload" in _error(decode_uplink, 41, good)
    assert "payload must be bytes" in _error(decode_uplink, 12, "3e4f")
    # soil valve code 3 is not a state: version 001, presence 00100, valve 11
    assert "valve: unknown code 3" in _error(decode_uplink, 12, b"\x24\xc0")
    # air humidity 0x3fff = 163.83 %RH is outside 0..100
    assert "humidity = 163.83 is outside" in _error(decode_uplink, 10, b"\x28\x3f\xff")


def test_decoder_accepts_bytearray_and_memoryview():
    fport, data = encode_uplink("noise", FULL["noise"])
    assert decode_uplink(fport, bytearray(data)) == ("noise", FULL["noise"])
    assert decode_uplink(fport, memoryview(data)) == ("noise", FULL["noise"])


def test_every_command_round_trips():
    for cmd in COMMANDS:
        data = encode_command(cmd)
        assert decode_command(data) == cmd, cmd


def test_command_bytes_are_tiny_and_pinned():
    assert _hex(encode_command({"cmd": "dim", "seq": 1, "level": 40, "expiry_min": 120})) \
        == "21015400f0"
    assert _hex(encode_command({"cmd": "valve_close", "seq": 7})) == "2407"


def test_command_decoder_refuses_rather_than_guesses():
    assert "unknown opcode 0" in _error(decode_command, b"\x20\x01")
    assert "unknown opcode 31" in _error(decode_command, b"\x3f\x01")
    assert "format version 0 is unknown" in _error(decode_command, b"\x01\x01")
    # dim, seq 0, no options, level 127
    assert "level = 127 is outside 0..100" in _error(decode_command, b"\x21\x00\x3f\x80")
    assert "truncated" in _error(decode_command, b"\x21")
    assert "trailing" in _error(decode_command, b"\x24\x07\x00")
    # calendar with 17 points announced
    assert "17 items, at most 16" in _error(decode_command, b"\x27\x00\x88")


def test_command_encoder_rejects_out_of_range_and_unknown():
    assert "unknown command 'dance'" in _error(encode_command, {"cmd": "dance", "seq": 1})
    assert "seq = 256" in _error(encode_command, {"cmd": "reboot", "seq": 256})
    assert "seq = None" in _error(encode_command, {"cmd": "reboot"})
    assert "level = 101 is outside 0..100" in _error(
        encode_command, {"cmd": "dim", "seq": 1, "level": 101})
    assert "level is required" in _error(encode_command, {"cmd": "dim", "seq": 1})
    assert "unknown field 'level'" in _error(encode_command, {"cmd": "reboot", "seq": 1, "level": 1})
    assert "seconds = 0 is outside 1..65535" in _error(
        encode_command, {"cmd": "valve_open", "seq": 1, "seconds": 0})
    assert "seconds = 30 is outside 60..86400" in _error(
        encode_command, {"cmd": "set_interval", "seq": 1, "seconds": 30})
    assert "expiry_min = 0 is outside 1..10080" in _error(
        encode_command, {"cmd": "switch", "seq": 1, "on": True, "expiry_min": 0})
    point = {"ref": "clock", "minutes": -10, "level": 50}
    assert "a clock time is 0..1439 minutes" in _error(
        encode_command, {"cmd": "calendar", "seq": 1, "points": [point]})
    point = {"ref": "dusk", "minutes": 900, "level": 50}
    assert "a dusk offset is -720..720 minutes" in _error(
        encode_command, {"cmd": "calendar", "seq": 1, "points": [point]})
    too_many = [{"ref": "dawn", "minutes": 0, "level": 0}] * 17
    assert "at most 16 items" in _error(
        encode_command, {"cmd": "calendar", "seq": 1, "points": too_many})


def test_senml_records_use_reading_keys_as_names_and_primary_units():
    records = to_senml("air", FULL["air"], "urn:dev:eui64:0011223344556677:", 1700000000)
    assert records[0] == {"bn": "urn:dev:eui64:0011223344556677:", "bt": 1700000000,
                          "n": "temperature", "u": "Cel", "v": 21.37}
    assert [(r["n"], r["u"]) for r in records] == [
        ("temperature", "Cel"), ("humidity", "%RH"), ("pm1_0", "kg/m3"), ("pm2_5", "kg/m3"),
        ("pm4_0", "kg/m3"), ("pm10", "kg/m3"), ("battery", "V")]
    assert records[5]["v"] == 1.23e-08
    assert records[6]["v"] == 3.012


def test_senml_states_and_flags():
    records = to_senml("lighting", FULL["lighting"], "urn:dev:eui64:0011223344556677:")
    by_name = {r["n"]: r for r in records}
    assert "bt" not in records[0]
    assert by_name["level"]["v"] == 0.7 and by_name["level"]["u"] == "/"
    assert by_name["relay"]["vb"] is True
    assert by_name["level_source"]["vs"] == "override"
    assert by_name["energy"] == {"n": "energy", "u": "J", "v": 14400000000000}
    assert by_name["alarm_door_open"]["vb"] is True
    assert by_name["alarm_lamp_failure"]["vb"] is False
    assert "PayloadError" not in repr(records)
    assert "battery = -1 is outside" in _error(to_senml, "air", {"battery": -1}, "x:")
