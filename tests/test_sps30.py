"""The SPS30 driver against the SPS30 command-level model on a simulated I2C bus, in virtual time.

The driver runs in a ``VirtualClock`` participant thread bound to ``drivers.ticks``, so its
execution-time waits and the model's one-second readings happen in virtual time only.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import sps30, ticks
from drivers.sps30 import SPS30, SensorError, crc8, pack_word, unpack_words
from sim import sps30 as model_mod
from sim.bus import SimI2C
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.sps30 import SPS30Model, with_crc
from tests.fixtures.device import on_device as run_on_device

TRUE_PM = (6.2, 9.5, 12.25, 14.0)


def on_device(clock: VirtualClock, fn, *args):
    """Node code run to its end; virtual time then runs on to a day later."""
    return run_on_device(clock, fn, *args, run_s=24 * 3600)


class Rig:
    def __init__(self, **options) -> None:
        self.clock = VirtualClock()
        self.bus = SimI2C()
        options.setdefault("source", lambda epoch: TRUE_PM)
        options.setdefault("precision", 0.0)
        self.model = SPS30Model(self.clock, **options)
        self.bus.attach(self.model.address, self.model)
        self.pm = SPS30(self.bus)

    def run(self, fn, *args):
        return on_device(self.clock, fn, *args)



def wait_s(s: float) -> None:
    """Inside a participant: let ``s`` seconds of virtual time pass."""
    ticks.sleep_ms(int(s * 1000))


# -- CRC and frames (pure functions, property-tested) ----------------------------------------------

def test_crc_matches_the_datasheet_example_and_the_model() -> None:
    assert crc8(b"\xbe\xef") == 0x92  # DS Checksum Calculation example
    assert model_mod.crc8(b"\xbe\xef") == 0x92


@given(st.binary(min_size=2, max_size=2))
def test_driver_and_model_crc_agree_on_every_word(word: bytes) -> None:
    assert crc8(word) == model_mod.crc8(word)
    buf = bytearray(3)
    pack_word(int.from_bytes(word, "big"), buf, 0)
    assert bytes(buf) == with_crc(word)


@given(st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=20))
def test_a_frame_with_good_crcs_unpacks_to_its_data(words: list[bytes]) -> None:
    data = b"".join(words)
    out = bytearray(len(data))
    assert unpack_words(with_crc(data), out) == len(data)
    assert bytes(out) == data


@given(st.lists(st.binary(min_size=2, max_size=2), min_size=1, max_size=20), st.data())
def test_any_single_bit_error_in_a_frame_is_caught_and_names_its_word(
        words: list[bytes], data: st.DataObject) -> None:
    frame = bytearray(with_crc(b"".join(words)))
    bit = data.draw(st.integers(0, len(frame) * 8 - 1))
    frame[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(SensorError, match=f"word {bit // 24}"):
        unpack_words(frame, bytearray(2 * len(words)))


@settings(max_examples=40, deadline=None)
@given(st.tuples(*[st.floats(0, 1000, width=32)] * 4))
def test_float_readings_parse_to_the_values_the_chip_sent(values: tuple[float, ...]) -> None:
    rig = Rig(source=lambda epoch: values)

    def steps():
        rig.pm.start_measurement()
        wait_s(31)
        return rig.pm.read_values()

    got = rig.run(steps)

    assert got[:4] == values  # float32 on the wire, exactly
    assert got[9] == pytest.approx(0.6)


def test_unpack_refuses_buffers_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        unpack_words(bytes(5), bytearray(4))
    with pytest.raises(ValueError):
        unpack_words(bytes(6), bytearray(3), 3)


# -- measuring -------------------------------------------------------------------------------------

def test_a_reading_after_the_warm_up_is_the_true_concentration() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement()
        first = (rig.model.fan_running, rig.pm.data_ready(), rig.pm.read_mass())
        wait_s(sps30.WARM_UP_MS / 1000)
        return first, rig.pm.data_ready(), rig.pm.read_mass(), rig.pm.data_ready()

    first, ready, mass, ready_after = rig.run(steps)

    # fan on; the first reading comes after one second; DS: all zero before the first
    assert first == (True, False, (0.0, 0.0, 0.0, 0.0))
    assert ready is True
    assert mass == pytest.approx(TRUE_PM, rel=1e-6)
    assert ready_after is False  # reading cleared the flag


def test_an_early_reading_is_still_low_which_is_why_the_role_waits() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement()
        wait_s(2.5)
        return rig.pm.read_mass()

    early = rig.run(steps)

    assert all(e < 0.6 * t for e, t in zip(early, TRUE_PM, strict=True))


def test_uint16_output_gives_whole_micrograms() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement(sps30.UINT16)
        wait_s(31)
        return rig.pm.read_values()

    values = rig.run(steps)

    assert values[:4] == (6, 10, 12, 14)
    assert values[9] == 600  # typical particle size in nm


def test_stopping_turns_the_fan_off_and_counts_its_running_time() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement()
        wait_s(10)
        rig.pm.stop_measurement()
        wait_s(100)
        rig.pm.version()  # any later transfer: the model accounts up to now

    rig.run(steps)

    assert rig.model.mode == "idle" and not rig.model.fan_running
    assert 10_000_000 <= rig.model.fan_on_us <= 10_100_000


def test_fan_cleaning_holds_new_readings_for_ten_seconds() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement()
        wait_s(5)
        rig.pm.read_values()
        rig.pm.start_fan_cleaning()
        wait_s(9)
        during = rig.pm.data_ready()
        wait_s(2)
        return during, rig.pm.data_ready()

    assert rig.run(steps) == (False, True)


# -- modes, NACKs and faults -----------------------------------------------------------------------

@pytest.mark.parametrize("call", ["stop_measurement", "data_ready", "read_values",
                                  "start_fan_cleaning", "wake_up"])
def test_commands_not_allowed_in_idle_mode_raise_sensor_error(call: str) -> None:
    rig = Rig()
    with pytest.raises(SensorError, match="NACKed"):
        rig.run(getattr(rig.pm, call))
    assert rig.model.mode == "idle"


def test_starting_twice_is_refused_and_a_reset_brings_it_back_to_idle() -> None:
    rig = Rig()

    def steps():
        rig.pm.start_measurement()
        with pytest.raises(SensorError, match="start measurement"):
            rig.pm.start_measurement()
        start = ticks.ticks_ms()
        rig.pm.reset()
        took = ticks.ticks_diff(ticks.ticks_ms(), start)
        mode = rig.model.mode
        rig.pm.start_measurement()
        return took, mode

    took, mode = rig.run(steps)

    assert mode == "idle"
    assert took >= 100  # DS: a reset takes 100 ms; a command sooner would be NACKed
    assert rig.model.mode == "measuring"


def test_a_command_during_the_previous_ones_execution_time_is_nacked() -> None:
    rig = Rig()
    start = bytes([0x00, 0x10]) + with_crc(b"\x03\x00")
    rig.bus.writeto(0x69, start)  # no wait: the 20 ms have not passed
    with pytest.raises(OSError):
        rig.bus.writeto(0x69, b"\x01\x04")
    assert rig.model.nacks == 1 and rig.model.mode == "measuring"


def test_a_command_whose_data_crc_is_wrong_is_nacked_and_ignored() -> None:
    rig = Rig()
    bad = bytearray(bytes([0x00, 0x10]) + with_crc(b"\x03\x00"))
    bad[4] ^= 0xFF
    with pytest.raises(OSError):
        rig.bus.writeto(0x69, bytes(bad))
    assert rig.model.mode == "idle"


def test_corrupted_responses_raise_sensor_error_naming_the_crc() -> None:
    rig = Rig(fail_crc=True)

    def steps():
        rig.pm.start_measurement()
        wait_s(2)
        with pytest.raises(SensorError, match="CRC mismatch on response word 0 .measured values"):
            rig.pm.read_values()
        with pytest.raises(SensorError, match="CRC"):
            rig.pm.status()

    rig.run(steps)


def test_a_missing_or_stuck_chip_raises_sensor_error() -> None:
    rig = Rig(stuck=True)
    with pytest.raises(SensorError, match="NACKed start measurement"):
        rig.run(rig.pm.start_measurement)
    rig.bus.detach(0x69)
    with pytest.raises(SensorError, match="0x69"):
        rig.run(rig.pm.status)


def test_a_blocked_fan_sets_the_sticky_fan_bit_and_zero_readings() -> None:
    rig = Rig(fan_blocked=True)

    def steps():
        rig.pm.start_measurement()
        wait_s(1.5)
        early = rig.pm.status()  # DS: 0 RPM must be seen twice in a row
        wait_s(3)
        blocked = rig.pm.status(), rig.pm.read_mass()
        rig.pm.stop_measurement()
        after_stop = rig.pm.status()
        rig.pm.clear_status()
        return early, blocked, after_stop, rig.pm.status()

    early, (status, mass), after_stop, cleared = rig.run(steps)

    assert early == 0
    assert status & sps30.STATUS_FAN and mass == (0.0, 0.0, 0.0, 0.0)
    assert after_stop & sps30.STATUS_FAN  # sticky
    assert cleared == 0


def test_a_failed_laser_sets_the_laser_bit() -> None:
    rig = Rig(laser_failure=True)

    def steps():
        rig.pm.start_measurement()
        wait_s(2)
        return rig.pm.status()

    assert rig.run(steps) == sps30.STATUS_LASER


def test_sleep_switches_the_interface_off_until_woken_twice() -> None:
    rig = Rig()
    rig.run(rig.pm.sleep)
    assert rig.model.mode == "sleep"
    with pytest.raises(SensorError):
        rig.run(rig.pm.version)
    with pytest.raises(SensorError):  # the interface is on again, but it is still asleep
        rig.run(rig.pm.start_measurement)

    rig2 = Rig()
    rig2.run(rig2.pm.sleep)
    rig2.run(rig2.pm.wake_up)  # first transfer NACKed, second accepted

    assert rig2.model.mode == "idle"
    rig2.run(rig2.pm.start_measurement)
    assert rig2.model.mode == "measuring"


def test_old_firmware_has_no_sleep_and_no_integer_output() -> None:
    rig = Rig(firmware=(1, 0))
    with pytest.raises(SensorError, match="sleep"):
        rig.run(rig.pm.sleep)
    with pytest.raises(SensorError):
        rig.run(rig.pm.start_measurement, sps30.UINT16)
    assert rig.run(rig.pm.version) == (1, 0)


def test_serial_version_and_auto_cleaning_interval() -> None:
    rig = Rig(serial="ABCDEF0123456789")
    assert rig.run(rig.pm.serial_number) == "ABCDEF0123456789"
    assert rig.run(rig.pm.version) == (2, 2)
    assert rig.run(rig.pm.auto_cleaning_interval) == 604_800
    rig.run(rig.pm.auto_cleaning_interval, 86_400 * 3 + 7)
    assert rig.model.auto_clean_s == 259_207
    assert rig.run(rig.pm.auto_cleaning_interval) == 259_207
    with pytest.raises(ValueError):
        rig.pm.start_measurement(0x04)


def test_the_model_refuses_a_bad_output_format_like_the_chip() -> None:
    rig = Rig()
    with pytest.raises(OSError):
        rig.bus.writeto(0x69, bytes([0x00, 0x10]) + with_crc(b"\x04\x00"))
    assert rig.model.mode == "idle"
    assert struct.calcsize(">10f") == 40  # the frame the driver reads: 20 words


def test_the_default_source_is_the_environment_and_a_run_replays_exactly() -> None:
    def reading(seed_env: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        clock = VirtualClock()
        env = Environment(seed=seed_env)
        model = SPS30Model(clock, env)  # default precision: +-3 %
        bus = SimI2C()
        bus.attach(0x69, model)
        pm = SPS30(bus)

        def steps():
            pm.start_measurement()
            wait_s(40)
            return pm.read_mass()

        got = on_device(clock, steps)
        epoch = clock.epoch0 + 40
        return got, model.true_mass(epoch)

    got, truth = reading(5)
    again, _ = reading(5)

    assert got == again  # the noise is seeded (from the serial number): a run replays
    for g, t in zip(got, truth, strict=True):
        assert g == pytest.approx(t, rel=0.04)
    assert truth[0] < truth[1] < truth[2] < truth[3]  # PM1 < PM2.5 < PM4 < PM10
    with pytest.raises(ValueError):
        SPS30Model(VirtualClock())
