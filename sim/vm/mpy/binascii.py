"""``binascii`` for the virtual board: hex conversions at C speed, as on a board.

The WebAssembly port freezes micropython-lib's pure-Python ``binascii`` (7 KB of heap on import
and slow), where boards have the module in C. Hex goes through the VM's C ``bytes.hex`` and
``bytes.fromhex``; base64 and crc32 are handed to the frozen module, loaded on first use.
"""

import sys

_frozen = None


def _impl():
    global _frozen
    if _frozen is None:
        me = sys.modules.get("binascii")
        path = sys.path[:]
        sys.path[:] = [".frozen"]
        sys.modules.pop("binascii", None)
        try:
            _frozen = __import__("binascii")
        finally:
            sys.path[:] = path
            sys.modules["binascii"] = me
    return _frozen


def hexlify(data, sep=None):
    h = bytes(data).hex()
    if sep is not None and h:
        if not isinstance(sep, str):
            sep = bytes(sep).decode()
        h = sep.join(h[i:i + 2] for i in range(0, len(h), 2))
    return h.encode()


def unhexlify(data):
    if not isinstance(data, str):
        data = bytes(data).decode()
    if len(data) % 2:
        raise ValueError("odd-length string")
    try:
        return bytes.fromhex(data)
    except ValueError:
        raise ValueError("non-hex digit found") from None


b2a_hex = hexlify
a2b_hex = unhexlify


def a2b_base64(data):
    return _impl().a2b_base64(data)


def b2a_base64(data, *, newline=True):
    return _impl().b2a_base64(data, newline=newline)


def crc32(data, value=0):
    return _impl().crc32(data, value)
