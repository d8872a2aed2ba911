"""Node identities: DevEUI derivation and ranges, key and DevAddr generation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning.identity import (
    EuiRange,
    IdentityError,
    dev_eui_from_unique_id,
    new_dev_addr,
    new_key,
    normalise_eui,
)


def test_a_mac_becomes_an_eui64_with_fffe_after_the_oui() -> None:
    assert dev_eui_from_unique_id(bytes.fromhex("240ac4123456")) == "240ac4fffe123456"


def test_an_eight_byte_unique_id_is_the_eui_itself() -> None:
    assert dev_eui_from_unique_id(bytes.fromhex("e6614103e7452d2f")) == "e6614103e7452d2f"


@pytest.mark.parametrize("n", [0, 4, 7, 16])
def test_other_lengths_are_refused(n: int) -> None:
    with pytest.raises(IdentityError, match=f"{n} bytes"):
        dev_eui_from_unique_id(bytes(n))


def test_normalise_accepts_separators_and_case() -> None:
    assert normalise_eui("70:B3:D5:7E:D0:00:00:01") == "70b3d57ed0000001"
    with pytest.raises(IdentityError):
        normalise_eui("70b3d57ed00000")


def test_ranges_allocate_the_lowest_free_eui_and_report_exhaustion() -> None:
    r = EuiRange.parse("70b3d57ed0000000/2")
    taken = {"70b3d57ed0000000", "70b3d57ed0000002"}
    assert r.allocate(taken) == "70b3d57ed0000001"
    taken |= {"70b3d57ed0000001", "70b3d57ed0000003"}
    with pytest.raises(IdentityError, match="exhausted"):
        r.allocate(taken)
    assert EuiRange.parse("70b3d57ed0000010-70b3d57ed000001f").allocate(set()) == "70b3d57ed0000010"


@pytest.mark.parametrize("text", ["70b3d57ed0000001/4", "70b3d57ed0000001", "2-1", "70b3d57ed0000010-70b3d57ed000000f"])
def test_bad_ranges_are_refused(text: str) -> None:
    with pytest.raises(IdentityError):
        EuiRange.parse(text)


def test_keys_are_16_random_bytes() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100 and all(len(k) == 16 for k in keys)


@given(st.integers(min_value=0, max_value=0xFFFFFF))
def test_dev_addr_carries_the_nwkid(net_id: int) -> None:
    addr = int(new_dev_addr(net_id), 16)
    assert addr >> 25 == net_id & 0x7F
