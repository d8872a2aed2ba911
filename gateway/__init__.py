"""The cityedge gateway agent (CPython, asyncio, Raspberry Pi): radio -> LoRaWAN checks -> durable
store -> signed SenML over MQTT to the hypervisor.

Subpackages follow a frame through the gateway: ``radio`` (front ends), ``lorawan`` (network
side), ``store`` (SQLite, commit = received), ``uplink`` (SenML CBOR, COSE_Sign1, MQTT).
This package re-exports the names the agent and the command line wire together.
"""

from gateway.config import ConfigError, GatewayConfig, default_config, load_config, write_config
from gateway.keys import (
    KeyFileError,
    SigningKey,
    generate_signing_key,
    load_public_key,
    load_signing_key,
)
from gateway.store import Accepted, Device, NewRecord, Store, StoreError, StoreFullError

__all__ = [
    "Accepted",
    "ConfigError",
    "Device",
    "GatewayConfig",
    "KeyFileError",
    "NewRecord",
    "SigningKey",
    "Store",
    "StoreError",
    "StoreFullError",
    "default_config",
    "generate_signing_key",
    "load_config",
    "load_public_key",
    "load_signing_key",
    "write_config",
]
