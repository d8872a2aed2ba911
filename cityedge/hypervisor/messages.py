"""What the gateway publishes, as the hypervisor receives it: every signature verified, SenML decoded.

`cityedge hypervisor watch` prints what arrives; the demo's live view uses the same iterator.
A message whose signature does not verify is shown as such and never decoded as data.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.keys import key_id, load_public_key
from gateway.uplink import cose, senml


@dataclass
class HypervisorMessage:
    """One message as the hypervisor sees it: where from, verified or not, and what it says."""

    topic: str
    gateway_id: str
    kind: str  # up, event, status, cmd-status
    dev_eui: str | None
    verified: bool
    kid: str | None = None
    error: str | None = None
    records: list[dict] = field(default_factory=list)
    status: dict | None = None
    received_at: float = field(default_factory=time.time)

    def values(self) -> dict[str, float | str | bool]:
        """Resolved record names (base name stripped) to their values."""
        out: dict[str, float | str | bool] = {}
        for rec in resolve(self.records):
            name = rec["n"].rsplit(":", 1)[-1]
            for k in ("v", "vs", "vb", "vd"):
                if k in rec:
                    out[name] = rec[k]
        return out

    @property
    def historical(self) -> bool:
        return any(r.get("hist") for r in self.records)


def resolve(records: list[dict]) -> list[dict]:
    """RFC 8428 §4.6 resolution: each record with its full name and absolute time."""
    out = []
    bn, bt = "", 0.0
    for rec in records:
        bn = rec.get("bn", bn)
        bt = rec.get("bt", bt)
        if "n" not in rec and not any(k in rec for k in ("v", "vs", "vb", "vd")):
            continue
        r = dict(rec)
        r["n"] = bn + rec.get("n", "")
        r["t"] = bt + rec.get("t", 0.0)
        out.append(r)
    return out


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """(gateway_id, kind, dev_eui) from `<prefix...>/<gateway_id>/<kind>[/<dev_eui>]`.

    With a custom prefix the "gateway_id" is the prefix's last level; a topic too short to say
    gives empty strings (the message is then reported, not decoded)."""
    parts = topic.split("/")
    if parts[-1] == "status":
        return (parts[-2] if len(parts) > 1 else ""), "status", None
    if len(parts) < 3:
        return "", "", parts[-1]
    return parts[-3], parts[-2], parts[-1]


# Topics the gateway subscribes to: commands *to* it, signed by operators, not by a gateway.
INBOUND_KINDS = frozenset({"cmd", "cmd-group"})


def decode_message(
    topic: str, payload: bytes, keys: Mapping[bytes, Ed25519PublicKey]
) -> HypervisorMessage:
    """Verify and decode one MQTT message; failures are reported in the result, not raised."""
    gateway_id, kind, dev_eui = parse_topic(topic)
    msg = HypervisorMessage(topic, gateway_id, kind, dev_eui, verified=False)
    if kind in INBOUND_KINDS:
        msg.error = "an operator's command to the gateway, not a gateway message"
        return msg
    try:
        verified = cose.verify1(payload, keys)
    except cose.CoseError as exc:
        msg.error = str(exc)
        return msg
    msg.verified = True
    msg.kid = verified.kid.hex()
    try:
        if kind == "status":
            status = cbor2.loads(verified.payload)
            if not isinstance(status, dict):
                raise senml.SenMLError("status is not a CBOR map")
            msg.status = status
        else:
            msg.records = senml.decode_pack(verified.payload)
    except (senml.SenMLError, cbor2.CBORDecodeError) as exc:
        msg.error = f"signature ok but content unreadable: {exc}"
    return msg


def load_keys(paths: list[str]) -> dict[bytes, Ed25519PublicKey]:
    """kid -> public key for the gateways' ``.pub`` files (KeyFileError names a bad one)."""
    keys = {}
    for p in paths:
        pub = load_public_key(Path(p))
        keys[key_id(pub)] = pub
    return keys


async def messages(
    client: aiomqtt.Client, prefix: str, keys: Mapping[bytes, Ed25519PublicKey]
) -> AsyncIterator[HypervisorMessage]:
    """Subscribe to everything under ``prefix`` and yield each message verified and decoded."""
    await client.subscribe(f"{prefix}/#", qos=1)
    async for m in client.messages:
        yield decode_message(str(m.topic), bytes(m.payload), keys)
