"""`cityedge hypervisor keygen|send|watch` against a real Mosquitto, and the integration guide's code.

The gateway's command intake is not wired yet, so these tests use a GATEWAY STAND-IN (below):
a small responder that checks each command with pycose, an independent COSE implementation,
and answers with cmd-status packs signed the way the gateway's forwarder signs them
(gateway.uplink.cose.sign1 over gateway.uplink.senml). The real end-to-end test replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import ssl
import stat
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from cityedge import cli
from cityedge.hypervisor import (
    ACTION_ARGS,
    CommandError,
    HypervisorMessage,
    build_command,
    parse_action_args,
    status_update,
)
from gateway.commands.model import CommandRow
from gateway.commands.status import rejection_record, status_record
from gateway.config import load_config
from gateway.keys import SigningKey, key_id, load_public_key
from gateway.uplink import cose, senml
from tests.fixtures.mosquitto import WATCHER_PASSWORD, WATCHER_USER

pytestmark = pytest.mark.broker

GW = "b827ebfffe0be7c4"
PREFIX = f"cityedge/v1/{GW}"
DEV1, DEV2 = "70b3d57ed0000001", "70b3d57ed0000002"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "hypervisor-guide.md"


def status_pack(gw_key: SigningKey, dev: str, cmd_id: str, n: int, status: str,
                **fields: Any) -> bytes:
    """A cmd-status message exactly as the gateway makes it (gateway.commands.status), signed."""
    row = CommandRow(cmd_id=cmd_id, kid="00", key_name=fields.pop("key", "operator"),
                     dev_eui=dev, action=fields.pop("action", "dim"), args={}, issued_at=0.0,
                     expires_at=0.0, group=fields.pop("group", None), status=status,
                     status_n=n, **fields)
    record = status_record(GW, row, time.time())
    return cose.sign1(senml.encode_pack(record.records), gw_key)


def rejection_pack(gw_key: SigningKey, target: str, reason: str, detail: str, *,
                   cmd_id: str | None, action: str | None = None) -> tuple[str, bytes]:
    """(topic, message) of a rejection as the gateway publishes it."""
    record = rejection_record(GW, target, reason, detail, time.time(), cmd_id=cmd_id,
                              action=action, key_name=None)
    return (f"{PREFIX}/cmd-status/{record.dev_eui}",
            cose.sign1(senml.encode_pack(record.records), gw_key))


Script = Callable[[dict, str], list[tuple[str, bytes]]]


def mqtt_client(broker: Any) -> aiomqtt.Client:
    """A client of ``broker`` as the gateway would connect (its TLS files, its user)."""
    context = None
    if broker.tls:
        context = ssl.create_default_context(cafile=broker.ca_file)
        if broker.cert_file:
            context.load_cert_chain(broker.cert_file, broker.key_file)
    return aiomqtt.Client(broker.host, broker.port, tls_context=context,
                          username=broker.username, password=broker.password)


class GatewayStandIn:
    """STAND-IN FOR THE GATEWAY: verifies each command with pycose and plays ``script``.

    ``script(command, target)`` returns the (topic, payload) status messages to publish.
    """

    def __init__(self, broker: Any, operator_pub: bytes, script: Script) -> None:
        self.broker, self.operator_pub, self.script = broker, operator_pub, script
        self.received: list[tuple[str, dict]] = []
        self.errors: list[BaseException] = []

    def verify(self, payload: bytes) -> dict:
        msg = Sign1Message.decode(payload)
        assert msg.phdr[Algorithm] is EdDSA
        assert msg.phdr[ContentType] == 60
        assert msg.get_attr(KID) == hashlib.sha256(self.operator_pub).digest()[:8]
        msg.key = OKPKey(crv=Ed25519, x=self.operator_pub)
        assert msg.verify_signature()
        return cbor2.loads(msg.payload)

    async def _serve(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            try:
                command = self.verify(bytes(m.payload))
                target = str(m.topic).rsplit("/", 1)[-1]
                assert command["target"] == target
                self.received.append((str(m.topic), command))
                for topic, payload in self.script(command, target):
                    await client.publish(topic, payload, qos=1)
            except Exception as exc:  # noqa: BLE001 - raised again when the test's block ends
                self.errors.append(exc)

    @contextlib.asynccontextmanager
    async def running(self):
        async with mqtt_client(self.broker) as client:
            await client.subscribe(f"{PREFIX}/cmd/+", qos=1)
            await client.subscribe(f"{PREFIX}/cmd-group/+", qos=1)
            task = asyncio.create_task(self._serve(client))
            try:
                yield self
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """An operator key made by `keygen` and a gateway key pair, as files."""
    assert cli.main(["hypervisor", "keygen", "--out", str(tmp_path / "operator.pem")]) == 0
    out = capsys.readouterr().out
    gw = SigningKey.generate()
    (tmp_path / "gw.pub").write_bytes(gw.public_pem())
    pub = load_public_key(tmp_path / "operator.pem.pub")
    return {"operator": tmp_path / "operator.pem", "operator_pub": pub.public_bytes_raw(),
            "kid": key_id(pub).hex(), "gw": gw, "gw_pub": tmp_path / "gw.pub",
            "keygen_out": out}


def send_argv(broker: Any, keys: dict[str, Any], *rest: str) -> list[str]:
    return ["hypervisor", "send", "--broker", f"{broker.host}:{broker.port}",
            "--key", str(keys["operator"]), "--gateway-key", str(keys["gw_pub"]),
            "--gateway", GW, *rest]


def run_send(broker: Any, keys: dict[str, Any], script: Script, *rest: str
             ) -> tuple[int, GatewayStandIn]:
    stand_in = GatewayStandIn(broker, keys["operator_pub"], script)

    async def scenario() -> int:
        async with stand_in.running():
            return await asyncio.to_thread(cli.main, send_argv(broker, keys, *rest))

    return asyncio.run(scenario()), stand_in


def acked_at_once(keys: dict[str, Any]) -> Script:
    def script(cmd: dict, dev: str) -> list[tuple[str, bytes]]:
        topic = f"{PREFIX}/cmd-status/{dev}"
        return [(topic, status_pack(keys["gw"], dev, cmd["id"], 0, "accepted")),
                (topic, status_pack(keys["gw"], dev, cmd["id"], 1, "acked", answer="done"))]

    return script


@pytest.mark.parametrize("kind", ["password", "mutual-tls"])
def test_send_over_an_authenticated_or_mutual_tls_broker(
        request: pytest.FixtureRequest, tmp_path: Path, keys: dict[str, Any],
        capsys: pytest.CaptureFixture[str], kind: str) -> None:
    if kind == "password":
        broker = request.getfixturevalue("mosquitto_auth")
        password = tmp_path / "watcher.password"
        password.write_text(WATCHER_PASSWORD + "\n")
        options = ["--username", WATCHER_USER, "--password-file", str(password)]
    else:
        broker = request.getfixturevalue("mosquitto_mtls")
        options = ["--tls-ca-file", str(broker.ca_file), "--tls-cert-file",
                   str(broker.cert_file), "--tls-key-file", str(broker.key_file)]
    code, stand_in = run_send(broker, keys, acked_at_once(keys), *options,
                              "--device", DEV1, "set_interval", "seconds=900")
    out, err = capsys.readouterr()
    assert code == 0, err + broker.log_text()[-2000:]
    assert stand_in.received[0][1]["args"] == {"seconds": 900}
    assert f"{DEV1}  acked  answer=done" in out


def test_an_unreachable_broker_exits_4(
        keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.mosquitto import free_port

    broker = type("NoBroker", (), {"host": "127.0.0.1", "port": free_port()})
    assert cli.main(send_argv(broker, keys, "--device", DEV1, "reboot")) == 4
    assert "broker 127.0.0.1:" in capsys.readouterr().err


def test_keygen_writes_a_private_0600_key_and_prints_kid_and_config(
        keys: dict[str, Any]) -> None:
    out = keys["keygen_out"]
    assert stat.S_IMODE(keys["operator"].stat().st_mode) == 0o600
    assert f"kid {keys['kid']}" in out
    snippet = tomllib.loads(out[out.index("[[commands.keys]]"):])
    assert snippet["commands"]["keys"][0] == {
        "name": "operator", "public_key": "operator.pem.pub", "actions": ["*"],
        "devices": ["*"], "rate_per_minute": 120}
    assert "PRIVATE KEY" not in out and "BEGIN" not in out


def test_keygen_config_block_is_what_the_gateway_config_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gw_dir = tmp_path / "gw"
    assert cli.main(["gateway", "init", "--id", GW, "--dir", str(gw_dir)]) == 0
    assert cli.main(["hypervisor", "keygen", "--out", str(gw_dir / "control-centre.pem")]) == 0
    out = capsys.readouterr().out
    config_path = gw_dir / "gateway.toml"
    with config_path.open("a") as config:
        config.write("\n" + out[out.index("[[commands.keys]]"):])
    [trusted] = load_config(config_path).commands.keys
    assert trusted.name == "control-centre" and trusted.actions == ("*",)
    assert f"kid {key_id(load_public_key(trusted.public_key)).hex()}" in out


def test_send_dim_follows_the_device_to_acked_and_ignores_forged_statuses(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    forger = SigningKey.generate()

    def script(cmd: dict, dev: str) -> list[tuple[str, bytes]]:
        topic, gw, i = f"{PREFIX}/cmd-status/{dev}", keys["gw"], cmd["id"]
        sent = status_pack(gw, dev, i, 2, "sent", fcnt_down=12, attempts=1)
        return [(topic, status_pack(gw, dev, i, 0, "accepted", action="dim", key="operator")),
                (topic, status_pack(forger, dev, i, 3, "failed", reason="refused")),
                (topic, status_pack(gw, dev, i, 1, "queued", reason="duty_cycle")),
                (topic, sent), (topic, sent),
                (topic, status_pack(gw, dev, i, 3, "acked", answer="done"))]

    code, stand_in = run_send(mosquitto, keys, script, "--device", DEV1.upper(),
                              "dim", "level=40", "ramp_s=5", "for_min=60", "--id", "op-1")
    out, err = capsys.readouterr()
    assert code == 0, err
    [(topic, command)] = stand_in.received
    assert topic == f"{PREFIX}/cmd/{DEV1}"
    assert command["args"] == {"level": 40, "ramp_s": 5, "for_min": 60}
    assert command["id"] == "op-1" and command["action"] == "dim" and command["target"] == DEV1
    assert command["exp"] - command["iat"] == 300
    statuses = re.findall(rf"^{DEV1}  (\w+)", out, re.MULTILINE)
    assert statuses == ["accepted", "queued", "sent", "acked"]
    assert "reason=duty_cycle" in out and "fcnt_down=12" in out and "answer=done" in out
    assert "IGNORED" in err and "unknown kid" in err
    assert "1 acked" in out.splitlines()[-1]


def test_group_command_shows_every_member_and_ends_when_all_acked(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    def script(cmd: dict, group: str) -> list[tuple[str, bytes]]:
        gw, i = keys["gw"], cmd["id"]
        out = [(f"{PREFIX}/cmd-status/{d}",
                status_pack(gw, d, i, 0, "accepted", action="switch", group=group))
               for d in (DEV1, DEV2)]
        return out + [(f"{PREFIX}/cmd-status/{d}",
                       status_pack(gw, d, i, 1, "acked", answer="done", group=group))
                      for d in (DEV1, DEV2)]

    code, stand_in = run_send(mosquitto, keys, script, "--group", "rue-de-la-republique",
                              "switch", "on=false", "--json")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert stand_in.received[0][0] == f"{PREFIX}/cmd-group/rue-de-la-republique"
    assert stand_in.received[0][1]["args"] == {"on": False}
    lines = [json.loads(line) for line in out.splitlines()]
    assert {(x["target"], x["status"]) for x in lines[:-1]} == {
        (d, s) for d in (DEV1, DEV2) for s in ("accepted", "acked")}
    assert lines[-1]["result"] == "acked"
    assert lines[-1]["targets"] == {DEV1: "acked", DEV2: "acked"}


@pytest.mark.parametrize(("final", "expected"), [
    ({"status": "failed", "reason": "refused", "answer": "out_of_range"},
     "answer=out_of_range"),
    ({"status": "expired", "reason": "expired"}, "expired"),
])
def test_a_command_ending_badly_exits_1_with_its_reason(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str],
        final: dict[str, str], expected: str) -> None:
    def script(cmd: dict, dev: str) -> list[tuple[str, bytes]]:
        topic, gw = f"{PREFIX}/cmd-status/{dev}", keys["gw"]
        return [(topic, status_pack(gw, dev, cmd["id"], 0, "accepted")),
                (topic, status_pack(gw, dev, cmd["id"], 1, **final))]

    code, _ = run_send(mosquitto, keys, script, "--device", DEV2, "valve_open", "seconds=600")
    out, err = capsys.readouterr()
    assert code == 1, err
    assert expected in out and f"{DEV2}  {final['status']}" in out


@pytest.mark.parametrize(("reason", "with_id"), [("not_allowed", True),
                                                 ("unknown_key", False)])
def test_a_rejection_exits_1_with_reason_and_detail_even_without_an_id(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str],
        reason: str, with_id: bool) -> None:
    """The gateway cannot read the id of a command it cannot verify: that rejection, on the
    command's own topic and before any status of ours, still ends the command."""
    other = rejection_pack(keys["gw"], "70b3d57ed00000ff", "unknown_key", "elsewhere",
                           cmd_id=None)

    def script(cmd: dict, target: str) -> list[tuple[str, bytes]]:
        return [other, rejection_pack(keys["gw"], target, reason, f"because {reason}",
                                      cmd_id=cmd["id"] if with_id else None)]

    code, _ = run_send(mosquitto, keys, script, "--group", "Parc-Jourdan", "valve_close")
    out, err = capsys.readouterr()
    assert code == 1, err
    assert f"parc-jourdan  rejected  reason={reason}" in out
    assert f"because {reason}" in out and "elsewhere" not in out
    assert ("no command id" in out) is not with_id


def test_no_final_status_before_the_timeout_exits_3(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    def script(cmd: dict, dev: str) -> list[tuple[str, bytes]]:
        return [(f"{PREFIX}/cmd-status/{dev}", status_pack(keys["gw"], dev, cmd["id"], 0,
                                                           "accepted"))]

    code, _ = run_send(mosquitto, keys, script, "--device", DEV1, "reboot", "--timeout", "0.5")
    out, err = capsys.readouterr()
    assert code == 3
    assert "accepted" in out and f"no final status for {DEV1}" in err


@pytest.mark.parametrize(("rest", "message"), [
    (["--device", DEV1, "dim", "level=abc"], "expected an integer"),
    (["--device", DEV1, "dim", "lvl=3"], "unknown argument 'lvl'"),
    (["--device", DEV1, "dim"], "missing argument level"),
    (["--device", DEV1, "calendar", "points=[{bad"], "not valid JSON"),
    (["--device", DEV1, "switch", "on=yes"], "expected true or false"),
    (["--device", "70b3", "reboot"], "16 hex digits"),
    (["--device", DEV1, "reboot", "--id", "no spaces"], "id 'no spaces'"),
    (["--device", DEV1, "reboot", "--tls-cert-file", "c.pem"], "go together"),
])
def test_usage_errors_exit_2_before_anything_is_sent(
        tmp_path: Path, keys: dict[str, Any], capsys: pytest.CaptureFixture[str],
        rest: list[str], message: str) -> None:
    broker = type("NoBroker", (), {"host": "127.0.0.1", "port": 9})  # nothing listens
    assert cli.main(send_argv(broker, keys, *rest)) == 2
    assert message in capsys.readouterr().err


def test_a_bad_key_file_is_a_usage_error_and_never_shown(
        tmp_path: Path, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    broker = type("NoBroker", (), {"host": "127.0.0.1", "port": 9})
    argv = send_argv(broker, keys, "--device", DEV1, "reboot")
    wrong = tmp_path / "wrong.pem"  # a public key where the private key goes
    wrong.write_bytes(keys["gw_pub"].read_bytes())
    wrong.chmod(0o600)
    argv[argv.index("--key") + 1] = str(wrong)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "not a PEM private key" in err and "BEGIN" not in err


def test_typed_arguments_for_a_calendar() -> None:
    points = '[{"ref":"dusk","minutes":-30,"level":100},{"ref":"clock","minutes":1380,"level":40}]'
    args = parse_action_args("calendar", [f"points={points}"])
    assert args["points"][0] == {"ref": "dusk", "minutes": -30, "level": 100}
    command = build_command("calendar", args, DEV1, now=1000.5, expires_in=60, cmd_id="c-1")
    assert command == {"id": "c-1", "action": "calendar", "iat": 1000, "exp": 1060,
                       "target": DEV1, "args": args}
    with pytest.raises(CommandError, match="unknown action"):
        build_command("explode", {}, DEV1)


@given(st.sampled_from(list(ACTION_ARGS)), st.lists(st.text(max_size=40), max_size=4))
def test_any_argument_text_is_typed_or_refused_with_a_command_error(
        action: str, pairs: list[str]) -> None:
    try:
        args = parse_action_args(action, pairs)
    except CommandError:
        return
    assert set(args) <= set(ACTION_ARGS[action])


@given(st.integers(-(10**12), 10**12))
def test_integer_arguments_keep_their_value(n: int) -> None:
    assert parse_action_args("dim", [f"level={n}"]) == {"level": n}


_VALUES = st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans())


@given(st.lists(st.dictionaries(st.sampled_from(["n", "vs", "v", "rid", "bt"]), _VALUES),
                max_size=6))
def test_any_verified_records_give_a_status_or_none_never_an_error(records: list[dict]) -> None:
    msg = HypervisorMessage(f"{PREFIX}/cmd-status/{DEV1}", GW, "cmd-status", DEV1,
                            verified=True, records=records)
    update = status_update(msg)
    assert update is None or (update.target == DEV1 and isinstance(update.cmd_id, str))


def test_watch_shows_command_statuses_and_rule_events_verified(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    gw, rid = keys["gw"], f"{GW}:{DEV2}:rule:1"
    event = cose.sign1(senml.encode_pack([
        {"bn": f"urn:dev:mac:{DEV2}:", "bt": 1.0e9, "n": "rule", "vs": "parc-jourdan",
         "rid": rid, "hist": True},
        {"n": "action", "vs": "valve_open", "rid": rid},
        {"n": "why", "vs": "moisture 0.12 < 0.18", "rid": rid}]), gw)
    retained = {
        f"{PREFIX}/cmd-status/{DEV1}": status_pack(gw, DEV1, "op-9", 2, "failed",
                                                   reason="refused", answer="busy"),
        f"{PREFIX}/event/{DEV2}": event,
        f"{PREFIX}/cmd-status/{DEV2}": status_pack(SigningKey.generate(), DEV2, "x", 0,
                                                   "acked"),
    }

    async def publish() -> None:
        async with mqtt_client(mosquitto) as client:
            for topic, payload in retained.items():
                await client.publish(topic, payload, qos=1, retain=True)

    asyncio.run(publish())
    assert cli.main(["hypervisor", "watch", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                     "--gateway-key", str(keys["gw_pub"]), "--count", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [status] = [x for x in lines if f"cmd-status/{DEV1}" in x or "op-9" in x]
    assert f"op-9: {DEV1}  failed  reason=refused  answer=busy" in status
    assert f"verified kid {gw.kid.hex()}" in status
    [rule] = [x for x in lines if " event " in x]
    assert "rule=parc-jourdan action=valve_open why=moisture 0.12 < 0.18 historical" in rule
    [forged] = [x for x in lines if DEV2 in x and "cmd-status" in x]
    assert "NOT VERIFIED" in forged and "acked" not in forged


def test_watch_device_filter_shows_only_that_device(
        mosquitto: Any, keys: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    gw = keys["gw"]

    async def publish() -> None:
        async with mqtt_client(mosquitto) as client:
            for dev in (DEV1, DEV2):
                await client.publish(f"{PREFIX}/cmd-status/{dev}",
                                     status_pack(gw, dev, "op-1", 0, "accepted"), qos=1,
                                     retain=True)

    asyncio.run(publish())
    assert cli.main(["hypervisor", "watch", "--broker", f"{mosquitto.host}:{mosquitto.port}",
                     "--gateway-key", str(keys["gw_pub"]), "--device", DEV2,
                     "--count", "1"]) == 0
    out = capsys.readouterr().out
    assert DEV2 in out and DEV1 not in out


# ------------------------------------------------------------------ the guide's worked examples


def guide_code() -> dict[str, Any]:
    """Run every ```python block of docs/hypervisor-guide.md in one namespace (they define
    functions; the tests below call them), so the guide cannot drift from what works."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {"__name__": "hypervisor_guide"}
    for block in blocks:
        exec(compile(block, str(GUIDE), "exec"), namespace)  # noqa: S102 - our own document
    return namespace


def test_guide_verifies_a_gateway_message_with_pycose(keys: dict[str, Any]) -> None:
    guide = guide_code()
    gw = keys["gw"]
    payload = status_pack(gw, DEV1, "op-1", 0, "accepted")
    gateway_keys = guide["load_gateway_keys"]([str(keys["gw_pub"])])
    records = guide["verify_message"](payload, gateway_keys)
    assert records[0][0] == "cmd" and records[0][3] == "op-1"
    forged = status_pack(SigningKey.generate(), DEV1, "op-1", 0, "accepted")
    with pytest.raises(ValueError):
        guide["verify_message"](forged, gateway_keys)
    seen: set[str] = set()
    assert guide["new_records"](records, seen) == records
    assert guide["new_records"](records, seen) == []


def test_guide_command_signed_with_pycose_is_what_the_gateway_accepts(
        mosquitto: Any, keys: dict[str, Any]) -> None:
    guide = guide_code()
    now = time.time()
    payload = guide["sign_command"](str(keys["operator"]), {
        "id": "guide-1", "action": "dim", "args": {"level": 40}, "iat": int(now),
        "exp": int(now) + 300, "target": DEV1})
    pub = load_public_key(f"{keys['operator']}.pub")
    verified = cose.verify1(payload, {key_id(pub): pub})  # the gateway's own verifier
    assert verified.content_type == 60 and verified.alg == -8
    assert cbor2.loads(verified.payload)["args"] == {"level": 40}

    stand_in = GatewayStandIn(mosquitto, keys["operator_pub"], acked_at_once(keys))
    gateway_keys = guide["load_gateway_keys"]([str(keys["gw_pub"])])

    async def scenario() -> list[tuple[str, str]]:
        async with stand_in.running():
            return await guide["send_and_follow"](mosquitto.host, mosquitto.port, PREFIX, DEV1,
                                                  "guide-1", payload, gateway_keys)

    assert asyncio.run(scenario()) == [("accepted", None), ("acked", "done")]
