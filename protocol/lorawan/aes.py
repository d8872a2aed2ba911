"""The AES-128 primitive every function of this package takes as its `aes` argument.

Contract (docs/architecture.md, "The AES primitive"): `aes(key)` returns a cipher whose
`encrypt(data)` and `decrypt(data)` run AES-128 in ECB mode over a multiple of 16 bytes and return
new bytes. A cipher serves one direction only, as MicroPython's `cryptolib.aes` requires: callers
ask the factory again rather than mixing encrypt and decrypt on one object.

A factory may also carry `cmac(key, msg)`, a native AES-CMAC; `cmac.aes_cmac` uses it when present.
The CPython factory (aes_cryptography.CachedAES) does, and keeps its OpenSSL contexts and CMAC
templates per key: the gateway checks a MIC and decrypts a payload per uplink, and creating the
contexts would cost more than the work itself. On a board the portable code runs unchanged.
"""

_factory = None


def default_aes():
    """Return the AES factory of this interpreter: cryptolib on MicroPython, else cryptography."""
    global _factory
    if _factory is None:
        try:
            import cryptolib
        except ImportError:  # CPython: the wrapper lives apart so boards never load it
            from .aes_cryptography import CachedAES

            _factory = CachedAES()
        else:
            _factory = _cryptolib_factory(cryptolib)
    return _factory


def _cryptolib_factory(cryptolib):
    """Build the MicroPython factory: `cryptolib.aes(key, 1)` is AES in ECB mode."""

    def cryptolib_aes(key):
        return cryptolib.aes(key, 1)

    return cryptolib_aes
