"""MAC commands of LoRaWAN 1.0.4 (§5), carried in FOpts or in an FRMPayload on FPort 0.

A command is a CID byte followed by a payload whose length depends on the CID and on the
direction: 0x03 downlink is LinkADRReq (4 bytes), 0x03 uplink is LinkADRAns (1 byte). Parsed
commands are (cid, fields) pairs, fields a dict of named values (frequencies in Hz, flags as
bools, DevStatusAns margin signed). An unknown CID stops parsing: its length is unknown, so
nothing after it can be read (§5).
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from .errors import MACCommandError
from .wire import check_int, freq_to_field

CID_LINK_CHECK = const(0x02)  # §5.1  LinkCheckReq (up) / LinkCheckAns (down)
CID_LINK_ADR = const(0x03)  # §5.2  LinkADRReq (down) / LinkADRAns (up)
CID_DUTY_CYCLE = const(0x04)  # §5.3  DutyCycleReq / DutyCycleAns
CID_RX_PARAM_SETUP = const(0x05)  # §5.4  RXParamSetupReq / RXParamSetupAns
CID_DEV_STATUS = const(0x06)  # §5.5  DevStatusReq / DevStatusAns
CID_NEW_CHANNEL = const(0x07)  # §5.6  NewChannelReq / NewChannelAns
CID_RX_TIMING_SETUP = const(0x08)  # §5.7  RXTimingSetupReq / RXTimingSetupAns
CID_TX_PARAM_SETUP = const(0x09)  # §5.8  TxParamSetupReq / TxParamSetupAns (not used by EU868)
CID_DL_CHANNEL = const(0x0A)  # §5.6  DlChannelReq / DlChannelAns
CID_DEVICE_TIME = const(0x0D)  # §5.9  DeviceTimeReq (up) / DeviceTimeAns (down)

# Field kinds
_UINT = const(0)
_BOOL = const(1)
_FREQ = const(2)  # 24-bit count of 100 Hz steps, given and returned in Hz
_SINT = const(3)  # two's complement over `bits` (DevStatusAns margin, 6 bits)

# Each command: (name, payload length, fields); each field:
# (name, byte offset in the payload, bytes, bit shift, bits, kind). Multi-byte fields are LE.
# Bits a table does not name are RFU: ignored when parsing, zero when encoding.
_DOWNLINK = {
    CID_LINK_CHECK: ("LinkCheckAns", 2, (
        ("margin", 0, 1, 0, 8, _UINT),  # dB above the demodulation floor
        ("gw_cnt", 1, 1, 0, 8, _UINT),
    )),
    CID_LINK_ADR: ("LinkADRReq", 4, (
        ("data_rate", 0, 1, 4, 4, _UINT),
        ("tx_power", 0, 1, 0, 4, _UINT),
        ("ch_mask", 1, 2, 0, 16, _UINT),
        ("ch_mask_cntl", 3, 1, 4, 3, _UINT),  # Redundancy bits 6..4
        ("nb_trans", 3, 1, 0, 4, _UINT),  # Redundancy bits 3..0
    )),
    CID_DUTY_CYCLE: ("DutyCycleReq", 1, (
        ("max_duty_cycle", 0, 1, 0, 4, _UINT),  # aggregated duty cycle 1 / 2^MaxDCycle
    )),
    CID_RX_PARAM_SETUP: ("RXParamSetupReq", 4, (
        ("rx1_dr_offset", 0, 1, 4, 3, _UINT),  # DLSettings bits 6..4
        ("rx2_data_rate", 0, 1, 0, 4, _UINT),  # DLSettings bits 3..0
        ("frequency", 1, 3, 0, 24, _FREQ),
    )),
    CID_DEV_STATUS: ("DevStatusReq", 0, ()),
    CID_NEW_CHANNEL: ("NewChannelReq", 5, (
        ("ch_index", 0, 1, 0, 8, _UINT),
        ("frequency", 1, 3, 0, 24, _FREQ),  # 0 disables the channel
        ("max_dr", 4, 1, 4, 4, _UINT),  # DrRange bits 7..4
        ("min_dr", 4, 1, 0, 4, _UINT),  # DrRange bits 3..0
    )),
    CID_RX_TIMING_SETUP: ("RXTimingSetupReq", 1, (
        ("delay", 0, 1, 0, 4, _UINT),  # Del: RX1 opens Del s after the uplink, 0 meaning 1 s
    )),
    CID_TX_PARAM_SETUP: ("TxParamSetupReq", 1, (
        ("downlink_dwell_time", 0, 1, 5, 1, _BOOL),
        ("uplink_dwell_time", 0, 1, 4, 1, _BOOL),
        ("max_eirp", 0, 1, 0, 4, _UINT),  # index into the RP002 MaxEIRP table
    )),
    CID_DL_CHANNEL: ("DlChannelReq", 4, (
        ("ch_index", 0, 1, 0, 8, _UINT),
        ("frequency", 1, 3, 0, 24, _FREQ),
    )),
    CID_DEVICE_TIME: ("DeviceTimeAns", 5, (
        ("seconds", 0, 4, 0, 32, _UINT),  # since the GPS epoch
        ("fraction", 4, 1, 0, 8, _UINT),  # in 1/256 s
    )),
}

_UPLINK = {
    CID_LINK_CHECK: ("LinkCheckReq", 0, ()),
    CID_LINK_ADR: ("LinkADRAns", 1, (
        ("power_ack", 0, 1, 2, 1, _BOOL),
        ("data_rate_ack", 0, 1, 1, 1, _BOOL),
        ("channel_mask_ack", 0, 1, 0, 1, _BOOL),
    )),
    CID_DUTY_CYCLE: ("DutyCycleAns", 0, ()),
    CID_RX_PARAM_SETUP: ("RXParamSetupAns", 1, (
        ("rx1_dr_offset_ack", 0, 1, 2, 1, _BOOL),
        ("rx2_data_rate_ack", 0, 1, 1, 1, _BOOL),
        ("channel_ack", 0, 1, 0, 1, _BOOL),
    )),
    CID_DEV_STATUS: ("DevStatusAns", 2, (
        ("battery", 0, 1, 0, 8, _UINT),  # 0 mains, 1..254 level, 255 unknown
        ("margin", 1, 1, 0, 6, _SINT),  # SNR of the last DevStatusReq in dB, -32..31
    )),
    CID_NEW_CHANNEL: ("NewChannelAns", 1, (
        ("data_rate_range_ok", 0, 1, 1, 1, _BOOL),
        ("channel_frequency_ok", 0, 1, 0, 1, _BOOL),
    )),
    CID_RX_TIMING_SETUP: ("RXTimingSetupAns", 0, ()),
    CID_TX_PARAM_SETUP: ("TxParamSetupAns", 0, ()),
    CID_DL_CHANNEL: ("DlChannelAns", 1, (
        ("uplink_frequency_exists", 0, 1, 1, 1, _BOOL),
        ("channel_frequency_ok", 0, 1, 0, 1, _BOOL),
    )),
    CID_DEVICE_TIME: ("DeviceTimeReq", 0, ()),
}


def _spec(cid, uplink):
    return (_UPLINK if uplink else _DOWNLINK).get(cid)


def _direction(uplink):
    return "uplink" if uplink else "downlink"


def mac_command_name(cid, uplink):
    """The spec's name of a command ("LinkADRReq"), or None for a CID unknown in that direction."""
    spec = _spec(cid, uplink)
    return spec[0] if spec else None


def parse_mac_commands(data, uplink=True):
    """Parse FOpts (or an FPort 0 payload) into a list of (cid, fields) in order.

    Raises MACCommandError on an unknown CID or a truncated command; its `parsed` attribute
    holds the commands before the fault, which a device may still act on.
    """
    out = []
    n = len(data)
    pos = 0
    while pos < n:
        cid = data[pos]
        spec = _spec(cid, uplink)
        if spec is None:
            raise MACCommandError(
                "unknown MAC command CID 0x%02x in %s at byte %d: the rest cannot be parsed"
                % (cid, _direction(uplink), pos),
                out,
            )
        name, size, fields = spec
        start = pos + 1
        if start + size > n:
            raise MACCommandError(
                "%s at byte %d needs %d payload bytes, only %d left" % (name, pos, size, n - start),
                out,
            )
        values = {}
        for fname, off, nbytes, shift, bits, kind in fields:
            raw = 0
            for k in range(nbytes):
                raw |= data[start + off + k] << (8 * k)
            v = (raw >> shift) & ((1 << bits) - 1)
            if kind == _BOOL:
                v = bool(v)
            elif kind == _FREQ:
                v *= 100
            elif kind == _SINT and v >= 1 << (bits - 1):
                v -= 1 << bits
            values[fname] = v
        out.append((cid, values))
        pos = start + size
    return out


def encode_mac_command(cid, uplink, **fields):
    """Encode one MAC command (CID byte + payload) from its named fields; direction as for parse."""
    spec = _spec(cid, uplink)
    if spec is None:
        raise ValueError("no MAC command with CID %r in %s" % (cid, _direction(uplink)))
    name, size, layout = spec
    buf = bytearray(1 + size)
    buf[0] = cid
    for fname, off, nbytes, shift, bits, kind in layout:
        if fname not in fields:
            raise ValueError("%s needs field %r" % (name, fname))
        v = fields.pop(fname)
        label = name + " " + fname
        if kind == _BOOL:
            if v is not True and v is not False:
                raise ValueError("%s must be True or False, got %r" % (label, v))
            v = int(v)
        elif kind == _FREQ:
            v = freq_to_field(v, label)
        elif kind == _SINT:
            half = 1 << (bits - 1)
            v = check_int(v, -half, half - 1, label) & ((1 << bits) - 1)
        else:
            check_int(v, 0, (1 << bits) - 1, label)
        v <<= shift
        for k in range(nbytes):
            buf[1 + off + k] |= (v >> (8 * k)) & 0xFF
    if fields:
        raise ValueError("%s has no field %r" % (name, min(fields)))
    return bytes(buf)
