"""The command envelope and map from hostile input: arbitrary bytes, arbitrary CBOR, signed or
not, on any topic level, never crash the intake; each is a Rejected with a known reason whose
status record encodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.commands import REJECTION_REASONS
from gateway.commands.intake import Accepted, Rejected
from gateway.commands.message import MessageError, read_command
from gateway.commands.status import rejection_record
from gateway.keys import SigningKey
from gateway.uplink.cose import CONTENT_SENML_CBOR, sign1
from gateway.uplink.senml import decode_pack, encode_pack
from tests.fixtures.commands import GW, LAMP1, NOW, Gateway, command, open_gateway, sign

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.just(10**400) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4),
    max_leaves=12,
)
command_fields = st.dictionaries(
    st.sampled_from(["id", "action", "args", "iat", "exp", "target", "extra"]),
    cbor_values | st.sampled_from(["c1", "dim", LAMP1, NOW, NOW + 60]) | st.just({"level": 5}),
    max_size=7,
)
targets = st.text(max_size=80) | st.sampled_from([LAMP1, "street", "ghosts"])

def _flip_last(message: bytes) -> bytes:
    """The message with the last byte of its signature changed (always a different byte)."""
    return message[:-1] + bytes([message[-1] ^ 0x01])



@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = open_gateway(tmp_path_factory.mktemp("gw"))
    yield g
    g.store.close()


def check(gw: Gateway, payload: bytes, target: str, kind: str = "cmd") -> Accepted | Rejected:
    result = gw.intake.check(kind, target, payload)  # type: ignore[arg-type]
    if isinstance(result, Rejected):
        assert result.reason in REJECTION_REASONS
        record = rejection_record(GW, result.target, result.reason, result.detail, NOW,
                                  cmd_id=result.cmd_id, action=result.action,
                                  key_name=result.key_name)
        fields = {r["n"]: r.get("vs") for r in decode_pack(encode_pack(record.records or []))}
        assert fields["reason"] == result.reason
    return result


@SETTINGS
@given(payload=st.binary(max_size=300), target=targets, group=st.booleans())
def test_arbitrary_bytes_are_rejected(gw: Gateway, payload: bytes, target: str,
                                      group: bool) -> None:
    result = check(gw, payload, target, "cmd-group" if group else "cmd")
    assert isinstance(result, Rejected)


@SETTINGS
@given(item=cbor_values, tag=st.sampled_from([None, 18, 98, 1]))
def test_arbitrary_cbor_as_the_envelope_is_malformed(gw: Gateway, item: Any,
                                                     tag: int | None) -> None:
    payload = cbor2.dumps(item if tag is None else cbor2.CBORTag(tag, item))
    result = check(gw, payload, LAMP1)
    assert isinstance(result, Rejected) and result.reason in (
        "malformed", "unknown_key", "bad_signature")


@SETTINGS
@given(body=cbor_values | command_fields, target=targets)
def test_arbitrary_signed_cbor_never_crashes(gw: Gateway, body: Any, target: str) -> None:
    check(gw, sign(gw.operator, body), target)


@SETTINGS
@given(data=st.data())
def test_any_altered_byte_of_a_signed_command_is_refused(gw: Gateway, data: st.DataObject) -> None:
    payload = bytearray(sign(gw.operator, command("altered")))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] ^= data.draw(st.integers(1, 255))
    result = check(gw, bytes(payload), LAMP1)
    assert isinstance(result, Rejected)
    assert result.reason in ("malformed", "unknown_key", "bad_signature")


def keys_of(key: SigningKey) -> dict[bytes, Any]:
    return {key.kid: key.public_key}


def test_read_command_returns_what_was_signed() -> None:
    key = SigningKey.generate()
    message = read_command(sign(key, command(args={"level": 7})), keys_of(key), LAMP1)
    assert (message.kid, message.cmd_id, message.action, message.args) == (
        key.kid, "c1", "dim", {"level": 7})
    assert (message.issued_at, message.expires_at, message.target) == (NOW, NOW + 600, LAMP1)


@pytest.mark.parametrize(("payload", "reason", "detail"), [
    (lambda k: b"\x00\x01", "malformed", "not a COSE_Sign1"),
    (lambda k: sign1(cbor2.dumps(command()), k, CONTENT_SENML_CBOR), "malformed",
     "content type 60"),
    (lambda k: sign(SigningKey.generate(), command()), "unknown_key", "unknown kid"),
    (lambda k: _flip_last(sign(k, command())), "bad_signature", "does not verify"),
    (lambda k: sign(k, command(extra=1)), "malformed", "unknown key(s) 'extra'"),
    (lambda k: sign(k, {"id": "c1", "action": "dim"}), "malformed", "missing key(s): exp, iat"),
    (lambda k: sign(k, command(target="street")), "malformed", "target does not match"),
    (lambda k: sign(k, command(exp=2e11)), "malformed", "exp must be Unix seconds"),
    (lambda k: sign(k, command(iat=10**400)), "malformed", "iat must be Unix seconds"),
    (lambda k: sign(k, command(exp=float("inf"))), "malformed", "exp must be Unix seconds"),
    (lambda k: sign(k, command(exp=float("nan"))), "malformed", "exp must be Unix seconds"),
])
def test_read_command_says_why(payload: Any, reason: str, detail: str) -> None:
    key = SigningKey.generate()
    with pytest.raises(MessageError) as info:
        read_command(payload(key), keys_of(key), LAMP1)
    assert info.value.reason == reason
    assert detail in info.value.detail


def test_a_refusal_after_the_id_was_read_carries_the_id_and_action() -> None:
    key = SigningKey.generate()
    with pytest.raises(MessageError) as info:
        read_command(sign(key, command(target="elsewhere")), keys_of(key), LAMP1)
    assert (info.value.cmd_id, info.value.action) == ("c1", "dim")


def test_an_odd_topic_level_gets_its_rejection_on_a_safe_one(tmp_path: Path) -> None:
    gw = open_gateway(tmp_path)
    try:
        result = gw.submit(command(target="rue de la république"), target="rue de la république",
                           kind="cmd-group")
        assert isinstance(result, Rejected) and result.reason == "unknown_device"
        (status,) = gw.statuses()
        assert status["topic_level"] == "invalid-target"
        assert status["target"] == "rue de la république"
    finally:
        gw.store.close()
