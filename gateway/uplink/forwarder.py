"""The forwarder: committed records -> signed MQTT messages -> deleted once the broker acked them.

Loop: take up to ``batch_size`` pending records in seq order, sign one message per record,
publish the whole window at QoS 1 with every message in flight at once, then delete exactly the
records whose PUBACK came back. Anything not acknowledged stays in the store and is sent again
after reconnecting (same rid, so consumers drop the duplicate). Nothing is deleted on a guess.

Order: the window is handed to paho in seq order (``Publisher.publish_all``), paho writes it to
the one TCP connection in that order, and MQTT (3.1.1 §4.6 / 5.0 §4.6) has the broker forward the
messages of one client on one topic in the order received for the same QoS. A device's records
all go to its own topic, so per-device order holds without waiting for each ack in turn. The
only exception is a message the broker refuses (MQTT v5 negative PUBACK) while later ones are
accepted: it stays in the store and is retried later.

Backlog: when the forwarder is behind (the oldest pending record is older than
``historical_after_s``, or a whole window is pending), it drains in batches: a ``BacklogReader``
groups a large span of the queue per device, and the records of one device go out as a few large
signed packs (``senml.append_backlog_part``/``finish_pack``, byte-level: each uplink keeps its own
records and ``rid``, and its first record carries ``'hist': True``). One Ed25519 signature then
covers up to ``max_pack_uplinks`` uplinks. Rounds (and live windows) are pipelined: the next
one is fetched and signed while the current one waits for its PUBACKs, and published once they
came back, so rounds still leave one after the other; the delete of a round's acknowledged
records runs in the background meanwhile (still only after their PUBACK).
Live traffic stays one message per uplink; a single record sent late (older than
``historical_after_s``) is marked the same way (``mark_historical``). docs/mqtt.md has the shapes.

Reconnect: exponential backoff with jitter (initial 0.5 s, doubling, capped at 30 s), reset
after a connection that stayed up for a while. ``notify()`` wakes an idle forwarder as soon as
the agent commits new records, so latency stays low without polling.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from gateway.keys import SigningKey
from gateway.store.model import StoredRecord, StoreError
from gateway.store.reader import BacklogReader, Row
from gateway.uplink.cose import CONTENT_SENML_CBOR, sign1
from gateway.uplink.mqtt import DisconnectedError, PublisherError, PublishRejectedError
from gateway.uplink.senml import SenMLError, append_backlog_part, finish_pack, mark_historical

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.uplink.mqtt import Publisher

__all__ = ["Backoff", "Forwarder", "ForwarderStats", "topic_for"]

log = logging.getLogger("cityedge.forwarder")

HEALTHY_CONNECTION_S: Final = 30.0  # a connection up this long resets the backoff
IDLE_POLL_S: Final = 5.0  # safety net: look at the store even without notify()
MAX_PACK_UPLINKS: Final = 128  # uplinks joined in one backlog message at most
MAX_PACK_BYTES: Final = 64 * 1024  # and about this many bytes of SenML
PLAN_ROWS: Final = 262_144  # backlog rows grouped per device at a time (4 bytes each)
# Backlog records per round (bodies in memory while it is packed and signed; with the pipelined
# drain two rounds are alive). 512: peak RSS after a 1M drain 57.9 MB instead of 59.4-60.1 MB
# with 1,024, for ~4 % less drain rate (bench.gateway_e2e).
ROUND_RECORDS: Final = 512

# record kind -> topic level under the prefix
_KIND_TOPIC: Final = {"up": "up", "event": "event", "cmd-status": "cmd-status",
                      "status": "status"}


class _Pipeline:
    """One round of messages in flight while the caller prepares (fetches and signs) the
    next: ``send`` waits for the previous round's PUBACKs (and raises its failure) before it
    publishes, so rounds still leave one after the other and per-device order is kept."""

    def __init__(self, forwarder: Forwarder) -> None:
        self._forwarder = forwarder
        self._inflight: asyncio.Future[None] | None = None

    async def send(self, packs: Sequence[Sequence[StoredRecord]],
                   messages: Sequence[tuple[str, bytes, bool]]) -> None:
        await self.finish()
        self._inflight = asyncio.ensure_future(
            self._forwarder._publish(packs, messages, defer_delete=True))

    @property
    def busy(self) -> bool:
        """A round is in flight."""
        return self._inflight is not None

    async def finish(self) -> None:
        """Wait for the round in flight (its acknowledged records are being deleted)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight

    def cancel(self) -> None:
        """Leaving early (a failure, cancellation): stop waiting for the round in flight;
        nothing of it is deleted unless its PUBACK already came."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None and not inflight.done():
            inflight.cancel()
        elif inflight is not None and not inflight.cancelled():
            inflight.exception()  # retrieved: the failure that matters is already raised


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

    published: int = 0  # records acknowledged by the broker
    historical: int = 0  # of which sent marked historical
    messages: int = 0  # MQTT messages acknowledged (a backlog pack counts once)
    packs: int = 0  # of which backlog packs joining several uplinks
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
        max_pack_uplinks: int = MAX_PACK_UPLINKS,
        on_acked: Callable[[Sequence[StoredRecord]], None] | None = None,
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
        if not 1 <= max_pack_uplinks <= 1024:
            raise ValueError(f"max_pack_uplinks {max_pack_uplinks}: expected 1..1024")
        self.clock = clock
        self.max_pack_uplinks = max_pack_uplinks
        self.on_acked = on_acked  # called with the records the broker acknowledged (bench)
        self.stats = ForwarderStats()
        self._wake = asyncio.Event()
        self._reader: BacklogReader | None = None
        self._deleting: asyncio.Future[int] | None = None

    def notify(self) -> None:
        """New records were committed: wake the loop if it is idle (cheap, call freely)."""
        self._wake.set()

    # ------------------------------------------------------------ building messages

    def message_for(self, record: StoredRecord, now: float, *,
                    backlog: bool = False) -> tuple[str, bytes, bool]:
        """(topic, signed payload, historical?) for one stored record; ``backlog`` marks it
        historical whatever its age."""
        body = record.body
        historical = backlog or now - record.created_at > self.historical_after_s
        if historical:
            try:
                body = mark_historical(body)
            except SenMLError as exc:
                # Never drop data over a marking: send it as stored, signed, and count it.
                self.stats.unreadable += 1
                log.error("record %s (seq %d): stored body is not SenML (%s); sent unmarked",
                          record.rid, record.seq, exc)
                historical = False
        payload = sign1(body, self.key, CONTENT_SENML_CBOR)
        return topic_for(self.prefix, record.kind, record.dev_eui), payload, historical

    def packs_for(self, rows: Sequence[Row],
                  now: float) -> list[tuple[list[StoredRecord], tuple[str, bytes, bool]]]:
        """Cut one device's backlog rows (seq order) into signed messages: consecutive joinable
        uplinks up to ``max_pack_uplinks`` / MAX_PACK_BYTES in one pack, anything else alone;
        returns (records, (topic, payload, historical)) per message, in order. The records of
        a pack come back without their bodies (those are in its payload), so a round's bodies
        are freed once it is signed rather than held until the broker acknowledges it."""
        out: list[tuple[list[StoredRecord], tuple[str, bytes, bool]]] = []
        current: list[StoredRecord] = []
        joined = bytearray()  # the current pack's records, marked, back to back
        count = 0

        def close() -> None:
            nonlocal joined, count
            first = current[0]
            body = finish_pack(count, joined)
            out.append((list(current), (topic_for(self.prefix, first.kind, first.dev_eui),
                                        sign1(body, self.key, CONTENT_SENML_CBOR), True)))
            current.clear()
            joined, count = bytearray(), 0

        for seq, rid, dev_eui, kind, priority, created_at, body in rows:
            if current and (len(current) >= self.max_pack_uplinks
                            or len(joined) + len(body) > MAX_PACK_BYTES):
                close()
            added = append_backlog_part(body, joined) if kind == "up" else None
            if added is None:
                if current:
                    close()
                record = StoredRecord(seq, rid, dev_eui, kind, priority, created_at, body)
                out.append(([record], self.message_for(record, now, backlog=True)))
                continue
            current.append(StoredRecord(seq, rid, dev_eui, kind, priority, created_at, b""))
            count += added
        if current:
            close()
        return out

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
            except asyncio.CancelledError:
                self._close_reader()
                raise
            except PublisherError as exc:
                self.stats.last_error = str(exc)
                if isinstance(exc, PublishRejectedError):
                    self.stats.rejected += 1
                log.warning("broker link: %s", exc)
            except StoreError as exc:
                self.stats.last_error = str(exc)
                log.error("store: %s", exc)
                self._close_reader()  # opened again on the next drain
            except Exception as exc:  # a bug must not stop forwarding for good
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("forwarder failed unexpectedly; restarting it")
            finally:
                if self.stats.connected:
                    self.stats.disconnects += 1
                self.stats.connected = False
            try:
                await self._flush_deletes()  # a delete of acknowledged records still running
            except StoreError as exc:
                log.error("store: %s (those records will be sent again)", exc)
            if loop.time() - started >= HEALTHY_CONNECTION_S:
                failures = 0
            delay = self.backoff.delay(failures)
            failures += 1
            log.info("reconnecting to the broker in %.1f s", delay)
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._close_reader()
                raise

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _open_reader(self) -> BacklogReader:
        if self._reader is None:
            self._reader = BacklogReader(self.store.path)
        return self._reader

    async def _pump(self) -> None:
        # Records up to ``after`` were sent on this connection: acknowledged ones are being
        # deleted in the background, so they are not read again. A failure raises, and the
        # next connection starts again from the oldest record still stored.
        # The next window is read and signed while the previous one waits for its PUBACKs.
        # A window is read in the loop itself: a short query on the reader's own connection
        # (WAL: never waits for the store's writers) costs less than a thread hand-off.
        reader = self._open_reader()
        after = 0
        live = _Pipeline(self)
        try:
            while True:
                batch = reader.pending(self.batch_size, after)
                if not batch:
                    if live.busy:
                        await live.finish()
                        continue
                    await self._flush_deletes()
                    # Clear, then look again: a notify() after the clear is never missed.
                    self._wake.clear()
                    batch = reader.pending(self.batch_size, after)
                    if not batch:
                        await self._idle()
                        continue
                if self._behind(batch):
                    await live.finish()
                    await self._drain(after)
                    await self._flush_deletes()
                    after = 0  # the drain deleted what it sent; start from the oldest again
                else:
                    now = self.clock()
                    messages = [self.message_for(record, now) for record in batch]
                    await live.send([[record] for record in batch], messages)
                    after = batch[-1].seq
        finally:
            live.cancel()

    def _behind(self, batch: Sequence[StoredRecord]) -> bool:
        """A full window pending, or its oldest record already late: drain in packs."""
        return (len(batch) >= self.batch_size
                or self.clock() - batch[0].created_at > self.historical_after_s)

    async def _drain(self, after: int = 0) -> None:
        """Send the backlog after seq ``after`` as per-device packs, span by span, until the
        queue is short."""
        reader = self._open_reader()
        rounds = _Pipeline(self)
        try:
            while True:
                plan = await asyncio.to_thread(reader.plan, after, PLAN_ROWS)
                if not plan.rows:
                    break
                after = plan.last_seq
                # A piece is up to one pack of a device's seqs; a round is up to
                # ``batch_size`` pieces (messages in flight) and ROUND_RECORDS records (bodies
                # in memory). Rounds go one after the other, so a device's packs leave in seq
                # order.
                pieces: list[Sequence[int]] = []
                size = 0
                step = self.max_pack_uplinks
                for seqs in plan.runs():
                    for start in range(0, len(seqs), step):
                        piece = seqs[start:start + step]
                        pieces.append(piece)
                        size += len(piece)
                        if size >= ROUND_RECORDS or len(pieces) >= self.batch_size:
                            await rounds.send(*await self._prepare_round(reader, pieces))
                            pieces, size = [], 0
                if pieces:
                    await rounds.send(*await self._prepare_round(reader, pieces))
                spanned = plan.rows
                del plan  # freed before the next plan is read, not after: one plan in memory
                if spanned < PLAN_ROWS:
                    break
            await rounds.finish()
        finally:
            rounds.cancel()
        await self._flush_deletes()

    async def _prepare_round(self, reader: BacklogReader, pieces: list[Sequence[int]]
                             ) -> tuple[list[list[StoredRecord]], list[tuple[str, bytes, bool]]]:
        """Fetch, pack and sign one round of backlog: its (records per message, messages)."""
        wanted = [seq for piece in pieces for seq in piece]
        found = await asyncio.to_thread(reader.fetch_rows, wanted)
        now = self.clock()
        packs: list[list[StoredRecord]] = []
        messages: list[tuple[str, bytes, bool]] = []
        for piece in pieces:
            for pack, message in self.packs_for([found[s] for s in piece if s in found], now):
                packs.append(pack)
                messages.append(message)
        return packs, messages  # the bodies are in the signed payloads now

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

    async def _publish(self, packs: Sequence[Sequence[StoredRecord]],
                       messages: Sequence[tuple[str, bytes, bool]], *,
                       defer_delete: bool = False) -> None:
        """Publish every message at once, delete the records of the acknowledged ones, then
        raise the first failure (the rest stays stored and is sent after reconnecting).

        With ``defer_delete`` the delete runs in the background (one at a time) so the next
        round overlaps it; ``_flush_deletes`` waits for it.
        """
        results = await self.publisher.publish_all(
            [(topic, payload) for topic, payload, _ in messages])
        acked: list[StoredRecord] = []
        for pack, (_, _, hist), result in zip(packs, messages, results, strict=True):
            if result is not None:
                continue
            acked.extend(pack)
            self.stats.messages += 1
            if len(pack) > 1:
                self.stats.packs += 1
            if hist:
                self.stats.historical += len(pack)
        self.stats.published += len(acked)  # counted at the broker's ack, before the delete
        if acked:
            if self.on_acked is not None:
                self.on_acked(acked)
            await self._flush_deletes()
            seqs = [record.seq for record in acked]
            if defer_delete:
                self._deleting = asyncio.ensure_future(asyncio.to_thread(self.store.delete, seqs))
            else:
                await asyncio.to_thread(self.store.delete, seqs)
        for result in results:
            if isinstance(result, BaseException):
                await self._flush_deletes()
                if isinstance(result, PublisherError):
                    raise result
                raise PublisherError(f"publish failed: {type(result).__name__}: {result}") \
                    from result

    async def _flush_deletes(self) -> None:
        """Wait for the background delete of acknowledged records, if one runs."""
        deleting, self._deleting = self._deleting, None
        if deleting is not None:
            await deleting
