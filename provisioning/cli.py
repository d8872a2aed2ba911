"""The installer's and technician's commands: flash, deploy, provision, node check, inventory.

``cityedge.cli`` registers them with :func:`add_parsers`. Every known failure ends as one line on
stderr and an exit status: 2 when the user can fix the command or its input, 1 when a board
failed (unplugged, not answering, flash full); never a traceback, never a key on screen.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioning import errors, inventory
from provisioning.identity import EuiRange, IdentityError, normalise_eui

USER_ERRORS: tuple[type[Exception], ...] = (
    errors.PortNotFound, errors.PortBusy, errors.PortPermission, errors.ConfigRefused,
    errors.ConfigInvalid, IdentityError,
)
EXIT_USER = 2
EXIT_DEVICE = 1


def _is_user_error(exc: BaseException) -> bool:
    from provisioning.flash import FlashError, FlashFailed
    from provisioning.provision import RegistrationRefused
    from provisioning.tray import TrayError

    if isinstance(exc, FlashFailed):
        return False
    return isinstance(exc, USER_ERRORS + (FlashError, RegistrationRefused, TrayError))


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn our known failures into one stderr line and exit status 2 or 1."""

    def run(args: argparse.Namespace) -> int:
        from provisioning.tray import TrayError

        try:
            return func(args)
        except (errors.ProvisioningError, IdentityError, TrayError) as exc:
            print(f"cityedge: {exc}", file=sys.stderr)
            return EXIT_USER if _is_user_error(exc) else EXIT_DEVICE

    run.__doc__ = func.__doc__
    return run


def _console() -> Any:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


# -- flash / deploy -------------------------------------------------------------------------------

def cmd_flash(args: argparse.Namespace) -> int:
    """List boards, or write MicroPython to one (esptool / UF2 steps) and deploy the app."""
    from provisioning.flash import UF2_STEPS, check_image, esptool_command, run_esptool
    from provisioning.ports import check_port, list_ports

    if args.list:
        ports = list_ports(only_known=not args.all)
        if not ports:
            print("no recognised board on any serial port: plug one in (a data cable, not a "
                  "charge-only one); --all lists every port")
            return 0
        from rich.table import Table

        table = Table(title="serial ports")
        for col in ("port", "USB id", "chip", "USB bridge", "boards", "description"):
            table.add_column(col)
        for p in ports:
            b = p.board
            table.add_row(p.device, p.usb_id, b.chip if b else "-", b.bridge if b else "-",
                          ", ".join(b.boards) if b else "-", b.note or p.description if b
                          else p.description)
        _console().print(table)
        return 0
    if not args.port:
        raise errors.ConfigInvalid("give a PORT to flash (`cityedge flash --list` shows them)")
    if args.image is None:
        raise errors.ConfigInvalid("--image: give the MicroPython image to write (.bin for "
                                   "ESP32, .uf2 for RP2040)")
    chip = args.chip or _chip_of(args.port)
    image = Path(args.image)
    check_image(image, chip)
    if chip == "rp2040":
        print("\n".join(UF2_STEPS).replace("IMAGE.uf2", str(image)))
        if args.drive:
            drive = Path(args.drive)
            if not (drive / "INFO_UF2.TXT").exists():
                raise errors.ConfigInvalid(f"{drive} is not an RP2040 BOOTSEL drive (no "
                                           "INFO_UF2.TXT): hold BOOTSEL while plugging in")
            shutil.copyfile(image, drive / image.name)
            print(f"copied {image.name} to {drive}: the board restarts into MicroPython")
        return 0
    check_port(args.port)
    commands = esptool_command(args.port, image, chip, args.baud, args.erase)
    for cmd in commands:
        print("running: " + " ".join(cmd[1:]))
    if args.dry_run:
        return 0
    run_esptool(commands)
    print(f"MicroPython written to {args.port}; waiting for it to start")
    time.sleep(2.0)
    if args.no_deploy:
        return 0
    return _deploy(args.port, args.role)


def _chip_of(port: str) -> str:
    """The chip a port's USB id says (esp32 when unknown)."""
    from provisioning.ports import list_ports

    for p in list_ports():
        if p.device == port and p.board is not None:
            return p.board.chip
    return "esp32"


def _build(role: str | None = None) -> Any:
    """The node application compiled in a temporary folder (the Image keeps the bytes): with
    ``role``, only what that role's board runs; without, every role's files."""
    from provisioning.deploy import build_image

    with tempfile.TemporaryDirectory(prefix="cityedge-image-") as work:
        return build_image(Path(work), role=role)


def _deploy(port: str, role: str | None = None) -> int:
    """Connect, build, deploy with a progress bar, print the summary table."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from provisioning.board import Board
    from provisioning.deploy import deploy

    image = _build(role)
    with Board.connect(port) as board:
        print(board.info.describe())
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=_console(), transient=True) as bar:
            task = bar.add_task("checking", total=None)

            def progress(path: str, done: int, total: int) -> None:
                bar.update(task, description=path, completed=done, total=total)

            report = deploy(board, image, progress)
    table = Table(title=f"deployed to {port}")
    for col in ("copied", "skipped", "removed", "bytes", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(len(report.copied)), str(len(report.skipped)), str(len(report.removed)),
                  str(report.bytes_copied), f"{report.seconds:.1f}")
    _console().print(table)
    print(f"all {report.verified} files verified by SHA-256 on the board")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Copy the node application to a board (only what differs), verified by hash."""
    return _deploy(args.port, args.role)


# -- provision ------------------------------------------------------------------------------------

def _settings(pairs: list[str]) -> dict[str, Any]:
    from provisioning.tray import setting_value

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigInvalid(f"--setting {pair!r}: expected KEY=VALUE")
        out[key.strip()] = setting_value(value.strip())
    return out


def _options(args: argparse.Namespace) -> Any:
    from provisioning.provision import DEFAULT_JOIN_EUI, Options

    if args.gateway_config and args.export:
        raise errors.ConfigInvalid("--gateway-config and --export: register in one place only")
    opts = Options(
        join_eui=normalise_eui(args.join_eui or DEFAULT_JOIN_EUI),
        activation="abp" if args.abp else "otaa",
        eui_range=EuiRange.parse(args.eui_range) if args.eui_range else None,
        gateway_config=Path(args.gateway_config) if args.gateway_config else None,
        export=Path(args.export) if args.export else None,
        replace=args.replace,
        label_dir=Path(args.label_dir),
        inventory=inventory.resolve(args.inventory),
    )
    return opts


def _spec_from_args(args: argparse.Namespace) -> Any:
    from provisioning.provision import NodeSpec

    missing = [o for o, v in (("--port", args.port), ("--role", args.role),
                              ("--board", args.board)) if not v]
    if missing:
        raise errors.ConfigInvalid(f"{', '.join(missing)}: required (or --batch CSV)")
    if (args.lat is None) != (args.lon is None):
        raise errors.ConfigInvalid("--lat and --lon: give both or neither")
    return NodeSpec(port=args.port, role=args.role, board=args.board, dev_eui=args.dev_eui,
                    asset=args.asset or "", street=args.street or "", lat=args.lat,
                    lon=args.lon, settings=_settings(args.setting), interval_s=args.interval)


def cmd_provision(args: argparse.Namespace) -> int:
    """Provision one board from options, or a tray from --batch CSV, then print a summary."""
    from rich.table import Table

    from provisioning.provision import Outcome, Registrar, check_spec, provision_board
    from provisioning.tray import read_tray

    if args.dev_eui and args.eui_range:
        raise errors.ConfigInvalid("--dev-eui and --eui-range: give one")
    opts = _options(args)
    if args.batch:
        if args.port or args.dev_eui:
            raise errors.ConfigInvalid("--batch: ports and DevEUIs come from the CSV")
        specs = read_tray(Path(args.batch), opts)  # every row checked before any board
    else:
        specs = [_spec_from_args(args)]
        check_spec(specs[0], opts)
    if not args.no_deploy:
        opts.images = {role: _build(role) for role in sorted({s.role for s in specs})}
    if opts.gateway_config is None and opts.export is None:
        print("cityedge: warning: no --gateway-config or --export: the node is not registered "
              "with any gateway", file=sys.stderr)
    registrar = Registrar(opts)
    outcomes: list[Outcome] = []
    try:
        for spec in specs:
            print(f"{spec.port}: provisioning {spec.role} node"
                  + (f" (row {spec.row})" if spec.row else ""), flush=True)
            try:
                out = provision_board(spec, opts, registrar)
            except (errors.ProvisioningError, IdentityError) as exc:
                out = Outcome(spec.port, role=spec.role, asset=spec.asset or "-",
                              message=str(exc))
                out.result = "failed"
                out.user_error = _is_user_error(exc)
                print(f"{spec.port}: FAILED: {exc}", file=sys.stderr, flush=True)
            else:
                if out.deploy is not None:
                    print(f"{spec.port}: application: {out.deploy.summary()}")
                if out.result == "unchanged":
                    print(f"{spec.port}: node {out.dev_eui} already provisioned identically: "
                          "nothing written")
                else:
                    print(f"{spec.port}: node {out.dev_eui} {out.result} ({out.message}); "
                          "keys written, never shown")
                if out.labels:
                    print(f"{spec.port}: label {out.labels[0]} and {out.labels[1]}")
            outcomes.append(out)
    finally:
        registrar.close()
    if opts.gateway_config is not None and any(o.result in ("provisioned", "updated")
                                                for o in outcomes):
        print("a running gateway agent picks up new OTAA nodes at their join; restart it "
              "(systemctl restart cityedge-gateway) for other changes")
    if opts.export is not None and opts.export.exists():
        print(f"registry file {opts.export} (mode 0600, holds keys): import it on the gateway "
              f"with `cityedge gateway nodes import {opts.export}`")
    table = Table(title=f"provisioned {sum(o.result != 'failed' for o in outcomes)} of "
                  f"{len(outcomes)} board(s)")
    for col in ("port", "DevEUI", "role", "asset", "result"):
        table.add_column(col, no_wrap=col == "DevEUI")
    for o in outcomes:
        table.add_row(o.port, o.dev_eui, o.role, o.asset,
                      o.result if o.result != "failed" else _short(f"failed: {o.message}"))
    _console().print(table)
    print(f"inventory: {opts.inventory}")
    failed = [o for o in outcomes if o.result == "failed"]
    if not failed:
        return 0
    if len(outcomes) == 1 and failed[0].user_error:
        return EXIT_USER
    return EXIT_DEVICE


def _short(text: str, limit: int = 70) -> str:
    """``text`` cut to ``limit`` characters for a table cell (the full line was printed)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- node check / inventory -----------------------------------------------------------------------

def cmd_node_check(args: argparse.Namespace) -> int:
    """Firmware version, masked configuration, sensors and radio of a connected board."""
    from provisioning.board import Board
    from provisioning.check import check_node

    with Board.connect(args.port) as board:
        report = check_node(board, args.board)
    if args.json:
        print(json.dumps({"board": report.board, "firmware": report.firmware,
                          "config": report.config,
                          "i2c": [{"address": f"0x{a:02x}", "chip": c} for a, c in report.i2c],
                          "readings": report.readings, "radio_version": report.radio_version,
                          "radio_ok": report.radio_ok, "problems": report.problems}, indent=2))
    else:
        print(report.board)
        print(f"firmware: {report.firmware or 'none'}")
        if report.config is not None:
            print("configuration (keys masked):")
            print(json.dumps(report.config, indent=2, sort_keys=True))
        for addr, chip in report.i2c:
            print(f"I2C 0x{addr:02x}: {chip}")
        if report.readings is not None:
            print("readings: " + ", ".join(f"{k}={v}" for k, v in report.readings.items()))
        elif report.readings_note:
            print(f"readings: {report.readings_note}")
        if report.radio_version is not None:
            print(f"radio: SX127x RegVersion 0x{report.radio_version:02x} "
                  f"({'OK' if report.radio_ok else 'FAIL'})")
        for problem in report.problems:
            print(f"problem: {problem}")
        print("node OK" if not report.problems else f"{len(report.problems)} problem(s)")
    return 0 if not report.problems else EXIT_DEVICE


def cmd_inventory_export(args: argparse.Namespace) -> int:
    """Write the inventory as CSV."""
    path = inventory.resolve(args.inventory)
    if not path.exists():
        raise errors.ConfigInvalid(f"no inventory at {path}: nothing provisioned yet, or give "
                                   "--inventory")
    try:
        n = inventory.export_csv(path, Path(args.csv))
    except OSError as exc:
        raise errors.ConfigInvalid(f"{args.csv}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {args.csv}: {n} row(s) from {path}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register flash, deploy, provision, node and inventory under the `cityedge` parser."""
    f = sub.add_parser("flash", help="write MicroPython to a board, then deploy the app")
    f.add_argument("port", nargs="?", metavar="PORT", help="serial port, e.g. /dev/ttyUSB0")
    f.add_argument("--list", action="store_true", help="list serial ports with known boards")
    f.add_argument("--all", action="store_true", help="with --list: every serial port")
    f.add_argument("--image", metavar="FILE", help="MicroPython image (.bin ESP32, .uf2 RP2040)")
    f.add_argument("--chip", choices=["esp32", "esp32s2", "esp32s3", "esp32c3", "esp32c6",
                                      "rp2040"], help="default: from the port's USB id")
    f.add_argument("--baud", type=int, default=460800, help="esptool baud rate")
    f.add_argument("--erase", action="store_true", help="erase the whole flash first")
    f.add_argument("--drive", metavar="DIR", help="RP2040: the mounted RPI-RP2 drive")
    f.add_argument("--no-deploy", action="store_true", help="only write MicroPython")
    f.add_argument("--dry-run", action="store_true", help="print the esptool command only")
    f.set_defaults(func=_guarded(cmd_flash))

    d = sub.add_parser("deploy", help="copy the node application to a board (verified)")
    d.add_argument("--port", required=True, metavar="PORT")
    d.add_argument("--role", choices=["air", "noise", "soil", "lighting"],
                   help="ship only what this role's board runs (default: every role's files)")
    d.set_defaults(func=_guarded(cmd_deploy))

    p = sub.add_parser("provision", help="give boards identity, keys, config; register; label")
    p.add_argument("--port", metavar="PORT")
    p.add_argument("--role", choices=["air", "noise", "soil", "lighting"])
    p.add_argument("--board", help="heltec-lora32-v2, ttgo-lora32-v21, feather-rp2040-rfm95, "
                   "pico-rfm95")
    p.add_argument("--batch", metavar="CSV", help="a tray of boards (port,role,board,...)")
    p.add_argument("--dev-eui", help="DevEUI (default: from the board's unique id)")
    p.add_argument("--eui-range", metavar="RANGE", help="allocate the next free DevEUI from "
                   "FIRST-LAST or BASE/BITS")
    p.add_argument("--join-eui", help="JoinEUI (default 0000000000000000)")
    p.add_argument("--abp", action="store_true", help="ABP instead of OTAA")
    p.add_argument("--interval", type=int, default=900, help="reporting interval, s")
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--street", help="street or place")
    p.add_argument("--asset", help="the city's asset reference")
    p.add_argument("--setting", action="append", default=[], metavar="KEY=VALUE",
                   help="a role setting (repeat)")
    p.add_argument("--gateway-config", metavar="TOML", help="register into this gateway's store")
    p.add_argument("--export", metavar="FILE", help="append to a registry file (mode 0600)")
    p.add_argument("--replace", action="store_true", help="replace a registered node / board")
    p.add_argument("--label-dir", default="labels", metavar="DIR", help="where labels go")
    p.add_argument("--inventory", metavar="PATH", help="inventory file or folder")
    p.add_argument("--no-deploy", action="store_true", help="do not deploy the application")
    p.set_defaults(func=_guarded(cmd_provision))

    n = sub.add_parser("node", help="technician checks on a connected node").add_subparsers(
        dest="node_command", required=True, metavar="subcommand")
    c = n.add_parser("check", help="firmware, config (keys masked), sensors, radio self-test")
    c.add_argument("--port", required=True, metavar="PORT")
    c.add_argument("--board", help="board type when the node has no config")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_guarded(cmd_node_check))

    i = sub.add_parser("inventory", help="the provisioning inventory").add_subparsers(
        dest="inventory_command", required=True, metavar="subcommand")
    e = i.add_parser("export", help="write the inventory as CSV")
    e.add_argument("--csv", required=True, metavar="FILE")
    e.add_argument("--inventory", metavar="PATH")
    e.set_defaults(func=_guarded(cmd_inventory_export))
