"""Soil role valve safety logic with stand-in pins: CPython pytest and inside the MicroPython VM.

The pins record every level written; the stand-in I2C bus has no device (the probe is covered
against the register model in tests/test_soil_role.py). Plain asserts only (MicroPython).
"""

import json
import os
import time

from firmware.roles.soil import SoilRole

OPEN_PIN = 25
CLOSE_PIN = 26
FLOW_PIN = 27
_n = [0]


class FakePin:
    OUT = 1
    IN = 0
    PULL_UP = 1
    IRQ_RISING = 8
    IRQ_FALLING = 4

    def __init__(self, pid, mode=-1, pull=-1, value=None):
        self.pid = pid
        self.level = 1 if value else 0
        self.handler = None
        Machine.pins[pid] = self

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        Machine.log.append((self.pid, self.level, Machine.read_file()))

    def irq(self, handler=None, trigger=0):
        self.handler = handler


class Machine:
    Pin = FakePin
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5
    pins = None  # pin id -> FakePin, set by make()
    log = None  # (pin id, level written, state file text at that instant)
    path = ""

    @classmethod
    def read_file(cls):
        try:
            with open(cls.path) as f:
                return f.read()
        except OSError:
            return None


class NoDeviceI2C:
    def writeto(self, addr, buf, stop=True):
        raise OSError(19)

    def readfrom_into(self, addr, buf, stop=True):
        raise OSError(19)


class HW:
    machine = Machine
    i2c = NoDeviceI2C()

    def battery_mv(self):
        return 2900


def fresh_path():
    try:
        import tempfile

        return tempfile.mkdtemp() + "/soil_valve.json"
    except ImportError:
        _n[0] += 1
        return "/soil_logic_%d.json" % _n[0]


def make(state=None, **settings):
    """A role whose state file holds ``state`` (a dict, or None for no file)."""
    Machine.pins = {}
    Machine.log = []
    Machine.path = fresh_path()
    if state is not None:
        with open(Machine.path, "w") as f:
            f.write(json.dumps(state))
    s = {"pins": {"valve_open": OPEN_PIN, "valve_close": CLOSE_PIN}, "max_open_s": 600,
         "valve_pulse_ms": 5, "state_file": Machine.path}
    s.update(settings)
    return SoilRole(HW(), s)


def pulses():
    """Directions of the pulses driven, from the pin log: "open" / "close"."""
    out = []
    for pid, level, _ in Machine.log:
        if level:
            out.append("open" if pid == OPEN_PIN else "close")
    return out


def saved():
    text = Machine.read_file()
    return None if text is None else json.loads(text)


def test_the_open_state_and_deadline_reach_the_file_before_the_opening_pulse():
    role = make({"state": "closed"})
    role.boot("power_on")
    t0 = int(time.time())
    assert role.command({"cmd": "valve_open", "seq": 1, "seconds": 120}) == "done"
    rising = [entry for entry in Machine.log if entry[0] == OPEN_PIN and entry[1] == 1]
    assert len(rising) == 1
    doc = json.loads(rising[0][2])
    assert doc["state"] == "open"
    assert t0 + 120 <= doc["deadline"] <= int(time.time()) + 120
    assert role.valve_state == "open"
    left = role.poll()
    assert 0 < left <= 120000


def test_seconds_at_the_limit_are_accepted_and_one_more_is_refused_with_no_pulse():
    role = make({"state": "closed"}, max_open_s=90)
    role.boot("power_on")
    assert role.command({"cmd": "valve_open", "seq": 1, "seconds": 91}) == "out_of_range"
    assert pulses() == [] and saved() == {"state": "closed"}
    assert role.command({"cmd": "valve_open", "seq": 2, "seconds": 90}) == "done"
    assert pulses() == ["open"]
    assert role.command({"cmd": "valve_close", "seq": 3}) == "done"
    assert pulses() == ["open", "close"] and saved() == {"state": "closed"}
    assert role.poll() is None


def test_boot_keeps_a_valid_future_deadline_after_a_warm_reset():
    for cause in ("deep_sleep", "watchdog", "soft", Machine.DEEPSLEEP_RESET, Machine.WDT_RESET):
        role = make({"state": "open", "deadline": int(time.time()) + 100})
        role.boot(cause)
        assert role.valve_state == "open", cause
        assert pulses() == []
        left = role.poll()
        assert 98000 <= left <= 100000, (cause, left)


def test_boot_closes_when_the_deadline_passed_the_clock_is_untrusted_or_the_state_unknown():
    now = int(time.time())
    cases = (
        ({"state": "open", "deadline": now - 1}, "deep_sleep"),  # deadline passed
        ({"state": "open", "deadline": now + 100}, "power_on"),  # RTC lost with the power
        ({"state": "open", "deadline": now + 100}, Machine.PWRON_RESET),
        ({"state": "open", "deadline": now + 100}, "brownout"),
        ({"state": "open", "deadline": now + 100}, None),  # unknown reset cause
        ({"state": "open", "deadline": now + 100000}, "deep_sleep"),  # beyond max_open_s
        ({"state": "open"}, "deep_sleep"),  # no deadline
        ({"state": "opening"}, "deep_sleep"),  # not a state we write
        (None, "deep_sleep"),  # no file at all
    )
    for state, cause in cases:
        role = make(state)
        role.boot(cause)
        assert role.valve_state == "closed", (state, cause)
        assert pulses() == ["close"], (state, cause)
        assert saved() == {"state": "closed"}, (state, cause)


def test_a_corrupt_file_is_an_unknown_state_and_closes():
    role = make(None)
    with open(Machine.path, "w") as f:
        f.write('{"state": "op')  # power cut in the middle of a write
    role.boot("deep_sleep")
    assert pulses() == ["close"] and saved() == {"state": "closed"}


def test_a_closed_file_means_no_pulse_at_boot():
    role = make({"state": "closed"})
    role.boot("power_on")
    assert role.valve_state == "closed" and pulses() == []


def test_a_role_used_without_boot_makes_itself_safe_first():
    role = make({"state": "open", "deadline": int(time.time()) + 100})
    readings = role.read()
    assert pulses() == ["close"]  # an unknown reset: the clock is not trusted
    assert readings["valve"] == "closed"
    assert role.faults == ("soil",)  # no probe on this bus
    assert readings["battery"] == 2900


def test_poll_closes_at_the_deadline():
    role = make({"state": "open", "deadline": int(time.time()) + 2})
    role.boot("deep_sleep")
    assert role.valve_state == "open"
    left = role.poll()
    assert left is not None and 1000 <= left <= 2000
    time.sleep_ms(left) if hasattr(time, "sleep_ms") else time.sleep(left / 1000)
    assert role.poll() is None
    assert role.valve_state == "closed" and pulses() == ["close"]


def test_a_leak_through_the_closed_valve_is_a_valve_fault_and_an_alarm():
    role = make({"state": "closed"}, pins={"valve_open": OPEN_PIN, "valve_close": CLOSE_PIN,
                                           "flow": FLOW_PIN}, litres_per_pulse=0.1)
    role.boot("power_on")
    flow = Machine.pins[FLOW_PIN]
    for _ in range(3):
        flow.handler(flow)  # three pulses: 0.3 L, below the 0.5 L leak threshold
    r = role.read()
    assert r["valve"] == "closed" and "valve" not in role.faults and not role.alarm()
    assert abs(r["water_volume"] - 0.3) < 1e-9
    for _ in range(8):
        flow.handler(flow)
    r = role.read()
    assert r["valve"] == "fault" and "valve" in role.faults and role.alarm()
    assert abs(r["water_volume"] - 0.8) < 1e-9


def test_no_flow_while_open_is_a_flow_fault_but_not_a_valve_alarm():
    role = make({"state": "closed"}, pins={"valve_open": OPEN_PIN, "valve_close": CLOSE_PIN,
                                           "flow": FLOW_PIN}, flow_check_s=1)
    role.boot("power_on")
    assert role.command({"cmd": "valve_open", "seq": 1, "seconds": 60}) == "done"
    role._opened -= 2000  # as if opened two seconds ago (white box: no real waiting)
    r = role.read()
    assert r["valve"] == "open" and "flow" in role.faults and not role.alarm()
    flow = Machine.pins[FLOW_PIN]
    flow.handler(flow)
    role.read()
    assert "flow" not in role.faults


def test_bad_settings_are_refused_naming_the_key():
    for bad in ({"max_open_s": 0}, {"max_open_s": "600"}, {"moisture_wet": 100},
                {"valve_pulse_ms": 5000}, {"litres_per_pulse": 0,
                                           "pins": {"flow": FLOW_PIN}}):
        try:
            make(None, **bad)
        except ValueError as e:
            key = next(k for k in bad if k != "pins")
            assert key in str(e) or "moisture" in str(e), (bad, str(e))
        else:
            raise AssertionError("accepted %r" % (bad,))


def test_one_gpio_for_both_bridge_inputs_is_refused():
    try:
        make(None, pins={"valve_open": 25, "valve_close": 25})
    except ValueError as e:
        assert "used twice" in str(e)
    else:
        raise AssertionError("accepted the same GPIO for IN1 and IN2")
    assert Machine.log == []  # refused before any pin was driven


def test_cleanup():
    # The VM's filesystem is in RAM and discarded; on CPython the files live in temp folders.
    try:
        os.remove(Machine.path)
    except OSError:
        pass


def test_an_open_valve_lets_the_node_deep_sleep_to_its_deadline_unless_a_flow_meter_counts():
    role = make({"state": "closed"})
    role.boot("power_on")
    assert role.may_deep_sleep()  # closed: nothing to wait for
    assert role.command({"cmd": "valve_open", "seconds": 60}) == "done"
    assert role.may_deep_sleep() and 59000 <= role.poll() <= 60000  # boot() closes it then
    metered = make({"state": "closed"}, pins={"valve_open": OPEN_PIN, "valve_close": CLOSE_PIN,
                                              "flow": FLOW_PIN})
    metered.boot("power_on")
    assert metered.may_deep_sleep()
    assert metered.command({"cmd": "valve_open", "seconds": 60}) == "done"
    assert not metered.may_deep_sleep()  # its pulses are counted by IRQ: awake or light sleep


def test_a_valve_that_failed_to_close_keeps_the_node_up_to_retry():
    role = make({"state": "open", "deadline": int(time.time()) - 5})
    role.boot("deep_sleep")
    assert role.valve_state == "closed"
    role._valve.close = _raise_valve_error  # the next closing pulse fails
    assert role.command({"cmd": "valve_open", "seconds": 30}) == "done"
    assert role.command({"cmd": "valve_close"}) == "failed"
    assert role.valve_state == "stuck" and not role.may_deep_sleep()


def _raise_valve_error():
    from drivers.valve import ValveError

    raise ValveError("stuck")
