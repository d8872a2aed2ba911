"""Discrete-event virtual time shared by every simulated part.

Code that "runs on a device" (a virtual MicroPython board, a chip model's timer) runs in a
participant thread. Exactly one participant or the scheduler runs at any moment; the scheduler
advances time only when every participant is blocked in a sleep, so a simulation is deterministic
and runs as fast as the host allows (``speed=None``) or paced to the wall clock (``speed=60.0`` runs
a minute of city life per second).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

TICKS_PERIOD = 1 << 30  # MicroPython's ticks_* wrap at 2**30 on every port
TICKS_MAX = TICKS_PERIOD - 1
TICKS_HALFPERIOD = TICKS_PERIOD // 2

DEFAULT_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: virtual time 0 on the virtual wall clock


class SimulationError(RuntimeError):
    """A participant raised: the simulation cannot go on deterministically."""


class Timer:
    """A scheduled callback; ``cancel()`` before it fires and it never runs."""

    __slots__ = ("args", "at_us", "cancelled", "fn")

    def __init__(self, at_us: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.at_us = at_us
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Participant:
    """A thread living in virtual time; also the ``time``-module face that node code sees.

    Its methods mirror MicroPython's ``time`` module (ticks_ms, ticks_diff, sleep_ms, ...), so a
    participant can be handed to code written for a board.
    """

    def __init__(self, clock: VirtualClock, name: str) -> None:
        self.clock = clock
        self.name = name
        self._wake = threading.Event()
        self.finished = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    # -- MicroPython `time` API -------------------------------------------------------------
    def ticks_us(self) -> int:
        return self.clock.now_us() & TICKS_MAX

    def ticks_ms(self) -> int:
        return (self.clock.now_us() // 1000) & TICKS_MAX

    def ticks_cpu(self) -> int:
        return self.ticks_us()

    @staticmethod
    def ticks_add(ticks: int, delta: int) -> int:
        return (ticks + delta) & TICKS_MAX

    @staticmethod
    def ticks_diff(end: int, start: int) -> int:
        return ((end - start + TICKS_HALFPERIOD) & TICKS_MAX) - TICKS_HALFPERIOD

    def time(self) -> int:
        return int(self.clock.epoch())

    def time_ns(self) -> int:
        return int(self.clock.epoch() * 1e9)

    def sleep_us(self, us: int) -> None:
        self.clock._sleep(self, max(0, int(us)))

    def sleep_ms(self, ms: int) -> None:
        self.sleep_us(int(ms) * 1000)

    def sleep(self, seconds: float) -> None:
        self.sleep_us(int(seconds * 1_000_000))

    # -- thread plumbing ------------------------------------------------------------------------
    def _run(self, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._wake.wait()
        self._wake.clear()
        try:
            if not self.clock._stopped:
                target(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the scheduler, not swallowed
            self.error = exc
        finally:
            self.finished = True
            self.clock._yield_to_scheduler()

    def __repr__(self) -> str:
        return f"<Participant {self.name}>"


class VirtualClock:
    """Virtual microseconds since the start of the simulation, with a scheduler that owns them."""

    def __init__(self, speed: float | None = None, epoch: float = DEFAULT_EPOCH) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive, or None for as fast as possible")
        self.speed = speed
        self.epoch0 = epoch
        self._now = 0
        self._queue: list[tuple[int, int, Timer | Participant]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._yielded = threading.Event()
        self._stopped = False
        self._wall0: float | None = None
        self._virt0 = 0
        self.participants: list[Participant] = []
        self.on_error: Callable[[Participant, BaseException], None] | None = None

    # -- reading time ---------------------------------------------------------------------------
    def now_us(self) -> int:
        return self._now

    def now_s(self) -> float:
        return self._now / 1e6

    def epoch(self) -> float:
        """Virtual wall-clock time (Unix seconds)."""
        return self.epoch0 + self._now / 1e6

    # -- scheduling (thread-safe) ----------------------------------------------------------------
    def call_at(self, at_us: int, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` in scheduler context at virtual time ``at_us`` (never in the past)."""
        timer = Timer(max(int(at_us), self._now), fn, args)
        with self._cv:
            heapq.heappush(self._queue, (timer.at_us, next(self._seq), timer))
            self._cv.notify_all()
        return timer

    def call_later(self, delay_us: int, fn: Callable[..., Any], *args: Any) -> Timer:
        return self.call_at(self._now + int(delay_us), fn, *args)

    def spawn(self, name: str, target: Callable[..., Any], *args: Any) -> Participant:
        """Start ``target(*args)`` as a participant; it first runs at the current virtual time."""
        part = Participant(self, name)
        part.thread = threading.Thread(
            target=part._run, args=(target, args), name=f"sim:{name}", daemon=True
        )
        self.participants.append(part)
        part.thread.start()
        with self._cv:
            heapq.heappush(self._queue, (self._now, next(self._seq), part))
            self._cv.notify_all()
        return part

    # -- running ----------------------------------------------------------------------------------
    def run(self, until_us: int | None = None, raise_errors: bool = True) -> None:
        """Run the scheduler in this thread until ``until_us`` (virtual) or ``stop()``."""
        if self._wall0 is None or self.speed is not None:
            self._wall0 = time.monotonic()
            self._virt0 = self._now
        while True:
            with self._cv:
                item = self._next_due(until_us)
                if item is None:
                    if until_us is not None and not self._stopped:
                        self._now = max(self._now, until_us)
                    return
            _, _, what = item
            if isinstance(what, Timer):
                if not what.cancelled:
                    what.fn(*what.args)
            else:
                self._resume(what)
                if what.error is not None:
                    err, what.error = what.error, None
                    if self.on_error is not None:
                        self.on_error(what, err)
                    elif raise_errors:
                        raise SimulationError(f"{what.name} failed at t={self.now_s():.3f}s") from err

    def run_for(self, seconds: float) -> None:
        self.run(until_us=self._now + int(seconds * 1_000_000))

    def stop(self) -> None:
        """Stop the scheduler; blocked participants stay parked (their threads are daemons)."""
        with self._cv:
            self._stopped = True
            self._cv.notify_all()

    def _next_due(self, until_us: int | None) -> tuple[int, int, Timer | Participant] | None:
        """Pop the next event, waiting (paced mode) for its wall time; None when done."""
        while not self._stopped:
            if not self._queue:
                if until_us is not None and self.speed is None:
                    return None
                self._cv.wait(timeout=self._wall_wait(until_us))
                if until_us is not None and self._wall_virtual() >= until_us:
                    return None
                continue
            at = self._queue[0][0]
            if until_us is not None and at > until_us:
                if self.speed is not None and self._wall_virtual() < until_us:
                    self._cv.wait(timeout=self._wall_wait(until_us))
                    continue
                return None
            if self.speed is not None:
                wait = self._wall_wait(at)
                if wait > 0:
                    self._cv.wait(timeout=wait)
                    continue
            item = heapq.heappop(self._queue)
            self._now = max(self._now, item[0])
            return item
        return None

    def _wall_virtual(self) -> int:
        if self.speed is None or self._wall0 is None:
            return self._now
        return self._virt0 + int((time.monotonic() - self._wall0) * self.speed * 1e6)

    def _wall_wait(self, at_us: int | None) -> float | None:
        if self.speed is None or at_us is None or self._wall0 is None:
            return None if at_us is None else 0.0
        due = self._wall0 + (at_us - self._virt0) / (self.speed * 1e6)
        return max(0.0, due - time.monotonic())

    # -- participant hand-off ---------------------------------------------------------------------
    def _resume(self, part: Participant) -> None:
        if part.finished:
            return
        self._yielded.clear()
        part._wake.set()
        self._yielded.wait()

    def _sleep(self, part: Participant, us: int) -> None:
        with self._cv:
            heapq.heappush(self._queue, (self._now + us, next(self._seq), part))
        self._yield_to_scheduler()
        part._wake.wait()
        part._wake.clear()

    def _yield_to_scheduler(self) -> None:
        self._yielded.set()
