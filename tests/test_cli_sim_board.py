"""`cityedge sim board` as an installer rehearses with it: the board started as its own process,
then `gateway init`, `provision` and `node check` as separate commands on the port it prints,
Ctrl-C to unplug it, and its flash (the default folder under ~/.cache) kept for the next run."""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cityedge.sim_board import _board_name, _uid
from gateway.config import load_config
from gateway.store import Store

CITYEDGE = [sys.executable, "-m", "cityedge"]
BOARD = ["sim", "board", "--board", "heltec-lora32-v2", "--role", "air", "--name", "bench-1"]
START_TIMEOUT_S = 90  # a guard against a hung start, not a speed requirement


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user whose home is ``home`` (so ~/.cache is the test's own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["HOME"] = str(home)
    return env


def run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CITYEDGE, *args], cwd=home, env=user_env(home), capture_output=True,
                          text=True, timeout=120, check=False)


def start_board(home: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`cityedge sim board` started; its process, the port it printed and its banner."""
    proc = subprocess.Popen([*CITYEDGE, *BOARD], cwd=home, env=user_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()  # read unbuffered: the rest is left to communicate()
    banner = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not re.search(rb"unique id: \w+\n", banner):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            proc.kill()
            _out, err = proc.communicate()
            pytest.fail(f"`cityedge sim board` printed no port: {banner!r} {err!r}")
        banner += chunk
    text = banner.decode()
    m = re.search(r"virtual heltec-lora32-v2 board 'bench-1' on (\S+) - use it as --port; "
                  r"Ctrl-C unplugs it", text)
    assert m is not None, text
    return proc, m.group(1), text


def unplug(proc: subprocess.Popen[str], sig: int) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.vm
def test_a_board_is_provisioned_and_checked_through_its_port_and_stays_provisioned(
    tmp_path: Path,
) -> None:
    flash = tmp_path / ".cache" / "cityedge" / "boards" / "bench-1"
    proc, port, banner = start_board(tmp_path)
    try:
        assert f"flash: {flash} (kept between runs; not provisioned)" in banner
        assert "SHT4x temperature/humidity at I2C 0 0x44" in banner
        assert "SPS30 particulate matter at I2C 0 0x69" in banner
        assert os.path.exists(port)

        twin = run(BOARD, tmp_path)  # the same board started twice: its flash is taken
        assert twin.returncode == 2
        assert f"the flash folder {flash} is in use by another virtual board" in twin.stderr

        assert run(["gateway", "init", "--id", "gw-bench", "--dir", "gw"], tmp_path).returncode == 0
        prov = run(["provision", "--port", port, "--role", "air", "--board", "heltec-lora32-v2",
                    "--gateway-config", "gw/gateway.toml", "--asset", "AIX-AIR-1"], tmp_path)
        assert prov.returncode == 0, prov.stderr
        assert "provisioned 1 of 1" in prov.stdout

        check = run(["node", "check", "--port", port], tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "I2C 0x44: SHT4x temperature/humidity" in check.stdout
        assert "I2C 0x69: SPS30 particulate matter" in check.stdout
        assert re.search(r"readings: .*pm2_5=[\d.]+", check.stdout)
        assert re.search(r"readings: .*temperature=[\d.]+", check.stdout)
        assert "radio: SX127x RegVersion 0x12 (OK)" in check.stdout
        assert "node OK" in check.stdout and "16 bytes hidden" in check.stdout
    finally:
        code, out, err = unplug(proc, signal.SIGINT)
    assert code == 0, err
    assert f"board 'bench-1' unplugged; its flash stays in {flash}" in out

    cfg = json.loads((flash / "config.json").read_text())
    assert cfg["role"] == "air" and cfg["board"] == "heltec-lora32-v2"
    assert cfg["location"]["asset"] == "AIX-AIR-1" and (flash / "main.py").is_file()
    store = Store.open(load_config(tmp_path / "gw" / "gateway.toml").store.path)
    try:
        registered = {d.dev_eui: d for d in store.list_devices()}
    finally:
        store.close()
    assert registered[cfg["dev_eui"]].app_key == bytes.fromhex(cfg["otaa"]["app_key"])
    for text in (prov.stdout, prov.stderr, check.stdout, check.stderr, out, err):
        assert cfg["otaa"]["app_key"] not in text

    # plugged in again: same name, same flash, still provisioned; SIGTERM unplugs it too
    proc, _port, banner = start_board(tmp_path)
    code, _out, err = unplug(proc, signal.SIGTERM)
    assert f"kept between runs; provisioned as air node {cfg['dev_eui']}" in banner
    assert code == 0, err


@given(st.binary(min_size=6, max_size=6) | st.binary(min_size=8, max_size=8))
def test_a_unique_id_of_an_esp32_or_rp2040_is_taken_in_hex(uid: bytes) -> None:
    assert _uid(uid.hex()) == uid and _uid(uid.hex().upper()) == uid
    assert _uid(":".join(f"{b:02x}" for b in uid)) == uid


@given(st.text(max_size=20))
def test_any_other_unique_id_is_refused_by_name(text: str) -> None:
    digits = text.replace(":", "").replace("-", "")
    assume(not (len(digits) in (12, 16) and all(c in "0123456789abcdefABCDEF" for c in digits)))
    with pytest.raises(argparse.ArgumentTypeError, match="expected 12 hex digits"):
        _uid(text)


@given(st.text(max_size=80))
def test_a_board_name_is_a_plain_folder_name_or_refused(text: str) -> None:
    try:
        name = _board_name(text)
    except argparse.ArgumentTypeError as exc:
        assert "expected 1-64 letters" in str(exc)
        return
    assert Path(name).name == name and name not in (".", "..") and len(name) <= 64
