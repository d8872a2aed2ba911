"""Time on air per Semtech's formula, checked against published calculators, plus EU868 parameters.

Reference values (all "explicit header, CRC on, CR 4/5, 8-symbol preamble" unless stated):
- avbentem/airtime-calculator, src/lora/Airtime.test.ts (compared there with the TTN airtime
  spreadsheet): sizes 14/15/16/25 bytes at SF7/125, SF7/250, SF8/125, SF11/125 and CR 4/8;
- the LoRaWAN airtime spreadsheet "Formulas taken from AN1200.13 (LoRa Modem Designer's Guide)":
  13 bytes SF9/125 -> Tsym 4.096 ms, Tpreamble 50.176 ms, 28 payload symbols, 164.864 ms;
- tanupoo/lorawan_toa, its unit tests: 64 bytes SF12/125 2465.792 ms (DE off) and 2793.472 ms
  (DE on), 255 bytes SF7/500 99.904 ms (DE off) and 137.024 ms (DE on).
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import airtime, region_eu868
from protocol.airtime import (
    BANDWIDTHS_HZ,
    ldro_required,
    payload_symbols,
    preamble_time_us,
    symbol_time_us,
    time_on_air_us,
)

# (payload bytes, SF, BW Hz, CR index, expected us) -- avbentem/airtime-calculator Airtime.test.ts
AVBENTEM = [
    (14, 7, 125_000, 1, 46_336),
    (15, 7, 125_000, 1, 46_336),
    (16, 7, 125_000, 1, 51_456),
    (25, 7, 125_000, 1, 61_696),
    (14, 7, 250_000, 1, 23_168),
    (16, 7, 250_000, 1, 25_728),
    (25, 7, 250_000, 1, 30_848),
    (14, 7, 125_000, 4, 61_696),
    (16, 7, 125_000, 4, 69_888),
    (25, 7, 125_000, 4, 86_272),
    (14, 7, 250_000, 4, 30_848),
    (16, 7, 250_000, 4, 34_944),
    (25, 7, 250_000, 4, 43_136),
    (14, 8, 125_000, 1, 82_432),
    (15, 8, 125_000, 1, 92_672),
    (25, 8, 125_000, 1, 113_152),
    (14, 11, 125_000, 1, 659_456),  # low data rate optimisation on (automatic)
    (25, 11, 125_000, 1, 823_296),
]


@pytest.mark.parametrize(("size", "sf", "bw", "cr", "expected"), AVBENTEM)
def test_time_on_air_matches_the_ttn_airtime_calculator(size, sf, bw, cr, expected):
    assert time_on_air_us(size, sf, bw, cr) == expected


def test_thirteen_bytes_at_sf7_take_46336_us():
    # 8 + ceil((104 - 28 + 28 + 16) / 28) * 5 = 33 symbols; (12.25 + 33) * 1.024 ms
    assert payload_symbols(13, 7) == 33
    assert time_on_air_us(13, 7) == 46_336


def test_sf9_matches_the_an1200_13_spreadsheet_step_by_step():
    assert symbol_time_us(9) == 4_096
    assert preamble_time_us(9) == 50_176
    assert payload_symbols(13, 9) == 28
    assert time_on_air_us(13, 9) == 164_864


@pytest.mark.parametrize(
    ("size", "sf", "bw", "ldro", "expected"),
    [
        (64, 12, 125_000, False, 2_465_792),
        (64, 12, 125_000, True, 2_793_472),
        (255, 7, 500_000, False, 99_904),
        (255, 7, 500_000, True, 137_024),
    ],
)
def test_forced_low_data_rate_optimisation_matches_lorawan_toa(size, sf, bw, ldro, expected):
    assert time_on_air_us(size, sf, bw, ldro=ldro) == expected


def test_low_data_rate_optimisation_is_automatic_above_16_ms_symbols():
    assert [sf for sf in range(6, 13) if ldro_required(sf, 125_000)] == [11, 12]
    assert [sf for sf in range(6, 13) if ldro_required(sf, 250_000)] == [12]
    assert not any(ldro_required(sf, 500_000) for sf in range(6, 13))
    assert time_on_air_us(64, 12) == time_on_air_us(64, 12, ldro=True)


def test_symbol_times_are_exact_for_every_bandwidth():
    # 2**SF / BW with the chip's real bandwidths (7.8 kHz is 500/64 kHz = 7812.5 Hz, ...)
    for bw, true_hz in zip(
        BANDWIDTHS_HZ, [500_000 / d for d in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1)]
    ):
        for sf in range(6, 13):
            assert symbol_time_us(sf, bw) == pytest.approx(2**sf / true_hz * 1e6, abs=1e-6)


def test_implicit_header_and_no_crc_shorten_the_packet():
    full = time_on_air_us(20, 7)
    assert time_on_air_us(20, 7, explicit_header=False) < full
    assert time_on_air_us(20, 7, crc=False) < full
    # the payload term never goes negative: a tiny packet still has its 8 fixed symbols
    assert payload_symbols(0, 12, explicit_header=False, crc=False) == 8


def test_out_of_range_parameters_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="spreading factor 13"):
        time_on_air_us(10, 13)
    with pytest.raises(ValueError, match="100000 Hz is not a LoRa bandwidth"):
        time_on_air_us(10, 7, 100_000)
    with pytest.raises(ValueError, match="coding rate index 5"):
        time_on_air_us(10, 7, cr=5)
    with pytest.raises(ValueError, match="payload length 256"):
        time_on_air_us(256, 7)


sfs = st.integers(min_value=6, max_value=12)
bws = st.sampled_from(BANDWIDTHS_HZ)
crs = st.integers(min_value=1, max_value=4)
lengths = st.integers(min_value=0, max_value=254)


@given(length=lengths, sf=sfs, bw=bws, cr=crs, header=st.booleans(), crc=st.booleans())
def test_time_on_air_never_decreases_with_payload_length(length, sf, bw, cr, header, crc):
    assert time_on_air_us(length, sf, bw, cr, 8, header, crc) <= time_on_air_us(
        length + 1, sf, bw, cr, 8, header, crc
    )


@given(length=lengths, sf=st.integers(min_value=6, max_value=11), bw=bws, cr=crs)
def test_time_on_air_grows_with_spreading_factor(length, sf, bw, cr):
    assert time_on_air_us(length, sf, bw, cr) < time_on_air_us(length, sf + 1, bw, cr)


@given(length=lengths, sf=sfs, bw=bws, cr=crs, preamble=st.integers(min_value=6, max_value=100))
def test_time_on_air_is_the_float_formula_exactly(length, sf, bw, cr, preamble):
    import math

    true_bw = (
        500_000 / {b: d for b, d in zip(BANDWIDTHS_HZ, (64, 48, 32, 24, 16, 12, 8, 4, 2, 1))}[bw]
    )
    tsym = 2**sf / true_bw
    de = 1 if tsym > 0.016 else 0
    n = 8 + max(math.ceil((8 * length - 4 * sf + 28 + 16) / (4 * (sf - 2 * de))) * (cr + 4), 0)
    assert time_on_air_us(length, sf, bw, cr, preamble) == pytest.approx(
        (preamble + 4.25 + n) * tsym * 1e6, abs=1e-3
    )


# -- EU868 regional parameters (RP002-1.0.x) -------------------------------------------------------


def test_eu868_data_rates_map_to_lora_modulations():
    assert [region_eu868.data_rate(dr) for dr in range(7)] == [
        (12, 125_000), (11, 125_000), (10, 125_000), (9, 125_000), (8, 125_000), (7, 125_000),
        (7, 250_000),
    ]  # fmt: skip
    assert region_eu868.dr_of(7, 250_000) == 6
    with pytest.raises(ValueError, match="FSK"):
        region_eu868.data_rate(7)
    with pytest.raises(ValueError, match="not an EU868 data rate"):
        region_eu868.dr_of(6, 125_000)


def test_eu868_payload_limits_receive_windows_and_power():
    assert region_eu868.max_payload(0) == (59, 51)
    assert region_eu868.max_payload(3) == (123, 115)
    assert region_eu868.max_payload(5) == (250, 242)
    assert region_eu868.RX2_FREQ_HZ == 869_525_000 and region_eu868.RX2_DR == 0
    assert region_eu868.DEFAULT_CHANNELS_HZ == (868_100_000, 868_300_000, 868_500_000)
    assert (region_eu868.RECEIVE_DELAY1_S, region_eu868.JOIN_ACCEPT_DELAY1_S) == (1, 5)
    assert [region_eu868.tx_power_dbm(i) for i in range(8)] == [16, 14, 12, 10, 8, 6, 4, 2]
    assert [region_eu868.rx1_dr(5, off) for off in range(6)] == [5, 4, 3, 2, 1, 0]
    assert region_eu868.rx1_dr(1, 3) == 0


def test_eu868_duty_cycle_follows_the_etsi_sub_bands():
    assert region_eu868.duty_cycle_denominator(868_100_000) == 100  # 1 %
    assert region_eu868.duty_cycle_denominator(868_900_000) == 1000  # 0.1 %
    assert region_eu868.duty_cycle_denominator(869_525_000) == 10  # 10 %
    toa = airtime.time_on_air_us(13, 7)
    assert region_eu868.time_off_us(868_100_000, toa) == 99 * toa
    with pytest.raises(ValueError, match="outside every EU868 sub-band"):
        region_eu868.duty_cycle_denominator(868_650_000)
