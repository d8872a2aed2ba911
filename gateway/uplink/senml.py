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
    "append_backlog_part",
    "assemble_pack",
    "backlog_part",
    "batchable",
    "decode_pack",
    "encode_pack",
    "finish_pack",
    "join_packs",
    "mark_historical",
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


_LABEL_KIND: Final[dict[str, str]] = {
    **{label: "str" for label in _STRING_LABELS},
    **{label: "num" for label in _NUMBER_LABELS},
    "bver": "bver", "vb": "bool", "hist": "bool", "vd": "bytes",
}
_INT_MIN: Final = -(2**64)
_INT_MAX: Final = 2**64


def _bad_label(index: int, label: Any, value: Any, kind: str | None) -> SenMLError:
    """The SenMLError for a label of the wrong type (or an unknown label) in record ``index``."""
    where = f"record {index}"
    if kind == "str":
        return SenMLError(f"{where}: {label!r} must be a text string")
    if kind == "num":
        if isinstance(value, float) and not math.isfinite(value):
            return SenMLError(f"{where}: {label!r} must be finite (SenML has no NaN/Infinity)")
        if isinstance(value, int) and not isinstance(value, bool):
            return SenMLError(f"{where}: {label!r} is out of the CBOR integer range")
        return SenMLError(f"{where}: {label!r} must be a number")
    if kind == "bver":
        return SenMLError(f"{where}: 'bver' must be a positive integer")
    if kind == "bool":
        return SenMLError(f"{where}: {label!r} must be true or false")
    if kind == "bytes":
        return SenMLError(f"{where}: 'vd' must be bytes")
    return SenMLError(
        f"{where}: unknown label {label!r}; expected one of "
        + ", ".join(list(CBOR_LABELS) + list(EXTENSION_LABELS))
    )


def _value_ok(kind: str | None, value: Any) -> bool:
    """True when ``value`` has the type (and range) a label of ``kind`` needs."""
    vtype = type(value)
    if kind == "str":
        return vtype is str or isinstance(value, str)
    if kind == "num":
        if vtype is float:
            return math.isfinite(value)
        if vtype is int:
            return _INT_MIN <= value < _INT_MAX
        return (not isinstance(value, bool) and isinstance(value, int | float)
                and (math.isfinite(value) if isinstance(value, float)
                     else _INT_MIN <= value < _INT_MAX))
    if kind == "bool":
        return vtype is bool
    if kind == "bver":
        return not isinstance(value, bool) and isinstance(value, int) and 0 < value < 2**32
    if kind == "bytes":
        return isinstance(value, bytes | bytearray)
    return False


def _check_record(index: int, record: Mapping[str, Any], base_name: str) -> str:
    """Check one record's labels and types; returns the base name in force after it."""
    for label, value in record.items():
        kind = _LABEL_KIND.get(label)
        if not _value_ok(kind, value):
            raise _bad_label(index, label, value, kind)
    values = [label for label in _VALUE_LABELS if label in record]
    if len(values) > 1:
        raise SenMLError(f"record {index}: more than one value field ({', '.join(values)})")
    if "bn" in record:
        base_name = record["bn"]
        if not _NAME_CHARS_RE.fullmatch(base_name):
            raise SenMLError(
                f"record {index}: base name {base_name!r} has characters SenML forbids")
    if "n" in record or values or "s" in record:
        name = base_name + record.get("n", "")
        if not _NAME_RE.fullmatch(name):
            raise SenMLError(
                f"record {index}: name {name!r} is not a valid SenML name (RFC 8428 §4.5.1: "
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


_HALF: Final = struct.Struct(">e")
_SINGLE: Final = struct.Struct(">f")
_DOUBLE: Final = struct.Struct(">d")


def _float(value: float, out: bytearray) -> None:
    """RFC 8949 §4.1 preferred serialization: the shortest of half/single/double that keeps
    ``value`` exactly."""
    for code, fmt in ((0xF9, _HALF), (0xFA, _SINGLE)):
        try:
            packed = fmt.pack(value)
        except OverflowError:
            continue
        if fmt.unpack(packed)[0] == value:
            out.append(code)
            out += packed
            return
    out.append(0xFB)
    out += _DOUBLE.pack(value)


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
    if validate and not 0 < len(records) <= MAX_PACK_RECORDS:
        validate_pack(records)  # raises the error for an empty or oversized pack
    # Written by hand rather than with cbor2: label order is kept, floats take their
    # preferred (shortest) form, and the bytes do not depend on the cbor2 version.
    # Validation rides along: the common shapes (our labels with values of their exact type)
    # are checked here, label by label as they are encoded; anything else is handed to
    # ``validate_pack``, which raises the precise error (or passes an unusual but valid pack).
    out = bytearray()
    _head(4, len(records), out)
    texts = _TEXTS  # names and units repeat across packs, the rid within one
    if len(texts) > _TEXTS_MAX:
        texts.clear()
    floats = _FLOATS
    if len(floats) > _FLOATS_MAX:
        floats.clear()
    names = _NAMES
    if len(names) > _TEXTS_MAX:
        names.clear()
    labels = _LABEL_ENCODING
    base_name = ""
    for record in records:
        if type(record) is not dict:
            if validate and not isinstance(record, Mapping):
                validate_pack(records)
            record = dict(record)
        pairs = len(record)
        if pairs < 24:
            out.append(0xA0 | pairs)
        else:
            _head(5, pairs, out)
        values = 0
        for label, value in record.items():
            entry = labels.get(label)
            if entry is None:
                if validate:
                    validate_pack(records)
                _item(label, out)
                _item(value, out)
                continue
            key, kind, counts = entry
            out += key
            values += counts
            vtype = type(value)
            if vtype is str:
                if kind != _STR and validate:
                    validate_pack(records)
                encoded = texts.get(value)
                if encoded is None:
                    encoded = texts[value] = _text(value)
                out += encoded
            elif vtype is float:
                if kind != _NUM and validate:
                    validate_pack(records)
                encoded = floats.get(value)
                if encoded is None:
                    if not math.isfinite(value):
                        if validate:
                            validate_pack(records)
                        _float(value, out)
                        continue
                    encoded = _float_bytes(value)
                    if value:  # 0.0 and -0.0 compare equal: never cache a zero
                        floats[value] = encoded
                out += encoded
            elif vtype is int and kind == _NUM and 0 <= value < 24:
                out.append(value)
            else:
                if validate and not _value_ok(_LABEL_KIND[label], value):
                    validate_pack(records)
                _item(value, out)
        if not validate:
            continue
        if values > 1:
            validate_pack(records)
        if "bn" in record:
            base_name = record["bn"]
            if base_name not in names and not _NAME_CHARS_RE.fullmatch(base_name):
                validate_pack(records)
        if values or "n" in record or "s" in record:
            name = base_name + record.get("n", "")
            if name not in names:
                if not _NAME_RE.fullmatch(name):
                    validate_pack(records)
                names[name] = None
    return bytes(out)


_TEXTS: dict[str, bytes] = {}  # text -> its CBOR encoding, cleared when it grows too big
_TEXTS_MAX: Final = 8192
_FLOATS: dict[float, bytes] = {}  # float -> its CBOR encoding (zeros never: -0.0 == 0.0)
_FLOATS_MAX: Final = 65536
_NAMES: dict[str, None] = {}  # resolved names already found valid
_STR, _NUM, _OTHER = 0, 1, 2


def _float_bytes(value: float) -> bytes:
    """The CBOR encoding of a float (see ``_float``)."""
    out = bytearray()
    _float(value, out)
    return bytes(out)


def _text(value: str) -> bytes:
    """A CBOR text string (head and UTF-8 bytes)."""
    data = value.encode("utf-8")
    head = bytearray()
    _head(3, len(data), head)
    return bytes(head) + data


def _label_bytes() -> dict[str, bytes]:
    """Every label of our dialect already encoded as a CBOR map key."""
    table = {}
    for name in list(CBOR_LABELS) + list(EXTENSION_LABELS):
        out = bytearray()
        key = CBOR_LABELS.get(name)
        _item(name if key is None else key, out)
        table[name] = bytes(out)
    return table


_LABEL_BYTES: Final = _label_bytes()
# label -> (its CBOR key, _STR/_NUM/_OTHER as _LABEL_KIND says, 1 for a value label)
_LABEL_ENCODING: Final = {
    name: (key, _STR if _LABEL_KIND.get(name) == "str" else
           _NUM if _LABEL_KIND.get(name) == "num" else _OTHER, int(name in _VALUE_LABELS))
    for name, key in _LABEL_BYTES.items()
}


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


# ------------------------------------------------------------------------------ byte-level packs
#
# The forwarder marks backlog data and joins the packs of several uplinks into one message
# without decoding them: a decode and re-encode costs ~40 µs per uplink in CPython, which alone
# would cap a backlog drain below the 50,000 records/s the brief asks for. These helpers only
# read the CBOR heads at the start of a stored pack (RFC 8949 §3), which is all they change.

_HIST_ENTRY: Final = b"\x64hist\xf5"  # text(4) "hist", true
_KEY_BN: Final = 0x21  # CBOR -2, 'bn'
_KEY_BT: Final = 0x22  # CBOR -3, 'bt'


def _read_head(data: bytes, offset: int) -> tuple[int, int, int]:
    """(major type, argument, offset after the head) of the CBOR head at ``offset``."""
    try:
        initial = data[offset]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, offset + 1
        if info == 24:
            return major, data[offset + 1], offset + 2
        if info == 25:
            return major, int.from_bytes(data[offset + 1:offset + 3], "big"), offset + 3
        if info == 26:
            return major, int.from_bytes(data[offset + 1:offset + 5], "big"), offset + 5
    except IndexError:
        raise SenMLError("truncated CBOR head at the start of the pack") from None
    raise SenMLError(f"unsupported CBOR head 0x{initial:02x} at the start of the pack")


def _split(body: bytes) -> tuple[int, int, int, int]:
    """(records in the pack, pairs in its first record, offset of the first record's head,
    offset of the first record's first label) of a stored pack."""
    major, count, first = _read_head(body, 0)
    if major != 4 or count == 0:
        raise SenMLError("a stored pack must start with a non-empty CBOR array of records")
    major, pairs, labels = _read_head(body, first)
    if major != 5:
        raise SenMLError("record 0: a record is a CBOR map")
    return count, pairs, first, labels


def _marked_records(body: bytes) -> tuple[int, bytes]:
    """(record count, the records' bytes without the array head, first one marked 'hist')."""
    count, pairs, _, labels = _split(body)
    head = bytearray()
    _head(5, pairs + 1, head)
    return count, bytes(head) + _HIST_ENTRY + body[labels:]


def mark_historical(body: bytes) -> bytes:
    """The pack ``body`` with ``'hist': true`` added to its first record (the backlog mark).

    The first record of an uplink's pack is the one carrying its base name and time, so the
    mark sits once per uplink; it applies to every record sharing that record's ``rid``.
    """
    count, records = _marked_records(body)
    out = bytearray()
    _head(4, count, out)
    return bytes(out) + records


def batchable(body: bytes) -> bool:
    """True when ``body`` may be joined to other packs: its first record starts with 'bn' and
    'bt', so no base name or base time of an earlier uplink can leak into its records."""
    return backlog_part(body) is not None


def backlog_part(body: bytes) -> tuple[int, bytes] | None:
    """(record count, records marked historical) of a joinable pack, ready for
    ``assemble_pack``; None when ``body`` is not joinable (see ``batchable``)."""
    out = bytearray()
    count = append_backlog_part(body, out)
    return None if count is None else (count, bytes(out))


def append_backlog_part(body: bytes, out: bytearray) -> int | None:
    """Append the records of the joinable pack ``body`` to ``out``, its first one marked
    historical (one copy, straight into the message being built); returns how many records,
    or None (``out`` untouched) when ``body`` is not joinable (see ``batchable``)."""
    try:
        count, pairs, _, labels = _split(body)
        if body[labels] != _KEY_BN:
            return None
        major, length, text = _read_head(body, labels + 1)
        if major != 3 or body[text + length] != _KEY_BT:
            return None
    except (SenMLError, IndexError):
        return None
    _head(5, pairs + 1, out)
    out += _HIST_ENTRY
    out += memoryview(body)[labels:]
    return count


def finish_pack(count: int, records: bytes | bytearray) -> bytes:
    """The pack of ``count`` records already encoded back to back in ``records``."""
    if count == 0:
        raise SenMLError("a SenML pack has at least one record")
    if count > MAX_PACK_RECORDS:
        raise SenMLError(f"a pack of {count} records is more than {MAX_PACK_RECORDS}")
    head = bytearray()
    _head(4, count, head)
    return bytes(head) + records


def assemble_pack(parts: Iterable[tuple[int, bytes]]) -> bytes:
    """One pack from ``backlog_part`` results, in the order given."""
    total = 0
    records = bytearray()
    for count, part in parts:
        total += count
        records += part
    return finish_pack(total, records)


def join_packs(bodies: Iterable[bytes]) -> bytes:
    """One pack holding the records of every pack in ``bodies``, in order, each uplink's first
    record marked historical; every body must pass ``batchable`` (SenMLError otherwise)."""
    parts = []
    for body in bodies:
        part = backlog_part(body)
        if part is None:
            raise SenMLError("a pack that does not start with 'bn' and 'bt' cannot be joined")
        parts.append(part)
    return assemble_pack(parts)
