"""SenML packs in CBOR (RFC 8428 §6): JSON-style dicts in, integer-labelled CBOR out, and back.

A pack is a list of records; a record is a dict with the JSON labels of RFC 8428 §4
('bver', 'bn', 'bt', 'bu', 'bv', 'bs', 'n', 'u', 'v', 'vs', 'vb', 'vd', 's', 't', 'ut').
In CBOR those labels become the integers of RFC 8428 §6 Table 6. 'vd' (data value) is a byte
string in CBOR (and in our dicts), where JSON would carry base64url.

Two extension labels of ours stay text keys in CBOR: 'rid' (the stable record id, a string) and
'hist' (True on records sent from the backlog). RFC 8428 §4.4: a label that does not end in '_'
may be ignored by a consumer that does not know it, so plain SenML consumers are unaffected.

Floats are written in CBOR preferred serialization (RFC 8949 §4.1: the shortest of half, single
or double that keeps the value exactly), which is also how the RFC's own example is encoded;
decoding uses cbor2.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final

import cbor2

__all__ = [
    "CBOR_LABELS",
    "EXTENSION_LABELS",
    "SenMLError",
    "decode_pack",
    "encode_pack",
    "validate_pack",
]

# RFC 8428 §6, Table 6 ("CBOR Representation: Integers for Map Keys").
CBOR_LABELS: Final[dict[str, int]] = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
}
JSON_LABELS: Final[dict[int, str]] = {label: name for name, label in CBOR_LABELS.items()}

# Our extensions, kept as text keys (RFC 8428 §4.4: not ending in '_' = safe to ignore).
EXTENSION_LABELS: Final = ("rid", "hist")

_STRING_LABELS: Final = frozenset({"bn", "bu", "n", "u", "vs", "rid"})
_NUMBER_LABELS: Final = frozenset({"bt", "bv", "bs", "v", "s", "t", "ut"})
_VALUE_LABELS: Final = ("v", "vs", "vb", "vd")
# RFC 8428 §4.5.1: the resolved name's characters, and its first character.
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_NAME_CHARS_RE: Final = re.compile(r"[A-Za-z0-9\-:./_]*")
MAX_PACK_RECORDS: Final = 10_000


class SenMLError(ValueError):
    """A pack that is not valid SenML (or not CBOR at all); the message says which record/label."""


def _check_record(index: int, record: Mapping[str, Any], base_name: str) -> str:
    """Check one record's labels and types; returns the base name in force after it."""
    where = f"record {index}"
    for label, value in record.items():
        if label in _STRING_LABELS:
            if not isinstance(value, str):
                raise SenMLError(f"{where}: {label!r} must be a text string")
        elif label in _NUMBER_LABELS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SenMLError(f"{where}: {label!r} must be a number")
            if isinstance(value, float) and not math.isfinite(value):
                raise SenMLError(f"{where}: {label!r} must be finite (SenML has no NaN/Infinity)")
            if isinstance(value, int) and not -(2**64) <= value < 2**64:
                raise SenMLError(f"{where}: {label!r} is out of the CBOR integer range")
        elif label == "bver":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**32:
                raise SenMLError(f"{where}: 'bver' must be a positive integer")
        elif label in ("vb", "hist"):
            if not isinstance(value, bool):
                raise SenMLError(f"{where}: {label!r} must be true or false")
        elif label == "vd":
            if not isinstance(value, bytes | bytearray):
                raise SenMLError(f"{where}: 'vd' must be bytes")
        else:
            raise SenMLError(
                f"{where}: unknown label {label!r}; expected one of "
                + ", ".join(list(CBOR_LABELS) + list(EXTENSION_LABELS))
            )
    values = [label for label in _VALUE_LABELS if label in record]
    if len(values) > 1:
        raise SenMLError(f"{where}: more than one value field ({', '.join(values)})")
    if "bn" in record:
        base_name = record["bn"]
        if not _NAME_CHARS_RE.fullmatch(base_name):
            raise SenMLError(f"{where}: base name {base_name!r} has characters SenML forbids")
    if "n" in record or values or "s" in record:
        name = base_name + record.get("n", "")
        if not _NAME_RE.fullmatch(name):
            raise SenMLError(
                f"{where}: name {name!r} is not a valid SenML name (RFC 8428 §4.5.1: "
                "A-Z a-z 0-9 - : . / _, starting with a letter or digit)"
            )
    return base_name


def validate_pack(records: Iterable[Mapping[str, Any]]) -> None:
    """Raise SenMLError unless ``records`` is a well-formed pack of our dialect."""
    if isinstance(records, Mapping | str | bytes):
        raise SenMLError("a SenML pack is a list of records")
    base_name = ""
    count = 0
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise SenMLError(f"record {index}: a record is a map of labels to values")
        base_name = _check_record(index, record, base_name)
        count += 1
    if count == 0:
        raise SenMLError("a SenML pack has at least one record")
    if count > MAX_PACK_RECORDS:
        raise SenMLError(f"a pack of {count} records is more than {MAX_PACK_RECORDS}")


def _head(major: int, n: int, out: bytearray) -> None:
    """A CBOR head (RFC 8949 §3): major type and argument in its shortest form."""
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out += bytes((major << 5 | 24, n))
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")


def _float(value: float, out: bytearray) -> None:
    """RFC 8949 §4.1 preferred serialization: the shortest of half/single/double that keeps
    ``value`` exactly."""
    for code, fmt in ((0xF9, ">e"), (0xFA, ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            out.append(code)
            out += packed
            return
    out.append(0xFB)
    out += struct.pack(">d", value)


def _item(value: Any, out: bytearray) -> None:
    """Encode the few types a SenML pack holds (validated before we get here)."""
    if value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if value >= 0:
            _head(0, value, out)
        else:
            _head(1, -1 - value, out)
    elif isinstance(value, float):
        _float(value, out)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(3, len(data), out)
        out += data
    elif isinstance(value, bytes | bytearray):
        _head(2, len(value), out)
        out += value
    elif isinstance(value, Mapping):
        _head(5, len(value), out)
        for key, element in value.items():
            _item(key, out)
            _item(element, out)
    elif isinstance(value, list | tuple):
        _head(4, len(value), out)
        for element in value:
            _item(element, out)
    else:
        raise SenMLError(f"cannot encode a {type(value).__name__} in SenML CBOR")


def encode_pack(records: Iterable[Mapping[str, Any]], *, validate: bool = True) -> bytes:
    """CBOR bytes (RFC 8428 §6) of a pack given as JSON-labelled dicts; keeps label order."""
    if isinstance(records, Mapping | str | bytes):
        raise SenMLError("a SenML pack is a list of records")
    records = list(records)
    if validate:
        validate_pack(records)
    # Written by hand rather than with cbor2: label order is kept, floats take their
    # preferred (shortest) form, and the bytes do not depend on the cbor2 version.
    out = bytearray()
    _head(4, len(records), out)
    for record in records:
        _head(5, len(record), out)
        for label, value in record.items():
            key = CBOR_LABELS.get(label)
            _item(label if key is None else key, out)
            _item(value, out)
    return bytes(out)


def _loads_exact(data: bytes) -> Any:
    """One CBOR item that spans all of ``data`` (cbor2.loads alone ignores trailing bytes)."""
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    # cbor2's tag hooks may raise almost anything on hostile input: all of it is "not CBOR".
    except Exception as exc:  # noqa: BLE001
        raise SenMLError(f"not valid CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(data):
        raise SenMLError(f"not valid CBOR: {len(data) - stream.tell()} bytes after the pack")
    return item


def decode_pack(data: bytes) -> list[dict[str, Any]]:
    """The JSON-labelled dicts of a SenML CBOR pack; raises SenMLError on anything malformed.

    As RFC 8428 §4.4 asks, labels we do not know are ignored unless they end in '_'
    ("must understand"), which is an error.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SenMLError("SenML CBOR input must be bytes")
    items = _loads_exact(bytes(data))
    if not isinstance(items, list):
        raise SenMLError("a SenML pack is a CBOR array of records")
    pack: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise SenMLError(f"record {index}: a record is a CBOR map")
        record: dict[str, Any] = {}
        for key, value in item.items():
            if isinstance(key, int) and not isinstance(key, bool):
                name = JSON_LABELS.get(key)
                if name is None:
                    continue  # an integer label we do not know: ignore (RFC 8428 §4.4)
            elif isinstance(key, str):
                if key.endswith("_"):
                    raise SenMLError(
                        f"record {index}: must-understand label {key!r} is not supported"
                    )
                if key not in EXTENSION_LABELS:
                    continue
                name = key
            else:
                raise SenMLError(f"record {index}: labels must be integers or text")
            if isinstance(value, cbor2.CBORTag | cbor2.CBORSimpleValue):
                raise SenMLError(f"record {index}: {name!r} has a tagged or simple value")
            record[name] = value
        pack.append(record)
    validate_pack(pack)
    return pack
