"""The MQTT link to the hypervisor's broker: TLS/mutual TLS, signed birth and last-will status,
and QoS 1 publishes that return only once the broker acknowledged them.

``Publisher`` is an async context manager; each ``async with`` is one connection (a fresh
``aiomqtt.Client``), so the forwarder reconnects simply by entering it again.

Status (``{prefix}/status``, retained): a COSE_Sign1 (content type 60, application/cbor) over
the CBOR map ``{"state": "online"|"offline", "session": n, "ts": unix_seconds}``. The session
counter lives in the store's meta table and grows by one per successful connection. The last
will carries the same session number and is signed before connecting (its ``ts`` is the
connection time, as the broker publishes it later on our behalf).

On acknowledgements: aiomqtt 2.5's ``Client.publish`` does wait for the PUBACK at QoS 1 (it
registers the message id and awaits an event that its ``_on_publish`` sets; paho calls
``on_publish`` for QoS 1 only from its PUBACK handler, ``_handle_pubackcomp``). Three gaps
matter to us and are closed by ``_AckingClient`` below: the PUBACK reason code is dropped (an
MQTT v5 broker may refuse a message, e.g. 0x87 Not authorized, and the record must then NOT be
deleted); a connection loss leaves pending publishes waiting for their timeout instead of
failing at once; and every publish recounts all pending calls (quadratic in the window). The
subclass waits on one future per message id, resolved from ``_on_publish``, and fails them all
from the disconnect future. A plain successful PUBACK is also taken without paho's per-packet
ReasonCode/Properties objects (``_fast_puback``). It relies on aiomqtt internals (``_client``,
``_loop``, ``_disconnected``, ``_on_publish``, ``_on_connect``) and paho's (``_in_packet``,
``_out_messages``, ``_do_on_publish``); aiomqtt is pinned to ``<3`` (and holds paho below 3); the
broker tests exercise each of them.

Deployment note: with Mosquitto, set ``set_tcp_nodelay true`` on the broker, or each window of
acknowledgements waits ~40 ms on Nagle/delayed ACK (we set TCP_NODELAY on our side).

Incoming messages (commands): ``Publisher.on_connect`` hooks run on every connection, after the
birth message, with the live client; a hook subscribes and reads ``client.messages`` (the
command subscriber does). A hook's MQTT failure counts as a failed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import aiomqtt
import cbor2
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError

from gateway.config import GatewayConfig, MqttConfig
from gateway.keys import SigningKey
from gateway.uplink.cose import CONTENT_CBOR, sign1

if TYPE_CHECKING:
    from gateway.store import Store

__all__ = [
    "ConnectError",
    "DisconnectedError",
    "PublishRejectedError",
    "PublishTimeoutError",
    "Publisher",
    "PublisherConfigError",
    "PublisherError",
    "status_payload",
]

log = logging.getLogger("cityedge.mqtt")

DEFAULT_PUBLISH_TIMEOUT_S: Final = 30.0
CONNECT_TIMEOUT_S: Final = 15.0
SESSION_META_KEY: Final = "session"


class PublisherError(Exception):
    """The broker link failed; the forwarder backs off and reconnects on any of these."""


class PublisherConfigError(PublisherError):
    """A local file the link needs (password, CA, certificate, key) cannot be used."""


class ConnectError(PublisherError):
    """The broker could not be reached, refused the TLS handshake, or refused the CONNECT."""


class DisconnectedError(PublisherError):
    """The connection dropped while a publish waited for its acknowledgement."""


class PublishTimeoutError(PublisherError):
    """No acknowledgement came in time; the connection is presumed dead."""


class PublishRejectedError(PublisherError):
    """The broker answered PUBACK with a failure reason code (MQTT v5): the message was not
    accepted (e.g. 0x87 Not authorized by its ACL)."""

    def __init__(self, topic: str, reason: str, code: int) -> None:
        super().__init__(f"broker refused the message on {topic}: {reason} (0x{code:02x})")
        self.topic = topic
        self.reason = reason
        self.code = code


def status_payload(key: SigningKey, state: str, session: int, ts: int) -> bytes:
    """The signed status message: COSE_Sign1 over CBOR {"state", "session", "ts"}."""
    body = cbor2.dumps({"state": state, "session": session, "ts": ts})
    return sign1(body, key, CONTENT_CBOR)


# The PUBACK reason codes that mean "accepted" (MQTT v5 §3.4.2.1): Success, and No matching
# subscribers (0x10), which Mosquitto sends while nobody subscribes to the topic.
_PUBACK_ACCEPTED: Final = {code: paho.ReasonCode(paho.PacketTypes.PUBACK, identifier=code)
                           for code in (0x00, 0x10)}
_PUBACK_OK: Final = _PUBACK_ACCEPTED[0x00]
_NO_PROPERTIES: Final = paho.Properties(paho.PacketTypes.PUBACK)


def _fast_puback(client: paho.Client) -> None:
    """Let ``client`` take a plain accepting PUBACK without building a ReasonCode and a
    Properties object for it (most of paho's cost per acknowledged message).

    Only a PUBACK that is just the packet id (MQTT v5 §3.4.2.1: reason code and properties
    omitted when Success with none; always so in 3.1.1), or an explicit Success / No matching
    subscribers with no properties, takes this path (with the same reason code paho would
    give); anything else (a refusal, properties) goes paho's own way.
    """
    handle = client._handle_pubackcomp

    def pubackcomp(cmd: Any) -> Any:
        packet = client._in_packet["packet"]
        size = len(packet)
        if size == 2:
            reason = _PUBACK_OK
        elif cmd == "PUBACK" and (size == 3 or (size == 4 and packet[3] == 0)):
            reason = _PUBACK_ACCEPTED.get(packet[2])
        else:
            reason = None
        if reason is None or cmd != "PUBACK":
            return handle(cmd)
        mid = packet[0] << 8 | packet[1]
        with client._out_message_mutex:
            if mid in client._out_messages:
                return client._do_on_publish(mid, reason, _NO_PROPERTIES)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    client._handle_pubackcomp = pubackcomp  # type: ignore[method-assign]


class _AckingClient(aiomqtt.Client):
    """aiomqtt.Client plus: PUBACK reason codes, prompt failure of every pending publish on
    disconnect, and the server's MQTT v5 Receive Maximum honoured (paho would exceed it).

    Our publishes wait on one future per message id, resolved straight from paho's PUBACK
    callback. (aiomqtt's own bookkeeping recounts every pending call on each publish, which is
    quadratic in the window; publishes made through aiomqtt's API still go its way.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, tuple[str, asyncio.Future[None]]] = {}
        self.server_receive_maximum: int | None = None
        self._window: asyncio.Semaphore | None = None
        _fast_puback(self._client)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties else None
        if isinstance(receive_max, int) and 0 < receive_max < 65535:
            # paho cannot change its in-flight limit once connected: keep our own window.
            # asyncio.Semaphore wakes waiters in FIFO order, so publish order is kept.
            self.server_receive_maximum = receive_max
            self._window = asyncio.Semaphore(receive_max)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        entry = self._acks.pop(mid, None)
        if entry is None:
            super()._on_publish(client, userdata, mid, reason_code, properties)
            return
        topic, future = entry
        if future.done():
            return
        if getattr(reason_code, "is_failure", False):
            future.set_exception(
                PublishRejectedError(topic, str(reason_code), int(reason_code.value))
            )
        else:
            future.set_result(None)

    def watch_connection(self) -> None:
        """After connecting: fail every pending publish as soon as the connection drops."""
        self._disconnected.add_done_callback(self._fail_pending)

    def _fail_pending(self, _: object) -> None:
        pending, self._acks = self._acks, {}
        for topic, future in pending.values():
            if not future.done():
                future.set_exception(DisconnectedError(
                    f"connection lost before the broker acknowledged {topic}"))

    @property
    def lost(self) -> asyncio.Future[None]:
        """Done when the connection is gone (aiomqtt's own disconnect future)."""
        return self._disconnected

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool,
                            timeout: float) -> None:
        """QoS 1 publish that returns at PUBACK, or raises a PublisherError subclass."""
        if self._window is None:
            await self._publish_acked(topic, payload, retain=retain, timeout=timeout)
        else:
            async with self._window:
                await self._publish_acked(topic, payload, retain=retain, timeout=timeout)

    async def publish_all(self, messages: Sequence[tuple[str, bytes]], *,
                          timeout: float) -> list[BaseException | None]:
        """QoS 1 publishes of (topic, payload), handed to paho in order and waited for
        together: per message None at its PUBACK, or the PublisherError it failed with.

        One future per message and one wait for the window (no task and no timeout per
        message); with the server's Receive Maximum in force each goes ``publish_acked``'s
        way instead."""
        if self._window is not None:
            return await asyncio.gather(
                *(self.publish_acked(topic, payload, retain=False, timeout=timeout)
                  for topic, payload in messages), return_exceptions=True)
        outcomes: list[BaseException | asyncio.Future[None]] = []
        sent: list[tuple[int, asyncio.Future[None]]] = []
        publish, create_future, acks = self._client.publish, self._loop.create_future, self._acks
        for topic, payload in messages:
            if self._disconnected.done():
                outcomes.append(DisconnectedError("not connected to the broker"))
                continue
            info = publish(topic, payload, 1, False)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                outcomes.append(DisconnectedError(
                    f"publish on {topic} not sent: {paho.error_string(info.rc)}"))
                continue
            future: asyncio.Future[None] = create_future()
            acks[info.mid] = (topic, future)
            outcomes.append(future)
            sent.append((info.mid, future))
        try:
            if sent:
                await asyncio.wait([future for _, future in sent], timeout=timeout)
        finally:
            for mid, future in sent:
                entry = acks.get(mid)
                if entry is not None and entry[1] is future:
                    del acks[mid]
        results: list[BaseException | None] = []
        for (topic, _), outcome in zip(messages, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results.append(outcome)
            elif not outcome.done():
                outcome.cancel()
                results.append(PublishTimeoutError(
                    f"no PUBACK for {topic} within {timeout:.0f} s"))
            else:
                results.append(outcome.exception())
        return results

    async def _publish_acked(self, topic: str, payload: bytes, *, retain: bool,
                             timeout: float) -> None:
        if self._disconnected.done():
            raise DisconnectedError("not connected to the broker")
        info = self._client.publish(topic, payload, 1, retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise DisconnectedError(f"publish on {topic} not sent: {paho.error_string(info.rc)}")
        future: asyncio.Future[None] = self._loop.create_future()
        self._acks[info.mid] = (topic, future)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise PublishTimeoutError(f"no PUBACK for {topic} within {timeout:.0f} s") from None
        finally:
            entry = self._acks.get(info.mid)
            if entry is not None and entry[1] is future:
                del self._acks[info.mid]


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    """The client TLS context from ``[mqtt.tls]``; file problems name the config key."""
    tls = config.tls
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
        )
    except (ssl.SSLError, OSError) as exc:
        raise PublisherConfigError(
            f"mqtt.tls.ca_file = {tls.ca_file}: not a usable CA certificate file ({exc})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise PublisherConfigError(
                f"mqtt.tls.cert_file = {tls.cert_file} / mqtt.tls.key_file = {tls.key_file}: "
                f"cannot load the client certificate and key ({type(exc).__name__}: "
                f"{getattr(exc, 'reason', None) or exc.strerror or 'unusable'})"
            ) from None
    if tls.insecure:
        context.check_hostname = False  # the chain is still verified
    return context


def _read_password(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PublisherConfigError(
            f"mqtt.password_file = {path}: cannot read it ({type(exc).__name__})"
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise PublisherConfigError(f"mqtt.password_file = {path}: the file is empty")
    return password


class Publisher:
    """One broker connection per ``async with``: will set, birth published, QoS 1 publishes.

    ``config`` is the gateway's configuration (or just its ``[mqtt]`` section). ``store`` keeps
    the session counter; without one the counter lives in memory (tests, tools).
    """

    def __init__(
        self,
        config: GatewayConfig | MqttConfig,
        key: SigningKey,
        store: Store | None = None,
        *,
        max_inflight: int | None = None,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT_S,
        connect_timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.mqtt = config.mqtt if isinstance(config, GatewayConfig) else config
        self.key = key
        self.store = store
        self.prefix = self.mqtt.prefix
        self.status_topic = f"{self.prefix}/status"
        # 0 = no limit inside paho: the forwarder's window already bounds what is in flight
        # (and paho's own limit costs O(n) per PUBACK). A v5 broker's Receive Maximum is
        # honoured whatever this says.
        self.max_inflight = max_inflight if max_inflight is not None else 0
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.session = 0
        self._memory_session = 0
        self._client: _AckingClient | None = None
        # run on every connection, after the birth message (e.g. to subscribe to commands)
        self.on_connect: list[Callable[[aiomqtt.Client], Awaitable[None]]] = []

    # ------------------------------------------------------------ session counter

    async def _peek_session(self) -> int:
        if self.store is None:
            return self._memory_session + 1
        current = await asyncio.to_thread(self.store.get_meta, SESSION_META_KEY, 0)
        return int(current or 0) + 1

    async def _commit_session(self, session: int) -> None:
        if self.store is None:
            self._memory_session = session
        else:
            await asyncio.to_thread(self.store.set_meta, SESSION_META_KEY, session)

    # ------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """True between a successful connect and the connection's loss or close."""
        return self._client is not None and not self._client.lost.done()

    @property
    def client(self) -> aiomqtt.Client:
        """The live aiomqtt client (e.g. to subscribe to commands); only while connected."""
        if self._client is None:
            raise DisconnectedError("not connected to the broker")
        return self._client

    def _make_client(self, session: int) -> _AckingClient:
        m = self.mqtt
        password = _read_password(m.password_file) if m.password_file else None
        will = aiomqtt.Will(
            topic=self.status_topic,
            payload=status_payload(self.key, "offline", session, int(time.time())),
            qos=1,
            retain=True,
        )
        protocol = aiomqtt.ProtocolVersion.V5 if m.protocol == "5" else \
            aiomqtt.ProtocolVersion.V311
        client = _AckingClient(
            m.host,
            m.port,
            username=m.username,
            password=password,
            identifier=m.client_id,
            protocol=protocol,
            will=will,
            keepalive=m.keepalive,
            timeout=self.connect_timeout,
            tls_context=_tls_context(m) if m.tls.enabled else None,
            max_inflight_messages=self.max_inflight,
            # Small QoS 1 packets back to back: Nagle + delayed ACK would add ~40 ms per window.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            clean_session=True if protocol == aiomqtt.ProtocolVersion.V311 else None,
        )
        # aiomqtt logs a warning above 10 pending calls made through its own API.
        client.pending_calls_threshold = 4096
        return client

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("Publisher is already connected (not reentrant)")
        session = await self._peek_session()
        client = self._make_client(session)
        where = f"{self.mqtt.host}:{self.mqtt.port}"
        try:
            await client.__aenter__()
        except MqttConnectError as exc:
            raise ConnectError(f"broker {where} refused the connection: {exc}") from None
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"cannot connect to broker {where}: {exc}") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to broker {where}: {exc}") from None
        client.watch_connection()
        self._client = client
        try:
            await self._commit_session(session)
            self.session = session
            await self.publish(self.status_topic,
                               status_payload(self.key, "online", session, int(time.time())),
                               retain=True)
            for hook in list(self.on_connect):
                await hook(client)
        except (aiomqtt.MqttError, OSError) as exc:
            await self._close(publish_offline=False)
            raise ConnectError(f"broker {where}: {exc}") from None
        except BaseException:
            await self._close(publish_offline=False)
            raise
        log.info("connected to %s as %s (session %d)", where, self.mqtt.client_id, session)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._close(publish_offline=True)

    async def _close(self, *, publish_offline: bool) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if publish_offline and not client.lost.done():
            # A clean disconnect does not fire the will: say "offline" ourselves.
            with contextlib.suppress(PublisherError, aiomqtt.MqttError, OSError):
                await client.publish_acked(
                    self.status_topic,
                    status_payload(self.key, "offline", self.session, int(time.time())),
                    retain=True, timeout=5.0,
                )
        try:
            await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, OSError) as exc:
            log.debug("disconnect from broker not clean: %s", exc)
        if client.lost.done() and not client.lost.cancelled():
            client.lost.exception()  # retrieved: no "exception never retrieved" noise

    async def wait_disconnected(self) -> None:
        """Return when the current connection is lost (at once if not connected)."""
        client = self._client
        if client is None:
            return
        lost = client.lost
        await asyncio.wait((lost,))
        if not lost.cancelled():
            lost.exception()

    async def publish_all(self, messages: Sequence[tuple[str, bytes]]
                          ) -> list[BaseException | None]:
        """Publish every (topic, payload) at QoS 1 at once, in order; per message None once
        the broker acknowledged it, else the PublisherError it failed with (DisconnectedError,
        PublishTimeoutError, PublishRejectedError): not delivered."""
        client = self._client
        if client is None:
            return [DisconnectedError("not connected to the broker") for _ in messages]
        return await client.publish_all(messages, timeout=self.publish_timeout)

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (PUBACK).

        Raises DisconnectedError, PublishTimeoutError or PublishRejectedError; in each case the
        caller must treat the message as not delivered.
        """
        client = self._client
        if client is None:
            raise DisconnectedError("not connected to the broker")
        await client.publish_acked(topic, payload, retain=retain, timeout=self.publish_timeout)
