"""[commands], [[commands.keys]], [groups] and [[rules.watering]]: parsed into frozen values,
written back unchanged, and every mistake a ConfigError naming the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import (
    CommandsConfig,
    ConfigError,
    RulesConfig,
    TrustedKey,
    WateringRule,
    config_to_toml,
    load_config,
    write_config,
)
from gateway.keys import SigningKey

GW = "b827ebfffe123456"
E1, E2, E3 = "70b3d57ed0000001", "70B3D57ED0000002", "70b3d57ed0000003"

BASE = f"""
[gateway]
id = "{GW}"
data_dir = "data"

[mqtt]
host = "localhost"
"""

FULL = BASE + f"""
[commands]
max_valve_open_s = 1200
max_lifetime_s = 3600
clock_skew_s = 30
device_rate_per_minute = 4
answer_timeout_s = 600

[[commands.keys]]
name = "control-centre"
public_key = "keys/control-centre.pub"
actions = ["*"]
devices = ["*"]
rate_per_minute = 120

[[commands.keys]]
name = "parks"
public_key = "keys/parks.pub"
actions = ["valve_open", "valve_close", "rules_pause", "rules_resume"]
devices = ["group:parc-jourdan", "role:soil", "{E2}"]

[groups]
"rue-de-la-republique" = ["{E1}", "{E2}"]
"parc-jourdan" = ["{E3}"]

[[rules.watering]]
name = "parc-jourdan"
devices = ["group:parc-jourdan"]
moisture_below = 0.18
readings = 2
hours = "22:30-06:00"
timezone = "Europe/Paris"
open_s = 600
max_daily_s = 1800
max_daily_litres = 250.5
rain_skip_h = 12
"""


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("control-centre", "parks", "other"):
        (keys / f"{name}.pub").write_bytes(SigningKey.generate().public_pem())
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def error_of(directory: Path, text: str) -> str:
    path = write(directory, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_the_documented_example_parses(keydir: Path) -> None:
    config = load_config(write(keydir, FULL))
    assert config.commands == CommandsConfig(
        max_valve_open_s=1200, max_lifetime_s=3600, clock_skew_s=30, device_rate_per_minute=4,
        answer_timeout_s=600, keys=(
            TrustedKey("control-centre", keydir / "keys/control-centre.pub", ("*",), ("*",), 120),
            TrustedKey("parks", keydir / "keys/parks.pub",
                       ("valve_open", "valve_close", "rules_pause", "rules_resume"),
                       ("group:parc-jourdan", "role:soil", E2.lower()), 120),
        ))
    assert config.groups == {"rue-de-la-republique": (E1, E2.lower()), "parc-jourdan": (E3,)}
    assert config.rules == RulesConfig((WateringRule(
        "parc-jourdan", ("group:parc-jourdan",), 0.18, 2, 22 * 60 + 30, 6 * 60, "Europe/Paris",
        600, 1800, 250.5, 12.0),))


def test_defaults_trust_no_key_and_define_no_group_or_rule(keydir: Path) -> None:
    config = load_config(write(keydir, BASE))
    assert config.commands == CommandsConfig()
    assert (config.commands.max_valve_open_s, config.commands.max_lifetime_s,
            config.commands.clock_skew_s, config.commands.device_rate_per_minute,
            config.commands.answer_timeout_s) == (1800, 86_400, 60, 6, 3600)
    assert config.commands.keys == () and config.groups == {} and config.rules.watering == ()


def test_config_to_toml_round_trips_the_new_sections(keydir: Path) -> None:
    config = load_config(write(keydir, FULL))
    path = write_config(keydir / "again.toml", config)
    assert dataclasses.replace(load_config(path), source=None) == dataclasses.replace(
        config, source=None)
    assert '"22:30-06:00"' in config_to_toml(config)


def test_a_default_config_writes_no_empty_key_or_rule_tables(keydir: Path) -> None:
    text = config_to_toml(load_config(write(keydir, BASE)))
    assert "[commands]" in text and "keys" not in text and "[groups]" not in text
    assert "watering" not in text


@pytest.mark.parametrize("hours,start,end", [
    ("00:00-24:00", 0, 1440), ("05:00-09:00", 300, 540), ("23:59-00:01", 1439, 1),
])
def test_hours_windows(keydir: Path, hours: str, start: int, end: int) -> None:
    text = FULL.replace('"22:30-06:00"', f'"{hours}"')
    rule = load_config(write(keydir, text)).rules.watering[0]
    assert (rule.hours_start_min, rule.hours_end_min) == (start, end)
    assert f'"{hours}"' in config_to_toml(load_config(write(keydir, text)))


@pytest.mark.parametrize(("change", "expected"), [
    (("max_valve_open_s = 1200", "max_valve_open_s = 0"),
     "commands.max_valve_open_s = 0: expected an integer number of seconds from 1 to 65535"),
    (("clock_skew_s = 30", "clock_skew_s = true"), "commands.clock_skew_s = true: expected"),
    (("answer_timeout_s = 600", "answer_timout_s = 600"),
     "commands.answer_timout_s: unknown key; did you mean 'commands.answer_timeout_s'?"),
    (('public_key = "keys/parks.pub"', 'public_key = "keys/missing.pub"'),
     ('commands.keys[1].public_key = "keys/missing.pub": expected the path of a readable PEM '
     "Ed25519 public key")),
    (('public_key = "keys/parks.pub"', 'public_key = "gateway.toml"'),
     'commands.keys[1].public_key = "gateway.toml": expected'),
    (('name = "parks"', 'name = "control-centre"'),
     'commands.keys[1].name = "control-centre": expected a name no other'),
    (('name = "parks"', 'name = "gateway"'), 'commands.keys[1].name = "gateway": expected'),
    (('actions = ["*"]', 'actions = ["fly"]'),
     ('commands.keys[0].actions = [...] (an array): expected a non-empty array of distinct '
     'action names or "*"')),
    (('actions = ["*"]', "actions = []"), "commands.keys[0].actions"),
    (('devices = ["*"]', 'devices = ["group:nowhere"]'),
     ("commands.keys[0].devices = [...] (an array): expected a non-empty array of distinct "
     "device selectors")),
    (('devices = ["*"]', 'devices = ["role:bakery"]'), "roles: air, lighting, noise, soil"),
    (('devices = ["*"]', 'devices = ["*", "*"]'), "commands.keys[0].devices"),
    (('devices = ["*"]', "devices = [7]"), "commands.keys[0].devices"),
    (('name = "control-centre"\n', ""), "commands.keys[0].name: missing"),
    (("rate_per_minute = 120", "rate_per_minut = 120"),
     "commands.keys[0].rate_per_minut: unknown key; did you mean"),
    (('"parc-jourdan" = ["70b3d57ed0000003"]', '"Parc Jourdan" = ["70b3d57ed0000003"]'),
     "groups.Parc Jourdan: a group name is 1 to 64 characters"),
    (('"parc-jourdan" = ["70b3d57ed0000003"]', '"parc-jourdan" = []'),
     "groups.parc-jourdan = [...] (an array): expected a non-empty array of distinct DevEUIs"),
    (('"parc-jourdan" = ["70b3d57ed0000003"]', '"parc-jourdan" = ["nope"]'),
     "groups.parc-jourdan"),
    (('hours = "22:30-06:00"', 'hours = "25:00-06:00"'),
     'rules.watering[0].hours = "25:00-06:00": expected a local time window "HH:MM-HH:MM"'),
    (('hours = "22:30-06:00"', 'hours = "06:00-06:00"'), "rules.watering[0].hours"),
    (('hours = "22:30-06:00"', 'hours = "6-9"'), "rules.watering[0].hours"),
    (('timezone = "Europe/Paris"', 'timezone = "Mars/Olympus"'),
     'rules.watering[0].timezone = "Mars/Olympus": expected a time zone name'),
    (("open_s = 600", "open_s = 1201"),
     ("rules.watering[0].open_s = 1201: expected an integer number of seconds from 1 to 1200 "
     "(commands.max_valve_open_s)")),
    (("max_daily_s = 1800", "max_daily_s = 599"),
     "rules.watering[0].max_daily_s = 599: expected an integer number of seconds from 600"),
    (("moisture_below = 0.18", "moisture_below = 18"),
     "rules.watering[0].moisture_below = 18: expected a volumetric ratio from 0 to 1"),
    (("max_daily_litres = 250.5", "max_daily_litres = -1"), "rules.watering[0].max_daily_litres"),
    (('devices = ["group:parc-jourdan"]\nmoisture', 'devices = ["group:parc"]\nmoisture'),
     "rules.watering[0].devices"),
    (('name = "parc-jourdan"\n', ""), "rules.watering[0].name: missing"),
    (("rain_skip_h = 12", "rain_skip = 12"), "rules.watering[0].rain_skip: unknown key"),
], ids=lambda v: v if isinstance(v, str) else v[1])
def test_every_mistake_names_the_file_and_the_key(keydir: Path, change: tuple[str, str],
                                                  expected: str) -> None:
    old, new = change
    assert old in FULL
    message = error_of(keydir, FULL.replace(old, new, 1))
    assert expected in message, message


def test_the_same_public_key_twice_is_refused(keydir: Path) -> None:
    message = error_of(keydir, FULL.replace('"keys/parks.pub"', '"keys/control-centre.pub"'))
    assert "commands.keys[1].public_key" in message
    assert "a key not already trusted as 'control-centre'" in message


def test_two_rules_with_one_name_are_refused(keydir: Path) -> None:
    rule = FULL[FULL.index("[[rules.watering]]"):]
    message = error_of(keydir, FULL + rule)
    assert 'rules.watering[1].name = "parc-jourdan": expected a name no other' in message


@pytest.mark.parametrize(("text", "expected"), [
    ("[commands]\nkeys = 3\n", "commands.keys = 3: expected an array of tables [[commands.keys]]"),
    ("[rules]\nwatering = [1]\n", ("rules.watering = [...] (an array): expected an array of "
                                  "tables [[rules.watering]]")),
    ("[rules]\nirrigation = []\n", "rules.irrigation: unknown key"),
    ("groups = 3\n", "groups = 3: expected a table [groups]"),
])
def test_wrong_shapes(keydir: Path, text: str, expected: str) -> None:
    # top-level keys must come before the first table
    message = error_of(keydir, text + BASE if text.startswith("groups") else BASE + text)
    assert expected in message, message
