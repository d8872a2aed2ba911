"""The publisher's PUBACKs: the fast path gives the reason code paho itself would give, and a
window published at once reports each message that got no PUBACK as not delivered."""

from __future__ import annotations

import asyncio
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.config import MqttConfig
from gateway.keys import SigningKey
from gateway.uplink.mqtt import _PUBACK_ACCEPTED, Publisher, PublishTimeoutError, _fast_puback


def _acked_reason(packet: bytes, cmd: str = "PUBACK") -> Any:
    """Feed ``packet`` (a PUBACK's variable header) to a v5 client with the fast path for an
    outgoing message of mid 7; the reason code its on_publish saw (None: not called)."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    seen: list[Any] = []
    client.on_publish = lambda _c, _u, mid, reason, _p: seen.append((mid, reason))
    _fast_puback(client)
    client._out_messages[7] = paho.MQTTMessage(mid=7)
    client._in_packet["command"] = 0x40
    client._in_packet["packet"] = packet
    client._handle_pubackcomp(cmd)  # type: ignore[call-arg]
    assert all(mid == 7 for mid, _ in seen)
    return seen[0][1] if seen else None


@pytest.mark.parametrize("packet", [b"\x00\x07", b"\x00\x07\x00", b"\x00\x07\x00\x00",
                                    b"\x00\x07\x10", b"\x00\x07\x10\x00", b"\x00\x07\x87",
                                    b"\x00\x07\x80\x00"])
def test_fast_puback_reports_the_reason_code_paho_decodes(packet: bytes) -> None:
    fast = _acked_reason(packet)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    expected: list[Any] = []
    client.on_publish = lambda _c, _u, _mid, reason, _p: expected.append(reason)
    client._out_messages[7] = paho.MQTTMessage(mid=7)
    client._in_packet["command"] = 0x40
    client._in_packet["packet"] = packet
    client._handle_pubackcomp("PUBACK")
    assert fast is not None and expected
    assert (fast.value, fast.is_failure) == (expected[0].value, expected[0].is_failure)


def test_no_matching_subscribers_takes_the_fast_path_as_accepted() -> None:
    # Mosquitto answers 0x10 while nobody subscribes: still no ReasonCode built per message.
    reason = _acked_reason(b"\x00\x07\x10")
    assert reason is _PUBACK_ACCEPTED[0x10]
    assert reason.value == 0x10 and not reason.is_failure


async def _silent_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An MQTT v5 'broker' that accepts the connection and acknowledges the gateway's status
    messages, but leaves every PUBLISH on a topic under t/ without its PUBACK."""
    try:
        while True:
            first = (await reader.readexactly(1))[0]
            length, shift = 0, 0
            while True:  # remaining length, a variable byte integer
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            if first >> 4 == 1:  # CONNECT -> CONNACK, success, no properties
                writer.write(b"\x20\x03\x00\x00\x00")
            elif first >> 4 == 3:  # PUBLISH
                topic_len = body[0] << 8 | body[1]
                mid = body[2 + topic_len:4 + topic_len]
                if not body[2:2 + topic_len].startswith(b"t/"):
                    writer.write(b"\x40\x02" + mid)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_each_publish_without_a_puback_is_reported_as_timed_out() -> None:
    async def main() -> list[BaseException | None]:
        server = await asyncio.start_server(_silent_broker, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = MqttConfig(host="127.0.0.1", port=port, client_id="t", protocol="5")
        publisher = Publisher(config, SigningKey.generate(), publish_timeout=0.5)
        async with server, publisher:
            return await publisher.publish_all([("t/a", b"1"), ("t/b", b"2")])

    results = asyncio.run(main())
    assert [type(r) for r in results] == [PublishTimeoutError, PublishTimeoutError]
    assert "t/a" in str(results[0]) and "t/b" in str(results[1])
