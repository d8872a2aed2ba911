"""`cityedge sim plan` and `cityedge sim feed`: the simulated radio for planners and integrators.

``plan`` answers "how many uplinks arrive?" for a city's numbers (sim.planning); ``feed`` sends
simulated nodes' real frames to a running gateway over Semtech UDP (sim.feed). ``cityedge.cli``
registers both with :func:`add_parsers`. Exit status: plan 0 when the PDR reaches
``--target-pdr``, 1 when not; 2 for bad usage or input (one line on stderr); keys never shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*")
AIX_AREA_HA = 18_600.0  # Aix-en-Provence's network covers about 18,600 ha


def _digits(text: str) -> bool:
    """Only ASCII digits ("²" and other Unicode digits are not numbers to int())."""
    return text.isascii() and text.isdigit()


def parse_duration(text: str) -> float:
    """Seconds from "900", "90s", "15min", "15m", "1.5h", "2d" or "500ms" (argparse type)."""
    m = _DURATION.fullmatch(text.lower())
    if m is None or m.group(2) not in ("", *_UNITS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration such as 900, 90s, 15min, 1h or 2d")
    seconds = float(m.group(1)) * _UNITS.get(m.group(2), 1.0)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration above zero")
    return seconds


def _pair(text: str) -> tuple[float, float]:
    """"X,Y" (or "LAT,LON") as two finite numbers (argparse type)."""
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two numbers as X,Y") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected finite numbers")
    return a, b


def _host_port(text: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 as [::1]:1700) (argparse type)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not _digits(port) or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:1700")
    return host, int(port)


def _number(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (positive and value <= 0):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a {'positive' if positive else 'finite'} number")
    return value


def _positive(text: str) -> float:
    """A finite number above zero (argparse type)."""
    return _number(text, positive=True)


def _finite(text: str) -> float:
    """A finite number (argparse type)."""
    return _number(text, positive=False)


def _count(text: str) -> int:
    """A whole number, 0 or more (argparse type)."""
    if not _digits(text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, 0 or more")
    return int(text)


def _eui(text: str) -> str:
    """A gateway EUI: 16 hex digits (argparse type)."""
    if not re.fullmatch(r"[0-9a-fA-F]{16}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected 16 hex digits (an EUI-64)")
    return text.lower()


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction 0..1, e.g. 0.95")
    return value


def parse_nodes(text: str) -> dict[str, int]:
    """"1500" (the default role mix) or "air=400,noise=300,soil=300,lighting=500" -> counts."""
    from sim.planning import ROLES, split_mix

    text = text.strip()
    if _digits(text):
        return split_mix(int(text))
    counts: dict[str, int] = {}
    for part in text.split(","):
        role, sep, n = part.partition("=")
        role = role.strip()
        if not sep or role not in ROLES or not _digits(n.strip()):
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected a number of nodes (1500) or counts per role "
                f"(air=400,lighting=500; roles: {', '.join(ROLES)})")
        counts[role] = counts.get(role, 0) + int(n)
    return counts


def _usage_error(message: str) -> Exception:
    from cityedge.cli import CliError

    return CliError(message)


# -- plan -----------------------------------------------------------------------------------------


def _plan_config(args: argparse.Namespace) -> Any:
    from sim.planning import CHANNEL_PLANS, PlanConfig, disc_sites, ring_gateways, sites_from_csv

    grid = None
    if args.positions:
        path = Path(args.positions)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise _usage_error(f"--positions {path}: cannot read it: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        if args.nodes is not None:
            raise _usage_error("--nodes and --positions: the positions file lists the nodes "
                               "(give a role column for their roles)")
        sites, grid = sites_from_csv(text, str(path))
        radius = max(math.hypot(*s.position) for s in sites) or 1000.0
    else:
        radius = (args.radius_m if args.radius_m is not None
                  else math.sqrt(args.area_ha * 1e4 / math.pi))
        sites = disc_sites(args.nodes or parse_nodes("1500"), radius, args.seed)
    if args.gateway:
        gateways = [grid.to_xy(*g) if grid is not None else g for g in args.gateway]
    else:
        gateways = ring_gateways(args.gateways, radius)
    return PlanConfig(
        sites=tuple(sites), gateways=tuple(gateways), interval_s=args.interval,
        duration_s=args.duration, sf=None if args.sf == "adr" else int(args.sf),
        adr_margin_db=args.adr_margin, freqs_hz=CHANNEL_PLANS[args.channels],
        poisson=args.traffic == "poisson", tx_power_dbm=args.tx_power,
        path_loss_exponent=args.path_loss_exponent, shadowing_db=args.shadowing,
        capture=not args.no_capture, gateway_gain_dbi=args.gateway_gain, seed=args.seed)


def _human_s(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def cmd_plan(args: argparse.Namespace) -> int:
    """Run the planning simulation and print (or --json) the verdict against --target-pdr."""
    from sim.planning import PlanError, run_plan

    try:
        config = _plan_config(args)
        started = time.perf_counter()
        result = run_plan(config)
    except PlanError as exc:
        raise _usage_error(str(exc)) from None
    elapsed = time.perf_counter() - started
    passed = result.pdr >= args.target_pdr
    if args.json:
        doc = result.to_dict(args.target_pdr, args.worst)
        doc["runtime_s"] = round(elapsed, 3)
        print(json.dumps(doc, indent=2))
    else:
        _print_plan(result, args, elapsed)
    return 0 if passed else 1


def _print_plan(result: Any, args: argparse.Namespace, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    from sim.planning import ROLES

    c = result.config
    console = Console(width=None if sys.stdout.isatty() else 140)
    roles = ", ".join(f"{r} {sum(1 for s in c.sites if s.role == r)}" for r in ROLES
                      if any(s.role == r for s in c.sites))
    console.print(
        f"[bold]cityedge sim plan[/]: {len(c.sites)} nodes ({roles}), {len(c.gateways)} "
        f"gateway{'s' if len(c.gateways) != 1 else ''}, {len(c.freqs_hz)} channels, one uplink "
        f"every {_human_s(c.interval_s)} ({'Poisson' if c.poisson else '+-5 %'}), "
        f"{_human_s(c.duration_s)} virtual, SF {'by link margin' if c.sf is None else c.sf}, "
        f"seed {c.seed}")
    console.print("frames on air (13 B LoRaWAN + real codec payload): " + ", ".join(
        f"{r} {n} B" for r, n in result.frame_bytes.items()))

    t = Table(title="per spreading factor")
    for col in ("SF", "nodes", "airtime/uplink", "uplinks", "load Erl/ch", "% time", "PDR",
                "ALOHA e^-2G", "collisions", "below sens."):
        t.add_column(col, justify="right")
    for s in result.per_sf:
        lo, hi = s.airtime_us
        air = f"{lo / 1000:.1f} ms" if lo == hi else f"{lo / 1000:.1f}-{hi / 1000:.1f} ms"
        t.add_row(f"SF{s.sf}", str(s.nodes), air, str(s.sent), f"{s.load_erlang:.4f}",
                  f"{100 * s.load_erlang:.2f} %", f"{s.pdr:.3f}", f"{s.aloha_pdr:.3f}",
                  str(s.collisions), str(s.lost_sensitivity))
    console.print(t)

    g = Table(title="per gateway")
    for col in ("gateway", "position (m)", "best link for", "frames heard", "CRC errors",
                "collisions", "below sens."):
        g.add_column(col, justify="right")
    for gw in result.gateways:
        g.add_row(gw.name, f"{gw.position[0]:.0f}, {gw.position[1]:.0f}", f"{gw.best_for} nodes",
                  str(gw.heard), str(gw.crc_errors), str(gw.lost_collision),
                  str(gw.lost_sensitivity))
    console.print(g)

    if args.worst:
        w = Table(title=f"worst-served nodes ({min(args.worst, len(result.nodes))})")
        for col in ("node", "role", "SF", "nearest gw", "margin", "sent", "delivered", "PDR",
                    "lost to"):
            w.add_column(col, justify="right")
        for n in result.worst(args.worst):
            cause = ("-" if n.delivered == n.sent else "collisions"
                     if n.collisions >= n.lost_sensitivity else "sensitivity")
            w.add_row(n.name, n.role, f"SF{n.sf}", f"{n.nearest_gateway_m:.0f} m",
                      f"{n.margin_db:.1f} dB", str(n.sent), str(n.delivered), f"{n.pdr:.2f}",
                      cause)
        console.print(w)

    below = result.below(args.target_pdr)
    verdict = "[bold green]PASS[/]" if result.pdr >= args.target_pdr else "[bold red]FAIL[/]"
    console.print(
        f"overall PDR {result.pdr:.3f} ({result.delivered} of {result.sent} uplinks; "
        f"{result.collisions} lost to collisions, {result.lost_sensitivity} below sensitivity; "
        f"{result.deferred} waited for the duty cycle); {below} of {len(result.nodes)} nodes "
        f"below {args.target_pdr:g}")
    console.print(f"verdict: {verdict} against target PDR {args.target_pdr:g} "
                  f"(simulated in {elapsed:.2f} s)")


# -- feed -----------------------------------------------------------------------------------------


def cmd_feed(args: argparse.Namespace) -> int:
    """Make (or load) simulated ABP nodes, then send their frames to a gateway over Semtech UDP."""
    from gateway.registry import RegistryError, read_registry, write_registry
    from sim.feed import FeedError, FeedReport, new_nodes, run_feed
    from sim.planning import PlanError

    if args.registry_only and args.forward:
        raise _usage_error("--registry-only writes the file and stops: drop --forward")
    if not args.registry_only and not args.forward:
        raise _usage_error("--forward HOST:PORT: where the gateway's semtech-udp front end "
                           "listens (or --registry-only to only write the nodes' file)")
    try:
        if args.registry_out:
            out = Path(args.registry_out)
            if out.exists() and not args.force:
                raise _usage_error(f"--registry-out {out}: already exists; use --registry {out} "
                                   "to feed its nodes, or --force to make new ones")
            entries = new_nodes(args.nodes, radius_m=args.radius_m, centre=args.centre,
                                seed=args.seed)
            registry = write_registry(out, entries, force=args.force)
            print(f"wrote {registry}: {len(entries)} simulated ABP nodes, keys included (mode "
                  "0600, never printed)")
            print(f"next: cityedge gateway nodes import {registry} --config gateway.toml, then "
                  "restart the gateway so it knows the ABP nodes")
            if args.registry_only:
                print(f"then: cityedge sim feed --registry {registry} --forward HOST:1700")
                return 0
        else:
            registry = Path(args.registry)
            entries = list(read_registry(registry).entries)
    except (RegistryError, FeedError, PlanError) as exc:
        raise _usage_error(str(exc)) from None

    def show(src: Any, tx: Any) -> None:
        print(f"t={tx.start_us / 1e6:9.1f} s  {src.entry.dev_eui}  {src.role:8}  "
              f"FCnt {src.fcnt - 1:<6} SF{tx.sf}  {tx.freq_hz / 1e6:.1f} MHz  "
              f"{len(tx.payload)} B", flush=True)

    report = FeedReport()
    print(f"feeding {len(entries)} nodes to {args.forward[0]}:{args.forward[1]} every "
          f"{_human_s(args.interval)} at {args.speed:g}x real time"
          + ("" if args.duration is None else f" for {_human_s(args.duration)}")
          + " (Ctrl-C to stop)", flush=True)
    status = 0
    try:
        asyncio.run(run_feed(
            entries, args.forward, gateway_eui=args.gateway_eui, speed=args.speed,
            interval_s=args.interval, duration_s=args.duration, channels=args.channels,
            centre=args.centre, radius_m=args.radius_m, seed=args.seed,
            on_frame=None if args.quiet else show, report=report))
    except FeedError as exc:
        print(f"cityedge: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    if report.frames_sent:
        try:  # the next run continues each node's frame counter above this one's
            write_registry(registry, report.entries, force=True)
        except RegistryError as exc:
            print(f"cityedge: warning: frame counters not saved: {exc}; the gateway will "
                  "reject the next run's first frames as replays", file=sys.stderr)
    print(f"sent {report.frames_sent} frames in {report.virtual_s:.0f} virtual s; the "
          f"concentrator heard {report.frames_heard}; {report.push_acked} of {report.pushed} "
          "PUSH_DATA acknowledged by the gateway")
    return status


# -- parsers --------------------------------------------------------------------------------------

_PLAN_EPILOG = """\
defaults model Aix-en-Provence: 1,500 nodes (a third lighting cabinets) over 18,600 ha, one
gateway in the middle, an uplink every 15 min, one virtual hour.
examples:
  cityedge sim plan --gateways 3
  cityedge sim plan --nodes air=400,noise=300,soil=300,lighting=500 --radius-m 4000 \\
      --gateway 0,0 --gateway 2500,1000 --interval 10min --duration 6h --json
  cityedge sim plan --positions nodes.csv --gateway 43.53,5.45 --shadowing 6
exit status: 0 overall PDR >= --target-pdr; 1 below it; 2 bad usage or input"""

_FEED_EPILOG = """\
first time:  cityedge sim feed --nodes 20 --registry-out sim-nodes.jsonl --registry-only
             cityedge gateway nodes import sim-nodes.jsonl --config gateway.toml
             (restart the gateway: it loads ABP nodes at start)
then:        cityedge sim feed --registry sim-nodes.jsonl --forward 127.0.0.1:1700
Each run saves the nodes' last frame counters in the file, so the next run is no replay."""


def add_parsers(sub: Any) -> None:
    """Register `cityedge sim plan|feed|board` under the `cityedge` parser."""
    s = sub.add_parser("sim", help="the simulated LoRa network: capacity planning, feeding a "
                       "gateway").add_subparsers(dest="sim_command", required=True,
                                                  metavar="subcommand")
    p = s.add_parser("plan", help="capacity planning: delivery ratio per SF and per gateway",
                     description="Simulate thousands of nodes on the LoRa channel model in "
                     "virtual time and report the packet delivery ratio.",
                     epilog=_PLAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=parse_nodes, default=None, metavar="N|ROLE=N,...",
                   help="total (shared air/noise/soil/lighting 2:2:2:3; default 1500) or "
                   "counts per role")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--area-ha", type=_positive, default=AIX_AREA_HA,
                       help="area covered, hectares (nodes spread uniformly over a disc)")
    where.add_argument("--radius-m", type=_positive, default=None, help="radius of that disc, m")
    where.add_argument("--positions", metavar="CSV",
                       help="node positions: header x_m,y_m or latitude,longitude [,role,name]")
    gws = p.add_mutually_exclusive_group()
    gws.add_argument("--gateway", type=_pair, action="append", metavar="X,Y",
                     help="a gateway's position (metres, or LAT,LON with a degrees CSV); repeat")
    gws.add_argument("--gateways", type=_count, default=1, metavar="N",
                     help="place N gateways: 1 at the centre, more on a ring (default 1)")
    p.add_argument("--interval", type=parse_duration, default=900.0,
                   help="reporting interval per node (default 15min)")
    p.add_argument("--duration", type=parse_duration, default=3600.0,
                   help="virtual time to simulate (default 1h)")
    p.add_argument("--sf", choices=["adr", "7", "8", "9", "10", "11", "12"], default="adr",
                   help="fixed SF, or adr: fastest SF keeping --adr-margin at the best gateway")
    p.add_argument("--adr-margin", type=_finite, default=10.0, metavar="DB",
                   help="installation margin of the SF choice (default 10 dB, as gateway ADR)")
    p.add_argument("--channels", type=int, choices=[3, 8], default=3,
                   help="EU868 uplink channels: the 3 default ones or the usual 8")
    p.add_argument("--traffic", choices=["periodic", "poisson"], default="periodic",
                   help="periodic with the firmware's +-5 %% jitter (default), or Poisson")
    p.add_argument("--tx-power", type=_finite, default=14.0, metavar="DBM",
                   help="node transmit power (default 14 dBm)")
    p.add_argument("--path-loss-exponent", type=_finite, default=2.9, metavar="N",
                   help="log-distance exponent (default 2.9, urban)")
    p.add_argument("--shadowing", type=_finite, default=0.0, metavar="DB",
                   help="log-normal shadowing sigma per link (default 0; 4-8 dB in towns)")
    p.add_argument("--gateway-gain", type=_finite, default=0.0, metavar="DBI",
                   help="gateway antenna gain (default 0 dBi)")
    p.add_argument("--no-capture", action="store_true",
                   help="no capture effect: any overlap on the same channel and SF is a loss")
    p.add_argument("--seed", type=int, default=0, help="same seed, same result")
    p.add_argument("--target-pdr", type=_fraction, default=0.95,
                   help="overall delivery ratio to reach (default 0.95): sets the exit status")
    p.add_argument("--worst", type=_count, default=10, metavar="N",
                   help="list the N worst-served nodes (default 10, 0 for none)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    p.set_defaults(func=cmd_plan)

    f = s.add_parser("feed", help="send simulated nodes' frames to a gateway over Semtech UDP",
                     description="Simulated ABP nodes send real LoRaWAN frames through a "
                     "simulated concentrator and the Semtech UDP protocol to a running gateway "
                     "(`[radio] frontend = \"semtech-udp\"`).", epilog=_FEED_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("--forward", type=_host_port, metavar="HOST:PORT",
                   help="the gateway's Semtech UDP address (e.g. 127.0.0.1:1700)")
    nodes = f.add_mutually_exclusive_group(required=True)
    nodes.add_argument("--registry-out", metavar="FILE",
                       help="make --nodes new nodes and write their registry file (0600)")
    nodes.add_argument("--registry", metavar="FILE",
                       help="feed the nodes of a file written by an earlier --registry-out")
    f.add_argument("--registry-only", action="store_true",
                   help="with --registry-out: write the file and stop")
    f.add_argument("--force", action="store_true", help="overwrite an existing --registry-out")
    f.add_argument("--nodes", type=_count, default=10, help="new nodes to make (default 10)")
    f.add_argument("--interval", type=parse_duration, default=60.0,
                   help="reporting interval per node, virtual (default 60s)")
    f.add_argument("--speed", type=_positive, default=1.0,
                   help="virtual seconds per real second (default 1: real time)")
    f.add_argument("--duration", type=parse_duration, default=None,
                   help="stop after this much virtual time (default: until Ctrl-C)")
    f.add_argument("--channels", type=int, choices=[3, 8], default=3,
                   help="uplink channels (default the 3 an ABP node knows)")
    f.add_argument("--centre", type=_pair, default=(43.5297, 5.4474), metavar="LAT,LON",
                   help="where the simulated concentrator stands (default Aix-en-Provence)")
    f.add_argument("--radius-m", type=_positive, default=2000.0,
                   help="new nodes stand within this distance of it (default 2000 m)")
    f.add_argument("--gateway-eui", type=_eui, default="aa555a00000000f1",
                   help="the simulated packet forwarder's gateway EUI")
    f.add_argument("--seed", type=int, default=0, help="positions and readings")
    f.add_argument("--quiet", action="store_true", help="no line per frame")
    f.set_defaults(func=cmd_feed)

    from cityedge.sim_board import add_parser as add_board_parser  # cityedge sim board

    add_board_parser(s)
