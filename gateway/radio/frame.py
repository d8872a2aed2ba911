"""What a front end hands the network side, and what it is asked to transmit."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RxFrame:
    """One LoRa frame heard by a front end, with its radio metadata (Semtech rxpk fields)."""

    phy: bytes
    tmst_us: int  # concentrator counter at end of reception, µs
    freq_hz: int
    sf: int
    bw_khz: int
    rssi_dbm: float
    snr_db: float
    received_at: float  # gateway wall clock, Unix seconds
    crc_ok: bool = True
    antenna: int = 0
    extra: dict = field(default_factory=dict)
    # Which gateway heard it (semtech-udp: a forwarder's EUI, hex); downlinks go back through it.
    gateway_eui: str | None = None
    heard_by: tuple[str, ...] = ()  # every forwarder that heard it within the dedup window
    coding_rate: str | None = None  # LoRa ECC rate as reported ("4/5".."4/8"), when known


@dataclass(frozen=True, slots=True)
class TxRequest:
    """A downlink to transmit at concentrator time ``tmst_us`` (or immediately when None)."""

    phy: bytes
    tmst_us: int | None
    freq_hz: int
    sf: int
    bw_khz: int = 125
    tx_power_dbm: int = 14
    iq_inverted: bool = True
    # Which forwarder transmits (semtech-udp; usually the RxFrame's gateway_eui); None: the front
    # end routes by the frame's DevAddr, or uses its only forwarder.
    gateway_eui: str | None = None
    coding_rate: str = "4/5"
    rf_chain: int = 0
    crc: bool = False  # LoRaWAN downlinks carry no payload CRC
