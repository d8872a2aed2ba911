"""Over-the-air activation on the network side (LoRaWAN 1.0.4 §6.2): check, answer, derive keys.

A join-request is accepted only from a registered DevEUI that has an AppKey, with the JoinEUI it
was registered with (when one was), a MIC made with that AppKey, and a DevNonce it has not used
before: LoRaWAN 1.0.4 devices count their DevNonce up, so it must be above the last one;
1.0.2/1.0.3 devices send random DevNonces, so it must never have been seen (``dev_nonce_mode``
"unique", every DevNonce kept in the store). The answer carries a fresh JoinNonce (a per-device
counter, never repeated), our NetID, a new DevAddr, DLSettings (RX1DROffset, RX2DR), RxDelay and
an EU868 CFList of extra channels; it goes out JOIN_ACCEPT_DELAY1 (5 s) or DELAY2 (6 s) after the
request.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Final

from gateway.lorawan.mac import DEFAULT_CH_MASK, MacState
from gateway.radio.frame import RxFrame
from protocol import lorawan
from protocol import region_eu868 as region

# Extra EU868 channels most networks announce in the CFList (channels 3..7).
COMMON_EU868_CFLIST_HZ: Final = (867_100_000, 867_300_000, 867_500_000, 867_700_000, 867_900_000)
PRIVATE_NET_ID: Final = 0x000000  # NetID type 0, NwkID 0: experimental / private networks


@dataclass(frozen=True, slots=True)
class JoinSettings:
    """What every join-accept of this gateway announces."""

    net_id: int = PRIVATE_NET_ID
    rx1_dr_offset: int = 0
    rx2_dr: int = region.RX2_DR
    rx_delay_s: int = region.RECEIVE_DELAY1_S
    cflist_hz: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.net_id <= 0xFFFFFF:
            raise ValueError(f"net_id {self.net_id!r}: expected a 24-bit NetID")
        if not 0 <= self.rx1_dr_offset <= region.MAX_RX1_DR_OFFSET:
            raise ValueError(f"rx1_dr_offset {self.rx1_dr_offset!r}: expected 0..5 in EU868")
        region.data_rate(self.rx2_dr)
        if not 1 <= self.rx_delay_s <= 15:
            raise ValueError(f"rx_delay_s {self.rx_delay_s!r}: expected 1..15 s")
        if len(self.cflist_hz) > 5:
            raise ValueError("an EU868 CFList carries at most 5 extra channels")
        for f in self.cflist_hz:
            if f and region.sub_band(f) is None:
                raise ValueError(f"CFList frequency {f} Hz is outside every EU868 sub-band")

    def cflist(self) -> bytes:
        """The 16-byte CFList (type 0: frequencies of channels 3..7)."""
        return lorawan.encode_cflist_eu868(list(self.cflist_hz))

    def ch_mask(self) -> int:
        """The channels a device has after joining: 0..2 and the CFList's non-zero ones."""
        mask = DEFAULT_CH_MASK
        for i, f in enumerate(self.cflist_hz):
            if f:
                mask |= 1 << (3 + i)
        return mask


@dataclass(slots=True, repr=False)
class JoinGranted:
    """A checked join-request and its answer, not yet stored nor sent (keys masked in repr)."""

    dev_eui: str
    dev_nonce: int
    join_nonce: int
    dev_addr: int
    nwk_s_key: bytes
    app_s_key: bytes
    accept_phy: bytes
    frame: RxFrame
    mac_state: MacState = field(default_factory=MacState)

    def __repr__(self) -> str:
        return (f"<JoinGranted {self.dev_eui} DevNonce {self.dev_nonce} JoinNonce "
                f"{self.join_nonce} DevAddr {self.dev_addr:08x}>")


def dev_addr_range(net_id: int) -> tuple[int, int]:
    """(first, last) DevAddr of a type-0 NetID: prefix 0b0 + 6-bit NwkID, 25-bit NwkAddr.

    Other NetID types fall back to the whole type-0 NwkID 0 block, fine for a private network.
    """
    nwk_id = net_id & 0x3F if net_id >> 21 == 0 else 0
    base = nwk_id << 25
    return base, base | 0x01FF_FFFF


def allocate_dev_addr(net_id: int, used: Collection[int]) -> int:
    """A random free DevAddr in the NetID's range (cryptographic source, so not guessable)."""
    first, last = dev_addr_range(net_id)
    span = last - first + 1
    for _ in range(64):
        addr = first + secrets.randbelow(span)
        if addr not in used:
            return addr
    raise RuntimeError("no free DevAddr found: the address range is nearly full")


def grant(
    aes: object,
    settings: JoinSettings,
    request: lorawan.JoinRequest,
    app_key: bytes,
    join_nonce: int,
    dev_addr: int,
    frame: RxFrame,
    dev_eui: str,
) -> JoinGranted:
    """Build the join-accept and derive the session keys for a checked join-request."""
    accept = lorawan.build_join_accept(
        aes, app_key, join_nonce, settings.net_id, dev_addr,
        rx1_dr_offset=settings.rx1_dr_offset, rx2_dr=settings.rx2_dr,
        rx_delay=settings.rx_delay_s, cflist=settings.cflist(),
    )
    nwk_s_key, app_s_key = lorawan.derive_session_keys(
        aes, app_key, join_nonce, settings.net_id, request.dev_nonce)
    state = MacState(rx1_dr_offset=settings.rx1_dr_offset, rx2_dr=settings.rx2_dr,
                     rx_delay_s=settings.rx_delay_s, ch_mask=settings.ch_mask())
    return JoinGranted(dev_eui, request.dev_nonce, join_nonce, dev_addr, nwk_s_key, app_s_key,
                       accept, frame, state)
