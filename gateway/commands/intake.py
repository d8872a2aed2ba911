"""Command intake: every check a command passes before anything is queued (design §3).

Checks run in the order of ``REJECTION_REASONS``: envelope and signature, message schema, time,
replay, target, authority, argument bounds, rate. The first failure is the answer; a refused
command changes nothing but its counter (and, from step 4 on, its id is spent: the replay table
keeps it until it could no longer be valid). ``Intake.check`` only reads the store (it verifies
a signature too: call it off the event loop). The id is spent by whoever stores the command's
fate, in that same transaction: ``Accepted.admit`` goes to ``add_commands`` (which refuses a
replay that raced this check), ``Rejected.admit`` to ``add_rejection``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.commands.actions import ACTIONS, Action, ArgumentError
from gateway.commands.message import CommandMessage, MessageError, read_command
from gateway.commands.model import CommandRow
from gateway.commands.ratelimit import RateLimits
from gateway.config import CommandsConfig, GatewayConfig, TrustedKey
from gateway.counters import Counters
from gateway.keys import key_id, load_public_key
from gateway.store.commands import Admit
from gateway.store.model import Device

if TYPE_CHECKING:
    from gateway.store import Store

__all__ = ["Accepted", "Intake", "Rejected", "TopicKind", "replay_detail", "selects"]

log = logging.getLogger("cityedge.commands")

TopicKind = Literal["cmd", "cmd-group"]


@dataclass(frozen=True)
class Accepted:
    """A command that passed every check: one row per device (not yet stored), and its id to
    spend when they are stored."""

    rows: list[CommandRow]
    admit: Admit | None = None


@dataclass(frozen=True)
class Rejected:
    """A command refused at intake; ``target`` is the topic's last level as received;
    ``admit`` the id to spend with the rejection (refused after the replay check)."""

    reason: str
    detail: str
    cmd_id: str | None
    target: str
    kid: str | None = None
    key_name: str | None = None
    action: str | None = None
    admit: Admit | None = None


@dataclass(frozen=True)
class _Trust:
    """What one config trusts, swapped as a whole on reload so a check never sees half of it."""

    config: GatewayConfig
    keys: dict[bytes, Ed25519PublicKey]
    trusted: dict[bytes, TrustedKey]


class _Refused(Exception):
    def __init__(self, reason: str, detail: str, admit: Admit | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.admit = admit


def replay_detail(cmd_id: str) -> str:
    """The detail of a "replay" rejection (intake's check or the store's, after a race)."""
    return f"command id {cmd_id!r} was already used with this key"


def selects(selector: str, device: Device, groups: dict[str, tuple[str, ...]]) -> bool:
    """True if a config device selector ("*", DevEUI, "group:<g>", "role:<r>") takes ``device``."""
    if selector == "*" or selector == device.dev_eui:
        return True
    kind, _, name = selector.partition(":")
    if kind == "group":
        return device.dev_eui in groups.get(name, ())
    return kind == "role" and device.role == name


class Intake:
    """Checks commands against the config's keys, groups and limits and the store's devices."""

    def __init__(self, config: GatewayConfig, store: Store, counters: Counters, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.counters = counters
        self.clock = clock
        self._limits = RateLimits(clock)
        self._limits_lock = threading.Lock()  # check() may run in several worker threads
        self.reload(config)

    def reload(self, config: GatewayConfig) -> None:
        """Take new keys, groups and limits (SIGHUP). Raises KeyFileError, keeping the old
        ones, when a key file no longer loads."""
        keys: dict[bytes, Ed25519PublicKey] = {}
        trusted: dict[bytes, TrustedKey] = {}
        for key in config.commands.keys:
            public = load_public_key(key.public_key)
            kid = key_id(public)
            keys[kid], trusted[kid] = public, key
        self._trust = _Trust(config, keys, trusted)

    @property
    def config(self) -> GatewayConfig:
        """The configuration in force."""
        return self._trust.config

    def check(self, topic_kind: TopicKind, target: str, payload: bytes) -> Accepted | Rejected:
        """Accepted (one row per device) or Rejected (why): never raises for bad input
        (a StoreError from the store itself propagates: the gateway, not the command, failed)."""
        if topic_kind not in ("cmd", "cmd-group"):
            raise ValueError(f"topic kind {topic_kind!r}: expected 'cmd' or 'cmd-group'")
        trust = self._trust
        try:
            message = read_command(payload, trust.keys, target)
        except MessageError as exc:
            return self._rejected(Rejected(exc.reason, exc.detail, exc.cmd_id, target,
                                           action=exc.action))
        key = trust.trusted[message.kid]
        cfg = trust.config.commands
        admit = (message.kid.hex(), message.cmd_id, message.expires_at + cfg.clock_skew_s)
        try:
            rows = self._check(trust.config, topic_kind, message, key, admit)
        except _Refused as exc:
            return self._rejected(Rejected(exc.reason, exc.detail, message.cmd_id, target,
                                           message.kid.hex(), key.name, message.action,
                                           exc.admit))
        self.counters["command_accepted"] += 1
        log.info("command %s (%s) from key %s accepted for %d device(s)", message.cmd_id,
                 message.action, key.name, len(rows))
        return Accepted(rows, admit)

    def _rejected(self, rejected: Rejected) -> Rejected:
        self.counters[f"command_rejected_{rejected.reason}"] += 1
        log.warning("command %s on %s rejected: %s: %s", rejected.cmd_id or "-",
                    rejected.target[:64], rejected.reason, rejected.detail)
        return rejected

    def _check(self, config: GatewayConfig, topic_kind: TopicKind, m: CommandMessage,
               key: TrustedKey, admit: Admit) -> list[CommandRow]:
        cfg = config.commands
        now = self.clock()
        self._check_time(cfg, m, now)
        kid = m.kid.hex()
        if self.store.command_id_seen(kid, m.cmd_id):
            raise _Refused("replay", replay_detail(m.cmd_id))
        try:
            return self._check_spent(config, topic_kind, m, key, kid, now)
        except _Refused as exc:  # from here on a refusal spends the id
            raise _Refused(exc.reason, exc.detail, admit) from None

    def _check_spent(self, config: GatewayConfig, topic_kind: TopicKind, m: CommandMessage,
                     key: TrustedKey, kid: str, now: float) -> list[CommandRow]:
        """Steps 5 to 8: target, authority, bounds, rate."""
        cfg = config.commands
        devices = self._devices(config.groups, topic_kind, m.target)
        action = self._action(m.action, devices)
        self._check_authority(config.groups, key, m.action, devices)
        try:
            args = action.check_args(m.args, cfg)
        except ArgumentError as exc:
            raise _Refused(exc.reason, str(exc)) from None
        with self._limits_lock:
            empty = self._limits.take_all([(("key", kid), key.rate_per_minute)] + [
                (("device", d.dev_eui), cfg.device_rate_per_minute) for d in devices])
        if empty is not None:
            kind, name = empty  # type: ignore[misc]
            limit = key.rate_per_minute if kind == "key" else cfg.device_rate_per_minute
            what = f"key {key.name}" if kind == "key" else f"device {name}"
            raise _Refused("rate_limited", f"{what} is over its limit of {limit} commands a "
                                           "minute")
        group = m.target if topic_kind == "cmd-group" else None
        return [CommandRow(cmd_id=m.cmd_id, kid=kid, key_name=key.name, dev_eui=d.dev_eui,
                           action=m.action, args=dict(args), issued_at=m.issued_at,
                           expires_at=m.expires_at, group=group, created_at=now,
                           updated_at=now)
                for d in devices]

    @staticmethod
    def _check_time(cfg: CommandsConfig, m: CommandMessage, now: float) -> None:
        lifetime = m.expires_at - m.issued_at
        if lifetime <= 0 or lifetime > cfg.max_lifetime_s:
            raise _Refused("malformed", f"exp - iat = {lifetime:.0f} s: must be above 0 and at "
                                        f"most {cfg.max_lifetime_s} s")
        if now > m.expires_at + cfg.clock_skew_s:
            raise _Refused("expired", f"expired {now - m.expires_at:.0f} s ago")
        if m.issued_at > now + cfg.clock_skew_s:
            raise _Refused("not_yet_valid", f"issued {m.issued_at - now:.0f} s in the future "
                                            f"(allowed clock skew {cfg.clock_skew_s} s)")

    def _devices(self, groups: dict[str, tuple[str, ...]], topic_kind: TopicKind, target: str
                 ) -> list[Device]:
        if topic_kind == "cmd":
            device = self.store.get_device(target) if len(target) == 16 else None
            if device is None or device.dev_eui != target:
                raise _Refused("unknown_device", f"no registered device {target[:64]!r} "
                                                 "(a lower-case DevEUI)")
            return [device]
        members = groups.get(target)
        if members is None:
            raise _Refused("unknown_device", f"no group {target[:64]!r} in the gateway config")
        devices = []
        for eui in members:
            device = self.store.get_device(eui)
            if device is None:
                raise _Refused("unknown_device", f"group {target}: member {eui} is not "
                                                 "registered")
            devices.append(device)
        return devices

    @staticmethod
    def _action(name: str, devices: list[Device]) -> Action:
        action = ACTIONS.get(name)
        if action is None:
            raise _Refused("unknown_action", f"no action {name[:64]!r} (known: "
                                             f"{', '.join(ACTIONS)})")
        for device in devices:
            if device.role not in action.roles:
                raise _Refused("not_for_role", f"{name} is not an action of role {device.role} "
                                               f"(device {device.dev_eui})")
        return action

    @staticmethod
    def _check_authority(groups: dict[str, tuple[str, ...]], key: TrustedKey, action: str,
                         devices: list[Device]) -> None:
        if "*" not in key.actions and action not in key.actions:
            raise _Refused("not_allowed", f"key {key.name} may not use action {action}")
        for device in devices:
            if not any(selects(s, device, groups) for s in key.devices):
                raise _Refused("not_allowed", f"key {key.name} may not command device "
                                              f"{device.dev_eui}")
