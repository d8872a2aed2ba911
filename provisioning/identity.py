"""A node's LoRaWAN identity: DevEUI from the board's unique id or an allocated range, fresh keys.

Keys come from the operating system's CSPRNG (``secrets``); a DevEUI derived from a 6-byte MAC
(ESP32 ``machine.unique_id()``) follows IEEE's EUI-48 to EUI-64 mapping (FFFE inserted after the
OUI), an 8-byte id (RP2040 flash unique id) is used as it is.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_HEX = re.compile(r"[0-9a-f]+")


class IdentityError(ValueError):
    """An identity that cannot be derived or allocated; the message says why."""


def normalise_eui(text: str) -> str:
    """An EUI-64 as 16 lower-case hex digits; accepts ``:``/``-`` separators and upper case."""
    clean = text.strip().lower().replace(":", "").replace("-", "")
    if len(clean) != 16 or not _HEX.fullmatch(clean):
        raise IdentityError(f"{text!r} is not an EUI-64 (16 hex digits)")
    return clean


def dev_eui_from_unique_id(uid: bytes) -> str:
    """The DevEUI of a board from its ``machine.unique_id()`` (6 or 8 bytes)."""
    if len(uid) == 6:
        return (uid[:3] + b"\xff\xfe" + uid[3:]).hex()
    if len(uid) == 8:
        return uid.hex()
    raise IdentityError(f"a unique id of {len(uid)} bytes cannot make a DevEUI (need 6 or 8)")


@dataclass(frozen=True)
class EuiRange:
    """A block of DevEUIs assigned to the city (e.g. from its IEEE MA-S/OUI): first..last."""

    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> EuiRange:
        """``70b3d57ed0000000-70b3d57ed0000fff`` or ``70b3d57ed0000000/12`` (12 free bits)."""
        if "/" in text:
            base, bits = text.split("/", 1)
            first = int(normalise_eui(base), 16)
            n = int(bits)
            if not 1 <= n <= 32 or first & ((1 << n) - 1):
                raise IdentityError(f"{text!r}: the base must end in {n} zero bits (1..32 bits)")
            return cls(first, first + (1 << n) - 1)
        lo, sep, hi = text.partition("-")
        if not sep:
            raise IdentityError(f"{text!r}: expected FIRST-LAST or BASE/BITS")
        first, last = int(normalise_eui(lo), 16), int(normalise_eui(hi), 16)
        if last < first:
            raise IdentityError(f"{text!r}: the range ends before it starts")
        return cls(first, last)

    def allocate(self, taken: set[str]) -> str:
        """The lowest DevEUI of the range not in ``taken``."""
        for value in range(self.first, self.last + 1):
            eui = f"{value:016x}"
            if eui not in taken:
                return eui
        raise IdentityError(f"the DevEUI range {self.first:016x}-{self.last:016x} is exhausted")


def new_key() -> bytes:
    """A fresh 128-bit AES key (AppKey, or NwkSKey/AppSKey for ABP)."""
    return secrets.token_bytes(16)


def new_dev_addr(net_id: int = 0) -> str:
    """A random DevAddr in the NetID's address block (type 0: 7-bit NwkID = NetID's low 7 bits)."""
    nwk_id = net_id & 0x7F
    return f"{(nwk_id << 25) | secrets.randbits(25):08x}"
