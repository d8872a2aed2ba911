"""EU863-870 regional parameters (LoRaWAN RP002-1.0.x, section "EU863-870") and the ETSI sub-bands.

Data rates, payload limits, default channels, receive windows, TX power and RX1 data rate offset
follow RP002-1.0.4 (identical to 1.0.0-1.0.3 for what is here). Sub-bands and duty cycles are those
of ETSI EN 300 220-2 / ERC Recommendation 70-03 Annex 1 (band names h1.3..h1.8; LoRaWAN 1.0 called
the 868 MHz ones g1..g4).

cityedge radios are LoRa only: DR7 (FSK 50 kbps) and DR8..DR11 (LR-FHSS) are not supported, and
``data_rate(7)`` says so instead of returning a wrong modulation.
"""

# Data rates: DR -> (spreading factor, bandwidth in Hz). RP002 table "EU863-870 Data Rate table".
DATA_RATES = (
    (12, 125000),  # DR0  SF12/125 kHz  250 bit/s
    (11, 125000),  # DR1  SF11/125 kHz  440 bit/s
    (10, 125000),  # DR2  SF10/125 kHz  980 bit/s
    (9, 125000),  # DR3  SF9/125 kHz   1760 bit/s
    (8, 125000),  # DR4  SF8/125 kHz   3125 bit/s
    (7, 125000),  # DR5  SF7/125 kHz   5470 bit/s
    (7, 250000),  # DR6  SF7/250 kHz  11000 bit/s
    None,  # DR7  FSK 50 kbps: not supported (LoRa-only radios)
)
MAX_DR = 6  # highest data rate cityedge can use

# Maximum payload sizes per DR: (M = max MACPayload, N = max FRMPayload with empty FOpts), the
# "repeater compatible" table of RP002 (EU868 has no dwell time limit).
MAX_PAYLOAD = (
    (59, 51),  # DR0
    (59, 51),  # DR1
    (59, 51),  # DR2
    (123, 115),  # DR3
    (250, 242),  # DR4
    (250, 242),  # DR5
    (250, 242),  # DR6
    (250, 242),  # DR7 (FSK, listed for completeness)
)

# The three default channels every EU868 device knows (DR0..DR5, join requests go there).
DEFAULT_CHANNELS_HZ = (868100000, 868300000, 868500000)
DEFAULT_CHANNEL_DRS = (0, 5)  # min, max DR on the default channels

RX2_FREQ_HZ = 869525000
RX2_DR = 0

RECEIVE_DELAY1_S = 1
RECEIVE_DELAY2_S = 2  # RECEIVE_DELAY1 + 1 s
JOIN_ACCEPT_DELAY1_S = 5
JOIN_ACCEPT_DELAY2_S = 6
ADR_ACK_LIMIT = 64
ADR_ACK_DELAY = 32

MAX_EIRP_DBM = 16  # default max EIRP for EU863-870

# TXPower index -> dB below max EIRP (RP002 "EU863-870 TX power table"); 8..14 RFU, 15 = keep.
TX_POWER_OFFSETS_DB = (0, -2, -4, -6, -8, -10, -12, -14)

# RX1DROffset allowed for EU863-870: 0..5; downlink DR = max(uplink DR - offset, 0).
MAX_RX1_DR_OFFSET = 5

# Sub-bands: (low Hz, high Hz, duty cycle denominator, max ERP dBm, name).
# Duty cycle 1/100 = 1 %, 1/1000 = 0.1 %, 1/10 = 10 %. 25 mW ERP = 14 dBm, 500 mW = 27 dBm.
SUB_BANDS = (
    (863000000, 865000000, 1000, 14, "h1.3"),  # 0.1 %
    (865000000, 868000000, 100, 14, "h1.4"),  # 1 %
    (868000000, 868600000, 100, 14, "h1.5"),  # 1 %   (LoRaWAN 1.0 "g1": 868.1/868.3/868.5)
    (868700000, 869200000, 1000, 14, "h1.6"),  # 0.1 % ("g2")
    (869400000, 869650000, 10, 27, "h1.7"),  # 10 %  ("g3": RX2 869.525 MHz)
    (869700000, 870000000, 100, 14, "h1.8"),  # 1 %   ("g4")
)


def data_rate(dr):
    """(spreading factor, bandwidth Hz) of an EU868 data rate; ValueError for FSK/unknown DRs."""
    if dr == 7:
        raise ValueError("DR7 is FSK 50 kbps, which cityedge does not support (LoRa radios only)")
    if not 0 <= dr <= MAX_DR:
        raise ValueError(f"EU868 data rate DR{dr!r} does not exist or is not supported (DR0..DR6)")
    return DATA_RATES[dr]


def dr_of(sf, bw_hz=125000):
    """The EU868 data rate index for a LoRa SF/bandwidth; ValueError if there is none."""
    for dr in range(MAX_DR + 1):
        if DATA_RATES[dr] == (sf, bw_hz):
            return dr
    raise ValueError(f"SF{sf!r} at {bw_hz!r} Hz is not an EU868 data rate")


def max_payload(dr):
    """(M, N): maximum MACPayload and FRMPayload sizes in bytes at data rate ``dr``."""
    data_rate(dr)  # validates
    return MAX_PAYLOAD[dr]


def rx1_dr(uplink_dr, offset=0):
    """Data rate of the RX1 downlink for an uplink at ``uplink_dr`` and RX1DROffset ``offset``."""
    data_rate(uplink_dr)
    if not 0 <= offset <= MAX_RX1_DR_OFFSET:
        raise ValueError(f"RX1DROffset {offset!r} out of range 0..5 for EU868")
    dr = uplink_dr - offset
    return max(dr, 0)


def tx_power_dbm(index, max_eirp_dbm=MAX_EIRP_DBM):
    """EIRP in dBm for TXPower ``index`` (0 = max EIRP, each step 2 dB lower, 0..7)."""
    if not 0 <= index < len(TX_POWER_OFFSETS_DB):
        raise ValueError(f"TXPower index {index!r} out of range 0..7 for EU868")
    return max_eirp_dbm + TX_POWER_OFFSETS_DB[index]


def sub_band(freq_hz):
    """The sub-band tuple holding ``freq_hz``, or None outside every band (no transmitting)."""
    for band in SUB_BANDS:
        if band[0] <= freq_hz <= band[1]:
            return band
    return None


def duty_cycle_denominator(freq_hz):
    """1/duty cycle of the sub-band of ``freq_hz`` (100 for 1 %); ValueError outside the bands."""
    band = sub_band(freq_hz)
    if band is None:
        raise ValueError(
            f"{freq_hz!r} Hz is outside every EU868 sub-band: transmitting there is not allowed"
        )
    return band[2]


def time_off_us(freq_hz, time_on_air_us):
    """Minimum silence on the sub-band after a transmission: T_air * (1/duty cycle - 1)."""
    return time_on_air_us * (duty_cycle_denominator(freq_hz) - 1)
