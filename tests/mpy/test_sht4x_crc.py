"""SHT4x CRC-8 and conversion formulas: plain-assert tests run by CPython pytest and in the MicroPython VM.

Only what MicroPython has: no pytest, no f-strings with '=', no int.to_bytes without arguments.
"""

from drivers.sht4x import celsius, centi_celsius, centi_rh, crc8, rh_percent


def test_crc8_matches_datasheet_example():
    # SHT4x datasheet, Checksum Calculation: CRC(0xBEEF) = 0x92.
    assert crc8(b"\xbe\xef") == 0x92


def test_crc8_reference_vectors():
    # Computed with the datasheet's parameters (poly 0x31, init 0xFF, no reflection, no final XOR).
    assert crc8(b"\x00\x00") == 0x81
    assert crc8(b"\xff\xff") == 0xAC
    assert crc8(b"\x66\x66") == 0x93
    assert crc8(b"\x12\x34") == 0x37


def test_crc8_covers_only_the_given_slice_of_a_response():
    response = bytearray(b"\x66\x66\x93\xbe\xef\x92")
    assert crc8(response, 0, 2) == response[2]
    assert crc8(response, 3, 5) == response[5]
    assert crc8(response, 3) != response[5]  # end defaults to the whole buffer


def test_temperature_conversion_end_points_and_exact_values():
    assert centi_celsius(0) == -4500
    assert centi_celsius(65535) == 13000
    assert centi_celsius(26214) == 2500  # 26214 / 65535 = 0.4 exactly: -45 + 70 = 25.00 degC
    assert centi_celsius(6553) == -2750  # -27.5014 degC rounds to -27.50
    assert centi_celsius(0x8000) == 4250  # 42.5013 degC


def test_humidity_conversion_is_clipped_to_0_and_100_percent():
    assert centi_rh(0) == 0  # -6 %RH raw
    assert centi_rh(3000) == 0  # -0.28 %RH raw: cropped to 0
    assert centi_rh(65535) == 10000  # 119 %RH raw
    assert centi_rh(26214) == 4400  # -6 + 125 * 0.4 = 44.00 %RH
    assert centi_rh(0x8000) == 5650  # 56.501 %RH
    assert centi_rh(55600) == 10000  # 100.05 %RH raw: cropped to 100


def test_float_conversions_agree_with_integer_ones():
    for s in (0, 1, 6553, 26214, 32768, 50000, 65534, 65535):
        assert abs(celsius(s) * 100 - centi_celsius(s)) <= 0.5
        assert abs(rh_percent(s) * 100 - centi_rh(s)) <= 0.5
        assert 0.0 <= rh_percent(s) <= 100.0


def test_conversions_are_monotone_over_a_sweep():
    previous_t = -4501
    previous_rh = -1
    for s in range(0, 65536, 97):
        t = centi_celsius(s)
        rh = centi_rh(s)
        assert t >= previous_t
        assert rh >= previous_rh
        previous_t = t
        previous_rh = rh
