"""protocol.lorawan reproduces the published vectors of RFC 4493 and the reference LoRaWAN stacks.

The vectors and their sources are in tests/vectors/lorawan_vectors.py.
"""

import os
import sys

import pytest

from protocol.lorawan import (
    FrameError,
    MICError,
    aes_cmac,
    build_data_frame,
    build_join_accept,
    build_join_request,
    check_join_accept_mic,
    check_join_request_mic,
    check_mic,
    crypt_frm_payload,
    data_mic,
    decrypt_join_accept,
    decrypt_payload,
    default_aes,
    derive_session_keys,
    encode_mac_command,
    frame_mtype,
    open_join_accept,
    parse_frame,
    parse_join_accept,
    parse_join_request,
    parse_mac_commands,
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "vectors"))
import lorawan_vectors as V

AES = default_aes()


def pure_aes(key):
    """The same AES without the factory's native CMAC: exercises cmac.py's own code."""
    return AES(key)


h = bytes.fromhex


@pytest.mark.parametrize("aes", [AES, pure_aes], ids=["native-cmac", "python-cmac"])
@pytest.mark.parametrize("length,tag", V.CMAC_TAGS, ids=[str(n) for n, _ in V.CMAC_TAGS])
def test_cmac_matches_rfc4493_examples(aes, length, tag):
    assert aes_cmac(aes, h(V.CMAC_KEY), h(V.CMAC_MESSAGE)[:length]).hex() == tag


def _ids(vectors):
    return [v["source"] for v in vectors]


@pytest.mark.parametrize("v", V.DATA_FRAMES, ids=_ids(V.DATA_FRAMES))
def test_published_data_frame_parses_checks_and_decrypts(v):
    frame = parse_frame(h(v["phy"]))
    assert frame.mtype == v["mtype"]
    assert frame.devaddr == v["devaddr"]
    assert frame.fctrl == v["fctrl"]
    assert frame.fcnt16 == v["fcnt32"] & 0xFFFF
    assert frame.fopts.hex() == v["fopts"]
    assert frame.fport == v["fport"]
    check_mic(AES, frame, h(v["nwkskey"]), v["fcnt32"])
    key = h(v["appskey"] if v["fport"] else v["nwkskey"])
    assert decrypt_payload(AES, frame, key, v["fcnt32"]).hex() == v["payload"]


@pytest.mark.parametrize("v", V.DATA_FRAMES, ids=_ids(V.DATA_FRAMES))
def test_published_data_frame_is_rebuilt_byte_for_byte(v):
    frame = parse_frame(h(v["phy"]))
    built = build_data_frame(
        AES,
        v["mtype"],
        v["devaddr"],
        v["fcnt32"],
        v["fport"],
        h(v["payload"]),
        h(v["nwkskey"]),
        h(v["appskey"]),
        fopts=h(v["fopts"]),
        adr=frame.adr,
        ack=frame.ack,
    )
    assert built.hex() == v["phy"]


@pytest.mark.parametrize("v", V.DATA_FRAMES, ids=_ids(V.DATA_FRAMES))
def test_published_data_frame_with_one_flipped_bit_fails_the_mic(v):
    phy = bytearray(h(v["phy"]))
    phy[5] ^= 0x80  # FCtrl.ADR: still parses, no longer authentic
    with pytest.raises(MICError):
        check_mic(AES, parse_frame(bytes(phy)), h(v["nwkskey"]), v["fcnt32"])


def test_published_data_frame_fails_the_mic_under_the_wrong_upper_fcnt():
    v = V.DATA_FRAMES[5]
    with pytest.raises(MICError):
        check_mic(AES, parse_frame(h(v["phy"])), h(v["nwkskey"]), v["fcnt32"] + 0x10000)


def test_brocaar_2016_confirmed_uplink_is_rebuilt():
    v = V.BROCAAR_CONFIRMED_UP_2016
    built = build_data_frame(
        AES, 4, 0x01020304, 0, 10, h("01020304"), h(v["nwkskey"]), h(v["appskey"])
    )
    assert built.hex() == v["phy"]


def test_lora_packet_issue_18_frame_exposes_its_fopts():
    phy, devaddr, fctrl, fopts, fport = V.PARSE_ONLY_FOPTS
    frame = parse_frame(h(phy))
    assert (frame.devaddr, frame.fctrl, frame.fopts.hex(), frame.fport) == (
        devaddr,
        fctrl,
        fopts,
        fport,
    )
    assert frame.adr and frame.ack and not frame.adr_ack_req


def test_ttn_payload_encryption_both_directions():
    v = V.TTN_ENCRYPTION
    for uplink, expected in ((True, v["uplink"]), (False, v["downlink"])):
        enc = crypt_frm_payload(AES, h(v["key"]), uplink, v["devaddr"], v["fcnt32"], h(v["plain"]))
        assert enc.hex() == expected
        dec = crypt_frm_payload(AES, h(v["key"]), uplink, v["devaddr"], v["fcnt32"], enc)
        assert dec.hex() == v["plain"]


def test_ttn_legacy_mic_both_directions():
    v = V.TTN_MIC
    for uplink, expected in ((True, v["uplink"]), (False, v["downlink"])):
        mic = data_mic(AES, h(v["key"]), uplink, v["devaddr"], v["fcnt32"], h(v["msg"]))
        assert mic.hex() == expected


@pytest.mark.parametrize("v", V.JOIN_REQUESTS, ids=_ids(V.JOIN_REQUESTS))
def test_published_join_request_parses_checks_and_is_rebuilt(v):
    request = parse_join_request(h(v["phy"]))
    assert request.join_eui.hex() == v["join_eui"]
    assert request.dev_eui.hex() == v["dev_eui"]
    assert request.dev_nonce == v["dev_nonce"]
    check_join_request_mic(AES, request, h(v["appkey"]))
    built = build_join_request(
        AES, h(v["appkey"]), h(v["join_eui"]), h(v["dev_eui"]), v["dev_nonce"]
    )
    assert built.hex() == v["phy"]


def test_published_join_request_fails_under_another_appkey():
    v = V.JOIN_REQUESTS[0]
    with pytest.raises(MICError):
        check_join_request_mic(AES, parse_join_request(h(v["phy"])), bytes(16))


@pytest.mark.parametrize("v", V.JOIN_ACCEPTS, ids=_ids(V.JOIN_ACCEPTS))
def test_published_join_accept_is_opened_by_the_device(v):
    accept = open_join_accept(AES, h(v["appkey"]), h(v["phy"]))
    assert accept.join_nonce == v["join_nonce"]
    assert accept.net_id == v["net_id"]
    assert accept.devaddr == v["devaddr"]
    assert accept.rx1_dr_offset == v["rx1_dr_offset"]
    assert accept.rx2_dr == v["rx2_dr"]
    assert accept.rx_delay == v["rx_delay"]
    assert accept.cflist is None
    if v["mic"]:
        assert accept.mic.hex() == v["mic"]
    if v["plain"]:
        assert decrypt_join_accept(AES, h(v["appkey"]), h(v["phy"])).hex() == v["plain"]


@pytest.mark.parametrize("v", V.JOIN_ACCEPTS, ids=_ids(V.JOIN_ACCEPTS))
def test_published_join_accept_is_built_by_the_network(v):
    built = build_join_accept(
        AES,
        h(v["appkey"]),
        v["join_nonce"],
        v["net_id"],
        v["devaddr"],
        rx1_dr_offset=v["rx1_dr_offset"],
        rx2_dr=v["rx2_dr"],
        rx_delay=v["rx_delay"],
    )
    assert built.hex() == v["phy"]


def test_lora_packet_plain_join_accept_mic():
    v = V.PLAIN_JOIN_ACCEPT
    accept = parse_join_accept(h(v["plain"]))
    assert (accept.join_nonce, accept.net_id, accept.devaddr) == (
        v["join_nonce"],
        v["net_id"],
        v["devaddr"],
    )
    check_join_accept_mic(AES, accept, h(v["appkey"]))


def test_join_accept_opened_with_the_wrong_appkey_fails_the_mic():
    v = V.JOIN_ACCEPTS[0]
    with pytest.raises(MICError):
        open_join_accept(AES, bytes(16), h(v["phy"]))


def test_lora_packet_frame_with_major_3_is_refused():
    with pytest.raises(FrameError, match="major version 3"):
        frame_mtype(h(V.BAD_MAJOR_FRAME))


@pytest.mark.parametrize("v", V.SESSION_KEYS, ids=_ids(V.SESSION_KEYS))
def test_published_session_keys_are_derived(v):
    nwkskey, appskey = derive_session_keys(
        AES, h(v["appkey"]), v["join_nonce"], v["net_id"], v["dev_nonce"]
    )
    assert nwkskey.hex() == v["nwkskey"]
    assert appskey.hex() == v["appskey"]


@pytest.mark.parametrize(
    "cid,uplink,fields,payload",
    V.MAC_COMMANDS,
    ids=["{:02x}-{}-{}".format(c, "up" if u else "down", p) for c, u, _, p in V.MAC_COMMANDS],
)
def test_published_mac_command_encodes_and_parses(cid, uplink, fields, payload):
    encoded = encode_mac_command(cid, uplink, **fields)
    assert encoded.hex() == f"{cid:02x}" + payload
    assert parse_mac_commands(encoded, uplink) == [(cid, fields)]


def test_brocaar_link_check_bytes_depend_on_direction():
    data = h(V.LINK_CHECK_BYTES)
    assert parse_mac_commands(data, uplink=False) == [(0x02, {"margin": 10, "gw_cnt": 15})]
    assert parse_mac_commands(data, uplink=True) == [
        (0x02, {}),
        (0x0A, {"uplink_frequency_exists": True, "channel_frequency_ok": True}),
    ]


def test_brocaar_dl_channel_frequency_must_be_a_multiple_of_100_hz():
    with pytest.raises(ValueError, match="multiple of 100 Hz"):
        encode_mac_command(0x0A, False, ch_index=0, frequency=V.BAD_DL_CHANNEL_FREQ)
