"""Time on air in the MicroPython VM: plain asserts, run by CPython pytest and the VM harness."""

from protocol.airtime import ldro_required, payload_symbols, symbol_time_us, time_on_air_us


def test_sf7_thirteen_bytes_is_46336_us():
    assert payload_symbols(13, 7) == 33
    assert time_on_air_us(13, 7) == 46336


def test_published_reference_values():
    # avbentem/airtime-calculator, the AN1200.13 spreadsheet and tanupoo/lorawan_toa (see
    # tests/test_airtime.py for the sources).
    assert time_on_air_us(14, 7, 250000) == 23168
    assert time_on_air_us(14, 11, 125000) == 659456
    assert time_on_air_us(13, 9) == 164864
    assert time_on_air_us(64, 12, 125000, ldro=False) == 2465792
    assert time_on_air_us(64, 12, 125000) == 2793472
    assert time_on_air_us(255, 7, 500000) == 99904


def test_integer_microseconds_even_at_the_slowest_settings():
    toa = time_on_air_us(255, 12, 7800, 4, 65535)
    assert isinstance(toa, int)
    assert (
        toa
        == (4 * (65535 + payload_symbols(255, 12, 7800, 4)) + 17) * symbol_time_us(12, 7800) // 4
    )


def test_low_data_rate_optimisation_switches_on_above_16_ms_symbols():
    assert not ldro_required(10, 125000)
    assert ldro_required(11, 125000)
    assert ldro_required(12, 250000)
    assert not ldro_required(12, 500000)


def test_monotone_in_payload_length_and_spreading_factor():
    for sf in range(6, 13):
        last = 0
        for n in range(0, 256, 7):
            toa = time_on_air_us(n, sf)
            assert toa >= last
            last = toa
    for sf in range(6, 12):
        assert time_on_air_us(20, sf) < time_on_air_us(20, sf + 1)


def test_bad_parameters_raise_value_error():
    for args in ((10, 5), (10, 7, 100000), (300, 7)):
        try:
            time_on_air_us(*args)
        except ValueError:
            pass
        else:
            raise AssertionError("no ValueError for " + repr(args))
