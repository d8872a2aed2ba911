"""The gateway's durable store: device registry and the queue of records waiting for the broker.

An uplink counts as received once ``Store.accept_uplinks`` has committed it; the forwarder
deletes a record only after the broker acknowledged it. See ``gateway.store.db`` for the
threading and durability choices; ``gateway.store.commands`` keeps the command path's rows.
"""

from gateway.store.commands import CommandStoreMixin
from gateway.store.db import Store
from gateway.store.model import (
    KINDS,
    Accepted,
    Device,
    DeviceConflictError,
    DeviceError,
    NewRecord,
    RetentionResult,
    StoreCorruptWarning,
    StoredRecord,
    StoreError,
    StoreFullError,
    StoreRecovery,
    StoreStats,
)
from gateway.store.reader import BacklogReader, Plan

__all__ = [
    "KINDS",
    "Accepted",
    "BacklogReader",
    "CommandStoreMixin",
    "Device",
    "DeviceConflictError",
    "DeviceError",
    "NewRecord",
    "Plan",
    "RetentionResult",
    "Store",
    "StoreCorruptWarning",
    "StoreError",
    "StoreFullError",
    "StoreRecovery",
    "StoreStats",
    "StoredRecord",
]
