"""``cryptolib`` for the virtual board, backed by Node's OpenSSL.

It stands in for the firmware's ``cryptolib`` only because the MicroPython WebAssembly port is
built without it; on a board the built-in module is used. It mirrors extmod/modcryptolib.c:
``aes(key, mode, IV=None)`` with 16 or 32-byte keys, MODE_ECB (1) and MODE_CBC (2, IV required),
``encrypt(in_buf, out_buf=None)`` / ``decrypt(in_buf, out_buf=None)`` on whole 16-byte blocks,
the same ValueError messages, CBC chaining across calls, and the same rule that one object either
encrypts or decrypts, never both.
"""

import _aes

MODE_ECB = 1
MODE_CBC = 2


class aes:
    def __init__(self, key, mode, IV=None):
        if mode not in (MODE_ECB, MODE_CBC):
            raise ValueError("mode")
        if len(key) not in (16, 32):
            raise ValueError("key")
        if IV is not None:
            if len(IV) != 16:
                raise ValueError("IV")
        elif mode == MODE_CBC:
            raise ValueError("IV")
        self._key = bytes(key).hex()
        self._mode = mode
        self._iv = bytes(IV).hex() if IV is not None else ""
        self._dir = None

    def _process(self, in_buf, out_buf, encrypt):
        n = len(in_buf)
        if n % 16:
            raise ValueError("blksize % 16")
        if out_buf is not None and len(out_buf) < n:
            raise ValueError("output too small")
        if self._dir is None:
            self._dir = encrypt
        elif self._dir != encrypt:
            raise ValueError("can't encrypt & decrypt")
        data = bytes(in_buf).hex()
        if self._mode == MODE_ECB:
            out = _aes.run("ecb", self._key, "", data, encrypt)
        else:
            out = _aes.run("cbc", self._key, self._iv, data, encrypt)
            if n:  # chain: the next call continues from the last ciphertext block
                self._iv = (out if encrypt else data)[-32:]
        result = bytes.fromhex(out)
        if out_buf is None:
            return result
        out_buf[0:n] = result
        return out_buf

    def encrypt(self, in_buf, out_buf=None):
        return self._process(in_buf, out_buf, True)

    def decrypt(self, in_buf, out_buf=None):
        return self._process(in_buf, out_buf, False)
