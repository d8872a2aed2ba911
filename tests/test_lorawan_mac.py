"""MAC commands of protocol.lorawan: every 1.0.4 command both ways, sequences, garbage, errors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    CID_TX_PARAM_SETUP,
    MACCommandError,
    encode_mac_command,
    mac_command_name,
    parse_mac_commands,
)

b = st.booleans()


def u(bits):
    return st.integers(0, (1 << bits) - 1)


freq = u(24).map(lambda f: f * 100)

# An independent description of LoRaWAN 1.0.4 §5: (cid, uplink) -> (name, payload length, fields)
COMMANDS = {
    (CID_LINK_CHECK, True): ("LinkCheckReq", 0, {}),
    (CID_LINK_CHECK, False): ("LinkCheckAns", 2, {"margin": u(8), "gw_cnt": u(8)}),
    (CID_LINK_ADR, False): (
        "LinkADRReq",
        4,
        {
            "data_rate": u(4),
            "tx_power": u(4),
            "ch_mask": u(16),
            "ch_mask_cntl": u(3),
            "nb_trans": u(4),
        },
    ),
    (CID_LINK_ADR, True): (
        "LinkADRAns",
        1,
        {"power_ack": b, "data_rate_ack": b, "channel_mask_ack": b},
    ),
    (CID_DUTY_CYCLE, False): ("DutyCycleReq", 1, {"max_duty_cycle": u(4)}),
    (CID_DUTY_CYCLE, True): ("DutyCycleAns", 0, {}),
    (CID_RX_PARAM_SETUP, False): (
        "RXParamSetupReq",
        4,
        {"rx1_dr_offset": u(3), "rx2_data_rate": u(4), "frequency": freq},
    ),
    (CID_RX_PARAM_SETUP, True): (
        "RXParamSetupAns",
        1,
        {"rx1_dr_offset_ack": b, "rx2_data_rate_ack": b, "channel_ack": b},
    ),
    (CID_DEV_STATUS, False): ("DevStatusReq", 0, {}),
    (CID_DEV_STATUS, True): ("DevStatusAns", 2, {"battery": u(8), "margin": st.integers(-32, 31)}),
    (CID_NEW_CHANNEL, False): (
        "NewChannelReq",
        5,
        {"ch_index": u(8), "frequency": freq, "max_dr": u(4), "min_dr": u(4)},
    ),
    (CID_NEW_CHANNEL, True): (
        "NewChannelAns",
        1,
        {"data_rate_range_ok": b, "channel_frequency_ok": b},
    ),
    (CID_RX_TIMING_SETUP, False): ("RXTimingSetupReq", 1, {"delay": u(4)}),
    (CID_RX_TIMING_SETUP, True): ("RXTimingSetupAns", 0, {}),
    (CID_TX_PARAM_SETUP, False): (
        "TxParamSetupReq",
        1,
        {"downlink_dwell_time": b, "uplink_dwell_time": b, "max_eirp": u(4)},
    ),
    (CID_TX_PARAM_SETUP, True): ("TxParamSetupAns", 0, {}),
    (CID_DL_CHANNEL, False): ("DlChannelReq", 4, {"ch_index": u(8), "frequency": freq}),
    (CID_DL_CHANNEL, True): (
        "DlChannelAns",
        1,
        {"uplink_frequency_exists": b, "channel_frequency_ok": b},
    ),
    (CID_DEVICE_TIME, True): ("DeviceTimeReq", 0, {}),
    (CID_DEVICE_TIME, False): ("DeviceTimeAns", 5, {"seconds": u(32), "fraction": u(8)}),
}


@st.composite
def commands(draw, uplink):
    cid = draw(st.sampled_from(sorted(c for c, up in COMMANDS if up == uplink)))
    _, _, fields = COMMANDS[(cid, uplink)]
    return cid, {name: draw(strategy) for name, strategy in fields.items()}


@pytest.mark.parametrize(
    "cid,uplink", sorted(COMMANDS), ids=[v[0] for _, v in sorted(COMMANDS.items())]
)
def test_every_command_has_its_spec_name_and_length(cid, uplink):
    name, length, fields = COMMANDS[(cid, uplink)]
    assert mac_command_name(cid, uplink) == name
    zeros = {k: (False if v is b else 0) for k, v in fields.items()}
    assert len(encode_mac_command(cid, uplink, **zeros)) == 1 + length


@pytest.mark.parametrize("uplink", [True, False], ids=["uplink", "downlink"])
@given(data=st.data())
def test_command_sequences_round_trip(uplink, data):
    cmds = data.draw(st.lists(commands(uplink), max_size=8))
    encoded = b"".join(encode_mac_command(cid, uplink, **fields) for cid, fields in cmds)
    assert parse_mac_commands(encoded, uplink) == cmds


@pytest.mark.parametrize("uplink", [True, False], ids=["uplink", "downlink"])
@given(data=st.binary(max_size=30))
def test_parse_of_arbitrary_bytes_returns_or_raises_mac_command_error_only(uplink, data):
    try:
        parsed = parse_mac_commands(data, uplink)
    except MACCommandError as err:
        parsed = err.parsed
    # whatever was read re-encodes (RFU bits cleared) and reads back the same
    again = b"".join(encode_mac_command(cid, uplink, **dict(f)) for cid, f in parsed)
    assert parse_mac_commands(again, uplink) == parsed


def test_truncated_command_is_reported_with_what_came_before():
    data = encode_mac_command(CID_DEV_STATUS, True, battery=200, margin=-3) + b"\x03"
    with pytest.raises(
        MACCommandError, match="LinkADRAns at byte 3 needs 1 payload bytes, only 0 left"
    ) as err:
        parse_mac_commands(data, uplink=True)
    assert err.value.parsed == [(CID_DEV_STATUS, {"battery": 200, "margin": -3})]


def test_unknown_cid_stops_parsing_and_keeps_the_commands_before_it():
    with pytest.raises(
        MACCommandError, match="unknown MAC command CID 0x0b in uplink at byte 1"
    ) as err:
        parse_mac_commands(b"\x02\x0b\x0f", uplink=True)
    assert err.value.parsed == [(CID_LINK_CHECK, {})]


@pytest.mark.parametrize("cid", [0x00, 0x01, 0x0B, 0x0C, 0x10, 0x80, 0xFF])
def test_cids_outside_lorawan_104_class_a_c_are_unknown(cid):
    assert mac_command_name(cid, True) is None and mac_command_name(cid, False) is None
    with pytest.raises(
        MACCommandError, match=f"unknown MAC command CID 0x{cid:02x} in downlink at byte 0"
    ):
        parse_mac_commands(bytes([cid, 0, 0, 0, 0, 0]), uplink=False)


def test_rfu_bits_are_ignored_when_parsing():
    assert parse_mac_commands(b"\x03\xf8", uplink=True) == [
        (CID_LINK_ADR, {"power_ack": False, "data_rate_ack": False, "channel_mask_ack": False})
    ]


@pytest.mark.parametrize(
    "cid,uplink,fields,message",
    [
        (
            CID_LINK_ADR,
            False,
            {"data_rate": 1, "tx_power": 2, "ch_mask": 7, "ch_mask_cntl": 0},
            "LinkADRReq needs field 'nb_trans'",
        ),
        (
            CID_DUTY_CYCLE,
            False,
            {"max_duty_cycle": 1, "extra": 2},
            "DutyCycleReq has no field 'extra'",
        ),
        (
            CID_LINK_ADR,
            False,
            {"data_rate": 16, "tx_power": 2, "ch_mask": 7, "ch_mask_cntl": 0, "nb_trans": 1},
            "LinkADRReq data_rate must be an integer 0..15, got 16",
        ),
        (
            CID_DEV_STATUS,
            True,
            {"battery": 1, "margin": 32},
            "DevStatusAns margin must be an integer -32..31, got 32",
        ),
        (
            CID_LINK_ADR,
            True,
            {"power_ack": 1, "data_rate_ack": True, "channel_mask_ack": True},
            "LinkADRAns power_ack must be True or False, got 1",
        ),
        (
            CID_NEW_CHANNEL,
            False,
            {"ch_index": 3, "frequency": 868100050, "max_dr": 5, "min_dr": 0},
            "NewChannelReq frequency must be a multiple of 100 Hz",
        ),
        (
            CID_DL_CHANNEL,
            False,
            {"ch_index": 3, "frequency": 1 << 31},
            "DlChannelReq frequency must be an integer",
        ),
        (0x0B, True, {}, "no MAC command with CID 11 in uplink"),
    ],
)
def test_encode_refuses_bad_fields_with_a_specific_message(cid, uplink, fields, message):
    with pytest.raises(ValueError, match=message):
        encode_mac_command(cid, uplink, **fields)


def test_link_adr_req_channel_mask_is_little_endian():
    cmd = encode_mac_command(
        CID_LINK_ADR, False, data_rate=5, tx_power=1, ch_mask=0x0007, ch_mask_cntl=0, nb_trans=1
    )
    assert cmd == bytes([0x03, 0x51, 0x07, 0x00, 0x01])
