"""Structured logs (gateway.logs): one line per event, logfmt or JSON, and never a key.

Formatters are exercised through the real ``logging`` machinery; the agent's wiring through a
real `cityedge gateway run` process.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityedge.cli import LOG_STREAM
from gateway.config import default_config, write_config
from gateway.logs import REDACTED, redact_text, setup_logging

KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"
KEY = bytes.fromhex(KEY_HEX)


@contextmanager
def logging_to(fmt: str) -> Iterator[io.StringIO]:
    """Root logging set up by setup_logging into a string; the previous setup restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    setup_logging("debug", fmt, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)


log = logging.getLogger("cityedge.test")


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_logfmt_line_has_time_level_logger_message_and_extra_fields() -> None:
    with logging_to("logfmt") as out:
        log.info("uplink stored %s", "ok", extra={"dev_eui": "70b3d57ed0000001", "fcnt": 12})

        [line] = lines_of(out)
        assert re.match(r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info "
                        r"logger=cityedge\.test msg=\"uplink stored ok\" "
                        r"dev_eui=70b3d57ed0000001 fcnt=12$", line), line


def test_json_line_is_one_object_with_the_same_fields() -> None:
    with logging_to("json") as out:
        log.warning("broker link: %s", "refused", extra={"attempt": 3})

        [line] = lines_of(out)
        event = json.loads(line)
        assert event["level"] == "warning" and event["msg"] == "broker link: refused"
        assert event["attempt"] == 3 and event["logger"] == "cityedge.test"


def test_multi_line_messages_and_exceptions_stay_on_one_line() -> None:
    with logging_to("logfmt") as out:
        try:
            raise ValueError("bad\nframe")
        except ValueError:
            log.exception("frame handling failed\nsecond line")

        [line] = lines_of(out)
        assert 'msg="frame handling failed\\nsecond line"' in line
        assert "exc=\"Traceback" in line and "ValueError: bad\\nframe" in line


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_secret_fields_and_printed_keys_never_reach_the_line(fmt: str) -> None:
    with logging_to(fmt) as out:
        log.info("joined with key %s", KEY_HEX, extra={"app_key": KEY_HEX, "nwk_s_key": KEY,
                                                        "password": "hunter2", "session": KEY})
        log.info("key bytes %r and spaced %s", KEY, " ".join(f"{b:02x}" for b in KEY))
        log.error("upper %s", KEY_HEX.upper())

        text = out.getvalue()
        assert KEY_HEX not in text.lower() and "hunter2" not in text
        assert "2b 7e 15 16" not in text and "\\x2b" not in text and "+~" not in text
        assert text.count(REDACTED) >= 7


def test_short_hex_values_like_euis_and_dev_addrs_are_kept() -> None:
    with logging_to("logfmt") as out:
        log.info("device %s joined as DevAddr %s rid %s", "70b3d57ed0000001", "26011234",
                 "gw1:70b3d57ed0000001:42")

        line = out.getvalue()
        assert "70b3d57ed0000001" in line and "26011234" in line and REDACTED not in line


def test_a_message_whose_arguments_do_not_fit_is_still_logged() -> None:
    with logging_to("logfmt") as out:
        log.info("two %s %s", "one")  # noqa: PLE1206 - the mistake under test

        assert "did not fit" in out.getvalue()


def test_setting_up_twice_does_not_double_lines() -> None:
    with logging_to("logfmt"), logging_to("logfmt") as out:
        log.info("once")

    assert len(lines_of(out)) == 1


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of logfmt, json"):
        setup_logging("info", "xml", stream=io.StringIO())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.binary(min_size=16, max_size=16),
       st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                       st.text(max_size=30) | st.integers(), max_size=3))
def test_any_event_is_one_line_and_hides_the_key(text: str, key: bytes, extra: dict) -> None:
    reserved = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
    for fmt in ("logfmt", "json"):
        with logging_to(fmt) as stream:
            log.info("%s key=%s", text, key.hex(),
                     extra={k: v for k, v in extra.items() if k not in reserved})
        out = stream.getvalue()
        assert out.count("\n") == 1 and out.endswith("\n")
        assert key.hex() not in out.lower()
        if fmt == "json":
            json.loads(out)


def test_redact_text_handles_separated_and_long_hex() -> None:
    assert redact_text(f"k={KEY_HEX}") == f"k={REDACTED}"
    assert redact_text(":".join(f"{b:02X}" for b in KEY)) == REDACTED
    assert REDACTED in redact_text("payload " + "ab" * 40)
    assert redact_text("fcnt 12 devaddr 26011234") == "fcnt 12 devaddr 26011234"


# ------------------------------------------------------------------------- the agent's wiring


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_gateway(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """Start `cityedge gateway run` (sim radio, no broker reachable), stop it with SIGTERM once
    it runs; returns (status, the log stream's text, all output)."""
    config = default_config("gw1", tmp_path)
    path = write_config(tmp_path / "gateway.toml", config)
    text = path.read_text().replace("port = 1883", f"port = {closed_port()}")
    path.write_text(text.replace('host = "localhost"', 'host = "127.0.0.1"'))
    from gateway.keys import generate_signing_key

    generate_signing_key(config.gateway.signing_key)
    proc = subprocess.Popen([sys.executable, "-m", "cityedge", "gateway", "run", "--config",
                             str(path), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks[n].extend(iter(f.readline, "")),
                                daemon=True)
               for n, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for r in readers:
        r.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None \
                and not any(" running" in ln for ln in chunks[LOG_STREAM]):
            time.sleep(0.1)  # until the agent says it runs (signal handlers are in place)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for r in readers:
            r.join(timeout=10)
    out, err = "".join(chunks["stdout"]), "".join(chunks["stderr"])
    return proc.returncode, out if LOG_STREAM == "stdout" else err, out + err


def register_node(tmp_path: Path) -> None:
    """A node with keys in the store, so a leak would have something to leak."""
    from gateway.store import Device, Store

    with Store.open(tmp_path / "cityedge.db") as store:
        store.upsert_device(Device(dev_eui="70b3d57ed0000001", role="air", app_key=KEY,
                                   dev_addr="26011234", nwk_s_key=KEY, app_s_key=KEY))


def test_gateway_run_logs_logfmt_lines_by_default(tmp_path: Path) -> None:
    register_node(tmp_path)

    status, logs, everything = run_gateway(tmp_path)

    assert status == 0, everything
    lines = [ln for ln in logs.splitlines() if ln]
    assert lines, "no log lines"
    for line in lines:
        assert re.match(r"ts=\S+ level=(debug|info|warning|error|critical) logger=\S+ msg=",
                        line), line
    assert any("stopping on signal" in ln for ln in lines)
    assert KEY_HEX not in everything.lower()


def test_gateway_run_logs_json_lines_on_request(tmp_path: Path) -> None:
    register_node(tmp_path)

    status, logs, everything = run_gateway(tmp_path, "--log-format", "json",
                                           "--log-level", "debug")

    assert status == 0, everything
    events = [json.loads(ln) for ln in logs.splitlines() if ln]
    assert {"ts", "level", "logger", "msg"} <= set(events[0])
    assert any(e["msg"] == "stopping on signal" for e in events)
    assert KEY_HEX not in everything.lower()


def test_gateway_run_without_its_signing_key_says_so_without_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path / "gateway.toml", default_config("gw1", tmp_path))

    r = subprocess.run([sys.executable, "-m", "cityedge", "gateway", "run", "--config",
                        str(path)], check=False, capture_output=True, text=True, timeout=60)

    assert r.returncode == 2
    assert "signing-key.pem: no signing key here" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------- the service and its docs

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "docs" / "systemd" / "cityedge-gateway.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_runs_gateway_run_hardened_and_logs_to_the_journal() -> None:
    from cityedge.cli import build_parser

    s = unit_settings()
    [exec_start] = s["ExecStart"]
    args = build_parser().parse_args(exec_start.split()[1:])  # a command the CLI knows
    assert args.func.__name__ == "cmd_gateway_run" and args.config == "/etc/cityedge/gateway.toml"
    assert s["User"] == ["cityedge"] and s["StateDirectory"] == ["cityedge"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["Restart"] == ["on-failure"] and s["RestartPreventExitStatus"] == ["2"]
    assert s["CapabilityBoundingSet"] == [""] and s["StandardError"] == ["journal"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "cityedge-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/cityedge/venv/bin/cityedge", "/bin/true"))

    r = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False,
                       capture_output=True, text=True, timeout=60)

    assert r.returncode == 0, r.stderr


def test_the_gateway_guide_documents_every_configuration_key(tmp_path: Path) -> None:
    import tomllib

    from gateway.config import config_to_toml

    doc = (ROOT / "docs" / "gateway.md").read_text()
    config = default_config("gw1", tmp_path)

    def walk(table: dict, dotted: str) -> list[str]:
        out = []
        for key, value in table.items():
            if isinstance(value, dict):
                assert f"[{dotted}{key}]" in doc, f"section [{dotted}{key}] is not documented"
                out += walk(value, f"{dotted}{key}.")
            else:
                out.append(key)
        return out

    keys = walk(tomllib.loads(config_to_toml(config)), "")
    keys += ["username", "password_file", "ca_file", "cert_file", "key_file"]  # optional ones
    missing = [k for k in keys if f"| `{k}` |" not in doc]
    assert not missing, f"not in docs/gateway.md: {missing}"
