"""The forwarder: committed records -> signed MQTT messages -> deleted once the broker acked them.

Loop: take up to ``batch_size`` pending records in seq order, sign one message per record,
publish the whole window at QoS 1 with every message in flight at once, then delete exactly the
records whose PUBACK came back. Anything not acknowledged stays in the store and is sent again
after reconnecting (same rid, so consumers drop the duplicate). Nothing is deleted on a guess.

Order: the window is started in seq order (``asyncio.gather`` starts its coroutines in argument
order and each one hands its message to paho before its first await), paho writes them to the
one TCP connection in that order, and MQTT (3.1.1 §4.6 / 5.0 §4.6) has the broker forward the
messages of one client on one topic in the order received for the same QoS. A device's records
all go to its own topic, so per-device order holds without waiting for each ack in turn. The
only exception is a message the broker refuses (MQTT v5 negative PUBACK) while later ones are
accepted: it stays in the store and is retried later.

Backlog: a record older than ``historical_after_s`` when it is sent gets ``'hist': True`` on each
of its SenML records (set before signing), so the hypervisor can tell late data from live data.

Reconnect: exponential backoff with jitter (initial 0.5 s, doubling, capped at 30 s), reset
after a connection that stayed up for a while. ``notify()`` wakes an idle forwarder as soon as
the agent commits new records, so latency stays low without polling.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.keys import SigningKey
from gateway.store.model import StoredRecord, StoreError
from gateway.uplink.cose import CONTENT_SENML_CBOR, sign1
from gateway.uplink.mqtt import DisconnectedError, PublisherError, PublishRejectedError
from gateway.uplink.senml import SenMLError, decode_pack, encode_pack

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.uplink.mqtt import Publisher

__all__ = ["Backoff", "Forwarder", "ForwarderStats", "topic_for"]

log = logging.getLogger("cityedge.forwarder")

HEALTHY_CONNECTION_S: Final = 30.0  # a connection up this long resets the backoff
IDLE_POLL_S: Final = 5.0  # safety net: look at the store even without notify()

# record kind -> topic level under the prefix
_KIND_TOPIC: Final = {"up": "up", "event": "event", "cmd-status": "cmd-status",
                      "status": "status"}


def topic_for(prefix: str, kind: str, dev_eui: str) -> str:
    """The topic a record of ``kind`` from ``dev_eui`` is published on."""
    return f"{prefix}/{_KIND_TOPIC[kind]}/{dev_eui}"


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the step fixed, half random."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        step = min(self.cap, self.initial * self.factor ** min(failures, 32))
        return step / 2 + random.uniform(0, step / 2)


@dataclass
class ForwarderStats:
    """What the forwarder did, for the status page and tests."""

    published: int = 0
    historical: int = 0
    connections: int = 0
    disconnects: int = 0
    rejected: int = 0
    unreadable: int = 0
    errors: int = 0  # unexpected exceptions (bugs), logged with their traceback
    connected: bool = False
    last_error: str | None = None


class Forwarder:
    """Publishes the store's pending records through ``publisher`` until cancelled."""

    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        key: SigningKey,
        gateway_id: str,
        prefix: str,
        *,
        historical_after_s: float = 60.0,
        batch_size: int = 256,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= batch_size <= 65535:
            raise ValueError(f"batch_size {batch_size}: expected 1..65535 (MQTT packet ids)")
        self.store = store
        self.publisher = publisher
        self.key = key
        self.gateway_id = gateway_id
        self.prefix = prefix
        self.historical_after_s = historical_after_s
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.stats = ForwarderStats()
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New records were committed: wake the loop if it is idle (cheap, call freely)."""
        self._wake.set()

    # ------------------------------------------------------------ building messages

    def message_for(self, record: StoredRecord, now: float) -> tuple[str, bytes, bool]:
        """(topic, signed payload, historical?) for one stored record."""
        body = record.body
        historical = now - record.created_at > self.historical_after_s
        if historical:
            try:
                pack = decode_pack(body)
                for entry in pack:
                    entry["hist"] = True
                body = encode_pack(pack, validate=False)
            except SenMLError as exc:
                # Never drop data over a marking: send it as stored, signed, and count it.
                self.stats.unreadable += 1
                log.error("record %s (seq %d): stored body is not SenML (%s); sent unmarked",
                          record.rid, record.seq, exc)
                historical = False
        payload = sign1(body, self.key, CONTENT_SENML_CBOR)
        return topic_for(self.prefix, record.kind, record.dev_eui), payload, historical

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Connect, drain, wait for more; on any link failure back off and start again."""
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                async with self.publisher:
                    self.stats.connected = True
                    self.stats.connections += 1
                    await self._pump()
            except PublisherError as exc:
                self.stats.last_error = str(exc)
                if isinstance(exc, PublishRejectedError):
                    self.stats.rejected += 1
                log.warning("broker link: %s", exc)
            except StoreError as exc:
                self.stats.last_error = str(exc)
                log.error("store: %s", exc)
            except Exception as exc:  # a bug must not stop forwarding for good
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("forwarder failed unexpectedly; restarting it")
            finally:
                if self.stats.connected:
                    self.stats.disconnects += 1
                self.stats.connected = False
            if loop.time() - started >= HEALTHY_CONNECTION_S:
                failures = 0
            delay = self.backoff.delay(failures)
            failures += 1
            log.info("reconnecting to the broker in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _pump(self) -> None:
        while True:
            batch = await asyncio.to_thread(self.store.pending, self.batch_size)
            if not batch:
                # Clear, then look again: a notify() after the clear is never missed.
                self._wake.clear()
                batch = await asyncio.to_thread(self.store.pending, self.batch_size)
                if not batch:
                    await self._idle()
                    continue
            await self._send(batch)

    async def _idle(self) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        lost = asyncio.ensure_future(self.publisher.wait_disconnected())
        try:
            done, _ = await asyncio.wait(
                (wake, lost), timeout=IDLE_POLL_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            wake.cancel()
            lost.cancel()
        if lost in done:
            raise DisconnectedError("connection to the broker lost while idle")

    async def _send(self, batch: list[StoredRecord]) -> None:
        now = self.clock()
        messages = [self.message_for(record, now) for record in batch]
        results = await asyncio.gather(
            *(self.publisher.publish(topic, payload) for topic, payload, _ in messages),
            return_exceptions=True,
        )
        acked = [rec.seq for rec, result in zip(batch, results, strict=True) if result is None]
        self.stats.published += len(acked)  # counted at the broker's ack, before the delete
        self.stats.historical += sum(
            1 for (_, _, hist), result in zip(messages, results, strict=True)
            if hist and result is None
        )
        if acked:
            await asyncio.to_thread(self.store.delete, acked)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, PublisherError):
                    raise result
                raise PublisherError(f"publish failed: {type(result).__name__}: {result}") \
                    from result
