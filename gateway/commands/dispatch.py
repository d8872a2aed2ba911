"""Delivery of accepted commands and their life as statuses (design §5, §6).

``Dispatcher.submit`` stores the accepted rows with their "accepted" statuses, then hands each
to the network side as a confirmed FPort 40 downlink (Class C at once, Class A after the next
uplink) or to a gateway-local handler (rules_pause, rules_resume). From then on every change is
one status record, stored with the row in one transaction and published by the forwarder:

- the downlink's handle: queued (again with reason "duty_cycle" when the budget delays it),
  sent (fcnt_down, attempts; each transmission), failed ("not_delivered", the radio's reason
  as detail). Its LoRaWAN acknowledgement is not ours: a command is "acked" only when the node
  answers on FPort 30 (``on_answer``): "done" -> acked, anything else -> failed "refused";
- its expiry: not sent by ``expires_at`` -> taken out of the downlink queue, "expired";
- the answer timeout: sent but no answer within ``answer_timeout_s`` -> failed "no_answer".

Status changes are made in memory, in order, and written by one writer task in that order, so
the status numbers of a row (its rid's last part) always grow. ``resume`` re-queues what was
open at the last stop; ``on_join`` re-sends a device's last accepted calendar.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from gateway.commands.actions import ACTIONS, to_node_command
from gateway.commands.intake import Rejected, replay_detail
from gateway.commands.model import FINAL, CommandRow
from gateway.commands.status import rejection_record, status_record
from gateway.counters import Counters
from gateway.lorawan.downlink import DownlinkHandle
from gateway.lorawan.network import DownlinkError
from gateway.store.commands import Admit, ReplayError
from gateway.store.model import NewRecord, StoreError
from protocol.payload import COMMAND_FPORT, PayloadError, encode_command

if TYPE_CHECKING:
    from gateway.lorawan.network import NetworkSide
    from gateway.store import Store

__all__ = ["CALENDAR_RESEND_LIFETIME_S", "Dispatcher", "LocalHandler"]

log = logging.getLogger("cityedge.commands")

# A gateway-local action: the answer to report ("done" -> acked, else failed "refused").
LocalHandler = Callable[[CommandRow], "str | Awaitable[str]"]
CALENDAR_RESEND_LIFETIME_S: Final = 86_400.0
GATEWAY_KEY: Final = "gateway"  # kid and key name of the commands the gateway makes itself
_RESEND_META: Final = "calendar_resend"


class Dispatcher:
    """Delivers accepted command rows and publishes their life (see the module docstring)."""

    def __init__(self, network: NetworkSide, store: Store, gateway_id: str,
                 counters: Counters | None = None, *, answer_timeout_s: float,
                 notify: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.network = network
        self.store = store
        self.gateway_id = gateway_id
        self.counters = counters if counters is not None else Counters()
        self.answer_timeout_s = answer_timeout_s
        self.notify = notify
        self.clock = clock
        self._local: dict[str, LocalHandler] = {}
        self._open: dict[int, CommandRow] = {}  # row_id -> row, every open row we follow
        self._by_seq: dict[tuple[str, int], int] = {}  # (dev_eui, node_seq) -> row_id
        self._handles: dict[int, DownlinkHandle] = {}
        self._expiry: dict[int, asyncio.TimerHandle] = {}
        self._answer: dict[int, asyncio.TimerHandle] = {}
        self._expiring: set[int] = set()
        self._writes: asyncio.Queue[tuple[CommandRow, NewRecord] | None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ inputs

    def local_handler(self, action: str, fn: LocalHandler) -> None:
        """Carry out the gateway-local ``action`` (rules_pause, rules_resume) with ``fn(row)``."""
        spec = ACTIONS.get(action)
        if spec is None or spec.node_command is not None:
            raise ValueError(f"{action!r} is not a gateway-local action")
        self._local[action] = fn

    async def submit(self, rows: list[CommandRow], *, admit: Admit | None = None
                     ) -> list[CommandRow]:
        """Store ``rows`` (accepted, with their statuses; ``admit``: the command id spent in
        the same transaction) and start delivering them; returns the stored rows (row_id,
        node_seq set). An id spent meanwhile (the same command racing itself) makes it a
        "replay" rejection and returns []. StoreError when they could not be stored: nothing
        is delivered then."""
        if not rows:
            return []
        now = self.clock()
        records = [status_record(self.gateway_id, row, now) for row in rows]
        try:
            stored = await asyncio.to_thread(functools.partial(
                self.store.add_commands, rows, records, admit=admit))
        except ReplayError:
            await self._reject_replay(rows[0])
            return []
        self.notify()
        for row in stored:
            await self._deliver(row)
        return stored

    async def reject(self, rejected: Rejected) -> None:
        """Store (for publishing) the "rejected" status of a command refused at intake, with
        its id spent in the same transaction when intake says so (``rejected.admit``)."""
        record = rejection_record(
            self.gateway_id, rejected.target, rejected.reason, rejected.detail, self.clock(),
            cmd_id=rejected.cmd_id, action=rejected.action, key_name=rejected.key_name)
        await asyncio.to_thread(functools.partial(self.store.add_rejection, record,
                                                  admit=rejected.admit))
        self.notify()

    async def _reject_replay(self, row: CommandRow) -> None:
        """The store refused an id intake had not seen yet: the same rejection intake makes."""
        self.counters["command_rejected_replay"] += 1
        log.warning("command %s on %s rejected: replay (raced)", row.cmd_id,
                    row.group or row.dev_eui)
        await self.reject(Rejected("replay", replay_detail(row.cmd_id), row.cmd_id,
                                   row.group or row.dev_eui, row.kid, row.key_name, row.action))

    async def on_answer(self, dev_eui: str, node_seq: int, result: str) -> None:
        """A node's FPort 30 answer (``cmd_seq``, ``cmd_result``) to the command it was sent."""
        eui = dev_eui.lower()
        row_id = self._by_seq.get((eui, node_seq))
        row = self._open.get(row_id) if row_id is not None else None
        if row is None:
            self.counters["command_answer_unmatched"] += 1
            log.info("answer seq=%d %s from %s matches no open command", node_seq, result, eui)
            return
        handle = self._handles.get(row.row_id)  # type: ignore[arg-type]
        if handle is not None and handle.status == "queued":
            self._expiring.add(row.row_id)  # type: ignore[arg-type]
            try:  # a retry waiting in the queue is no longer needed
                self.network.cancel_downlink(handle, "answered")
            finally:
                self._expiring.discard(row.row_id)  # type: ignore[arg-type]
        if result == "done":
            self._change(row, "acked", answer=result)
            if row.action == "calendar":
                await self._save_calendar(row)
        else:
            self._change(row, "failed", reason="refused", answer=result)

    async def on_join(self, dev_eui: str) -> CommandRow | None:
        """A device (re)joined: re-send the last calendar it accepted, if any, as a command of
        the gateway's own (id ``calendar-resend-<n>``); returns its row."""
        eui = dev_eui.lower()
        points = await asyncio.to_thread(self.store.calendar, eui)
        if not points:
            return None
        n = await asyncio.to_thread(self._next_resend)
        now = self.clock()
        row = CommandRow(cmd_id=f"calendar-resend-{n}", kid=GATEWAY_KEY, key_name=GATEWAY_KEY,
                         dev_eui=eui, action="calendar", args={"points": points},
                         issued_at=now, expires_at=now + CALENDAR_RESEND_LIFETIME_S,
                         created_at=now, updated_at=now)
        self.counters["calendar_resent"] += 1
        [stored] = await self.submit([row])
        return stored

    def _next_resend(self) -> int:
        n = int(self.store.get_meta(_RESEND_META, 0) or 0) + 1
        self.store.set_meta(_RESEND_META, n)
        return n

    async def resume(self) -> int:
        """At start: follow again every row left open (accepted, queued, sent) by the last run;
        returns how many. Unsent rows are queued again; sent ones are sent again too (the node
        ignores a seq it already carried out and answers again) and keep waiting."""
        rows = await asyncio.to_thread(self.store.open_commands)
        for row in rows:
            await self._deliver(row, resumed=True)
        if rows:
            log.info("resumed %d open commands", len(rows))
        return len(rows)

    async def aclose(self) -> None:
        """Stop timers and tasks; statuses already decided are written first."""
        for timer in [*self._expiry.values(), *self._answer.values()]:
            timer.cancel()
        self._expiry.clear()
        self._answer.clear()
        for task in list(self._tasks):
            task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None and self._writes is not None:
            self._writes.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(writer, 10)
        self._writes = None

    # ------------------------------------------------------------ delivery

    async def _deliver(self, row: CommandRow, *, resumed: bool = False) -> None:
        """Follow one stored row: local action, or downlink plus expiry and answer timers."""
        assert row.row_id is not None
        if row.status in FINAL:
            return
        self._open[row.row_id] = row
        spec = ACTIONS.get(row.action)
        if spec is None:
            self._change(row, "failed", reason="not_supported",
                         detail=f"no such action {row.action!r}")
            return
        if spec.node_command is None:
            await self._run_local(row)
            return
        if row.node_seq is not None:
            self._by_seq[(row.dev_eui, row.node_seq)] = row.row_id
        if row.status != "sent" and self.clock() >= row.expires_at:
            self._change(row, "expired", detail="expired before it could be sent")
            return
        try:
            payload = encode_command(to_node_command(row.action, row.args, row.node_seq or 0))
            handle = self.network.queue_downlink(row.dev_eui, COMMAND_FPORT, payload,
                                                 confirmed=True)
        except DownlinkError as exc:
            self._change(row, "failed", reason="not_delivered", detail=str(exc))
            return
        except (PayloadError, ValueError) as exc:
            self._change(row, "failed", reason="not_supported", detail=str(exc))
            return
        self._handles[row.row_id] = handle
        handle.on_change(lambda h, row=row: self._downlink_changed(row, h))
        if row.status == "accepted":
            self._change(row, "queued")
        if row.status == "sent":
            self._start_answer_timer(row, resumed=resumed)
        else:
            self._start_expiry(row)

    async def _run_local(self, row: CommandRow) -> None:
        fn = self._local.get(row.action)
        if fn is None:
            self._change(row, "failed", reason="not_supported",
                         detail=f"{row.action} has no handler on this gateway")
            return
        try:
            answer = fn(row)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # a handler's bug fails the command, not the gateway
            log.exception("local action %s for %s failed", row.action, row.dev_eui)
            self._change(row, "failed", reason="refused", answer="failed",
                         detail=f"{type(exc).__name__}: {exc}")
            return
        if answer == "done":
            self._change(row, "acked", answer="done")
        else:
            self._change(row, "failed", reason="refused", answer=str(answer))

    def _downlink_changed(self, row: CommandRow, handle: DownlinkHandle) -> None:
        """The network side's news of the row's downlink (called in the event loop)."""
        if row.row_id in self._expiring or row.status in FINAL:
            return
        if handle.status == "queued" and handle.reason:
            if row.status in ("accepted", "queued"):
                self._change(row, "queued", reason=handle.reason)
        elif handle.status == "sent":
            row.fcnt_down = handle.fcnt_down
            row.attempts = handle.attempts
            self._change(row, "sent")
            self._stop_timer(self._expiry, row)
            self._start_answer_timer(row)
        elif handle.status == "failed":
            self._change(row, "failed", reason="not_delivered", detail=handle.reason)
        # "acked": the LoRaWAN ACK of the frame only; the node's FPort 30 answer decides

    def _start_expiry(self, row: CommandRow) -> None:
        delay = max(0.0, row.expires_at - self.clock())
        self._stop_timer(self._expiry, row)
        loop = asyncio.get_running_loop()
        self._expiry[row.row_id] = loop.call_later(delay, self._expire, row)  # type: ignore[index]

    def _expire(self, row: CommandRow) -> None:
        self._expiry.pop(row.row_id, None)  # type: ignore[arg-type]
        if row.status not in ("accepted", "queued"):
            return
        handle = self._handles.get(row.row_id)  # type: ignore[arg-type]
        if handle is not None:
            self._expiring.add(row.row_id)  # type: ignore[arg-type]
            try:
                taken = self.network.cancel_downlink(handle, "expired")
            finally:
                self._expiring.discard(row.row_id)  # type: ignore[arg-type]
            if not taken:
                return  # on its way right now: it will be "sent"
        self.counters["command_expired"] += 1
        self._change(row, "expired", detail="not sent before it expired")

    def _start_answer_timer(self, row: CommandRow, *, resumed: bool = False) -> None:
        delay = self.answer_timeout_s
        if resumed:
            delay = max(0.0, row.updated_at + self.answer_timeout_s - time.time())
        self._stop_timer(self._answer, row)
        loop = asyncio.get_running_loop()
        self._answer[row.row_id] = loop.call_later(delay, self._no_answer, row)  # type: ignore[index]

    def _no_answer(self, row: CommandRow) -> None:
        self._answer.pop(row.row_id, None)  # type: ignore[arg-type]
        if row.status in FINAL:
            return
        handle = self._handles.get(row.row_id)  # type: ignore[arg-type]
        if handle is not None and handle.status == "queued":
            self._expiring.add(row.row_id)  # type: ignore[arg-type]
            try:
                self.network.cancel_downlink(handle, "no_answer")
            finally:
                self._expiring.discard(row.row_id)  # type: ignore[arg-type]
        self.counters["command_no_answer"] += 1
        self._change(row, "failed", reason="no_answer",
                     detail=f"no answer from the node within {self.answer_timeout_s:g} s")

    @staticmethod
    def _stop_timer(timers: dict[int, asyncio.TimerHandle], row: CommandRow) -> None:
        timer = timers.pop(row.row_id, None)  # type: ignore[arg-type]
        if timer is not None:
            timer.cancel()

    # ------------------------------------------------------------ statuses

    def _change(self, row: CommandRow, status: str, *, reason: str | None = None,
                answer: str | None = None, detail: str | None = None) -> None:
        """Move ``row`` to ``status`` and queue its status record (written in order)."""
        if row.status in FINAL:
            return
        row.status = status  # type: ignore[assignment]
        row.reason = reason
        if answer is not None:
            row.answer = answer
        row.status_n += 1
        record = status_record(self.gateway_id, row, self.clock(), detail=detail)
        self.counters[f"command_{status}"] += 1
        log.info("command %s for %s: %s%s", row.cmd_id, row.dev_eui, status,
                 f" ({reason})" if reason else "")
        if status in FINAL:
            self._forget(row)
        self._write(dataclasses.replace(row), record)

    def _forget(self, row: CommandRow) -> None:
        rid = row.row_id
        assert rid is not None
        self._open.pop(rid, None)
        self._handles.pop(rid, None)
        if row.node_seq is not None and self._by_seq.get((row.dev_eui, row.node_seq)) == rid:
            del self._by_seq[(row.dev_eui, row.node_seq)]
        self._stop_timer(self._expiry, row)
        self._stop_timer(self._answer, row)

    def _write(self, row: CommandRow, record: NewRecord) -> None:
        if self._writes is None or self._writer is None or self._writer.done():
            self._writes = asyncio.Queue()
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(self._writes), name="command-statuses")
        self._writes.put_nowait((row, record))

    async def _write_loop(self, writes: asyncio.Queue[tuple[CommandRow, NewRecord] | None]
                          ) -> None:
        """Write status changes in the order they were made; wake the forwarder after each
        burst."""
        while True:
            item = await writes.get()
            try:
                if item is None:
                    return
                row, record = item
                try:
                    await asyncio.to_thread(self.store.update_command, row, record)
                except (StoreError, ValueError) as exc:
                    self.counters["command_status_not_stored"] += 1
                    log.error("status %s of command %s for %s not stored: %s", row.status,
                              row.cmd_id, row.dev_eui, exc)
                if writes.empty():
                    self.notify()
            finally:
                writes.task_done()

    async def _save_calendar(self, row: CommandRow) -> None:
        try:
            await asyncio.to_thread(self.store.save_calendar, row.dev_eui,
                                    list(row.args.get("points", [])), row.cmd_id)
        except StoreError as exc:
            log.error("calendar of %s not saved: %s", row.dev_eui, exc)

    async def idle(self) -> None:
        """Wait until every status decided so far is written (tests, shutdown)."""
        if self._writes is not None:
            await self._writes.join()
