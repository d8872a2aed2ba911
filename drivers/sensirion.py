"""The CRC-8 every Sensirion I2C sensor (SHT4x, SPS30, ...) puts after each 16-bit word.

Datasheets, "Checksum Calculation": polynomial 0x31 (x^8 + x^5 + x^4 + 1), init 0xFF, no
reflection, final XOR 0x00; example CRC(0xBEEF) = 0x92.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_CRC_POLY = const(0x31)
_CRC_INIT = const(0xFF)


def crc8(data, start=0, end=-1):
    """CRC-8 of ``data[start:end]`` (no slice is allocated)."""
    if end < 0:
        end = len(data)
    crc = _CRC_INIT
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ _CRC_POLY) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc
