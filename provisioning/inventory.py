"""The installer's inventory: one JSON line per provisioned node (who, when, board, gateway).

It holds no key. The default place is ``$XDG_DATA_HOME/cityedge/inventory/inventory.jsonl``
(``~/.local/share/...``); ``export_csv`` writes it as CSV for the city's asset register.
"""

from __future__ import annotations

import csv
import getpass
import json
import os
import time
from pathlib import Path
from typing import Any

FIELDS = ("when", "who", "dev_eui", "join_eui", "role", "board", "machine", "unique_id", "port",
          "gateway", "asset", "street", "lat", "lon", "activation", "result")


def default_path() -> Path:
    """Where the inventory lives unless --inventory says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cityedge" / "inventory" / "inventory.jsonl"


def resolve(path: str | None) -> Path:
    """``path`` as given (a folder gets inventory.jsonl inside), or the default."""
    if path is None:
        return default_path()
    p = Path(path)
    return p / "inventory.jsonl" if p.is_dir() or not p.suffix else p


def who() -> str:
    """The user name of whoever runs the command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record(path: Path, row: dict[str, Any]) -> None:
    """Append one row (fsynced), creating the file and its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "who": who(), **row}
    line = json.dumps({k: full.get(k) for k in FIELDS}, ensure_ascii=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(line)
        out.flush()
        os.fsync(out.fileno())


def read(path: Path) -> list[dict[str, Any]]:
    """Every row; unreadable lines are skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def export_csv(path: Path, out: Path) -> int:
    """Write the inventory as CSV; the number of rows."""
    rows = read(path)
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return len(rows)
