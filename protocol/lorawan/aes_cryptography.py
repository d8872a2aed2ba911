"""The AES factory for CPython (the gateway, the tests): `cryptography` in the shape of cryptolib.

CPython only: `aes.default_aes()` imports it when `cryptolib` is missing. Contract in aes.py.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

_ECB = modes.ECB()


class CryptographyAES:
    """AES-128-ECB over `cryptography`; calling the class is the factory, `aes(key)`."""

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes, got %d" % len(key))
        self._cipher = Cipher(algorithms.AES(bytes(key)), _ECB)
        self._enc = None  # made on first use and reused: creating one costs more than a block
        self._dec = None

    def encrypt(self, data):
        if len(data) % 16:
            raise ValueError("AES-ECB data must be a multiple of 16 bytes, got %d" % len(data))
        if self._enc is None:
            self._enc = self._cipher.encryptor()
        return self._enc.update(data)

    def decrypt(self, data):
        if len(data) % 16:
            raise ValueError("AES-ECB data must be a multiple of 16 bytes, got %d" % len(data))
        if self._dec is None:
            self._dec = self._cipher.decryptor()
        return self._dec.update(data)

    @staticmethod
    def cmac(key, msg):
        """Native AES-CMAC (OpenSSL), picked up by cmac.aes_cmac."""
        mac = CMAC(algorithms.AES(bytes(key)))
        mac.update(msg)
        return mac.finalize()
