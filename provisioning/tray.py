"""A tray of boards from a CSV: every row checked before any board is touched.

Columns: ``port, role, board`` (required), ``asset, street, lat, lon, dev_eui, interval``
(optional); any other column is a role setting (its value as JSON when it parses, else text),
e.g. ``max_open_s``. Empty cells are left out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from firmware.boards import BOARDS
from provisioning.errors import ConfigInvalid
from provisioning.identity import IdentityError, normalise_eui
from provisioning.provision import NodeSpec, Options, check_spec

REQUIRED = ("port", "role", "board")
KNOWN = REQUIRED + ("asset", "street", "lat", "lon", "dev_eui", "interval")
ROLES = ("air", "noise", "soil", "lighting")
# Headers a spreadsheet often has that mean one of ours: refused by name rather than silently
# taken for a role setting (the node would then have no location).
ALIASES = {"latitude": "lat", "longitude": "lon", "lng": "lon", "long": "lon",
           "location": "street", "address": "street", "place": "street", "asset_id": "asset",
           "deveui": "dev_eui", "dev-eui": "dev_eui", "interval_s": "interval"}


class TrayError(ValueError):
    """A bad CSV: names the row (as a spreadsheet numbers it: header is row 1) and the field."""


def setting_value(text: str) -> Any:
    """A setting's value: JSON when it parses (numbers, true, lists), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _number(row: int, name: str, text: str, lo: float, hi: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TrayError(f"row {row}: {name}: {text!r} is not a number") from None
    if not lo <= value <= hi:
        raise TrayError(f"row {row}: {name}: {value} is outside {lo:g}..{hi:g}")
    return value


def read_tray(path: Path, opts: Options) -> list[NodeSpec]:
    """Every row of the CSV as a checked NodeSpec, or TrayError for the first bad one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise TrayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    for column in header:
        ours = ALIASES.get(column.lower())
        if ours is not None:
            raise TrayError(f"{path}: row 1: column {column!r}: call it {ours!r} (other columns "
                            "are role settings)")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise TrayError(f"{path}: row 1: missing column(s) {', '.join(missing)}; expected at "
                        f"least {', '.join(REQUIRED)}")
    specs: list[NodeSpec] = []
    ports: dict[str, int] = {}
    euis: dict[str, int] = {}
    for n, raw in enumerate(reader, start=2):
        if None in raw:
            raise TrayError(f"{path}: row {n}: more cells than columns")
        row = {k.strip(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        for name in REQUIRED:
            if not row.get(name):
                raise TrayError(f"{path}: row {n}: {name}: empty")
        if row["role"] not in ROLES:
            raise TrayError(f"{path}: row {n}: role: {row['role']!r}; expected one of "
                            f"{', '.join(ROLES)}")
        if row["board"] not in BOARDS:
            raise TrayError(f"{path}: row {n}: board: {row['board']!r}; expected one of "
                            f"{', '.join(sorted(BOARDS))}")
        if row["port"] in ports:
            raise TrayError(f"{path}: row {n}: port: {row['port']} is already on row "
                            f"{ports[row['port']]}")
        ports[row["port"]] = n
        lat = lon = None
        if row.get("lat") or row.get("lon"):
            if not (row.get("lat") and row.get("lon")):
                raise TrayError(f"{path}: row {n}: {'lon' if row.get('lat') else 'lat'}: empty "
                                "(a location needs both lat and lon)")
            lat = _number(n, "lat", row["lat"], -90, 90)
            lon = _number(n, "lon", row["lon"], -180, 180)
        dev_eui = None
        if row.get("dev_eui"):
            try:
                dev_eui = normalise_eui(row["dev_eui"])
            except IdentityError as exc:
                raise TrayError(f"{path}: row {n}: dev_eui: {exc}") from None
            if dev_eui in euis:
                raise TrayError(f"{path}: row {n}: dev_eui: {dev_eui} is already on row "
                                f"{euis[dev_eui]}")
            euis[dev_eui] = n
        interval = 900
        if row.get("interval"):
            interval = int(_number(n, "interval", row["interval"], 1, 86400))
        settings = {k: setting_value(v) for k, v in row.items() if k not in KNOWN and v}
        spec = NodeSpec(port=row["port"], role=row["role"], board=row["board"], dev_eui=dev_eui,
                        asset=row.get("asset", ""), street=row.get("street", ""), lat=lat,
                        lon=lon, settings=settings, interval_s=interval, row=n)
        try:
            check_spec(spec, opts)
        except ConfigInvalid as exc:
            raise TrayError(f"{path}: row {n}: {exc}") from None
        specs.append(spec)
    if not specs:
        raise TrayError(f"{path}: no boards listed (only a header)")
    return specs
