"""The node's config.json: built from an identity, keys, role, settings and place; written last.

What is written passes the node's own validation (``firmware.config.Config``, the same code the
board runs at boot) before it leaves the computer. It goes to the board as ``config.json.part``,
is hashed there, renamed, then read back and compared. A board that already holds the
configuration of another DevEUI is refused unless ``replace=True``: a registered node is never
silently turned into another one. Keys never appear in messages; :func:`masked` is the form to show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from firmware import config as node_config
from provisioning.board import Board
from provisioning.errors import ConfigInvalid, ConfigRefused, VerifyFailed
from provisioning.identity import new_dev_addr, new_key, normalise_eui

PATH = node_config.PATH
SECRET_KEYS = ("app_key", "nwk_s_key", "app_s_key")


def build_config(
    *,
    dev_eui: str,
    role: str,
    board: str,
    activation: str = "otaa",
    join_eui: str | None = None,
    net_id: int = 0,
    interval_s: int = 900,
    radio: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    lat: float | None = None,
    lon: float | None = None,
    street: str = "",
    asset: str = "",
) -> dict[str, Any]:
    """A validated config.json for one node, with fresh keys from the OS's CSPRNG."""
    cfg: dict[str, Any] = {
        "version": 1,
        "dev_eui": normalise_eui(dev_eui),
        "role": role,
        "board": board,
        "activation": activation,
        "interval_s": interval_s,
        "radio": dict(radio or {}),
        "settings": dict(settings or {}),
    }
    if activation == "otaa":
        if join_eui is None:
            raise ConfigInvalid("OTAA needs a JoinEUI (the network's join server EUI)")
        cfg["otaa"] = {"join_eui": normalise_eui(join_eui), "app_key": new_key().hex()}
    elif activation == "abp":
        cfg["abp"] = {"dev_addr": new_dev_addr(net_id), "nwk_s_key": new_key().hex(),
                      "app_s_key": new_key().hex()}
    location: dict[str, Any] = {}
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise ConfigInvalid("a location needs both latitude and longitude")
        location.update(lat=lat, lon=lon)
    if street:
        location["street"] = street
    if asset:
        location["asset"] = asset
    if location:
        cfg["location"] = location
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    """ConfigInvalid naming the key unless the node's own check accepts ``cfg``."""
    try:
        node_config.Config(json.loads(json.dumps(cfg)))  # a copy: Config fills in defaults
    except node_config.ConfigError as exc:
        raise ConfigInvalid(f"the node would refuse this configuration: {exc}") from None


def masked(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` safe to print or log: key material replaced by its length."""
    out = json.loads(json.dumps(cfg))
    for section in ("otaa", "abp"):
        for key in SECRET_KEYS:
            if key in out.get(section, {}):
                out[section][key] = f"<{len(out[section][key]) // 2} bytes hidden>"
    return out


def encode(cfg: dict[str, Any]) -> bytes:
    """The bytes of config.json as written to the board."""
    return json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ConfigWrite:
    """What writing a configuration did."""

    dev_eui: str
    written: bool  # False: the board already held exactly this configuration
    replaced_dev_eui: str | None  # the other DevEUI the board held, when replace=True was used


def read_config(board: Board) -> dict[str, Any] | None:
    """The configuration on the board, None when there is none or it is not a JSON object."""
    raw = board.read_file(PATH)
    if raw is None:
        return None
    try:
        cfg = json.loads(raw)
    except ValueError:
        return None
    return cfg if isinstance(cfg, dict) else None


def write_config(board: Board, cfg: dict[str, Any], replace: bool = False) -> ConfigWrite:
    """Write ``cfg`` as the board's config.json (temp, hash, rename), read it back, compare."""
    validate(cfg)
    new_eui = normalise_eui(cfg["dev_eui"])
    data = encode(cfg)
    existing = read_config(board)
    old_eui = existing.get("dev_eui") if existing is not None else None
    replaced = None
    if isinstance(old_eui, str) and old_eui.lower() != new_eui:
        if not replace:
            raise ConfigRefused(
                f"the board on {board.port} is already node {old_eui.lower()}; writing "
                f"{new_eui} would replace it: deregister the old node and use --replace")
        replaced = old_eui.lower()
    if existing is not None and encode(existing) == data:
        return ConfigWrite(new_eui, False, None)
    board.write_file(PATH, data, step=f"writing {PATH}")
    back = read_config(board)
    if back != json.loads(data):
        raise VerifyFailed(f"{PATH} read back from the board differs from what was written: "
                           "run again")
    return ConfigWrite(new_eui, True, replaced)
