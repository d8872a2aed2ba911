"""EU868 duty-cycle accounting of the node (firmware/dutycycle.py), under CPython and in the VM."""

from firmware.dutycycle import BYTES, DutyCycle, band_index, join_denominator

G1 = (868100000, 868300000, 868500000)  # sub-band h1.5 (1 %)
G3 = 869525000  # sub-band h1.7 (10 %)


def test_a_frame_closes_its_sub_band_for_99_times_its_airtime_at_one_percent():
    dc = DutyCycle()
    dc.sent(868100000, 61696, 1000)  # 61.7 ms at SF7 (rounded up to 62 ms)
    assert dc.wait_ms(868300000, 1000) == 62 * 99
    assert dc.wait_ms(868500000, 1000 + 62 * 99) == 0
    assert dc.wait_ms(G3, 1000) == 0  # another sub-band is not affected


def test_pick_uses_another_open_sub_band_or_says_how_long_to_wait():
    dc = DutyCycle()
    dc.sent(868100000, 100000, 0)
    freq, wait = dc.pick(list(G1) + [G3], 10, 7)
    assert (freq, wait) == (G3, 0)
    freq, wait = dc.pick(G1, 10, 7)
    assert freq is None and wait == 100 * 99 - 10


def test_the_ten_percent_band_reopens_after_nine_times_the_airtime():
    dc = DutyCycle()
    dc.sent(G3, 1000000, 0)
    assert dc.wait_ms(G3, 0) == 9000


def test_aggregated_duty_cycle_from_duty_cycle_req_closes_every_channel():
    dc = DutyCycle(max_dcycle=7)  # 1/128
    dc.sent(868100000, 50000, 0)
    assert dc.wait_ms(G3, 0) == 50 * 127  # on a band the frame did not use


def test_join_back_off_follows_1_0_4_section_7():
    assert join_denominator(0) == 100
    assert join_denominator(3599999) == 100
    assert join_denominator(3600000) == 1000
    assert join_denominator(11 * 3600000) == 10000
    dc = DutyCycle()
    dc.sent(G3, 1000000, 5 * 3600000, join_since_reset_ms=5 * 3600000)
    assert dc.wait_ms(G3, 5 * 3600000, join=True) == 999000  # 0.1 % in hours 1..11
    assert dc.wait_ms(G3, 5 * 3600000) == 9000  # data frames only see the sub-band


def test_state_round_trips_through_bytes_for_rtc_memory():
    dc = DutyCycle()
    dc.sent(868100000, 70000, 123456)
    data = dc.to_bytes()
    assert len(data) == BYTES
    other = DutyCycle()
    other.load(data)
    assert other.wait_ms(868300000, 123456) == 70 * 99
    other.load(b"junk")  # malformed: ignored, never a crash
    assert other.wait_ms(868300000, 123456) == 70 * 99


def test_frequencies_outside_every_sub_band_are_refused():
    assert band_index(868100000) == 2
    try:
        band_index(870500000)
    except ValueError as exc:
        assert "outside every EU868 sub-band" in str(exc)
    else:
        raise AssertionError("870.5 MHz accepted")
