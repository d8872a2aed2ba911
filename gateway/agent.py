"""The gateway agent: frames in from the radio, checked, committed, signed and forwarded.

One asyncio task reads the front end and commits accepted uplinks in groups (one SQLite
transaction per burst: an uplink counts as received only once committed); the forwarder publishes
what is committed and deletes each record only after the broker's acknowledgement. After each
commit the network side answers: ACKs, MAC commands and queued payloads in the uplinks' receive
windows, join-accepts for granted joins, all sent through ``frontend.send(TxRequest)``.

Commands: the command subscriber (on every broker connection) checks each hypervisor command
(``Intake``) and hands it to the ``Dispatcher``, which queues its downlink and publishes its life.
After each commit the agent gives the dispatcher the nodes' FPort 30 answers and the devices
that (re)joined (calendar re-send), and the watering rules (``self.rules``, when set) every
accepted uplink. Open commands are resumed at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import cbor2

from gateway.commands.dispatch import Dispatcher
from gateway.commands.intake import Intake
from gateway.commands.model import CommandRow
from gateway.commands.subscriber import CommandSubscriber
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.counters import Counters
from gateway.keys import KeyFileError, SigningKey, load_signing_key
from gateway.lorawan import COMMON_EU868_CFLIST_HZ, JoinGranted, JoinSettings, NetworkSide
from gateway.radio import RxFrame, open_frontend
from gateway.rules.watering import readings_from_senml
from gateway.store import Accepted, Store, StoreError, StoreFullError
from gateway.store.commands import Admit
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.mqtt import Publisher

log = logging.getLogger("cityedge.agent")

MAX_GROUP = 512  # frames committed in one transaction at most
RETENTION_EVERY_S = 60.0
RULES_TICK_S = 60.0  # the watering rules' housekeeping timer
ANSWER_FPORT = 30  # the nodes' command answers (cmd_seq, cmd_result)
VALVE_ACTIONS = frozenset({"valve_open", "valve_close"})


class Agent:
    """A running gateway: owns the store, the network side, the front end and the forwarder."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        frontend: Any | None = None,
        signing_key: SigningKey | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.counters = Counters()
        self.key = signing_key or load_signing_key(config.gateway.signing_key)
        self.store = store or Store.open(config.store.path)
        self.frontend = (frontend if frontend is not None
                         else open_frontend(config, counters=self.counters))
        # One clock for the whole gateway, the front end's (virtual time in the sim, where the
        # uplinks are stamped with it): command iat/exp, statuses, the rules, the backlog's
        # historical mark and retention then agree with the records' own times.
        self.clock: Callable[[], float] = getattr(self.frontend, "now", time.time)
        # A concentrator hears the usual 8 EU868 channels: announce the 5 extra ones in the
        # CFList unless [lorawan] cflist_mhz says otherwise. Single-channel front ends (sx127x)
        # and the sim's concentrator hear only the default channels, so their devices keep to
        # those.
        lw = config.lorawan
        cflist = lw.cflist_hz()
        if cflist is None:
            cflist = COMMON_EU868_CFLIST_HZ if config.radio.frontend == "semtech-udp" else ()
        self.network = NetworkSide(
            self.store, config.gateway.id, self.counters,
            join_settings=JoinSettings(net_id=lw.net_id, rx1_dr_offset=lw.rx1_dr_offset,
                                       rx2_dr=lw.rx2_dr, rx_delay_s=lw.rx_delay_s,
                                       cflist_hz=tuple(cflist)),
            transmit=getattr(self.frontend, "send", None),
            clock=self.clock,  # Class C timing: the front end's timestamps
        )
        self.forwarder: Forwarder | None = None
        self.intake = Intake(config, self.store, self.counters, clock=self.clock)
        self.dispatcher = Dispatcher(
            self.network, self.store, config.gateway.id, self.counters,
            answer_timeout_s=config.commands.answer_timeout_s, notify=self._notify,
            clock=self.clock)
        self.subscriber: CommandSubscriber | None = None
        # Watering rules (gateway.rules.watering.WateringRules): on_uplink(dev_eui, role,
        # readings, received_at) for every accepted uplink, tick() on a timer, and the
        # gateway-local rules_pause/rules_resume. None: no rules.
        self.rules: Any | None = None
        if config.rules.watering:
            from gateway.rules.watering import WateringRules

            self.rules = WateringRules(
                config.rules.watering, config.groups, self.store, config.gateway.id,
                self.counters, submit=self.dispatcher.submit, clock=self.clock)
        self.started = asyncio.Event()
        # Held while a group is checked and committed, so a registry reload never lands between
        # the network side's checks and the commit of what they accepted.
        self._processing = asyncio.Lock()

    async def reload_devices(self) -> int:
        """Re-read the node registry between two groups of frames; returns the node count."""
        async with self._processing:
            self.network.reload_devices()
            return self.store.stats().devices

    def reload_commands(self) -> bool:
        """Re-read the config file's trusted keys, groups and command limits (SIGHUP); False
        (logged, the old ones kept) when the file or a key no longer loads."""
        source = self.config.source
        if source is None:
            return False
        try:
            config = load_config(source)
            self.intake.reload(config)
            if self.rules is not None:
                self.rules.reload(config.rules.watering, config.groups)
        except (ConfigError, KeyFileError, OSError, ValueError) as exc:
            log.error("SIGHUP: command keys and groups not reloaded: %s", exc)
            return False
        log.info("SIGHUP: %d trusted command keys, %d groups", len(config.commands.keys),
                 len(config.groups))
        return True

    def _notify(self) -> None:
        if self.forwarder is not None:
            self.forwarder.notify()

    async def submit_commands(self, rows: list[CommandRow], *, admit: Admit | None = None
                              ) -> list[CommandRow]:
        """Accepted operator commands to deliver; the watering rules stand aside for an
        operator's valve command while it is valid."""
        stored = await self.dispatcher.submit(rows, admit=admit)
        if self.rules is not None:
            for row in stored:
                if row.action in VALVE_ACTIONS:
                    self.rules.operator_command(row)
        return stored

    async def run(self) -> None:
        """Run until cancelled; the broker may come and go, frames keep being committed."""
        async with AsyncExitStack() as stack:
            frontend = await stack.enter_async_context(self.frontend)
            stack.push_async_callback(self.network.aclose)
            publisher = Publisher(self.config, self.key, self.store)
            self.forwarder = Forwarder(
                self.store, publisher, self.key, self.config.gateway.id, publisher.prefix,
                historical_after_s=self.config.forward.backlog_historical_after_s,
                batch_size=self.config.forward.batch_size, clock=self.clock,
            )
            self.subscriber = CommandSubscriber(publisher.prefix, self.intake, self.dispatcher,
                                                self.counters, submit=self.submit_commands)
            publisher.on_connect.append(self.subscriber.on_connect)
            stack.push_async_callback(self.dispatcher.aclose)
            stack.push_async_callback(self.subscriber.aclose)
            if self.rules is not None:
                for action in ("rules_pause", "rules_resume"):
                    self.dispatcher.local_handler(action, self.rules.local_action)
                rules_task = asyncio.create_task(self._rules_timer(), name="rules")
                stack.callback(rules_task.cancel)
            try:
                await self.dispatcher.resume()
            except StoreError as exc:
                log.error("open commands not resumed: %s", exc)
            forward_task = asyncio.create_task(self.forwarder.run(), name="forwarder")
            stack.callback(forward_task.cancel)
            retention_task = asyncio.create_task(self._retention(), name="retention")
            stack.callback(retention_task.cancel)
            log.info("gateway %s running, radio=%s", self.config.gateway.id,
                     self.config.radio.frontend)
            self.started.set()
            await self._receive(frontend)

    async def _retention(self) -> None:
        """Keep the store within its configured age and size; dropped records are counted."""
        cfg = self.config.store
        while True:
            try:
                result = await asyncio.to_thread(
                    self.store.enforce_retention, cfg.max_records, cfg.max_age_days * 86400.0,
                    now=self.clock())
            except Exception as exc:  # noqa: BLE001 - a failing clean-up must not stop reception
                log.error("retention failed: %s", exc)
            else:
                dropped = result.dropped_by_age + result.dropped_by_count
                if dropped:
                    self.counters["retention_dropped"] += dropped
                    log.warning("retention dropped %d routine records (age %d, size %d)",
                                dropped, result.dropped_by_age, result.dropped_by_count)
            try:  # command ids past their exp (plus skew) can no longer be replayed
                await asyncio.to_thread(self.store.prune_command_ids, self.clock())
            except Exception as exc:  # noqa: BLE001 - the ids stay until the next round
                log.error("pruning expired command ids failed: %s", exc)
            await asyncio.sleep(RETENTION_EVERY_S)

    async def _rules_timer(self) -> None:
        """The watering rules' housekeeping (day rollover, ended pauses, the window opening)."""
        while True:
            await asyncio.sleep(RULES_TICK_S)
            try:
                await self.rules.tick()  # type: ignore[union-attr]
            except Exception:  # a rules bug must not stop anything else
                self.counters["rules_error"] += 1
                log.exception("watering rules tick failed")

    async def _receive(self, frontend: Any) -> None:
        queue: asyncio.Queue[RxFrame] = frontend.queue
        while True:
            group = [await queue.get()]
            while len(group) < MAX_GROUP and not queue.empty():
                group.append(queue.get_nowait())
            await self.process(group)

    async def process(self, frames: list[RxFrame]) -> int:
        """Check a group of frames, commit the accepted ones in one transaction, then send
        what they call for (ACKs, MAC answers, queued downlinks, join-accepts)."""
        async with self._processing:
            return await self._process(frames)

    async def _process(self, frames: list[RxFrame]) -> int:
        """``process`` under the processing lock."""
        accepted: list[Accepted] = []
        joins: list[JoinGranted] = []
        for frame in frames:
            result = self.network.handle(frame)
            if isinstance(result, Accepted):
                accepted.append(result)
            elif isinstance(result, JoinGranted):
                joins.append(result)
        replies = self.network.take_replies()
        mac_states = self.network.take_mac_states()
        stored: list[Accepted] = []
        if accepted or mac_states:
            kept = await self._commit(accepted, mac_states)
            if kept is None:  # not kept: do not acknowledge what we could not store
                kept_out = {a.rid for a in accepted}
                self.network.replies_dropped([r for r in replies if r.rid in kept_out])
                replies = [r for r in replies if r.rid not in kept_out]
            else:
                stored = kept
        if replies:
            await self.network.send_replies(replies)
        joined = [join.dev_eui for join in joins if await self.network.complete_join(join)]
        if joins and self.forwarder is not None:
            self.forwarder.notify()  # the join events
        if stored or joined:
            await self._after_commit(stored, joined)
        return len(stored)

    async def _after_commit(self, stored: list[Accepted], joined: list[str]) -> None:
        """What the command path and the rules learn from committed uplinks and joins."""
        for acc in stored:
            try:
                if acc.fport == ANSWER_FPORT:
                    values = uplink_values(acc)
                    seq, result = values.get("cmd_seq"), values.get("cmd_result")
                    if isinstance(seq, int | float) and isinstance(result, str):
                        await self.dispatcher.on_answer(acc.dev_eui, int(seq), result)
                if self.rules is not None:
                    dev = self.network.device(acc.dev_eui)
                    if dev is not None:
                        await self.rules.on_uplink(acc.dev_eui, dev.role, uplink_values(acc),
                                                   acc.created_at or time.time())
            except Exception:  # the uplink is stored: a command or rules bug costs no data
                self.counters["after_commit_error"] += 1
                log.exception("command answer / rules for uplink %s failed", acc.rid)
        for eui in joined:
            try:
                await self.dispatcher.on_join(eui)
            except Exception:
                self.counters["after_commit_error"] += 1
                log.exception("calendar re-send to %s failed", eui)

    async def _commit(self, accepted: list[Accepted], mac_states: dict) -> list[Accepted] | None:
        """Commit uplinks (and changed MAC states); the new ones (not duplicates), None when
        the store is full."""
        try:
            stored = await asyncio.to_thread(self.store.accept_uplinks, accepted, mac_states)
        except StoreFullError as exc:
            self.counters["store_full"] += len(accepted)
            log.error("store full, %d uplinks not kept: %s", len(accepted), exc)
            return None
        new = [acc for acc, ok in zip(accepted, stored, strict=True) if ok]
        self.counters["duplicate_rid"] += len(stored) - len(new)
        for acc in accepted:
            log.debug("uplink dev_eui=%s fcnt=%d rid=%s", acc.dev_eui, acc.fcnt_up, acc.rid)
        if self.forwarder is not None:
            self.forwarder.notify()
        return new


def uplink_values(acc: Accepted) -> dict[str, Any]:
    """The named SenML values of an accepted uplink (name -> v/vs/vb), from its records or
    its ready CBOR body."""
    if acc.records is not None:
        return readings_from_senml(acc.records)
    try:
        pack = cbor2.loads(acc.body or b"")
    except (cbor2.CBORDecodeError, ValueError, TypeError):
        return {}
    labels = {0: "n", 2: "v", 3: "vs", 4: "vb"}
    return readings_from_senml(
        [{labels[k]: v for k, v in r.items() if k in labels} for r in pack
         if isinstance(r, dict)] if isinstance(pack, list) else [])
