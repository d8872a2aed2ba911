"""The brief's radio target: a reading set takes at most 60 % of its Cayenne LPP encoding."""

import pytest

from bench.payload_size import READING_SETS, TARGET, rows
from protocol.payload import encode_uplink
from protocol.payload.fields import F_KEY, F_KIND, F_SCALE, NUM, UPLINKS
from tests.cayenne_lpp import LPP_TYPE_OF, TYPES, encode, encode_readings


@pytest.mark.parametrize("role", sorted(UPLINKS))
def test_full_reading_set_is_at_most_60_percent_of_cayenne_lpp(role):
    label, readings = READING_SETS[role][0]
    assert label.startswith("full") or role == "ack"
    assert set(readings) == {f[F_KEY] for f in UPLINKS[role][1]}
    _, ours = encode_uplink(role, readings)
    lpp = encode_readings(role, readings)
    assert len(ours) <= TARGET * len(lpp), (role, len(ours), len(lpp))


def test_every_row_of_the_bench_table_meets_the_target():
    assert [r[:3] for r in rows() if r[6] > TARGET] == []


@pytest.mark.parametrize("role,f", [(role, f) for role in sorted(UPLINKS)
                                    for f in UPLINKS[role][1]],
                         ids=lambda x: x if isinstance(x, str) else x[F_KEY])
def test_lpp_reference_carries_each_reading_at_our_resolution_or_finer(role, f):
    name, factor = LPP_TYPE_OF[f[F_KEY]]
    if f[F_KIND] == NUM:
        multiplier = TYPES[name][1][0][1]
        assert multiplier * factor >= f[F_SCALE] * (1 - 1e-9), (f[F_KEY], name)


def test_lpp_encoder_matches_the_published_examples():
    # myDevices Cayenne LPP documentation examples
    assert encode([(3, "temperature", 27.2), (5, "temperature", 25.5)]).hex() == "03670110056700ff"
    assert encode([(1, "temperature", -4.1)]).hex() == "0167ffd7"
    assert encode([(6, "accelerometer", (1.234, -1.234, 0.0))]).hex() == "067104d2fb2e0000"
    assert encode([(1, "gps", (42.3519, -87.9094, 10))]).hex() == "018806765ff2960a0003e8"


def test_lpp_encoder_refuses_what_does_not_fit():
    with pytest.raises(ValueError):
        encode([(1, "analog_input", 400)])
    with pytest.raises(ValueError):
        encode([(1, "humidity", -1)])
