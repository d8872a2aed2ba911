"""MSB-first bit packing (big-endian bit order) and hand-made two's complement.

MicroPython's `int.from_bytes` has no `signed=`, so signed fields are sign-extended here. The
writer keeps a small accumulator and emits whole bytes, so no big integers are built on a node.
"""

from protocol.payload.errors import PayloadError


def to_twos(value, bits):
    """Two's complement of `value` in `bits` bits, as an unsigned int (caller checks the range)."""
    return value & ((1 << bits) - 1)


def from_twos(raw, bits):
    """Sign-extend an unsigned `bits`-wide raw value."""
    if raw & (1 << (bits - 1)):
        return raw - (1 << bits)
    return raw


class BitWriter:
    """Appends unsigned fields MSB first; `getvalue()` pads the last byte with zero bits."""

    def __init__(self):
        self._out = bytearray()
        self._acc = 0
        self._n = 0

    def write(self, value, bits):
        """Append the low `bits` bits of the unsigned `value`."""
        self._acc = (self._acc << bits) | (value & ((1 << bits) - 1))
        self._n += bits
        while self._n >= 8:
            self._n -= 8
            self._out.append((self._acc >> self._n) & 0xFF)
        self._acc &= (1 << self._n) - 1

    def getvalue(self):
        """The packed bytes, the last one zero-padded."""
        out = bytes(self._out)
        if self._n:
            out += bytes(((self._acc << (8 - self._n)) & 0xFF,))
        return out


class BitReader:
    """Reads unsigned fields MSB first from bytes; running short raises PayloadError.

    `what` (the FPort or command) starts every error message; callers may refine it.
    """

    def __init__(self, data, what):
        self._data = data
        self._pos = 0
        self.what = what

    def read(self, bits):
        """The next `bits` bits as an unsigned int."""
        end = self._pos + bits
        if end > 8 * len(self._data):
            raise PayloadError(f"{self.what}: truncated: {len(self._data)} bytes, at least "
                               f"{(end + 7) // 8} needed")
        value = 0
        pos = self._pos
        while pos < end:
            take = min(8 - (pos & 7), end - pos)
            byte = self._data[pos >> 3]
            shift = 8 - (pos & 7) - take
            value = (value << take) | ((byte >> shift) & ((1 << take) - 1))
            pos += take
        self._pos = end
        return value

    def finish(self):
        """Check that only zero padding (less than one byte) is left."""
        left = 8 * len(self._data) - self._pos
        if left >= 8:
            raise PayloadError(f"{self.what}: {left // 8} unexpected trailing bytes")
        if left and self.read(left):
            raise PayloadError(f"{self.what}: padding bits are not zero")
