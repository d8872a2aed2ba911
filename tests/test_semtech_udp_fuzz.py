"""Property and fuzz tests of the Semtech UDP parsers and of the running server.

Arbitrary bytes and structured-but-wrong JSON go through the parsers directly and through the
real server over loopback UDP: no exception ever escapes, and every bad datagram or ``rxpk``
entry is counted (``semtech_<reason>``) while the good ones are delivered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.radio import RxFrame
from gateway.radio.semtech_udp import (
    GatewayStat,
    ProtocolError,
    PullData,
    PushData,
    SemtechUdpFrontEnd,
    TxAck,
    Txpk,
    parse_downstream,
    parse_rxpk,
    parse_rxpk_checked,
    parse_stat,
    parse_txpk,
    parse_upstream,
)
from sim.packet_forwarder import PacketForwarder

REASONS = {
    "truncated", "bad_version", "unknown_identifier", "wrong_direction", "bad_length",
    "bad_json", "bad_field", "missing_field", "bad_base64", "size_mismatch",
    "unsupported_modulation",
}
EUI = "aa555a00000000f1"
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
_b64 = st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode())
# Each rxpk field: usually a plausible value, sometimes a wrong one of any JSON type.
RXPK_FIELDS = {
    "time": st.just("2026-01-01T00:00:00.000001Z"),
    "tmst": st.integers(-5, 2**32 + 5),
    "chan": st.integers(-1, 300),
    "rfch": st.integers(0, 2),
    "freq": st.sampled_from([868.1, 868.3, 867.9, 0.0, 2400.0]),
    "stat": st.integers(-2, 2),
    "modu": st.sampled_from(["LORA", "FSK", "lora"]),
    "datr": st.sampled_from(["SF7BW125", "SF12BW125", "SF9BW500", "SF4BW125", "SF7BW62", 50000]),
    "codr": st.sampled_from(["4/5", "4/8", "OFF", "5/4"]),
    "rssi": st.integers(-140, 10),
    "lsnr": st.floats(-30, 20),
    "size": st.integers(0, 60),
    "data": _b64 | st.text(max_size=20),
}
rxpk_like = st.fixed_dictionaries(
    {},
    optional={k: v | json_values for k, v in RXPK_FIELDS.items()},
)
STAT_FIELDS = ("time", "lati", "long", "alti", "rxnb", "rxok", "rxfw", "ackr", "dwnb", "txnb")
stat_like = st.dictionaries(st.sampled_from(STAT_FIELDS),
                            st.integers(-5, 10**6) | st.floats(-200, 200) | json_values,
                            max_size=6)


def _datagrams() -> st.SearchStrategy[bytes]:
    header = st.tuples(st.sampled_from([1, 2, 3]), st.integers(0, 65535),
                       st.integers(0, 7)).map(lambda t: bytes([t[0]]) + t[1].to_bytes(2, "big")
                                              + bytes([t[2]]))
    return st.one_of(
        st.binary(max_size=120),
        st.tuples(header, st.binary(min_size=0, max_size=12), st.binary(max_size=80))
        .map(lambda t: b"".join(t)),
        st.tuples(header, st.just(bytes.fromhex(EUI)), json_values.map(
            lambda v: json.dumps(v).encode())).map(lambda t: b"".join(t)),
    )


# ------------------------------------------------------------------------ pure parsers


@FUZZ
@given(_datagrams())
def test_any_datagram_parses_or_raises_a_protocol_error_with_a_known_reason(data: bytes) -> None:
    try:
        msg = parse_upstream(data)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return
    assert isinstance(msg, PushData | PullData | TxAck)
    if isinstance(msg, PushData):
        for obj in msg.rxpk:
            try:
                assert isinstance(parse_rxpk(obj, 0.0, msg.gateway_eui), RxFrame)
            except ProtocolError as exc:
                assert exc.reason in REASONS
        if msg.stat is not None:
            try:
                assert isinstance(parse_stat(msg.stat), GatewayStat)
            except ProtocolError as exc:
                assert exc.reason in REASONS


@FUZZ
@given(_datagrams())
def test_any_downstream_datagram_parses_or_raises_a_protocol_error(data: bytes) -> None:
    try:
        msg = parse_downstream(data)
        if hasattr(msg, "txpk"):
            assert isinstance(parse_txpk(msg.txpk), Txpk)
    except ProtocolError as exc:
        assert exc.reason in REASONS


@FUZZ
@given(rxpk_like)
def test_a_structured_rxpk_is_a_valid_frame_or_a_counted_reason(obj: dict[str, Any]) -> None:
    try:
        frame = parse_rxpk(obj, 1.0, EUI)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return
    assert 1 <= len(frame.phy) <= 255 and 5 <= frame.sf <= 12 and frame.bw_khz in (125, 250, 500)
    assert 0 <= frame.tmst_us < 2**32 and frame.freq_hz > 0


@FUZZ
@given(rxpk_like | json_values)
def test_the_fast_rxpk_path_gives_the_same_answer_as_the_field_by_field_rules(obj: Any) -> None:
    def outcome(parse: Any) -> Any:
        try:
            return parse(obj, 2.0, EUI)
        except ProtocolError as exc:
            return exc.reason
    assert outcome(parse_rxpk) == outcome(parse_rxpk_checked)


@FUZZ
@given(st.fixed_dictionaries({}, optional={
    "imme": st.booleans() | json_values, "tmst": st.integers(-1, 2**32) | json_values,
    "freq": st.sampled_from([869.525, -1.0]) | json_values, "powe": st.integers(-20, 50),
    "datr": st.sampled_from(["SF9BW125", "SF13BW125"]) | json_values,
    "data": _b64 | json_values, "ipol": st.booleans() | json_values,
    "ncrc": st.booleans() | json_values, "codr": st.sampled_from(["4/5", "x"]) | json_values,
}))
def test_a_structured_txpk_is_valid_or_refused_with_a_reason(obj: dict[str, Any]) -> None:
    try:
        txpk = parse_txpk(obj)
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return
    assert txpk.immediate or txpk.tmst is not None or txpk.time is not None


# ------------------------------------------------------------------- the running server


class _Server:
    """A front end and one forwarder on a loop in a background thread, shared by examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = AsyncExitStack()
        self.fe: SemtechUdpFrontEnd
        self.pf: PacketForwarder
        self.call(self._start())

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        self.fe = await self.stack.enter_async_context(
            SemtechUdpFrontEnd(bind="127.0.0.1", port=0))
        self.pf = await self.stack.enter_async_context(
            PacketForwarder(self.fe.address[:2], EUI, keepalive_s=3600))
        await asyncio.wait_for(self.pf.pull_acked.wait(), 10)

    async def exchange(self, data: bytes) -> list[RxFrame]:
        """Send ``data``, then a sync PUSH_DATA; returns every frame delivered meanwhile."""
        self.pf.send_raw(data)
        assert await self.pf.push([]), "the server keeps answering"
        frames = []
        while not self.fe.queue.empty():
            frames.append(self.fe.queue.get_nowait())
        return frames

    def close(self) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    """For arbitrary datagrams (which may announce other forwarders)."""
    s = _Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def clean_server() -> Iterator[_Server]:
    """Only our forwarder ever talks to it, so its frames are delivered without waiting."""
    s = _Server()
    yield s
    s.close()


def _rejections(counters: Any) -> int:
    return sum(counters["semtech_" + r] for r in REASONS) + counters["semtech_tx_ack_unknown_token"]


@FUZZ
@given(st.lists(rxpk_like, min_size=1, max_size=4), st.none() | stat_like)
def test_the_server_delivers_or_counts_every_rxpk_of_a_structured_push_data(
        clean_server: _Server, packets: list[dict[str, Any]], stat: dict[str, Any] | None
) -> None:
    server = clean_server
    body: dict[str, Any] = {"rxpk": packets}
    if stat is not None:
        body["stat"] = stat
    data = bytes([2, 0, 9, 0]) + bytes.fromhex(EUI) + json.dumps(body).encode()
    c = server.fe.counters
    before = (_rejections(c), c["semtech_duplicate"], c["semtech_stat"])
    frames = server.call(server.exchange(data))
    rejected = _rejections(c) - before[0]
    duplicates = c["semtech_duplicate"] - before[1]
    stats = c["semtech_stat"] - before[2]
    assert c["semtech_internal_error"] == 0
    expected_stat = 0 if stat is None else 1
    assert len(frames) + rejected + duplicates + stats == len(packets) + expected_stat
    for f in frames:
        assert f.gateway_eui == EUI and 1 <= len(f.phy) <= 255


@FUZZ
@given(_datagrams())
def test_the_server_survives_arbitrary_datagrams_and_counts_each_bad_one(
        server: _Server, data: bytes) -> None:
    c = server.fe.counters
    before = _rejections(c)
    try:
        parse_upstream(data)
        bad = False
    except ProtocolError:
        bad = True
    server.call(server.exchange(data))
    assert c["semtech_internal_error"] == 0
    if bad:
        assert _rejections(c) == before + 1
