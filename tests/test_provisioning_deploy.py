"""Deploying the compiled node application to a virtual board through mpremote's transport."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import pytest
import serial

from provisioning.board import Board
from provisioning.deploy import Image, ImageFile, build_image, deploy
from provisioning.errors import BoardGone, FilesystemFull, PortNotFound, VersionMismatch
from sim.vm.serial import SerialBoard

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_image(tmp_path_factory.mktemp("image"))


def flash_files(flash: Path) -> dict[str, bytes]:
    return {p.relative_to(flash).as_posix(): p.read_bytes()
            for p in flash.rglob("*") if p.is_file()}


def soft_reset_output(port: str) -> bytes:
    """Ctrl-D at the friendly REPL: what the board prints as it boots again."""
    with serial.Serial(port, 115200, timeout=0.2) as s:
        s.write(b"\r\x02")
        time.sleep(0.3)
        s.read(65536)
        s.write(b"\x04")
        out = b""
        deadline = time.monotonic() + 15
        while not out.endswith(b">>> ") and time.monotonic() < deadline:
            out += s.read(4096)
    return out


def test_deploy_copies_verifies_skips_on_rerun_and_the_board_boots_the_app(
    image: Image, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    (flash / "firmware").mkdir(parents=True)
    (flash / "firmware" / "app.py").write_text("raise SystemExit  # an old source: shadows app.mpy\n")
    (flash / "firmware" / "gone.mpy").write_bytes(b"M\x06\x00\x1f")  # dropped from the app
    (flash / "firmware" / "dutycycle.mpy.part").write_bytes(b"M\x06")  # an interrupted copy
    progress: list[tuple[str, int, int]] = []
    with SerialBoard(flash, name="tray-1") as sb:
        with Board.connect(sb.port) as board:
            first = deploy(board, image, lambda *a: progress.append(a))
            again = deploy(board, image)
        time.sleep(0.3)
        boot = soft_reset_output(sb.port)

    assert sorted(first.copied) == sorted(f.path for f in image.files)
    assert first.bytes_copied == image.total_bytes and first.verified == len(image.files)
    assert first.copied[-1] == "main.py"
    assert progress[-1][1] == progress[-1][2] == image.total_bytes
    assert again.copied == [] and len(again.skipped) == len(image.files)
    assert sorted(first.removed) == ["firmware/app.py", "firmware/dutycycle.mpy.part",
                                     "firmware/gone.mpy"]
    on_flash = flash_files(flash)
    assert {p: hashlib.sha256(d).digest() for p, d in on_flash.items()} == {
        f.path: f.sha256 for f in image.files}
    # main.py imported the compiled firmware.app, which asks for its configuration
    assert b"FAULT config: config.json: not found on the board" in boot


def test_unplugged_mid_deploy_leaves_no_half_file_and_a_rerun_finishes(
    image: Image, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    with SerialBoard(flash, name="tray-2") as sb:
        board = Board.connect(sb.port)

        def pull_cable(path: str, done: int, total: int) -> None:
            if done > total // 3:
                sb.unplug()

        with pytest.raises(BoardGone, match="run the command again"):
            deploy(board, image, pull_cable)
        board.close()
        with pytest.raises(PortNotFound, match="is the board plugged in"):
            Board.connect(sb.port)

    wanted = {f.path: f.data for f in image.files}
    left = flash_files(flash)
    assert 0 < len([p for p in left if p in wanted]) < len(wanted)
    for path, data in left.items():  # a final name only ever holds a complete, correct file
        if path in wanted:
            assert data == wanted[path], path
    assert "main.py" not in left

    with SerialBoard(flash, name="tray-2") as sb, Board.connect(sb.port) as board:
        rerun = deploy(board, image)
    assert rerun.skipped and rerun.copied
    assert rerun.verified == len(image.files)
    done = flash_files(flash)
    assert {p: done[p] for p in wanted} == wanted
    assert not [p for p in done if p.endswith(".part")]


def test_files_for_another_mpy_version_are_refused_before_anything_is_written(
    image: Image, tmp_path: Path
) -> None:
    old = [ImageFile(f.path, f.data[:1] + b"\x05" + f.data[2:]) if f.path.endswith(".mpy")
           else f for f in image.files]
    with SerialBoard(tmp_path / "flash", name="tray-3") as sb, Board.connect(sb.port) as board:
        with pytest.raises(VersionMismatch, match=r"v5\.0 but MicroPython 1\.27\.0 .* loads v6\.3"):
            deploy(board, Image(old))
        full = dataclasses.replace(board.info, free_bytes=20_000)  # a flash nearly full
        board.info = full
        with pytest.raises(FilesystemFull, match="19 KB free"):
            deploy(board, image)
    assert flash_files(tmp_path / "flash") == {}


def test_a_role_image_holds_only_what_that_roles_board_runs(tmp_path: Path) -> None:
    from sim.mpy import role_sources

    image = build_image(tmp_path, role="soil")
    wanted = {p.with_suffix(".mpy").as_posix() for p in role_sources("soil")
              if p.as_posix() != "firmware/main.py"} | {"main.py"}
    assert {f.path for f in image.files} == wanted
    assert "firmware/roles/lighting.mpy" not in wanted
