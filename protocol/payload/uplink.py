"""Uplinks: one reading set of a role <-> (FPort, bytes), in the formats of fields.py."""

from protocol.payload.bits import BitReader, BitWriter
from protocol.payload.codec import decode_layout, encode_layout
from protocol.payload.errors import PayloadError
from protocol.payload.fields import FORMAT_VERSION, UPLINKS, VERSION_BITS


def layout_of(role):
    """(FPort, layout) of a role name; PayloadError for an unknown role."""
    entry = UPLINKS.get(role) if isinstance(role, str) else None
    if entry is None:
        known = ", ".join(sorted(UPLINKS))
        raise PayloadError(f"unknown role {role!r} (known: {known})")
    return entry


def encode_uplink(role, readings):
    """(FPort, bytes) for one reading set of `role`; absent or None readings cost no bytes."""
    fport, layout = layout_of(role)
    w = BitWriter()
    w.write(FORMAT_VERSION, VERSION_BITS)
    encode_layout(w, layout, readings, f"FPort {fport} ({role})")
    return fport, w.getvalue()


def check_version(r, what):
    """Read the 3-bit format version and refuse any this decoder does not know."""
    version = r.read(VERSION_BITS)
    if version != FORMAT_VERSION:
        raise PayloadError(f"{what}: format version {version} is unknown (this decoder reads "
                           f"version {FORMAT_VERSION})")


def decode_uplink(fport, data):
    """(role, readings) from an uplink's FPort and decrypted payload; PayloadError if bad."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {data!r}")
    for role in UPLINKS:
        port, layout = UPLINKS[role]
        if port == fport and isinstance(fport, int) and not isinstance(fport, bool):
            what = f"FPort {fport} ({role})"
            if not len(data):
                raise PayloadError(f"{what}: empty payload")
            r = BitReader(data, what)
            check_version(r, what)
            readings = decode_layout(r, layout, what)
            r.finish()
            return role, readings
    known = ", ".join(str(port) for port, _ in UPLINKS.values())
    raise PayloadError(f"FPort {fport!r} carries no sensor payload (known: {known})")
