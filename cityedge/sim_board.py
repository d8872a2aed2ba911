"""`cityedge sim board`: a virtual MicroPython board on a serial port, to rehearse without hardware.

The board (sim.vm.serial.SerialBoard: the real MicroPython VM behind a pseudo-terminal) carries
what the node role's board carries, wired by the same `sim.wiring.wire_node` as the simulated
district: its SX1276 (alone on a simulated radio channel) and the role's sensor chips. Its flash
is a folder kept between runs, so a provisioned board stays provisioned, as on a real one. The
command prints the port and runs until Ctrl-C or SIGTERM, which unplug the board (exit 0).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from firmware.boards import BOARDS
from firmware.config import ROLES

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SimBoardError(Exception):
    """The virtual board cannot be started; the message says why and what to do."""


def default_flash(name: str) -> Path:
    """Where board ``name`` keeps its flash between runs: ~/.cache/cityedge/boards/<name>."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cityedge" / "boards" / name


def _board_name(text: str) -> str:
    """A board name usable as a folder name (argparse type)."""
    if not _NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 1-64 letters, digits, '.', '_' or '-' (e.g. bench-1)")
    return text


def _uid(text: str) -> bytes:
    """A unique id of 6 bytes (ESP32) or 8 bytes (RP2040), as hex (argparse type)."""
    digits = text.replace(":", "").replace("-", "")
    if not re.fullmatch(r"[0-9a-fA-F]{12}|[0-9a-fA-F]{16}", digits):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected 12 hex digits (an ESP32's 6-byte id) or 16 (an RP2040's 8 bytes)")
    return bytes.fromhex(digits)


@contextmanager
def _exclusive(flash: Path) -> Iterator[None]:
    """Hold ``flash`` for this board only: two VMs on one flash folder would corrupt it."""
    try:
        flash.mkdir(parents=True, exist_ok=True)
        fd = os.open(flash, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SimBoardError(f"--flash {flash}: cannot use it as the board's flash: "
                            f"{exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SimBoardError(f"the flash folder {flash} is in use by another virtual board: "
                                "unplug it first (Ctrl-C in its terminal) or give another "
                                "--name or --flash") from None
        yield
    finally:
        os.close(fd)


def _provisioned(flash: Path) -> dict[str, Any] | None:
    """The config.json a provisioned board holds in ``flash`` (None: none, or unreadable)."""
    try:
        cfg = json.loads((flash / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def _provisioned_pins(cfg: dict[str, Any] | None, role: str | None) -> dict[str, int]:
    """The pins a provisioned node of ``role`` names in its settings (its firmware looks for the
    chips there); none when the flash holds another role or pins that are not pin numbers."""
    settings = cfg.get("settings") if cfg and cfg.get("role") == role else None
    pins = settings.get("pins", {}) if isinstance(settings, dict) else {}
    if not isinstance(pins, dict) or not all(type(v) is int for v in pins.values()):
        return {}
    return pins


@contextmanager
def _until_unplugged() -> Iterator[threading.Event]:
    """An event set by Ctrl-C (SIGINT) or SIGTERM; the previous handlers come back afterwards."""
    unplug = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: unplug.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield unplug
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _describe(hw: Any, board: str) -> str:
    """The chips wired to the board, as `cityedge node check` names them."""
    from provisioning.check import KNOWN_I2C

    spi_id, *_pins, i2c_id, _sda, _scl, _adc, _div = BOARDS[board]
    chips = [f"SX1276 radio on SPI {spi_id} (alone on a simulated channel)"]
    chips += [f"{KNOWN_I2C.get(a, 'chip')} at I2C {i2c_id} 0x{a:02x}"
              for a in hw.i2c_bus(i2c_id).scan()]
    return ", ".join(chips)


def _plug_in(board: str, role: str | None, flash: Path, name: str, uid: bytes | None,
             cfg: dict[str, Any] | None) -> Any:
    """The `SerialBoard` wired for ``role`` and started (at its REPL, or running its main.py)."""
    from sim.channel import RadioChannel
    from sim.environment import Environment
    from sim.vm.board import BoardHardware, VMError, VMUnavailable
    from sim.vm.serial import SerialBoard
    from sim.wiring import wire_node

    hw = BoardHardware()
    serial = None
    try:
        serial = SerialBoard(flash, name=name, hardware=hw, uid=uid)
        wire_node(hw, board, role, serial.clock, RadioChannel(serial.clock), Environment(),
                  settings={"pins": _provisioned_pins(cfg, role)}, radio_name=name)
        return serial.start()
    except (VMUnavailable, VMError, TimeoutError) as exc:
        if serial is not None:
            serial.close()
        raise SimBoardError(f"the virtual board did not start: {exc}") from None


def run_board(board: str, role: str | None, flash: Path, name: str, uid: bytes | None) -> int:
    """Start the virtual board, print its port, and run it until Ctrl-C/SIGTERM."""
    with _exclusive(flash), _until_unplugged() as unplug:
        cfg = _provisioned(flash)
        serial = _plug_in(board, role, flash, name, uid, cfg)
        try:
            state = (f"provisioned as {cfg.get('role')} node {cfg.get('dev_eui')}" if cfg
                     else "not provisioned")
            chips = _describe(serial.board.hardware, board)
            lines = [f"virtual {board} board '{name}' on {serial.port} - use it as --port; "
                     + "Ctrl-C unplugs it",
                     f"  role: {role or 'none (bare board)'}; chips: {chips}",
                     f"  flash: {flash} (kept between runs; {state})",
                     f"  unique id: {serial.board.uid.hex()}"]
            if cfg and role is not None and cfg.get("role") not in (role, None):
                lines.append(f"  note: its flash holds a {cfg.get('role')} node but {role} "
                             "chips are wired: `node check` will miss its sensors")
            print("\n".join(lines), flush=True)  # at once: a reader sees the whole banner
            unplug.wait()
        finally:
            serial.close()
    print(f"board '{name}' unplugged; its flash stays in {flash}", flush=True)
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    """`cityedge sim board`."""
    from cityedge.cli import CliError

    flash = Path(args.flash).expanduser() if args.flash else default_flash(args.name)
    try:
        return run_board(args.board, None if args.role == "none" else args.role, flash,
                         args.name, args.uid)
    except SimBoardError as exc:
        raise CliError(str(exc)) from None


_EPILOG = """\
example (the board in one terminal, the commands in another):
  cityedge sim board --board heltec-lora32-v2 --role air --name bench-1
  cityedge provision --port /dev/pts/7 --role air --board heltec-lora32-v2 \\
      --gateway-config gw/gateway.toml --asset AIX-AIR-1
  cityedge node check --port /dev/pts/7
The same --name keeps the same unique id (so the same DevEUI) and the same flash folder."""


def add_parser(sim_sub: Any) -> None:
    """Register `board` under `cityedge sim`."""
    b = sim_sub.add_parser(
        "board", help="a virtual MicroPython board on a serial port, to rehearse without hardware",
        description="Start a virtual board (the real MicroPython VM behind a pseudo-terminal) "
        "with the role's simulated sensor chips and an SX1276 radio, and print the port to give "
        "`cityedge flash`, `provision`, `node check` or mpremote as --port.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--board", required=True, choices=sorted(BOARDS),
                   help="board type (its pin map decides where the chips are wired)")
    b.add_argument("--role", required=True, choices=[*ROLES, "none"],
                   help="the role whose sensor chips are wired; none: a bare board")
    b.add_argument("--name", type=_board_name, default="bench-1",
                   help="the board's name (default bench-1): its flash folder and unique id")
    b.add_argument("--flash", metavar="DIR",
                   help="folder standing for the board's flash (default "
                   "~/.cache/cityedge/boards/NAME, kept between runs)")
    b.add_argument("--uid", type=_uid, default=None, metavar="HEX",
                   help="machine.unique_id() (default: derived from --name)")
    b.set_defaults(func=cmd_board)

