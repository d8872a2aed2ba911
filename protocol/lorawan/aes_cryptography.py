"""The AES factory for CPython (the gateway, the tests): `cryptography` in the shape of cryptolib.

CPython only: `aes.default_aes()` imports it when `cryptolib` is missing. Contract in aes.py.

Speed (the gateway checks a MIC and decrypts a payload per uplink): creating an OpenSSL cipher
context costs ~10 µs, far more than the one or two blocks it then processes, and a CMAC object
the same. `CachedAES` keeps them per key: ECB contexts carry no state between calls, so one
encryptor and one decryptor per key serve every call, and a CMAC is started by copying a
keyed template (~1 µs instead of ~10 µs). The caches are bounded (CACHE_KEYS keys each, about
1 KB per entry) so 10,000 registered nodes cannot grow them without limit.
"""

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

_ECB = modes.ECB()
CACHE_KEYS = 2048


class CryptographyAES:
    """AES-128-ECB over `cryptography` for one key; `encrypt`/`decrypt` as cryptolib.aes."""

    __slots__ = ("_cipher", "_dec", "_enc")

    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("AES-128 key must be 16 bytes, got %d" % len(key))
        self._cipher = Cipher(algorithms.AES(bytes(key)), _ECB)
        self._enc = None  # made on first use and reused: creating one costs more than a block
        self._dec = None

    def encrypt(self, data):
        """AES-128-ECB encryption of a multiple of 16 bytes."""
        if len(data) % 16:
            raise ValueError("AES-ECB data must be a multiple of 16 bytes, got %d" % len(data))
        if self._enc is None:
            self._enc = self._cipher.encryptor()
        return self._enc.update(data)

    def decrypt(self, data):
        """AES-128-ECB decryption of a multiple of 16 bytes."""
        if len(data) % 16:
            raise ValueError("AES-ECB data must be a multiple of 16 bytes, got %d" % len(data))
        if self._dec is None:
            self._dec = self._cipher.decryptor()
        return self._dec.update(data)

    @staticmethod
    def cmac(key, msg):
        """Native AES-CMAC (OpenSSL) without caching."""
        mac = CMAC(algorithms.AES(bytes(key)))
        mac.update(msg)
        return mac.finalize()


def _remember(cache, key, value):
    """Store ``value`` under ``key``, evicting the oldest entry when the cache is full."""
    if len(cache) >= CACHE_KEYS:
        del cache[next(iter(cache))]
    cache[key] = value
    return value


class CachedAES:
    """The factory `aes(key)` with per-key cipher and CMAC caches (see the module docstring)."""

    def __init__(self):
        self._ciphers = {}
        self._macs = {}

    def __call__(self, key):
        """The (shared, stateless ECB) cipher of ``key``."""
        key = bytes(key)
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = _remember(self._ciphers, key, CryptographyAES(key))
        return cipher

    def cmac(self, key, msg):
        """AES-CMAC of ``msg`` under ``key`` (RFC 4493), picked up by cmac.aes_cmac."""
        key = bytes(key)
        template = self._macs.get(key)
        if template is None:
            if len(key) != 16:
                raise ValueError("AES-128 key must be 16 bytes, got %d" % len(key))
            template = _remember(self._macs, key, CMAC(algorithms.AES(key)))
        mac = template.copy()
        mac.update(msg)
        return mac.finalize()
