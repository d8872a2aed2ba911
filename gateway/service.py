"""`cityedge gateway run`: the agent as a long-running service (systemd or a terminal).

SIGHUP re-reads the node registry, so `cityedge gateway nodes add/import/remove` take effect
without a restart, and the config file's trusted command keys, groups and command limits. Stops cleanly on SIGTERM/SIGINT: the front end is closed, what was received is already committed,
and unsent records stay in the store for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from gateway.agent import Agent
from gateway.config import GatewayConfig
from gateway.store import StoreError

log = logging.getLogger("cityedge.service")

T = TypeVar("T")

COUNTERS_EVERY_S = 300.0
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc <malloc.h>


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does) so that SQLite and OpenSSL work
    done in worker threads does not grow one arena per thread: on the Pi's small RAM this halves
    the agent's growth while draining a backlog. True when applied (glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False  # not glibc (musl, ...): nothing to tune


@contextlib.asynccontextmanager
async def standalone_sim(config: GatewayConfig) -> AsyncIterator[Any]:
    """The `sim` front end on its own: an empty simulated channel paced at real time.

    Simulated nodes join it only in-process (``cityedge demo``, tests); a gateway run this way
    is useful to check configuration, store and broker link without a radio.
    """
    from gateway.radio.sim import SimFrontEnd
    from sim.channel import Concentrator, RadioChannel
    from sim.clock import VirtualClock

    clock = VirtualClock(speed=1.0, epoch=time.time())
    channel = RadioChannel(clock)
    concentrator = Concentrator(clock, channel, position=(0.0, 0.0))
    thread = threading.Thread(target=clock.run, kwargs={"raise_errors": False},
                              name="sim-channel", daemon=True)
    thread.start()
    try:
        yield SimFrontEnd(config.radio, concentrator=concentrator, clock=clock)
    finally:
        clock.stop()
        thread.join(timeout=5)


class EventLoopError(RuntimeError):
    """``[gateway] event_loop = "uvloop"`` but uvloop is not installed."""


def event_loop_factory(choice: str = "asyncio") -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop ``[gateway] event_loop`` asks for: uvloop when chosen or, with ``auto``,
    when installed; asyncio's own otherwise (the default: uvloop measured no CPU gain here, as
    the front end and paho read their sockets themselves, and ~2 MB more RSS)."""
    if choice in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise EventLoopError(
                    "[gateway] event_loop = \"uvloop\" but uvloop is not installed: "
                    "pip install uvloop in the agent's environment, or set event_loop = "
                    "\"asyncio\"") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_on_loop(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """``asyncio.run(main)`` on the event loop ``choice`` names (see ``event_loop_factory``)."""
    with asyncio.Runner(loop_factory=event_loop_factory(choice)) as runner:
        return runner.run(main)


def run(config: GatewayConfig, *, frontend: Any | None = None) -> int:
    """``run_gateway`` on the event loop the configuration chooses (`cityedge gateway run`)."""
    return run_on_loop(run_gateway(config, frontend=frontend), config.gateway.event_loop)


async def run_gateway(config: GatewayConfig, *, frontend: Any | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the process exit status."""
    limit_malloc_arenas()
    async with contextlib.AsyncExitStack() as stack:
        if frontend is None and config.radio.frontend == "sim":
            frontend = await stack.enter_async_context(standalone_sim(config))
        try:
            agent = Agent(config, frontend=frontend)
        except StoreError as exc:
            log.error("cannot open the store: %s", exc)
            return 1
        stack.callback(agent.store.close)
        reloads: set[asyncio.Task[int]] = set()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        log.info("event loop: %s", type(loop).__module__.split(".")[0])
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
                stack.callback(loop.remove_signal_handler, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, _spawn_reload, agent, reloads)
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        task = asyncio.create_task(agent.run(), name="agent")
        report = asyncio.create_task(_report_counters(agent), name="counters")
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        report.cancel()
        stopper.cancel()
        if task in done:
            exc = task.exception()
            if exc is not None:
                log.error("agent stopped: %s: %s", type(exc).__name__, exc)
                return 1
            return 0
        log.info("stopping on signal")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("stopped; %d records wait in the store", agent.store.count())
        return 0


def _spawn_reload(agent: Agent, tasks: set[asyncio.Task[int]]) -> None:
    """The SIGHUP handler: start a registry reload (keeping a reference until it is done)."""
    task = asyncio.get_running_loop().create_task(reload_devices(agent), name="reload")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def reload_devices(agent: Agent) -> int:
    """SIGHUP: re-read the node registry (after `gateway nodes add/import/remove`) and the
    command keys and groups of the config file; returns how many nodes are registered, -1 when
    the store could not be read (logged, agent carries on)."""
    agent.reload_commands()  # logs its own outcome; the old keys stay on a bad file
    try:
        count = await agent.reload_devices()
    except StoreError as exc:
        log.error("SIGHUP: node registry not reloaded: %s", exc)
        return -1
    log.info("SIGHUP: node registry reloaded, %d nodes", count)
    return count


async def _report_counters(agent: Agent) -> None:
    while True:
        await asyncio.sleep(COUNTERS_EVERY_S)
        log.info("counters %s", " ".join(f"{k}={v}" for k, v in sorted(agent.counters.items())))
