"""The virtual board on a pseudo-terminal, driven the way tools drive a board on /dev/ttyUSB0:
pyserial for the friendly REPL and control characters, mpremote's own transport for the rest."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from mpremote.transport import TransportError
from mpremote.transport_serial import SerialTransport

from sim.vm.serial import RAW_PASTE_WINDOW, SerialBoard

pytestmark = [pytest.mark.vm, pytest.mark.timeout(90)]

MAIN = "print('main.py ran')\n"


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SerialBoard]:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(MAIN)
    with SerialBoard(flash, name="tray-1") as b:
        yield b


def read_until(port: serial.Serial, marker: bytes, timeout: float = 15.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(marker) and time.monotonic() < deadline:
        data += port.read(1)
    assert data.endswith(marker), f"no {marker!r} in {data!r}"
    return data


def prompt(port: serial.Serial) -> None:
    """Get a fresh prompt: what the board printed before the port was opened is gone (pyserial
    flushes it), as with a board that booted before the technician connected."""
    port.write(b"\r")
    read_until(port, b">>> ")


def test_the_friendly_repl_evaluates_what_is_typed(board: SerialBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        prompt(port)
        port.write(b"6*7\r")
        assert read_until(port, b">>> ").endswith(b"6*7\r\n42\r\n>>> ")


def test_ctrl_c_interrupts_a_running_program(board: SerialBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        prompt(port)
        port.write(b"import time\r")
        read_until(port, b">>> ")
        port.write(b"while True: time.sleep(1)\r\r")
        time.sleep(1.0)
        port.write(b"\x03")
        out = read_until(port, b">>> ")
        assert b"KeyboardInterrupt" in out


def test_ctrl_d_soft_resets_runs_main_again_and_prints_the_banner(board: SerialBoard) -> None:
    with serial.Serial(board.port, 115200, timeout=0.2) as port:
        prompt(port)
        port.write(b"\x04")
        out = read_until(port, b">>> ")
    assert b"MPY: soft reboot\r\nmain.py ran\r\n" in out
    assert b"MicroPython v1.27" in out and b'Type "help()" for more information.\r\n>>> ' in out
    assert board.board.boots == 2
    assert board.board.console[0] == "main.py ran"  # the first boot ran it too


def test_raw_paste_larger_than_its_window_through_mpremote(board: SerialBoard) -> None:
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl(soft_reset=False)
        assert t.use_raw_paste
        body = "".join(f"v{i} = {i}\n" for i in range(200)) + "print(sum([v0, v199]))"
        assert len(body) > 3 * RAW_PASTE_WINDOW
        assert t.exec(body) == b"199\r\n"
        with pytest.raises(TransportError, match="ZeroDivisionError"):
            t.exec("1/0")
        t.exit_raw_repl()
    finally:
        t.close()


def test_soft_reset_from_the_raw_repl_comes_back_to_it_without_running_main(
    board: SerialBoard,
) -> None:
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl(soft_reset=True)  # Ctrl-D in raw mode, waits for "soft reboot"
        assert t.eval("1+1") == 2
        t.exit_raw_repl()
    finally:
        t.close()
    assert board.board.boots == 2
    assert board.board.console.count("main.py ran") == 1


def test_files_copied_with_mpremote_land_in_flash_and_are_hash_checked(
    board: SerialBoard, tmp_path: Path
) -> None:
    src = tmp_path / "app.py"
    src.write_bytes(b"x = 1\n" * 2000)
    mpremote = [sys.executable, "-m", "mpremote", "connect", board.port]

    first = subprocess.run([*mpremote, "fs", "cp", str(src), ":app.py"], check=False,
                           capture_output=True, text=True, timeout=60)
    again = subprocess.run([*mpremote, "fs", "cp", str(src), ":app.py"], check=False,
                           capture_output=True, text=True, timeout=60)
    ls = subprocess.run([*mpremote, "fs", "ls"], check=False, capture_output=True, text=True,
                        timeout=60)
    missing = subprocess.run([*mpremote, "fs", "cat", ":nope.txt"], check=False,
                             capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert "Up to date: app.py" in again.stdout  # mpremote compared the board's sha256
    assert "12000 app.py" in ls.stdout and f"{len(MAIN)} main.py" in ls.stdout
    flash = board.board.flash_dir
    assert flash is not None
    assert hashlib.sha256((flash / "app.py").read_bytes()).digest() == \
        hashlib.sha256(src.read_bytes()).digest()
    assert missing.returncode != 0 and "No such file" in missing.stderr  # ENOENT as a board says


def test_the_board_has_a_unique_id_and_reports_what_it_is(board: SerialBoard) -> None:
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl(soft_reset=False)
        uid = t.eval("__import__('machine').unique_id()")
        machine = t.eval("__import__('os').uname().machine")
        t.exit_raw_repl()
    finally:
        t.close()
    assert uid == board.board.uid and len(uid) == 6
    assert "ESP32" in machine


def test_unplugging_the_board_breaks_the_link_for_the_tool(board: SerialBoard) -> None:
    t = SerialTransport(board.port)
    try:
        t.enter_raw_repl(soft_reset=False)
        board.unplug()
        with pytest.raises((TransportError, OSError, serial.SerialException)):
            t.exec("print(1)")
    finally:
        try:
            t.close()
        except (OSError, serial.SerialException):
            pass
    assert board.board.state == "off"
