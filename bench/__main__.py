"""`make bench`: every benchmark, each printed as a table with its target where the brief sets one."""

from __future__ import annotations

import importlib
import sys

SUITES = (
    ("Uplink payload size against Cayenne LPP", "bench.payload_size"),
    ("Gateway pipeline stages", "bench.gateway_pipeline"),
    ("Semtech UDP uplinks: front end alone and agent to broker PUBACK", "bench.semtech_udp"),
    ("Gateway end to end: throughput, latency, backlog drain, memory", "bench.gateway_e2e"),
)


def main(argv: list[str]) -> int:
    chosen = [s for s in SUITES if not argv or any(a in s[1] for a in argv)]
    for title, module in chosen:
        print(f"\n== {title} ({module}) ==\n")
        importlib.import_module(module).main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
