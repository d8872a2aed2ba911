"""protocol.lorawan on both interpreters: runs under CPython pytest and inside the MicroPython VM.

Plain functions and asserts only (no pytest, no hypothesis). The vectors below are a subset of
tests/vectors/lorawan_vectors.py, repeated here so the VM needs nothing but this file; each names
its source.
"""

import binascii

from protocol.lorawan import (
    CID_DEV_STATUS,
    CID_DEVICE_TIME,
    CID_DL_CHANNEL,
    CID_LINK_ADR,
    CID_LINK_CHECK,
    MTYPE_CONFIRMED_DOWN,
    MTYPE_UNCONFIRMED_UP,
    FrameError,
    MACCommandError,
    MICError,
    aes_cmac,
    build_data_frame,
    build_join_accept,
    build_join_request,
    check_join_request_mic,
    check_mic,
    decode_cflist_eu868,
    decrypt_payload,
    default_aes,
    derive_session_keys,
    encode_cflist_eu868,
    encode_mac_command,
    fcnt32_from16,
    open_join_accept,
    parse_devaddr,
    parse_eui,
    parse_frame,
    parse_join_request,
    parse_key,
    parse_mac_commands,
)

AES = default_aes()


def h(text):
    return binascii.unhexlify(text)


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception it raised, which must be an exc_type."""
    try:
        fn(*args, **kwargs)
    except exc_type as err:
        return err
    raise AssertionError(f"{fn} did not raise {exc_type.__name__}")


def test_cmac_rfc4493_examples_2_and_3():
    # RFC 4493 §4, Example 2 (16 bytes) and Example 3 (40 bytes)
    key = h("2b7e151628aed2a6abf7158809cf4f3c")
    msg = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411")
    assert aes_cmac(AES, key, msg[:16]) == h("070a16b46b4d4144f79bdd9dd04a287c")
    assert aes_cmac(AES, key, msg) == h("dfa66747de9ae63030ca32611497c827")


def test_brocaar_uplink_hello():
    # brocaar/lorawan phypayload_test.go TestPHYPayloadMACPayloadLoRaWAN10 "FRMPayload data"
    phy = h("400403020180010001a694642615d6c3b582")
    nwkskey, appskey = b"\x02" * 16, b"\x01" * 16
    frame = parse_frame(phy)
    assert frame.mtype == MTYPE_UNCONFIRMED_UP and frame.devaddr == 0x01020304
    assert frame.adr and frame.fcnt16 == 1 and frame.fport == 1
    check_mic(AES, frame, nwkskey, 1)
    assert decrypt_payload(AES, frame, appskey, 1) == b"hello"
    assert build_data_frame(AES, 2, 0x01020304, 1, 1, b"hello", nwkskey, appskey, adr=True) == phy


def test_brocaar_mac_commands_in_fopts():
    # brocaar/lorawan TestPHYPayloadMACPayloadLoRaWAN10 "Mac-commands in FOpts"
    frame = parse_frame(h("4004030201030000020305016a3798f5b64dc039"))
    check_mic(AES, frame, b"\x01" * 16, 0)
    assert parse_mac_commands(frame.fopts, uplink=True) == [
        (CID_LINK_CHECK, {}),
        (CID_LINK_ADR, {"power_ack": True, "data_rate_ack": False, "channel_mask_ack": True}),
    ]
    assert decrypt_payload(AES, frame, b"\x01" * 16, 0) == b"\x01\x02\x03\x04"


def test_lora_packet_downlink_ack():
    # anthonykirby/lora-packet __tests__/parse_test.ts "should parse ack", mic_test.ts
    frame = parse_frame(h("60f17dbe4920020001f9d65d27"))
    assert not frame.uplink and frame.ack and frame.devaddr == 0x49BE7DF1 and frame.fcnt16 == 2
    check_mic(AES, frame, h("44024241ed4ce9a68c6a8bc055233fd3"), 2)


def test_lora_packet_large_payload():
    # anthonykirby/lora-packet __tests__/decrypt_test.ts "should decrypt large payload"
    frame = parse_frame(
        h(
            "40f17dbe490004000155332de41a11adc072553544429ce7787707d1c316e027e7e5e334263376"
            "affb8aa17ad30075293f28dea8a20af3c5e7"
        )
    )
    check_mic(AES, frame, h("44024241ed4ce9a68c6a8bc055233fd3"), 4)
    plain = decrypt_payload(AES, frame, h("ec925802ae430ca77fd3dd73cb2cc588"), 4)
    assert plain == b"The quick brown fox jumps over the lazy dog."


def test_brocaar_join_request():
    # brocaar/lorawan phypayload_test.go TestPHYPayloadJoinRequest, AAQDAgEEAwIBBQQDAgUEAwItEGqZDhI=
    phy = h("00040302010403020105040302050403022d106a990e12")
    request = parse_join_request(phy)
    assert request.join_eui == h("0102030401020304")
    assert request.dev_eui == h("0203040502030405")
    assert request.dev_nonce == 4141
    check_join_request_mic(AES, request, b"\x01" * 16)
    assert build_join_request(AES, b"\x01" * 16, request.join_eui, request.dev_eui, 4141) == phy


def test_brocaar_join_accept():
    # brocaar/lorawan phypayload_test.go TestPHYPayloadJoinAccept
    appkey = h("00112233445566778899aabbccddeeff")
    phy = h("20493eeb51fba2116f810edb3742975142")
    accept = open_join_accept(AES, appkey, phy)
    assert (accept.join_nonce, accept.net_id, accept.devaddr) == (5704647, 0x221101, 0x02031980)
    assert accept.mic == bytes([67, 72, 91, 188])
    assert build_join_accept(AES, appkey, 5704647, 0x221101, 0x02031980, rx_delay=0) == phy


def test_ttn_join_accept_encryption():
    # TheThingsNetwork/lorawan-stack pkg/crypto/join_messages_test.go TestJoinAcceptEncryption
    phy = build_join_accept(AES, b"\x01" * 16, 0x010203, 0x010203, 0x01020304, rx_delay=1)
    assert phy == h("20c9fbb259e11649096a568a9e3b7117c3")
    assert open_join_accept(AES, b"\x01" * 16, phy).mic == h("32f54ab3")


def test_lora_packet_session_keys():
    # anthonykirby/lora-packet __tests__/key_gen_test.ts "should generate valid session keys"
    nwkskey, appskey = derive_session_keys(
        AES, h("98929b92c49edba9676d646d3b612456"), 0x376338, 0xAABBCC, 0xF18E
    )
    assert nwkskey == h("4e3d6e6afbcc67af2ba3c8e8ec4acf4b")
    assert appskey == h("610897aa6f1460623443b527d3ac6a9d")


def test_brocaar_mac_command_payloads():
    # brocaar/lorawan mac_commands_test.go (TestLinkADRReqPayload, TestDevStatusAnsPayload,
    # TestDLChannelReqPayload, TestMACPayloads DeviceTimeAnsPayload)
    cases = (
        (
            CID_LINK_ADR,
            False,
            {"data_rate": 1, "tx_power": 2, "ch_mask": 4, "ch_mask_cntl": 4, "nb_trans": 5},
            "0312040045",
        ),
        (CID_DEV_STATUS, True, {"battery": 0, "margin": -30}, "060022"),
        (CID_DL_CHANNEL, False, {"ch_index": 1, "frequency": 868200000}, "0a01107a84"),
        (CID_DEVICE_TIME, False, {"seconds": 1, "fraction": 2}, "0d0100000002"),
    )
    for cid, uplink, fields, encoded in cases:
        assert encode_mac_command(cid, uplink, **fields) == h(encoded)
        assert parse_mac_commands(h(encoded), uplink) == [(cid, fields)]


def test_data_frame_round_trip_both_directions():
    nwkskey, appskey = bytes(range(16)), bytes(range(16, 32))
    for mtype in (2, 3, 4, 5):
        for fport, payload in ((None, b""), (0, b"\x02"), (1, b""), (40, bytes(range(50)))):
            fopts = b"" if fport == 0 else b"\x06\xfe\x1f"
            phy = build_data_frame(
                AES, mtype, 0x26011BDA, 0x2A0005, fport, payload, nwkskey, appskey, fopts=fopts
            )
            frame = parse_frame(phy)
            assert (frame.mtype, frame.fport, frame.fopts) == (mtype, fport, fopts)
            fcnt32 = fcnt32_from16(0x2A0000, frame.fcnt16)
            assert fcnt32 == 0x2A0005
            check_mic(AES, frame, nwkskey, fcnt32)
            key = appskey if fport else nwkskey
            assert decrypt_payload(AES, frame, key, fcnt32) == payload


def test_wrong_key_or_counter_is_a_mic_error():
    nwkskey, appskey = bytes(range(16)), bytes(range(16, 32))
    frame = parse_frame(
        build_data_frame(AES, MTYPE_CONFIRMED_DOWN, 1, 0x10001, 1, b"x", nwkskey, appskey)
    )
    err = raises(MICError, check_mic, AES, frame, appskey, 0x10001)
    assert "MIC mismatch" in str(err)
    raises(MICError, check_mic, AES, frame, nwkskey, 0x00001)
    assert isinstance(err, FrameError) and isinstance(err, ValueError)


def test_join_round_trip_with_eu868_cflist():
    appkey = parse_key("2b7e151628aed2a6abf7158809cf4f3c", "AppKey")
    freqs = [867100000, 867300000, 867500000, 867700000, 867900000]
    phy = build_join_accept(
        AES, appkey, 7, 0x000013, 0x26011BDA, 1, 3, 5, encode_cflist_eu868(freqs)
    )
    accept = open_join_accept(AES, appkey, phy)
    assert (accept.rx1_dr_offset, accept.rx2_dr, accept.rx1_delay_s) == (1, 3, 5)
    assert decode_cflist_eu868(accept.cflist) == freqs
    raises(MICError, open_join_accept, AES, bytes(16), phy)


def test_garbage_never_raises_anything_but_frame_error():
    seed = 12345
    buf = bytearray(40)
    for _ in range(300):
        for i in range(40):  # a small LCG: deterministic on both interpreters
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            buf[i] = seed >> 16 & 0xFF
        n = seed % 41
        data = bytes(buf[:n])
        for parse in (parse_frame, parse_join_request):
            try:
                parse(data)
            except FrameError:
                pass
        try:
            parse_mac_commands(data, uplink=n & 1 == 0)
        except MACCommandError:
            pass


def test_frame_errors_are_specific():
    assert "too short" in str(raises(FrameError, parse_frame, b"\x40\x00"))
    assert "major version" in str(raises(FrameError, parse_frame, b"\x41" + bytes(11)))
    assert "not a data frame" in str(raises(FrameError, parse_frame, bytes(23)))
    assert "runs past the end" in str(
        raises(FrameError, parse_frame, b"\x40\x00\x00\x00\x00\x0f" + bytes(8))
    )
    err = raises(MACCommandError, parse_mac_commands, b"\x02\x0b", True)
    assert err.parsed == [(CID_LINK_CHECK, {})]


def test_identifiers_parse_from_label_text():
    assert parse_eui("70-B3-D5-7E-D0-00-00-01") == h("70b3d57ed0000001")
    assert parse_devaddr("26011BDA") == 0x26011BDA
    err = raises(ValueError, parse_key, "00112233", "AppKey")
    assert "00112233" not in str(err)


def test_fcnt_reconstruction_across_the_16_bit_wrap():
    assert fcnt32_from16(0xFFFE, 0x0001) == 0x10001
    assert fcnt32_from16(0x10001, 0x0001) == 0x10001  # retransmission
    assert fcnt32_from16(0x10001, 0x0000) == 0x10000  # behind: the caller drops it as a replay
    raises(FrameError, fcnt32_from16, 3, 40000)
