"""The values the store keeps and hands back: devices, uplinks to commit, stored records, errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "DEV_NONCE_MODES",
    "KINDS",
    "Accepted",
    "Device",
    "DeviceConflictError",
    "DeviceError",
    "NewRecord",
    "RetentionResult",
    "StoreCorruptWarning",
    "StoreError",
    "StoreFullError",
    "StoreRecovery",
    "StoreStats",
    "StoredRecord",
]

RecordKind = Literal["up", "event", "cmd-status", "status"]
KINDS: Final = ("up", "event", "cmd-status", "status")
DevClass = Literal["A", "C"]
DevNonceMode = Literal["increasing", "unique"]
DEV_NONCE_MODES: Final = ("increasing", "unique")

_HEX16 = re.compile(r"[0-9a-f]{16}")
_HEX8 = re.compile(r"[0-9a-f]{8}")
MAX_RID_LENGTH: Final = 256


class StoreError(Exception):
    """The durable store could not do what was asked; the message says what and where."""


class StoreFullError(StoreError):
    """The database (or its disk) is full: the write was rolled back, nothing half-stored."""


class DeviceError(ValueError):
    """A device entry has an invalid field (the message names it, never a key's value)."""


class DeviceConflictError(StoreError):
    """Another device already uses this DevAddr."""


class StoreCorruptWarning(UserWarning):
    """The database file failed its integrity check and was moved aside; a fresh one is in use."""


@dataclass(frozen=True, slots=True)
class StoreRecovery:
    """What ``Store.open`` did with a damaged file: nothing is deleted, only renamed."""

    original: str
    moved_to: str
    reason: str


def _mask(value: bytes | None) -> str:
    return "None" if value is None else f"<{len(value)} bytes>"


def _check_key(name: str, value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray) or len(value) != 16:
        raise DeviceError(f"{name} must be 16 bytes (an AES-128 key)")
    return bytes(value)


@dataclass(slots=True, repr=False)
class Device:
    """One registered node: identity, session keys, frame counters, class and where it stands.

    ``fcnt_up`` is the last accepted 32-bit uplink counter (-1 before the first uplink);
    ``fcnt_down`` the downlink counters' high-water mark: every counter below it may have been
    used (reserved in blocks before any is sent, so one is never reused). OTAA: ``app_key`` (+ optional ``join_eui``) lets the device join;
    ``dev_nonce_mode`` says how its DevNonces are checked ("increasing": LoRaWAN 1.0.4 counter,
    "unique": 1.0.2/1.0.3 random values never reused); ``last_dev_nonce``/``join_nonce`` are
    the last accepted DevNonce and the last JoinNonce sent. ``mac_state`` is the network side's
    JSON-able MAC state of the session (no keys). Keys are raw bytes; ``repr`` masks them so a
    device can be logged safely.
    """

    dev_eui: str
    role: str
    dev_addr: str | None = None
    name: str | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None
    app_key: bytes | None = None
    fcnt_up: int = -1
    fcnt_down: int = 0
    dev_class: DevClass = "A"
    latitude: float | None = None
    longitude: float | None = None
    location: str | None = None
    asset_id: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    join_eui: str | None = None
    dev_nonce_mode: DevNonceMode = "increasing"
    last_dev_nonce: int = -1
    join_nonce: int = 0
    mac_state: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        eui = self.dev_eui.lower() if isinstance(self.dev_eui, str) else ""
        if not _HEX16.fullmatch(eui):
            raise DeviceError(f"dev_eui {self.dev_eui!r}: expected 16 hex digits (an EUI-64)")
        self.dev_eui = eui
        if self.dev_addr is not None:
            addr = self.dev_addr.lower() if isinstance(self.dev_addr, str) else ""
            if not _HEX8.fullmatch(addr):
                raise DeviceError(f"dev_addr {self.dev_addr!r}: expected 8 hex digits")
            self.dev_addr = addr
        if not isinstance(self.role, str) or not self.role:
            raise DeviceError(f"device {eui}: role must be a non-empty string")
        self.nwk_s_key = _check_key("nwk_s_key", self.nwk_s_key)
        self.app_s_key = _check_key("app_s_key", self.app_s_key)
        self.app_key = _check_key("app_key", self.app_key)
        if self.dev_class not in ("A", "C"):
            raise DeviceError(f"device {eui}: dev_class {self.dev_class!r}: expected 'A' or 'C'")
        if not isinstance(self.fcnt_up, int) or not -1 <= self.fcnt_up <= 0xFFFFFFFF:
            raise DeviceError(f"device {eui}: fcnt_up must be -1 or a 32-bit counter")
        if not isinstance(self.fcnt_down, int) or not 0 <= self.fcnt_down <= 0xFFFFFFFF:
            raise DeviceError(f"device {eui}: fcnt_down must be a 32-bit counter")
        if self.join_eui is not None:
            join = self.join_eui.lower() if isinstance(self.join_eui, str) else ""
            if not _HEX16.fullmatch(join):
                raise DeviceError(f"device {eui}: join_eui {self.join_eui!r}: expected 16 hex "
                                  "digits (an EUI-64)")
            self.join_eui = join
        if self.dev_nonce_mode not in DEV_NONCE_MODES:
            raise DeviceError(f"device {eui}: dev_nonce_mode {self.dev_nonce_mode!r}: expected "
                              "'increasing' (LoRaWAN 1.0.4) or 'unique' (1.0.2/1.0.3)")
        if not isinstance(self.last_dev_nonce, int) or not -1 <= self.last_dev_nonce <= 0xFFFF:
            raise DeviceError(f"device {eui}: last_dev_nonce must be -1 or 0..65535")
        if not isinstance(self.join_nonce, int) or not 0 <= self.join_nonce <= 0xFFFFFF:
            raise DeviceError(f"device {eui}: join_nonce must be a 24-bit counter")
        if self.mac_state is not None and not isinstance(self.mac_state, dict):
            raise DeviceError(f"device {eui}: mac_state must be a dict or None")

    @property
    def otaa(self) -> bool:
        """True when the device can join over the air (it has an AppKey)."""
        return self.app_key is not None

    def __repr__(self) -> str:
        return (
            f"Device(dev_eui={self.dev_eui!r}, role={self.role!r}, dev_addr={self.dev_addr!r}, "
            f"name={self.name!r}, nwk_s_key={_mask(self.nwk_s_key)}, "
            f"app_s_key={_mask(self.app_s_key)}, app_key={_mask(self.app_key)}, "
            f"fcnt_up={self.fcnt_up}, fcnt_down={self.fcnt_down}, dev_class={self.dev_class!r}, "
            f"latitude={self.latitude!r}, longitude={self.longitude!r}, "
            f"location={self.location!r}, asset_id={self.asset_id!r}, "
            f"join_eui={self.join_eui!r}, dev_nonce_mode={self.dev_nonce_mode!r})"
        )

    __str__ = __repr__


def _check_record_fields(rid: str, kind: str, priority: int) -> None:
    if not isinstance(rid, str) or not rid or len(rid) > MAX_RID_LENGTH:
        raise ValueError(f"record id {rid!r}: expected a non-empty string of at most 256 chars")
    if kind not in KINDS:
        raise ValueError(f"record {rid}: kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"record {rid}: priority {priority!r}: expected an integer 0..9")


@dataclass(frozen=True, slots=True)
class Accepted:
    """An uplink the network side accepted: commit it and advance the device's counter.

    Give either ``records`` (SenML dicts, encoded to CBOR by the store) or ready ``body`` bytes.
    ``rid`` is "<gateway_id>:<dev_eui>:<fcnt32>[:<n>]": the same frame heard twice has the same id.
    """

    dev_eui: str
    fcnt_up: int
    rid: str
    kind: RecordKind = "up"
    priority: int = 0
    created_at: float | None = None
    records: list[dict[str, Any]] | None = field(default=None, compare=False)
    body: bytes | None = None
    fport: int | None = None

    def __post_init__(self) -> None:
        _check_record_fields(self.rid, self.kind, self.priority)
        if not isinstance(self.fcnt_up, int) or not 0 <= self.fcnt_up <= 0xFFFFFFFF:
            raise ValueError(f"record {self.rid}: fcnt_up must be a 32-bit counter")
        if (self.records is None) == (self.body is None):
            raise ValueError(f"record {self.rid}: give exactly one of records or body")


@dataclass(frozen=True, slots=True)
class NewRecord:
    """An event, command status or status report to store for forwarding (no counter involved)."""

    rid: str
    dev_eui: str
    kind: RecordKind
    records: list[dict[str, Any]] | None = field(default=None, compare=False)
    body: bytes | None = None
    priority: int = 0
    created_at: float | None = None

    def __post_init__(self) -> None:
        _check_record_fields(self.rid, self.kind, self.priority)
        if (self.records is None) == (self.body is None):
            raise ValueError(f"record {self.rid}: give exactly one of records or body")


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record waiting for the broker; ``seq`` is its place in the send order."""

    seq: int
    rid: str
    dev_eui: str
    kind: RecordKind
    priority: int
    created_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What ``enforce_retention`` dropped (routine records only) and what it had to keep."""

    dropped_by_age: int
    dropped_by_count: int
    remaining: int
    over_limit: int  # records above max_records that are priority >= 1 and were kept

    @property
    def dropped(self) -> int:
        return self.dropped_by_age + self.dropped_by_count


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A snapshot for the status page and logs."""

    records: int
    routine: int
    priority: int
    oldest_created_at: float | None
    devices: int
    db_bytes: int
    sessions: int
