"""Structured logs for the gateway agent: one line per event, logfmt or JSON, never a secret.

``logfmt`` (the default) reads well in a terminal and in ``journalctl``::

    ts=2026-11-23T12:04:41.123Z level=info logger=cityedge.agent msg="gateway gw1 running"

``json`` gives one JSON object per line for log shippers. Under systemd the stream goes to the
journal as it is (no extra timestamps needed, but kept for plain files).

Extra fields passed with ``log.info("...", extra={"dev_eui": eui})`` become their own keys.
``RedactFilter`` runs before any formatter: it formats the message, hides the values of
secret-named fields (``app_key``, ``nwk_s_key``, ``password``...), any run of 32 or more hex digits
(a printed AES key), and raw 16-byte values, so key material cannot reach a log line even when a
caller makes a mistake.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Final, TextIO

__all__ = [
    "LOG_FORMATS",
    "REDACTED",
    "JsonFormatter",
    "LogfmtFormatter",
    "RedactFilter",
    "redact_text",
    "setup_logging",
]

LOG_FORMATS: Final = ("logfmt", "json")
REDACTED: Final = "<redacted>"

# Field names whose values are secret whatever they look like.
_SECRET_NAME = re.compile(
    r"(^|_)(app_?key|nwk_?s_?key|app_?s_?key|s_?key|key|keys|secret|password|passwd|token|"
    r"private_key|signing_key|psk)$",
    re.IGNORECASE,
)
# A printed 128-bit key: 32 hex digits (also inside longer hex runs, which may hide one too).
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{32,}(?![0-9A-Fa-f])")
# The same with separators (``00:11:22...`` or ``00 11 22 ...``, 16 bytes or more).
_HEX_BYTES = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[:\- ]){15,}[0-9A-Fa-f]{2}"
                        r"(?![0-9A-Fa-f])")
# A bytes repr of 16 bytes or more, e.g. b'\x01\x02...'
_BYTES_REPR = re.compile(r"""(?<!\w)b(['"])(?:\\x[0-9a-fA-F]{2}|\\.|(?!\1).){16,}?\1""")

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
}


def redact_text(text: str) -> str:
    """``text`` with hex runs of 32+ digits, 16+ separated hex bytes and long bytes reprs
    replaced by ``<redacted>``."""
    if len(text) < 32:
        return text
    text = _HEX_RUN.sub(REDACTED, text)
    text = _HEX_BYTES.sub(REDACTED, text)
    return _BYTES_REPR.sub(REDACTED, text)


def is_secret_name(name: str) -> bool:
    """True for a field name that holds key material or a password (its value is never shown)."""
    return bool(_SECRET_NAME.search(name))


def _redact_value(name: str, value: Any) -> Any:
    """A field value safe to log: secrets and raw keys hidden, other values kept."""
    if is_secret_name(name):
        return REDACTED if value is not None else None
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED if len(value) >= 16 else bytes(value).hex()
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


class RedactFilter(logging.Filter):
    """Freezes each record's message and scrubs it and its extra fields of key material."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; rewrites it so no formatter can leak a secret."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the event
            message = f"{record.msg!r} (log arguments did not fit the message)"
        record.msg = redact_text(str(message))
        record.args = None
        for name in list(vars(record)):
            if name not in _STANDARD and not name.startswith("_"):
                setattr(record, name, _redact_value(name, getattr(record, name)))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-23T12:04:41.123Z."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{whole}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """The event as ordered fields: ts, level, logger, msg, extras, exception."""
    out: dict[str, Any] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": redact_text(record.getMessage()),
    }
    for name, value in vars(record).items():
        if name not in _STANDARD and not name.startswith("_") and name not in out:
            out[name] = _redact_value(name, value)
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        out["exc"] = redact_text(record.exc_text)
    if record.stack_info:
        out["stack"] = redact_text(record.stack_info)
    return out


_BARE = re.compile(r"[^\s=\"\\]+")


def _logfmt_value(value: Any) -> str:
    """A logfmt value: bare when it can be, else double-quoted with escapes (one line always)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE.fullmatch(text) and text.isprintable():
        return text
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    escaped = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped)
    return f'"{escaped}"'


def _logfmt_key(name: str) -> str:
    """A key safe for logfmt: no spaces, '=' or quotes."""
    clean = re.sub(r"[^\w.\-]", "_", name)
    return clean or "_"


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs on one line (logfmt), in a stable order."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one logfmt line."""
        fields = _fields(record, self)
        return " ".join(f"{_logfmt_key(k)}={_logfmt_value(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (non-JSON values become strings)."""
        return json.dumps(_fields(record, self), ensure_ascii=False, default=str,
                          separators=(",", ":"))


def setup_logging(level: str = "info", log_format: str = "logfmt",
                  stream: TextIO | None = None) -> logging.Handler:
    """Send all logs to ``stream`` (default stdout) as logfmt or JSON lines, secrets redacted.

    Replaces the root logger's handlers, so calling it twice does not double the lines.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.captureWarnings(True)
    return handler
