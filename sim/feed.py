"""Simulated nodes feeding a real gateway over the Semtech UDP protocol (`cityedge sim feed`).

An integrator with a gateway running the ``semtech-udp`` front end but no field yet gets real
traffic: ABP nodes (``new_nodes``, keys from ``os.urandom``) send real LoRaWAN frames
(``protocol.lorawan`` framing with their session keys, the ``protocol.payload`` codec, varying
readings) as ``sim.planning.TrafficSource`` on the simulated channel; a simulated concentrator
hears them and the test packet forwarder (``sim.packet_forwarder``) pushes them to the gateway
as PUSH_DATA, paced by the virtual clock (``speed`` 1.0 = real time).

The nodes live in a registry file (docs/registry.md) that the gateway imports first. After a run
each node's ``fcnt_up`` in that file is its last frame counter, so the next run with the same file
continues above it and the gateway never sees a replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.registry import RegistryEntry, entry_from_fields
from protocol import lorawan
from sim.channel import Concentrator, RadioChannel, Transmission
from sim.clock import VirtualClock
from sim.packet_forwarder import PacketForwarder
from sim.planning import (
    CHANNEL_PLANS,
    DEFAULT_MIX,
    DEFAULT_TX_POWER_DBM,
    TYPICAL_READINGS,
    LocalGrid,
    TrafficSource,
    assign_sf,
    disc_sites,
    split_mix,
    uplink_frame,
)

AIX_EN_PROVENCE = (43.5297, 5.4474)  # the simulated district's centre; the concentrator is here
DEV_EUI_BASE = 0x70B3D57ED00F0000  # DevEUI of simulated node i: base + i
DEV_ADDR_BASE = 0x260F0000  # DevAddr of simulated node i: base + i (NetID 0 private range)
FOREVER_US = 1 << 62


class FeedError(Exception):
    """The feed cannot start or go on; the message says what to check."""


def new_nodes(count: int, *, radius_m: float = 2000.0, centre: tuple[float, float] =
              AIX_EN_PROVENCE, mix: Mapping[str, float] = DEFAULT_MIX, seed: int = 0,
              dev_eui_base: int = DEV_EUI_BASE, dev_addr_base: int = DEV_ADDR_BASE
              ) -> list[RegistryEntry]:
    """``count`` new ABP nodes with fresh random session keys, placed on a disc around
    ``centre`` (positions from ``seed``), as registry entries (validated like an import row)."""
    if not 1 <= count <= 0xFFFF:
        raise FeedError(f"--nodes {count}: expected 1..65535 simulated nodes")
    grid = LocalGrid(*centre)
    entries = []
    for i, site in enumerate(disc_sites(split_mix(count, mix), radius_m, seed)):
        lat, lon = grid.to_latlon(*site.position)
        entries.append(entry_from_fields({
            "dev_eui": f"{dev_eui_base + i:016x}", "role": site.role, "activation": "abp",
            "name": f"sim {site.name}", "latitude": round(lat, 6), "longitude": round(lon, 6),
            "dev_addr": f"{(dev_addr_base + i) & 0xFFFFFFFF:08x}",
            "nwk_s_key": os.urandom(16).hex(), "app_s_key": os.urandom(16).hex(),
        }))
    return entries


def readings(role: str, rng: random.Random, interval_s: float) -> dict[str, Any]:
    """A plausible reading set: the role's typical one with every measured value moved a little."""
    out: dict[str, Any] = {}
    for key, value in TYPICAL_READINGS[role].items():
        if isinstance(value, float):
            value = round(value * (1 + rng.uniform(-0.05, 0.05)), 2)
        out[key] = value
    if role == "noise":
        out["interval"] = max(1, min(65535, round(interval_s)))
    return out


class FeedSource(TrafficSource):
    """A simulated ABP node: real frames, its own keys, a frame counter that only goes up."""

    def __init__(self, entry: RegistryEntry, position: tuple[float, float], sf: int,
                 freqs_hz: Sequence[int], interval_s: float, *, aes: Any,
                 tx_power_dbm: float = DEFAULT_TX_POWER_DBM, seed: int = 0) -> None:
        super().__init__(entry.dev_eui, entry.role, position, sf, freqs_hz, interval_s,
                         tx_power_dbm=tx_power_dbm,
                         rng=random.Random(f"cityedge-feed/{seed}/{entry.dev_eui}"))
        if entry.activation != "abp" or entry.dev_addr is None:
            raise FeedError(f"node {entry.dev_eui}: the simulator feeds ABP nodes only "
                            "(make them with --registry-out)")
        self.entry = entry
        self.aes = aes
        self.interval_s = interval_s
        self.fcnt = (entry.fcnt_up if entry.fcnt_up is not None else -1) + 1

    def frame(self) -> bytes:
        if self.fcnt > 0xFFFFFFFF:
            raise FeedError(f"node {self.entry.dev_eui}: frame counter exhausted")
        assert self.entry.nwk_s_key is not None and self.entry.app_s_key is not None
        phy = uplink_frame(self.role, readings(self.role, self.rng, self.interval_s),
                           dev_addr=int(self.entry.dev_addr or "0", 16), fcnt=self.fcnt,
                           nwk_s_key=self.entry.nwk_s_key, app_s_key=self.entry.app_s_key,
                           aes=self.aes)
        self.fcnt += 1
        return phy

    def updated_entry(self) -> RegistryEntry:
        """The registry entry with ``fcnt_up`` = the last frame counter sent."""
        return dataclasses.replace(self.entry, fcnt_up=self.fcnt - 1 if self.fcnt else None)


@dataclass
class FeedReport:
    """What one feed run did."""

    frames_sent: int = 0
    frames_heard: int = 0  # by the simulated concentrator (all forwarded)
    pushed: int = 0
    push_acked: int = 0
    virtual_s: float = 0.0
    entries: list[RegistryEntry] = dataclasses.field(default_factory=list)


def place(entries: Sequence[RegistryEntry], centre: tuple[float, float], radius_m: float,
          seed: int) -> list[tuple[float, float]]:
    """Each node's position in metres: from its latitude/longitude, else a random spot."""
    grid = LocalGrid(*centre)
    rng = random.Random(f"cityedge-feed-place/{seed}")
    out = []
    for e in entries:
        if e.latitude is not None and e.longitude is not None:
            out.append(grid.to_xy(e.latitude, e.longitude))
        else:
            r, a = radius_m * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            out.append((r * math.cos(a), r * math.sin(a)))
    return out


async def run_feed(entries: Sequence[RegistryEntry], server: tuple[str, int], *,
                   gateway_eui: str = "aa555a00000000f1", speed: float = 1.0,
                   interval_s: float = 60.0, duration_s: float | None = None,
                   channels: int = 3, centre: tuple[float, float] = AIX_EN_PROVENCE,
                   radius_m: float = 2000.0, seed: int = 0, connect_timeout_s: float = 10.0,
                   on_frame: Callable[[FeedSource, Transmission], None] | None = None,
                   report: FeedReport | None = None) -> FeedReport:
    """Feed the gateway at ``server`` until ``duration_s`` virtual seconds have passed (None:
    until cancelled). The report's ``entries`` carry the nodes' last frame counters, also when
    the run is cancelled (pass ``report`` to read them then)."""
    if not speed > 0 or not math.isfinite(speed):
        raise FeedError(f"--speed {speed}: expected a positive number (1 = real time)")
    if not interval_s > 0:
        raise FeedError(f"--interval {interval_s} s: expected a positive duration")
    if not entries:
        raise FeedError("no nodes to feed")
    report = report if report is not None else FeedReport()
    freqs = CHANNEL_PLANS[channels]
    clock = VirtualClock(speed=speed, epoch=time.time())  # rxpk times are today's
    channel = RadioChannel(clock, seed=seed)
    concentrator = Concentrator(clock, channel, (0.0, 0.0), freqs, name="sim-concentrator")
    aes = lorawan.default_aes()
    sources = []
    for entry, position in zip(entries, place(entries, centre, radius_m, seed), strict=True):
        src = FeedSource(entry, position, 12, freqs, interval_s, aes=aes, seed=seed)
        src.sf = assign_sf(channel, src, [concentrator], src.tx_power_dbm)[0]
        sources.append(src)

    def sent(src: TrafficSource, tx: Transmission) -> None:
        report.frames_sent += 1
        if on_frame is not None and isinstance(src, FeedSource):
            on_frame(src, tx)

    for src in sources:
        src.on_transmit = sent
    until_us = FOREVER_US if duration_s is None else int(duration_s * 1e6)
    report.entries = [s.entry for s in sources]
    async with PacketForwarder(server, gateway_eui, concentrator=concentrator, clock=clock,
                               keepalive_s=5.0) as pf:
        try:
            await asyncio.wait_for(pf.pull_acked.wait(), connect_timeout_s)
        except TimeoutError:
            raise FeedError(
                f"no PULL_ACK from {server[0]}:{server[1]} within {connect_timeout_s:g} s: is "
                "`cityedge gateway run` running there with [radio] frontend = \"semtech-udp\" "
                "(UDP port 1700 by default)?") from None
        for src in sources:
            src.start(channel, until_us)
        runner = threading.Thread(
            target=clock.run, name="sim-feed-clock", daemon=True,
            kwargs={"until_us": None if duration_s is None else until_us + 5_000_000})
        runner.start()
        try:
            while runner.is_alive():
                await asyncio.sleep(0.05)
            async with asyncio.timeout(pf.push_timeout_s * 2):  # the last PUSH_ACKs
                while pf.push_acked < pf.pushed:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass  # counted below: pushed > push_acked
        finally:
            clock.stop()
            runner.join(5)
            report.entries = [s.updated_entry() for s in sources]
            report.frames_heard = concentrator.uplinks
            report.pushed, report.push_acked = pf.pushed, pf.push_acked
            report.virtual_s = clock.now_s()
    return report
