"""The demo's embedded MQTT broker: amqtt (pure Python) on a free loopback port.

Only for `cityedge demo` with no broker configured; a city runs Mosquitto, EMQX or VerneMQ.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Self

from amqtt.broker import Broker


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """``async with EmbeddedBroker() as b:`` gives a running anonymous broker at ``b.host:b.port``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker: Broker | None = None

    async def __aenter__(self) -> Self:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker({
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        })
        await self._broker.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
