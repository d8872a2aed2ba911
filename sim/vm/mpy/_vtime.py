"""MicroPython's ``time`` on the virtual board: virtual time from the simulation's clock.

Installed as ``sys.modules["time"]`` and ``["utime"]`` before any user code runs. Time moves only
when the board sleeps (or busy-waits on the clock, see _hw.FREE_READS), so code between two sleeps
takes no virtual time, and a 10 minute sleep costs microseconds of real time.
"""

import _hw

_rt = _hw.rtime
_PERIOD = 1 << 30
_MAX = _PERIOD - 1
_HALF = _PERIOD >> 1


def ticks_ms():
    _hw.read_clock()
    return _hw.ticks_ms


def ticks_us():
    _hw.read_clock()
    return _hw.ticks_us


ticks_cpu = ticks_us


def ticks_add(ticks, delta):
    return (ticks + delta) & _MAX


def ticks_diff(ticks1, ticks2):
    return ((ticks1 - ticks2 + _HALF) & _MAX) - _HALF


def _int(n):
    if not isinstance(n, int):  # as the built-in time module does
        raise TypeError("can't convert " + type(n).__name__ + " to int")
    return n


def sleep_us(us):
    _hw.sleep(_int(us))


def sleep_ms(ms):
    _hw.sleep(_int(ms) * 1000)


def sleep(seconds):
    _hw.sleep(int(seconds * 1000000))


def time():
    _hw.read_clock()
    return (_hw.epoch_us + _hw.now_us) // 1000000


def time_ns():
    _hw.read_clock()
    return (_hw.epoch_us + _hw.now_us) * 1000


def gmtime(secs=None):
    return _rt.gmtime(time() if secs is None else int(secs))


def localtime(secs=None):  # boards keep UTC
    return _rt.gmtime(time() if secs is None else int(secs))


def mktime(t):
    return _rt.mktime(t)
