"""Identifiers and keys of a LoRaWAN 1.0.x device: parse text at the edge, pass checked values in.

Canonical forms used by every function of this package:
- DevEUI / JoinEUI: 8 bytes in display order (big-endian, as printed on labels and in registries);
  frames carry them reversed (LoRaWAN 1.0.4 §6.2.4).
- DevAddr: an int 0..2^32-1, shown as 8 hex digits; frames carry it little-endian (§4.3.1).
- NetID: an int 0..2^24-1; JoinNonce (AppNonce before 1.0.4) and DevNonce: ints.
- AppKey, NwkSKey, AppSKey: 16 bytes. Messages about keys never echo key material.
"""

from .wire import check_bytes

_SEPARATORS = ("-", ":", " ")
_HEX_DIGITS = "0123456789abcdefABCDEF"


def _hex_digits(text, digits, name, echo):
    """Strip separators from text and return its bytes, or raise ValueError naming the field."""
    if not isinstance(text, str):  # a ValueError like every other bad value read from a config
        raise ValueError(  # noqa: TRY004
            "%s must be given as hex text, got %s" % (name, type(text).__name__)
        )
    clean = text.strip()
    for sep in _SEPARATORS:
        clean = clean.replace(sep, "")
    shown = (": %r" % text) if echo else ""
    if len(clean) != digits:
        raise ValueError(
            "%s must be %d hex digits (%d bytes), got %d%s"
            % (name, digits, digits // 2, len(clean), shown)
        )
    for c in clean:  # checked by hand: int(text, 16) would also take "+", "_" and spaces
        if c not in _HEX_DIGITS:
            raise ValueError("%s must contain only hex digits 0-9 a-f%s" % (name, shown))
    return int(clean, 16).to_bytes(digits // 2, "big")


def _hex(data):
    """Lowercase hex of a bytes-like value (not binascii: on some ports that is Python code)."""
    return "".join("%02x" % b for b in data)


def parse_eui(text, name="EUI"):
    """Parse a DevEUI/JoinEUI from hex text ("70B3D57ED0000001", dashes or colons allowed)."""
    return _hex_digits(text, 16, name, True)


def format_eui(eui):
    """Format an 8-byte EUI as 16 lowercase hex digits in display order."""
    return _hex(check_bytes(eui, 8, "EUI"))


def parse_devaddr(text):
    """Parse a DevAddr from 8 hex digits (most significant first, "26011BDA") into an int."""
    return int.from_bytes(_hex_digits(text, 8, "DevAddr", True), "big")


def format_devaddr(devaddr):
    """Format a DevAddr int as 8 lowercase hex digits."""
    if not isinstance(devaddr, int) or devaddr < 0 or devaddr > 0xFFFFFFFF:
        raise ValueError("DevAddr must be an integer 0..0xffffffff, got %r" % (devaddr,))
    return "%08x" % devaddr


def parse_key(text, name="key"):
    """Parse a 16-byte AES key from 32 hex digits; errors name the key but never show it."""
    return _hex_digits(text, 32, name, False)


def format_key(key, name="key"):
    """Format a 16-byte key as 32 lowercase hex digits (for provisioning files, never for logs)."""
    return _hex(check_key(key, name))


def check_key(key, name="key"):
    """Return key if it is 16 bytes, else raise ValueError naming it."""
    return check_bytes(key, 16, name)


def check_eui(eui, name="EUI"):
    """Return eui if it is 8 bytes, else raise ValueError naming it."""
    return check_bytes(eui, 8, name)
