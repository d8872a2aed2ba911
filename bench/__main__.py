"""`make bench`: every benchmark, each printed as a table with its target where the brief sets one."""

from __future__ import annotations

import importlib
import sys

SUITES = (
    ("Uplink payload size against Cayenne LPP", "bench.payload_size"),
    ("Gateway pipeline stages", "bench.gateway_pipeline"),
    ("Semtech UDP front end alone: PUSH_DATA in -> frames out, no target", "bench.semtech_udp"),
    ("Gateway agent against the brief: uplinks/s, p99, backlog drain, memory",
     "bench.gateway_e2e"),
    ("Class C command: gateway processing latency, airtime aside", "bench.command_latency"),
    ("Node heap peak per role in the MicroPython VM (code in RAM and working heap)", "bench.node_heap"),
    ("Node compiled .mpy size per role (only the files the role's board runs)", "bench.node_size"),
    ("Node uplink bytes on air and time on air at SF7 and SF12", "bench.node_airtime"),
    ("Node energy model and 2xAA battery life at one uplink per 15 minutes", "bench.energy"),
)


def main(argv: list[str]) -> int:
    chosen = [s for s in SUITES if not argv or any(a in s[1] for a in argv)]
    for title, module in chosen:
        print(f"\n== {title} ({module}) ==\n")
        importlib.import_module(module).main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
