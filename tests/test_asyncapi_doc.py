"""docs/asyncapi.yaml: a valid AsyncAPI 3.0.0 document that says what the code does.

Validated by the official parser (@asyncapi/parser, from package.json, run by Node.js), every
message example and every message our code builds checked against its payload schema with ajv;
the structure and the vocabularies (actions and their arguments, rejection reasons, node
answers) cross-checked with PyYAML against the Python modules that define them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest
import yaml

from cityedge.hypervisor.command import ACTION_ARGS, REQUIRED_ARGS, build_command
from gateway.commands.actions import ACTIONS
from gateway.commands.model import REJECTION_REASONS, CommandRow
from gateway.commands.status import rejection_record, status_record
from gateway.config import CommandsConfig
from gateway.uplink import senml
from protocol.payload.fields import RESULTS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "asyncapi.yaml"
DEV = "70b3d57ed0000001"

# Parse with the official parser, then check each message's examples and the extra instances
# given on stdin ({message id: [payload, ...]}) against the message's payload schema.
VALIDATE_JS = """
import { Parser, fromFile } from '@asyncapi/parser';
import Ajv from 'ajv';
import { readFileSync } from 'node:fs';
const extra = JSON.parse(readFileSync(0, 'utf8'));
const { document, diagnostics } = await fromFile(new Parser(), process.argv[1]).parse();
const problems = diagnostics.filter(d => d.severity <= 1)
  .map(d => `${d.code} at ${d.path.join('.')}: ${d.message}`);
const checked = [];
if (document) {
  const ajv = new Ajv({ strict: false, allErrors: true });
  for (const message of document.allMessages()) {
    const validate = ajv.compile(message.payload().json());
    const named = message.examples().all().map(e => [`example ${e.name()}`, e.payload()]);
    const given = (extra[message.id()] || []).map((p, i) => [`instance ${i}`, p]);
    for (const [name, payload] of [...named, ...given]) {
      checked.push(`${message.id()}: ${name}`);
      if (!validate(payload)) {
        problems.push(`${message.id()} ${name}: ${ajv.errorsText(validate.errors)}`);
      }
    }
  }
}
console.log(JSON.stringify({ parsed: document !== undefined, problems, checked }));
"""


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return yaml.safe_load(DOC.read_text())


def labelled(pack: bytes) -> list[dict[str, Any]]:
    """A SenML CBOR pack as the document's JSON view: integer labels as decimal strings."""
    return [{str(k): v for k, v in rec.items()} for rec in cbor2.loads(pack)]


SAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "dim": {"level": 40, "ramp_s": 5, "for_min": 60}, "switch": {"on": True, "for_min": 30},
    "calendar": {"points": [{"ref": "dusk", "minutes": -15, "level": 100}]},
    "valve_open": {"seconds": 600}, "valve_close": {}, "set_interval": {"seconds": 900},
    "reboot": {}, "rules_pause": {"hours": 24}, "rules_resume": {},
}


def code_instances() -> dict[str, list[Any]]:
    """What our code puts on the wire, per message id, for the schemas to judge."""
    commands = [build_command(action, SAMPLE_ARGS[action], DEV, now=1.7e9)
                for action in ACTION_ARGS]
    row = CommandRow(cmd_id="op-1", kid="00", key_name="control-centre", dev_eui=DEV,
                     action="dim", args={"level": 40}, issued_at=1.7e9, expires_at=1.7e9 + 300,
                     group="rue", status="failed", status_n=3, reason="refused",
                     answer="busy", fcnt_down=12, attempts=2)
    statuses = [status_record("gw", row, 1.7e9, detail="node busy"),
                rejection_record("gw", DEV, "not_allowed", "no", 1.7e9, cmd_id="op-2",
                                 action="dim", key_name="police"),
                rejection_record("gw", "Bad Target", "unknown_key", "who?", 1.7e9,
                                 cmd_id=None, action=None, key_name=None)]
    group = build_command("dim", {"level": 10}, "rue-de-la-republique", kind="cmd-group",
                          now=1.7e9)
    return {"command": commands, "groupCommand": [group],
            "commandStatus": [labelled(senml.encode_pack(r.records)) for r in statuses]}


def test_the_official_parser_accepts_the_document_and_every_payload_fits_its_schema() -> None:
    node = shutil.which("node")
    assert node, "Node.js is missing: `make deps` installs it"
    assert (ROOT / "node_modules" / "@asyncapi" / "parser").is_dir(), \
        "@asyncapi/parser is missing: run `make deps` (npm ci)"
    result = subprocess.run(
        [node, "--input-type=module", "-e", VALIDATE_JS, str(DOC)], check=False, cwd=ROOT,
        input=json.dumps(code_instances()), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parsed"], report["problems"]
    assert report["problems"] == []
    checked = "\n".join(report["checked"])
    assert "command: example dim" in checked
    assert f"command: instance {len(ACTION_ARGS) - 1}" in checked
    assert "commandStatus: instance 2" in checked


def test_the_status_examples_rid_is_the_one_the_gateway_makes(doc: dict[str, Any]) -> None:
    example = doc["components"]["messages"]["commandStatus"]["examples"][0]["payload"]
    rid = example[0]["rid"]
    gateway_id, dev_eui, _cmd, kid, cmd_id, n = rid.split(":")
    values = {rec["0"]: rec.get("3", rec.get("2")) for rec in example}
    row = CommandRow(cmd_id=values["cmd"], kid=kid, key_name=values["key"], dev_eui=dev_eui,
                     action=values["action"], args={}, issued_at=0.0, expires_at=0.0,
                     status=values["status"], status_n=int(n))
    assert status_record(gateway_id, row, 0.0).rid == rid
    assert cmd_id == values["cmd"] and len(bytes.fromhex(kid)) == 8
    assert "`{gateway_id}:{dev_eui}:cmd:{kid}:{id}:{n}`" in " ".join(
        doc["components"]["messages"]["commandStatus"]["description"].split())


def test_every_channel_declares_exactly_the_parameters_of_its_address(
        doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    addresses = {}
    for name, channel in doc["channels"].items():
        in_address = set(re.findall(r"{(\w+)}", channel["address"]))
        assert in_address == set(channel.get("parameters", {})), name
        addresses[channel["address"].removeprefix("cityedge/v1/{gateway_id}/")] = name
    assert set(addresses) == {"status", "up/{dev_eui}", "event/{dev_eui}", "cmd/{dev_eui}",
                              "cmd-group/{group}", "cmd-status/{dev_eui}"}
    assert {s["protocol"] for s in doc["servers"].values()} == {"mqtt", "secure-mqtt"}


def test_operations_are_from_the_hypervisors_side(doc: dict[str, Any]) -> None:
    actions = {op["channel"]["$ref"].rsplit("/", 1)[-1]: op["action"]
               for op in doc["operations"].values()}
    assert actions == {"status": "receive", "up": "receive", "event": "receive",
                       "cmd": "send", "cmdGroup": "send", "cmdStatus": "receive"}
    for op in doc["operations"].values():
        assert op["bindings"]["mqtt"]["qos"] == 1


def test_every_message_has_a_content_type_a_payload_schema_and_an_example(
        doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        assert message["contentType"].startswith("application/cose"), name
        assert "COSE_Sign1" in message["description"], name
        assert message["payload"]["$ref"].startswith("#/components/schemas/"), name
        assert message["examples"], name


def test_vocabularies_match_the_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert tuple(schemas["RejectionReason"]["enum"]) == REJECTION_REASONS
    assert schemas["NodeAnswer"]["enum"] == list(RESULTS)
    assert schemas["Command"]["properties"]["action"]["enum"] == list(ACTION_ARGS)
    arg_schemas = {}
    for ref in schemas["Command"]["oneOf"]:
        sub = schemas[ref["$ref"].rsplit("/", 1)[-1]]
        action = sub["properties"]["action"]
        for name in action.get("enum", [action.get("const")]):
            arg_schemas[name] = set(sub["properties"]["args"].get("properties", {}))
    assert arg_schemas == {a: set(args) for a, args in ACTION_ARGS.items()}


def test_actions_arguments_and_bounds_match_the_gateways_checks(doc: dict[str, Any]) -> None:
    """The CLI's argument types, the document's bounds and the gateway's intake agree."""
    kinds = {"int": int, "bool": bool, "points": list}
    defaults = CommandsConfig()
    schemas = doc["components"]["schemas"]
    documented: dict[str, dict[str, Any]] = {}
    for ref in schemas["Command"]["oneOf"]:
        sub = schemas[ref["$ref"].rsplit("/", 1)[-1]]
        action = sub["properties"]["action"]
        for name in action.get("enum", [action.get("const")]):
            documented[name] = sub["properties"]["args"]
    assert set(ACTIONS) == set(ACTION_ARGS) == set(documented)
    for name, action in ACTIONS.items():
        assert ACTION_ARGS[name] == {a.name: kinds[a.kind] for a in action.args}, name
        required = {a.name for a in action.args if a.required}
        assert set(REQUIRED_ARGS[name]) == required, name
        assert set(documented[name].get("required", [])) == required, name
        for arg in action.args:
            if arg.kind != "int":
                continue
            hi = arg.hi if isinstance(arg.hi, int) else arg.hi(defaults)
            bounds = documented[name]["properties"][arg.name]
            assert (bounds["minimum"], bounds["maximum"]) == (arg.lo, hi), (name, arg.name)
