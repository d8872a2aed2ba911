"""Node state (frame counters, session): write-ahead on flash, exact across deep sleep via RTC memory.

Runs under CPython pytest and inside the MicroPython VM (its filesystem stands for the flash).
"""

from fresh_dir import in_fresh_dir

from firmware.state import STEP, State


class FakeRTC:
    """RTC slow memory: a bytes value kept by the board across deep sleep (not a power cut)."""

    def __init__(self):
        self.mem = b""

    def memory(self, data=None):
        if data is None:
            return self.mem
        self.mem = bytes(data)


def test_counters_are_never_reused_after_a_power_cut():
    def body():
        s = State()
        used = [s.next_fcnt_up() for _ in range(5)]
        assert used == [0, 1, 2, 3, 4]
        after = State()  # power cut: RAM and RTC memory gone, only flash left
        assert after.next_fcnt_up() == STEP
        assert after.counters_skipped == 1

    in_fresh_dir(body)


def test_flash_is_written_once_per_step_not_once_per_frame():
    def body():
        s = State(step=8)
        seqs = []
        for _ in range(20):
            s.next_fcnt_up()
            seqs.append(s._seq)
        assert seqs[-1] == 3  # reservations at 0, 8 and 16

    in_fresh_dir(body)


def test_deep_sleep_wake_resumes_at_the_exact_counter_from_rtc_memory():
    def body():
        rtc = FakeRTC()
        s = State(rtc)
        for _ in range(3):
            s.next_fcnt_up()
        s.set_fcnt_down(7)
        woke = State(rtc, deep_sleep_wake=True)
        assert woke.next_fcnt_up() == 3
        assert woke.fcnt_down == 7
        assert woke.counters_skipped == 0

    in_fresh_dir(body)


def test_stale_rtc_memory_ahead_of_flash_is_not_trusted():
    def body():
        rtc = FakeRTC()
        s = State(rtc)
        s.next_fcnt_up()
        rtc.memory(b"CEF2" + (10**6).to_bytes(4, "little") + bytes(4))
        woke = State(rtc, deep_sleep_wake=True)
        assert woke.next_fcnt_up() == STEP  # resumes at the flash reservation instead

    in_fresh_dir(body)


def test_a_torn_write_of_one_slot_falls_back_to_the_other():
    def body():
        s = State(step=4)
        for _ in range(4):  # counters 0..3 sent under the reservation of 4
            s.next_fcnt_up()
        older = "state_a.json" if s._slot == 0 else "state_b.json"
        newer = "state_b.json" if older == "state_a.json" else "state_a.json"
        with open(newer, "w") as f:
            f.write('{"seq": 2, "reser')  # reserving 8 for counter 4: power lost mid-write
        after = State(step=4)
        assert after.next_fcnt_up() == 4  # counter 4 never went out: 0..3 are not reused
        assert State(step=4).next_fcnt_up() >= 8  # and the new reservation was written whole

    in_fresh_dir(body)


def test_a_new_otaa_session_restarts_the_counters():
    def body():
        s = State()
        for _ in range(3):
            s.next_fcnt_up()
        s.new_session({"dev_addr": 1}, {"dr": 3}, join_nonce=9)
        assert s.next_fcnt_up() == 0
        after = State()
        assert after.session == {"dev_addr": 1}
        assert after.mac == {"dr": 3} and after.join_nonce == 9

    in_fresh_dir(body)


def test_dev_nonces_never_repeat_across_resets():
    def body():
        s = State()
        first = [s.next_dev_nonce() for _ in range(3)]
        again = State().next_dev_nonce()  # written before use: a reset never reuses one
        assert first == [0, 1, 2] and again == 3

    in_fresh_dir(body)


def test_downlink_counter_survives_a_power_cut():
    def body():
        s = State()
        s.set_fcnt_down(12)
        assert State().fcnt_down == 12  # a replayed old downlink stays refused

    in_fresh_dir(body)


def test_the_application_bytes_come_back_from_rtc_memory_after_any_reset():
    def body():
        rtc = FakeRTC()
        s = State(rtc)
        s.rtc_extra = b"duty-cycle"
        s.next_fcnt_up()
        assert State(rtc, deep_sleep_wake=True).rtc_extra == b"duty-cycle"
        assert State(rtc).rtc_extra == b"duty-cycle"  # watchdog reset: RTC memory kept
        assert State(rtc).next_fcnt_up() == 1  # and the exact counter with it
        assert State(FakeRTC()).rtc_extra == b""

    in_fresh_dir(body)


def test_state_of_another_identity_is_not_used():
    def body():
        s = State(owner="0011223344556677")
        s.next_fcnt_up()
        s.interval_s = 300
        s.save()
        same = State(owner="0011223344556677")
        assert same.interval_s == 300 and same.next_fcnt_up() == STEP
        other = State(owner="8899aabbccddeeff")
        assert other.interval_s is None and other.next_fcnt_up() == 0

    in_fresh_dir(body)
