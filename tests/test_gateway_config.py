"""The gateway's TOML configuration: every mistake is a ConfigError naming the file and the key."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import (
    ConfigError,
    GatewayConfig,
    default_config,
    load_config,
    parse_config,
    write_config,
)

GW = "b827ebfffe123456"


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = f"""
[gateway]
id = "{GW}"
data_dir = "/var/lib/cityedge"

[mqtt]
host = "broker.example.org"
"""


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


def without_source(config: GatewayConfig) -> GatewayConfig:
    return dataclasses.replace(config, source=None)


# ------------------------------------------------------------------------- good files


def test_default_config_written_by_init_loads_back_equal(tmp_path: Path) -> None:
    config = default_config(GW, tmp_path / "data")
    path = write_config(tmp_path / "gateway.toml", config)
    loaded = load_config(path)
    assert without_source(loaded) == config
    assert loaded.source == path
    assert loaded.mqtt.prefix == f"cityedge/v1/{GW}"
    assert loaded.store.path == tmp_path / "data" / "cityedge.db"
    assert loaded.gateway.signing_key == tmp_path / "data" / "signing-key.pem"
    assert (path.stat().st_mode & 0o777) == 0o644


def test_write_config_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    config = default_config(GW, tmp_path)
    path = write_config(tmp_path / "gateway.toml", config)
    with pytest.raises(ConfigError, match="already exists"):
        write_config(path, config)
    write_config(path, dataclasses.replace(config, forward=dataclasses.replace(
        config.forward, batch_size=64)), force=True)
    assert load_config(path).forward.batch_size == 64


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.gateway.id == GW
    assert config.mqtt.port == 1883
    assert config.mqtt.client_id == f"cityedge-{GW}"
    assert config.mqtt.protocol == "5"
    assert config.radio.frontend == "sim"
    assert config.radio.sync_word == 0x34
    assert config.radio.semtech_udp.port == 1700
    assert config.store.path == Path("/var/lib/cityedge/cityedge.db")
    assert config.forward.batch_size == 256


def test_uppercase_eui_is_normalised_and_names_are_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL.replace(GW, GW.upper())))
    assert config.gateway.id == GW
    config = load_config(write(tmp_path, MINIMAL.replace(GW, "place-de-la-mairie-1")))
    assert config.mqtt.prefix == "cityedge/v1/place-de-la-mairie-1"


def test_custom_prefix_is_formatted_with_the_gateway_id(tmp_path: Path) -> None:
    text = MINIMAL + 'prefix = "aix/{gateway_id}/lora"\n'
    assert load_config(write(tmp_path, text)).mqtt.prefix == f"aix/{GW}/lora"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ca.pem").write_text("not checked here")
    text = MINIMAL.replace('data_dir = "/var/lib/cityedge"', 'data_dir = "data"') + (
        '[mqtt.tls]\nenabled = true\nca_file = "ca.pem"\n'
    )
    config = load_config(write(tmp_path / "etc", text))
    assert config.gateway.data_dir == tmp_path / "etc" / "data"
    assert config.mqtt.tls.ca_file == tmp_path / "etc" / "ca.pem"
    assert config.mqtt.port == 8883  # TLS default port


def test_full_file_with_every_section(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key", "mqtt.password"):
        (tmp_path / name).write_text("x")
    text = f"""
[gateway]
id = "{GW}"
data_dir = "{tmp_path}"
signing_key = "keys/gw.pem"
log_level = "debug"

[mqtt]
host = "10.0.0.1"
port = 8884
client_id = "gw-{{gateway_id}}"
keepalive = 60
username = "gw"
password_file = "mqtt.password"
protocol = "3.1.1"

[mqtt.tls]
enabled = true
ca_file = "ca.pem"
cert_file = "client.pem"
key_file = "client.key"

[radio]
frontend = "sx127x"
frequency_hz = 868_300_000
spreading_factor = 9
bandwidth_khz = 125
sync_word = 0x12

[radio.sx127x]
spi_bus = 0
spi_device = 0
dio0_gpio = 4
reset_gpio = 17

[store]
max_records = 50000
max_age_days = 7

[forward]
batch_size = 128
backlog_historical_after_s = 120
"""
    config = load_config(write(tmp_path, text))
    assert config.gateway.signing_key == tmp_path / "keys" / "gw.pem"
    assert config.mqtt.client_id == f"gw-{GW}"
    assert config.mqtt.tls.cert_file == tmp_path / "client.pem"
    assert config.radio.sx127x.dio0_gpio == 4
    assert config.radio.sync_word == 0x12
    assert config.store.max_age_days == 7.0
    assert config.forward.backlog_historical_after_s == 120.0
    # and it survives a write/read round trip
    path = write_config(tmp_path / "copy.toml", config)
    assert without_source(load_config(path)) == without_source(config)


# ------------------------------------------------------------------------- mistakes


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: no such file; create one with `cityedge gateway init`"


def test_out_of_range_value_names_file_key_value_and_expectation(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "[radio]\nspreading_factor = 13\n")
    assert message == (
        f"{tmp_path / 'gateway.toml'}: radio.spreading_factor = 13: "
        "expected an integer from 7 to 12"
    )


def test_wrong_type_is_reported_with_the_toml_value(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + 'port = "1883"\n')
    assert message.endswith('mqtt.port = "1883": expected an integer from 1 to 65535')
    message = error_of(tmp_path, MINIMAL + "[radio]\nspreading_factor = true\n")
    assert "radio.spreading_factor = true: expected an integer" in message


def test_unknown_key_suggests_the_closest_known_one(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("host =", "hots ="))
    assert message.endswith("mqtt.hots: unknown key; did you mean 'mqtt.host'?")
    message = error_of(tmp_path, MINIMAL + "[radio.sx127x]\ndio_gpio = 4\n")
    assert "radio.sx127x.dio_gpio: unknown key; did you mean 'radio.sx127x.dio0_gpio'?" in message


def test_unknown_section_is_an_error_too(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "[forwad]\nbatch_size = 3\n")
    assert "forwad: unknown key; did you mean 'forward'?" in message
    message = error_of(tmp_path, MINIMAL + "[zzz]\n")
    assert ("zzz: unknown key; known keys here: commands, forward, gateway, groups, lorawan, "
            "mqtt, radio, rules, store") in message


def test_bad_enum_lists_the_choices(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + '[radio]\nfrontend = "lora"\n')
    assert message.endswith(
        'radio.frontend = "lora": expected one of "sim", "sx127x", "semtech-udp"'
    )
    message = error_of(tmp_path, MINIMAL + "[radio]\nbandwidth_khz = 200\n")
    assert message.endswith("radio.bandwidth_khz = 200: expected one of 125, 250, 500")


def test_missing_required_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace('host = "broker.example.org"', ""))
    assert "mqtt.host: missing; expected a host name or IP address" in message
    message = error_of(tmp_path, MINIMAL.replace(f'id = "{GW}"', ""))
    assert "gateway.id: missing; expected a gateway EUI-64" in message


def test_bad_gateway_id(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace(GW, "Gateway One"))
    assert 'gateway.id = "Gateway One": expected a gateway EUI-64 (16 hex digits) or a name' \
        in message


def test_tls_file_that_does_not_exist_names_the_dotted_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + '[mqtt.tls]\nenabled = true\nca_file = "/no/ca.pem"\n')
    assert message.endswith(
        'mqtt.tls.ca_file = "/no/ca.pem": expected the path of an existing, readable file'
    )


def test_client_certificate_without_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("x")
    message = error_of(
        tmp_path, MINIMAL + '[mqtt.tls]\nenabled = true\ncert_file = "client.pem"\n'
    )
    assert "mqtt.tls.key_file: missing" in message and "mutual TLS" in message


def test_tls_options_while_tls_is_off_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    message = error_of(tmp_path, MINIMAL + '[mqtt.tls]\nca_file = "ca.pem"\n')
    assert "mqtt.tls.enabled = false" in message


def test_prefix_with_wildcards_or_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    assert "mqtt.prefix" in error_of(tmp_path, MINIMAL + 'prefix = "city/#"\n')
    assert "mqtt.prefix" in error_of(tmp_path, MINIMAL + 'prefix = "city/{gateway}"\n')
    assert "mqtt.prefix" in error_of(tmp_path, MINIMAL + 'prefix = "city/{gateway_id}/"\n')


def test_frequency_outside_eu868_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "[radio]\nfrequency_hz = 915000000\n")
    assert "radio.frequency_hz = 915000000: expected an integer from 863000000" in message


def test_toml_syntax_error_gives_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nid = "x"\nlog_level = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:3:13: TOML syntax error: ")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'[gateway]\nid = "\xff"\n')
    with pytest.raises(ConfigError, match=r"gateway.toml:2: not UTF-8"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_default_config_refuses_a_bad_gateway_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="gateway id"):
        default_config("not an id!", tmp_path)


# ------------------------------------------------------------------------- fuzzing

KEYS = ["gateway", "mqtt", "radio", "store", "forward", "tls", "sx127x", "semtech_udp", "id",
        "host", "port", "prefix", "spreading_factor", "frontend", "bandwidth_khz", "path",
        "ca_file", "batch_size", "enabled", "data_dir", "max_age_days", "sync_word", "x"]
scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.text(max_size=20)
    | st.sampled_from([GW, "sim", "sx127x", "5", "3.1.1", "cityedge/v1/{gateway_id}", "{", "/"])
)
toml_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(
    st.sampled_from(KEYS), st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=6),
    max_size=6,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_structured_documents_raise_only_config_error(doc: dict) -> None:
    try:
        parse_config(doc, source="fuzz.toml", base_dir=Path("/nonexistent"))
    except ConfigError:
        pass


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.text(alphabet=string.printable + "é\x00[]=\"'{}", max_size=300),
    documents.map(lambda d: tomli_w.dumps(d) if _dumpable(d) else ""),
    st.binary(max_size=200),
))
def test_fuzz_toml_text_raises_only_config_error(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / "fuzz.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError:
        pass


def _dumpable(doc: dict) -> bool:
    try:
        tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return False
    return True


# ------------------------------------------------------------------------- [lorawan], semtech_udp


def test_lorawan_section_is_optional_and_defaults_to_the_regional_parameters(
        tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    lw = config.lorawan
    assert (lw.net_id, lw.rx1_dr_offset, lw.rx2_dr, lw.rx_delay_s) == (0, 0, 0, 1)
    assert lw.cflist_mhz is None and lw.cflist_hz() is None
    assert lw.dev_nonce_mode == "increasing"
    assert config.radio.semtech_udp.dedup_window_ms == 200
    assert config.radio.semtech_udp.gateways == ()


def test_lorawan_and_semtech_udp_keys_are_read_and_written_back(tmp_path: Path) -> None:
    text = MINIMAL + """
[radio]
frontend = "semtech-udp"

[radio.semtech_udp]
dedup_window_ms = 350
gateways = ["AA555A0000000001", "aa555a0000000002"]

[lorawan]
net_id = 0x000013
rx1_dr_offset = 2
rx2_dr = 3
rx_delay_s = 5
cflist_mhz = [867.1, 867.3, 868.85]
dev_nonce_mode = "unique"
"""
    config = load_config(write(tmp_path, text))
    assert config.radio.semtech_udp.dedup_window_ms == 350
    assert config.radio.semtech_udp.gateways == ("aa555a0000000001", "aa555a0000000002")
    lw = config.lorawan
    assert (lw.net_id, lw.rx1_dr_offset, lw.rx2_dr, lw.rx_delay_s) == (0x13, 2, 3, 5)
    assert lw.cflist_hz() == (867_100_000, 867_300_000, 868_850_000)
    assert lw.dev_nonce_mode == "unique"
    again = load_config(write_config(tmp_path / "again.toml", config))
    assert without_source(again) == without_source(config)


@pytest.mark.parametrize(("section", "line", "expected"), [
    ("lorawan", "net_id = 16777216", "lorawan.net_id = 16777216: expected an integer from 0 to"),
    ("lorawan", "net_id = true", "lorawan.net_id = true: expected"),
    ("lorawan", "rx1_dr_offset = 6", "lorawan.rx1_dr_offset = 6: expected an integer from 0 to 5"),
    ("lorawan", "rx2_dr = 7", "lorawan.rx2_dr = 7: expected an integer from 0 to 6"),
    ("lorawan", "rx_delay_s = 0", "lorawan.rx_delay_s = 0: expected an integer from 1 to 15"),
    ("lorawan", "cflist_mhz = [867.1, 867.3, 867.5, 867.7, 867.9, 868.1]",
     "lorawan.cflist_mhz = [...] (an array): expected an array of up to 5 frequencies"),
    ("lorawan", "cflist_mhz = [915.0]", "lorawan.cflist_mhz = [...] (an array): expected"),
    ("lorawan", 'cflist_mhz = ["867.1"]', "lorawan.cflist_mhz = [...] (an array): expected"),
    ("lorawan", "cflist_mhz = [867.10001]", "lorawan.cflist_mhz = [...] (an array): expected"),
    ("lorawan", "cflist_mhz = 867.1", "lorawan.cflist_mhz = 867.1: expected an array"),
    ("lorawan", 'dev_nonce_mode = "random"',
     'lorawan.dev_nonce_mode = "random": expected one of "increasing", "unique"'),
    ("lorawan", "rx_dealy_s = 2",
     "lorawan.rx_dealy_s: unknown key; did you mean 'lorawan.rx_delay_s'?"),
    ("radio.semtech_udp", "dedup_window_ms = -1",
     "radio.semtech_udp.dedup_window_ms = -1: expected an integer number of milliseconds"),
    ("radio.semtech_udp", "dedup_window_ms = 0.5",
     "radio.semtech_udp.dedup_window_ms = 0.5: expected"),
    ("radio.semtech_udp", 'gateways = ["aa555a00000001"]',
     "radio.semtech_udp.gateways = [...] (an array): expected an array of distinct gateway EUIs"),
    ("radio.semtech_udp", 'gateways = ["aa555a0000000001", "AA555A0000000001"]',
     "radio.semtech_udp.gateways = [...] (an array): expected an array of distinct"),
    ("radio.semtech_udp", 'gateways = "aa555a0000000001"',
     'radio.semtech_udp.gateways = "aa555a0000000001": expected an array'),
])
def test_bad_lorawan_and_semtech_udp_values_name_the_key(
        tmp_path: Path, section: str, line: str, expected: str) -> None:
    message = error_of(tmp_path, MINIMAL + f"[{section}]\n{line}\n")
    assert expected in message, message


def test_the_agent_passes_the_lorawan_section_to_the_join_settings(tmp_path: Path) -> None:
    from gateway.agent import Agent
    from gateway.keys import SigningKey
    from gateway.lorawan import COMMON_EU868_CFLIST_HZ

    data = tmp_path / "data"
    key = SigningKey.generate()
    text = MINIMAL.replace("/var/lib/cityedge", str(data)) + """
[lorawan]
net_id = 0x000013
rx1_dr_offset = 1
rx2_dr = 3
rx_delay_s = 2
cflist_mhz = [868.7, 868.9]
"""
    agent = Agent(load_config(write(tmp_path, text)), frontend=object(), signing_key=key)
    try:
        js = agent.network.join_settings
        assert (js.net_id, js.rx1_dr_offset, js.rx2_dr, js.rx_delay_s) == (0x13, 1, 3, 2)
        assert js.cflist_hz == (868_700_000, 868_900_000)
    finally:
        agent.store.close()
    # without cflist_mhz, a semtech-udp gateway announces the common EU868 channels
    text = MINIMAL.replace("/var/lib/cityedge", str(data)) + '[radio]\nfrontend = "semtech-udp"\n'
    agent = Agent(load_config(write(tmp_path, text)), frontend=object(), signing_key=key)
    try:
        assert agent.network.join_settings.cflist_hz == tuple(COMMON_EU868_CFLIST_HZ)
        assert agent.network.join_settings.net_id == 0
    finally:
        agent.store.close()
