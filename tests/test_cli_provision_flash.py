"""`cityedge flash` and `cityedge deploy`: port handling, image checks, the esptool command.

The ESP32 ROM bootloader cannot be simulated, so these tests prove only what cityedge decides
(which port, which chip, which offset, which image is refused) and the command it would run, never
that an ESP32 takes the image. Deploying after the flash runs on a virtual board like the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import serial.tools.list_ports
from serial.tools.list_ports_common import ListPortInfo

from cityedge.cli import main
from provisioning.flash import ESP32_OFFSETS, esptool_command
from sim.vm.serial import SerialBoard


def esp32_image(tmp_path: Path) -> Path:
    image = tmp_path / "ESP32_GENERIC-20250911-v1.26.1.bin"
    image.write_bytes(b"\xe9\x03\x02\x20" + bytes(1020))
    return image


def test_flash_list_names_boards_by_usb_id(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    heltec = ListPortInfo("/dev/ttyUSB0")
    heltec.vid, heltec.pid, heltec.description = 0x10C4, 0xEA60, "CP2102 USB to UART"
    pico = ListPortInfo("/dev/ttyACM0")
    pico.vid, pico.pid, pico.description = 0x2E8A, 0x0005, "Board in FS mode"
    other = ListPortInfo("/dev/ttyS0")
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [heltec, pico, other])
    assert main(["flash", "--list"]) == 0
    out = capsys.readouterr().out
    assert "/dev/ttyUSB0" in out and "10c4:ea60" in out and "heltec-lora32-v2" in out
    assert "/dev/ttyACM0" in out and "pico-rfm95" in out and "/dev/ttyS0" not in out
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [other])
    assert main(["flash", "--list"]) == 0
    assert "no recognised board" in capsys.readouterr().out


def test_esptool_writes_at_the_offset_of_each_chip(tmp_path: Path) -> None:
    image = esp32_image(tmp_path)
    (cmd,) = esptool_command("/dev/ttyUSB0", image, "esp32")
    assert cmd[1:] == ["-m", "esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud",
                       "460800", "write_flash", "-z", "0x1000", str(image)]
    erase, write = esptool_command("/dev/ttyUSB0", image, "esp32s3", erase=True)
    assert erase[-1] == "erase_flash" and write[-2:] == ["0x0", str(image)]
    assert ESP32_OFFSETS["esp32s2"] == 0x1000 and ESP32_OFFSETS["esp32c3"] == 0


@pytest.mark.vm
def test_flash_dry_run_checks_the_port_and_prints_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = esp32_image(tmp_path)
    with SerialBoard(tmp_path / "flash", name="flash-1") as sb:
        assert main(["flash", sb.port, "--image", str(image), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"esptool --chip esp32 --port {sb.port}" in out and f"0x1000 {image}" in out


def test_flash_refuses_bad_images_and_ports_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = esp32_image(tmp_path)
    assert main(["flash", "/dev/ttyNOPE9", "--image", str(image)]) == 2
    assert "no serial port /dev/ttyNOPE9: is the board plugged in?" in capsys.readouterr().err
    assert main(["flash", "/dev/ttyUSB0", "--image", str(tmp_path / "missing.bin")]) == 2
    assert "no image file" in capsys.readouterr().err
    text = tmp_path / "notes.bin"
    text.write_text("hello")
    assert main(["flash", "/dev/ttyUSB0", "--image", str(text), "--chip", "esp32"]) == 2
    assert "not an ESP32 firmware image" in capsys.readouterr().err
    assert main(["flash", "/dev/ttyUSB0", "--image", str(image), "--chip", "rp2040"]) == 2
    assert "not a UF2 file" in capsys.readouterr().err
    assert main(["flash", "/dev/ttyUSB0"]) == 2
    assert "--image" in capsys.readouterr().err


def test_rp2040_flash_explains_the_uf2_copy_and_copies_to_a_bootsel_drive(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uf2 = tmp_path / "RPI_PICO-v1.26.1.uf2"
    uf2.write_bytes(b"UF2\n" + bytes(508))
    drive = tmp_path / "RPI-RP2"
    drive.mkdir()
    assert main(["flash", "/dev/ttyACM0", "--image", str(uf2), "--chip", "rp2040",
                 "--drive", str(drive)]) == 2  # no INFO_UF2.TXT: not a BOOTSEL drive
    assert "hold BOOTSEL" in capsys.readouterr().err
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nBoard-ID: RPI-RP2\n")
    assert main(["flash", "/dev/ttyACM0", "--image", str(uf2), "--chip", "rp2040",
                 "--drive", str(drive)]) == 0
    out = capsys.readouterr().out
    assert "hold its BOOTSEL button" in out and "RPI-RP2" in out
    assert (drive / uf2.name).read_bytes() == uf2.read_bytes()


@pytest.mark.vm
def test_deploy_shows_a_summary_table_and_a_rerun_copies_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with SerialBoard(tmp_path / "flash", name="deploy-1") as sb:
        assert main(["deploy", "--port", sb.port]) == 0
        first = capsys.readouterr().out
        assert main(["deploy", "--port", sb.port]) == 0
        again = capsys.readouterr().out
    assert "MicroPython 1.27.0" in first and "copied" in first and "seconds" in first
    assert "all 49 files verified" in first or "files verified by SHA-256" in first
    row = [line for line in again.splitlines() if line.startswith("│")][-1]
    assert row.split("│")[1].strip() == "0"  # nothing copied the second time
    assert main(["deploy", "--port", "/dev/ttyNOPE9"]) == 2
    assert "no serial port" in capsys.readouterr().err
