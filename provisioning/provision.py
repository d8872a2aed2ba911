"""Provisioning one board: identity, application, configuration, registration, label, inventory.

The order keeps every state safe to re-run: the registration target is checked for a conflict
before anything is written; the application is deployed (resumable); config.json is written
last on the board (temp, hash, rename, read back); only then is the node registered. A board that
already holds a configuration for the same DevEUI keeps its keys, so running the same job again
changes nothing ("unchanged") and a job interrupted after the config was written completes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware import config as node_config
from provisioning import inventory
from provisioning.board import Board
from provisioning.deploy import DeployReport, Image, Progress, deploy
from provisioning.errors import ConfigInvalid, ConfigRefused, ProvisioningError
from provisioning.identity import EuiRange, IdentityError, normalise_eui
from provisioning.label import Label, write_label
from provisioning.nodeconfig import build_config, read_config, write_config

DEFAULT_JOIN_EUI = "0000000000000000"


class RegistrationRefused(ProvisioningError):
    """The DevEUI is already registered with other keys and --replace was not given."""


@dataclass
class NodeSpec:
    """What the installer asks for one board (a command line or one CSV row)."""

    port: str
    role: str
    board: str
    dev_eui: str | None = None
    asset: str = ""
    street: str = ""
    lat: float | None = None
    lon: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    interval_s: int = 900
    row: int | None = None  # the CSV row, for messages


@dataclass
class Options:
    """What applies to every board of a job."""

    join_eui: str = DEFAULT_JOIN_EUI
    activation: str = "otaa"
    eui_range: EuiRange | None = None
    gateway_config: Path | None = None
    export: Path | None = None
    replace: bool = False
    label_dir: Path = Path("labels")
    inventory: Path = field(default_factory=inventory.default_path)
    images: dict[str, Image] | None = None  # role -> what its board runs; None: no deploy
    progress: Callable[[str], Progress | None] | None = None  # port -> deploy progress callback


@dataclass
class Outcome:
    """What provisioning one board did."""

    port: str
    dev_eui: str = "-"
    role: str = "-"
    asset: str = "-"
    result: str = "failed"  # provisioned | unchanged | updated | failed
    message: str = ""
    deploy: DeployReport | None = None
    labels: tuple[Path, Path] | None = None
    gateway: str = "-"
    user_error: bool = False  # failed for a reason the installer can fix (exit status 2)


def check_spec(spec: NodeSpec, opts: Options) -> None:
    """ConfigInvalid naming the field unless the node would accept what ``spec`` asks."""
    build_config(dev_eui=spec.dev_eui or "0000000000000001", role=spec.role, board=spec.board,
                 activation=opts.activation, join_eui=opts.join_eui, interval_s=spec.interval_s,
                 settings=spec.settings, lat=spec.lat, lon=spec.lon, street=spec.street,
                 asset=spec.asset)


def _choose_dev_eui(spec: NodeSpec, board: Board, existing: dict[str, Any] | None,
                    opts: Options, taken: set[str]) -> str:
    """The DevEUI: given, kept from the board's config (range mode), from the range, or the uid."""
    if spec.dev_eui:
        return normalise_eui(spec.dev_eui)
    old = existing.get("dev_eui") if existing else None
    if opts.eui_range is not None:
        if isinstance(old, str):
            try:
                value = int(normalise_eui(old), 16)
            except IdentityError:
                value = -1
            if opts.eui_range.first <= value <= opts.eui_range.last:
                return f"{value:016x}"  # a re-run keeps the DevEUI this board already got
        return opts.eui_range.allocate(taken)
    eui = board.info.dev_eui
    if eui is None:
        raise IdentityError(f"the board on {board.port} has no usable unique id: give "
                            "--dev-eui or --eui-range")
    return eui


def _entry(cfg: dict[str, Any]) -> Any:
    """The registry entry for a node configuration (keys included: never print it)."""
    from gateway.registry import entry_from_fields

    loc = cfg.get("location", {})
    fields: dict[str, Any] = {"dev_eui": cfg["dev_eui"], "role": cfg["role"],
                              "class": node_config.CLASSES[cfg["role"]],
                              "activation": cfg["activation"]}
    if loc.get("asset"):
        fields["asset_id"] = loc["asset"]
        fields["name"] = loc["asset"]
    if loc.get("street"):
        fields["location"] = loc["street"]
    if "lat" in loc:
        fields["latitude"], fields["longitude"] = loc["lat"], loc["lon"]
    if cfg["activation"] == "otaa":
        fields["join_eui"] = cfg["otaa"]["join_eui"]
        fields["app_key"] = cfg["otaa"]["app_key"]
    else:
        fields.update(dev_addr=cfg["abp"]["dev_addr"], nwk_s_key=cfg["abp"]["nwk_s_key"],
                      app_s_key=cfg["abp"]["app_s_key"])
    try:
        return entry_from_fields(fields)
    except ValueError as exc:
        raise ConfigInvalid(f"the gateway registry would refuse this node: {exc}") from None


class Registrar:
    """Where nodes are registered: the gateway's store or a registry export file."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.store: Any = None
        self.gateway = "-"
        self._file_entries: dict[str, Any] = {}
        if opts.gateway_config is not None:
            from gateway.config import ConfigError, load_config
            from gateway.store import Store, StoreError

            try:
                config = load_config(opts.gateway_config)
            except ConfigError as exc:
                raise ConfigInvalid(str(exc)) from None
            try:
                self.store = Store.open(config.store.path)
            except StoreError as exc:
                raise ConfigInvalid(f"cannot open the gateway's registry: {exc}") from None
            self.gateway = config.gateway.id
        elif opts.export is not None:
            from gateway.registry import RegistryError, read_registry

            self.gateway = f"file:{opts.export.name}"
            if opts.export.exists():
                try:
                    reg = read_registry(opts.export)
                except RegistryError as exc:
                    raise ConfigInvalid(str(exc)) from None
                self._file_entries = {e.dev_eui: e for e in reg.entries}

    def taken(self) -> set[str]:
        """DevEUIs already registered (for allocating from a range)."""
        if self.store is not None:
            return {d.dev_eui for d in self.store.list_devices()}
        return set(self._file_entries)

    def _current(self, dev_eui: str) -> Any:
        if self.store is not None:
            from gateway.registry import entry_from_device

            dev = self.store.get_device(dev_eui)
            return None if dev is None else entry_from_device(dev)
        return self._file_entries.get(dev_eui)

    def check(self, entry: Any) -> None:
        """RegistrationRefused when the DevEUI is registered with other keys (no --replace)."""
        current = self._current(entry.dev_eui)
        if current is None or self.opts.replace:
            return
        if current.activation != entry.activation or current.keys() != entry.keys():
            where = "the gateway's registry" if self.store is not None else str(self.opts.export)
            raise RegistrationRefused(
                f"node {entry.dev_eui} is already registered in {where} with other keys: "
                "check the DevEUI, or use --replace to give it new keys (it must rejoin)")

    def register(self, entry: Any) -> str:
        """Register ``entry``: "added", "updated" or "unchanged"."""
        current = self._current(entry.dev_eui)
        self.check(entry)
        if current is not None and current == entry:
            return "unchanged"
        if self.store is not None:
            from gateway.registry import device_for
            from gateway.store import StoreError

            existing = self.store.get_device(entry.dev_eui)
            try:
                self.store.upsert_device(device_for(entry, existing))
            except (StoreError, ValueError) as exc:
                raise RegistrationRefused(f"the gateway's registry refused node "
                                          f"{entry.dev_eui}: {exc}; run again once fixed "
                                          "(the board keeps its configuration)") from None
        elif self.opts.export is not None:
            from gateway.registry import RegistryError, write_registry

            self._file_entries[entry.dev_eui] = entry
            try:
                write_registry(self.opts.export, self._file_entries.values(), force=True)
            except RegistryError as exc:
                raise ConfigInvalid(str(exc)) from None
        else:
            return "not registered"
        return "added" if current is None else "updated"

    def close(self) -> None:
        """Release the store."""
        if self.store is not None:
            self.store.close()


def provision_board(spec: NodeSpec, opts: Options, registrar: Registrar) -> Outcome:
    """Provision the board on ``spec.port``; raises ProvisioningError / IdentityError."""
    out = Outcome(spec.port, role=spec.role, asset=spec.asset or "-", gateway=registrar.gateway)
    with Board.connect(spec.port) as board:
        existing = read_config(board)
        dev_eui = _choose_dev_eui(spec, board, existing, opts, registrar.taken())
        out.dev_eui = dev_eui
        cfg = build_config(dev_eui=dev_eui, role=spec.role, board=spec.board,
                           activation=opts.activation, join_eui=opts.join_eui,
                           interval_s=spec.interval_s, settings=spec.settings, lat=spec.lat,
                           lon=spec.lon, street=spec.street, asset=spec.asset)
        same_node = (existing is not None and existing.get("dev_eui") == dev_eui
                     and existing.get("activation") == cfg["activation"])
        if same_node and not opts.replace:
            section = cfg["activation"]
            if isinstance(existing.get(section), dict):
                cfg[section] = dict(existing[section])  # keep its keys: a re-run changes nothing
                if section == "otaa":
                    cfg["otaa"]["join_eui"] = normalise_eui(opts.join_eui)
        entry = _entry(cfg)
        registrar.check(entry)  # before anything is written
        if existing is not None and isinstance(existing.get("dev_eui"), str) and \
                existing["dev_eui"].lower() != dev_eui and not opts.replace:
            raise ConfigRefused(
                f"the board on {spec.port} is already node {existing['dev_eui'].lower()}; "
                f"making it {dev_eui} would replace it: deregister the old node and use --replace")
        if opts.images is not None:
            progress = opts.progress(spec.port) if opts.progress else None
            out.deploy = deploy(board, opts.images[spec.role], progress)
        written = write_config(board, cfg, replace=opts.replace).written
        info = board.info
    registered = registrar.register(entry)
    loc = cfg.get("location", {})
    label = Label(dev_eui, cfg.get("otaa", {}).get("join_eui"), spec.role, loc.get("asset", ""),
                  loc.get("street", ""))
    out.labels = write_label(label, opts.label_dir)
    deployed = out.deploy is not None and bool(out.deploy.copied)
    if not written and registered == "unchanged" and not deployed:
        out.result = "unchanged"
    else:
        out.result = "updated" if existing is not None and same_node else "provisioned"
    out.message = f"registry: {registered}"
    inventory.record(opts.inventory, {
        "dev_eui": dev_eui, "join_eui": label.join_eui, "role": spec.role, "board": spec.board,
        "machine": info.machine, "unique_id": info.unique_id.hex() if info.unique_id else None,
        "port": spec.port, "gateway": registrar.gateway, "asset": spec.asset,
        "street": spec.street, "lat": spec.lat, "lon": spec.lon,
        "activation": cfg["activation"], "result": out.result})
    return out


def secure_file(path: Path) -> None:
    """Make a file that holds keys readable by its owner only."""
    if path.exists():
        os.chmod(path, 0o600)


def describe_config(cfg: dict[str, Any]) -> str:
    """A config as indented JSON (call with a masked copy only)."""
    return json.dumps(cfg, indent=2, sort_keys=True)
