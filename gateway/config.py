"""The gateway's configuration: one TOML file, parsed at the edge into frozen, validated values.

``load_config`` checks every key before the agent starts and raises ``ConfigError`` with the
file, the dotted key and what was expected, e.g.::

    /etc/cityedge/gateway.toml: radio.spreading_factor = 13: expected an integer from 7 to 12

Unknown keys are errors too (with a "did you mean" from difflib), so a typo never silently falls
back to a default. Relative paths are taken relative to the directory of the config file, so a
config directory can be moved as a whole. ``default_config``/``write_config`` serve
``cityedge gateway init``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import tomli_w

from gateway.commands.actions import ACTIONS, ALL_ROLES
from gateway.keys import KeyFileError, key_id, load_public_key

__all__ = [
    "DEV_NONCE_MODES",
    "EVENT_LOOPS",
    "FRONTENDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MQTT_PROTOCOLS",
    "CommandsConfig",
    "ConfigError",
    "ForwardConfig",
    "GatewayConfig",
    "GatewaySection",
    "LorawanConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "RadioConfig",
    "RulesConfig",
    "SemtechUdpConfig",
    "StoreConfig",
    "Sx127xConfig",
    "TrustedKey",
    "WateringRule",
    "default_config",
    "load_config",
    "write_config",
]

T = TypeVar("T")

FRONTENDS: Final = ("sim", "sx127x", "semtech-udp")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("logfmt", "json")
EVENT_LOOPS: Final = ("asyncio", "uvloop", "auto")
MQTT_PROTOCOLS: Final = ("5", "3.1.1")
REGIONS: Final = ("EU868",)
DEV_NONCE_MODES: Final = ("increasing", "unique")
BANDWIDTHS_KHZ: Final = (125, 250, 500)
# RP002 EU863-870: the band a gateway in this region may listen on.
EU868_MIN_HZ: Final = 863_000_000
EU868_MAX_HZ: Final = 870_000_000
DEFAULT_PREFIX: Final = "cityedge/v1/{gateway_id}"
DEFAULT_CLIENT_ID: Final = "cityedge-{gateway_id}"
DEFAULT_DATA_DIR: Final = Path("/var/lib/cityedge")

_EUI64 = re.compile(r"[0-9a-fA-F]{16}")
_NAME = re.compile(r"[a-z0-9-]{1,32}")
# Group, rule and key names: safe as an MQTT topic level, in a SenML name and in a record id.
_LABEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
RESERVED_KEY_NAMES: Final = ("gateway",)  # the gateway's own commands (calendar re-sends)


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; the message says where and why."""


# --------------------------------------------------------------------------------------------
# The sections


@dataclass(frozen=True)
class GatewaySection:
    """``[gateway]``: who this gateway is and where it keeps its files."""

    id: str
    data_dir: Path = DEFAULT_DATA_DIR
    signing_key: Path = DEFAULT_DATA_DIR / "signing-key.pem"
    log_level: str = "info"
    log_format: str = "logfmt"  # or "json": one JSON object per line
    event_loop: str = "asyncio"  # or "uvloop", or "auto" (uvloop when installed)


@dataclass(frozen=True)
class MqttTlsConfig:
    """``[mqtt.tls]``: TLS to the broker; cert_file + key_file give mutual TLS.

    ``insecure = true`` skips only the check of the broker's host name against its certificate
    (the chain is still verified against ``ca_file`` or the system's CAs).
    """

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]``: the broker, the identity used there, and the topic prefix (already formatted)."""

    host: str = "localhost"
    port: int = 1883
    prefix: str = "cityedge/v1/gateway"
    client_id: str = "cityedge-gateway"
    keepalive: int = 30
    username: str | None = None
    password_file: Path | None = None
    protocol: str = "5"
    tls: MqttTlsConfig = field(default_factory=MqttTlsConfig)


@dataclass(frozen=True)
class Sx127xConfig:
    """``[radio.sx127x]``: an SX1276 on the Pi's SPI bus (defaults: Adafruit RFM95 LoRa bonnet)."""

    spi_bus: int = 0
    spi_device: int = 1
    dio0_gpio: int = 22
    reset_gpio: int = 25


@dataclass(frozen=True)
class SemtechUdpConfig:
    """``[radio.semtech_udp]``: where to listen for a Semtech UDP packet forwarder (protocol v2)."""

    bind: str = "0.0.0.0"
    port: int = 1700
    dedup_window_ms: int = 200  # how long copies of one uplink from several forwarders are merged
    gateways: tuple[str, ...] = ()  # forwarder EUIs allowed (lower-case hex); empty: any


@dataclass(frozen=True)
class RadioConfig:
    """``[radio]``: which front end and, for single-channel ones, which channel to listen on."""

    frontend: str = "sim"
    region: str = "EU868"
    frequency_hz: int = 868_100_000
    spreading_factor: int = 7
    bandwidth_khz: int = 125
    sync_word: int = 0x34  # LoRaWAN public network
    sx127x: Sx127xConfig = field(default_factory=Sx127xConfig)
    semtech_udp: SemtechUdpConfig = field(default_factory=SemtechUdpConfig)


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: the durable buffer and how much routine telemetry it may keep."""

    path: Path = DEFAULT_DATA_DIR / "cityedge.db"
    max_records: int = 1_000_000
    max_age_days: float = 30.0


@dataclass(frozen=True)
class ForwardConfig:
    """``[forward]``: publishing window and when a record counts as backlog ("historical")."""

    batch_size: int = 256
    backlog_historical_after_s: float = 60.0


@dataclass(frozen=True)
class LorawanConfig:
    """``[lorawan]``: what join-accepts announce; ``cflist_mhz`` None means the front end's
    default (the 5 common EU868 extra channels for semtech-udp, none otherwise)."""

    net_id: int = 0
    rx1_dr_offset: int = 0
    rx2_dr: int = 0
    rx_delay_s: int = 1
    cflist_mhz: tuple[float, ...] | None = None
    dev_nonce_mode: str = "increasing"  # for nodes registered without one

    def cflist_hz(self) -> tuple[int, ...] | None:
        """The CFList frequencies in Hz, or None for the front end's default."""
        if self.cflist_mhz is None:
            return None
        return tuple(round(f * 1e6) for f in self.cflist_mhz)


@dataclass(frozen=True)
class TrustedKey:
    """``[[commands.keys]]``: a hypervisor key the gateway takes commands from, and its authority.

    ``actions``: action names or "*"; ``devices``: selectors ("*", a DevEUI, "group:<name>",
    "role:<role>"). The kid is derived from the public key (``gateway.keys.key_id``).
    """

    name: str
    public_key: Path
    actions: tuple[str, ...]
    devices: tuple[str, ...]
    rate_per_minute: int = 120


@dataclass(frozen=True)
class CommandsConfig:
    """``[commands]``: the bounds and limits every command is checked against, and the keys."""

    max_valve_open_s: int = 1800
    max_lifetime_s: int = 86_400
    clock_skew_s: int = 60
    device_rate_per_minute: int = 6
    answer_timeout_s: int = 3600
    keys: tuple[TrustedKey, ...] = ()


@dataclass(frozen=True)
class WateringRule:
    """``[[rules.watering]]``: open valves when soil stays dry within allowed local hours.

    ``hours_start_min``/``hours_end_min``: minutes after local midnight (the window wraps
    midnight when end < start; end 1440 is "24:00").
    """

    name: str
    devices: tuple[str, ...]
    moisture_below: float
    readings: int
    hours_start_min: int
    hours_end_min: int
    timezone: str
    open_s: int
    max_daily_s: int
    max_daily_litres: float = 0.0
    rain_skip_h: float = 12.0


@dataclass(frozen=True)
class RulesConfig:
    """``[rules]``: the gateway-side rules that keep running without the hypervisor."""

    watering: tuple[WateringRule, ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration; ``source`` is the file it came from, if any."""

    gateway: GatewaySection
    mqtt: MqttConfig
    radio: RadioConfig = field(default_factory=RadioConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    forward: ForwardConfig = field(default_factory=ForwardConfig)
    source: Path | None = None
    lorawan: LorawanConfig = field(default_factory=LorawanConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> DevEUIs
    rules: RulesConfig = field(default_factory=RulesConfig)


# --------------------------------------------------------------------------------------------
# Reading one table with checks


_MISSING: Final = object()


def _show(value: Any) -> str:
    """A value as it would read in TOML, shortened so an error line stays one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, dict):
        text = "{...} (a table)"
    elif isinstance(value, list):
        text = "[...] (an array)"
    else:
        text = repr(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 60 else text[:57] + "..."


class _Table:
    """One TOML table being read: remembers which keys were used so leftovers can be reported."""

    def __init__(self, file: str, dotted: str, data: Mapping[str, Any]) -> None:
        self.file = file
        self.dotted = dotted
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.dotted}.{name}" if self.dotted else name

    def fail(self, name: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(name)} = {_show(value)}: expected {expected}")

    def get(
        self,
        name: str,
        check: Callable[[Any], T],
        expected: str,
        default: Any = _MISSING,
    ) -> T:
        """The value at ``name`` passed through ``check`` (which raises ValueError if wrong)."""
        self.used.add(name)
        if name not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.file}: {self.key(name)}: missing; expected {expected}")
            return default
        value = self.data[name]
        try:
            return check(value)
        except (ValueError, TypeError, OverflowError):
            raise self.fail(name, value, expected) from None

    def sub(self, name: str) -> _Table:
        """A nested table (an empty one when absent)."""
        self.used.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, value, f"a table [{self.key(name)}]")
        return _Table(self.file, self.key(name), value)

    def array(self, name: str) -> list[_Table]:
        """An array of tables (``[[name]]``; empty when absent), each named ``name[i]``."""
        self.used.add(name)
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(name, value, f"an array of tables [[{self.key(name)}]]")
        return [_Table(self.file, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def expect(self, known: Iterable[str]) -> None:
        """Refuse keys outside ``known`` before reading any: a typo must not pass silently
        (and a mistyped required key is reported as a typo, not as missing)."""
        known = sorted(known)
        self.used.update(known)
        for name in self.data:
            if name in self.used:
                continue
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = (
                f"did you mean {self.key(close[0])!r}?"
                if close
                else "known keys here: " + ", ".join(known)
            )
            raise ConfigError(f"{self.file}: {self.key(name)}: unknown key; {hint}")


# --------------------------------------------------------------------------------------------
# Value checks: each takes the raw TOML value and returns the typed one or raises ValueError


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError
        return value

    return check


def _float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        number = float(value)
        if math.isnan(number) or not lo <= number <= hi:
            raise ValueError
        return number

    return check


def _one_of(options: Iterable[Any]) -> Callable[[Any], Any]:
    allowed = tuple(options)

    def check(value: Any) -> Any:
        # bool is an int in Python: `true` must not pass as 1.
        if isinstance(value, bool) or value not in allowed:
            raise ValueError
        if type(value) is not type(allowed[0]):
            raise ValueError
        return value

    return check


def _choices(options: Iterable[Any]) -> str:
    return "one of " + ", ".join(_show(o) for o in options)


def _path(base: Path) -> Callable[[Any], Path]:
    def check(value: Any) -> Path:
        text = _str(value)
        path = Path(text).expanduser()
        return path if path.is_absolute() else base / path

    return check


def _gateway_id(value: Any) -> str:
    text = _str(value)
    if _EUI64.fullmatch(text):
        return text.lower()
    if _NAME.fullmatch(text):
        return text
    raise ValueError


_GATEWAY_ID_EXPECTED: Final = (
    "a gateway EUI-64 (16 hex digits) or a name of 1 to 32 characters from a-z, 0-9 and '-'"
)


def _host(value: Any) -> str:
    text = _str(value)
    if any(ch.isspace() for ch in text) or "/" in text or len(text) > 253:
        raise ValueError
    return text


def _topic_prefix(template: str, gateway_id: str) -> str:
    """Format ``{gateway_id}`` into the prefix and check it is a usable MQTT topic root."""
    try:
        prefix = template.format(gateway_id=gateway_id)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise ValueError from None
    if (
        not prefix
        or prefix.startswith("/")
        or prefix.endswith("/")
        or "//" in prefix
        or any(ch in prefix for ch in "+#\x00")
        or len(prefix.encode("utf-8")) > 1024
    ):
        raise ValueError
    return prefix


def _client_id(template: str, gateway_id: str) -> str:
    try:
        client_id = template.format(gateway_id=gateway_id)
    except (KeyError, IndexError, ValueError, AttributeError):
        raise ValueError from None
    if not client_id or len(client_id.encode("utf-8")) > 65535:
        raise ValueError
    return client_id


# --------------------------------------------------------------------------------------------
# Sections


def _read_gateway(root: _Table, base: Path) -> GatewaySection:
    t = root.sub("gateway")
    t.expect(["id", "data_dir", "signing_key", "log_level", "log_format", "event_loop"])
    gw_id = t.get("id", _gateway_id, _GATEWAY_ID_EXPECTED)
    data_dir = t.get("data_dir", _path(base), "a directory path", DEFAULT_DATA_DIR)
    signing_key = t.get(
        "signing_key", _path(base), "a file path", data_dir / "signing-key.pem"
    )
    log_level = t.get("log_level", _one_of(LOG_LEVELS), _choices(LOG_LEVELS), "info")
    log_format = t.get("log_format", _one_of(LOG_FORMATS), _choices(LOG_FORMATS), "logfmt")
    event_loop = t.get("event_loop", _one_of(EVENT_LOOPS), _choices(EVENT_LOOPS), "asyncio")
    return GatewaySection(gw_id, data_dir, signing_key, log_level, log_format, event_loop)


def _existing_file(base: Path) -> Callable[[Any], Path]:
    to_path = _path(base)

    def check(value: Any) -> Path:
        path = to_path(value)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ValueError
        return path

    return check


def _read_tls(t: _Table, base: Path) -> MqttTlsConfig:
    t.expect(["enabled", "ca_file", "cert_file", "key_file", "insecure"])
    enabled = t.get("enabled", _bool, "true or false", False)
    expected_file = "the path of an existing, readable file"
    ca_file = t.get("ca_file", _existing_file(base), expected_file, None)
    cert_file = t.get("cert_file", _existing_file(base), expected_file, None)
    key_file = t.get("key_file", _existing_file(base), expected_file, None)
    insecure = t.get("insecure", _bool, "true or false", False)
    if (cert_file is None) != (key_file is None):
        missing = "key_file" if key_file is None else "cert_file"
        present = "cert_file" if key_file is None else "key_file"
        raise ConfigError(
            f"{t.file}: {t.key(missing)}: missing; expected a file path, required with "
            f"{t.key(present)} (mutual TLS needs both the client certificate and its key)"
        )
    if not enabled and (ca_file or cert_file or insecure):
        raise ConfigError(
            f"{t.file}: {t.key('enabled')} = false: TLS files or options are set but TLS is "
            "off; expected enabled = true (or remove the TLS keys)"
        )
    return MqttTlsConfig(enabled, ca_file, cert_file, key_file, insecure)


def _read_mqtt(root: _Table, base: Path, gateway_id: str) -> MqttConfig:
    t = root.sub("mqtt")
    t.expect(["host", "port", "prefix", "client_id", "keepalive", "username", "password_file",
              "protocol", "tls"])
    host = t.get("host", _host, "a host name or IP address")
    tls = _read_tls(t.sub("tls"), base)
    port = t.get("port", _int_range(1, 65535), "an integer from 1 to 65535",
                 8883 if tls.enabled else 1883)
    prefix_template = t.get("prefix", _str, "a topic prefix", DEFAULT_PREFIX)
    try:
        prefix = _topic_prefix(prefix_template, gateway_id)
    except ValueError:
        raise t.fail(
            "prefix",
            prefix_template,
            "an MQTT topic prefix without '+', '#', empty levels or a leading/trailing '/'; "
            "{gateway_id} is the only placeholder",
        ) from None
    client_template = t.get("client_id", _str, "a client identifier", DEFAULT_CLIENT_ID)
    try:
        client_id = _client_id(client_template, gateway_id)
    except ValueError:
        raise t.fail(
            "client_id", client_template, "a client identifier; {gateway_id} is the only placeholder"
        ) from None
    keepalive = t.get("keepalive", _int_range(5, 3600), "an integer from 5 to 3600 (seconds)", 30)
    username = t.get("username", _str, "a non-empty string", None)
    password_file = t.get(
        "password_file", _existing_file(base), "the path of an existing, readable file", None
    )
    protocol = t.get("protocol", _one_of(MQTT_PROTOCOLS), _choices(MQTT_PROTOCOLS), "5")
    if password_file is not None and username is None:
        raise ConfigError(
            f"{t.file}: {t.key('username')}: missing; expected a user name, required with "
            f"{t.key('password_file')}"
        )
    return MqttConfig(host, port, prefix, client_id, keepalive, username, password_file,
                      protocol, tls)


def _read_radio(root: _Table) -> RadioConfig:
    t = root.sub("radio")
    t.expect(["frontend", "region", "frequency_hz", "spreading_factor", "bandwidth_khz",
              "sync_word", "sx127x", "semtech_udp"])
    frontend = t.get("frontend", _one_of(FRONTENDS), _choices(FRONTENDS), "sim")
    region = t.get("region", _one_of(REGIONS), _choices(REGIONS), "EU868")
    frequency_hz = t.get(
        "frequency_hz",
        _int_range(EU868_MIN_HZ, EU868_MAX_HZ),
        f"an integer from {EU868_MIN_HZ} to {EU868_MAX_HZ} (Hz, the EU868 band)",
        868_100_000,
    )
    sf = t.get("spreading_factor", _int_range(7, 12), "an integer from 7 to 12", 7)
    bw = t.get("bandwidth_khz", _one_of(BANDWIDTHS_KHZ), _choices(BANDWIDTHS_KHZ), 125)
    sync_word = t.get(
        "sync_word",
        _int_range(0, 0xFF),
        "an integer from 0 to 255 (0x34 = LoRaWAN public, 0x12 = private)",
        0x34,
    )
    s = t.sub("sx127x")
    s.expect(["spi_bus", "spi_device", "dio0_gpio", "reset_gpio"])
    sx127x = Sx127xConfig(
        spi_bus=s.get("spi_bus", _int_range(0, 9), "an integer from 0 to 9", 0),
        spi_device=s.get("spi_device", _int_range(0, 9), "an integer from 0 to 9", 1),
        dio0_gpio=s.get("dio0_gpio", _int_range(0, 53), "a BCM GPIO number from 0 to 53", 22),
        reset_gpio=s.get("reset_gpio", _int_range(0, 53), "a BCM GPIO number from 0 to 53", 25),
    )
    u = t.sub("semtech_udp")
    u.expect(["bind", "port", "dedup_window_ms", "gateways"])
    semtech = SemtechUdpConfig(
        bind=u.get("bind", _host, "an IP address to listen on", "0.0.0.0"),
        port=u.get("port", _int_range(1, 65535), "an integer from 1 to 65535", 1700),
        dedup_window_ms=u.get("dedup_window_ms", _int_range(0, 5_000),
                              "an integer number of milliseconds from 0 to 5000", 200),
        gateways=u.get("gateways", _eui_list,
                       "an array of distinct gateway EUIs (16 hex digits each)", ()),
    )
    return RadioConfig(frontend, region, frequency_hz, sf, bw, sync_word, sx127x, semtech)


def _eui_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not _EUI64.fullmatch(item) or item.lower() in out:
            raise ValueError
        out.append(item.lower())
    return tuple(out)


def _cflist_mhz(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) > 5:
        raise ValueError
    out: list[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise TypeError
        hz = round(float(item) * 1e6)
        if math.isnan(item) or not EU868_MIN_HZ <= hz <= EU868_MAX_HZ or hz % 100:
            raise ValueError
        out.append(float(item))
    return tuple(out)


def _read_lorawan(root: _Table) -> LorawanConfig:
    t = root.sub("lorawan")
    t.expect(["net_id", "rx1_dr_offset", "rx2_dr", "rx_delay_s", "cflist_mhz",
              "dev_nonce_mode"])
    return LorawanConfig(
        net_id=t.get("net_id", _int_range(0, 0xFFFFFF),
                      "an integer from 0 to 16777215 (a 24-bit NetID)", 0),
        rx1_dr_offset=t.get("rx1_dr_offset", _int_range(0, 5), "an integer from 0 to 5", 0),
        rx2_dr=t.get("rx2_dr", _int_range(0, 6),
                     "an integer from 0 to 6 (an EU868 LoRa data rate)", 0),
        rx_delay_s=t.get("rx_delay_s", _int_range(1, 15), "an integer from 1 to 15 (s)", 1),
        cflist_mhz=t.get("cflist_mhz", _cflist_mhz,
                         "an array of up to 5 frequencies in MHz within 863-870 "
                         "(100 Hz steps)", None),
        dev_nonce_mode=t.get("dev_nonce_mode", _one_of(DEV_NONCE_MODES),
                             _choices(DEV_NONCE_MODES), "increasing"),
    )


def _read_store(root: _Table, base: Path, data_dir: Path) -> StoreConfig:
    t = root.sub("store")
    t.expect(["path", "max_records", "max_age_days"])
    path = t.get("path", _path(base), "a file path", data_dir / "cityedge.db")
    max_records = t.get(
        "max_records", _int_range(1_000, 100_000_000), "an integer from 1000 to 100000000",
        1_000_000,
    )
    max_age_days = t.get(
        "max_age_days", _float_range(0.01, 3650), "a number of days from 0.01 to 3650", 30.0
    )
    return StoreConfig(path, max_records, max_age_days)


def _read_forward(root: _Table) -> ForwardConfig:
    t = root.sub("forward")
    t.expect(["batch_size", "backlog_historical_after_s"])
    batch_size = t.get("batch_size", _int_range(1, 4096), "an integer from 1 to 4096", 256)
    historical = t.get(
        "backlog_historical_after_s",
        _float_range(0, 86_400 * 365),
        "a number of seconds from 0 to 31536000",
        60.0,
    )
    return ForwardConfig(batch_size, historical)


def _action_names(value: Any) -> tuple[str, ...]:
    """A non-empty array of distinct action names, or "*"."""
    if not isinstance(value, list) or not value or len(set(map(str, value))) != len(value):
        raise ValueError
    if not all(isinstance(v, str) and (v == "*" or v in ACTIONS) for v in value):
        raise ValueError
    return tuple(value)


def _selectors(groups: Mapping[str, tuple[str, ...]]) -> Callable[[Any], tuple[str, ...]]:
    """Device selectors: "*", a DevEUI (lower-cased), "group:<known group>", "role:<role>"."""

    def one(item: Any) -> str:
        if not isinstance(item, str):
            raise TypeError
        if item == "*":
            return item
        if _EUI64.fullmatch(item):
            return item.lower()
        kind, _, name = item.partition(":")
        if (kind == "group" and name in groups) or (kind == "role" and name in ALL_ROLES):
            return item
        raise ValueError

    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError
        out = tuple(one(item) for item in value)
        if len(set(out)) != len(out):
            raise ValueError
        return out

    return check


def _selectors_expected(groups: Mapping[str, tuple[str, ...]]) -> str:
    known = ", ".join(sorted(groups)) or "none defined"
    return ('a non-empty array of distinct device selectors: "*", a DevEUI (16 hex digits), '
            f'"group:<name>" (groups: {known}) or "role:<role>" (roles: '
            f'{", ".join(sorted(ALL_ROLES))})')


def _read_groups(root: _Table) -> dict[str, tuple[str, ...]]:
    t = root.sub("groups")
    groups: dict[str, tuple[str, ...]] = {}
    for name in list(t.data):
        if not _LABEL.fullmatch(name):
            raise ConfigError(f"{t.file}: {t.key(name)}: a group name is 1 to 64 characters "
                              "from a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
        groups[name] = t.get(name, _eui_list_nonempty,
                             "a non-empty array of distinct DevEUIs (16 hex digits each)")
    return groups


def _eui_list_nonempty(value: Any) -> tuple[str, ...]:
    euis = _eui_list(value)
    if not euis:
        raise ValueError
    return euis


def _public_key(base: Path) -> Callable[[Any], Path]:
    to_path = _path(base)

    def check(value: Any) -> Path:
        path = to_path(value)
        try:
            load_public_key(path)
        except KeyFileError:
            raise ValueError from None
        return path

    return check


def _read_key(t: _Table, base: Path, groups: Mapping[str, tuple[str, ...]]) -> TrustedKey:
    t.expect(["name", "public_key", "actions", "devices", "rate_per_minute"])
    name = t.get("name", _key_name, "a key name of 1 to 64 characters from A-Z, a-z, 0-9, '.', "
                 f"'_' and '-' (not {', '.join(RESERVED_KEY_NAMES)})")
    public_key = t.get("public_key", _public_key(base),
                       "the path of a readable PEM Ed25519 public key (SubjectPublicKeyInfo, "
                       "as `cityedge hypervisor keygen` writes)")
    actions = t.get("actions", _action_names,
                    'a non-empty array of distinct action names or "*" (actions: '
                    f"{', '.join(ACTIONS)})")
    devices = t.get("devices", _selectors(groups), _selectors_expected(groups))
    rate = t.get("rate_per_minute", _int_range(1, 60_000), "an integer from 1 to 60000", 120)
    return TrustedKey(name, public_key, actions, devices, rate)


def _key_name(value: Any) -> str:
    text = _str(value)
    if not _KEY_NAME.fullmatch(text) or text in RESERVED_KEY_NAMES:
        raise ValueError
    return text


def _read_commands(root: _Table, base: Path, groups: Mapping[str, tuple[str, ...]]
                   ) -> CommandsConfig:
    t = root.sub("commands")
    t.expect(["max_valve_open_s", "max_lifetime_s", "clock_skew_s", "device_rate_per_minute",
              "answer_timeout_s", "keys"])
    keys: list[TrustedKey] = []
    kids: dict[bytes, str] = {}
    for k in t.array("keys"):
        key = _read_key(k, base, groups)
        if key.name in {other.name for other in keys}:
            raise k.fail("name", key.name, "a name no other [[commands.keys]] entry has")
        kid = key_id(load_public_key(key.public_key))
        if kid in kids:
            raise k.fail("public_key", str(key.public_key),
                         f"a key not already trusted as {kids[kid]!r}")
        kids[kid] = key.name
        keys.append(key)
    return CommandsConfig(
        max_valve_open_s=t.get("max_valve_open_s", _int_range(1, 65_535),
                               "an integer number of seconds from 1 to 65535", 1800),
        max_lifetime_s=t.get("max_lifetime_s", _int_range(1, 30 * 86_400),
                             "an integer number of seconds from 1 to 2592000", 86_400),
        clock_skew_s=t.get("clock_skew_s", _int_range(0, 3600),
                           "an integer number of seconds from 0 to 3600", 60),
        device_rate_per_minute=t.get("device_rate_per_minute", _int_range(1, 600),
                                     "an integer from 1 to 600", 6),
        answer_timeout_s=t.get("answer_timeout_s", _int_range(1, 7 * 86_400),
                               "an integer number of seconds from 1 to 604800", 3600),
        keys=tuple(keys),
    )


def _hours(value: Any) -> tuple[int, int]:
    match = _HOURS.fullmatch(_str(value))
    if not match:
        raise ValueError
    h1, m1, h2, m2 = map(int, match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440 or start == end:
        raise ValueError
    return start, end


def _hours_text(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def _timezone(value: Any) -> str:
    text = _str(value)
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError from None
    return text


def _read_watering(t: _Table, groups: Mapping[str, tuple[str, ...]], max_open_s: int
                   ) -> WateringRule:
    t.expect(["name", "devices", "moisture_below", "readings", "hours", "timezone", "open_s",
              "max_daily_s", "max_daily_litres", "rain_skip_h"])
    name = t.get("name", _label, "a rule name of 1 to 64 characters from a-z, 0-9, '.', '_' "
                 "and '-'")
    devices = t.get("devices", _selectors(groups), _selectors_expected(groups))
    moisture = t.get("moisture_below", _float_range(0.0, 1.0),
                     "a volumetric ratio from 0 to 1 (SenML soil_moisture is a ratio)")
    readings = t.get("readings", _int_range(1, 100), "an integer from 1 to 100", 2)
    start, end = t.get("hours", _hours, 'a local time window "HH:MM-HH:MM" (it may wrap '
                       'midnight; start and end differ; "24:00" only as the end)')
    timezone = t.get("timezone", _timezone, 'a time zone name such as "Europe/Paris"', "UTC")
    open_s = t.get("open_s", _int_range(1, max_open_s),
                   f"an integer number of seconds from 1 to {max_open_s} "
                   "(commands.max_valve_open_s)")
    max_daily_s = t.get("max_daily_s", _int_range(open_s, 86_400),
                        f"an integer number of seconds from {open_s} (open_s) to 86400")
    litres = t.get("max_daily_litres", _float_range(0.0, 1e6),
                   "a number of litres from 0 (no volume cap) to 1000000", 0.0)
    rain_skip_h = t.get("rain_skip_h", _float_range(0.0, 720.0),
                        "a number of hours from 0 to 720", 12.0)
    return WateringRule(name, devices, moisture, readings, start, end, timezone, open_s,
                        max_daily_s, litres, rain_skip_h)


def _label(value: Any) -> str:
    text = _str(value)
    if not _LABEL.fullmatch(text):
        raise ValueError
    return text


def _read_rules(root: _Table, groups: Mapping[str, tuple[str, ...]], max_open_s: int
                ) -> RulesConfig:
    t = root.sub("rules")
    t.expect(["watering"])
    rules: list[WateringRule] = []
    for w in t.array("watering"):
        rule = _read_watering(w, groups, max_open_s)
        if rule.name in {other.name for other in rules}:
            raise w.fail("name", rule.name, "a name no other [[rules.watering]] entry has")
        rules.append(rule)
    return RulesConfig(tuple(rules))


def parse_config(data: Mapping[str, Any], *, source: str = "<config>",
                 base_dir: Path | None = None) -> GatewayConfig:
    """Validate an already-parsed TOML document; ``source`` names it in error messages."""
    base = base_dir if base_dir is not None else Path.cwd()
    root = _Table(source, "", data)
    root.expect(["gateway", "mqtt", "radio", "store", "forward", "lorawan", "commands",
                 "groups", "rules"])
    gateway = _read_gateway(root, base)
    mqtt = _read_mqtt(root, base, gateway.id)
    radio = _read_radio(root)
    store = _read_store(root, base, gateway.data_dir)
    forward = _read_forward(root)
    lorawan = _read_lorawan(root)
    groups = _read_groups(root)
    commands = _read_commands(root, base, groups)
    rules = _read_rules(root, groups, commands.max_valve_open_s)
    return GatewayConfig(gateway, mqtt, radio, store, forward, lorawan=lorawan,
                         commands=commands, groups=groups, rules=rules)


_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the gateway's TOML file; any problem raises ``ConfigError``."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: no such file; create one with `cityedge gateway init`"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory; expected the gateway's TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{file}: permission denied; run as a user that may read it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{file}:{line}: not UTF-8 text; TOML files must be UTF-8") from None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{file}: TOML syntax error: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match:
            raise ConfigError(
                f"{file}:{match['line']}:{match['col']}: TOML syntax error: {match['msg']}"
            ) from None
        raise ConfigError(f"{file}: TOML syntax error: {exc}") from None
    config = parse_config(data, source=str(file), base_dir=file.resolve().parent)
    return dataclasses.replace(config, source=file)


# --------------------------------------------------------------------------------------------
# Writing


def default_config(
    gateway_id: str, data_dir: str | os.PathLike[str], *, frontend: str = "sim"
) -> GatewayConfig:
    """A complete, valid configuration for ``cityedge gateway init`` (local broker)."""
    if frontend not in FRONTENDS:
        raise ConfigError(f"radio front end {_show(frontend)}: expected one of {', '.join(FRONTENDS)}")
    try:
        gw_id = _gateway_id(gateway_id)
    except ValueError:
        raise ConfigError(f"gateway id {_show(gateway_id)}: expected {_GATEWAY_ID_EXPECTED}") \
            from None
    data = Path(data_dir)
    return GatewayConfig(
        gateway=GatewaySection(gw_id, data, data / "signing-key.pem", "info"),
        mqtt=MqttConfig(
            host="localhost",
            port=1883,
            prefix=DEFAULT_PREFIX.format(gateway_id=gw_id),
            client_id=DEFAULT_CLIENT_ID.format(gateway_id=gw_id),
        ),
        radio=RadioConfig(frontend=frontend),
        store=StoreConfig(path=data / "cityedge.db"),
        forward=ForwardConfig(),
    )


def _drop_none(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out[key] = _drop_none(value)
        elif isinstance(value, Path):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def config_to_toml(config: GatewayConfig) -> str:
    """The TOML text for ``config``; loading it back gives an equal configuration."""
    gw_id = config.gateway.id
    prefix = config.mqtt.prefix
    if prefix == DEFAULT_PREFIX.format(gateway_id=gw_id):
        prefix = DEFAULT_PREFIX
    client_id = config.mqtt.client_id
    if client_id == DEFAULT_CLIENT_ID.format(gateway_id=gw_id):
        client_id = DEFAULT_CLIENT_ID
    m, tls, r = config.mqtt, config.mqtt.tls, config.radio
    doc: dict[str, Any] = {
        "gateway": {
            "id": gw_id,
            "data_dir": config.gateway.data_dir,
            "signing_key": config.gateway.signing_key,
            "log_level": config.gateway.log_level,
            "log_format": config.gateway.log_format,
            "event_loop": config.gateway.event_loop,
        },
        "mqtt": {
            "host": m.host,
            "port": m.port,
            "prefix": prefix.replace("{", "{{").replace("}", "}}")
            if prefix != DEFAULT_PREFIX else prefix,
            "client_id": client_id.replace("{", "{{").replace("}", "}}")
            if client_id != DEFAULT_CLIENT_ID else client_id,
            "keepalive": m.keepalive,
            "username": m.username,
            "password_file": m.password_file,
            "protocol": m.protocol,
            "tls": {
                "enabled": tls.enabled,
                "ca_file": tls.ca_file,
                "cert_file": tls.cert_file,
                "key_file": tls.key_file,
                "insecure": tls.insecure,
            },
        },
        "radio": {
            "frontend": r.frontend,
            "region": r.region,
            "frequency_hz": r.frequency_hz,
            "spreading_factor": r.spreading_factor,
            "bandwidth_khz": r.bandwidth_khz,
            "sync_word": r.sync_word,
            "sx127x": {
                "spi_bus": r.sx127x.spi_bus,
                "spi_device": r.sx127x.spi_device,
                "dio0_gpio": r.sx127x.dio0_gpio,
                "reset_gpio": r.sx127x.reset_gpio,
            },
            "semtech_udp": {
                "bind": r.semtech_udp.bind,
                "port": r.semtech_udp.port,
                "dedup_window_ms": r.semtech_udp.dedup_window_ms,
                "gateways": list(r.semtech_udp.gateways),
            },
        },
        "store": {
            "path": config.store.path,
            "max_records": config.store.max_records,
            "max_age_days": config.store.max_age_days,
        },
        "forward": {
            "batch_size": config.forward.batch_size,
            "backlog_historical_after_s": config.forward.backlog_historical_after_s,
        },
        "lorawan": {
            "net_id": config.lorawan.net_id,
            "rx1_dr_offset": config.lorawan.rx1_dr_offset,
            "rx2_dr": config.lorawan.rx2_dr,
            "rx_delay_s": config.lorawan.rx_delay_s,
            "cflist_mhz": None if config.lorawan.cflist_mhz is None
            else list(config.lorawan.cflist_mhz),
            "dev_nonce_mode": config.lorawan.dev_nonce_mode,
        },
    }
    doc.update(_commands_doc(config))
    header = (
        "# cityedge gateway configuration (written by `cityedge gateway init`).\n"
        "# Every key is checked at start; relative paths are relative to this file.\n\n"
    )
    return header + tomli_w.dumps(_drop_none(doc))


def _commands_doc(config: GatewayConfig) -> dict[str, Any]:
    """The [commands], [groups] and [[rules.watering]] tables (empty collections left out)."""
    c = config.commands
    commands: dict[str, Any] = {
        "max_valve_open_s": c.max_valve_open_s,
        "max_lifetime_s": c.max_lifetime_s,
        "clock_skew_s": c.clock_skew_s,
        "device_rate_per_minute": c.device_rate_per_minute,
        "answer_timeout_s": c.answer_timeout_s,
    }
    if c.keys:
        commands["keys"] = [
            {"name": k.name, "public_key": str(k.public_key), "actions": list(k.actions),
             "devices": list(k.devices), "rate_per_minute": k.rate_per_minute}
            for k in c.keys
        ]
    doc: dict[str, Any] = {"commands": commands}
    if config.groups:
        doc["groups"] = {name: list(members) for name, members in config.groups.items()}
    if config.rules.watering:
        doc["rules"] = {"watering": [
            {"name": r.name, "devices": list(r.devices), "moisture_below": r.moisture_below,
             "readings": r.readings, "hours": _hours_text(r.hours_start_min, r.hours_end_min),
             "timezone": r.timezone, "open_s": r.open_s, "max_daily_s": r.max_daily_s,
             "max_daily_litres": r.max_daily_litres, "rain_skip_h": r.rain_skip_h}
            for r in config.rules.watering
        ]}
    return doc


def write_config(
    path: str | os.PathLike[str], config: GatewayConfig, *, force: bool = False
) -> Path:
    """Write ``config`` as TOML (mode 0644, atomically); refuses to overwrite unless ``force``."""
    file = Path(path)
    if file.exists() and not force:
        raise ConfigError(f"{file}: already exists; pass force to overwrite it")
    text = config_to_toml(config)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return file
