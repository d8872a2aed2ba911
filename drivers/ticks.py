"""MicroPython's ticks/sleep API for drivers that also run on CPython (the Pi, the simulator).

On MicroPython these call ``time.ticks_ms`` & co. through the ``time`` module at call time, so a
``time`` module swapped in by the virtual board's harness (or patched later) is honoured.

On CPython the functions fall back to ``time.monotonic_ns``/``time.sleep`` with MicroPython's
wrap-around (2**30), unless the calling thread has bound a time source with ``bind(source)``:
any object with the six methods, e.g. a ``sim.clock.Participant``, so that a driver running in a
simulation participant thread lives in virtual time. The binding is per thread because every
participant sleeps on its own behalf.
"""

import time

_PERIOD = 1 << 30
_MAX = _PERIOD - 1
_HALF = _PERIOD >> 1

# MicroPython, or a virtual-time module the harness installed, has ticks_ms; CPython does not.
_NATIVE = hasattr(time, "ticks_ms")

if _NATIVE:

    def ticks_ms():
        return time.ticks_ms()

    def ticks_us():
        return time.ticks_us()

    def ticks_add(ticks, delta):
        return time.ticks_add(ticks, delta)

    def ticks_diff(end, start):
        return time.ticks_diff(end, start)

    def sleep_ms(ms):
        time.sleep_ms(ms)

    def sleep_us(us):
        time.sleep_us(us)

    def bind(source):
        """MicroPython: the ``time`` module is the only source; binding is not supported."""
        raise OSError("drivers.ticks.bind() is for CPython threads only")

else:
    import threading

    _local = threading.local()

    def bind(source):
        """Make this thread's ticks/sleeps use ``source`` (e.g. a sim Participant); None unbinds."""
        _local.source = source

    def _source():
        return getattr(_local, "source", None)

    def ticks_ms():
        s = _source()
        if s is not None:
            return s.ticks_ms()
        return (time.monotonic_ns() // 1000000) & _MAX

    def ticks_us():
        s = _source()
        if s is not None:
            return s.ticks_us()
        return (time.monotonic_ns() // 1000) & _MAX

    def ticks_add(ticks, delta):
        return (ticks + delta) & _MAX

    def ticks_diff(end, start):
        return ((end - start + _HALF) & _MAX) - _HALF

    def sleep_ms(ms):
        s = _source()
        if s is not None:
            s.sleep_ms(ms)
        else:
            time.sleep(ms / 1000)

    def sleep_us(us):
        s = _source()
        if s is not None:
            s.sleep_us(us)
        else:
            time.sleep(us / 1000000)
