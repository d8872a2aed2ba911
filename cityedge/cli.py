"""The one entry point: `cityedge <command>`; each command lives in the package that owns it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cityedge import __version__


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _setup_logging(level: str, json_lines: bool = False) -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt,
                        stream=sys.stderr)


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

    directory = Path(args.dir)
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
    from gateway.service import run_gateway

    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    _setup_logging(args.log_level or config.gateway.log_level)
    return asyncio.run(run_gateway(config))


def cmd_hypervisor_watch(args: argparse.Namespace) -> int:
    from cityedge.hypervisor import watch_main

    return asyncio.run(watch_main(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cityedge", description="cityedge: city LoRa sensor network, nodes to hypervisor"
    )
    p.add_argument("--version", action="version", version=f"cityedge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    d = sub.add_parser("demo", help="run a simulated district end to end (broker, gateway, nodes)")
    d.add_argument("--nodes", type=int, default=4, help="number of simulated air-quality nodes")
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
    gr.set_defaults(func=cmd_gateway_run)

    h = sub.add_parser("hypervisor", help="hypervisor-side tools").add_subparsers(
        dest="hypervisor_command", required=True, metavar="subcommand")
    hw = h.add_parser("watch", help="subscribe, verify every signature, show messages live")
    hw.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    hw.add_argument("--prefix", default="cityedge/v1/+", help="topic prefix to watch")
    hw.add_argument("--gateway-key", action="append", required=True, metavar="PEM",
                    help="a gateway's public key (.pub); repeat for several gateways")
    hw.add_argument("--count", type=int, default=None, help="exit after this many messages")
    hw.set_defaults(func=cmd_hypervisor_watch)
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
