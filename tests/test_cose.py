"""COSE_Sign1 with Ed25519, cross-checked with pycose (an independent implementation) both ways;
and the signing key's file handling (modes, refusals, key id)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA, Es256
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from gateway.keys import (
    KeyFileError,
    SigningKey,
    generate_signing_key,
    key_id,
    load_public_key,
    load_signing_key,
)
from gateway.uplink.cose import (
    BadSignatureError,
    CoseError,
    CriticalHeaderError,
    MalformedHeaderError,
    NotCborError,
    NotSign1Error,
    UnknownKeyError,
    UnsupportedAlgorithmError,
    sign1,
    verify1,
)
from gateway.uplink.senml import encode_pack

PAYLOAD = encode_pack([{"bn": "urn:dev:mac:0011223344556677:", "n": "temperature", "u": "Cel",
                        "v": 21.5, "rid": "gw:0011223344556677:1"}])


@pytest.fixture
def private() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key(private: Ed25519PrivateKey) -> SigningKey:
    return SigningKey(private)


def raw(private: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    d = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())
    x = private.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    return d, x


def pycose_decode(data: bytes) -> Sign1Message:
    """pycose 1.1's own decode expects cbor2 5 (a list inside the tag); cbor2 6 gives a tuple,
    so unwrap the tag here and hand pycose the array, as CoseMessage.decode would."""
    tagged = cbor2.loads(data)
    assert isinstance(tagged, cbor2.CBORTag) and tagged.tag == Sign1Message.cbor_tag
    return Sign1Message.from_cose_obj(_thaw(tagged.value), True)


def _thaw(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def trusted(key: SigningKey) -> dict:
    return {key.kid: key.public_key}


# ------------------------------------------------------------------------- our message format


def test_message_layout_is_tagged_sign1_with_eddsa_and_senml_content_type(key: SigningKey) -> None:
    message = cbor2.loads(sign1(PAYLOAD, key))
    assert isinstance(message, cbor2.CBORTag) and message.tag == 18
    protected, unprotected, payload, signature = message.value
    assert cbor2.loads(protected) == {1: -8, 3: 112}
    assert unprotected == {4: key.kid}
    assert payload == PAYLOAD
    # Sig_structure built independently with cbor2 (RFC 9052 §4.4)
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", PAYLOAD])
    key.public_key.verify(signature, to_be_signed)


def test_kid_is_first_8_bytes_of_sha256_of_the_raw_public_key(
        private: Ed25519PrivateKey, key: SigningKey) -> None:
    _, x = raw(private)
    assert key.public_bytes == x
    assert key.kid == hashlib.sha256(x).digest()[:8] == key_id(key.public_key)


def test_our_messages_verify_with_pycose(private: Ed25519PrivateKey, key: SigningKey) -> None:
    _, x = raw(private)
    decoded = pycose_decode(sign1(PAYLOAD, key))
    assert isinstance(decoded, Sign1Message)
    decoded.key = OKPKey(crv=Ed25519, x=x)
    assert decoded.verify_signature()
    assert decoded.payload == PAYLOAD
    assert decoded.get_attr(KID) == key.kid


def test_tampered_message_fails_in_pycose_too(private: Ed25519PrivateKey, key: SigningKey) -> None:
    _, x = raw(private)
    message = bytearray(sign1(PAYLOAD, key))
    message[message.index(b"temperature")] ^= 0x20
    decoded = pycose_decode(bytes(message))
    decoded.key = OKPKey(crv=Ed25519, x=x)
    assert not decoded.verify_signature()


@pytest.mark.parametrize("tag", [True, False])
def test_pycose_messages_verify_with_ours(private: Ed25519PrivateKey, key: SigningKey,
                                         tag: bool) -> None:
    d, x = raw(private)
    message = Sign1Message(phdr={Algorithm: EdDSA, ContentType: 112}, uhdr={KID: key.kid},
                           payload=PAYLOAD)
    message.key = OKPKey(crv=Ed25519, d=d, x=x)
    verified = verify1(message.encode(tag=tag), trusted(key))
    assert verified.payload == PAYLOAD
    assert verified.kid == key.kid
    assert verified.alg == -8
    assert verified.content_type == 112


def test_fully_specified_ed25519_alg_minus_19_is_accepted(key: SigningKey) -> None:
    protected = cbor2.dumps({1: -19})
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", b"hello"]))
    message = cbor2.dumps([protected, {4: key.kid}, b"hello", signature])  # untagged
    assert verify1(message, trusted(key)).alg == -19


def test_kid_in_the_protected_header_is_honoured(key: SigningKey) -> None:
    protected = cbor2.dumps({1: -8, 4: key.kid})
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", b"x"]))
    assert verify1(cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"x", signature])),
                   trusted(key)).payload == b"x"


def test_external_aad_is_part_of_the_signature(key: SigningKey) -> None:
    message = sign1(b"x", key, external_aad=b"context")
    assert verify1(message, trusted(key), external_aad=b"context").payload == b"x"
    with pytest.raises(BadSignatureError):
        verify1(message, trusted(key))


def test_large_payloads_use_the_right_length_heads(key: SigningKey) -> None:
    for size in (23, 24, 255, 256, 65535, 65536):
        payload = os.urandom(size)
        message = sign1(payload, key)
        assert cbor2.loads(message).value[2] == payload
        assert verify1(message, trusted(key)).payload == payload


# ------------------------------------------------------------------------- refusals


def resign(key: SigningKey, protected: dict, unprotected: dict, payload: bytes = b"p") -> bytes:
    body = cbor2.dumps(protected) if protected else b""
    signature = key.sign(cbor2.dumps(["Signature1", body, b"", payload]))
    return cbor2.dumps(cbor2.CBORTag(18, [body, unprotected, payload, signature]))


def test_flipped_payload_bit_is_a_bad_signature(key: SigningKey) -> None:
    message = bytearray(sign1(PAYLOAD, key))
    message[-70] ^= 0x01  # inside the payload (the signature is the last 64 bytes)
    with pytest.raises(BadSignatureError, match="does not verify"):
        verify1(bytes(message), trusted(key))


def test_changed_protected_header_is_a_bad_signature(key: SigningKey) -> None:
    original = list(cbor2.loads(sign1(PAYLOAD, key)).value)
    original[0] = cbor2.dumps({1: -8, 3: 60})  # claims another content type
    with pytest.raises(BadSignatureError):
        verify1(cbor2.dumps(cbor2.CBORTag(18, original)), trusted(key))


def test_signature_by_another_key_with_our_kid_is_refused(key: SigningKey) -> None:
    impostor = SigningKey.generate()
    message = list(cbor2.loads(sign1(PAYLOAD, impostor)).value)
    message[1] = {4: key.kid}
    with pytest.raises(BadSignatureError):
        verify1(cbor2.dumps(cbor2.CBORTag(18, message)), trusted(key))


def test_unknown_kid_is_refused(key: SigningKey) -> None:
    with pytest.raises(UnknownKeyError, match="unknown kid"):
        verify1(sign1(PAYLOAD, SigningKey.generate()), trusted(key))
    with pytest.raises(UnknownKeyError, match="no 'kid'"):
        verify1(resign(key, {1: -8}, {}), trusted(key))


def test_unsupported_algorithm_is_refused(key: SigningKey) -> None:
    with pytest.raises(UnsupportedAlgorithmError, match="-7"):
        verify1(resign(key, {1: -7}, {4: key.kid}), trusted(key))
    with pytest.raises(UnsupportedAlgorithmError, match="no 'alg'"):
        verify1(resign(key, {}, {4: key.kid}), trusted(key))


def test_pycose_es256_message_is_refused_as_unsupported(key: SigningKey) -> None:
    from pycose.keys import EC2Key
    from pycose.keys.curves import P256

    ec_key = ec.generate_private_key(ec.SECP256R1())
    numbers = ec_key.private_numbers()
    message = Sign1Message(phdr={Algorithm: Es256}, uhdr={KID: key.kid}, payload=b"x")
    message.key = EC2Key(crv=P256, d=numbers.private_value.to_bytes(32, "big"),
                         x=numbers.public_numbers.x.to_bytes(32, "big"),
                         y=numbers.public_numbers.y.to_bytes(32, "big"))
    with pytest.raises(UnsupportedAlgorithmError):
        verify1(message.encode(), trusted(key))


def test_critical_header_not_understood_is_refused(key: SigningKey) -> None:
    with pytest.raises(CriticalHeaderError, match=r"\[99\]"):
        verify1(resign(key, {1: -8, 2: [99], 99: 1}, {4: key.kid}), trusted(key))
    # crit naming headers we do understand is fine
    assert verify1(resign(key, {1: -8, 2: [3], 3: 112}, {4: key.kid}), trusted(key))


@pytest.mark.parametrize(
    ("protected", "unprotected", "message"),
    [
        ({1: -8}, {1: -8}, "both protected and unprotected"),
        ({}, {1: -8}, "'alg' must be in the protected header"),
        ({1: -8}, {2: [1]}, "'crit' must be in the protected header"),
        ({1: -8, 2: []}, {}, "non-empty array"),
        ({1: -8}, {4: "text-kid"}, "'kid' must be a byte string"),
    ],
)
def test_malformed_headers_are_refused(key: SigningKey, protected: dict, unprotected: dict,
                                       message: str) -> None:
    if 4 not in unprotected and 4 not in protected:
        unprotected = {**unprotected, 4: key.kid}
    with pytest.raises(MalformedHeaderError, match=message):
        verify1(resign(key, protected, unprotected), trusted(key))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotCborError),
        (b"\xd2", NotCborError),
        (cbor2.dumps(cbor2.CBORTag(98, [b"", {}, b"", []])), NotSign1Error),  # COSE_Sign
        (cbor2.dumps([b"", {}, b""]), NotSign1Error),
        (cbor2.dumps({"not": "cose"}), NotSign1Error),
        (cbor2.dumps([b"", {}, None, b"s" * 64]), NotSign1Error),  # detached
        (cbor2.dumps(["x", {}, b"", b""]), NotSign1Error),
        (cbor2.dumps([cbor2.dumps([1]), {}, b"", b""]), MalformedHeaderError),
    ],
)
def test_not_a_sign1_message(key: SigningKey, data: bytes, error: type[CoseError]) -> None:
    with pytest.raises(error):
        verify1(data, trusted(key))


def test_truncated_signature(key: SigningKey) -> None:
    parts = list(cbor2.loads(sign1(b"x", key)).value)
    parts[3] = parts[3][:63]
    with pytest.raises(BadSignatureError, match="64 bytes"):
        verify1(cbor2.dumps(parts), trusted(key))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_cose_errors(data: bytes) -> None:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
    try:
        verify1(data, trusted(key))
    except CoseError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2000))
def test_any_single_byte_change_is_caught(payload: bytes, where: int) -> None:
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
    message = bytearray(sign1(payload, key))
    message[where % len(message)] ^= 0x01
    with pytest.raises(CoseError):
        verify1(bytes(message), trusted(key))


# ------------------------------------------------------------------------- key files


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_generated_key_is_0600_with_a_0644_public_key_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing-key.pem"
    key = generate_signing_key(path)
    assert mode(path) == 0o600
    assert mode(path.with_name("signing-key.pem.pub")) == 0o644
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    loaded = load_signing_key(path)
    assert loaded.kid == key.kid
    public = load_public_key(path.with_name("signing-key.pem.pub"))
    assert key_id(public) == key.kid
    assert verify1(sign1(b"x", loaded), {key.kid: public}).payload == b"x"


def test_key_is_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        generate_signing_key(tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert mode(tmp_path / "k.pem") == 0o600


def test_existing_key_is_not_overwritten_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    first = generate_signing_key(path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_signing_key(path)
    assert load_signing_key(path).kid == first.kid
    second = generate_signing_key(path, force=True)
    assert second.kid != first.kid
    assert load_signing_key(path).kid == second.kid
    assert mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pem.pub"]  # no temp left


def test_group_or_world_readable_private_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_signing_key(path)
    pem = path.read_text()
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as info:
        load_signing_key(path)
    message = str(info.value)
    assert "readable by group or others (mode 0644)" in message
    assert f"chmod 600 {path}" in message
    assert "PRIVATE KEY" not in message and pem.splitlines()[1] not in message
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="mode 0640"):
        load_signing_key(path)


def test_missing_key_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cityedge gateway init"):
        load_signing_key(tmp_path / "absent.pem")


def test_key_of_another_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="expected an Ed25519 key"):
        load_signing_key(path)


def test_garbage_and_encrypted_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_text("hello\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        load_signing_key(path)
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(KeyFileError, match="encrypted"):
        load_signing_key(path)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    generate_signing_key(path)
    path.chmod(0o000)
    with pytest.raises(KeyFileError, match="permission denied"):
        load_signing_key(path)


def test_signing_key_repr_shows_only_the_kid(key: SigningKey) -> None:
    assert repr(key) == f"SigningKey(kid={key.kid.hex()})"
