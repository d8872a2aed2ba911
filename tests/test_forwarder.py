"""The forwarder and the MQTT link against a real Mosquitto: signed, ordered, deleted only after
the broker's PUBACK, nothing lost across an outage; TLS, mutual TLS, passwords and ACLs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
import cbor2
import pytest
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from gateway.config import MqttConfig, MqttTlsConfig
from gateway.keys import SigningKey, generate_signing_key
from gateway.store import Accepted, Device, NewRecord, Store
from gateway.uplink.cose import verify1
from gateway.uplink.forwarder import Backoff, Forwarder
from gateway.uplink.mqtt import (
    ConnectError,
    Publisher,
    PublisherConfigError,
    PublishRejectedError,
)
from gateway.uplink.senml import decode_pack
from tests.fixtures.mosquitto import WATCHER_PASSWORD, WATCHER_USER, Broker, CertBundle

pytestmark = pytest.mark.broker

GW = "b827ebfffe123456"
PREFIX = f"cityedge/v1/{GW}"
EUIS = ["0011223344556677", "0011223344556688", "00112233445566aa"]
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one async test body with a hard time limit."""

    async def limited() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(limited())


def mqtt_config(broker: Broker, *, prefix: str = PREFIX, protocol: str = "5",
                client_cert: bool = False, ca_file: Path | None = None) -> MqttConfig:
    tls = MqttTlsConfig()
    if broker.tls:
        tls = MqttTlsConfig(
            enabled=True,
            ca_file=ca_file or broker.ca_file,
            cert_file=broker.cert_file if client_cert else None,
            key_file=broker.key_file if client_cert else None,
        )
    return MqttConfig(host=broker.host, port=broker.port, prefix=prefix,
                      client_id=f"cityedge-{GW}", keepalive=10, username=broker.username,
                      password_file=broker.password_file, protocol=protocol, tls=tls)


def make_store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "gw" / "cityedge.db")
    for n, eui in enumerate(EUIS):
        store.upsert_device(Device(dev_eui=eui, role="air", dev_addr=f"2601{n:04x}",
                                   nwk_s_key=bytes(16), app_s_key=bytes(16)))
    return store


def uplinks(fcnts: range, *, created_at: float | None = None, priority: int = 0) -> list[Accepted]:
    """Uplinks interleaved over the three devices: device i gets fcnt f for each f."""
    out = []
    for fcnt in fcnts:
        for eui in EUIS:
            rid = f"{GW}:{eui}:{fcnt}"
            out.append(Accepted(
                dev_eui=eui, fcnt_up=fcnt, rid=rid, created_at=created_at, priority=priority,
                records=[{"bn": f"urn:dev:mac:{eui}:", "bt": 1.7e9, "n": "pm2_5",
                          "u": "ug/m3", "v": fcnt / 10, "rid": rid},
                         {"n": "rssi", "u": "dBm", "v": -97, "rid": rid}],
            ))
    return out


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class _RecordingClient(aiomqtt.Client):
    """An aiomqtt client that records each message in paho's own callback: a message paho
    acknowledged must not be lost in aiomqtt's queue when the connection drops."""

    def __init__(self, *args: Any, sink: list[Received], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._sink.append(Received(str(message.topic), bytes(message.payload),
                                   bool(message.retain)))


@dataclass
class Watcher:
    """A hypervisor-side subscriber with a persistent session, reconnecting on its own."""

    broker: Broker
    received: list[Received] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed_at: float = float("-inf")  # monotonic time of the last (re)subscription
    username: str | None = None
    password: str | None = None

    async def run(self) -> None:
        while True:
            try:
                async with _RecordingClient(
                    self.broker.host, self.broker.port, identifier="hypervisor-watcher",
                    clean_session=False, protocol=aiomqtt.ProtocolVersion.V311,
                    username=self.username, password=self.password, timeout=5,
                    sink=self.received,
                ) as client:
                    await client.subscribe("cityedge/#", qos=1)
                    self.subscribed_at = time.monotonic()
                    self.connected.set()
                    # messages arrive through _on_message; wait for the connection's end
                    # (aiomqtt's disconnect future, raising MqttError on a loss)
                    await client._disconnected
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def on(self, level: str) -> list[Received]:
        return [m for m in self.received if m.topic.split("/")[3:4] == [level]]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0,
                         what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; "
                                     f"{len(self.received)} messages so far")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def background(coro: Awaitable[None]) -> Any:
    """Run ``coro`` as a task for the block; a task that died on its own fails the test."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise AssertionError(f"background task died: {task.exception()!r}") \
                from task.exception()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def up_rids(watcher: Watcher, key: SigningKey) -> list[tuple[str, str]]:
    """(dev_eui, rid) of every uplink in every 'up' message received (a backlog pack holds
    several), in arrival order, each message verified on the way."""
    out = []
    for message in watcher.on("up"):
        verified = verify1(message.payload, {key.kid: key.public_key})
        pack = decode_pack(verified.payload)
        dev_eui = message.topic.rsplit("/", 1)[1]
        rids: list[str] = []
        for record in pack:
            if "bn" in record:  # each uplink's first record names its device
                assert record["bn"] == f"urn:dev:mac:{dev_eui}:"
            if record["rid"] not in rids:
                rids.append(record["rid"])
        out.extend((dev_eui, rid) for rid in rids)
    return out


def per_device(received: list[tuple[str, str]]) -> dict[str, list[int]]:
    """Frame counters of each device in the order they first arrived."""
    seen: dict[str, list[int]] = {}
    for dev, rid in received:
        fcnts = seen.setdefault(dev, [])
        fcnt = int(rid.rsplit(":", 1)[1])
        if fcnt not in fcnts:
            fcnts.append(fcnt)
    return seen


def pycose_verify(message: bytes, key: SigningKey) -> bytes:
    """Verify with pycose (an independent COSE implementation) and return the payload."""
    msg = Sign1Message.decode(message)
    msg.key = OKPKey(crv=Ed25519, x=key.public_bytes)
    assert msg.verify_signature(), "pycose rejects the gateway's signature"
    return msg.payload


def status_of(message: Received, key: SigningKey) -> dict:
    verified = verify1(message.payload, {key.kid: key.public_key})
    assert verified.content_type == 60  # application/cbor
    return cbor2.loads(verified.payload)


def fast_forwarder(store: Store, publisher: Publisher, key: SigningKey, **kw: Any) -> Forwarder:
    return Forwarder(store, publisher, key, GW, publisher.prefix, batch_size=kw.pop("batch", 64),
                     backoff=Backoff(initial=0.1, cap=0.5), **kw)


# ------------------------------------------------------------------------- the happy path


def test_records_arrive_signed_in_order_and_are_deleted_after_ack(
        mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)
    batch = uplinks(range(1, 101))
    assert all(store.accept_uplinks(batch))
    store.add_records([NewRecord(rid=f"{GW}:{EUIS[1]}:alarm:1", dev_eui=EUIS[1], kind="event",
                                 priority=1, records=[{"bn": f"urn:dev:mac:{EUIS[1]}:",
                                                       "n": "door_open", "vb": True}])])

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set, what="watcher connected")
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            # a window larger than what is pending, and fresh records: live, one per uplink
            forwarder = fast_forwarder(store, publisher, key, batch=512)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: len(watcher.on("up")) >= 300,
                                         what="300 uplinks")
                await watcher.wait_until(lambda: len(watcher.on("event")) == 1, what="event")
                await watcher.wait_until(lambda: store.count() == 0, what="empty store")
            assert forwarder.stats.published == forwarder.stats.messages == 301
            assert forwarder.stats.packs == forwarder.stats.historical == 0
            assert forwarder.stats.errors == 0
            received = up_rids(watcher, key)
            assert [rid for _, rid in received] == [u.rid for u in batch]  # seq order
            assert {m.topic for m in watcher.on("up")} == {f"{PREFIX}/up/{e}" for e in EUIS}
            event = watcher.on("event")[0]
            assert event.topic == f"{PREFIX}/event/{EUIS[1]}"
            assert decode_pack(verify1(event.payload, {key.kid: key.public_key}).payload)[0][
                "vb"] is True
            statuses = [status_of(m, key) for m in watcher.on("status")]
            assert statuses[0]["state"] == "online" and statuses[0]["session"] == 1
            assert statuses[-1]["state"] == "offline"  # clean shutdown says so itself

    run(main())
    store.close()


def hist_marks(pack: list[dict]) -> dict[str, list[bool]]:
    """Per rid, the 'hist' flag of each of its records, in pack order."""
    out: dict[str, list[bool]] = {}
    for record in pack:
        out.setdefault(record["rid"], []).append(record.get("hist", False))
    return out


def test_fresh_records_are_live_and_backlog_records_are_marked_historical(
        mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)
    old = uplinks(range(1, 3), created_at=time.time() - 3600)
    fresh = uplinks(range(3, 5))
    store.accept_uplinks(old)

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            forwarder = fast_forwarder(store, publisher, key, historical_after_s=60)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: store.count() == 0, what="backlog sent")
                await watcher.wait_until(lambda: len(watcher.on("up")) == 3, what="3 packs")
                n_old = len(watcher.on("up"))
                await asyncio.to_thread(store.accept_uplinks, fresh)
                forwarder.notify()
                await watcher.wait_until(lambda: len(watcher.on("up")) == n_old + 6)
                await watcher.wait_until(lambda: forwarder.stats.published == 12)
            assert forwarder.stats.historical == 6
        old_rids = {u.rid for u in old}
        for message in watcher.on("up"):
            pack = decode_pack(verify1(message.payload, {key.kid: key.public_key}).payload)
            for rid, marks in hist_marks(pack).items():
                # the first record of a backlog uplink (bn, bt) carries the mark, once
                assert marks == ([True] + [False] * (len(marks) - 1) if rid in old_rids
                                 else [False] * len(marks)), rid
        assert len(watcher.on("up")) == 3 + 6  # old: one pack per device; fresh: one each

    run(main())
    store.close()


def test_backlog_drains_in_signed_per_device_packs_verified_by_pycose(
        mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)
    backlog = uplinks(range(1, 301))  # 900 records interleaved over 3 devices
    store.accept_uplinks(backlog)

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            forwarder = fast_forwarder(store, publisher, key, batch=64, max_pack_uplinks=50)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: store.count() == 0, what="backlog sent")
                await watcher.wait_until(lambda: forwarder.stats.published == 900)
                await watcher.wait_until(lambda: len(watcher.on("up")) >= 18, what="18 packs")
            assert forwarder.stats.packs == forwarder.stats.messages == 18  # 3 x 300/50
            assert forwarder.stats.historical == 900
        assert len(watcher.on("up")) == 18
        for message in watcher.on("up"):
            pack = decode_pack(pycose_verify(message.payload, key))
            marks = hist_marks(pack)
            assert len(marks) == 50
            assert all(m == [True, False] for m in marks.values())
        received = up_rids(watcher, key)
        assert sorted(rid for _, rid in received) == sorted(u.rid for u in backlog)
        assert per_device(received) == {eui: list(range(1, 301)) for eui in EUIS}

    run(main())
    store.close()


def test_notify_wakes_an_idle_forwarder_at_once(mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            forwarder = fast_forwarder(store, publisher, key)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: len(watcher.on("status")) == 1, what="birth")
                await asyncio.sleep(0.3)  # idle now
                start = time.monotonic()
                await asyncio.to_thread(store.accept_uplinks, uplinks(range(1, 2))[:1])
                forwarder.notify()
                await watcher.wait_until(lambda: len(watcher.on("up")) == 1)
                assert time.monotonic() - start < 1.0  # the idle poll is 5 s: notify woke it

    run(main())
    store.close()


def test_the_brokers_receive_maximum_bounds_what_is_in_flight(
        mosquitto: Broker, tmp_path: Path) -> None:
    mosquitto.stop()
    mosquitto.config_lines.append("max_inflight_messages 5")  # CONNACK Receive Maximum = 5
    mosquitto.start()
    key = SigningKey.generate()
    store = make_store(tmp_path)
    store.accept_uplinks(uplinks(range(1, 51)))

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            forwarder = fast_forwarder(store, publisher, key, batch=64)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: store.count() == 0)
                assert publisher._client is not None
                assert publisher._client.server_receive_maximum == 5
            assert forwarder.stats.connections == 1  # never had to reconnect
            assert per_device(up_rids(watcher, key)) == {eui: list(range(1, 51)) for eui in EUIS}

    run(main())
    store.close()


# ------------------------------------------------------------------------- outages


def test_broker_outage_loses_nothing_and_keeps_per_device_order(
        mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)
    first = uplinks(range(1, 401))  # 1200 records
    second = uplinks(range(401, 501))  # committed while the broker is down
    store.accept_uplinks(first)

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto), key, store, publish_timeout=5,
                                  connect_timeout=3)
            # one uplink per message, so that the broker goes down mid-stream
            forwarder = fast_forwarder(store, publisher, key, max_pack_uplinks=1)
            async with background(forwarder.run()):
                await watcher.wait_until(lambda: len(watcher.on("up")) >= 20)
                await asyncio.to_thread(mosquitto.stop)  # mid-stream
                await watcher.wait_until(lambda: not forwarder.stats.connected)
                down_count = store.count()
                assert down_count > 0
                await asyncio.to_thread(store.accept_uplinks, second)
                forwarder.notify()
                await asyncio.sleep(1.0)
                # nothing is deleted while nobody acknowledges
                assert store.count() == down_count + len(second)
                assert not forwarder.stats.connected
                await asyncio.to_thread(mosquitto.start)
                await watcher.wait_until(lambda: store.count() == 0, timeout=20,
                                         what="store drained after restart")
                expected = {u.rid for u in first + second}
                await watcher.wait_until(
                    lambda: {rid for _, rid in up_rids(watcher, key)} >= expected,
                    timeout=20, what="every record at the watcher")
            assert forwarder.stats.connections >= 2
        received = up_rids(watcher, key)
        assert {rid for _, rid in received} == {u.rid for u in first + second}
        assert per_device(received) == {eui: list(range(1, 501)) for eui in EUIS}
        sessions = [status_of(m, key)["session"] for m in watcher.on("status")
                    if status_of(m, key)["state"] == "online"]
        assert sessions == sorted(sessions) and sessions[-1] >= 2

    run(main(), timeout=60)
    store.close()


def test_last_will_marks_the_gateway_offline_after_kill_9(
        mosquitto: Broker, tmp_path: Path) -> None:
    key_path = tmp_path / "key.pem"
    key = generate_signing_key(key_path)
    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from gateway.config import MqttConfig
        from gateway.keys import load_signing_key
        from gateway.uplink.mqtt import Publisher

        async def main():
            cfg = MqttConfig(host="127.0.0.1", port={mosquitto.port}, prefix="{PREFIX}",
                             client_id="gw-subprocess")
            async with Publisher(cfg, load_signing_key({str(key_path)!r})):
                print("online", flush=True)
                await asyncio.sleep(60)

        asyncio.run(main())
    """)

    async def main() -> None:
        watcher = Watcher(mosquitto)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, stdout=asyncio.subprocess.DEVNULL)
            try:
                await watcher.wait_until(lambda: len(watcher.on("status")) == 1, what="birth")
                child.kill()  # SIGKILL: no goodbye, the broker must send the will
                await watcher.wait_until(lambda: len(watcher.on("status")) == 2, what="will")
            finally:
                if child.returncode is None:
                    child.kill()
                await child.wait()
        birth, will = (status_of(m, key) for m in watcher.on("status"))
        assert birth["state"] == "online" and will["state"] == "offline"
        assert birth["session"] == will["session"] == 1
        # both retained: a hypervisor connecting now learns the gateway is offline
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe(f"{PREFIX}/status", qos=1)
            async for message in client.messages:
                assert message.retain
                assert status_of(Received("", message.payload, True), key)["state"] == "offline"
                break

    run(main())


def test_session_counter_grows_per_connection_and_persists(
        mosquitto: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)

    async def main() -> list[int]:
        sessions = []
        for _ in range(3):
            publisher = Publisher(mqtt_config(mosquitto), key, store)
            async with publisher:
                sessions.append(publisher.session)
        return sessions

    assert run(main()) == [1, 2, 3]
    store.close()
    with Store.open(tmp_path / "gw" / "cityedge.db") as reopened:
        assert reopened.get_meta("session") == 3


# ------------------------------------------------------------------------- security


def test_tls_connection_with_the_broker_ca(mosquitto_tls: Broker) -> None:
    key = SigningKey.generate()

    async def main() -> None:
        async with Publisher(mqtt_config(mosquitto_tls), key) as publisher:
            assert publisher.connected
            await publisher.publish(f"{PREFIX}/up/{EUIS[0]}", b"x")

    run(main())


def test_tls_with_an_unrelated_ca_is_refused(mosquitto_tls: Broker,
                                              mqtt_certs: CertBundle) -> None:
    key = SigningKey.generate()

    async def main() -> None:
        config = mqtt_config(mosquitto_tls, ca_file=mqtt_certs.other_ca_cert)
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            async with Publisher(config, key, connect_timeout=3):
                pass

    run(main())


def test_mutual_tls_with_the_client_certificate(mosquitto_mtls: Broker) -> None:
    key = SigningKey.generate()

    async def main() -> None:
        config = mqtt_config(mosquitto_mtls, client_cert=True)
        async with Publisher(config, key) as publisher:
            await publisher.publish(f"{PREFIX}/up/{EUIS[0]}", b"x")

    run(main())


def test_mutual_tls_without_a_client_certificate_is_refused(mosquitto_mtls: Broker) -> None:
    key = SigningKey.generate()

    async def main() -> None:
        with pytest.raises(ConnectError):
            async with Publisher(mqtt_config(mosquitto_mtls), key, connect_timeout=1.5):
                pass

    run(main())


def test_unusable_client_key_file_names_the_config_keys(mosquitto_mtls: Broker,
                                                        tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    config = mqtt_config(mosquitto_mtls, client_cert=True)
    config = MqttConfig(**{**config.__dict__, "tls": MqttTlsConfig(
        enabled=True, ca_file=config.tls.ca_file, cert_file=config.tls.cert_file, key_file=bad)})

    async def main() -> None:
        with pytest.raises(PublisherConfigError, match="mqtt.tls.key_file"):
            async with Publisher(config, SigningKey.generate()):
                pass

    run(main())


def test_password_login_and_wrong_password(mosquitto_auth: Broker, tmp_path: Path) -> None:
    key = SigningKey.generate()
    wrong = tmp_path / "wrong.password"
    wrong.write_text("nope\n")

    async def main() -> None:
        async with Publisher(mqtt_config(mosquitto_auth), key) as publisher:
            assert publisher.connected
        config = mqtt_config(mosquitto_auth)
        config = MqttConfig(**{**config.__dict__, "password_file": wrong})
        with pytest.raises(ConnectError, match="refused"):
            async with Publisher(config, key, connect_timeout=3):
                pass

    run(main())


def test_message_refused_by_the_broker_acl_is_kept_in_the_store(
        mosquitto_auth: Broker, tmp_path: Path) -> None:
    """MQTT v5: Mosquitto answers PUBACK 0x87 for a topic outside the ACL; the record stays."""
    key = SigningKey.generate()
    store = make_store(tmp_path)
    store.accept_uplinks(uplinks(range(1, 3)))

    async def main() -> None:
        # the gateway user may write only under cityedge/v1/
        async with Publisher(mqtt_config(mosquitto_auth), key, store) as publisher:
            with pytest.raises(PublishRejectedError, match="0x87"):
                await publisher.publish("elsewhere/up/x", b"x")
        config = mqtt_config(mosquitto_auth, prefix=f"cityedge/v1/{GW}")
        publisher = Publisher(MqttConfig(**{**config.__dict__, "prefix": f"elsewhere/{GW}",
                                            "client_id": "gw-acl"}), key, store)
        forwarder = fast_forwarder(store, publisher, key)
        async with background(forwarder.run()):
            deadline = time.monotonic() + 10
            while forwarder.stats.rejected < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert forwarder.stats.rejected >= 2  # retried with backoff, refused again
        assert forwarder.stats.published == 0
        assert store.count() == 6  # nothing deleted on a refusal

    run(main())
    store.close()


def test_watcher_with_the_acl_sees_the_gateway_messages(mosquitto_auth: Broker,
                                                        tmp_path: Path) -> None:
    key = SigningKey.generate()
    store = make_store(tmp_path)
    store.accept_uplinks(uplinks(range(1, 2)))

    async def main() -> None:
        watcher = Watcher(mosquitto_auth, username=WATCHER_USER, password=WATCHER_PASSWORD)
        async with background(watcher.run()):
            await watcher.wait_until(watcher.connected.is_set)
            publisher = Publisher(mqtt_config(mosquitto_auth), key, store)
            async with background(fast_forwarder(store, publisher, key).run()):
                await watcher.wait_until(lambda: len(watcher.on("up")) == 3)
        assert len(up_rids(watcher, key)) == 3

    run(main())
    store.close()
