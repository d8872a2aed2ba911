"""Semtech UDP uplinks on this machine: the front end alone, and the whole agent to broker PUBACK.

A load generator in a separate process (its own core when there is one) plays a packet
forwarder: it sends PUSH_DATA over loopback UDP as fast as PUSH_ACKs come back (a window of
datagrams in flight), or paced at a fixed rate. The measured side runs pinned to one core.

1. front end alone: PUSH_DATA -> parsed, deduplicated -> RxFrame taken off ``fe.queue``.
2. whole agent: PUSH_DATA -> front end -> MIC, FCnt, decrypt, decode -> SQLite group commit ->
   COSE_Sign1 -> MQTT QoS 1 to a private Mosquitto -> PUBACK (the forwarder's ``on_acked``).
3. p99 latency at 1,000 uplinks/s, from the datagram's arrival (``RxFrame.received_at``, which
   the store keeps as ``created_at``) to the broker's PUBACK of its record, same clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.config import GatewaySection
from gateway.radio.semtech_udp import SemtechUdpFrontEnd, encode_push_data
from sim.packet_forwarder import rxpk

EUI = "aa555a0000000b01"
ALONE_FRAMES = 60_000
AGENT_FRAMES = 20_000
DEVICES = 200
LATENCY_RATE = 1_000  # uplinks/s
LATENCY_SECONDS = 10
WINDOW = 32  # PUSH_DATA datagrams in flight before waiting for PUSH_ACKs


_DEFAULT_LOOP = GatewaySection.__dataclass_fields__["event_loop"].default


def _run(main: Any) -> Any:
    """Run ``main`` on the agent's default event loop (``[gateway] event_loop``; the
    environment's CITYEDGE_EVENT_LOOP=asyncio|uvloop picks one, to compare them)."""
    from gateway.service import run_on_loop

    return run_on_loop(main, os.environ.get("CITYEDGE_EVENT_LOOP") or _DEFAULT_LOOP)


def _loop_name() -> str:
    from gateway.service import event_loop_factory

    factory = event_loop_factory(os.environ.get("CITYEDGE_EVENT_LOOP") or _DEFAULT_LOOP)
    return factory.__module__.split(".")[0]


# ----------------------------------------------------------------------------- generator


def _pin(cpu: int) -> None:
    """Run this process on ``cpu`` when the machine has it (best effort)."""
    try:
        if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
            os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def _generator(server: tuple[str, int], datagrams: list[bytes], window: int,
               rate_per_s: float | None, per_datagram: int, done: Any) -> None:
    """Child process: send ``datagrams`` (as fast as acked, or paced); report lost acks."""
    _pin(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect(server)
    sock.settimeout(2.0)
    in_flight = lost = 0
    t0 = time.monotonic()
    for i, d in enumerate(datagrams):
        if rate_per_s is not None:  # paced: datagram i leaves at t0 + i * per_datagram / rate
            due = t0 + i * per_datagram / rate_per_s
            while (now := time.monotonic()) < due:
                time.sleep(min(due - now, 0.0005))
        sock.send(d)
        in_flight += 1
        while in_flight >= window or (rate_per_s is not None and in_flight > 0):
            try:
                sock.recv(64)
                in_flight -= 1
            except TimeoutError:
                lost += in_flight
                in_flight = 0
            if rate_per_s is not None:
                break
    while in_flight > 0:
        try:
            sock.recv(64)
            in_flight -= 1
        except TimeoutError:
            lost += in_flight
            break
    done.put(lost)


def _start_generator(server: tuple[str, int], datagrams: list[bytes], *, window: int = WINDOW,
                     rate_per_s: float | None = None, per_datagram: int = 1
                     ) -> tuple[mp.process.BaseProcess, Any]:
    ctx = mp.get_context("fork")
    done = ctx.Queue()
    proc = ctx.Process(target=_generator, args=(server, datagrams, window, rate_per_s,
                                                per_datagram, done), daemon=True)
    proc.start()
    return proc, done


def _push_datagrams(phys: list[bytes], per_datagram: int) -> list[bytes]:
    out = []
    for i in range(0, len(phys), per_datagram):
        packets = [rxpk(p, tmst=(i + j) * 1000, rssi_dbm=-90, snr_db=6.5)
                   for j, p in enumerate(phys[i:i + per_datagram])]
        out.append(encode_push_data(i & 0xFFFF, EUI, packets))
    return out


# ------------------------------------------------------------------- 1. front end alone


async def _front_end_alone(per_datagram: int) -> tuple[str, ...]:
    # unique PHYPayloads: identical ones would (rightly) be deduplicated
    phys = [b"\x40" + i.to_bytes(4, "little") + bytes(12) for i in range(ALONE_FRAMES)]
    datagrams = _push_datagrams(phys, per_datagram)
    async with SemtechUdpFrontEnd(bind="127.0.0.1", port=0) as fe:
        proc, done = _start_generator(fe.address[:2], datagrams)
        got = 0
        first = await fe.queue.get()
        t0, cpu0 = time.perf_counter(), time.process_time()
        got = 1
        queue = fe.queue
        while got < ALONE_FRAMES:
            while not queue.empty():  # take what is there without a wake-up per frame
                queue.get_nowait()
                got += 1
            if got >= ALONE_FRAMES:
                break
            try:
                async with asyncio.timeout(5.0):
                    await queue.get()
            except TimeoutError:
                break
            got += 1
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        proc.join(10)
        lost = done.get(timeout=5) if not done.empty() else "?"
        del first
    rate = (got - 1) / dt if dt > 0 else 0.0
    return (f"front end alone, {per_datagram} rxpk per PUSH_DATA", f"{got:,}",
            f"{rate:,.0f} /s", f"{cpu / max(got - 1, 1) * 1e6:.1f} µs",
            f"{lost} acks lost", "")


# ------------------------------------------------------------------------ 2./3. agent


def _mosquitto(directory: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    """A private broker on a free port, or None when mosquitto is not installed."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import pwd

    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
        f"user {pwd.getpwuid(os.getuid()).pw_name}", "set_tcp_nodelay true",
        "max_inflight_messages 0", "max_queued_messages 1000000", "log_dest none",
    ]) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        os.sched_setaffinity(proc.pid, {1})  # beside the generator, off the measured core
    except (AttributeError, OSError):
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None


class _AgentRig:
    """A configured agent with registered devices and ready-made uplinks."""

    def __init__(self, tmp: Path, port: int) -> None:
        from gateway.agent import Agent
        from gateway.config import SemtechUdpConfig, default_config
        from gateway.keys import generate_signing_key
        from gateway.store import Device, Store
        from protocol import lorawan
        from protocol import payload as codec

        cfg = default_config("bench-gw", tmp / "gw")
        self.config = dataclasses.replace(
            cfg, mqtt=dataclasses.replace(cfg.mqtt, host="127.0.0.1", port=port),
            radio=dataclasses.replace(cfg.radio, frontend="semtech-udp",
                                      semtech_udp=SemtechUdpConfig(bind="127.0.0.1", port=0)))
        key = generate_signing_key(Path(self.config.gateway.signing_key))
        self.store = Store.open(self.config.store.path)
        self.devices = []
        for i in range(DEVICES):
            d = Device(dev_eui=f"70b3d57ed1{i:06x}", role="air", dev_addr=f"26{i:06x}",
                       nwk_s_key=os.urandom(16), app_s_key=os.urandom(16))
            self.store.upsert_device(d)
            self.devices.append(d)
        self.agent = Agent(self.config, signing_key=key, store=self.store)
        self.aes = lorawan.default_aes()
        self._lorawan, self._codec = lorawan, codec
        self.next_fcnt = 1
        self.acked = 0
        self.latencies: list[float] = []

    def uplinks(self, n: int) -> list[bytes]:
        """``n`` valid uplinks, round robin over the devices, frame counters going up."""
        port, data = self._codec.encode_uplink(
            "air", {"temperature": 21.37, "humidity": 48.2, "pm2_5": 12.0, "battery": 3.01})
        out: list[bytes] = []
        while len(out) < n:
            for d in self.devices:
                out.append(self._lorawan.build_data_frame(
                    self.aes, self._lorawan.MTYPE_UNCONFIRMED_UP, int(d.dev_addr, 16),
                    self.next_fcnt, port, data, d.nwk_s_key, d.app_s_key))
                if len(out) == n:
                    break
            self.next_fcnt += 1
        return out

    def on_acked(self, records: Any) -> None:
        """Forwarder hook: records the broker acknowledged, and how long after arrival."""
        now = time.time()
        self.acked += len(records)
        self.latencies.extend(now - r.created_at for r in records)

    async def until_acked(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` records are acknowledged (False after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.acked < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.acked >= n


async def _agent_rows(tmp: Path, port: int) -> list[tuple[str, ...]]:
    rig = _AgentRig(tmp, port)
    throughput = rig.uplinks(AGENT_FRAMES)
    paced = rig.uplinks(LATENCY_RATE * LATENCY_SECONDS)
    rows = []
    task = asyncio.create_task(rig.agent.run())
    try:
        await asyncio.wait_for(rig.agent.started.wait(), 10)
        assert rig.agent.forwarder is not None
        rig.agent.forwarder.on_acked = rig.on_acked
        server = rig.agent.frontend.address[:2]
        await asyncio.sleep(0.5)  # connected to the broker

        per = 8
        t0, cpu0 = time.perf_counter(), time.process_time()
        proc, done = _start_generator(server, _push_datagrams(throughput, per))
        ok = await rig.until_acked(AGENT_FRAMES, timeout=600)
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        proc.join(10)
        lost = done.get(timeout=5) if not done.empty() else "?"
        rows.append((f"agent end to end, {per} rxpk per PUSH_DATA", f"{rig.acked:,}",
                     f"{rig.acked / dt:,.0f} /s", f"{cpu / max(rig.acked, 1) * 1e6:.0f} µs",
                     f"{lost} acks lost" + ("" if ok else ", TIMED OUT"), "10,000 /s"))

        rig.acked, rig.latencies = 0, []
        n = len(paced)
        proc, done = _start_generator(server, _push_datagrams(paced, 1), window=1,
                                      rate_per_s=LATENCY_RATE)
        ok = await rig.until_acked(n, timeout=LATENCY_SECONDS * 10 + 60)
        proc.join(10)
        lat = sorted(rig.latencies)
        if lat:
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            rows.append((f"agent latency at {LATENCY_RATE:,} uplinks/s, frame in -> PUBACK",
                         f"{len(lat):,}", f"p50 {p50 * 1e3:.1f} ms", f"p99 {p99 * 1e3:.1f} ms",
                         f"max {lat[-1] * 1e3:.1f} ms" + ("" if ok else ", TIMED OUT"),
                         "p99 < 20 ms"))
        accepted = rig.agent.counters["accepted"]
        if accepted != AGENT_FRAMES + n:
            rows.append(("agent accepted (check)", f"{accepted:,}", "", "",
                         f"expected {AGENT_FRAMES + n:,}", ""))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # shutting down: outcome unused
        rig.store.close()
    return rows


def rows() -> list[tuple[str, ...]]:
    """Every row of the table, measured now."""
    _pin(0)
    out = [_run(_front_end_alone(1)), _run(_front_end_alone(8))]
    with tempfile.TemporaryDirectory() as tmp:
        broker = _mosquitto(Path(tmp))
        if broker is None:
            out.append(("agent end to end", "-", "skipped: mosquitto is not installed", "", "",
                        ""))
            return out
        proc, port = broker
        try:
            out.extend(_run(_agent_rows(Path(tmp), port)))
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def main() -> None:
    """Print the table (``make bench`` / ``python -m bench semtech_udp``)."""
    from bench.table import print_table

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"measured side pinned to CPU 0; generator and broker on CPU 1 ({os.cpu_count()} "
          f"CPUs, load average {load:.1f} at start: other work on the machine lowers the rates; "
          "'CPU per frame' is the measured process's own CPU time; event loop "
          f"{_loop_name()})")
    print_table(("path (one core)", "frames", "rate", "CPU per frame", "notes", "target"),
                rows())


if __name__ == "__main__":
    main()
