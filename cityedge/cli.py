"""The one entry point: `cityedge <command>`; each command lives in the package that owns it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import stat
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cityedge import __version__

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.registry import RegistryEntry
    from gateway.store import Device, Store

# Where `gateway run` writes its log lines ("stdout" or "stderr"). journald collects both alike;
# stderr keeps the agent's diagnostics apart from any output a caller pipes.
LOG_STREAM = "stdout"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _setup_logging(level: str, log_format: str = "logfmt") -> None:
    """Structured, secret-free log lines for the agent (gateway.logs), one per event."""
    from gateway.logs import setup_logging

    setup_logging(level, log_format, stream=getattr(sys, LOG_STREAM))


def cmd_demo(args: argparse.Namespace) -> int:
    from cityedge.demo import DemoOptions, run_demo

    opts = DemoOptions(
        nodes=args.nodes, speed=args.speed, interval_s=args.interval, duration_s=args.duration,
        broker=args.broker, workdir=args.workdir,
        live=not args.plain,
    )
    return asyncio.run(run_demo(opts))


def cmd_gateway_init(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, default_config, write_config
    from gateway.keys import generate_signing_key

    directory = Path(args.dir).resolve()  # the file is read from elsewhere (systemd, other cwd)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "gateway.toml"
    if config_path.exists() and not args.force:
        raise CliError(f"{config_path} already exists: use --force to overwrite it")
    try:
        config = default_config(args.id, directory, frontend=args.radio)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    key = generate_signing_key(Path(config.gateway.signing_key), force=args.force)
    write_config(config_path, config)
    print(f"wrote {config_path}")
    print(f"wrote {config.gateway.signing_key} (Ed25519 signing key, mode 0600)")
    print(f"wrote {config.gateway.signing_key}.pub (give this to the hypervisor; kid {key.kid.hex()})")
    print(f"next: cityedge gateway run --config {config_path}")
    return 0


def cmd_gateway_run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.keys import KeyFileError
    from gateway.service import EventLoopError, run

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    log_format = args.log_format or getattr(config.gateway, "log_format", "logfmt")
    _setup_logging(args.log_level or config.gateway.log_level, log_format)
    try:
        return run(config)
    except (KeyFileError, EventLoopError) as exc:  # setup problems: a restart won't fix (exit 2)
        raise CliError(str(exc)) from None
    except OSError as exc:  # a port in use, a missing device: may pass, so exit 1 (restart)
        print(f"cityedge: gateway stopped: {exc}", file=sys.stderr)
        return 1


@contextmanager
def _hypervisor_usage() -> Iterator[None]:
    """Bad arguments, key files or broker options of `hypervisor ...`: one line, exit 2."""
    from cityedge.hypervisor.command import CommandError
    from cityedge.hypervisor.connect import BrokerOptionError
    from gateway.keys import KeyFileError

    try:
        yield
    except (CommandError, BrokerOptionError, KeyFileError) as exc:
        raise CliError(str(exc)) from None


def cmd_hypervisor_watch(args: argparse.Namespace) -> int:
    from cityedge.hypervisor.watch import watch_main

    with _hypervisor_usage():
        return asyncio.run(watch_main(args))


def cmd_hypervisor_send(args: argparse.Namespace) -> int:
    from cityedge.hypervisor.send import send_main

    with _hypervisor_usage():
        return send_main(args)


def cmd_hypervisor_keygen(args: argparse.Namespace) -> int:
    from cityedge.hypervisor.send import keygen_main

    with _hypervisor_usage():
        return keygen_main(args)


# ------------------------------------------------------------------------------------------
# `cityedge gateway nodes`: the gateway's node registry (keys go in, never come out on screen)

_KEY_LABELS = {"app_key": "AppKey", "nwk_s_key": "NwkSKey", "app_s_key": "AppSKey"}
_FIELD_OPTIONS = {
    "dev_eui": "DEV_EUI", "role": "--role", "class": "--class", "activation": "--activation",
    "name": "--name", "asset_id": "--asset-id", "location": "--location",
    "latitude": "--lat", "longitude": "--lon", "join_eui": "--join-eui",
    "app_key": "the AppKey", "nwk_s_key": "the NwkSKey", "app_s_key": "the AppSKey",
    "dev_nonce_mode": "--dev-nonce-mode", "dev_addr": "--dev-addr",
}


def _load_config(path: str) -> GatewayConfig:
    """The gateway's configuration; a bad file is a CliError naming it."""
    from gateway.config import ConfigError, load_config

    try:
        return load_config(Path(path))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


@contextmanager
def _open_store(config_path: str, *, create: bool) -> Iterator[Store | None]:
    """The store named by ``[store] path``; None when it does not exist and ``create`` is off
    (reading commands must not create a database as whoever runs them)."""
    from gateway.store import Store, StoreError

    config = _load_config(config_path)
    path = config.store.path
    if not create and not path.exists():
        yield None
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            store = Store.open(path)
        except StoreError as exc:
            raise CliError(str(exc)) from exc
    for warning in caught:
        print(f"cityedge: warning: {warning.message}", file=sys.stderr)
    try:
        yield store
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    finally:
        store.close()


def _warn(message: str) -> None:
    print(f"cityedge: warning: {message}", file=sys.stderr)


class _Stdin:
    """Lines of standard input handed out one per key given as ``-`` (in option order)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.used = 0

    def line(self, what: str) -> str:
        """The next line of stdin; a CliError when there is none."""
        self.used += 1
        text = self.stream.readline()
        if not text:
            raise CliError(f"{what}: expected it on standard input (line {self.used}), "
                           "found end of input")
        return text.strip()


def _key_from_file(path: str, what: str) -> str | bytes:
    """A key file's content: 16 raw bytes, or text holding 32 hex digits."""
    file = Path(path)
    try:
        raw = file.read_bytes()
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise CliError(f"{file}: no such file; expected a file holding {what}") from None
    except IsADirectoryError:
        raise CliError(f"{file}: is a directory; expected a file holding {what}") from None
    except OSError as exc:
        raise CliError(f"{file}: cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode) and mode & 0o077:
        _warn(f"{file}: holds {what} but group or others may read it "
              f"(mode {stat.S_IMODE(mode):04o}); `chmod 600 {file}`")
    if len(raw) == 16:
        return raw
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CliError(f"{file}: expected {what} as 32 hex digits (or 16 raw bytes); "
                       "the file holds something else") from None


def _read_key(args: argparse.Namespace, name: str, stdin: _Stdin) -> str | bytes:
    """One key from --X-file FILE, --X-file - (stdin), --X HEX (warned) or a hidden prompt."""
    label = _KEY_LABELS[name]
    option = "--" + name.replace("_", "-")
    value = getattr(args, name)
    path = getattr(args, name + "_file")
    if value is not None and path is not None:
        raise CliError(f"{option} and {option}-file: give the {label} once")
    if value is not None:
        _warn(f"{option} puts the {label} in your shell history and the process list; "
              f"prefer {option}-file FILE, {option}-file - (stdin) or the prompt")
        return value
    if path == "-":
        return stdin.line(f"{option}-file -: the {label}")
    if path is not None:
        return _key_from_file(path, f"the {label}")
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"{label} (32 hex digits, not shown): ").strip()
        except EOFError:
            raise CliError(f"no {label} given") from None
    raise CliError(f"no {label} given: use {option}-file FILE, or {option}-file - to read it "
                   "from standard input")


def _key_text(value: str | bytes) -> str:
    """A key as the registry's hex text (raw 16-byte key files are accepted too)."""
    return value.hex() if isinstance(value, bytes) else value


def _entry_from_args(args: argparse.Namespace) -> RegistryEntry:
    """Validate `nodes add` options into a registry entry (same rules as an import row)."""
    from gateway.registry import entry_from_fields

    activation = args.activation or ("abp" if args.dev_addr else "otaa")
    fields: dict[str, Any] = {"dev_eui": args.dev_eui, "role": args.role,
                              "activation": activation}
    for name in ("name", "asset_id", "location", "join_eui", "dev_addr", "dev_nonce_mode"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.dev_class is not None:
        fields["class"] = args.dev_class
    if args.lat is not None or args.lon is not None:
        fields["latitude"], fields["longitude"] = args.lat, args.lon
    try:  # everything but the keys first: no prompt for a node that cannot be added anyway
        entry_from_fields(_placeholder_keys(fields))
    except ValueError as exc:
        raise CliError(_option_message(exc)) from None
    stdin = _Stdin(sys.stdin)
    names = ("app_key",) if activation == "otaa" else ("nwk_s_key", "app_s_key")
    for name in names:
        fields[name] = _key_text(_read_key(args, name, stdin))
    unused = [n for n in _KEY_LABELS if n not in names
              and (getattr(args, n) is not None or getattr(args, n + "_file") is not None)]
    if unused:
        raise CliError(f"--{unused[0].replace('_', '-')}: not used by an {activation.upper()} "
                       "node; OTAA takes the AppKey, ABP the NwkSKey and AppSKey")
    mode = _load_config(args.config).lorawan.dev_nonce_mode
    try:
        return entry_from_fields(fields, default_dev_nonce_mode=mode)
    except ValueError as exc:
        raise CliError(_option_message(exc)) from None


def _placeholder_keys(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with stand-in keys, to check the other fields before asking for real ones."""
    stand_in = "5a" * 16
    if fields["activation"] == "abp":
        return {**fields, "nwk_s_key": stand_in, "app_s_key": stand_in}
    return {**fields, "app_key": stand_in}


def _option_message(exc: ValueError) -> str:
    """A field error reworded with the command-line option that carries the field."""
    name = getattr(exc, "field", None)
    problem = getattr(exc, "problem", str(exc))
    return f"{_FIELD_OPTIONS.get(name, name)}: {problem}" if name else str(exc)


def _describe(entry: RegistryEntry) -> str:
    """A short, key-free description of a node for one output line."""
    return f"{entry.role}, {entry.activation.upper()}, class {entry.dev_class}"


def cmd_nodes_add(args: argparse.Namespace) -> int:
    """Register one node (refusing to overwrite a registered DevEUI unless --replace)."""
    from gateway.registry import device_for, plan_import

    entry = _entry_from_args(args)
    with _open_store(args.config, create=True) as store:
        assert store is not None
        existing = store.get_device(entry.dev_eui)
        plan = plan_import([entry], [existing] if existing else [])
        if entry.dev_addr is not None:
            holder = store.device_by_addr(entry.dev_addr)
            if holder is not None and holder.dev_eui != entry.dev_eui:
                raise CliError(f"--dev-addr: {entry.dev_addr} already belongs to node "
                               f"{holder.dev_eui}; give this node another DevAddr")
        if plan.unchanged:
            print(f"node {entry.dev_eui} is already registered with these settings; "
                  "nothing changed")
            return 0
        if existing is not None and not args.replace:
            diffs = (plan.updated or plan.conflicting)[0][2]
            raise CliError(f"node {entry.dev_eui} is already registered (differs in: "
                           f"{', '.join(diffs)}); use --replace to overwrite it")
        store.upsert_device(device_for(entry, existing))
    if existing is None:
        print(f"added node {entry.dev_eui} ({_describe(entry)}); keys stored, not shown")
    elif plan.conflicting:
        print(f"replaced node {entry.dev_eui} ({_describe(entry)}): new credentials, its "
              "session starts over" + (" (it must rejoin)" if entry.activation == "otaa" else ""))
    else:
        print(f"updated node {entry.dev_eui} ({_describe(entry)}); keys and session kept")
    print(_RESTART_HINT)
    return 0


_RESTART_HINT = ("a running agent picks up new OTAA nodes at their join; restart it "
                 "(systemctl restart cityedge-gateway) for other changes")


def _when(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (None stays None)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _masked(key: bytes | None) -> str:
    """What may be said about a key: whether it is set and its length, nothing more."""
    return "not set" if key is None else f"set ({len(key)} bytes)"


def _public_view(dev: Device) -> dict[str, Any]:
    """A device as shown to people and scripts: everything but key material."""
    return {
        "dev_eui": dev.dev_eui, "role": dev.role, "class": dev.dev_class,
        "activation": "otaa" if dev.app_key is not None else "abp",
        "dev_addr": dev.dev_addr, "join_eui": dev.join_eui, "name": dev.name,
        "asset_id": dev.asset_id, "location": dev.location, "latitude": dev.latitude,
        "longitude": dev.longitude, "dev_nonce_mode": dev.dev_nonce_mode,
        "fcnt_up": dev.fcnt_up, "fcnt_down": dev.fcnt_down,
        "keys": {name: _masked(getattr(dev, name)) for name in _KEY_LABELS},
        "created_at": _when(dev.created_at), "updated_at": _when(dev.updated_at),
    }


def cmd_nodes_list(args: argparse.Namespace) -> int:
    """All registered nodes as a table, or as JSON with --json (keys masked either way)."""
    with _open_store(args.config, create=False) as store:
        devices = store.list_devices() if store is not None else []
    views = [_public_view(d) for d in devices]
    if args.json:
        print(json.dumps(views, indent=2))
        return 0
    if not views:
        print("no nodes registered; add one with `cityedge gateway nodes add` or import a "
              "registry file with `cityedge gateway nodes import`")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(views)} registered node{'s' if len(views) != 1 else ''}")
    for column in ("DevEUI", "role", "class", "activation", "DevAddr", "name", "asset",
                   "last FCnt up", "updated"):
        table.add_column(column, no_wrap=column in ("DevEUI", "DevAddr"))
    for v in views:
        table.add_row(v["dev_eui"], v["role"], v["class"], v["activation"].upper(),
                      v["dev_addr"] or "-", v["name"] or "-", v["asset_id"] or "-",
                      "-" if v["fcnt_up"] < 0 else str(v["fcnt_up"]), v["updated_at"] or "-")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return 0


def _get_device(store: Store | None, dev_eui: str) -> Device:
    """The registered node with this DevEUI, or a CliError saying it is not there."""
    from gateway.registry import parse_eui

    try:
        eui = parse_eui("dev_eui", dev_eui)
    except ValueError as exc:
        raise CliError(_option_message(exc)) from None
    dev = store.get_device(eui) if store is not None else None
    if dev is None:
        raise CliError(f"node {eui} is not registered; see `cityedge gateway nodes list`")
    return dev


def cmd_nodes_show(args: argparse.Namespace) -> int:
    """One node in detail; keys appear only as "set (16 bytes)" / "not set"."""
    with _open_store(args.config, create=False) as store:
        view = _public_view(_get_device(store, args.dev_eui))
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    width = max(len(k) for k in view)
    for name, value in view.items():
        if name == "keys":
            for key_name, masked in value.items():
                print(f"{key_name:<{width}}  {masked}")
            continue
        print(f"{name:<{width}}  {'-' if value is None else value}")
    return 0


def _confirm(question: str) -> bool:
    """Ask on a terminal; anything but y/yes is a no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_nodes_remove(args: argparse.Namespace) -> int:
    """Forget a node after confirmation (or --yes); its queued records are still sent."""
    with _open_store(args.config, create=False) as store:
        dev = _get_device(store, args.dev_eui)
        assert store is not None
        if not args.yes:
            if not sys.stdin.isatty():
                raise CliError(f"removing node {dev.dev_eui} needs confirmation: pass --yes "
                               "when not on a terminal")
            label = f"{dev.dev_eui} ({dev.role}{', ' + dev.name if dev.name else ''})"
            if not _confirm(f"remove node {label}? it will no longer be heard"):
                print("nothing removed")
                return 1
        store.remove_device(dev.dev_eui)
    print(f"removed node {dev.dev_eui}; restart a running agent "
          "(systemctl restart cityedge-gateway) so it forgets it too")
    return 0


def cmd_nodes_export(args: argparse.Namespace) -> int:
    """Write every registered node, keys included, to a registry file with mode 0600."""
    from gateway.registry import (
        RegistryError,
        entry_from_device,
        entry_from_fields,
        entry_to_row,
        write_registry,
    )

    if args.file == "-":
        raise CliError("export to standard output refused: the file holds keys; give a file "
                       "name (it is written with mode 0600)")
    config = _load_config(args.config)
    with _open_store(args.config, create=False) as store:
        devices = store.list_devices() if store is not None else []
    entries = []
    for dev in devices:
        try:
            entry = entry_from_device(dev)
            entry_from_fields(entry_to_row(entry))  # what import would accept
        except ValueError as exc:
            _warn(f"node {dev.dev_eui} not exported: {_option_message(exc)}")
            continue
        entries.append(entry)
    try:
        path = write_registry(args.file, entries, force=args.force,
                              gateway_id=config.gateway.id)
    except RegistryError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {path}: {len(entries)} node{'s' if len(entries) != 1 else ''}, keys "
          "included (mode 0600: keep it safe, delete it when done)")
    return 0


def cmd_nodes_import(args: argparse.Namespace) -> int:
    """Import a registry file as a whole: every row checked first, nothing written on a
    problem, registered nodes with other keys only replaced with --replace."""
    from gateway.registry import RegistryError, apply_plan, plan_import, read_registry
    from gateway.store import StoreError

    try:
        registry = read_registry(
            args.file, default_dev_nonce_mode=_load_config(args.config).lorawan.dev_nonce_mode)
    except RegistryError as exc:
        raise CliError(f"{exc}; nothing imported") from None
    try:
        mode = os.stat(args.file).st_mode
    except OSError:
        mode = 0
    if stat.S_ISREG(mode) and mode & 0o077:
        _warn(f"{args.file}: holds keys but group or others may read it "
              f"(mode {stat.S_IMODE(mode):04o}); `chmod 600 {args.file}` or delete it "
              "after the import")
    line_of = dict(zip((e.dev_eui for e in registry.entries), registry.lines, strict=True))
    with _open_store(args.config, create=not args.dry_run) as store:
        devices = store.list_devices() if store is not None else []
        plan = plan_import(registry.entries, devices)
        if plan.addr_clashes:
            entry, owner = plan.addr_clashes[0]
            raise CliError(f"{args.file}: line {line_of[entry.dev_eui]}: dev_addr: "
                           f"{entry.dev_addr} already belongs to registered node {owner}; "
                           "nothing imported")
        for entry, _, diffs in plan.conflicting:
            print(f"{'replace' if args.replace else 'conflict'}: line {line_of[entry.dev_eui]}"
                  f": node {entry.dev_eui} is registered with other {', '.join(diffs)}",
                  file=sys.stderr if not args.replace else sys.stdout)
        if plan.conflicting and not args.replace:
            raise CliError(
                f"{args.file}: {len(plan.conflicting)} node(s) already registered with other "
                "keys or settings; nothing imported (check the file, or use --replace to "
                "overwrite them)")
        last = (f"{len(plan.conflicting)} replaced" if args.replace
                else f"{len(plan.conflicting)} conflicting")
        summary = (f"{len(plan.added)} added, {len(plan.updated)} updated, "
                   f"{len(plan.unchanged)} unchanged, {last}")
        if args.dry_run:
            print(f"dry run of {args.file}: would be {summary}; nothing written")
            return 0
        assert store is not None  # opened with create=True
        try:
            apply_plan(store, plan, replace_conflicting=args.replace)
        except (StoreError, ValueError) as exc:
            raise CliError(f"{args.file}: import failed and was undone: {exc}") from None
    for entry in plan.added:
        print(f"added: node {entry.dev_eui} ({_describe(entry)})")
    for entry, _, diffs in plan.updated:
        print(f"updated: node {entry.dev_eui} ({', '.join(diffs)})")
    print(f"imported {args.file}: {summary}")
    if plan.added or plan.updated or plan.conflicting:
        print(_RESTART_HINT)
    return 0


def _add_nodes_parser(gateway: Any) -> None:
    """`cityedge gateway nodes add|list|show|remove|import|export`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="gateway.toml",
                        help="path to gateway.toml (its [store] path holds the registry)")
    n = gateway.add_parser("nodes", help="the gateway's node registry (keys never shown)"
                           ).add_subparsers(dest="nodes_command", required=True,
                                            metavar="subcommand")
    a = n.add_parser("add", parents=[common], help="register one node",
                     description="Register one node. Keys come from a file (--app-key-file "
                     "FILE), standard input (--app-key-file -, one line per key given as -, in "
                     "the order NwkSKey, AppSKey for ABP) or a hidden prompt.")
    a.add_argument("dev_eui", metavar="DEV_EUI", help="the node's DevEUI (16 hex digits)")
    a.add_argument("--role", required=True, choices=["air", "noise", "soil", "lighting"])
    a.add_argument("--class", dest="dev_class", choices=["A", "C"], default=None,
                   help="LoRaWAN class (default: C for lighting, A otherwise)")
    a.add_argument("--activation", choices=["otaa", "abp"], default=None,
                   help="default: abp when --dev-addr is given, else otaa")
    a.add_argument("--name", help="a human name, e.g. 'Cours Mirabeau cabinet 3'")
    a.add_argument("--asset-id", help="the city's asset reference")
    a.add_argument("--location", help="street or place")
    a.add_argument("--lat", type=float, help="latitude, degrees")
    a.add_argument("--lon", type=float, help="longitude, degrees")
    a.add_argument("--join-eui", help="OTAA: the JoinEUI the node sends (16 hex digits)")
    a.add_argument("--dev-nonce-mode", choices=["increasing", "unique"], default=None,
                   help="OTAA: increasing (LoRaWAN 1.0.4, default) or unique (1.0.2/1.0.3)")
    a.add_argument("--dev-addr", help="ABP: the node's DevAddr (8 hex digits)")
    for name, label in _KEY_LABELS.items():
        option = "--" + name.replace("_", "-")
        a.add_argument(option + "-file", dest=name + "_file", metavar="FILE",
                       help=f"read the {label} (32 hex digits or 16 raw bytes) from FILE; "
                       "- for standard input")
        a.add_argument(option, dest=name, metavar="HEX",
                       help=f"the {label} itself (lands in shell history: prefer "
                       f"{option}-file)")
    a.add_argument("--replace", action="store_true",
                   help="overwrite a node already registered with this DevEUI")
    a.set_defaults(func=cmd_nodes_add)

    ls = n.add_parser("list", parents=[common], help="list registered nodes")
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    ls.set_defaults(func=cmd_nodes_list)

    sh = n.add_parser("show", parents=[common], help="show one node (keys masked)")
    sh.add_argument("dev_eui", metavar="DEV_EUI")
    sh.add_argument("--json", action="store_true", help="JSON instead of text")
    sh.set_defaults(func=cmd_nodes_show)

    rm = n.add_parser("remove", parents=[common], help="forget a node")
    rm.add_argument("dev_eui", metavar="DEV_EUI")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    rm.set_defaults(func=cmd_nodes_remove)

    im = n.add_parser("import", parents=[common], help="import a registry file (all or nothing)")
    im.add_argument("file", metavar="FILE", help="a registry file (docs/registry.md)")
    im.add_argument("--replace", action="store_true",
                    help="overwrite registered nodes whose keys differ from the file's")
    im.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    im.set_defaults(func=cmd_nodes_import)

    ex = n.add_parser("export", parents=[common],
                      help="write all nodes, keys included, to a 0600 registry file")
    ex.add_argument("file", metavar="FILE")
    ex.add_argument("--force", action="store_true", help="overwrite an existing file")
    ex.set_defaults(func=cmd_nodes_export)


_SEND_EPILOG = """\
arguments are NAME=VALUE, typed: integers, numbers, true/false, JSON for lists:
  dim level=40 ramp_s=5 for_min=60        switch on=true for_min=30
  calendar points='[{"ref":"dusk","minutes":0,"level":100}]'
  valve_open seconds=600   valve_close   set_interval seconds=900   reboot
  rules_pause hours=24     rules_resume
exit status: 0 every target acked; 1 rejected, failed or expired (reason shown);
2 bad usage; 3 no final status within --timeout; 4 broker unreachable or connection lost"""


def _add_hypervisor_parser(sub: Any) -> None:
    """`cityedge hypervisor keygen|send|watch`: the hypervisor's side of the MQTT interface."""
    from cityedge.hypervisor.command import ACTION_ARGS
    from cityedge.hypervisor.connect import add_broker_arguments

    h = sub.add_parser("hypervisor", help="hypervisor-side tools").add_subparsers(
        dest="hypervisor_command", required=True, metavar="subcommand")
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("--gateway-key", action="append", required=True, metavar="PEM",
                      help="a gateway's public key (.pub); repeat for several gateways")

    hk = h.add_parser("keygen", help="create an operator signing key (Ed25519) for commands")
    hk.add_argument("--out", required=True, metavar="PEM",
                    help="private key file to write (0600); the public key goes to PEM.pub")
    hk.add_argument("--name", help="the key's name in the gateway config (default: file stem)")
    hk.add_argument("--force", action="store_true", help="replace an existing key file")
    hk.set_defaults(func=cmd_hypervisor_keygen)

    hs = h.add_parser("send", parents=[keys], help="sign a command, send it, follow it to its end",
                      epilog=_SEND_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_arguments(hs)
    hs.add_argument("--key", required=True, metavar="PEM", help="the operator's private key")
    hs.add_argument("--gateway", metavar="GATEWAY_ID", help="the gateway's id (in the prefix)")
    hs.add_argument("--prefix", default=None,
                    help="topic prefix as in the gateway's [mqtt] prefix "
                    "(default cityedge/v1/{gateway_id})")
    target = hs.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="DEV_EUI", help="one device")
    target.add_argument("--group", metavar="NAME", help="a group from the gateway's [groups]")
    hs.add_argument("action", choices=list(ACTION_ARGS), metavar="ACTION",
                    help=f"one of: {', '.join(ACTION_ARGS)}")
    hs.add_argument("args", nargs="*", metavar="NAME=VALUE", help="the action's arguments")
    hs.add_argument("--id", default=None, help="command id (default: cmd-<random uuid>)")
    hs.add_argument("--expires-in", type=float, default=300, metavar="S",
                    help="the command expires this many seconds after now (default 300)")
    hs.add_argument("--timeout", type=float, default=120, metavar="S",
                    help="give up following after this many seconds (default 120, exit 3)")
    hs.add_argument("--json", action="store_true", help="one JSON object per status line")
    hs.set_defaults(func=cmd_hypervisor_send)

    hw = h.add_parser("watch", parents=[keys],
                      help="subscribe, verify every signature, show messages live")
    add_broker_arguments(hw)
    hw.add_argument("--prefix", default="cityedge/v1/+", help="topic prefix to watch")
    hw.add_argument("--device", metavar="DEV_EUI", help="only this device's messages")
    hw.add_argument("--count", type=int, default=None, help="exit after this many messages")
    hw.set_defaults(func=cmd_hypervisor_watch)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cityedge", description="cityedge: city LoRa sensor network, nodes to hypervisor"
    )
    p.add_argument("--version", action="version", version=f"cityedge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    d = sub.add_parser("demo", help="run a simulated district end to end (broker, gateway, nodes)")
    d.add_argument("--nodes", type=int, default=None,
                   help="number of nodes, roles in turn (default: the mixed district of 2 air, "
                        "1 noise, 1 soil, 2 lighting)")
    d.add_argument("--speed", type=float, default=10.0,
                   help="virtual seconds per real second (default 10)")
    d.add_argument("--interval", type=int, default=60, help="node reporting interval, virtual s")
    d.add_argument("--duration", type=float, default=None,
                   help="stop after this many real seconds (default: until Ctrl-C)")
    d.add_argument("--broker", default=None, metavar="HOST:PORT",
                   help="use this MQTT broker (e.g. a Mosquitto) instead of the embedded one")
    d.add_argument("--workdir", default=None, help="keep the demo's files here (default: temp)")
    d.add_argument("--plain", action="store_true", help="print lines instead of a live table")
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("gateway", help="the gateway agent").add_subparsers(
        dest="gateway_command", required=True, metavar="subcommand")
    gi = g.add_parser("init", help="write gateway.toml and the gateway's signing key")
    gi.add_argument("--id", required=True, help="gateway id (EUI-64 hex or a short name)")
    gi.add_argument("--dir", default=".", help="where to write the files (default: here)")
    gi.add_argument("--radio", default="sim", choices=["sim", "sx127x", "semtech-udp"])
    gi.add_argument("--force", action="store_true", help="overwrite existing files")
    gi.set_defaults(func=cmd_gateway_init)
    gr = g.add_parser("run", help="run the gateway agent")
    gr.add_argument("--config", default="gateway.toml", help="path to gateway.toml")
    gr.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    gr.add_argument("--log-format", default=None, choices=["logfmt", "json"],
                    help="one line per event: key=value pairs (default) or JSON objects")
    gr.set_defaults(func=cmd_gateway_run)
    _add_nodes_parser(g)

    _add_hypervisor_parser(sub)

    from provisioning.cli import add_parsers  # flash, deploy, provision, node, inventory

    add_parsers(sub)
    from cityedge import sim_cli  # sim plan, sim feed

    sim_cli.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"cityedge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
