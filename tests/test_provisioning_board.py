"""Connecting to a board over mpremote's serial transport: identify it, or say precisely why not."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from provisioning import ports
from provisioning.board import Board
from provisioning.errors import NotMicroPython, PortBusy, PortNotFound
from provisioning.identity import dev_eui_from_unique_id
from sim.vm.serial import SerialBoard


@pytest.fixture
def board(tmp_path: Path) -> Iterator[SerialBoard]:
    with SerialBoard(tmp_path / "flash", name="tray-1") as b:
        yield b


@pytest.mark.vm
def test_connect_identifies_the_board(board: SerialBoard) -> None:
    with Board.connect(board.port) as b:
        info = b.info
    assert info.version == (1, 27, 0)
    assert info.mpy_version == 6 and info.mpy_sub_version == 3
    assert "ESP32" in info.machine
    assert info.unique_id == board.board.uid
    assert info.dev_eui == dev_eui_from_unique_id(board.board.uid)
    assert info.free_bytes > 0
    assert "MicroPython 1.27.0" in info.describe()


@pytest.mark.vm
def test_a_running_program_is_interrupted_to_reach_the_raw_repl(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("import time\nwhile True:\n    print('tick')\n"
                                   "    time.sleep_ms(50)\n")
    with SerialBoard(flash, name="busy") as sb:
        time.sleep(2.0)  # the loop is running and printing
        with Board.connect(sb.port) as b:
            assert b.eval_code("print(repr(6 * 7))") == 42
    assert "tick" in sb.board.output


@pytest.mark.vm
def test_a_port_held_by_another_program_is_reported_busy(board: SerialBoard) -> None:
    with serial.Serial(board.port, 115200, exclusive=True), pytest.raises(PortBusy, match="busy"):
        Board.connect(board.port)


def test_a_port_that_does_not_exist_is_named() -> None:
    with pytest.raises(PortNotFound, match="/dev/ttyUSB97"):
        Board.connect("/dev/ttyUSB97")


def test_a_silent_device_is_not_micropython() -> None:
    master, slave = os.openpty()
    try:
        with pytest.raises(NotMicroPython, match="no answer"):
            Board.connect(os.ttyname(slave), timeout=1.0)
    finally:
        os.close(slave)
        os.close(master)


def test_a_device_answering_garbage_is_not_micropython() -> None:
    master, slave = os.openpty()
    stop = threading.Event()

    def chatter() -> None:  # answers every input with noise, as a GPS or a modem would
        while not stop.is_set():
            try:
                os.read(master, 1024)
                os.write(master, b"$GPGGA,123519,4807.038,N*47\r\n\xff\xfe")
            except OSError:
                return

    worker = threading.Thread(target=chatter, daemon=True)
    worker.start()
    try:
        with pytest.raises(NotMicroPython, match="not as MicroPython"):
            Board.connect(os.ttyname(slave), timeout=1.0, attempts=1)
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
        worker.join(timeout=5)


def test_ports_are_listed_with_the_board_their_usb_id_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def port(device: str, vid: int | None, pid: int | None) -> ListPortInfo:
        info = ListPortInfo(device, skip_link_detection=True)
        info.vid, info.pid, info.description = vid, pid, device
        return info

    fake = [port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM0", 0x239A, 0x80F2),
            port("/dev/ttyS0", None, None)]
    monkeypatch.setattr(ports.serial.tools.list_ports, "comports", lambda: fake)
    found = ports.list_ports()
    assert [p.device for p in found] == ["/dev/ttyACM0", "/dev/ttyS0", "/dev/ttyUSB0"]
    by_name = {p.device: p for p in found}
    assert by_name["/dev/ttyUSB0"].board is not None
    assert by_name["/dev/ttyUSB0"].board.chip == "esp32"
    assert by_name["/dev/ttyACM0"].board.boards == ("feather-rp2040-rfm95",)
    assert by_name["/dev/ttyS0"].board is None and by_name["/dev/ttyS0"].usb_id == "-"
    assert [p.device for p in ports.list_ports(only_known=True)] == ["/dev/ttyACM0", "/dev/ttyUSB0"]
    assert ports.recognise(0x2E8A, 0x0003).bridge == "bootsel"


def test_errors_raised_on_the_board_become_specific_messages() -> None:
    from mpremote.transport import TransportError, TransportExecError

    from provisioning.board import BoardInfo
    from provisioning.errors import BoardError, BoardGone, FilesystemFull

    info = BoardInfo("/dev/ttyUSB0", (1, 27, 0), "esp32", "ESP32", 0x2806, bytes(6), 0, 0)
    b = Board("/dev/ttyUSB0", None, info)  # type: ignore[arg-type]  # guard() needs no link
    assert info.arch_name == "xtensawin" and info.mpy_version == 6
    trace = "Traceback (most recent call last):\r\n  File \"<stdin>\", line 2\r\n"
    full = pytest.raises(FilesystemFull, match="flash is full while writing app.mpy")
    with full, b.guard("writing app.mpy"):
        raise TransportExecError(b"", trace + "OSError: [Errno 28] ENOSPC\r\n")
    with pytest.raises(BoardError, match="MemoryError"), b.guard("hashing"):
        raise TransportExecError(b"", trace + "MemoryError: memory allocation failed\r\n")
    with pytest.raises(BoardGone, match="plug it back in"), b.guard("hashing"):
        raise TransportError("timeout waiting for first EOF reception")
