"""Seesaw conversions (soil moisture calibration, 16.16 temperature): CPython and the MicroPython VM.

Only what MicroPython has: plain asserts, no pytest, no int.to_bytes without arguments.
"""

from drivers.seesaw import centi_celsius_16_16, moisture_permille


def test_moisture_calibration_end_points_and_clamping():
    assert moisture_permille(200, 200, 2000) == 0
    assert moisture_permille(2000, 200, 2000) == 1000
    assert moisture_permille(1100, 200, 2000) == 500
    assert moisture_permille(956, 200, 2000) == 420
    assert moisture_permille(0, 200, 2000) == 0  # drier than the dry point
    assert moisture_permille(4095, 200, 2000) == 1000  # wetter than the wet point


def test_moisture_is_monotonic_over_the_whole_count_range():
    last = -1
    for raw in range(0, 4096, 7):
        p = moisture_permille(raw, 350, 1650)
        assert 0 <= p <= 1000
        assert p >= last
        last = p


def test_a_calibration_with_wet_below_dry_is_refused():
    try:
        moisture_permille(500, 2000, 200)
    except ValueError as e:
        assert "wet point" in str(e)
    else:
        raise AssertionError("accepted wet <= dry")


def test_temperature_16_16_known_values_and_sign():
    assert centi_celsius_16_16(0x00, 0x15, 0x87, 0xAE) == 2153  # 21.53 degC
    assert centi_celsius_16_16(0x00, 0x00, 0x80, 0x00) == 50  # 0.5 degC
    assert centi_celsius_16_16(0xFF, 0xFF, 0x80, 0x00) == -50  # -0.5 degC
    assert centi_celsius_16_16(0xFF, 0xF4, 0x40, 0x00) == -1175  # -11.75 degC
    assert centi_celsius_16_16(0x00, 0x55, 0x00, 0x00) == 8500  # 85 degC


def test_temperature_16_16_matches_exact_division_on_a_sweep():
    for whole in range(-40, 86, 5):
        for frac in (0, 1, 0x28F6, 0x8000, 0xFFFF):
            raw = whole * 65536 + frac
            u = raw & 0xFFFFFFFF
            b = ((u >> 24) & 0xFF, (u >> 16) & 0xFF, (u >> 8) & 0xFF, u & 0xFF)
            got = centi_celsius_16_16(*b)
            # exact value * 100 = raw * 100 / 65536; rounded to nearest (ties up)
            want = (raw * 100 + 32768) // 65536
            assert got == want, (whole, frac, got, want)
