"""AES-CMAC (RFC 4493), the MAC behind every LoRaWAN MIC (LoRaWAN 1.0.4 §4.4, §6.2.4, §6.2.5)."""


def _dbl(block):
    """Double a 128-bit value in GF(2^128): shift left one bit, fold the carry with R = 0x87."""
    out = bytearray(16)
    carry = 0
    for i in range(15, -1, -1):
        v = block[i]
        out[i] = ((v << 1) & 0xFF) | carry
        carry = v >> 7
    if carry:
        out[15] ^= 0x87  # RFC 4493 §2.3, const_Rb
    return out


def aes_cmac(aes, key, msg):
    """Return the 16-byte AES-CMAC of `msg` under `key` (RFC 4493 §2.4); `aes` is the factory."""
    native = getattr(aes, "cmac", None)
    if native is not None:  # the factory brings its own CMAC (see aes.py)
        return native(key, msg)
    cipher = aes(key)
    k1 = _dbl(cipher.encrypt(bytes(16)))  # L = AES-128(K, 0^128); K1 = dbl(L)  §2.3
    n = len(msg)
    # The last block is complete only for a non-empty multiple of 16; it is XORed with K1,
    # otherwise it is padded with 10...0 and XORed with K2 = dbl(K1)  (§2.4 steps 3-4).
    last = n - 16 if n and not n % 16 else n - n % 16
    x = bytearray(16)
    off = 0
    while off < last:  # CBC-MAC over every block but the last  (§2.4 step 6)
        for j in range(16):
            x[j] ^= msg[off + j]
        x[:] = cipher.encrypt(x)
        off += 16
    rem = n - last
    if rem == 16:
        sub = k1
    else:
        sub = _dbl(k1)
        x[rem] ^= 0x80
    for j in range(rem):
        x[j] ^= msg[last + j]
    for j in range(16):
        x[j] ^= sub[j]
    return cipher.encrypt(x)
