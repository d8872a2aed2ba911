"""The simulated LoRa radio channel: time on air, path loss, sensitivity, collisions with capture.

Endpoints (``SX1276Model`` radios, the gateway's ``Concentrator``) stand at positions in metres.
A transmission occupies the air for its exact time on air (``protocol.airtime``, Semtech's
formula) and is judged, for every endpoint that was listening for it, when its last symbol ends:

Link budget
    RSSI = P_tx + G_tx + G_rx - PL(d) - S, with the log-distance path loss
    PL(d) = PL(1 m) + 10 n log10(d / 1 m); PL(1 m) is the free-space loss at 868 MHz,
    20 log10(4 pi f / c) = 31.2 dB; n = 2.9 by default (urban). S is optional log-normal
    shadowing: one fixed N(0, sigma) draw per pair of endpoints (the building between a node and
    the gateway does not move), seeded by the channel seed and the two names.
    SNR = RSSI - noise floor, noise floor = -174 dBm/Hz + 10 log10(BW) + NF (NF 6 dB by default).

Sensitivity (SX1276 datasheet rev 7)
    A packet is lost ("lost_sensitivity") when its SNR is below the demodulation limit of its SF
    (DS table 13: SF7 -7.5 dB ... SF12 -20 dB, 2.5 dB per SF) or its RSSI is below the receiver
    sensitivity of DS table 10 (band 1, HF, LnaBoost) for 125/250/500 kHz.

Acquisition ("lock")
    A receiver must hear the end of a packet's preamble to lock onto it: it must have been
    listening, with matching settings, no later than the packet's lock point
    ``start + (n_preamble - 5) * T_sym`` (we take the critical section found by Bor et al., "Do
    LoRa Low-Power Wide-Area Networks Scale?", MSWiM 2016: the last 5 preamble symbols).

Collisions (same frequency within BW/4, same SF, same IQ polarity, overlapping in time)
    - P survives an interferer I when P is at least 6 dB stronger (capture) and P began before
      I's lock point; if the weaker I began first and P arrived after I's lock point, the receiver
      is busy with I: P is lost and I is corrupted.
    - If I is not 6 dB weaker: P is lost when I began before P's lock point (the preamble was
      destroyed); when I began after it, P's header was already decoded and P arrives with its
      payload destroyed ("corrupted": PayloadCrcError on a radio, crc_ok=False at a gateway).
    Interferers are judged pairwise (their powers are not summed). Different SFs are treated as
    orthogonal, and so are up- and down-chirps (normal versus inverted IQ), which is why LoRaWAN
    inverts downlinks; in reality the isolation between SFs is finite (about 16-20 dB), which
    this model ignores. Adjacent-channel interference is not modelled.

Half duplex
    An endpoint never receives while it transmits: a packet any part of which overlaps one of the
    endpoint's own transmissions is not received (and not counted as lost: it was not listening).

The ``Concentrator`` is the gateway's simulated front end: a multi-channel receiver (all SFs 7-12
at 125 kHz, normal IQ, sync word 0x34 on its list of frequencies, like an SX1301/SX1302 with the
Semtech packet forwarder), with timed downlinks (``send_at``) like the forwarder's "tmst" mode.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from protocol.airtime import BANDWIDTHS_HZ, ldro_required, symbol_time_us, time_on_air_us

log = logging.getLogger(__name__)

SPEED_OF_LIGHT_M_S = 299_792_458.0
THERMAL_NOISE_DBM_HZ = -174.0
DEFAULT_NOISE_FIGURE_DB = 6.0
CAPTURE_THRESHOLD_DB = 6.0
LOCK_SYMBOLS = 5

# DS rev 7 table 13 "Range of spreading factors": demodulator SNR limit per SF.
SNR_LIMIT_DB = {6: -5.0, 7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}

# DS rev 7 table 10 "LoRa receiver specification", RFS_L125_HF/RFS_L250_HF/RFS_L500_HF (band 1,
# highest LNA gain, LnaBoost on): sensitivity in dBm per SF.
SX1276_SENSITIVITY_DBM = {
    125_000: {6: -118, 7: -123, 8: -126, 9: -129, 10: -132, 11: -133, 12: -136},
    250_000: {6: -115, 7: -120, 8: -123, 9: -125, 10: -128, 11: -130, 12: -133},
    500_000: {6: -111, 7: -116, 8: -119, 9: -122, 10: -125, 11: -128, 12: -130},
}

EU868_UPLINK_CHANNELS_HZ = (868_100_000, 868_300_000, 868_500_000)


def free_space_loss_db(distance_m: float, freq_hz: float = 868e6) -> float:
    """Friis free-space path loss, 20 log10(4 pi d f / c), in dB."""
    return 20.0 * math.log10(4.0 * math.pi * distance_m * freq_hz / SPEED_OF_LIGHT_M_S)


def noise_floor_dbm(bw_hz: int, noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB) -> float:
    """Receiver noise floor: -174 dBm/Hz + 10 log10(BW) + NF."""
    return THERMAL_NOISE_DBM_HZ + 10.0 * math.log10(bw_hz) + noise_figure_db


class LogDistancePathLoss:
    """PL(d) = PL(d0) + 10 n log10(d / d0); PL(d0) defaults to the free-space loss at d0 = 1 m."""

    def __init__(
        self,
        exponent: float = 2.9,
        ref_loss_db: float | None = None,
        ref_distance_m: float = 1.0,
        freq_hz: float = 868e6,
    ) -> None:
        if exponent <= 0 or ref_distance_m <= 0:
            raise ValueError("path loss exponent and reference distance must be positive")
        self.exponent = exponent
        self.ref_distance_m = ref_distance_m
        self.ref_loss_db = (
            free_space_loss_db(ref_distance_m, freq_hz) if ref_loss_db is None else ref_loss_db
        )

    def __call__(self, distance_m: float) -> float:
        d = max(distance_m, self.ref_distance_m)
        return self.ref_loss_db + 10.0 * self.exponent * math.log10(d / self.ref_distance_m)

    def __repr__(self) -> str:
        return f"LogDistancePathLoss(n={self.exponent}, PL(1 m)={self.ref_loss_db:.1f} dB)"


class Transmission:
    """One LoRa packet on the air (times in virtual microseconds)."""

    __slots__ = (
        "_timer",
        "aborted",
        "bw_hz",
        "cr",
        "crc",
        "end_us",
        "ended",
        "explicit_header",
        "freq_hz",
        "id",
        "iq_inverted",
        "ldro",
        "lock_us",
        "origin",
        "payload",
        "preamble",
        "sender",
        "sf",
        "start_us",
        "sync_word",
        "toa_us",
        "tsym_us",
        "tx_power_dbm",
    )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<Transmission #{self.id} from {getattr(self.sender, 'name', self.sender)} "
            f"{self.freq_hz / 1e6:.3f} MHz SF{self.sf}/{self.bw_hz // 1000} kHz "
            f"{len(self.payload)} B {self.start_us}..{self.end_us} us>"
        )


@dataclass(frozen=True, slots=True)
class Reception:
    """What a listening endpoint gets at the end of a transmission."""

    tx: Transmission
    payload: bytes  # garbled when ``corrupted``
    rssi_dbm: float
    snr_db: float
    corrupted: bool
    end_us: int


class Counters:
    """Per-endpoint (or channel-wide) packet counters."""

    __slots__ = ("corrupted", "delivered", "lost_collision", "lost_sensitivity", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.corrupted = 0
        self.lost_sensitivity = 0
        self.lost_collision = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()})"


class Endpoint:
    """Something with an antenna on the channel. Subclasses say what they listen for."""

    name: str = "endpoint"
    position: tuple[float, float] = (0.0, 0.0)
    noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB
    antenna_gain_dbi: float = 0.0
    sensitivity_dbm: dict[int, dict[int, int]] = SX1276_SENSITIVITY_DBM

    def listening_since(self, tx: Transmission) -> int | None:
        """Virtual us since which this endpoint has listened, uninterrupted, with settings that
        can receive ``tx``; None when it cannot receive ``tx`` now."""
        return None

    def deliver(self, rx: Reception) -> None:
        """Called at the end of a transmission this endpoint locked onto and decoded."""


_OK, _CORRUPTED, _LOST = 0, 1, 2


class RadioChannel:
    """The air shared by every endpoint, in virtual time."""

    def __init__(
        self,
        clock: Any,
        seed: int = 0,
        path_loss: Callable[[float], float] | None = None,
        shadowing_sigma_db: float = 0.0,
        capture_threshold_db: float = CAPTURE_THRESHOLD_DB,
        lock_symbols: int = LOCK_SYMBOLS,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self.path_loss = path_loss if path_loss is not None else LogDistancePathLoss()
        self.shadowing_sigma_db = shadowing_sigma_db
        self.capture_threshold_db = capture_threshold_db
        self.lock_symbols = lock_symbols
        self.endpoints: list[Endpoint] = []
        self.totals = Counters()
        self._counters: dict[str, Counters] = {}
        self._history: list[Transmission] = []  # in the air, or ended but overlapping one that is
        self._ids = itertools.count(1)
        self._rng = random.Random(f"cityedge-channel/{seed}")
        self._shadow: dict[tuple[str, str], float] = {}
        self._inject: list[list[Any]] = []  # [remaining, receiver name or None]
        self._lock = threading.Lock()

    # -- endpoints ------------------------------------------------------------------------------
    def attach(self, endpoint: Endpoint) -> Endpoint:
        if any(e.name == endpoint.name for e in self.endpoints):
            raise ValueError(f"an endpoint named {endpoint.name!r} is already on the channel")
        self.endpoints.append(endpoint)
        self.counters(endpoint.name)
        return endpoint

    def detach(self, endpoint: Endpoint) -> None:
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)

    def counters(self, name: str) -> Counters:
        """The counters of the endpoint called ``name`` (created on first use)."""
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counters()
        return c

    # -- radio physics ----------------------------------------------------------------------------
    @staticmethod
    def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
        return math.hypot(a[0] - b[0], a[1] - b[1])

    def shadowing_db(self, a: Endpoint, b: Endpoint) -> float:
        """The fixed log-normal shadowing of the link between ``a`` and ``b`` (0 if sigma is 0)."""
        if self.shadowing_sigma_db <= 0:
            return 0.0
        key = (a.name, b.name) if a.name <= b.name else (b.name, a.name)
        s = self._shadow.get(key)
        if s is None:
            rng = random.Random(f"cityedge-shadow/{self.seed}/{key[0]}/{key[1]}")
            s = self._shadow[key] = rng.gauss(0.0, self.shadowing_sigma_db)
        return s

    def rssi_dbm(self, tx: Transmission, receiver: Endpoint) -> float:
        """Received signal strength of ``tx`` at ``receiver``."""
        d = self.distance_m(tx.origin, receiver.position)
        return (
            tx.tx_power_dbm
            + getattr(tx.sender, "antenna_gain_dbi", 0.0)
            + receiver.antenna_gain_dbi
            - self.path_loss(d)
            - self.shadowing_db(tx.sender, receiver)
        )

    def link_budget(self, tx: Transmission, receiver: Endpoint) -> tuple[float, float]:
        """(RSSI dBm, SNR dB) of ``tx`` at ``receiver`` (noise only, no interference)."""
        rssi = self.rssi_dbm(tx, receiver)
        return rssi, rssi - noise_floor_dbm(tx.bw_hz, receiver.noise_figure_db)

    @staticmethod
    def detectable(tx: Transmission, receiver: Endpoint, rssi: float, snr: float) -> bool:
        """Above the SF's demodulation SNR limit and the receiver's sensitivity?"""
        if snr < SNR_LIMIT_DB[tx.sf]:
            return False
        table = receiver.sensitivity_dbm.get(tx.bw_hz)
        return table is None or rssi >= table[tx.sf]

    @staticmethod
    def co_channel(a: Transmission, b: Transmission) -> bool:
        """Same channel: centre frequencies within a quarter of the narrower bandwidth."""
        return abs(a.freq_hz - b.freq_hz) <= min(a.bw_hz, b.bw_hz) // 4

    @staticmethod
    def tunes_to(tx: Transmission, freq_hz: int, bw_hz: int) -> bool:
        """Would a receiver on ``freq_hz``/``bw_hz`` demodulate ``tx``? (DS: offset up to BW/4)."""
        return tx.bw_hz == bw_hz and abs(tx.freq_hz - freq_hz) <= bw_hz // 4

    # -- transmitting ------------------------------------------------------------------------------
    def transmit(
        self,
        sender: Endpoint,
        payload: bytes,
        *,
        freq_hz: int,
        sf: int,
        bw_hz: int = 125_000,
        cr: int = 1,
        preamble: int = 8,
        explicit_header: bool = True,
        crc: bool = True,
        iq_inverted: bool = False,
        sync_word: int = 0x34,
        tx_power_dbm: float = 14.0,
        ldro: bool | None = None,
    ) -> Transmission:
        """Put a packet on the air now; it is judged at every receiver when its air time ends."""
        if not 6 <= sf <= 12:
            raise ValueError(f"spreading factor {sf!r} out of range SF6..SF12")
        if bw_hz not in BANDWIDTHS_HZ:
            raise ValueError(f"bandwidth {bw_hz!r} Hz is not a LoRa bandwidth")
        payload = bytes(payload)
        tx = Transmission()
        tx.id = next(self._ids)
        tx.sender = sender
        tx.origin = tuple(sender.position)
        tx.payload = payload
        tx.freq_hz = int(freq_hz)
        tx.sf = sf
        tx.bw_hz = bw_hz
        tx.cr = cr
        tx.preamble = preamble
        tx.explicit_header = explicit_header
        tx.crc = crc
        tx.iq_inverted = iq_inverted
        tx.sync_word = sync_word
        tx.tx_power_dbm = float(tx_power_dbm)
        tx.ldro = ldro_required(sf, bw_hz) if ldro is None else bool(ldro)
        tx.toa_us = time_on_air_us(
            len(payload), sf, bw_hz, cr, preamble, explicit_header, crc, tx.ldro
        )
        tx.tsym_us = symbol_time_us(sf, bw_hz)
        tx.start_us = self.clock.now_us()
        tx.end_us = tx.start_us + tx.toa_us
        tx.lock_us = tx.start_us + max(0, preamble - self.lock_symbols) * tx.tsym_us
        tx.aborted = False
        tx.ended = False
        self._history.append(tx)
        self.counters(sender.name).sent += 1
        self.totals.sent += 1
        tx._timer = self.clock.call_at(tx.end_us, self._end_of_air, tx)
        return tx

    def abort(self, tx: Transmission) -> None:
        """The sender stopped mid-packet: nobody decodes it; it interfered until now."""
        if tx.ended or tx.aborted:
            return
        tx.aborted = True
        tx.ended = True
        tx.end_us = self.clock.now_us()
        tx._timer.cancel()
        self._prune()

    def in_air(self) -> list[Transmission]:
        """Transmissions on the air right now."""
        now = self.clock.now_us()
        return [t for t in self._history if not t.ended and t.start_us <= now < t.end_us]

    def pending_for(self, endpoint: Endpoint) -> Transmission | None:
        """A packet on the air now that ``endpoint`` is locked onto (or still can lock onto)."""
        for tx in self.in_air():
            if tx.sender is endpoint:
                continue
            since = endpoint.listening_since(tx)
            if since is None or since > tx.lock_us:
                continue
            rssi, snr = self.link_budget(tx, endpoint)
            if self.detectable(tx, endpoint, rssi, snr):
                return tx
        return None

    def power_dbm(self, endpoint: Endpoint, freq_hz: int, bw_hz: int) -> float:
        """Noise plus every co-channel signal on the air at ``endpoint`` (as RegRssiValue shows)."""
        total_mw = 10 ** (noise_floor_dbm(bw_hz, endpoint.noise_figure_db) / 10)
        for tx in self.in_air():
            if tx.sender is not endpoint and abs(tx.freq_hz - freq_hz) <= max(tx.bw_hz, bw_hz) // 2:
                total_mw += 10 ** (self.rssi_dbm(tx, endpoint) / 10)
        return 10 * math.log10(total_mw)

    def corrupt_next(self, count: int = 1, receiver: str | None = None) -> None:
        """Fault injection: the next ``count`` packets received (by ``receiver``, or by anyone)
        arrive with their payload destroyed, as after a burst of interference."""
        with self._lock:
            self._inject.append([count, receiver])

    # -- judging at the end of the air time -------------------------------------------------------
    def _end_of_air(self, tx: Transmission) -> None:
        tx.ended = True
        try:
            if not tx.aborted:
                for ep in list(self.endpoints):
                    if ep is not tx.sender:
                        self._judge(tx, ep)
        finally:
            self._prune()

    def _judge(self, tx: Transmission, ep: Endpoint) -> None:
        since = ep.listening_since(tx)
        if since is None or since > tx.lock_us or self._sent_during(ep, tx):
            return  # not listening for it (or half duplex): not a loss
        c = self.counters(ep.name)
        rssi, snr = self.link_budget(tx, ep)
        if not self.detectable(tx, ep, rssi, snr):
            c.lost_sensitivity += 1
            self.totals.lost_sensitivity += 1
            return
        verdict = self._interference(tx, ep, rssi)
        if verdict == _LOST:
            c.lost_collision += 1
            self.totals.lost_collision += 1
            return
        corrupted = verdict == _CORRUPTED or self._take_injection(ep.name)
        payload = self._garble(tx.payload) if corrupted else tx.payload
        if corrupted:
            c.corrupted += 1
            self.totals.corrupted += 1
        else:
            c.delivered += 1
            self.totals.delivered += 1
        ep.deliver(Reception(tx, payload, rssi, snr, corrupted, tx.end_us))

    def _sent_during(self, ep: Endpoint, tx: Transmission) -> bool:
        return any(
            o.sender is ep and o.start_us < tx.end_us and o.end_us > tx.start_us
            for o in self._history
        )

    def _interference(self, p: Transmission, ep: Endpoint, p_rssi: float) -> int:
        verdict = _OK
        for i in self._history:
            if i is p or i.sender is ep or i.start_us >= p.end_us or i.end_us <= p.start_us:
                continue
            if i.sf != p.sf or i.iq_inverted != p.iq_inverted or not self.co_channel(i, p):
                continue
            i_rssi, i_snr = self.link_budget(i, ep)
            if p_rssi >= i_rssi + self.capture_threshold_db:
                # P is strong enough to capture, unless the receiver had already locked onto I.
                if (
                    i.start_us < p.start_us
                    and p.start_us > i.lock_us
                    and self.detectable(i, ep, i_rssi, i_snr)
                ):
                    return _LOST
                continue
            if i.start_us > p.lock_us:
                verdict = _CORRUPTED  # P's header was decoded; I destroys its payload
            else:
                return _LOST
        return verdict

    def _take_injection(self, name: str) -> bool:
        with self._lock:
            for item in self._inject:
                if item[1] is None or item[1] == name:
                    item[0] -= 1
                    if item[0] <= 0:
                        self._inject.remove(item)
                    return True
        return False

    def _garble(self, payload: bytes) -> bytes:
        if not payload:
            return payload
        data = bytearray(payload)
        data[self._rng.randrange(len(data))] ^= self._rng.randrange(1, 256)
        return bytes(data)

    def _prune(self) -> None:
        now = self.clock.now_us()
        in_air_starts = [t.start_us for t in self._history if not t.ended]
        horizon = min(in_air_starts + [now])
        self._history = [t for t in self._history if not t.ended or t.end_us > horizon]


# -- the gateway's simulated concentrator ----------------------------------------------------------


class ConcentratorError(Exception):
    """A downlink the concentrator cannot send."""


class TooLate(ConcentratorError):
    """The requested emission time has already passed."""


class TxConflict(ConcentratorError):
    """The concentrator's single transmitter is already booked for part of that time."""


@dataclass(frozen=True, slots=True)
class RxPacket:
    """An uplink as the concentrator reports it (the fields of a Semtech "rxpk").

    ``tmst_us`` is the virtual time in microseconds of the *end* of reception (Semtech's tmst is
    the "RX finished" event too), full width: unlike the forwarder's 32-bit counter it never wraps.
    ``cr`` is the coding rate index 1..4 (4/5..4/8). RSSI is reported in whole dB and SNR in
    0.25 dB steps, as the SX1301 does.
    """

    payload: bytes
    tmst_us: int
    freq_hz: int
    sf: int
    bw_khz: int
    cr: int
    rssi_dbm: float
    snr_db: float
    crc_ok: bool
    time_on_air_us: int = 0


class Downlink:
    """A scheduled downlink; ``cancel()`` before ``at_us`` and it is never sent."""

    __slots__ = (
        "_timer",
        "at_us",
        "bw_khz",
        "cancelled",
        "end_us",
        "freq_hz",
        "iq_inverted",
        "payload",
        "sent",
        "sf",
        "time_on_air_us",
        "tx",
        "tx_power_dbm",
    )  # fmt: skip

    def cancel(self) -> None:
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()

    def __repr__(self) -> str:
        state = "sent" if self.sent else "cancelled" if self.cancelled else "scheduled"
        return (
            f"<Downlink {state} at {self.at_us} us {self.freq_hz / 1e6:.3f} MHz "
            f"SF{self.sf}/{self.bw_khz} kHz {len(self.payload)} B>"
        )


class Concentrator(Endpoint):
    """Multi-channel LoRa gateway front end: all SFs 7..12 at 125 kHz on ``freqs_hz``."""

    SPREADING_FACTORS = range(7, 13)
    BW_HZ = 125_000

    def __init__(
        self,
        clock: Any,
        channel: RadioChannel,
        position: tuple[float, float] = (0.0, 0.0),
        freqs_hz: Iterable[int] = EU868_UPLINK_CHANNELS_HZ,
        name: str = "gateway",
        sync_word: int = 0x34,
        on_uplink: Callable[[RxPacket], None] | None = None,
        noise_figure_db: float = DEFAULT_NOISE_FIGURE_DB,
        antenna_gain_dbi: float = 0.0,
    ) -> None:
        self.clock = clock
        self.channel = channel
        self.position = position
        self.freqs_hz = tuple(int(f) for f in freqs_hz)
        self.name = name
        self.sync_word = sync_word
        self.on_uplink = on_uplink
        self.noise_figure_db = noise_figure_db
        self.antenna_gain_dbi = antenna_gain_dbi
        self.uplinks = 0
        self.crc_errors = 0
        self.downlinks_sent = 0
        self.too_late = 0
        self.callback_errors = 0
        self._listen_since = clock.now_us()
        self._tx_until = -1
        self._booked: list[Downlink] = []
        self._lock = threading.Lock()
        channel.attach(self)

    # -- receiving --------------------------------------------------------------------------------
    def listening_since(self, tx: Transmission) -> int | None:
        if self.clock.now_us() < self._tx_until:
            return None  # half duplex: transmitting a downlink
        if (
            tx.iq_inverted
            or tx.sync_word != self.sync_word
            or not tx.explicit_header
            or tx.sf not in self.SPREADING_FACTORS
            or not any(self.channel.tunes_to(tx, f, self.BW_HZ) for f in self.freqs_hz)
        ):
            return None
        return self._listen_since

    def deliver(self, rx: Reception) -> None:
        tx = rx.tx
        crc_ok = not (rx.corrupted and tx.crc)
        pkt = RxPacket(
            payload=rx.payload,
            tmst_us=rx.end_us,
            freq_hz=min(self.freqs_hz, key=lambda f: abs(f - tx.freq_hz)),
            sf=tx.sf,
            bw_khz=tx.bw_hz // 1000,
            cr=tx.cr,
            rssi_dbm=float(round(rx.rssi_dbm)),
            snr_db=round(rx.snr_db * 4) / 4,
            crc_ok=crc_ok,
            time_on_air_us=tx.toa_us,
        )
        if crc_ok:
            self.uplinks += 1
        else:
            self.crc_errors += 1
        if self.on_uplink is None:
            return
        try:
            self.on_uplink(pkt)
        except Exception:  # a broken consumer must not stop the simulation
            self.callback_errors += 1
            log.exception("%s: on_uplink callback failed", self.name)

    # -- transmitting -----------------------------------------------------------------------------
    def send_at(
        self,
        at_us: int,
        freq_hz: int,
        sf: int,
        bw_khz: int,
        payload: bytes,
        tx_power_dbm: float = 14,
        iq_inverted: bool = True,
        cr: int = 1,
        preamble: int = 8,
        crc: bool = False,
    ) -> Downlink:
        """Emit ``payload`` at virtual time ``at_us`` (LoRaWAN downlink defaults: inverted IQ,
        no payload CRC). Callable from any thread. Raises TooLate if ``at_us`` has passed and
        TxConflict if the transmitter is already booked then."""
        if not 7 <= sf <= 12:
            raise ValueError(f"spreading factor {sf!r} out of range SF7..SF12")
        if bw_khz not in (125, 250, 500):
            raise ValueError(f"bandwidth {bw_khz!r} kHz: the concentrator sends at 125/250/500 kHz")
        payload = bytes(payload)
        if not 1 <= len(payload) <= 255:
            raise ValueError(f"downlink of {len(payload)} bytes: a LoRa packet carries 1..255")
        toa = time_on_air_us(len(payload), sf, bw_khz * 1000, cr, preamble, True, crc)
        dl = Downlink()
        dl.at_us, dl.end_us, dl.time_on_air_us = int(at_us), int(at_us) + toa, toa
        dl.freq_hz, dl.sf, dl.bw_khz, dl.payload = int(freq_hz), sf, bw_khz, payload
        dl.tx_power_dbm, dl.iq_inverted = tx_power_dbm, iq_inverted
        dl.sent, dl.cancelled, dl.tx, dl._timer = False, False, None, None
        with self._lock:
            now = self.clock.now_us()
            if dl.at_us < now:
                self.too_late += 1
                raise TooLate(
                    f"{self.name}: downlink for t={dl.at_us} us is {now - dl.at_us} us too late "
                    f"(now t={now} us)"
                )
            self._booked = [b for b in self._booked if not b.cancelled and b.end_us > now]
            for b in self._booked:
                if b.at_us < dl.end_us and dl.at_us < b.end_us:
                    raise TxConflict(
                        f"{self.name}: the transmitter is busy {b.at_us}..{b.end_us} us, "
                        f"cannot send {dl.at_us}..{dl.end_us} us"
                    )
            self._booked.append(dl)
            dl._timer = self.clock.call_at(dl.at_us, self._emit, dl, cr, preamble, crc)
        return dl

    def _emit(self, dl: Downlink, cr: int, preamble: int, crc: bool) -> None:
        if dl.cancelled:
            return
        if self.clock.now_us() > dl.at_us:
            # send_at raced with the clock (called from another thread just before at_us): the
            # slot has passed, so drop it as the packet forwarder's TOO_LATE would.
            dl.cancelled = True
            self.too_late += 1
            log.warning(
                "%s: downlink for t=%d us dropped: the time had passed", self.name, dl.at_us
            )
            return
        tx = self.channel.transmit(
            self,
            dl.payload,
            freq_hz=dl.freq_hz,
            sf=dl.sf,
            bw_hz=dl.bw_khz * 1000,
            cr=cr,
            preamble=preamble,
            crc=crc,
            iq_inverted=dl.iq_inverted,
            sync_word=self.sync_word,
            tx_power_dbm=dl.tx_power_dbm,
        )
        dl.tx, dl.sent = tx, True
        self._tx_until = tx.end_us
        self._listen_since = tx.end_us
        self.downlinks_sent += 1

    def __repr__(self) -> str:
        return f"<Concentrator {self.name} at {self.position}>"
