"""`cityedge hypervisor watch`: everything a gateway publishes, live, each signature checked.

Readings, events (alarms, joins, the watering rules' decisions) and command statuses are shown
one line each; a message that does not verify is shown as such and never read as data.
"""

from __future__ import annotations

import argparse

from cityedge.hypervisor.connect import client_from_args
from cityedge.hypervisor.follow import describe, status_update
from cityedge.hypervisor.messages import INBOUND_KINDS, HypervisorMessage, decode_message, load_keys

__all__ = ["format_line", "watch_main", "watch_topics"]


def format_line(msg: HypervisorMessage) -> str:
    """One readable line for any message (telemetry, event, status, command status)."""
    mark = f"verified kid {msg.kid}" if msg.verified else f"NOT VERIFIED ({msg.error})"
    if msg.kind in INBOUND_KINDS:
        return f"{msg.gateway_id} {msg.kind} {msg.dev_eui} (an operator's command going in)"
    if msg.kind == "status":
        return f"{msg.gateway_id} status {msg.status} [{mark}]"
    if not msg.verified:
        return f"{msg.gateway_id} {msg.kind} {msg.dev_eui} [{mark}]"
    update = status_update(msg)
    if update is not None:
        return f"{msg.gateway_id} cmd-status {update.cmd_id}: {describe(update)} [{mark}]"
    vals = msg.values()
    hist = " historical" if msg.historical else ""
    if msg.kind == "event":
        shown = " ".join(f"{k}={v}" for k, v in vals.items())
        return f"{msg.gateway_id} event {msg.dev_eui} {shown}{hist} [{mark}]"
    shown = " ".join(f"{k}={v}" for k, v in vals.items() if k != "fcnt")
    return (f"{msg.gateway_id} {msg.kind} {msg.dev_eui} fcnt={vals.get('fcnt', '-')} "
            f"{shown}{hist} [{mark}]")


def watch_topics(prefix: str, device: str | None) -> list[str]:
    """Everything under ``prefix``, or only one device's topics (and the gateways' status)."""
    if device is None:
        return [f"{prefix}/#"]
    return [f"{prefix}/+/{device.lower()}", f"{prefix}/status"]


async def watch_main(args: argparse.Namespace) -> int:
    keys = load_keys(args.gateway_key)
    prefix = args.prefix.rstrip("/")
    n = 0
    async with client_from_args(args, "hypervisor-watch") as client:
        for topic in watch_topics(prefix, args.device):
            await client.subscribe(topic, qos=1)
        async for m in client.messages:
            msg = decode_message(str(m.topic), bytes(m.payload), keys)
            print(format_line(msg), flush=True)
            n += 1
            if args.count is not None and n >= args.count:
                break
    return 0
