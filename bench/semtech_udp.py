"""The Semtech UDP front end alone on this machine: PUSH_DATA in, parsed and deduplicated, RxFrame
taken off ``fe.queue``; no target of its own, it shows how much of the agent's budget per uplink
the front end takes (the agent's end-to-end figures against the brief are in bench.gateway_e2e).

A packet forwarder in a separate process on CPU 1 (bench.gateway_rig) sends as fast as PUSH_ACKs
come back; the front end runs pinned to CPU 0.
"""

from __future__ import annotations

import asyncio
import time

from bench.gateway_rig import (
    AGENT_CPU,
    PacketForwarder,
    load_average,
    loop_name,
    pinned,
    push_data,
    run,
)
from gateway.radio.semtech_udp import SemtechUdpFrontEnd

FRAMES = 60_000


async def _front_end_alone(per_datagram: int) -> tuple[str, ...]:
    # unique PHYPayloads: identical ones would (rightly) be deduplicated
    phys = [b"\x40" + i.to_bytes(4, "little") + bytes(12) for i in range(FRAMES)]
    datagrams = push_data(phys, per_datagram)
    load = load_average()
    async with SemtechUdpFrontEnd(bind="127.0.0.1", port=0) as fe:
        forwarder = PacketForwarder(fe.address[:2], datagrams)
        queue = fe.queue
        await queue.get()  # timing starts at the first frame
        t0, cpu0 = time.perf_counter(), time.process_time()
        got = 1
        while got < FRAMES:
            while not queue.empty():  # take what is there without a wake-up per frame
                queue.get_nowait()
                got += 1
            if got >= FRAMES:
                break
            try:
                async with asyncio.timeout(5.0):
                    await queue.get()
            except TimeoutError:
                break
            got += 1
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        lost = forwarder.lost()
    rate = (got - 1) / dt if dt > 0 else 0.0
    return (f"{per_datagram} rxpk per PUSH_DATA", f"{got:,}", f"{rate:,.0f} /s",
            f"{cpu / max(got - 1, 1) * 1e6:.1f} µs", f"{lost} acks lost",
            f"{load:.1f} -> {load_average():.1f}")


def rows() -> list[tuple[str, ...]]:
    """Every row of the table, measured now."""
    with pinned(AGENT_CPU):
        return [run(_front_end_alone(1)), run(_front_end_alone(8))]


def main() -> None:
    """Print the table (``make bench`` / ``python -m bench semtech_udp``)."""
    from bench.table import print_table

    print_table(("front end alone (CPU 0)", "frames", "rate", "CPU per frame", "notes",
                 "load 1 min"), rows())
    print(f"\n(generator on CPU 1; event loop {loop_name()}; 'CPU per frame' is the front end "
          "process's own CPU time; 'load 1 min' before -> after: other work on the machine "
          "lowers the rates)")


if __name__ == "__main__":
    main()
