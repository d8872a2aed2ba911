"""Deploying the node application to a connected board: compile, compare, copy, verify.

The image is what a node runs: every module of drivers/, protocol/ and firmware/ (or, given a
role, only what that role's board runs) compiled with mpy-cross (the selection of
``python -m sim.mpy``, at its optimisation level ``NODE_OPT``), plus
``main.py`` kept as source at the root. Before anything is written, every .mpy header is checked
against the board's ``sys.implementation._mpy``. Files whose SHA-256 on the board already
matches are skipped; each other file goes to ``<name>.part``, is hashed on the board, then
renamed over its final name, so an unplugged cable never leaves a half-written module where the
board imports it. ``main.py`` goes last. Running the same deploy again finishes an interrupted one.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from provisioning.board import MPY_ARCHES, Board, BoardInfo
from provisioning.errors import FilesystemFull, ProvisioningError, VerifyFailed, VersionMismatch

MAIN = "main.py"
PART = ".part"
BLOCK = 4096  # LittleFS block on ESP32/RP2040 ports: the smallest a file takes
Progress = Callable[[str, int, int], None]  # (file being copied, bytes done, bytes to copy)


class BuildError(ProvisioningError):
    """mpy-cross refused a file of the node application."""


@dataclass(frozen=True)
class ImageFile:
    """One file of the image: its path on the board and its bytes."""

    path: str
    data: bytes

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the bytes."""
        return hashlib.sha256(self.data).digest()

    @property
    def mpy_header(self) -> tuple[int, int, int, int] | None:
        """(version, sub-version, arch, small-int bits) of a .mpy file, None for source."""
        if not self.path.endswith(".mpy"):
            return None
        if len(self.data) < 4 or self.data[0] != ord("M"):
            raise VersionMismatch(f"{self.path} is not a .mpy file (bad header): rebuild the image")
        flags = self.data[2]
        return self.data[1], flags & 3, flags >> 2, self.data[3]


@dataclass
class Image:
    """The files deploy copies, ``main.py`` last."""

    files: list[ImageFile]

    @classmethod
    def from_dir(cls, root: Path) -> Image:
        """Every file below ``root`` (a built image), with paths relative to it."""
        found = [ImageFile(p.relative_to(root).as_posix(), p.read_bytes())
                 for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
        if not found:
            raise BuildError(f"{root} holds no files: build the image first")
        found.sort(key=lambda f: (f.path == MAIN, f.path))
        return cls(found)

    @property
    def total_bytes(self) -> int:
        """Bytes of all files."""
        return sum(len(f.data) for f in self.files)

    @property
    def folders(self) -> list[str]:
        """Every folder the files need on the board, parents first."""
        dirs = {str(parent) for f in self.files for parent in PurePosixPath(f.path).parents
                if str(parent) != "."}
        return sorted(dirs, key=lambda d: (d.count("/"), d))

    @property
    def top_folders(self) -> list[str]:
        """The packages the image owns on the board (drivers, protocol, firmware)."""
        return sorted({f.path.split("/", 1)[0] for f in self.files if "/" in f.path})


def build_image(out_dir: Path | None = None, role: str | None = None) -> Image:
    """Compile the node application with mpy-cross at the boards' level (sim.mpy.NODE_OPT) and
    add ``main.py``: with ``role``, only what that role's board runs (sim.mpy.role_sources)."""
    from sim.mpy import NODE_OPT, REPO, MpyCrossMissing, compile_role, compile_tree

    work = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="cityedge-image-"))
    try:
        report = compile_tree(work, opt=NODE_OPT) if role is None else compile_role(role, work)
    except MpyCrossMissing as exc:
        raise BuildError(str(exc)) from None
    if report.errors:
        raise BuildError("mpy-cross refused: " + "; ".join(
            f"{e.source}: {e.error}" for e in report.errors))
    shutil.copyfile(REPO / "firmware" / "main.py", work / MAIN)
    return Image.from_dir(work)


def check_compatible(image: Image, info: BoardInfo) -> None:
    """VersionMismatch unless every .mpy of the image loads on the board."""
    if info.mpy is None:
        raise VersionMismatch(
            f"MicroPython {info.version_text} on {info.port} does not report which .mpy files it "
            "loads (no sys.implementation._mpy): flash MicroPython 1.22 or newer")
    for f in image.files:
        header = f.mpy_header
        if header is None:
            continue
        version, sub, arch, _bits = header
        if version != info.mpy_version:
            raise VersionMismatch(
                f"{f.path} is .mpy v{version}.{sub} but MicroPython {info.version_text} on "
                f"{info.port} loads v{info.mpy_version}.{info.mpy_sub_version}: flash the "
                "MicroPython the image was built for (1.22 or newer for v6), or build the "
                "image with a matching mpy-cross")
        if arch and (arch != info.mpy_arch or sub != info.mpy_sub_version):
            name = MPY_ARCHES[arch] if arch < len(MPY_ARCHES) else str(arch)
            raise VersionMismatch(
                f"{f.path} holds native code for {name} but the board is {info.arch_name}: "
                "build it with mpy-cross -march matching the board")


@dataclass
class DeployReport:
    """What a deploy did."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    seconds: float = 0.0
    verified: int = 0

    def summary(self) -> str:
        """One line for the technician."""
        return (f"{len(self.copied)} copied ({self.bytes_copied} bytes), {len(self.skipped)} "
                f"already up to date, {len(self.removed)} stale removed, {self.verified} "
                f"verified, {self.seconds:.1f} s")


def _blocks(size: int) -> int:
    return max(1, -(-size // BLOCK)) * BLOCK


def deploy(board: Board, image: Image, progress: Progress | None = None) -> DeployReport:
    """Copy what differs, verify every file by SHA-256 on the board; re-run to resume."""
    start = time.monotonic()
    check_compatible(image, board.info)
    report = DeployReport()
    on_board = board.sha256([f.path for f in image.files])
    todo = [f for f in image.files if on_board[f.path] != f.sha256]
    report.skipped = [f.path for f in image.files if on_board[f.path] == f.sha256]

    present = board.list_files(image.top_folders)
    leftovers = [p for p in present if p.endswith(PART)]
    board.remove(leftovers + [MAIN + PART, "config.json" + PART],
                 "removing files left by an interrupted deploy")
    report.removed += leftovers

    need = sum(_blocks(len(f.data)) for f in todo)
    if need > board.info.free_bytes:
        raise FilesystemFull(
            f"the board's flash has {board.info.free_bytes // 1024} KB free but the application "
            f"needs {need // 1024} KB more: erase the filesystem (`cityedge flash --erase`) and "
            "run again")

    board.make_dirs(image.folders)
    total = sum(len(f.data) for f in todo)
    done = 0
    wanted = {f.path for f in image.files}
    stale = [p for p in present if p not in wanted and p.endswith((".py", ".mpy"))]
    for f in todo:
        if f.path == MAIN and stale:  # a stale module.py would shadow module.mpy
            board.remove(stale, "removing modules the application no longer has")
            report.removed += stale
            stale = []

        def step(n: int, path: str = f.path) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(path, done, total)

        board.write_file(f.path, f.data, step)
        report.copied.append(f.path)
        report.bytes_copied += len(f.data)
    if stale:
        board.remove(stale, "removing modules the application no longer has")
        report.removed += stale

    final = board.sha256([f.path for f in image.files])
    bad = [f.path for f in image.files if final[f.path] != f.sha256]
    if bad:
        raise VerifyFailed(f"{len(bad)} file(s) differ on the board after the copy "
                           f"({', '.join(bad[:3])}): run again")
    report.verified = len(image.files)
    report.seconds = time.monotonic() - start
    return report
