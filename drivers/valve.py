"""A latching solenoid valve behind an H-bridge on two GPIOs, and an optional pulse flow meter.

H-bridge truth table (TI DRV8833 / DRV8871 style, IN1 = ``pin_open``, IN2 = ``pin_close``):

    IN1 IN2   outputs
     0   0    coast (bridge off, no current: the valve stays where it latched)
     1   0    forward current: the solenoid's plunger latches, the valve opens
     0   1    reverse current: the plunger releases, the valve closes
     1   1    brake (both outputs low; on a discrete bridge: shoot-through): never driven here

A latching solenoid (DC latching irrigation solenoids, 9-12 V, 3-8 ohm) moves only on a pulse of
the right polarity that is long enough (tens of ms), and then holds its position with no current,
which is why a battery node can water. The driver raises one input for ``pulse_ms`` and lowers it
in a ``finally``: an exception in between never leaves the coil powered. Before and during a pulse
it reads both inputs back; if the other input is high (a short, a stuck pin) it stops and raises
``ValveError`` instead of braking the bridge. An optional ``enable`` pin (the bridge's nSLEEP)
is high only around a pulse, so the bridge draws its sleep current (about 1 uA) otherwise.

The flow meter (hall-effect turbine, e.g. 450 pulses per litre) is counted by a pin IRQ whose
handler only increments an integer: no allocation, no I/O in the interrupt.

Pins come in already built (``machine.Pin(n, Pin.OUT)``, ``sim.bus.SimPin``): no ``machine``
import here. Time comes from ``drivers.ticks`` so the pulse length is virtual in the simulation.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from drivers import ticks

PULSE_MS = const(50)  # typical DC latching solenoid: 20..100 ms; 50 ms is the common default
_WAKE_MS = const(1)  # DRV8833: nSLEEP high to outputs ready, 1 ms max


class ValveError(Exception):
    """The valve could not be driven safely; the message says what the bridge inputs showed."""


class LatchingValve:
    """Open/close a latching valve with one pulse of the right polarity, never both inputs high."""

    def __init__(self, pin_open, pin_close, pulse_ms=PULSE_MS, enable=None):
        if not 5 <= pulse_ms <= 1000:
            raise ValueError("valve pulse_ms must be 5..1000 ms, got %r" % (pulse_ms,))
        self._a = pin_open
        self._b = pin_close
        self._en = enable
        self.pulse_ms = pulse_ms
        self.pulses = 0  # pulses driven since construction (energy accounting)
        self.idle()

    def idle(self):
        """Both inputs low (coast) and the bridge asleep: the valve keeps its latched position."""
        self._a.value(0)
        self._b.value(0)
        if self._en is not None:
            self._en.value(0)

    def open(self):
        """Drive one opening pulse (IN1); raises ValveError if the bridge inputs misbehave."""
        self._pulse(self._a, self._b, "open")

    def close(self):
        """Drive one closing pulse (IN2); raises ValveError if the bridge inputs misbehave."""
        self._pulse(self._b, self._a, "close")

    def _pulse(self, on, off, what):
        self.idle()
        if on.value() or off.value():
            self.idle()
            raise ValveError("valve %s refused: an H-bridge input reads high while both are "
                             "driven low (stuck pin or short)" % what)
        en = self._en
        try:
            if en is not None:
                en.value(1)
                ticks.sleep_ms(_WAKE_MS)
            on.value(1)
            if off.value():  # both inputs high: brake / shoot-through, stop at once
                raise ValveError("valve %s aborted: both H-bridge inputs read high" % what)
            ticks.sleep_ms(self.pulse_ms)
        finally:
            on.value(0)
            if en is not None:
                en.value(0)
        self.pulses += 1


class FlowMeter:
    """Counts a flow meter's pulses on ``pin`` by IRQ; ``take()`` returns pulses since last take."""

    def __init__(self, pin, litres_per_pulse):
        if not 0 < litres_per_pulse <= 100:
            raise ValueError("flow meter litres_per_pulse must be in (0, 100], got %r"
                             % (litres_per_pulse,))
        self.litres_per_pulse = litres_per_pulse
        self.count = 0  # only the IRQ writes it
        self._taken = 0
        self._pin = pin
        self._handler = self._on_pulse  # bound once here, not in the interrupt
        pin.irq(handler=self._handler, trigger=pin.IRQ_RISING)

    def _on_pulse(self, _pin):
        # IRQ handler: one small-int increment, no allocation, no I/O.
        self.count += 1

    def take(self):
        """Pulses counted since the previous take (the IRQ keeps counting meanwhile)."""
        n = self.count
        d = n - self._taken
        self._taken = n
        return d

    def litres(self, pulses):
        """Volume in litres of ``pulses`` pulses."""
        return pulses * self.litres_per_pulse

    def stop(self):
        """Detach the IRQ."""
        self._pin.irq(handler=None)
