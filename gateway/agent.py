"""The gateway agent: frames in from the radio, checked, committed, signed and forwarded.

One asyncio task reads the front end and commits accepted uplinks in groups (one SQLite
transaction per burst: an uplink counts as received only once committed); the forwarder publishes
what is committed and deletes each record only after the broker's acknowledgement. After each
commit the network side answers: ACKs, MAC commands and queued payloads in the uplinks' receive
windows, join-accepts for granted joins, all sent through ``frontend.send(TxRequest)``.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from gateway.config import GatewayConfig
from gateway.counters import Counters
from gateway.keys import SigningKey, load_signing_key
from gateway.lorawan import COMMON_EU868_CFLIST_HZ, JoinGranted, JoinSettings, NetworkSide
from gateway.radio import RxFrame, open_frontend
from gateway.store import Accepted, Store, StoreFullError
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.mqtt import Publisher

log = logging.getLogger("cityedge.agent")

MAX_GROUP = 512  # frames committed in one transaction at most
RETENTION_EVERY_S = 60.0


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
        )
        self.forwarder: Forwarder | None = None
        self.started = asyncio.Event()
        # Held while a group is checked and committed, so a registry reload never lands between
        # the network side's checks and the commit of what they accepted.
        self._processing = asyncio.Lock()

    async def reload_devices(self) -> int:
        """Re-read the node registry between two groups of frames; returns the node count."""
        async with self._processing:
            self.network.reload_devices()
            return self.store.stats().devices

    async def run(self) -> None:
        """Run until cancelled; the broker may come and go, frames keep being committed."""
        async with AsyncExitStack() as stack:
            frontend = await stack.enter_async_context(self.frontend)
            stack.push_async_callback(self.network.aclose)
            publisher = Publisher(self.config, self.key, self.store)
            self.forwarder = Forwarder(
                self.store, publisher, self.key, self.config.gateway.id, publisher.prefix,
                historical_after_s=self.config.forward.backlog_historical_after_s,
                batch_size=self.config.forward.batch_size,
            )
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
                    self.store.enforce_retention, cfg.max_records, cfg.max_age_days * 86400.0
                )
            except Exception as exc:  # noqa: BLE001 - a failing clean-up must not stop reception
                log.error("retention failed: %s", exc)
            else:
                dropped = result.dropped_by_age + result.dropped_by_count
                if dropped:
                    self.counters["retention_dropped"] += dropped
                    log.warning("retention dropped %d routine records (age %d, size %d)",
                                dropped, result.dropped_by_age, result.dropped_by_count)
            await asyncio.sleep(RETENTION_EVERY_S)

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
        new = 0
        if accepted or mac_states:
            new = await self._commit(accepted, mac_states)
            if new < 0:  # not kept: do not acknowledge what we could not store
                kept_out = {a.rid for a in accepted}
                replies = [r for r in replies if r.rid not in kept_out]
                new = 0
        if replies:
            await self.network.send_replies(replies)
        for join in joins:
            await self.network.complete_join(join)
        if joins and self.forwarder is not None:
            self.forwarder.notify()  # the join events
        return new

    async def _commit(self, accepted: list[Accepted], mac_states: dict) -> int:
        """Commit uplinks (and changed MAC states); how many are new, -1 when the store is full."""
        try:
            stored = await asyncio.to_thread(self.store.accept_uplinks, accepted, mac_states)
        except StoreFullError as exc:
            self.counters["store_full"] += len(accepted)
            log.error("store full, %d uplinks not kept: %s", len(accepted), exc)
            return -1
        new = sum(1 for ok in stored if ok)
        self.counters["duplicate_rid"] += len(stored) - new
        for acc in accepted:
            log.debug("uplink dev_eui=%s fcnt=%d rid=%s", acc.dev_eui, acc.fcnt_up, acc.rid)
        if self.forwarder is not None:
            self.forwarder.notify()
        return new
