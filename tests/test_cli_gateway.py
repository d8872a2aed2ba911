"""`cityedge gateway init` and `cityedge gateway run` as an installer runs them: real processes,
a real Mosquitto, real files."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.mosquitto import Broker

pytestmark = pytest.mark.broker


def cityedge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cityedge", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, timeout=60)


def test_init_writes_config_and_a_private_signing_key(tmp_path: Path) -> None:
    r = cityedge("gateway", "init", "--id", "gw-north-1", "--dir", str(tmp_path))

    assert r.returncode == 0, r.stderr
    key = tmp_path / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()
    assert "PRIVATE KEY" not in r.stdout + r.stderr
    assert (tmp_path / "signing-key.pem.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    config = (tmp_path / "gateway.toml").read_text()
    assert 'id = "gw-north-1"' in config


def test_init_with_a_relative_dir_writes_paths_that_resolve_from_anywhere(tmp_path: Path) -> None:
    from gateway.config import load_config

    r = cityedge("gateway", "init", "--id", "gw-rel", "--dir", "gw", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = load_config(tmp_path / "gw" / "gateway.toml")
    assert config.gateway.signing_key == tmp_path / "gw" / "signing-key.pem"
    assert config.gateway.signing_key.is_file()
    assert config.store.path.parent == tmp_path / "gw"


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert cityedge("gateway", "init", "--id", "gw1", "--dir", str(tmp_path)).returncode == 0
    first_key = (tmp_path / "signing-key.pem").read_bytes()

    r = cityedge("gateway", "init", "--id", "gw1", "--dir", str(tmp_path))

    assert r.returncode == 2
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "signing-key.pem").read_bytes() == first_key


def test_run_with_a_bad_config_names_the_file_and_the_key(tmp_path: Path) -> None:
    assert cityedge("gateway", "init", "--id", "gw1", "--dir", str(tmp_path)).returncode == 0
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(cfg.read_text().replace("spreading_factor = 7", "spreading_factor = 13"))

    r = cityedge("gateway", "run", "--config", str(cfg))

    assert r.returncode == 2
    assert str(cfg) in r.stderr and "radio.spreading_factor" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_a_missing_config_says_so(tmp_path: Path) -> None:
    r = cityedge("gateway", "run", "--config", str(tmp_path / "nope.toml"))

    assert r.returncode == 2
    assert "nope.toml" in r.stderr and "Traceback" not in r.stderr


def test_run_publishes_its_birth_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mosquitto: Broker
) -> None:
    assert cityedge("gateway", "init", "--id", "gw1", "--dir", str(tmp_path)).returncode == 0
    cfg = tmp_path / "gateway.toml"
    text = cfg.read_text().replace('host = "localhost"', f'host = "{mosquitto.host}"')
    cfg.write_text(text.replace("port = 1883", f"port = {mosquitto.port}"))
    proc = subprocess.Popen([sys.executable, "-m", "cityedge", "gateway", "run", "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = ""
        deadline = time.monotonic() + 30
        while not out and time.monotonic() < deadline:  # a late subscriber gets the retained birth
            out = subprocess.run(
                ["mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-t",
                 "cityedge/v1/gw1/status", "-C", "1", "-W", "1", "-F", "%t %r %l"],
                check=False, capture_output=True, text=True,
            ).stdout
        assert out.startswith("cityedge/v1/gw1/status ")
        out = subprocess.run(  # now surely published: a new subscriber gets it as retained
            ["mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-t",
             "cityedge/v1/gw1/status", "-C", "1", "-W", "5", "-F", "%t %r %l"],
            check=False, capture_output=True, text=True,
        ).stdout
        assert out.startswith("cityedge/v1/gw1/status 1 ")  # retain flag set
        assert int(out.split()[2]) > 0  # a signed payload
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopping on signal" in out  # structured log lines go to stdout (journald)
    assert "Traceback" not in out + err
    assert "PRIVATE" not in out + err
    assert os.path.exists(tmp_path / "cityedge.db")
