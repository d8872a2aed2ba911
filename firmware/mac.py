"""The end device's side of the LoRaWAN 1.0.4 MAC commands (§5) for EU868 (RP002-1.0.4).

``MacSettings`` holds what the network may change (data rate, TX power, channels and mask,
NbTrans, RX1/RX2 parameters, RX1 delay, aggregated duty cycle) and is persisted with the session
as a small dict. ``process()`` applies the commands of one downlink and returns the answers to
put in the FOpts of the next uplink. Each request is validated before anything is applied; an
invalid one is refused in its answer's status bits and changes nothing (never a crash).

Answers that confirm a change of the receive parameters (RXParamSetupAns, RXTimingSetupAns,
DlChannelAns) are "sticky": repeated in every uplink until a downlink arrives (§5.4, §5.7).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from protocol import region_eu868 as region
from protocol.lorawan import (
    CID_DEV_STATUS,
    CID_DEVICE_TIME,
    CID_DL_CHANNEL,
    CID_DUTY_CYCLE,
    CID_LINK_ADR,
    CID_LINK_CHECK,
    CID_NEW_CHANNEL,
    CID_RX_PARAM_SETUP,
    CID_RX_TIMING_SETUP,
    MACCommandError,
    encode_mac_command,
    parse_mac_commands,
)

_MAX_CHANNELS = const(16)
_DEFAULT_DRS = const(0x50)  # max DR5 << 4 | min DR0: the three default channels (RP002)
_FREQ_MIN = const(863000000)
_FREQ_MAX = const(870000000)
_KEEP = const(15)  # DataRate / TXPower 0xF: keep the current value (1.0.4 §5.3)


def _freq_ok(f):
    return _FREQ_MIN <= f <= _FREQ_MAX and region.sub_band(f) is not None


class MacSettings:
    """The network-controlled radio parameters of one session."""

    def __init__(self, dr=5, tx_power=1, d=None):
        self.dr = dr
        self.tx_power = tx_power  # TXPower index: EIRP = 16 dBm - 2 dB * index
        self.nb_trans = 1
        # up to 16 channels: [frequency Hz (0 = none), DR range max << 4 | min, downlink Hz]
        self.channels = [[f, _DEFAULT_DRS, 0] for f in region.DEFAULT_CHANNELS_HZ]
        self.ch_mask = 0x0007
        self.rx1_dr_offset = 0
        self.rx2_dr = region.RX2_DR
        self.rx2_freq = region.RX2_FREQ_HZ
        self.rx1_delay_s = region.RECEIVE_DELAY1_S
        self.max_dcycle = 0
        if d:
            for k in d:
                if hasattr(self, k):
                    setattr(self, k, d[k])

    def to_dict(self):
        return {"dr": self.dr, "tx_power": self.tx_power, "nb_trans": self.nb_trans,
                "channels": self.channels, "ch_mask": self.ch_mask,
                "rx1_dr_offset": self.rx1_dr_offset, "rx2_dr": self.rx2_dr,
                "rx2_freq": self.rx2_freq, "rx1_delay_s": self.rx1_delay_s,
                "max_dcycle": self.max_dcycle}

    def set_channel(self, index, freq, drs=_DEFAULT_DRS):
        ch = self.channels
        while len(ch) <= index:
            ch.append([0, 0, 0])
        ch[index] = [freq, drs, 0]
        if freq:
            self.ch_mask |= 1 << index
        else:
            self.ch_mask &= ~(1 << index)

    def add_cflist(self, freqs):
        """Channels 3..7 from a Join-accept CFList (0 = no channel there)."""
        for i in range(len(freqs)):
            if freqs[i] and _freq_ok(freqs[i]):
                self.set_channel(3 + i, freqs[i])

    def enabled(self, dr=None):
        """Uplink frequencies enabled by ChMask (and able to carry ``dr`` if given)."""
        out = []
        ch = self.channels
        for i in range(len(ch)):
            f, drs = ch[i][0], ch[i][1]
            if f and self.ch_mask >> i & 1 and (dr is None or drs & 15 <= dr <= drs >> 4):
                out.append(f)
        return out

    def downlink_freq(self, uplink_freq):
        """RX1 frequency for an uplink on uplink_freq (DlChannelReq may have moved it)."""
        for ch in self.channels:
            if ch[0] == uplink_freq and ch[2]:
                return ch[2]
        return uplink_freq

    def tx_power_dbm(self, cap_dbm):
        return min(region.tx_power_dbm(self.tx_power), cap_dbm)


class MacContext:
    """What the answers need from the device: battery level (0 mains, 1..254, 255 unknown) and
    the SNR of the downlink that carried the requests."""

    def __init__(self, battery=255, snr=0):
        self.battery = battery
        self.snr = snr
        self.link_check = None  # (margin dB, gateway count) of the last LinkCheckAns
        self.device_time = None  # (GPS seconds, fraction/256) of the last DeviceTimeAns


def battery_level(mv, mains, empty_mv=2000, full_mv=3200):
    """DevStatusAns battery byte: 0 mains powered, 1..254 from empty to full, 255 unknown."""
    if mains:
        return 0
    if not mv:
        return 255
    if mv <= empty_mv:
        return 1
    if mv >= full_mv:
        return 254
    return 1 + (mv - empty_mv) * 253 // (full_mv - empty_mv)


def _link_adr_block(s, reqs):
    """Validate a contiguous block of LinkADRReq (§5.3); apply all or nothing; one status."""
    mask = s.ch_mask
    ch_ok = True
    for r in reqs:
        cntl = r["ch_mask_cntl"]
        if cntl == 0:
            mask = r["ch_mask"]
            for i in range(_MAX_CHANNELS):
                if mask >> i & 1 and (i >= len(s.channels) or not s.channels[i][0]):
                    ch_ok = False
        elif cntl == 6:
            mask = 0
            for i in range(len(s.channels)):
                if s.channels[i][0]:
                    mask |= 1 << i
        else:
            ch_ok = False
    if not mask:
        ch_ok = False
    last = reqs[-1]
    dr = s.dr if last["data_rate"] == _KEEP else last["data_rate"]
    power = s.tx_power if last["tx_power"] == _KEEP else last["tx_power"]
    dr_ok = 0 <= dr <= region.MAX_DR
    if dr_ok and ch_ok:
        saved = s.ch_mask
        s.ch_mask = mask
        dr_ok = bool(s.enabled(dr))
        s.ch_mask = saved
    power_ok = 0 <= power < len(region.TX_POWER_OFFSETS_DB)
    if ch_ok and dr_ok and power_ok:
        s.ch_mask = mask
        s.dr = dr
        s.tx_power = power
        if last["nb_trans"]:
            s.nb_trans = last["nb_trans"]
    ans = encode_mac_command(CID_LINK_ADR, True, power_ack=power_ok, data_rate_ack=dr_ok,
                             channel_mask_ack=ch_ok)
    return ans * len(reqs), ch_ok and dr_ok and power_ok


def process(s, data, ctx):
    """Apply the MAC commands in ``data`` (FOpts or an FPort 0 payload) to settings ``s``.

    -> (answers, sticky answers, changed): byte strings of uplink commands, and whether ``s``
    changed (then the caller persists it). Commands after an unknown CID cannot be parsed and
    are dropped, as §5 requires; the ones before it are still applied.
    """
    try:
        cmds = parse_mac_commands(data, False)
    except MACCommandError as exc:
        cmds = exc.parsed
    answers = b""
    sticky = b""
    changed = False
    i = 0
    n = len(cmds)
    while i < n:
        cid, f = cmds[i]
        if cid == CID_LINK_ADR:
            j = i
            while j < n and cmds[j][0] == CID_LINK_ADR:
                j += 1
            ans, ok = _link_adr_block(s, [c[1] for c in cmds[i:j]])
            answers += ans
            changed = changed or ok
            i = j
            continue
        if cid == CID_LINK_CHECK:
            ctx.link_check = (f["margin"], f["gw_cnt"])
        elif cid == CID_DEVICE_TIME:
            ctx.device_time = (f["seconds"], f["fraction"])
        elif cid == CID_DUTY_CYCLE:
            s.max_dcycle = f["max_duty_cycle"]
            changed = True
            answers += encode_mac_command(CID_DUTY_CYCLE, True)
        elif cid == CID_RX_PARAM_SETUP:
            off_ok = 0 <= f["rx1_dr_offset"] <= region.MAX_RX1_DR_OFFSET
            dr_ok = 0 <= f["rx2_data_rate"] <= region.MAX_DR
            freq_ok = _freq_ok(f["frequency"])
            if off_ok and dr_ok and freq_ok:
                s.rx1_dr_offset = f["rx1_dr_offset"]
                s.rx2_dr = f["rx2_data_rate"]
                s.rx2_freq = f["frequency"]
                changed = True
            sticky += encode_mac_command(CID_RX_PARAM_SETUP, True, rx1_dr_offset_ack=off_ok,
                                         rx2_data_rate_ack=dr_ok, channel_ack=freq_ok)
        elif cid == CID_DEV_STATUS:
            margin = max(-32, min(31, int(ctx.snr)))
            answers += encode_mac_command(CID_DEV_STATUS, True, battery=ctx.battery,
                                          margin=margin)
        elif cid == CID_NEW_CHANNEL:
            idx, freq = f["ch_index"], f["frequency"]
            idx_ok = 3 <= idx < _MAX_CHANNELS  # the default channels cannot be changed
            freq_ok = idx_ok and (freq == 0 or _freq_ok(freq))
            drs_ok = f["min_dr"] <= f["max_dr"] <= region.MAX_DR
            if freq_ok and drs_ok:
                s.set_channel(idx, freq, f["max_dr"] << 4 | f["min_dr"])
                changed = True
            answers += encode_mac_command(CID_NEW_CHANNEL, True, data_rate_range_ok=drs_ok,
                                          channel_frequency_ok=freq_ok)
        elif cid == CID_DL_CHANNEL:
            idx, freq = f["ch_index"], f["frequency"]
            exists = idx < len(s.channels) and bool(s.channels[idx][0])
            freq_ok = _freq_ok(freq)
            if exists and freq_ok:
                s.channels[idx][2] = freq
                changed = True
            sticky += encode_mac_command(CID_DL_CHANNEL, True, uplink_frequency_exists=exists,
                                         channel_frequency_ok=freq_ok)
        elif cid == CID_RX_TIMING_SETUP:
            s.rx1_delay_s = f["delay"] or 1
            changed = True
            sticky += encode_mac_command(CID_RX_TIMING_SETUP, True)
        # TxParamSetupReq is not used in EU868 (RP002): ignored, no answer
        i += 1
    return answers, sticky, changed


def adr_backoff(s, cnt, default_power=1):
    """ADR_ACK_CNT handling of an ADR device before uplink number ``cnt`` without a downlink
    (1.0.4 §4.3.1.1): -> (set ADRACKReq, settings changed).

    From ADR_ACK_LIMIT uplinks on, ask the network to answer; after ADR_ACK_DELAY more, step
    the TX power back to the default, then lower the data rate one step every ADR_ACK_DELAY,
    and once at DR0 re-enable the default channels.
    """
    limit, delay = region.ADR_ACK_LIMIT, region.ADR_ACK_DELAY
    if cnt < limit:
        return False, False
    floor = s.dr == 0 and s.tx_power <= default_power and s.ch_mask & 7 == 7
    if cnt < limit + delay or (cnt - limit) % delay:
        return not floor, False
    if s.tx_power > default_power:
        s.tx_power = default_power
        return True, True
    if s.dr > 0:
        s.dr -= 1
        return True, True
    if s.ch_mask & 7 != 7:
        s.ch_mask |= 7
        return False, True
    return False, False


def link_check_req():
    """A LinkCheckReq for the next uplink's FOpts (§5.2)."""
    return encode_mac_command(CID_LINK_CHECK, True)


def fit_fopts(data, room=15):
    """Split uplink MAC commands into (the whole commands that fit in ``room`` bytes, the rest)."""
    if len(data) <= room:
        return data, b""
    try:
        cmds = parse_mac_commands(data, True)
    except MACCommandError:
        return b"", b""
    out = b""
    rest = b""
    for cid, f in cmds:
        enc = encode_mac_command(cid, True, **f)
        if not rest and len(out) + len(enc) <= room:
            out += enc
        else:
            rest += enc
    return out, rest
