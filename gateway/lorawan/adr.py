"""A simple ADR for static nodes: step the data rate up and the TX power down while the link allows.

The rule is Semtech's well-known network-server ADR: take the best SNR of the last
``HISTORY`` uplinks, subtract the demodulation floor of the current spreading factor and an
installation margin (10 dB: street furniture, parked lorries, rain), and spend every 3 dB of what
is left on one step: first a faster data rate (up to DR5, SF7), then 2 dB less TX power (up to
TXPower 7, max EIRP - 14 dB). A negative headroom raises the power again. Static nodes are the
case this is made for: a moving node's history says little about its next uplink.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import region_eu868 as region

HISTORY = 20  # uplinks whose SNR the decision looks at
MARGIN_DB = 10.0  # installation margin kept above the demodulation floor
STEP_DB = 3.0  # one DR step or one TXPower step per 3 dB of headroom
MAX_ADR_DR = 5  # DR5 = SF7/125 kHz: the fastest rate on every EU868 default channel
MAX_TX_POWER_INDEX = len(region.TX_POWER_OFFSETS_DB) - 1  # 7: max EIRP - 14 dB

# SX1276 datasheet rev 7 table 13: the SNR below which each SF cannot be demodulated.
DEMOD_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}


def demod_floor_db(sf: int) -> float:
    """The demodulation SNR floor of a spreading factor (SF7 -7.5 dB ... SF12 -20 dB)."""
    return DEMOD_FLOOR_DB.get(sf, -20.0)


def link_margin_db(snr_db: float, sf: int) -> float:
    """How far an uplink's SNR was above what its SF needs (LinkCheckAns margin)."""
    return snr_db - demod_floor_db(sf)


@dataclass(frozen=True, slots=True)
class AdrDecision:
    """The data rate and TXPower index the device should use from now on."""

    data_rate: int
    tx_power: int


def decide(snr_history: list[float], data_rate: int, tx_power: int,
           margin_db: float = MARGIN_DB) -> AdrDecision | None:
    """New (DR, TXPower) for a device, or None when it should keep what it has.

    ``snr_history`` holds the SNR of its last uplinks (a decision needs ``HISTORY`` of them),
    ``data_rate``/``tx_power`` what it uses now.
    """
    if len(snr_history) < HISTORY or not 0 <= data_rate <= region.MAX_DR:
        return None
    sf = region.DATA_RATES[data_rate][0]
    headroom = max(snr_history[-HISTORY:]) - demod_floor_db(sf) - margin_db
    steps = int(headroom // STEP_DB)
    dr, power = data_rate, tx_power
    while steps > 0 and dr < MAX_ADR_DR:
        dr += 1
        steps -= 1
    while steps > 0 and power < MAX_TX_POWER_INDEX:
        power += 1
        steps -= 1
    while steps < 0 and power > 0:
        power -= 1
        steps += 1
    if (dr, power) == (data_rate, tx_power):
        return None
    return AdrDecision(dr, power)
