"""From committed records to the hypervisor: SenML CBOR packs, COSE_Sign1 signatures, MQTT.

``senml`` and ``cose`` are imported eagerly (the store needs the SenML encoder); the MQTT side
(``Publisher``, ``Forwarder``) is loaded on first use, which keeps ``gateway.store`` free of an
import cycle and tools that only verify messages free of aiomqtt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.uplink.cose import CoseError, Verified, sign1, verify1
from gateway.uplink.senml import SenMLError, decode_pack, encode_pack

if TYPE_CHECKING:
    from gateway.uplink.forwarder import Forwarder
    from gateway.uplink.mqtt import Publisher, PublisherError

__all__ = [
    "CoseError",
    "Forwarder",
    "Publisher",
    "PublisherError",
    "SenMLError",
    "Verified",
    "decode_pack",
    "encode_pack",
    "sign1",
    "verify1",
]

_LAZY = {
    "Forwarder": "gateway.uplink.forwarder",
    "Publisher": "gateway.uplink.mqtt",
    "PublisherError": "gateway.uplink.mqtt",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.uplink' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
