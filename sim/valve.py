"""A latching solenoid valve behind an H-bridge on two ``SimPin``s, and a pulse flow meter.

The valve (``LatchingValveModel``) watches the bridge inputs IN1 (``pin_open``) and IN2
(``pin_close``), and optionally the bridge's enable/nSLEEP pin:

* IN1 high alone drives forward current, IN2 high alone reverse current; the plunger moves, and
  the valve changes state, only once such a pulse has lasted ``min_pulse_us`` (a short pulse moves
  nothing); the state then holds with no current (that is what "latching" means);
* both inputs high is the bridge's brake state, a shoot-through on a discrete bridge: the model
  never moves on it, counts it in ``both_high`` and raises ``fault`` (latched until
  ``clear_fault()``), since a correct driver never does it;
* with an enable pin wired and low, the bridge is asleep: no current, nothing moves.

Every pulse is recorded (start, length, direction, whether it moved the valve) with the coil energy
it took at ``supply_v`` across ``coil_ohms`` (a typical 9 V DC latching irrigation solenoid is
3..8 ohm, i.e. 1..3 A during a 20..100 ms pulse).

The flow meter (``FlowMeterModel``) drives its output pin with one short pulse per
``litres_per_pulse`` of water while the valve is open at ``flow_lpm`` litres per minute (and at
``leak_lpm`` while it is closed: a valve that does not seal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.bus import SimPin
from sim.clock import VirtualClock


@dataclass(frozen=True)
class Pulse:
    start_us: int
    length_us: int
    direction: str  # "open" (IN1) or "close" (IN2)
    moved: bool  # did it change the valve's state (long enough, and from the other state)


class LatchingValveModel:
    """A latching valve and its H-bridge, driven by two SimPins."""

    def __init__(
        self,
        clock: VirtualClock,
        pin_open: SimPin,
        pin_close: SimPin,
        *,
        enable: SimPin | None = None,
        min_pulse_us: int = 20_000,
        initial: str = "closed",
        supply_v: float = 9.0,
        coil_ohms: float = 4.5,
    ) -> None:
        if initial not in ("open", "closed"):
            raise ValueError(f"a latching valve is 'open' or 'closed', not {initial!r}")
        self.clock = clock
        self.pin_open = pin_open
        self.pin_close = pin_close
        self.enable = enable
        self.min_pulse_us = min_pulse_us
        self.supply_v = supply_v
        self.coil_ohms = coil_ohms
        self._state = initial
        self._drive: str | None = None  # "open", "close" or None
        self._since_us = 0
        self.pulses: list[Pulse] = []
        self.both_high = 0  # times both inputs were seen high together
        self.fault = False
        self.energy_j = 0.0
        self.listeners: list[Callable[[str], None]] = []
        for pin in (pin_open, pin_close) + ((enable,) if enable is not None else ()):
            pin.watch(lambda _level: self._update())
        self._update()

    # -- what a test looks at ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'open' or 'closed' now (a pulse in progress counts once it has lasted min_pulse_us)."""
        if self._drive is not None and self.clock.now_us() - self._since_us >= self.min_pulse_us:
            return "open" if self._drive == "open" else "closed"
        return self._state

    @property
    def moves(self) -> int:
        return sum(1 for p in self.pulses if p.moved)

    def clear_fault(self) -> None:
        self.fault = False

    # -- the bridge ----------------------------------------------------------------------------------
    def _powered(self) -> bool:
        return self.enable is None or bool(self.enable.value())

    def _update(self) -> None:
        a, b = self.pin_open.value(), self.pin_close.value()
        if a and b:
            self.both_high += 1
            self.fault = True
        drive = None
        if self._powered() and a != b:
            drive = "open" if a else "close"
        if drive == self._drive:
            return
        now = self.clock.now_us()
        if self._drive is not None:
            self._end_pulse(now)
        self._drive = drive
        self._since_us = now

    def _end_pulse(self, now: int) -> None:
        length = now - self._since_us
        target = "open" if self._drive == "open" else "closed"
        moved = length >= self.min_pulse_us and self._state != target
        self.energy_j += self.supply_v**2 / self.coil_ohms * length / 1e6
        self.pulses.append(Pulse(self._since_us, length, self._drive or "", moved))
        if length >= self.min_pulse_us:
            self._state = target
        if moved:
            for cb in list(self.listeners):
                cb(target)


class FlowMeterModel:
    """A turbine flow meter on ``pin``: one pulse per ``litres_per_pulse`` of water through ``valve``."""

    def __init__(
        self,
        clock: VirtualClock,
        pin: SimPin,
        valve: LatchingValveModel,
        *,
        litres_per_pulse: float = 0.1,
        flow_lpm: float = 6.0,
        leak_lpm: float = 0.0,
        pulse_us: int = 2_000,
    ) -> None:
        self.clock = clock
        self.pin = pin
        self.valve = valve
        self.litres_per_pulse = litres_per_pulse
        self.flow_lpm = flow_lpm
        self.leak_lpm = leak_lpm
        self.pulse_us = pulse_us
        self.pulses = 0
        self._timer = None
        valve.listeners.append(lambda _state: self._schedule())
        self._schedule()

    @property
    def litres(self) -> float:
        return self.pulses * self.litres_per_pulse

    def _rate_lpm(self) -> float:
        return self.flow_lpm if self.valve.state == "open" else self.leak_lpm

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rate = self._rate_lpm()
        if rate <= 0:
            return
        period_us = max(2 * self.pulse_us, round(self.litres_per_pulse / rate * 60e6))
        self._timer = self.clock.call_later(period_us, self._pulse)

    def _pulse(self) -> None:
        self._timer = None
        if self._rate_lpm() <= 0:
            return
        self.pulses += 1
        self.pin.drive(1)
        self.clock.call_later(self.pulse_us, self.pin.drive, 0)
        self._schedule()
