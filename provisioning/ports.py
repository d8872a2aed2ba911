"""Serial ports and the boards behind them, recognised by USB vendor:product id.

The ids are those the boards enumerate with: the USB-UART bridge of ESP32 boards (Silicon Labs
CP210x on Heltec and older TTGO boards, WCH CH340/CH9102 on newer LILYGO ones), or the native USB
of RP2040 boards running MicroPython (the ids set in MicroPython's board definitions) and the
RP2040's BOOTSEL mass-storage bootloader.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import serial
import serial.tools.list_ports

from provisioning.errors import PortBusy, PortNotFound, PortPermission


@dataclass(frozen=True)
class UsbBoard:
    """What a USB id tells about the board behind a port."""

    vid: int
    pid: int
    chip: str  # "esp32" or "rp2040"
    bridge: str  # the USB side: "cp210x", "ch340", "ch9102", "native", "bootsel"
    boards: tuple[str, ...]  # firmware.boards names it can be
    note: str = ""


KNOWN_USB_IDS: dict[tuple[int, int], UsbBoard] = {
    (0x10C4, 0xEA60): UsbBoard(0x10C4, 0xEA60, "esp32", "cp210x",
                               ("heltec-lora32-v2", "ttgo-lora32-v21")),
    (0x1A86, 0x7523): UsbBoard(0x1A86, 0x7523, "esp32", "ch340", ("ttgo-lora32-v21",)),
    (0x1A86, 0x55D4): UsbBoard(0x1A86, 0x55D4, "esp32", "ch9102", ("ttgo-lora32-v21",)),
    (0x239A, 0x80F2): UsbBoard(0x239A, 0x80F2, "rp2040", "native", ("feather-rp2040-rfm95",)),
    (0x2E8A, 0x0005): UsbBoard(0x2E8A, 0x0005, "rp2040", "native", ("pico-rfm95",)),
    (0x2E8A, 0x0003): UsbBoard(0x2E8A, 0x0003, "rp2040", "bootsel",
                               ("feather-rp2040-rfm95", "pico-rfm95"),
                               "RP2040 in BOOTSEL mode: copy the MicroPython .uf2 to its drive"),
}


@dataclass(frozen=True)
class SerialPort:
    """One serial port of this computer and, when its USB id is known, the board behind it."""

    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    board: UsbBoard | None

    @property
    def usb_id(self) -> str:
        """``10c4:ea60``, or ``-`` for a port without a USB id."""
        return "-" if self.vid is None or self.pid is None else f"{self.vid:04x}:{self.pid:04x}"


def recognise(vid: int | None, pid: int | None) -> UsbBoard | None:
    """The board family a USB id belongs to, or None."""
    if vid is None or pid is None:
        return None
    return KNOWN_USB_IDS.get((vid, pid))


def list_ports(only_known: bool = False) -> list[SerialPort]:
    """The serial ports pyserial finds, sorted by device name; ``only_known``: boards we know."""
    found = []
    for info in serial.tools.list_ports.comports():
        board = recognise(info.vid, info.pid)
        if only_known and board is None:
            continue
        found.append(SerialPort(info.device, info.description or "", info.vid, info.pid,
                                info.serial_number, board))
    return sorted(found, key=lambda p: p.device)


def _known_ports_hint() -> str:
    names = [p.device for p in list_ports()]
    return f"ports present: {', '.join(names)}" if names else "no serial port is present"


def check_port(device: str) -> None:
    """Open ``device`` exclusively once and close it: PortNotFound, PortBusy or PortPermission."""
    if os.name == "posix" and not os.path.exists(device):
        raise PortNotFound(f"no serial port {device}: is the board plugged in? "
                           f"({_known_ports_hint()}; `cityedge flash --list` shows them)")
    port = serial.Serial()
    port.port = device
    port.baudrate = 115200
    port.exclusive = True
    try:
        port.open()
    except serial.SerialException as exc:
        raise _open_error(device, exc) from None
    port.close()


def _open_error(device: str, exc: serial.SerialException) -> Exception:
    code = exc.errno if isinstance(exc.errno, int) else None
    text = str(exc)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return PortNotFound(f"no serial port {device}: is the board plugged in? "
                            f"({_known_ports_hint()})")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortPermission(f"permission denied on {device}: add your user to the group "
                              "owning it (`sudo usermod -aG dialout $USER`, then log in again)")
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower():
        return PortBusy(f"{device} is busy: another program has it open (a serial terminal, "
                        "mpremote, another cityedge); close it and try again")
    return PortNotFound(f"cannot open {device}: {text}")
