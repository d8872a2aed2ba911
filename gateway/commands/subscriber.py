"""Commands in: the subscription to ``{prefix}/cmd/+`` and ``{prefix}/cmd-group/+``.

On every connection of the agent's broker link (``Publisher.on_connect``) the subscriber
subscribes at QoS 1 and reads the connection's messages until it drops. Each message goes
through ``Intake.check`` (off the event loop: it verifies a signature and reads the replay table)
and then to the dispatcher: ``submit`` for an accepted command, ``reject`` for a refused one,
each spending the command id in the transaction that stores its fate.
Messages are handled one at a time, in arrival order. A retained or repeated delivery is the
replay check's business; nothing a message holds can stop the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import aiomqtt

from gateway.commands.intake import Accepted, Intake, TopicKind
from gateway.counters import Counters

if TYPE_CHECKING:
    from gateway.commands.dispatch import Dispatcher

__all__ = ["TOPIC_KINDS", "CommandSubscriber"]

log = logging.getLogger("cityedge.commands")

TOPIC_KINDS: Final[tuple[TopicKind, ...]] = ("cmd", "cmd-group")
QOS: Final = 1

Submit = Callable[..., Awaitable[Any]]  # (rows, *, admit) like Dispatcher.submit


class CommandSubscriber:
    """Feeds the broker's command messages to ``intake`` then ``dispatcher`` (see the module
    docstring). ``submit`` replaces ``dispatcher.submit`` for accepted rows (the agent's hook
    that also tells the watering rules about operator valve commands)."""

    def __init__(self, prefix: str, intake: Intake, dispatcher: Dispatcher,
                 counters: Counters | None = None, *, submit: Submit | None = None) -> None:
        self.prefix = prefix.rstrip("/")
        self.intake = intake
        self.dispatcher = dispatcher
        self.counters = counters if counters is not None else Counters()
        self.submit = submit or dispatcher.submit
        self.topics = [f"{self.prefix}/{kind}/+" for kind in TOPIC_KINDS]
        self._readers: set[asyncio.Task[None]] = set()

    async def on_connect(self, client: aiomqtt.Client) -> None:
        """Subscribe on a new connection and start reading its messages (``Publisher``
        hook). aiomqtt errors propagate: the link counts as failed and is made again."""
        await client.subscribe([(topic, QOS) for topic in self.topics])
        task = asyncio.get_running_loop().create_task(self._read(client),
                                                      name="command-subscriber")
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)
        log.info("subscribed to %s", ", ".join(self.topics))

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                await self.handle(str(message.topic), message.payload)
        except aiomqtt.MqttError:
            pass  # the connection is gone: the next one subscribes again

    def parse_topic(self, topic: str) -> tuple[TopicKind, str] | None:
        """(kind, target) of a command topic under our prefix, or None."""
        if not topic.startswith(self.prefix + "/"):
            return None
        kind, sep, target = topic[len(self.prefix) + 1:].partition("/")
        if not sep or not target or "/" in target or kind not in TOPIC_KINDS:
            return None
        return kind, target  # type: ignore[return-value]

    async def handle(self, topic: str, payload: Any) -> None:
        """One message: checked, then submitted or its rejection published. Never raises
        (except cancellation)."""
        try:
            parsed = self.parse_topic(topic)
            if parsed is None:
                self.counters["command_topic_ignored"] += 1
                log.info("message on %s ignored: not a command topic", topic[:200])
                return
            kind, target = parsed
            data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
            if not data:  # how MQTT deletes a retained message: no command, nothing to say
                self.counters["command_empty_ignored"] += 1
                return
            result = await asyncio.to_thread(self.intake.check, kind, target, data)
            if isinstance(result, Accepted):
                await self.submit(result.rows, admit=result.admit)
            else:
                await self.dispatcher.reject(result)
        except asyncio.CancelledError:
            raise
        except Exception:  # one message must never stop the command path
            self.counters["command_intake_error"] += 1
            log.exception("command on %s not handled", topic[:200])

    async def aclose(self) -> None:
        """Stop reading (the agent's shutdown)."""
        readers = list(self._readers)
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
