"""Capacity planning on the simulated LoRa channel: thousands of lightweight traffic sources.

A city's planner asks "with N nodes of these roles reporting every T, on these gateways, what
share of uplinks arrives?". The MicroPython VM would answer for a handful of boards; here each
node is a small CPython ``TrafficSource`` on the real ``sim.channel.RadioChannel`` (Semtech time on
air, log-distance path loss, SF sensitivity, collisions with capture) in virtual time
(``sim.clock``), sending real-size LoRaWAN frames (``protocol.payload`` codec +
``protocol.lorawan`` framing) on the default 3 (or the usual 8) EU868 channels, and respecting the
1 % sub-band duty cycle with the node firmware's own accounting (``firmware.dutycycle``).

Each gateway is a ``sim.channel.Concentrator`` (every SF on every channel); an uplink counts as
delivered when at least one gateway decoded it (macro-diversity, as a network server de-duplicates).
A lost uplink is "below sensitivity" when no gateway could have decoded it even alone, otherwise a
"collision". ``docs/simulation.md`` lists what the model includes and what it leaves out.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware.dutycycle import DutyCycle, band_index
from gateway.lorawan.adr import MARGIN_DB
from gateway.lorawan.join import COMMON_EU868_CFLIST_HZ
from protocol import lorawan
from protocol.airtime import time_on_air_us
from protocol.payload import encode_uplink
from sim.channel import (
    CAPTURE_THRESHOLD_DB,
    EU868_UPLINK_CHANNELS_HZ,
    SNR_LIMIT_DB,
    Concentrator,
    Endpoint,
    LogDistancePathLoss,
    RadioChannel,
    Reception,
    Transmission,
)
from sim.clock import VirtualClock

ROLES = ("air", "noise", "soil", "lighting")
SPREADING_FACTORS = (7, 8, 9, 10, 11, 12)
BW_HZ = 125_000
DEFAULT_TX_POWER_DBM = 14.0  # the node config's default radio.tx_power_dbm (firmware/config.py)
INTERVAL_JITTER = 0.05  # the firmware's +-5 % on the reporting interval (firmware/app.py)
CHANNEL_PLANS: dict[int, tuple[int, ...]] = {
    3: tuple(EU868_UPLINK_CHANNELS_HZ),
    8: tuple(EU868_UPLINK_CHANNELS_HZ) + tuple(COMMON_EU868_CFLIST_HZ),
}
# Aix-en-Provence's programme: a third of its ~1,500 sensors are lighting cabinets (500); the
# rest is split between air quality, noise and soil/watering.
DEFAULT_MIX: dict[str, float] = {"air": 1.0, "noise": 1.0, "soil": 1.0, "lighting": 1.5}

# What each role sends every interval (not the largest possible set: no alarms, no watering).
TYPICAL_READINGS: dict[str, dict[str, Any]] = {
    "air": {"temperature": 21.4, "humidity": 48.5, "pm1_0": 4.2, "pm2_5": 7.9, "pm4_0": 9.1,
            "pm10": 12.3, "battery": 3012},
    "noise": {"laeq": 62.4, "lamax": 78.9, "lamin": 41.2, "la10": 66.0, "la90": 48.3,
              "interval": 900, "battery": 2950},
    "soil": {"soil_moisture": 27.5, "soil_temperature": 14.2, "battery": 3100},
    "lighting": {"level": 70, "relay": True, "level_source": "calendar", "energy": 1234567,
                 "lamp_current": 4230, "lamp_voltage": 229.8, "mains_voltage": 231.2},
}

_PLAN_KEY = bytes(range(1, 17))  # frames of the plan are only measured, never decrypted


class PlanError(ValueError):
    """Planning inputs that cannot be simulated; the message names the input and the fix."""


# -- frames ---------------------------------------------------------------------------------------


def uplink_frame(role: str, readings: Mapping[str, Any], *, dev_addr: int, fcnt: int,
                 nwk_s_key: bytes, app_s_key: bytes, aes: Any = None) -> bytes:
    """The LoRaWAN PHYPayload a node of ``role`` sends for ``readings`` (unconfirmed, no FOpts)."""
    fport, data = encode_uplink(role, dict(readings))
    return lorawan.build_data_frame(aes or lorawan.default_aes(), lorawan.MTYPE_UNCONFIRMED_UP,
                                    dev_addr, fcnt, fport, data, nwk_s_key, app_s_key)


def typical_frame(role: str) -> bytes:
    """A real frame of ``role``'s typical reading set: its length is what goes on the air."""
    return uplink_frame(role, TYPICAL_READINGS[role], dev_addr=0x26000001, fcnt=1,
                        nwk_s_key=_PLAN_KEY, app_s_key=_PLAN_KEY)


# -- where things stand -----------------------------------------------------------------------------

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class LocalGrid:
    """Metres east/north of (lat0, lon0): equirectangular, exact enough over a city."""

    lat0: float
    lon0: float

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = math.radians(lon - self.lon0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))
        return x, math.radians(lat - self.lat0) * EARTH_RADIUS_M

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.lat0 + math.degrees(y / EARTH_RADIUS_M)
        lon = self.lon0 + math.degrees(x / (EARTH_RADIUS_M * math.cos(math.radians(self.lat0))))
        return lat, lon


@dataclass(frozen=True, slots=True)
class Site:
    """One node to simulate: a name, its role and where it stands (metres)."""

    name: str
    role: str
    position: tuple[float, float]


def split_mix(total: int, mix: Mapping[str, float] = DEFAULT_MIX) -> dict[str, int]:
    """``total`` nodes shared out by the weights of ``mix`` (largest remainders), summing exactly."""
    if total < 0:
        raise PlanError(f"number of nodes {total}: expected 0 or more")
    weights = {r: float(w) for r, w in mix.items() if w > 0}
    if not weights:
        raise PlanError("the role mix has no positive weight")
    whole = sum(weights.values())
    exact = {r: total * w / whole for r, w in weights.items()}
    counts = {r: int(v) for r, v in exact.items()}
    for r in sorted(exact, key=lambda r: exact[r] - counts[r], reverse=True)[:total - sum(
            counts.values())]:
        counts[r] += 1
    return counts


def disc_sites(counts: Mapping[str, int], radius_m: float, seed: int = 0) -> list[Site]:
    """Nodes spread uniformly over a disc of ``radius_m`` around (0, 0), roles shuffled."""
    if radius_m <= 0:
        raise PlanError(f"radius {radius_m} m: expected a positive distance")
    rng = random.Random(f"cityedge-plan-sites/{seed}")
    roles = [role for role, n in counts.items() for _ in range(n)]
    rng.shuffle(roles)
    sites = []
    for i, role in enumerate(roles):
        r = radius_m * math.sqrt(rng.random())  # uniform per unit area
        a = rng.uniform(0.0, 2.0 * math.pi)
        sites.append(Site(f"{role}-{i + 1:05d}", role, (r * math.cos(a), r * math.sin(a))))
    return sites


def ring_gateways(count: int, radius_m: float) -> list[tuple[float, float]]:
    """``count`` gateways for a disc: one at the centre, or evenly on a ring at 0.55 x radius
    (close to where k gateways best cover a uniform disc for small k)."""
    if count < 1:
        raise PlanError(f"--gateways {count}: expected at least 1")
    if count == 1:
        return [(0.0, 0.0)]
    ring = 0.55 * radius_m
    return [(ring * math.cos(2 * math.pi * k / count), ring * math.sin(2 * math.pi * k / count))
            for k in range(count)]


def sites_from_csv(text: str, source: str, default_roles: Sequence[str] = ROLES
                   ) -> tuple[list[Site], LocalGrid | None]:
    """Nodes from CSV text with a header: ``x_m,y_m`` (metres) or ``latitude,longitude``
    (degrees), and optional ``role`` and ``name`` columns. Rows without a role take the roles of
    ``default_roles`` in turn. Returns the sites and, for degrees, the grid they were projected
    on (centred on their mean) so gateways given in degrees land on the same grid."""
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise PlanError(f"{source}: not readable as CSV: {exc}") from None
    if not rows:
        raise PlanError(f"{source}: no node rows (expected a header line, then one node a line)")
    header = {h.strip().lower() for h in rows[0] if h is not None}
    if {"x_m", "y_m"} <= header:
        cols, grid = ("x_m", "y_m"), None
    elif {"latitude", "longitude"} <= header:
        cols = ("latitude", "longitude")
        grid = None
    else:
        raise PlanError(f"{source}: the header needs x_m,y_m (metres) or latitude,longitude "
                        f"(degrees); found {', '.join(sorted(header)) or 'nothing'}")
    parsed: list[tuple[str, str, float, float]] = []
    for number, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        try:
            a, b = float(row[cols[0]]), float(row[cols[1]])
        except (KeyError, ValueError):
            raise PlanError(f"{source}: line {number}: {cols[0]},{cols[1]}: expected two numbers, "
                            f"got {row.get(cols[0])!r},{row.get(cols[1])!r}") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise PlanError(f"{source}: line {number}: coordinates must be finite numbers")
        if cols[0] == "latitude" and not (-90 <= a <= 90 and -180 <= b <= 180):
            raise PlanError(f"{source}: line {number}: latitude,longitude {a},{b} out of range")
        role = row.get("role") or default_roles[(number - 2) % len(default_roles)]
        if role not in ROLES:
            raise PlanError(f"{source}: line {number}: role {role!r}: expected one of "
                            f"{', '.join(ROLES)}")
        parsed.append((row.get("name") or f"{role}-{number - 1:05d}", role, a, b))
    names = [p[0] for p in parsed]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PlanError(f"{source}: node name {dup!r} appears more than once")
    if cols[0] == "latitude":
        grid = LocalGrid(sum(p[2] for p in parsed) / len(parsed),
                         sum(p[3] for p in parsed) / len(parsed))
        return [Site(n, r, grid.to_xy(a, b)) for n, r, a, b in parsed], grid
    return [Site(n, r, (a, b)) for n, r, a, b in parsed], grid


# -- link budget and SF assignment ----------------------------------------------------------------


def _probe(sender: Endpoint, tx_power_dbm: float, sf: int = 12) -> Transmission:
    """A transmission that is never sent: what the channel's link budget needs to know."""
    probe = Transmission()
    probe.sender, probe.origin = sender, tuple(sender.position)
    probe.tx_power_dbm, probe.bw_hz, probe.sf = tx_power_dbm, BW_HZ, sf
    return probe


def link_margin_db(channel: RadioChannel, sender: Endpoint, gateway: Endpoint, sf: int,
                   tx_power_dbm: float) -> float:
    """dB above what decoding at ``sf`` needs at ``gateway``: the smaller of the SNR margin over
    the SF's demodulation limit and the RSSI margin over the receiver's sensitivity."""
    rssi, snr = channel.link_budget(_probe(sender, tx_power_dbm, sf), gateway)
    sensitivity = gateway.sensitivity_dbm[BW_HZ][sf]
    return min(snr - SNR_LIMIT_DB[sf], rssi - sensitivity)


def assign_sf(channel: RadioChannel, sender: Endpoint, gateways: Sequence[Endpoint],
              tx_power_dbm: float, margin_db: float = MARGIN_DB) -> tuple[int, float]:
    """(SF, margin) as a network server's ADR settles a static node: the fastest SF whose best
    gateway keeps ``margin_db`` in hand (gateway.lorawan.adr keeps 10 dB), else SF12."""
    for sf in SPREADING_FACTORS:
        best = max(link_margin_db(channel, sender, g, sf, tx_power_dbm) for g in gateways)
        if best >= margin_db:
            return sf, best
    return 12, best


# -- traffic sources -------------------------------------------------------------------------------


class TrafficSource(Endpoint):
    """A node reduced to its transmitter: every interval (+-5 %, or Poisson) it sends a frame on
    a channel its duty cycle allows, waiting when every sub-band is still closed. It never
    listens (so it costs the channel nothing when others transmit)."""

    antenna_gain_dbi = 0.0

    def __init__(self, name: str, role: str, position: tuple[float, float], sf: int,
                 freqs_hz: Sequence[int], interval_s: float, *, frame: bytes | None = None,
                 tx_power_dbm: float = DEFAULT_TX_POWER_DBM, poisson: bool = False,
                 rng: random.Random | None = None) -> None:
        self.name, self.role, self.position, self.sf = name, role, position, sf
        self.freqs_hz = tuple(freqs_hz)
        self.interval_us = int(interval_s * 1e6)
        self.tx_power_dbm = tx_power_dbm
        self.poisson = poisson
        self.rng = rng or random.Random(name)
        self._frame = frame
        self.duty = DutyCycle()
        self.sent = 0
        self.deferred = 0  # uplinks that waited for the duty cycle
        self.airtime_us: dict[int, int] = {}  # sub-band index -> airtime spent
        self.on_transmit: Callable[[TrafficSource, Transmission], None] | None = None
        self._channel: RadioChannel | None = None
        self._until_us = 0

    def frame(self) -> bytes:
        """The next frame to send (the plan's sources repeat one real-size frame)."""
        assert self._frame is not None
        return self._frame

    def start(self, channel: RadioChannel, until_us: int) -> None:
        """First uplink at a random moment of the first interval; none start after ``until_us``."""
        self._channel, self._until_us = channel, until_us
        channel.clock.call_at(channel.clock.now_us() + self._gap_us(first=True), self._due)

    def _gap_us(self, first: bool = False) -> int:
        if first:
            return int(self.rng.random() * self.interval_us)
        if self.poisson:
            return int(self.rng.expovariate(1.0) * self.interval_us)
        return int(self.interval_us * (1 + self.rng.uniform(-INTERVAL_JITTER, INTERVAL_JITTER)))

    def _due(self) -> None:
        channel = self._channel
        assert channel is not None
        now_us = channel.clock.now_us()
        if now_us >= self._until_us:
            return
        freq, wait_ms = self.duty.pick(self.freqs_hz, now_us // 1000, self.rng.getrandbits(16))
        if freq is None:
            self.deferred += 1
            channel.clock.call_at(now_us + max(1, wait_ms) * 1000, self._due)
            return
        tx = channel.transmit(self, self.frame(), freq_hz=freq, sf=self.sf, bw_hz=BW_HZ,
                              tx_power_dbm=self.tx_power_dbm)
        self.duty.sent(freq, tx.toa_us, tx.end_us // 1000)
        band = band_index(freq)
        self.airtime_us[band] = self.airtime_us.get(band, 0) + tx.toa_us
        self.sent += 1
        if self.on_transmit is not None:
            self.on_transmit(self, tx)
        channel.clock.call_at(now_us + self._gap_us(), self._due)


class PlanGateway(Concentrator):
    """A concentrator that remembers which transmissions it decoded with a good CRC."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heard: set[int] = set()

    def deliver(self, rx: Reception) -> None:
        if not rx.corrupted:
            self.heard.add(rx.tx.id)
        super().deliver(rx)


# -- the planning run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanConfig:
    """Everything one planning run depends on (times in virtual seconds)."""

    sites: tuple[Site, ...]
    gateways: tuple[tuple[float, float], ...] = ((0.0, 0.0),)
    interval_s: float = 900.0
    duration_s: float = 3600.0
    sf: int | None = None  # None: by link margin, as ADR would settle it
    adr_margin_db: float = MARGIN_DB
    freqs_hz: tuple[int, ...] = CHANNEL_PLANS[3]
    poisson: bool = False
    tx_power_dbm: float = DEFAULT_TX_POWER_DBM
    path_loss_exponent: float = 2.9
    shadowing_db: float = 0.0
    capture: bool = True
    gateway_gain_dbi: float = 0.0
    seed: int = 0

    def check(self) -> None:
        """PlanError for inputs no run can use."""
        if not self.sites:
            raise PlanError("no nodes to simulate: give --nodes N (or a --positions file)")
        if not self.gateways:
            raise PlanError("no gateway: give --gateway X,Y or --gateways N")
        if not self.interval_s > 0 or not math.isfinite(self.interval_s):
            raise PlanError(f"interval {self.interval_s} s: expected a positive duration")
        if not self.duration_s > 0 or not math.isfinite(self.duration_s):
            raise PlanError(f"duration {self.duration_s} s: expected a positive duration")
        if self.sf is not None and self.sf not in SPREADING_FACTORS:
            raise PlanError(f"SF{self.sf}: the EU868 125 kHz data rates use SF7..SF12")
        if self.path_loss_exponent <= 0:
            raise PlanError("the path loss exponent must be positive (2 free space, ~2.7-3.5 "
                            "urban)")
        if self.shadowing_db < 0:
            raise PlanError("shadowing sigma must be 0 dB or more")


@dataclass
class NodeResult:
    """One node's outcome."""

    name: str
    role: str
    position: tuple[float, float]
    sf: int
    margin_db: float  # link margin at its best gateway, at its SF
    nearest_gateway_m: float
    frame_bytes: int
    airtime_us: int
    sent: int = 0
    delivered: int = 0
    collisions: int = 0
    lost_sensitivity: int = 0
    deferred: int = 0
    max_duty_cycle: float = 0.0  # highest share of time on one sub-band

    @property
    def pdr(self) -> float:
        return self.delivered / self.sent if self.sent else 1.0


@dataclass
class SfResult:
    """Totals of the nodes on one spreading factor."""

    sf: int
    nodes: int = 0
    airtime_us: tuple[int, int] = (0, 0)  # per uplink: shortest, longest (roles differ)
    sent: int = 0
    delivered: int = 0
    collisions: int = 0
    lost_sensitivity: int = 0
    busy_us: int = 0  # airtime summed over its uplinks
    load_erlang: float = 0.0  # per channel: busy time / (duration x channels)

    @property
    def pdr(self) -> float:
        return self.delivered / self.sent if self.sent else 1.0

    @property
    def aloha_pdr(self) -> float:
        """Pure ALOHA's e^(-2G) for this load, the reference without capture or diversity."""
        return math.exp(-2.0 * self.load_erlang)


@dataclass
class GatewayResult:
    """What one gateway heard."""

    name: str
    position: tuple[float, float]
    heard: int  # decoded with a good CRC
    crc_errors: int
    lost_collision: int
    lost_sensitivity: int
    best_for: int  # nodes for which it is the gateway with the best link


@dataclass
class PlanResult:
    """The outcome of a run, and how it compares with a target PDR."""

    config: PlanConfig
    nodes: list[NodeResult]
    per_sf: list[SfResult]
    gateways: list[GatewayResult]
    sent: int = 0
    delivered: int = 0
    collisions: int = 0
    lost_sensitivity: int = 0
    deferred: int = 0
    uplinks_per_hour: float = 0.0
    frame_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def pdr(self) -> float:
        return self.delivered / self.sent if self.sent else 1.0

    def worst(self, count: int = 10) -> list[NodeResult]:
        """The worst-served nodes: lowest PDR first, then the weakest link."""
        return sorted(self.nodes, key=lambda n: (n.pdr, n.margin_db))[:count]

    def below(self, target: float) -> int:
        """How many nodes delivered less than ``target`` of their uplinks."""
        return sum(1 for n in self.nodes if n.sent and n.pdr < target)

    def to_dict(self, target: float | None = None, worst: int = 10) -> dict[str, Any]:
        """A JSON-ready summary (no frames, no keys)."""
        c = self.config
        out: dict[str, Any] = {
            "inputs": {
                "nodes": len(c.sites),
                "roles": {r: sum(1 for s in c.sites if s.role == r) for r in ROLES},
                "gateways": [list(g) for g in c.gateways], "interval_s": c.interval_s,
                "duration_s": c.duration_s, "sf": c.sf if c.sf is not None else "adr",
                "adr_margin_db": c.adr_margin_db, "channels_hz": list(c.freqs_hz),
                "traffic": "poisson" if c.poisson else "periodic",
                "tx_power_dbm": c.tx_power_dbm, "path_loss_exponent": c.path_loss_exponent,
                "shadowing_db": c.shadowing_db, "capture": c.capture,
                "gateway_gain_dbi": c.gateway_gain_dbi, "seed": c.seed,
                "frame_bytes": self.frame_bytes,
            },
            "per_sf": [{
                "sf": s.sf, "nodes": s.nodes, "airtime_ms": [s.airtime_us[0] / 1000,
                                                             s.airtime_us[1] / 1000],
                "sent": s.sent, "delivered": s.delivered, "pdr": round(s.pdr, 4),
                "collisions": s.collisions, "lost_sensitivity": s.lost_sensitivity,
                "load_erlang": round(s.load_erlang, 5),
                "aloha_pdr": round(s.aloha_pdr, 4)} for s in self.per_sf],
            "gateways": [{
                "name": g.name, "position_m": list(g.position), "heard": g.heard,
                "crc_errors": g.crc_errors, "lost_collision": g.lost_collision,
                "lost_sensitivity": g.lost_sensitivity, "best_for": g.best_for}
                for g in self.gateways],
            "overall": {
                "sent": self.sent, "delivered": self.delivered, "pdr": round(self.pdr, 4),
                "collisions": self.collisions, "lost_sensitivity": self.lost_sensitivity,
                "duty_cycle_deferrals": self.deferred,
                "uplinks_per_hour": round(self.uplinks_per_hour, 1),
            },
            "worst_nodes": [{
                "name": n.name, "role": n.role, "sf": n.sf, "pdr": round(n.pdr, 4),
                "sent": n.sent, "delivered": n.delivered, "collisions": n.collisions,
                "lost_sensitivity": n.lost_sensitivity, "margin_db": round(n.margin_db, 1),
                "nearest_gateway_m": round(n.nearest_gateway_m)} for n in self.worst(worst)],
        }
        if target is not None:
            out["verdict"] = {"target_pdr": target, "pdr": round(self.pdr, 4),
                              "pass": self.pdr >= target,
                              "nodes_below_target": self.below(target)}
        return out


def run_plan(config: PlanConfig) -> PlanResult:
    """Simulate ``config`` in virtual time, as fast as the host allows, and count the outcome."""
    config.check()
    clock = VirtualClock(speed=None)
    channel = RadioChannel(
        clock, seed=config.seed, path_loss=LogDistancePathLoss(config.path_loss_exponent),
        shadowing_sigma_db=config.shadowing_db,
        capture_threshold_db=CAPTURE_THRESHOLD_DB if config.capture else math.inf)
    gateways = [PlanGateway(clock, channel, pos, config.freqs_hz, name=f"gw{i + 1}",
                            antenna_gain_dbi=config.gateway_gain_dbi)
                for i, pos in enumerate(config.gateways)]
    frames = {role: typical_frame(role) for role in sorted({s.role for s in config.sites})}
    sent: list[tuple[Transmission, TrafficSource]] = []
    sources: list[TrafficSource] = []
    nodes: list[NodeResult] = []
    best_for = [0] * len(gateways)
    for site in config.sites:
        src = TrafficSource(site.name, site.role, site.position, 12, config.freqs_hz,
                            config.interval_s, frame=frames[site.role],
                            tx_power_dbm=config.tx_power_dbm, poisson=config.poisson,
                            rng=random.Random(f"cityedge-plan/{config.seed}/{site.name}"))
        src.sf = config.sf or assign_sf(channel, src, gateways, config.tx_power_dbm,
                                        config.adr_margin_db)[0]
        margins = [link_margin_db(channel, src, g, src.sf, config.tx_power_dbm)
                   for g in gateways]
        margin = max(margins)
        best_for[margins.index(margin)] += 1
        src.on_transmit = lambda s, tx: sent.append((tx, s))
        sources.append(src)
        toa = channel_airtime(len(frames[site.role]), src.sf)
        nodes.append(NodeResult(
            site.name, site.role, site.position, src.sf, margin,
            min(RadioChannel.distance_m(site.position, g) for g in config.gateways),
            len(frames[site.role]), toa))
    until_us = int(config.duration_s * 1e6)
    for src in sources:
        src.start(channel, until_us)
    clock.run(until_us=until_us + 10_000_000)  # the last frames end within 3 s at SF12
    return _tally(config, channel, gateways, sources, nodes, sent, frames, best_for)


def channel_airtime(frame_bytes: int, sf: int) -> int:
    """Time on air in us of an uplink of ``frame_bytes`` at ``sf``/125 kHz (LoRaWAN settings)."""
    return time_on_air_us(frame_bytes, sf, BW_HZ)


def _tally(config: PlanConfig, channel: RadioChannel, gateways: list[PlanGateway],
           sources: list[TrafficSource], nodes: list[NodeResult],
           sent: Iterable[tuple[Transmission, TrafficSource]], frames: dict[str, bytes],
           best_for: list[int]) -> PlanResult:
    by_name = {n.name: n for n in nodes}
    per_sf = {sf: SfResult(sf) for sf in SPREADING_FACTORS}
    for n in nodes:
        s = per_sf[n.sf]
        s.nodes += 1
        lo, hi = s.airtime_us
        s.airtime_us = (min(lo, n.airtime_us) if lo else n.airtime_us, max(hi, n.airtime_us))
    result = PlanResult(config, nodes, [], [], frame_bytes={r: len(f) for r, f in frames.items()})
    for tx, src in sent:
        node, s = by_name[src.name], per_sf[tx.sf]
        node.sent += 1
        s.sent += 1
        s.busy_us += tx.toa_us
        if any(tx.id in g.heard for g in gateways):
            node.delivered += 1
            s.delivered += 1
            continue
        if any(channel.detectable(tx, g, *channel.link_budget(tx, g)) for g in gateways):
            node.collisions += 1
            s.collisions += 1
        else:
            node.lost_sensitivity += 1
            s.lost_sensitivity += 1
    duration_us = config.duration_s * 1e6
    for src in sources:
        node = by_name[src.name]
        node.deferred = src.deferred
        node.max_duty_cycle = max(src.airtime_us.values(), default=0) / duration_us
    for s in per_sf.values():
        s.load_erlang = s.busy_us / (duration_us * len(config.freqs_hz))
    result.per_sf = [s for s in per_sf.values() if s.nodes]
    for i, g in enumerate(gateways):
        c = channel.counters(g.name)
        result.gateways.append(GatewayResult(g.name, g.position, c.delivered, c.corrupted,
                                             c.lost_collision, c.lost_sensitivity, best_for[i]))
    result.sent = sum(s.sent for s in result.per_sf)
    result.delivered = sum(s.delivered for s in result.per_sf)
    result.collisions = sum(s.collisions for s in result.per_sf)
    result.lost_sensitivity = sum(s.lost_sensitivity for s in result.per_sf)
    result.deferred = sum(n.deferred for n in nodes)
    result.uplinks_per_hour = result.sent * 3600.0 / config.duration_s
    return result
