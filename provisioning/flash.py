"""Writing a MicroPython image onto a board: esptool for ESP32, a UF2 copy for RP2040.

Offsets follow MicroPython's download pages and Espressif's bootloader layout: the original
ESP32 and the ESP32-S2 start their second-stage bootloader at 0x1000, the ESP32-S3, -C3 and -C6
at 0x0; MicroPython's ``.bin`` downloads are one merged image meant for that offset. The ROM
bootloader itself cannot be simulated, so only the command built here is tested, not its effect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from provisioning.errors import ProvisioningError

# chip name (esptool --chip) -> offset of the merged MicroPython image
ESP32_OFFSETS: dict[str, int] = {
    "esp32": 0x1000,
    "esp32s2": 0x1000,
    "esp32s3": 0x0,
    "esp32c3": 0x0,
    "esp32c6": 0x0,
}
UF2_STEPS = (
    "RP2040 boards are flashed without a serial tool:",
    "  1. unplug the board, hold its BOOTSEL button and plug it back in (then release);",
    "  2. a USB drive named RPI-RP2 appears;",
    "  3. copy the MicroPython .uf2 file onto it (cp IMAGE.uf2 /media/$USER/RPI-RP2/);",
    "  4. the board reboots into MicroPython on its own; then run `cityedge deploy --port PORT`.",
)


class FlashError(ProvisioningError):
    """The image or the flashing tool cannot be used; the message says what to do."""


class FlashFailed(FlashError):
    """esptool ran and failed: the board did not take the image."""


def check_image(image: Path, chip: str) -> None:
    """FlashError unless ``image`` exists and suits ``chip`` (a .bin for ESP32, .uf2 for RP2040)."""
    if not image.is_file():
        raise FlashError(f"no image file {image}: download MicroPython for your board from "
                         "https://micropython.org/download/ and give its path with --image")
    head = image.read_bytes()[:4]
    if chip == "rp2040":
        if head != b"UF2\n":
            raise FlashError(f"{image} is not a UF2 file: RP2040 boards take the .uf2 download")
        return
    if chip not in ESP32_OFFSETS:
        raise FlashError(f"unknown chip {chip!r}: expected one of "
                         f"{', '.join(sorted(ESP32_OFFSETS))} or rp2040")
    if image.suffix.lower() == ".uf2" or head[:1] != b"\xe9":
        raise FlashError(f"{image} is not an ESP32 firmware image (a .bin starting with the "
                         "0xE9 image magic byte): take the .bin download for your board")


def esptool_command(port: str, image: Path, chip: str = "esp32", baud: int = 460800,
                    erase: bool = False) -> list[list[str]]:
    """The esptool invocations that write ``image`` (after ``erase_flash`` when asked)."""
    if chip not in ESP32_OFFSETS:
        raise FlashError(f"unknown chip {chip!r}: expected one of {', '.join(sorted(ESP32_OFFSETS))}")
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    commands = []
    if erase:
        commands.append(base + ["erase_flash"])
    commands.append(base + ["write_flash", "-z", f"0x{ESP32_OFFSETS[chip]:x}", str(image)])
    return commands


def run_esptool(commands: list[list[str]]) -> None:
    """Run each esptool command, its output going to the terminal; FlashError on failure."""
    for cmd in commands:
        try:
            done = subprocess.run(cmd, check=False)
        except OSError as exc:
            raise FlashError(f"could not start esptool ({exc}): pip install esptool") from None
        if done.returncode != 0:
            raise FlashFailed(f"esptool failed (exit {done.returncode}) on {cmd[cmd.index('--port') + 1]}: "
                             "hold the board's BOOT button while it connects, check the cable, "
                             "or lower --baud, then run again")
