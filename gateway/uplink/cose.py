"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519: how every message the gateway publishes is signed.

A message is the CBOR tag 18 over ``[protected, unprotected, payload, signature]`` where

- protected  = bstr .cbor {1 (alg): -8 (EdDSA), 3 (content type): 112 (application/senml+cbor)}
- unprotected = {4 (kid): the 8-byte key id of ``gateway.keys``}
- signature  = Ed25519 over Sig_structure ``["Signature1", protected, external_aad, payload]``
  (RFC 9052 §4.4), with an empty external_aad unless the caller agrees on one.

``verify1`` is what the hypervisor side (and our tests) use: it accepts alg -8 (EdDSA) and -19
(Ed25519, the fully-specified identifier), tagged or untagged messages, and fails with a specific
``CoseError`` subclass for each reason a message can be refused.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.keys import SigningKey

__all__ = [
    "ALG_ED25519",
    "ALG_EDDSA",
    "CONTENT_CBOR",
    "CONTENT_SENML_CBOR",
    "BadSignatureError",
    "CoseError",
    "CriticalHeaderError",
    "MalformedHeaderError",
    "NotCborError",
    "NotSign1Error",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
    "Verified",
    "sign1",
    "verify1",
]

TAG_SIGN1: Final = 18
# Header labels (RFC 9052 §3.1).
H_ALG: Final = 1
H_CRIT: Final = 2
H_CONTENT_TYPE: Final = 3
H_KID: Final = 4
UNDERSTOOD_HEADERS: Final = frozenset({H_ALG, H_CRIT, H_CONTENT_TYPE, H_KID})
# Algorithms (IANA COSE Algorithms): -8 EdDSA (RFC 9053), -19 Ed25519 (fully specified).
ALG_EDDSA: Final = -8
ALG_ED25519: Final = -19
ACCEPTED_ALGS: Final = frozenset({ALG_EDDSA, ALG_ED25519})
# CoAP Content-Formats: 112 application/senml+cbor (RFC 8428), 60 application/cbor.
CONTENT_SENML_CBOR: Final = 112
CONTENT_CBOR: Final = 60


class CoseError(ValueError):
    """A COSE message was refused; the subclass says why."""


class NotCborError(CoseError):
    """The bytes are not one well-formed CBOR item."""


class NotSign1Error(CoseError):
    """Well-formed CBOR, but not a COSE_Sign1 structure (wrong tag, shape or field type)."""


class MalformedHeaderError(CoseError):
    """The header maps break RFC 9052 §3 (duplicate labels, alg unprotected, bad value types)."""


class CriticalHeaderError(CoseError):
    """The 'crit' header names a parameter this verifier does not understand."""


class UnsupportedAlgorithmError(CoseError):
    """The message's algorithm is not EdDSA/Ed25519 (-8 or -19)."""


class UnknownKeyError(CoseError):
    """No kid, or a kid the verifier has no public key for."""


class BadSignatureError(CoseError):
    """The signature does not match the protected header and payload for that key."""


@dataclass(frozen=True)
class Verified:
    """A message whose signature checked out, with what the signer asserted."""

    payload: bytes
    kid: bytes
    protected: Mapping[Any, Any]
    unprotected: Mapping[Any, Any] = field(default_factory=dict)

    @property
    def alg(self) -> int:
        return int(self.protected[H_ALG])

    @property
    def content_type(self) -> Any:
        return self.protected.get(H_CONTENT_TYPE, self.unprotected.get(H_CONTENT_TYPE))


def _bstr_head(length: int) -> bytes:
    """The CBOR head of a byte string of ``length`` bytes (major type 2)."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + struct.pack(">H", length)
    if length < 0x100000000:
        return b"\x5a" + struct.pack(">I", length)
    return b"\x5b" + struct.pack(">Q", length)


def _bstr(data: bytes) -> bytes:
    return _bstr_head(len(data)) + data


_PROTECTED_CACHE: dict[int, bytes] = {}


def _protected_for(content_type: int) -> bytes:
    protected = _PROTECTED_CACHE.get(content_type)
    if protected is None:
        protected = cbor2.dumps({H_ALG: ALG_EDDSA, H_CONTENT_TYPE: content_type})
        _PROTECTED_CACHE[content_type] = protected
    return protected


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """Sig_structure for COSE_Sign1 (RFC 9052 §4.4): the bytes that are actually signed."""
    # array(4), tstr "Signature1", bstr protected, bstr external_aad, bstr payload
    # (joined once: a backlog pack's payload may be 64 KiB, copied no more than needed)
    return b"".join((b"\x84\x6aSignature1", _bstr(protected), _bstr(external_aad),
                     _bstr_head(len(payload)), payload))


def sign1(
    payload: bytes,
    key: SigningKey,
    content_type: int = CONTENT_SENML_CBOR,
    *,
    external_aad: bytes = b"",
) -> bytes:
    """A tagged COSE_Sign1 over ``payload`` signed by ``key`` (alg EdDSA, kid unprotected)."""
    if not 0 <= content_type < 65536:
        raise ValueError(f"content_type {content_type} is not a CoAP Content-Format (0..65535)")
    protected = _protected_for(content_type)
    signature = key.sign(sig_structure(protected, payload, external_aad))
    # tag(18) array(4) bstr(protected) {4: bstr(kid)} bstr(payload) bstr(signature)
    return b"".join((b"\xd2\x84", _bstr(protected), b"\xa1\x04", _bstr(key.kid),
                     _bstr_head(len(payload)), payload, _bstr(signature)))


def _loads_exact(data: bytes) -> Any:
    """One CBOR item spanning all of ``data``, or NotCborError."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    # cbor2's tag hooks may raise almost anything on hostile input: all of it is "not CBOR".
    except Exception as exc:  # noqa: BLE001
        raise NotCborError(f"not valid CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(data):
        raise NotCborError(f"not valid CBOR: {len(data) - stream.tell()} trailing bytes")
    return item


def _header_label_ok(label: Any) -> bool:
    return (isinstance(label, int) and not isinstance(label, bool)) or isinstance(label, str)


def verify1(
    message: bytes,
    keys: Mapping[bytes, Ed25519PublicKey],
    *,
    external_aad: bytes = b"",
) -> Verified:
    """Check a COSE_Sign1 against the trusted ``keys`` (kid -> public key) and return it."""
    if not isinstance(message, bytes | bytearray | memoryview):
        raise NotCborError("a COSE message is bytes")
    item = _loads_exact(bytes(message))
    if isinstance(item, cbor2.CBORTag):
        if item.tag != TAG_SIGN1:
            raise NotSign1Error(f"CBOR tag {item.tag} is not COSE_Sign1 (tag 18)")
        item = item.value
    # cbor2 >= 6 decodes arrays and maps inside a tag as tuple / frozendict.
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise NotSign1Error("a COSE_Sign1 is an array of 4 items")
    protected_bstr, unprotected, payload, signature = item
    if not isinstance(protected_bstr, bytes):
        raise NotSign1Error("the protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise NotSign1Error("the unprotected header must be a map")
    unprotected = dict(unprotected)
    if payload is None:
        raise NotSign1Error("detached payloads are not supported")
    if not isinstance(payload, bytes):
        raise NotSign1Error("the payload must be a byte string")
    if not isinstance(signature, bytes):
        raise NotSign1Error("the signature must be a byte string")

    if protected_bstr:
        protected = _loads_exact(protected_bstr)
        if not isinstance(protected, dict):
            raise MalformedHeaderError("the protected header must encode a map")
    else:
        protected = {}  # RFC 9052 §3: an empty bstr stands for an empty map
    for header in (protected, unprotected):
        if not all(_header_label_ok(label) for label in header):
            raise MalformedHeaderError("header labels must be integers or text strings")
    common = set(protected) & set(unprotected)
    if common:
        raise MalformedHeaderError(
            f"header label(s) {sorted(map(str, common))} in both protected and unprotected"
        )
    if H_CRIT in unprotected:
        raise MalformedHeaderError("'crit' must be in the protected header")
    if H_CRIT in protected:
        crit = protected[H_CRIT]
        if not isinstance(crit, list | tuple) or not crit or not all(map(_header_label_ok, crit)):
            raise MalformedHeaderError("'crit' must be a non-empty array of header labels")
        unknown = [label for label in crit if label not in UNDERSTOOD_HEADERS]
        if unknown:
            raise CriticalHeaderError(
                f"critical header(s) {unknown} not understood by this verifier"
            )

    if H_ALG not in protected:
        if H_ALG in unprotected:
            raise MalformedHeaderError("'alg' must be in the protected header")
        raise UnsupportedAlgorithmError("no 'alg' in the protected header")
    alg = protected[H_ALG]
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in ACCEPTED_ALGS:
        raise UnsupportedAlgorithmError(
            f"algorithm {alg!r} is not accepted; expected EdDSA (-8) or Ed25519 (-19)"
        )

    kid = protected.get(H_KID, unprotected.get(H_KID))
    if kid is None:
        raise UnknownKeyError("no 'kid' header: cannot tell which key signed this")
    if not isinstance(kid, bytes):
        raise MalformedHeaderError("'kid' must be a byte string")
    public_key = keys.get(kid)
    if public_key is None:
        raise UnknownKeyError(f"unknown kid {kid.hex()}: no trusted key has this id")

    if len(signature) != 64:
        raise BadSignatureError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
    try:
        public_key.verify(signature, sig_structure(protected_bstr, payload, external_aad))
    except InvalidSignature:
        raise BadSignatureError(
            f"signature does not verify with key {kid.hex()}: altered or signed by another key"
        ) from None
    return Verified(payload=payload, kid=kid, protected=protected, unprotected=unprotected)
