"""SenML mapping: registered primary units only, stable record names, values converted exactly."""

import json
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.payload import PayloadError, decode_uplink, encode_uplink, to_senml
from protocol.payload.fields import F_KEY, F_KIND, F_NAMES, F_SENML, FLAGS, NUM, UPLINKS
from tests.test_payload_strategies import readings

# IANA "SenML Units" registry (https://www.iana.org/assignments/senml), RFC 8428 section 12.1
# entries plus the RFC 8798 section 2 additions. Asterisked entries are NOT RECOMMENDED for
# producers; RFC 8798 section 3 "secondary units" SHOULD NOT be used in SenML packs.
REGISTERED = {
    "m", "kg", "g", "s", "A", "K", "cd", "mol", "Hz", "rad", "sr", "N", "Pa", "J", "W", "C", "V",
    "F", "Ohm", "S", "Wb", "T", "H", "Cel", "lm", "lx", "Bq", "Gy", "Sv", "kat", "m2", "m3", "l",
    "m/s", "m/s2", "m3/s", "l/s", "W/m2", "cd/m2", "bit", "bit/s", "lat", "lon", "pH", "dB", "dBW",
    "Bspl", "count", "/", "%", "%RH", "%EL", "EL", "1/s", "1/min", "beat/min", "beats", "S/m",
    # RFC 8798
    "B", "VA", "VAs", "var", "vars", "J/m", "kg/m3", "deg",
}
NOT_RECOMMENDED = {"g", "l", "l/s", "Bspl", "%", "1/min", "beat/min", "beats", "deg"}
SECONDARY = {"ms", "min", "h", "MHz", "kW", "kVA", "kvar", "Ah", "Wh", "kWh", "varh", "kvarh",
             "kVAh", "Wh/km", "KiB", "GB", "Mbit/s", "B/s", "MB/s", "mV", "mA", "dBm", "ug/m3",
             "mm/h", "m/h", "ppm", "/100", "/1000", "hPa", "mm", "cm", "km", "km/h"}

# RFC 8428 section 4.5.1: the concatenated name starts with a letter or digit and uses only
# letters, digits, '-', ':', '.', '/' and '_'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:./_-]*$")
_BN = "urn:dev:eui64:0011223344556677:"

STABLE_NAMES = {
    "air": ["temperature", "humidity", "pm1_0", "pm2_5", "pm4_0", "pm10", "battery"],
    "noise": ["laeq", "lamax", "lamin", "la10", "la90", "interval", "battery"],
    "soil": ["soil_moisture", "soil_temperature", "valve", "water_volume", "battery"],
    "lighting": ["level", "relay", "level_source", "energy", "lamp_current", "lamp_voltage",
                 "mains_voltage", "alarm_lamp_failure", "alarm_relay_failure", "alarm_door_open",
                 "alarm_calendar_fallback"],
    "health": ["supply", "reset_cause", "fault_temp_humidity", "fault_particulate",
               "fault_sound", "fault_soil", "fault_flow", "fault_valve", "fault_energy_meter",
               "fault_clock", "firmware", "uptime"],
    "ack": ["cmd_seq", "cmd_result"],
}


def _num_fields():
    for role in sorted(UPLINKS):
        for f in UPLINKS[role][1]:
            if f[F_KIND] == NUM:
                yield role, f


@pytest.mark.parametrize("role,f", list(_num_fields()), ids=lambda x: x if isinstance(x, str)
                         else x[F_KEY])
def test_units_are_registered_primary_units(role, f):
    unit = f[F_SENML][0]
    if unit is None:
        assert f[F_KEY] == "cmd_seq"  # an identifier, not a quantity
        return
    assert unit in REGISTERED
    assert unit not in NOT_RECOMMENDED
    assert unit not in SECONDARY


@pytest.mark.parametrize("role", sorted(UPLINKS))
@given(data=st.data())
def test_record_names_are_stable_and_valid(role, data):
    values = data.draw(readings(role))
    records = to_senml(role, values, _BN, 1700000000)
    names = [r["n"] for r in records]
    assert names == [n for n in STABLE_NAMES[role] if n in names]
    for name in names:
        assert _NAME.match(_BN + name)
    if records:
        assert records[0]["bn"] == _BN and records[0]["bt"] == 1700000000
        assert all("bn" not in r and "bt" not in r for r in records[1:])
    for r in records:
        assert len({"v", "vs", "vb"} & set(r)) == 1
    json.dumps(records)


@pytest.mark.parametrize("role", sorted(UPLINKS))
@given(data=st.data())
def test_values_are_the_readings_in_senml_units(role, data):
    values = data.draw(readings(role))
    by_name = {r["n"]: r for r in to_senml(role, values, _BN)}
    for f in UPLINKS[role][1]:
        key = f[F_KEY]
        if key not in values:
            continue
        if f[F_KIND] == NUM:
            unit, mul, div = f[F_SENML]
            assert math.isclose(by_name[key]["v"], values[key] * mul / div, rel_tol=1e-12)
            assert by_name[key].get("u") == unit
        elif f[F_KIND] == FLAGS:
            for name in f[F_NAMES]:
                assert by_name[f[F_SENML] + name]["vb"] == (name in values[key])
        else:
            assert by_name[key].get("vs", by_name[key].get("vb")) == values[key]


def test_conversions_are_exact_decimals():
    _, air = decode_uplink(*encode_uplink("air", {"pm2_5": 12.3, "battery": 3012}))
    records = to_senml("air", air, _BN)
    assert [r["v"] for r in records] == [1.23e-08, 3.012]
    lighting = {"energy": 4294967295, "lamp_current": 1, "level": 33}
    by_name = {r["n"]: r["v"] for r in to_senml("lighting", lighting, _BN)}
    assert by_name == {"energy": 4294967295 * 3600, "lamp_current": 0.001, "level": 0.33}
    assert isinstance(by_name["energy"], int)
    soil = {r["n"]: r["v"] for r in to_senml("soil", {"water_volume": 6553.5,
                                                      "soil_moisture": 100}, _BN)}
    assert soil == {"soil_moisture": 1, "water_volume": 6.5535}


def test_an_empty_reading_set_gives_no_records_and_bad_readings_raise():
    assert to_senml("air", {}, _BN, 0) == []
    with pytest.raises(PayloadError, match="unknown field 'co2'"):
        to_senml("air", {"co2": 400}, _BN)
    with pytest.raises(PayloadError, match="unknown role"):
        to_senml("weather", {}, _BN)
