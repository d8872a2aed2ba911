"""Over-the-air activation in protocol.lorawan: Join-request, Join-accept, session keys, CFList."""

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given
from hypothesis import strategies as st

from protocol.lorawan import (
    FrameError,
    MICError,
    build_join_accept,
    build_join_request,
    check_join_request_mic,
    decode_cflist_eu868,
    decrypt_join_accept,
    default_aes,
    derive_session_keys,
    encode_cflist_eu868,
    open_join_accept,
    parse_join_accept,
    parse_join_request,
)

AES = default_aes()
KEY = bytes(range(16))

keys = st.binary(min_size=16, max_size=16)
euis = st.binary(min_size=8, max_size=8)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
eu868_freqs = st.lists(st.integers(0, 0xFFFFFF).map(lambda f: f * 100), max_size=5)


@given(keys, euis, euis, u16)
def test_join_request_round_trip(appkey, join_eui, dev_eui, dev_nonce):
    phy = build_join_request(AES, appkey, join_eui, dev_eui, dev_nonce)
    assert len(phy) == 23 and phy[0] == 0x00
    assert phy[1:9] == join_eui[::-1]  # EUIs travel least significant byte first
    request = parse_join_request(phy)
    assert (request.join_eui, request.dev_eui, request.dev_nonce) == (join_eui, dev_eui, dev_nonce)
    check_join_request_mic(AES, request, appkey)


@given(keys, keys, euis, u16)
def test_join_request_mic_fails_under_another_appkey(appkey, other, eui, dev_nonce):
    assume(appkey != other)
    request = parse_join_request(build_join_request(AES, appkey, eui, eui, dev_nonce))
    with pytest.raises(MICError, match="Join-request MIC mismatch"):
        check_join_request_mic(AES, request, other)


@given(
    keys,
    u24,
    u24,
    u32,
    st.integers(0, 7),
    st.integers(0, 15),
    st.integers(0, 15),
    st.none() | eu868_freqs,
)
def test_join_accept_built_by_the_network_is_opened_by_the_device(
    appkey, join_nonce, net_id, devaddr, rx1_dr_offset, rx2_dr, rx_delay, freqs
):
    cflist = None if freqs is None else encode_cflist_eu868(freqs)
    phy = build_join_accept(
        AES, appkey, join_nonce, net_id, devaddr, rx1_dr_offset, rx2_dr, rx_delay, cflist
    )
    assert len(phy) == (17 if cflist is None else 33)
    accept = open_join_accept(AES, appkey, phy)
    assert (accept.join_nonce, accept.net_id, accept.devaddr) == (join_nonce, net_id, devaddr)
    assert (accept.rx1_dr_offset, accept.rx2_dr, accept.rx_delay) == (
        rx1_dr_offset,
        rx2_dr,
        rx_delay,
    )
    assert accept.rx1_delay_s == max(rx_delay, 1)
    assert accept.cflist == cflist
    if freqs is not None:
        assert decode_cflist_eu868(accept.cflist) == freqs + [0] * (5 - len(freqs))


@given(keys, keys)
def test_join_accept_opened_with_another_appkey_fails_the_mic(appkey, other):
    assume(appkey != other)
    phy = build_join_accept(AES, appkey, 1, 2, 3)
    with pytest.raises(MICError, match="Join-accept MIC mismatch"):
        open_join_accept(AES, other, phy)


@given(keys, u24, u24, u16)
def test_session_keys_match_the_spec_formula(appkey, join_nonce, net_id, dev_nonce):
    """NwkSKey/AppSKey = aes128_encrypt(AppKey, 0x01/0x02 | AppNonce | NetID | DevNonce | pad16)."""
    fields = (
        join_nonce.to_bytes(3, "little")
        + net_id.to_bytes(3, "little")
        + dev_nonce.to_bytes(2, "little")
    )
    enc = Cipher(algorithms.AES(appkey), modes.ECB()).encryptor()
    expected_nwk = enc.update(b"\x01" + fields + bytes(7))
    expected_app = enc.update(b"\x02" + fields + bytes(7))
    assert derive_session_keys(AES, appkey, join_nonce, net_id, dev_nonce) == (
        expected_nwk,
        expected_app,
    )


@given(st.binary(max_size=40))
def test_join_parsers_on_arbitrary_bytes_return_or_raise_frame_error_only(data):
    for parse in (
        parse_join_request,
        parse_join_accept,
        lambda d: decrypt_join_accept(AES, KEY, d),
    ):
        try:
            parse(data)
        except FrameError:
            pass


@given(st.binary(min_size=16, max_size=16) | st.binary(min_size=32, max_size=32))
def test_open_join_accept_on_random_ciphertext_raises_frame_error_only(body):
    with pytest.raises(FrameError):  # practically always a MIC mismatch
        open_join_accept(AES, KEY, b"\x20" + body)


@pytest.mark.parametrize("length", [0, 22, 24])
def test_join_request_of_the_wrong_length_is_refused(length):
    with pytest.raises(FrameError, match=f"a Join-request is 23 bytes, got {length}"):
        parse_join_request(bytes(length))


def test_join_request_parser_refuses_other_frame_types():
    with pytest.raises(
        FrameError, match=r"expected a Join-request, got MType 2 \(Unconfirmed Data Up\)"
    ):
        parse_join_request(b"\x40" + bytes(22))


@pytest.mark.parametrize("length", [16, 18, 32, 34])
def test_join_accept_of_the_wrong_length_is_refused(length):
    with pytest.raises(FrameError, match=f"a Join-accept is 17 or 33 bytes, got {length}"):
        decrypt_join_accept(AES, KEY, b"\x20" + bytes(length - 1))


def test_join_accept_decryption_refuses_a_join_request():
    with pytest.raises(FrameError, match="expected a Join-accept"):
        decrypt_join_accept(AES, KEY, bytes(17))


def test_join_accept_is_encrypted_with_aes_decrypt():
    """§6.2.5: the network uses AES decrypt so that the device only needs AES encrypt."""
    phy = build_join_accept(AES, KEY, 1, 2, 3)
    plain = AES(KEY).encrypt(phy[1:])
    assert plain[:3] == b"\x01\x00\x00"
    assert decrypt_join_accept(AES, KEY, phy) == phy[:1] + plain


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"join_nonce": 1 << 24}, "join_nonce must be an integer 0..16777215"),
        ({"net_id": -1}, "net_id must be an integer"),
        ({"devaddr": 1 << 32}, "devaddr must be an integer"),
        ({"rx1_dr_offset": 8}, "rx1_dr_offset must be an integer 0..7"),
        ({"rx2_dr": 16}, "rx2_dr must be an integer 0..15"),
        ({"rx_delay": 16}, "rx_delay must be an integer 0..15"),
        ({"cflist": bytes(15)}, "CFList must be 16 bytes, got 15"),
        ({"appkey": bytes(8)}, "AppKey must be 16 bytes, got 8"),
    ],
)
def test_build_join_accept_refuses_invalid_arguments(kwargs, message):
    args = {"appkey": KEY, "join_nonce": 1, "net_id": 2, "devaddr": 3}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_join_accept(AES, **args)


def test_build_join_request_refuses_invalid_arguments():
    with pytest.raises(ValueError, match="JoinEUI must be 8 bytes, got 7"):
        build_join_request(AES, KEY, bytes(7), bytes(8), 1)
    with pytest.raises(ValueError, match="dev_nonce must be an integer 0..65535"):
        build_join_request(AES, KEY, bytes(8), bytes(8), 0x10000)


def test_eu868_cflist_layout():
    cflist = encode_cflist_eu868([867100000, 867300000, 867500000, 867700000, 867900000])
    assert cflist.hex() == "18 4f 84 e8 56 84 b8 5e 84 88 66 84 58 6e 84 00".replace(" ", "")
    assert decode_cflist_eu868(cflist) == [867100000, 867300000, 867500000, 867700000, 867900000]


def test_eu868_cflist_errors():
    with pytest.raises(ValueError, match="at most 5 frequencies, got 6"):
        encode_cflist_eu868([867100000] * 6)
    with pytest.raises(ValueError, match="CFList frequency 1 must be a multiple of 100 Hz"):
        encode_cflist_eu868([867100000, 867100050])
    with pytest.raises(FrameError, match="CFListType 1 is not a frequency list"):
        decode_cflist_eu868(bytes(15) + b"\x01")
    with pytest.raises(FrameError, match="a CFList is 16 bytes, got 15"):
        decode_cflist_eu868(bytes(15))
