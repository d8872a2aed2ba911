"""Data frames of protocol.lorawan: round trips, garbage, specific errors, FCnt reconstruction."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol.lorawan import (
    MTYPE_CONFIRMED_DOWN,
    MTYPE_CONFIRMED_UP,
    MTYPE_UNCONFIRMED_DOWN,
    MTYPE_UNCONFIRMED_UP,
    FrameError,
    MICError,
    build_data_frame,
    build_join_request,
    check_mic,
    decrypt_payload,
    default_aes,
    fcnt32_from16,
    frame_mtype,
    parse_frame,
)

AES = default_aes()
KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))

keys = st.binary(min_size=16, max_size=16)
u32 = st.integers(0, 0xFFFFFFFF)
data_mtypes = st.sampled_from(
    [MTYPE_UNCONFIRMED_UP, MTYPE_UNCONFIRMED_DOWN, MTYPE_CONFIRMED_UP, MTYPE_CONFIRMED_DOWN]
)


@st.composite
def frame_specs(draw):
    """Everything build_data_frame needs for one valid data frame."""
    mtype = draw(data_mtypes)
    uplink = mtype in (MTYPE_UNCONFIRMED_UP, MTYPE_CONFIRMED_UP)
    fport = draw(st.none() | st.integers(0, 255))
    fopts = b"" if fport == 0 else draw(st.binary(max_size=15))
    payload = b"" if fport is None else draw(st.binary(max_size=242 - len(fopts)))
    return {
        "mtype": mtype,
        "devaddr": draw(u32),
        "fcnt32": draw(u32),
        "fport": fport,
        "payload": payload,
        "nwkskey": draw(keys),
        "appskey": draw(keys),
        "fopts": fopts,
        "adr": draw(st.booleans()),
        "ack": draw(st.booleans()),
        "adr_ack_req": uplink and draw(st.booleans()),
        "class_b": uplink and draw(st.booleans()),
        "fpending": not uplink and draw(st.booleans()),
    }


def build(spec):
    return build_data_frame(AES, **spec)


@given(frame_specs())
def test_built_frame_parses_back_to_its_fields(spec):
    frame = parse_frame(build(spec))
    assert frame.mtype == spec["mtype"]
    assert frame.devaddr == spec["devaddr"]
    assert frame.fcnt16 == spec["fcnt32"] & 0xFFFF
    assert frame.fport == spec["fport"]
    assert frame.fopts == spec["fopts"]
    assert len(frame.frm_payload) == len(spec["payload"])
    assert (frame.adr, frame.ack) == (spec["adr"], spec["ack"])
    assert (frame.adr_ack_req, frame.class_b, frame.fpending) == (
        spec["adr_ack_req"],
        spec["class_b"],
        spec["fpending"],
    )


@given(frame_specs())
def test_built_frame_passes_its_mic_and_decrypts_to_its_payload(spec):
    frame = parse_frame(build(spec))
    assert check_mic(AES, frame, spec["nwkskey"], spec["fcnt32"]) is True
    key = spec["appskey"] if spec["fport"] else spec["nwkskey"]
    assert decrypt_payload(AES, frame, key, spec["fcnt32"]) == spec["payload"]


@given(frame_specs(), keys)
def test_mic_fails_under_another_nwkskey(spec, other):
    assume(other != spec["nwkskey"])
    with pytest.raises(MICError, match="MIC mismatch for DevAddr"):
        check_mic(AES, parse_frame(build(spec)), other, spec["fcnt32"])


@given(frame_specs(), st.integers(1, 0xFFFF))
def test_mic_binds_the_upper_16_bits_of_the_frame_counter(spec, upper_delta):
    wrong = (spec["fcnt32"] + (upper_delta << 16)) & 0xFFFFFFFF
    with pytest.raises(MICError):
        check_mic(AES, parse_frame(build(spec)), spec["nwkskey"], wrong)


@given(frame_specs(), st.data())
def test_any_flipped_bit_is_caught_by_parse_or_mic(spec, data):
    phy = bytearray(build(spec))
    bit = data.draw(st.integers(0, 8 * len(phy) - 1))
    phy[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FrameError):  # MICError is a FrameError
        frame = parse_frame(bytes(phy))
        # a receiver takes the low 16 bits from the frame, as it must
        fcnt32 = (spec["fcnt32"] & 0xFFFF0000) | frame.fcnt16
        check_mic(AES, frame, spec["nwkskey"], fcnt32)


@given(st.binary(max_size=300))
def test_parse_of_arbitrary_bytes_returns_or_raises_frame_error_only(data):
    try:
        frame = parse_frame(data)
    except FrameError:
        return
    assert 12 <= len(data) <= 255
    assert len(frame.fopts) == frame.fctrl & 0x0F
    assert frame.fport is not None or frame.frm_payload == b""
    assert len(frame.mic) == 4


@given(data_mtypes, st.binary(min_size=11, max_size=254))
def test_parse_of_arbitrary_data_frame_bodies_accounts_for_every_byte(mtype, body):
    phy = bytes([mtype << 5]) + body
    try:
        frame = parse_frame(phy)
    except FrameError:
        return
    port_len = 0 if frame.fport is None else 1
    assert 8 + len(frame.fopts) + port_len + len(frame.frm_payload) + 4 == len(phy)
    assert phy.endswith(frame.mic)


def test_parse_refuses_a_frame_too_short_for_fhdr_and_mic():
    with pytest.raises(FrameError, match="too short: 11 bytes"):
        parse_frame(bytes([0x40]) + bytes(10))


def test_parse_refuses_a_frame_longer_than_lora_allows():
    with pytest.raises(FrameError, match="too long: 256 bytes"):
        parse_frame(bytes([0x40]) + bytes(255))


def test_parse_refuses_a_major_version_other_than_r1():
    with pytest.raises(FrameError, match="major version 1"):
        parse_frame(bytes([0x41]) + bytes(11))


@pytest.mark.parametrize(
    "mhdr,name",
    [(0x00, "Join-request"), (0x20, "Join-accept"), (0xC0, "RFU"), (0xE0, "Proprietary")],
)
def test_parse_refuses_frames_that_are_not_data_frames(mhdr, name):
    with pytest.raises(FrameError, match="is not a data frame") as err:
        parse_frame(bytes([mhdr]) + bytes(22))
    assert name in str(err.value)


def test_parse_refuses_fopts_len_running_into_the_mic():
    phy = (
        bytes([0x40, 1, 2, 3, 4, 0x05, 0, 0]) + bytes(4) + bytes(4)
    )  # 4 FOpts bytes present, 5 claimed
    with pytest.raises(FrameError, match="FOptsLen 5 runs past the end of a 16-byte frame"):
        parse_frame(phy)


def test_parse_refuses_mac_commands_in_fopts_with_fport_0():
    phy = bytes([0x40, 1, 2, 3, 4, 0x01, 0, 0, 0x02, 0x00, 0xAA]) + bytes(4)
    with pytest.raises(FrameError, match="FOpts and FPort 0"):
        parse_frame(phy)


def test_frame_without_fport_has_no_payload():
    frame = parse_frame(
        build_data_frame(AES, MTYPE_UNCONFIRMED_DOWN, 1, 7, None, b"", KEY_A, ack=True)
    )
    assert frame.fport is None and frame.frm_payload == b"" and frame.ack
    assert decrypt_payload(AES, frame, KEY_A, 7) == b""


def test_fport_0_payload_is_encrypted_with_the_nwkskey():
    phy = build_data_frame(AES, MTYPE_UNCONFIRMED_UP, 1, 0, 0, b"\x02", KEY_A, appskey=None)
    frame = parse_frame(phy)
    assert decrypt_payload(AES, frame, KEY_A, 0) == b"\x02"
    assert decrypt_payload(AES, frame, KEY_B, 0) != b"\x02"


def test_check_mic_refuses_an_fcnt32_that_does_not_match_the_frame():
    frame = parse_frame(build_data_frame(AES, MTYPE_UNCONFIRMED_UP, 1, 5, 1, b"x", KEY_A, KEY_B))
    with pytest.raises(ValueError, match="does not end in the frame's 16-bit FCnt 5") as err:
        check_mic(AES, frame, KEY_A, 6)
    assert not isinstance(err.value, MICError)


def test_frame_repr_names_type_address_and_counter():
    frame = parse_frame(
        build_data_frame(AES, MTYPE_CONFIRMED_UP, 0x26011BDA, 0x10005, 10, b"abc", KEY_A, KEY_B)
    )
    assert (
        repr(frame)
        == "<DataFrame Confirmed Data Up DevAddr 26011bda FCnt 5 FPort 10, 3 payload bytes>"
    )


def test_frame_mtype_reads_join_requests_too():
    assert frame_mtype(build_join_request(AES, KEY_A, bytes(8), bytes(8), 1)) == 0
    with pytest.raises(FrameError, match="empty frame"):
        frame_mtype(b"")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"mtype": 0}, "mtype must be a data frame type"),
        ({"mtype": True}, "mtype must be a data frame type"),
        ({"devaddr": 1 << 32}, "devaddr must be an integer"),
        ({"fcnt32": -1}, "fcnt32 must be an integer"),
        ({"fport": 256}, "fport must be an integer"),
        ({"fport": None}, "a payload needs an FPort"),
        ({"fopts": bytes(16)}, "FOpts holds at most 15 bytes"),
        ({"fport": 0, "fopts": b"\x02"}, "cannot go with FPort 0"),
        ({"fpending": True}, "fpending is a downlink flag"),
        ({"mtype": MTYPE_UNCONFIRMED_DOWN, "class_b": True}, "uplink flags"),
        ({"mtype": MTYPE_CONFIRMED_DOWN, "adr_ack_req": True}, "uplink flags"),
        ({"payload": bytes(243)}, "longer than a LoRa frame"),
        ({"nwkskey": bytes(15)}, "NwkSKey must be 16 bytes, got 15"),
        ({"appskey": None}, "AppSKey must be 16 bytes"),
    ],
)
def test_build_refuses_invalid_arguments_with_a_specific_message(kwargs, message):
    args = {
        "mtype": MTYPE_UNCONFIRMED_UP,
        "devaddr": 1,
        "fcnt32": 1,
        "fport": 1,
        "payload": b"data",
        "nwkskey": KEY_A,
        "appskey": KEY_B,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_data_frame(AES, **args)


def test_build_accepts_the_longest_frame_lora_allows():
    assert (
        len(build_data_frame(AES, MTYPE_UNCONFIRMED_UP, 1, 1, 1, bytes(242), KEY_A, KEY_B)) == 255
    )


# --- FCnt reconstruction -------------------------------------------------------------------


@given(st.integers(0, 0xFFFFFFFF - 16384), st.integers(0, 16384))
def test_fcnt_up_to_max_gap_ahead_is_reconstructed(last, delta):
    assert fcnt32_from16(last, (last + delta) & 0xFFFF) == last + delta


@given(st.integers(0, 0xFFFFFFFF), st.integers(1, 0xFFFF - 16384))
def test_fcnt_behind_the_last_counter_is_reconstructed_below_it(last, back):
    assume(last >= back)
    assert fcnt32_from16(last, (last - back) & 0xFFFF) == last - back


@given(st.integers(-1, 0xFFFFFFFF - 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_fcnt_result_always_has_the_received_low_bits(last, fcnt16, max_gap):
    try:
        full = fcnt32_from16(last, fcnt16, max_gap)
    except FrameError:
        return
    assert full & 0xFFFF == fcnt16
    assert last - 0x10000 < full <= last + max_gap


def test_fcnt_retransmission_gives_the_same_counter():
    assert fcnt32_from16(0x1FFFF, 0xFFFF) == 0x1FFFF


def test_fcnt_rolls_over_the_16_bit_boundary():
    assert fcnt32_from16(0xFFFE, 0x0001) == 0x10001


def test_fcnt_first_frame_of_a_session_counts_from_zero():
    assert fcnt32_from16(-1, 0) == 0
    assert fcnt32_from16(-1, 42) == 42
    with pytest.raises(
        FrameError, match="FCnt 65535 is more than max_gap 16384 ahead of the last counter -1"
    ):
        fcnt32_from16(-1, 0xFFFF)


def test_fcnt_jump_beyond_max_gap_with_nothing_behind_is_an_error():
    with pytest.raises(
        FrameError, match="FCnt 60000 is more than max_gap 16384 ahead of the last counter 5"
    ):
        fcnt32_from16(5, 60000)


def test_fcnt_exhausted_32_bit_counter_is_an_error():
    with pytest.raises(FrameError, match="must rejoin"):
        fcnt32_from16(0xFFFFFFFF, 0x0000)


def test_fcnt_arguments_are_checked():
    with pytest.raises(ValueError, match="fcnt16 must be an integer 0..65535"):
        fcnt32_from16(0, 0x10000)
    with pytest.raises(ValueError, match="last_fcnt32 must be an integer -1..4294967295, got None"):
        fcnt32_from16(None, 0)
