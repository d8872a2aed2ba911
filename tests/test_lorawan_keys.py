"""Identifiers, keys, the AES factory and AES-CMAC of protocol.lorawan."""

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given
from hypothesis import strategies as st

from protocol.lorawan import (
    aes_cmac,
    check_key,
    default_aes,
    format_devaddr,
    format_eui,
    format_key,
    parse_devaddr,
    parse_eui,
    parse_key,
)

AES = default_aes()


def pure_aes(key):
    return AES(key)


@given(st.binary(min_size=8, max_size=8))
def test_eui_text_round_trip(eui):
    text = format_eui(eui)
    assert text == eui.hex()
    assert parse_eui(text) == eui
    assert parse_eui(text.upper()) == eui


def test_eui_accepts_the_separators_labels_use():
    expected = bytes.fromhex("70b3d57ed0000001")
    for text in (
        "70B3D57ED0000001",
        "70-B3-D5-7E-D0-00-00-01",
        "70:b3:d5:7e:d0:00:00:01",
        " 70b3 d57e d000 0001 ",
    ):
        assert parse_eui(text, "DevEUI") == expected


def test_eui_errors_name_the_field_and_show_the_text():
    with pytest.raises(
        ValueError, match=r"DevEUI must be 16 hex digits \(8 bytes\), got 15: '70B3D57ED000000'"
    ):
        parse_eui("70B3D57ED000000", "DevEUI")
    with pytest.raises(ValueError, match="JoinEUI must contain only hex digits"):
        parse_eui("70B3D57ED000000G", "JoinEUI")
    with pytest.raises(ValueError, match="DevEUI must be given as hex text, got bytes"):
        parse_eui(b"\x00" * 8, "DevEUI")


@given(st.integers(0, 0xFFFFFFFF))
def test_devaddr_text_round_trip(devaddr):
    assert parse_devaddr(format_devaddr(devaddr)) == devaddr


def test_devaddr_is_read_most_significant_first():
    assert parse_devaddr("26011BDA") == 0x26011BDA
    assert format_devaddr(0x0001) == "00000001"
    with pytest.raises(ValueError, match="DevAddr must be an integer"):
        format_devaddr(1 << 32)


@given(st.binary(min_size=16, max_size=16))
def test_key_text_round_trip(key):
    assert parse_key(format_key(key)) == key


@pytest.mark.parametrize(
    "text,message",
    [
        ("2b7e151628aed2a6abf7158809cf4f3", "AppKey must be 32 hex digits (16 bytes), got 31"),
        ("2b7e151628aed2a6abf7158809cf4f3z", "AppKey must contain only hex digits 0-9 a-f"),
        ("+b7e151628aed2a6abf7158809cf4f3c", "AppKey must contain only hex digits 0-9 a-f"),
        ("2b7e_51628aed2a6abf7158809cf4f3c", "AppKey must contain only hex digits 0-9 a-f"),
    ],
)
def test_key_errors_never_show_the_key(text, message):
    with pytest.raises(ValueError) as err:
        parse_key(text, "AppKey")
    assert str(err.value) == message
    assert text[4:12] not in str(err.value)


def test_check_key_names_the_key():
    with pytest.raises(ValueError, match="NwkSKey must be 16 bytes, got 17"):
        check_key(bytes(17), "NwkSKey")
    with pytest.raises(ValueError, match="AppSKey must be 16 bytes, got NoneType"):
        check_key(None, "AppSKey")


# --- AES factory and CMAC ------------------------------------------------------------------


def test_default_aes_is_made_once():
    assert default_aes() is AES


@given(
    st.binary(min_size=16, max_size=16),
    st.integers(1, 8).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
)
def test_aes_cipher_is_ecb_over_16_byte_blocks(key, data):
    enc = AES(key).encrypt(data)
    assert len(enc) == len(data)
    assert enc[:16] == AES(key).encrypt(data[:16])  # ECB: each block on its own
    assert AES(key).decrypt(enc) == data


def test_aes_cipher_refuses_partial_blocks_and_wrong_key_sizes():
    with pytest.raises(ValueError, match="multiple of 16 bytes, got 15"):
        AES(bytes(16)).encrypt(bytes(15))
    with pytest.raises(ValueError, match="multiple of 16 bytes, got 17"):
        AES(bytes(16)).decrypt(bytes(17))
    with pytest.raises(ValueError, match="AES-128 key must be 16 bytes, got 32"):
        AES(bytes(32))


@pytest.mark.parametrize("aes", [AES, pure_aes], ids=["native-cmac", "python-cmac"])
@given(key=st.binary(min_size=16, max_size=16), msg=st.binary(max_size=100))
def test_cmac_matches_an_independent_implementation(aes, key, msg):
    mac = CMAC(algorithms.AES(key))
    mac.update(msg)
    assert aes_cmac(aes, key, msg) == mac.finalize()
