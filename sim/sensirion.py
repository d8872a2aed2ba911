"""What Sensirion chip models share: the word CRC, written apart from the drivers' own so that a
driver bug in it cannot hide behind the same code in the model."""

from __future__ import annotations


def crc8(data: bytes) -> int:
    """Datasheets' Checksum Calculation: CRC-8, poly 0x31, init 0xFF, no reflection, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def with_crc(data: bytes) -> bytes:
    """Data bytes (even length) as the chip sends them: a CRC after every 2-byte word."""
    if len(data) % 2:
        raise ValueError("Sensirion data go in 2-byte words")
    out = bytearray()
    for i in range(0, len(data), 2):
        out += data[i:i + 2] + bytes([crc8(data[i:i + 2])])
    return bytes(out)
