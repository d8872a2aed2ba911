"""The virtual board's wire to the host (sim/vm/board.py), used by machine, time and _boot.

Every hardware operation is one request line (JSON) answered by one reply line (JSON) through
the JS module ``_host``. A reply may carry:

* ``t``/``u``/``m``: virtual now in us, ticks_us and ticks_ms (after a sleep: time moves only then);
* ``i``: ids of pins whose IRQ fired; their handlers run here before the call returns, like an
  interrupt taken between two bytecodes;
* ``l``: us left of a sleep that an IRQ interrupted;
* ``k``: Ctrl-C arrived on the serial port: raise KeyboardInterrupt;
* ``e``: an errno to raise as OSError (19: ENODEV from I2C); ``x``: a message to raise as ValueError.
"""



import json
import sys
import time as rtime  # noqa: F401 - the VM's own time, kept for _vtime's calendar maths

import _host

cfg = json.loads(_host.cfg)
now_us = cfg["t"]
ticks_us = cfg["u"]
ticks_ms = cfg["m"]
epoch_us = cfg["e"] + cfg["rtco"]  # the RTC, as the program last set it

# A loop that reads the clock without sleeping (busy-wait on ticks_diff) would never see time move:
# after FREE_READS reads with no sleep in between, each read costs 1, 2, 4 ... up to 1000 us.
FREE_READS = 32
_reads = 0

_EMPTY = {}
handlers = {}  # pin id -> (Pin, handler)
_queue = []
_masked = 0
_dispatching = False


def call(req):
    """Send one request (a JSON text) and return the decoded reply."""
    global now_us, ticks_us, ticks_ms
    r = _host.call(req)
    if r == "{}":
        return _EMPTY
    r = json.loads(r)
    if "t" in r:
        now_us = r["t"]
        ticks_us = r["u"]
        ticks_ms = r["m"]
    if "i" in r:
        _queue.extend(r["i"])
        if not _masked and not _dispatching:
            dispatch()
    if "k" in r:  # Ctrl-C on the serial port
        raise KeyboardInterrupt
    if "e" in r:
        raise OSError(r["e"])
    if "x" in r:
        raise ValueError(r["x"])
    return r


def dispatch():
    """Run the handlers of pending pin IRQs (never nested, never while IRQs are disabled)."""
    global _dispatching
    _dispatching = True
    try:
        while _queue and not _masked:
            h = handlers.get(_queue.pop(0))
            if h is not None:
                try:
                    h[1](h[0])
                except Exception as e:  # noqa: BLE001 - like mp_call_function_1_protected
                    sys.print_exception(e)
    finally:
        _dispatching = False


def mask():
    global _masked
    _masked += 1
    return _masked - 1


def unmask(state):
    global _masked
    _masked = state
    if not _masked and _queue and not _dispatching:
        dispatch()


def read_clock():
    """Account one read of the clock (see FREE_READS)."""
    global _reads
    _reads += 1
    if _reads > FREE_READS:
        n = _reads - FREE_READS - 1
        call('{"op":"sleep","us":%d}' % (1000 if n >= 10 else 1 << n))


def sleep(us, wake=False, light=False):
    """Sleep ``us`` virtual us; IRQ handlers run when their edge comes. ``wake``: return after one.

    ``light``: machine.lightsleep(), whose time the board records apart (Boot.light_sleep_us).
    """
    global _reads
    _reads = 0
    us = max(0, int(us))
    while True:
        r = call('{"op":"sleep","us":%d%s%s}' % (us, ',"w":1' if wake else "",
                                                  ',"ls":1' if light else ""))
        left = r.get("l", 0)
        if not left or wake:
            return
        us = left


def mem():
    """micropython.mem_info() text, captured instead of printed."""
    import gc

    import micropython

    gc.collect()
    _host.capture(1)
    try:
        micropython.mem_info()
    finally:
        text = _host.capture(0)
    return text


def heap(reset=False):
    """The live GC heap now, measured by the runner (see runner.mjs, makeHeapProbe), as a dict.

    ``live``: bytes of the objects reachable now, i.e. what ``gc.collect(); gc.mem_alloc()`` would
    give on a board (in this VM gc.collect() frees nothing until the run ends: see runner.mjs);
    ``peak``: the highest ``live`` sampled at every host call since boot, or since the last
    ``heap(True)``, which restarts it from now; ``used``: what the VM's gc.mem_alloc() counts
    (every allocation since start); ``total``: the heap's size. Values are None when the runner
    cannot find the heap (another package version).
    """
    return json.loads(_host.heap(1 if reset else 0))


def cpu_us():
    """[host CPU microseconds this VM's Python has used so far, the harness's own work excluded
    (runner.mjs, harness()), host calls made so far]: what bench.node_cpu scales to a board."""
    return [_host.cpu_us(), _host.host_calls()]


def end(op, **fields):
    """Report the end of this boot (main returned or crashed, deepsleep, reset): never returns."""
    fields["op"] = op
    fields["mem"] = mem()
    fields["heap"] = heap()
    fields["cpu_us"] = cpu_us()
    call(json.dumps(fields))
    raise SystemExit  # only reached if the host answered: the board has ended anyway
