"""The node's configuration file, written by provisioning and validated at every boot.

One JSON file on the board's flash. A bad file stops the node with a fault report that names the
key and what is expected; key material is never echoed.

    {"version": 1, "dev_eui": "0004a30b001c0530", "role": "soil", "board": "pico-rfm95",
     "activation": "otaa", "otaa": {"join_eui": "<16 hex>", "app_key": "<32 hex>"},
     (or "activation": "abp", "abp": {"dev_addr": "<8 hex>", "nwk_s_key": .., "app_s_key": ..})
     "radio": {"sf": 7, "tx_power_dbm": 14, "adr": true, "channels": [868100000, ...]},
     "interval_s": 900, "deep_sleep": true, "location": {"lat": 43.53, "lon": 5.45, "asset": ".."},
     "settings": {"pins": {"valve_open": 10, ...}, ...the role's own settings}}

``radio.sf`` is the data rate of the first uplinks and of the Join-requests (the network may change
it with LinkADRReq); ``radio.tx_power_dbm`` caps the power the network may ask for; ``channels``
beyond the three default ones are used by ABP nodes (OTAA nodes get theirs in the Join-accept).
``deep_sleep`` defaults to true for the battery roles (Class A). The location is also given to the
role as ``settings["lat"]``/``settings["lon"]`` (the lighting calendar needs it).
"""

import json

from firmware.boards import BOARDS

PATH = "config.json"
ROLES = ("air", "noise", "soil", "lighting")
CLASSES = {"air": "A", "noise": "A", "soil": "A", "lighting": "C"}


class ConfigError(ValueError):
    """The configuration file is missing or wrong; the message names the key."""


def _hex(cfg, section, key, nbytes, secret=False):
    value = cfg.get(key) if section is None else cfg.get(section, {}).get(key)
    name = key if section is None else section + "." + key
    if not isinstance(value, str) or len(value) != 2 * nbytes:
        shown = "" if secret or not isinstance(value, str) else " (got %r)" % value
        raise ConfigError("%s: %s: expected %d hex characters%s" % (PATH, name, 2 * nbytes, shown))
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != nbytes:  # fromhex skips spaces: "0011 22.." must not pass as a shorter key
        raise ConfigError("%s: %s: expected hexadecimal digits only" % (PATH, name))
    return raw


def _number(cfg, section, key, lo, hi, default=None, kinds=int):
    """cfg[section][key] (or cfg[key]) within lo..hi; ``kinds`` (int, float) for any number."""
    sect = cfg if section is None else cfg.get(section, {})
    value = sect.get(key, default)
    name = key if section is None else section + "." + key
    if not isinstance(value, kinds) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("%s: %s = %r: expected %s from %s to %s" % (
            PATH, name, value, "an integer" if kinds is int else "a number", lo, hi))
    return value


def _obj(cfg, key):
    value = cfg.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError("%s: %s: expected an object" % (PATH, key))
    return value


class Config:
    """Validated node settings (identity, keys, role, radio, schedule, location)."""

    def __init__(self, cfg):
        if not isinstance(cfg, dict):
            raise ConfigError("%s: expected a JSON object at the top level" % PATH)
        if cfg.get("version") != 1:
            raise ConfigError("%s: version = %r: expected 1" % (PATH, cfg.get("version")))
        self.dev_eui = _hex(cfg, None, "dev_eui", 8)
        self.dev_eui_hex = cfg["dev_eui"].lower()
        role = cfg.get("role")
        if role not in ROLES:
            raise ConfigError("%s: role = %r: expected one of %s" % (PATH, role, ", ".join(ROLES)))
        self.role = role
        self.dev_class = CLASSES[role]
        board = cfg.get("board")
        if board not in BOARDS:
            raise ConfigError("%s: board = %r: expected one of %s" % (
                PATH, board, ", ".join(sorted(BOARDS))))
        self.board = board
        activation = cfg.get("activation")
        if activation == "abp":
            self.dev_addr = int.from_bytes(_hex(cfg, "abp", "dev_addr", 4), "big")
            self.nwk_s_key = _hex(cfg, "abp", "nwk_s_key", 16, secret=True)
            self.app_s_key = _hex(cfg, "abp", "app_s_key", 16, secret=True)
        elif activation == "otaa":
            self.join_eui = _hex(cfg, "otaa", "join_eui", 8)
            self.app_key = _hex(cfg, "otaa", "app_key", 16, secret=True)
        else:
            raise ConfigError("%s: activation = %r: expected \"abp\" or \"otaa\"" % (PATH, activation))
        self.activation = activation
        radio = _obj(cfg, "radio")
        self.sf = _number(cfg, "radio", "sf", 7, 12, 7)
        self.tx_power_dbm = _number(cfg, "radio", "tx_power_dbm", 2, 16, 14)
        adr = radio.get("adr", True)
        if adr is not True and adr is not False:
            raise ConfigError("%s: radio.adr = %r: expected true or false" % (PATH, adr))
        self.adr = adr
        channels = radio.get("channels", [868100000, 868300000, 868500000])
        if (not isinstance(channels, list) or not channels
                or not all(isinstance(f, int) and 863000000 <= f <= 870000000 for f in channels)):
            raise ConfigError("%s: radio.channels: expected a list of EU868 frequencies in Hz" % PATH)
        self.channels = channels
        self.interval_s = _number(cfg, None, "interval_s", 10, 86400, 900)
        self.deep_sleep = bool(cfg.get("deep_sleep", self.dev_class == "A"))
        loc = _obj(cfg, "location")
        num = (int, float)
        self.latitude = _number(cfg, "location", "lat", -90, 90, kinds=num) if "lat" in loc else None
        self.longitude = _number(cfg, "location", "lon", -180, 180, kinds=num) if "lon" in loc else None
        self.asset = loc.get("asset", "")
        settings = _obj(cfg, "settings")
        pins = settings.get("pins", {})
        if not isinstance(pins, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 48
                for v in pins.values()):
            raise ConfigError("%s: settings.pins: expected an object of GPIO numbers 0..48" % PATH)
        if self.latitude is not None:  # roles that need the place (lighting calendar) find it
            settings.setdefault("lat", self.latitude)
            settings.setdefault("lon", self.longitude)
        self.settings = settings


def load(path=PATH):
    """Read and validate the configuration file; ConfigError says what is wrong."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        raise ConfigError("%s: not found on the board: provision the node first" % path)
    try:
        cfg = json.loads(raw)
    except ValueError:
        raise ConfigError("%s: not valid JSON: re-provision the node" % path)
    return Config(cfg)
