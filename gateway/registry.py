"""The node registry file: what provisioning exports and `cityedge gateway nodes import` reads.

Format (``docs/registry.md``): JSON Lines, UTF-8. Line 1 is a header object
``{"cityedge_registry": 1, ...}``; every further non-blank line is one node. Keys travel as 32 hex
digits, so the file is written with mode 0600 and atomically (temporary name, fsync, rename).

Parsing is done at the edge: ``parse_registry`` turns arbitrary text into validated
``RegistryEntry`` values or raises ``RegistryError`` naming the file, the line, the field and what
was expected. Messages never contain a key's value, only the key field's name.

``plan_import`` compares entries with the store (added / updated / unchanged / conflicting) so the
command line can refuse or apply an import as a whole.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from gateway.store.model import Device

__all__ = [
    "ACTIVATIONS",
    "CLASSES",
    "DEV_NONCE_MODES",
    "FORMAT_VERSION",
    "KEY_FIELDS",
    "ROLES",
    "ImportPlan",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "apply_plan",
    "device_for",
    "entry_from_device",
    "entry_from_fields",
    "entry_to_row",
    "parse_eui",
    "parse_key",
    "parse_registry",
    "plan_import",
    "read_registry",
    "serialize_registry",
    "write_registry",
]

FORMAT_VERSION: Final = 1
HEADER_KEY: Final = "cityedge_registry"
ROLES: Final = ("air", "noise", "soil", "lighting")
CLASSES: Final = ("A", "C")
ACTIVATIONS: Final = ("otaa", "abp")
DEV_NONCE_MODES: Final = ("increasing", "unique")
KEY_FIELDS: Final = ("app_key", "nwk_s_key", "app_s_key")
MAX_TEXT: Final = 200  # name, asset_id, location
MAX_LINE: Final = 64 * 1024

_HEX = re.compile(r"[0-9a-fA-F]+")
_SEPARATORS = re.compile(r"[\s:\-]")
_HEADER_FIELDS: Final = ("cityedge_registry", "created_at", "created_by", "gateway_id", "count")
_ROW_FIELDS: Final = (
    "dev_eui", "role", "class", "activation", "name", "asset_id", "location", "latitude",
    "longitude", "join_eui", "app_key", "dev_nonce_mode", "dev_addr", "nwk_s_key", "app_s_key",
    "fcnt_up", "fcnt_down",
)
_OTAA_ONLY: Final = ("join_eui", "app_key", "dev_nonce_mode")
_ABP_ONLY: Final = ("dev_addr", "nwk_s_key", "app_s_key", "fcnt_up", "fcnt_down")


class RegistryError(ValueError):
    """A registry file (or one row of it) is unusable; names file, line and field, never a key."""

    def __init__(self, source: str, line: int | None, field_name: str | None,
                 problem: str) -> None:
        self.source = source
        self.line = line
        self.field = field_name
        self.problem = problem
        where = source if line is None else f"{source}: line {line}"
        what = f"{field_name}: {problem}" if field_name else problem
        super().__init__(f"{where}: {what}")


class _FieldError(ValueError):
    """A bad value in one field; turned into a RegistryError with file and line by the caller."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


@dataclass(frozen=True, slots=True, repr=False)
class RegistryEntry:
    """One node as registered: identity, role, class, where it stands, and its activation keys.

    OTAA entries carry ``app_key`` (and usually ``join_eui``); ABP entries carry ``dev_addr``,
    ``nwk_s_key`` and ``app_s_key`` and may carry their frame counters. ``repr`` masks keys.
    """

    dev_eui: str
    role: str
    dev_class: str
    activation: str
    name: str | None = None
    asset_id: str | None = None
    location: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    join_eui: str | None = None
    app_key: bytes | None = None
    dev_nonce_mode: str = "increasing"
    dev_addr: str | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None
    fcnt_up: int | None = None
    fcnt_down: int | None = None

    def keys(self) -> dict[str, bytes | None]:
        """The activation keys by field name (for comparison, never for display)."""
        return {"app_key": self.app_key, "nwk_s_key": self.nwk_s_key,
                "app_s_key": self.app_s_key}

    def __repr__(self) -> str:
        masked = ", ".join(f"{k}={'<set>' if v else None}" for k, v in self.keys().items())
        return (f"RegistryEntry(dev_eui={self.dev_eui!r}, role={self.role!r}, "
                f"class={self.dev_class!r}, activation={self.activation!r}, "
                f"dev_addr={self.dev_addr!r}, join_eui={self.join_eui!r}, {masked})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Registry:
    """A parsed registry file: its header fields and its entries in file order."""

    entries: tuple[RegistryEntry, ...]
    lines: tuple[int, ...] = ()  # the file line of each entry, for messages
    gateway_id: str | None = None
    created_at: str | None = None
    created_by: str | None = None


# --------------------------------------------------------------------------------------------
# Field checks: each takes a raw JSON value and returns the typed one or raises _FieldError


_KEYLIKE = re.compile(r"[0-9a-fA-F]{32}")


def _show(value: Any) -> str:
    """A value for an error message: JSON-ish, printable, at most 40 characters, and never
    anything that looks like a key (a key pasted into the wrong field stays hidden)."""
    if isinstance(value, str) and _KEYLIKE.search(_SEPARATORS.sub("", value)):
        return "(a value of 32 or more hex digits, not shown)"
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _safe_name(name: str) -> str:
    """A field name as it may appear in a message (shortened; hidden if it looks like a key)."""
    return "(unnamed)" if _KEYLIKE.search(name) else name[:40]


def _hex_id(name: str, value: Any, digits: int, what: str) -> str:
    """``digits`` hex digits, lower case, separators (':' '-' spaces) removed."""
    if isinstance(value, str):
        clean = _SEPARATORS.sub("", value).lower()
        if len(clean) == digits and _HEX.fullmatch(clean):
            return clean
    raise _FieldError(name, f"{_show(value)}: expected {digits} hex digits ({what})")


def _eui(name: str, value: Any) -> str:
    return _hex_id(name, value, 16, "an EUI-64")


def parse_eui(name: str, value: Any) -> str:
    """An EUI-64 as 16 lower-case hex digits (':' '-' and spaces allowed); ValueError naming
    ``name`` otherwise."""
    return _eui(name, value)


def _dev_addr(name: str, value: Any) -> str:
    return _hex_id(name, value, 8, "a DevAddr")


def parse_key(name: str, value: Any) -> bytes:
    """A 16-byte AES key from 32 hex digits (spaces, ':' and '-' allowed); the message never
    shows the value."""
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string of 32 hex digits (a 16-byte AES key), "
                                f"got a {_json_type(value)}")
    clean = _SEPARATORS.sub("", value)
    if len(clean) != 32 or not _HEX.fullmatch(clean):
        detail = "" if _HEX.fullmatch(clean or "x") else ", not all hex"
        raise _FieldError(name, f"expected 32 hex digits (a 16-byte AES key), got "
                                f"{len(clean)} characters{detail}")
    key = bytes.fromhex(clean)
    if key == bytes(16):
        raise _FieldError(name, "the key is all zeros; expected a random key "
                                "(generate one with `cityedge provision`)")
    return key


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _choice(name: str, value: Any, options: Sequence[str], *, fold: bool = True) -> str:
    if isinstance(value, str):
        text = value.lower() if fold else value.upper()
        if text in options:
            return text
    raise _FieldError(name, f"{_show(value)}: expected one of {', '.join(options)}")


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string, got a {_json_type(value)}")
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise _FieldError(name, f"expected at most {MAX_TEXT} characters, got {len(text)}")
    if any(not ch.isprintable() for ch in text):
        raise _FieldError(name, "expected printable text (no control characters)")
    return text or None


def _coordinate(name: str, value: Any, limit: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(name, f"expected a number of degrees, got a {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if math.isnan(number) or not -limit <= number <= limit:
        raise _FieldError(name, f"{_show(value)}: expected degrees from {-limit:g} to {limit:g}")
    return number


def _counter(name: str, value: Any, lo: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 0xFFFFFFFF:
        raise _FieldError(name, f"{_show(value)}: expected an integer from {lo} to 4294967295")
    return value


def entry_from_fields(data: Mapping[str, Any], *,
                      default_dev_nonce_mode: str = "increasing") -> RegistryEntry:
    """Validate one node's fields (a file row or the command line's options) into an entry.

    An OTAA node without ``dev_nonce_mode`` gets ``default_dev_nonce_mode`` (the gateway's
    ``[lorawan] dev_nonce_mode``). Raises ``_FieldError`` (a ValueError naming the field) on the first bad field.
    """
    for name in data:
        if name not in _ROW_FIELDS and not name.startswith("x_"):
            close = difflib.get_close_matches(name, _ROW_FIELDS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else (
                "known fields: " + ", ".join(_ROW_FIELDS) + " (and x_* for your own notes)")
            raise _FieldError(_safe_name(name), f"unknown field; {hint}")
    if "dev_eui" not in data:
        raise _FieldError("dev_eui", "missing; expected 16 hex digits (an EUI-64)")
    dev_eui = _eui("dev_eui", data["dev_eui"])
    if "role" not in data:
        raise _FieldError("role", f"missing; expected one of {', '.join(ROLES)}")
    role = _choice("role", data["role"], ROLES)
    default_class = "C" if role == "lighting" else "A"
    dev_class = _choice("class", data.get("class", default_class), CLASSES, fold=False)
    if "activation" not in data:
        raise _FieldError("activation", "missing; expected otaa or abp")
    activation = _choice("activation", data["activation"], ACTIVATIONS)
    common = {
        "dev_eui": dev_eui, "role": role, "dev_class": dev_class, "activation": activation,
        "name": _text("name", data.get("name")),
        "asset_id": _text("asset_id", data.get("asset_id")),
        "location": _text("location", data.get("location")),
        "latitude": _coordinate("latitude", data.get("latitude"), 90.0),
        "longitude": _coordinate("longitude", data.get("longitude"), 180.0),
    }
    if (common["latitude"] is None) != (common["longitude"] is None):
        missing = "longitude" if common["longitude"] is None else "latitude"
        raise _FieldError(missing, "missing; latitude and longitude go together")
    if activation == "otaa":
        for name in _ABP_ONLY:
            if data.get(name) is not None:
                raise _FieldError(name, "is an ABP field; this row has activation otaa")
        if "app_key" not in data or data["app_key"] is None:
            raise _FieldError("app_key", "missing; an OTAA node needs its AppKey (32 hex digits)")
        join_eui = data.get("join_eui")
        return RegistryEntry(
            **common,
            join_eui=None if join_eui is None else _eui("join_eui", join_eui),
            app_key=parse_key("app_key", data["app_key"]),
            dev_nonce_mode=_choice("dev_nonce_mode", data.get("dev_nonce_mode", default_dev_nonce_mode),
                                   DEV_NONCE_MODES),
        )
    for name in _OTAA_ONLY:
        if data.get(name) is not None:
            raise _FieldError(name, "is an OTAA field; this row has activation abp")
    for name, what in (("dev_addr", "8 hex digits (a DevAddr)"),
                       ("nwk_s_key", "32 hex digits (the NwkSKey)"),
                       ("app_s_key", "32 hex digits (the AppSKey)")):
        if data.get(name) is None:
            raise _FieldError(name, f"missing; an ABP node needs {what}")
    return RegistryEntry(
        **common,
        dev_addr=_dev_addr("dev_addr", data["dev_addr"]),
        nwk_s_key=parse_key("nwk_s_key", data["nwk_s_key"]),
        app_s_key=parse_key("app_s_key", data["app_s_key"]),
        fcnt_up=_counter("fcnt_up", data.get("fcnt_up"), -1),
        fcnt_down=_counter("fcnt_down", data.get("fcnt_down"), 0),
    )


# --------------------------------------------------------------------------------------------
# Parsing a file


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(text: str) -> Any:
    """One JSON value, refusing NaN/Infinity (not JSON) and duplicate keys."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"field {_safe_name(key)!r} appears twice")
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=pairs, parse_constant=_reject_constant)


def _parse_line(source: str, number: int, line: str) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise RegistryError(source, number, None,
                            f"line is {len(line)} characters long; expected at most {MAX_LINE}")
    try:
        value = _load_object(line)
    except RecursionError:
        raise RegistryError(source, number, None, "not valid JSON: nested too deeply") from None
    except ValueError as exc:
        # json's messages name a column, never echo the text: safe for lines holding keys.
        problem = str(exc).split(":")[0] if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise RegistryError(source, number, None,
                            f"not valid JSON ({problem}); expected one JSON object per line"
                            ) from None
    if not isinstance(value, dict):
        raise RegistryError(source, number, None,
                            f"expected a JSON object, got a {_json_type(value)}")
    return value


def _parse_header(source: str, number: int, data: dict[str, Any]) -> dict[str, Any]:
    if HEADER_KEY not in data:
        raise RegistryError(
            source, number, None,
            f'expected the header {{"{HEADER_KEY}": {FORMAT_VERSION}, ...}} as the first line '
            "(is this a cityedge registry file?)")
    version = data[HEADER_KEY]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RegistryError(source, number, HEADER_KEY,
                            f"{_show(version)}: expected the format version {FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        raise RegistryError(
            source, number, HEADER_KEY,
            f"format version {version} is not supported; this cityedge reads version "
            f"{FORMAT_VERSION}" + (" (upgrade cityedge)" if version > FORMAT_VERSION else ""))
    for name in data:
        if name not in _HEADER_FIELDS and not name.startswith("x_"):
            raise RegistryError(source, number, _safe_name(name),
                                "unknown header field; known: " + ", ".join(_HEADER_FIELDS))
    out: dict[str, Any] = {}
    for name in ("created_at", "created_by", "gateway_id"):
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise RegistryError(source, number, name, f"expected a string, got a "
                                                      f"{_json_type(value)}")
        out[name] = value
    count = data.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 0):
        raise RegistryError(source, number, "count",
                            f"{_show(count)}: expected the number of nodes in the file")
    out["count"] = count
    return out


def parse_registry(text: str, source: str = "<registry>", *,
                   default_dev_nonce_mode: str = "increasing") -> Registry:
    """Parse and validate a whole registry file; the first problem raises RegistryError.

    Every row is checked before anything is returned, duplicate DevEUIs and DevAddrs within the
    file are refused, and a header ``count`` that disagrees with the rows (a truncated copy) too.
    """
    header: dict[str, Any] | None = None
    entries: list[RegistryEntry] = []
    seen_eui: dict[str, int] = {}
    seen_addr: dict[str, int] = {}
    text = text.removeprefix("\ufeff")  # a byte-order mark from an editor
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        data = _parse_line(source, number, line)
        if header is None:
            header = _parse_header(source, number, data)
            continue
        if HEADER_KEY in data:
            raise RegistryError(source, number, None,
                                "a second header; expected one node per line after the first")
        try:
            entry = entry_from_fields(data, default_dev_nonce_mode=default_dev_nonce_mode)
        except _FieldError as exc:
            raise RegistryError(source, number, exc.field, exc.problem) from None
        if entry.dev_eui in seen_eui:
            raise RegistryError(source, number, "dev_eui",
                                f"{entry.dev_eui} already on line {seen_eui[entry.dev_eui]}; "
                                "expected each node once")
        seen_eui[entry.dev_eui] = number
        if entry.dev_addr is not None:
            if entry.dev_addr in seen_addr:
                raise RegistryError(source, number, "dev_addr",
                                    f"{entry.dev_addr} already used on line "
                                    f"{seen_addr[entry.dev_addr]}; expected a DevAddr per node")
            seen_addr[entry.dev_addr] = number
        entries.append(entry)
    if header is None:
        raise RegistryError(source, None, None,
                            f'empty file; expected a header line {{"{HEADER_KEY}": '
                            f"{FORMAT_VERSION}}} followed by one JSON object per node")
    if header["count"] is not None and header["count"] != len(entries):
        raise RegistryError(source, None, "count",
                            f"the header announces {header['count']} nodes but the file has "
                            f"{len(entries)}; is the file truncated?")
    return Registry(tuple(entries), tuple(seen_eui.values()), header["gateway_id"],
                    header["created_at"], header["created_by"])


def read_registry(path: str | os.PathLike[str], *,
                  default_dev_nonce_mode: str = "increasing") -> Registry:
    """Read and parse a registry file; any problem (including I/O) raises RegistryError."""
    file = Path(path)
    source = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise RegistryError(source, None, None, "no such file") from None
    except IsADirectoryError:
        raise RegistryError(source, None, None, "is a directory; expected a registry file") \
            from None
    except PermissionError:
        raise RegistryError(source, None, None,
                            "permission denied; run as a user that may read it") from None
    except OSError as exc:
        raise RegistryError(source, None, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RegistryError(source, line, None, "not UTF-8 text; expected a UTF-8 JSON Lines "
                                                "file") from None
    return parse_registry(text, source, default_dev_nonce_mode=default_dev_nonce_mode)


# --------------------------------------------------------------------------------------------
# Writing


def entry_to_row(entry: RegistryEntry) -> dict[str, Any]:
    """The JSON object of one node as the file holds it (keys as hex: handle with care)."""
    row: dict[str, Any] = {"dev_eui": entry.dev_eui, "role": entry.role,
                           "class": entry.dev_class, "activation": entry.activation}
    for name in ("name", "asset_id", "location", "latitude", "longitude"):
        value = getattr(entry, name)
        if value is not None:
            row[name] = value
    if entry.activation == "otaa":
        if entry.join_eui is not None:
            row["join_eui"] = entry.join_eui
        row["app_key"] = entry.app_key.hex() if entry.app_key else None
        row["dev_nonce_mode"] = entry.dev_nonce_mode
    else:
        row["dev_addr"] = entry.dev_addr
        row["nwk_s_key"] = entry.nwk_s_key.hex() if entry.nwk_s_key else None
        row["app_s_key"] = entry.app_s_key.hex() if entry.app_s_key else None
        if entry.fcnt_up is not None:
            row["fcnt_up"] = entry.fcnt_up
        if entry.fcnt_down is not None:
            row["fcnt_down"] = entry.fcnt_down
    return row


def serialize_registry(entries: Iterable[RegistryEntry], *, gateway_id: str | None = None,
                       created_by: str = "cityedge gateway nodes export",
                       created_at: str | None = None) -> str:
    """The file text for ``entries`` (header first, one node per line); parses back equal."""
    rows = [entry_to_row(e) for e in entries]
    header: dict[str, Any] = {
        HEADER_KEY: FORMAT_VERSION,
        "created_at": created_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "created_by": created_by,
        "count": len(rows),
    }
    if gateway_id is not None:
        header["gateway_id"] = gateway_id
    lines = [json.dumps(header, ensure_ascii=False, separators=(", ", ": "))]
    lines += [json.dumps(r, ensure_ascii=False, separators=(", ", ": ")) for r in rows]
    return "\n".join(lines) + "\n"


def write_registry(path: str | os.PathLike[str], entries: Iterable[RegistryEntry], *,
                   force: bool = False, gateway_id: str | None = None) -> Path:
    """Write a registry file with mode 0600 (it holds keys), atomically; refuses to overwrite
    an existing file unless ``force``. Raises RegistryError on any problem."""
    file = Path(path)
    if file.exists() and not force:
        raise RegistryError(str(file), None, None,
                            "already exists; use --force to overwrite it")
    text = serialize_registry(entries, gateway_id=gateway_id)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise RegistryError(str(file), None, None,
                            f"cannot write: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RegistryError(str(file), None, None,
                            f"cannot write: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file


# --------------------------------------------------------------------------------------------
# Between entries and the store's devices


def entry_from_device(dev: Device) -> RegistryEntry:
    """The registry entry of a stored device (for export); an ABP device keeps its counters."""
    otaa = dev.app_key is not None
    return RegistryEntry(
        dev_eui=dev.dev_eui, role=dev.role, dev_class=dev.dev_class,
        activation="otaa" if otaa else "abp",
        name=dev.name, asset_id=dev.asset_id, location=dev.location,
        latitude=dev.latitude, longitude=dev.longitude,
        join_eui=dev.join_eui if otaa else None,
        app_key=dev.app_key if otaa else None,
        dev_nonce_mode=dev.dev_nonce_mode,
        dev_addr=None if otaa else dev.dev_addr,
        nwk_s_key=None if otaa else dev.nwk_s_key,
        app_s_key=None if otaa else dev.app_s_key,
        fcnt_up=None if otaa else dev.fcnt_up,
        fcnt_down=None if otaa else dev.fcnt_down,
    )


_DESCRIPTIVE: Final = ("role", "dev_class", "name", "asset_id", "location", "latitude",
                       "longitude")


def _identity_differences(entry: RegistryEntry, dev: Device) -> list[str]:
    """Fields whose change would replace the node's credentials or session (names only)."""
    current = entry_from_device(dev)
    diffs = []
    if current.activation != entry.activation:
        diffs.append("activation")
    if entry.activation == "otaa":
        if current.app_key != entry.app_key:
            diffs.append("app_key")
        if current.join_eui != entry.join_eui:
            diffs.append("join_eui")
        if current.dev_nonce_mode != entry.dev_nonce_mode:
            diffs.append("dev_nonce_mode")
    else:
        for name in ("dev_addr", "nwk_s_key", "app_s_key"):
            if getattr(current, name) != getattr(entry, name):
                diffs.append(name)
    return diffs


def _descriptive_differences(entry: RegistryEntry, dev: Device) -> list[str]:
    """Descriptive fields (role, class, name, place) that differ; changing them keeps the
    session."""
    current = entry_from_device(dev)
    return [("class" if n == "dev_class" else n) for n in _DESCRIPTIVE
            if getattr(current, n) != getattr(entry, n)]


def device_for(entry: RegistryEntry, existing: Device | None) -> Device:
    """The Device to store for ``entry``: a fresh one, or ``existing`` updated.

    Same credentials: descriptive fields change, the session (DevAddr, session keys, counters,
    nonces, MAC state) is kept. New credentials: the session starts over (an OTAA node must
    rejoin; an ABP node's counters restart unless the entry gives them).
    """
    fields: dict[str, Any] = {
        "role": entry.role, "dev_class": entry.dev_class, "name": entry.name,
        "asset_id": entry.asset_id, "location": entry.location,
        "latitude": entry.latitude, "longitude": entry.longitude,
    }
    if existing is not None and not _identity_differences(entry, existing):
        return replace(existing, **fields)
    if entry.activation == "otaa":
        creds: dict[str, Any] = {"app_key": entry.app_key, "join_eui": entry.join_eui,
                                 "dev_nonce_mode": entry.dev_nonce_mode}
    else:
        creds = {
            "dev_addr": entry.dev_addr, "nwk_s_key": entry.nwk_s_key,
            "app_s_key": entry.app_s_key,
            "fcnt_up": -1 if entry.fcnt_up is None else entry.fcnt_up,
            "fcnt_down": 0 if entry.fcnt_down is None else entry.fcnt_down,
        }
    join_nonce = existing.join_nonce if existing is not None else 0  # never goes back
    created_at = existing.created_at if existing is not None else None
    return Device(dev_eui=entry.dev_eui, join_nonce=join_nonce, created_at=created_at,
                  **fields, **creds)


@dataclass(slots=True)
class ImportPlan:
    """What an import would do: entries to add, to update (with the descriptive fields that
    differ), unchanged, conflicting (with the credential fields that differ, never values), and
    entries whose DevAddr another registered node holds (with that node's DevEUI)."""

    added: list[RegistryEntry] = field(default_factory=list)
    updated: list[tuple[RegistryEntry, Device, list[str]]] = field(default_factory=list)
    unchanged: list[RegistryEntry] = field(default_factory=list)
    conflicting: list[tuple[RegistryEntry, Device, list[str]]] = field(default_factory=list)
    addr_clashes: list[tuple[RegistryEntry, str]] = field(default_factory=list)


def plan_import(entries: Sequence[RegistryEntry], devices: Iterable[Device]) -> ImportPlan:
    """Compare entries with the registered devices: added, updated (descriptive fields only),
    unchanged, conflicting (other keys or DevAddr), and DevAddrs held by another device."""
    by_eui = {d.dev_eui: d for d in devices}
    incoming = {e.dev_eui for e in entries}
    addr_owner = {d.dev_addr: d.dev_eui for d in by_eui.values()
                  if d.dev_addr and d.dev_eui not in incoming}
    plan = ImportPlan()
    for entry in entries:
        if entry.dev_addr is not None and entry.dev_addr in addr_owner:
            plan.addr_clashes.append((entry, addr_owner[entry.dev_addr]))
        current = by_eui.get(entry.dev_eui)
        if current is None:
            plan.added.append(entry)
            continue
        identity = _identity_differences(entry, current)
        descriptive = _descriptive_differences(entry, current)
        if identity:
            plan.conflicting.append((entry, current, identity + descriptive))
        elif descriptive:
            plan.updated.append((entry, current, descriptive))
        else:
            plan.unchanged.append(entry)
    # A replaced OTAA device frees its DevAddr for an ABP entry of the same file; a DevAddr
    # kept by an unchanged/updated OTAA session must not be taken by another entry.
    kept_addrs = {dev.dev_addr: dev.dev_eui for _, dev, _ in plan.updated if dev.dev_addr}
    kept_addrs.update({by_eui[e.dev_eui].dev_addr: e.dev_eui for e in plan.unchanged
                       if by_eui[e.dev_eui].dev_addr})
    for entry in entries:
        owner = kept_addrs.get(entry.dev_addr) if entry.dev_addr else None
        if owner is not None and owner != entry.dev_eui:
            plan.addr_clashes.append((entry, owner))
    return plan


def apply_plan(store: Any, plan: ImportPlan, *, replace_conflicting: bool) -> list[Device]:
    """Write the plan to ``store`` as a whole: on any failure the devices written so far are put
    back as they were. Returns the devices as stored."""
    existing: dict[str, Device | None] = {}
    todo: list[Device] = []
    for entry in plan.added:
        existing[entry.dev_eui] = None
        todo.append(device_for(entry, None))
    for entry, dev, _ in plan.updated:
        existing[entry.dev_eui] = dev
        todo.append(device_for(entry, dev))
    if replace_conflicting:
        for entry, dev, _ in plan.conflicting:
            existing[entry.dev_eui] = dev
            todo.append(device_for(entry, dev))
    # Conflicting ABP entries that take a DevAddr from another replaced device must be written
    # after that device gave it up: write OTAA/unaddressed devices first.
    todo.sort(key=lambda d: d.dev_addr is not None)
    bulk = getattr(store, "upsert_devices", None)
    if callable(bulk):  # one transaction, when the store offers it
        return list(bulk(todo))
    done: list[Device] = []
    try:
        for dev in todo:
            done.append(store.upsert_device(dev))
    except BaseException:
        for dev in reversed(done):
            before = existing[dev.dev_eui]
            # keep undoing the others even if one fails; the caller reports the first error
            with contextlib.suppress(Exception):
                if before is None:
                    store.remove_device(dev.dev_eui)
                else:
                    store.upsert_device(before)
        raise
    return done
