"""Small field codecs shared by the frame modules: checked integers, 24-bit fields, frequencies."""


def check_int(value, low, high, name):
    """Return value if it is an int within low..high, else raise ValueError naming the field."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low or value > high:
        raise ValueError("%s must be an integer %d..%d, got %r" % (name, low, high, value))
    return value


def check_bytes(value, size, name):
    """Return value if it is a bytes-like object of exactly `size` bytes (contents never echoed)."""
    if not isinstance(value, (bytes, bytearray, memoryview)):  # ValueError, as for a bad length
        raise ValueError(  # noqa: TRY004
            "%s must be %d bytes, got %s" % (name, size, type(value).__name__)
        )
    if len(value) != size:
        raise ValueError("%s must be %d bytes, got %d" % (name, size, len(value)))
    return value


def get_u24(buf, offset):
    """Read a 24-bit little-endian unsigned integer (JoinNonce, NetID, frequencies)."""
    return buf[offset] | (buf[offset + 1] << 8) | (buf[offset + 2] << 16)


def put_u24(buf, offset, value):
    """Write a 24-bit little-endian unsigned integer into a bytearray."""
    buf[offset] = value & 0xFF
    buf[offset + 1] = (value >> 8) & 0xFF
    buf[offset + 2] = (value >> 16) & 0xFF


def freq_to_field(hz, name="frequency"):
    """Encode a frequency in Hz as the 24-bit count of 100 Hz steps (LoRaWAN 1.0.4 §5.6.1)."""
    check_int(hz, 0, 0xFFFFFF * 100, name)
    if hz % 100:
        raise ValueError("%s must be a multiple of 100 Hz, got %d" % (name, hz))
    return hz // 100
