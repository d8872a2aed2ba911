"""`cityedge hypervisor send` and `keygen`: sign a command with an operator key, follow it to the end.

Exit status of ``send``: 0 every target acked; 1 rejected, failed or expired somewhere;
2 bad usage (arguments, key files); 3 no final status before --timeout; 4 the broker could not
be reached or dropped the connection (the command's fate is then unknown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiomqtt

from cityedge.hypervisor.command import (
    CommandError,
    TargetKind,
    build_command,
    parse_action_args,
    sign_command,
)
from cityedge.hypervisor.connect import client_from_args
from cityedge.hypervisor.follow import (
    CommandProgress,
    describe,
    follow,
    publish_command,
    subscribe_statuses,
)
from cityedge.hypervisor.messages import HypervisorMessage, load_keys
from gateway.keys import generate_signing_key, load_signing_key

EXIT_ACKED, EXIT_FAILED, EXIT_TIMEOUT, EXIT_BROKER = 0, 1, 3, 4
DEFAULT_PREFIX = "cityedge/v1/{gateway_id}"


def keygen_main(args: argparse.Namespace) -> int:
    """Write an operator key pair and say how to make a gateway trust it (no key material shown)."""
    out = Path(args.out)
    key = generate_signing_key(out, force=args.force)
    name = args.name or out.stem
    # json.dumps of a str is a valid TOML basic string (same escapes, \uXXXX for the rest)
    snippet = (f'[[commands.keys]]\nname = {json.dumps(name)}\n'
               f'public_key = {json.dumps(out.name + ".pub")}\n'
               'actions = ["*"]            # or e.g. ["dim", "switch"]\n'
               'devices = ["*"]            # or DevEUIs, "group:<name>", "role:<role>"\n'
               'rate_per_minute = 120\n')
    print(f"wrote {out} (Ed25519 operator key, mode 0600: keep it secret)")
    print(f"wrote {out}.pub (give this to each gateway)")
    print(f"kid {key.kid.hex()}")
    print("add to the gateway's gateway.toml (public_key relative to it; narrow actions and "
          "devices as needed), then restart or SIGHUP the gateway:\n")
    print(snippet, end="")
    return 0


def _prefix(args: argparse.Namespace) -> str:
    template = args.prefix or DEFAULT_PREFIX
    if "{gateway_id}" in template and not args.gateway:
        raise CommandError("--gateway: required (the topic prefix contains the gateway's id)")
    return template.replace("{gateway_id}", args.gateway or "").rstrip("/")


def _ignored(msg: HypervisorMessage) -> None:
    print(f"cityedge: IGNORED message on {msg.topic}: {msg.error or 'not verified'}",
          file=sys.stderr, flush=True)


def _summary(command: dict[str, Any], progress: CommandProgress) -> str:
    counts: dict[str, int] = {}
    for u in progress.latest.values():
        counts[u.status] = counts.get(u.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return f"{command['id']} {command['action']} -> {command['target']}: {tally}"


async def _send(args: argparse.Namespace, kind: TargetKind, target: str,
                command: dict[str, Any], signed: bytes, keys: dict) -> int:
    progress = CommandProgress(kind, target)
    prefix = _prefix(args)
    emit = (lambda u: print(json.dumps(u.as_dict()), flush=True)) if args.json else (
        lambda u: print(describe(u), flush=True))
    async with client_from_args(args, "hypervisor-send") as client:
        await subscribe_statuses(client, prefix, kind, target)
        await publish_command(client, prefix, kind, target, signed)
        if not args.json:
            print(f"sent {command['id']} ({command['action']} -> {kind}/{target}), "
                  f"expires in {command['exp'] - command['iat']} s", flush=True)
        try:
            async with asyncio.timeout(args.timeout):
                async for update in follow(client, command["id"], keys, target=target,
                                          on_ignored=_ignored):
                    if progress.add(update):
                        emit(update)
                    if progress.done:
                        break
        except TimeoutError:
            print(f"cityedge: timeout after {args.timeout:g} s: no final status for "
                  f"{', '.join(progress.pending())}", file=sys.stderr)
            return EXIT_TIMEOUT
    ok = progress.succeeded
    if args.json:
        print(json.dumps({"id": command["id"], "result": "acked" if ok else "failed",
                          "targets": {t: u.status for t, u in progress.latest.items()}}))
    else:
        print(_summary(command, progress))
    return EXIT_ACKED if ok else EXIT_FAILED


def send_main(args: argparse.Namespace) -> int:
    """Check everything first (CommandError, BrokerOptionError, KeyFileError: usage), then send."""
    kind: TargetKind = "cmd" if args.device else "cmd-group"
    target = args.device or args.group
    action_args = parse_action_args(args.action, args.args)
    command = build_command(args.action, action_args, target, kind=kind, cmd_id=args.id,
                            expires_in=args.expires_in)
    if not args.timeout > 0:
        raise CommandError(f"--timeout {args.timeout}: expected a positive number of seconds")
    _prefix(args)
    key = load_signing_key(args.key)
    keys = load_keys(args.gateway_key)
    signed = sign_command(key, command)
    try:
        return asyncio.run(_send(args, kind, command["target"], command, signed, keys))
    except aiomqtt.MqttError as exc:
        print(f"cityedge: broker {args.broker}: {exc}", file=sys.stderr)
        return EXIT_BROKER
