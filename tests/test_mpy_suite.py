"""Every tests/mpy/test_*.py, run inside the real MicroPython VM: one pytest item per function.

The same files also run under CPython through ordinary collection. Here each file runs in one VM
process (drivers/, protocol/, firmware/ and tests/mpy/ copied in and on sys.path); the functions
are found with ``ast`` so each one passes or fails on its own line, with the VM's traceback.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.fixtures.micropython import VMSuite, collect_vm_tests, run_vm_test_file

MPY_TESTS = Path(__file__).resolve().parent / "mpy"


def _cases() -> list[object]:
    cases: list[object] = []
    for path in sorted(MPY_TESTS.glob("test_*.py")):
        try:
            names = collect_vm_tests(path)
        except SyntaxError as exc:
            cases.append(pytest.param(path, None, str(exc), id=f"{path.name}::<syntax>"))
            continue
        for name in names:
            cases.append(pytest.param(path, name, None, id=f"{path.name}::{name}"))
    return cases


CASES = _cases()

if CASES:

    @pytest.mark.vm
    @pytest.mark.parametrize(("path", "name", "syntax_error"), CASES)
    def test_in_micropython_vm(vm_suite: VMSuite, path: Path, name: str | None, syntax_error: str | None) -> None:
        if syntax_error is not None:
            pytest.fail(f"{path.name} does not parse: {syntax_error}", pytrace=False)
        outcome = vm_suite.outcome(path, name)
        if not outcome.passed:
            pytest.fail(f"{path.name}::{name} failed in the MicroPython VM:\n{outcome.detail}", pytrace=False)


SAMPLE = '''
import sys

def helper():
    return 42

def test_passes():
    print("some output")
    assert helper() == 42

def test_fails():
    print("before the failure")
    assert sys.implementation.name == "cpython", "running in " + sys.implementation.name

def test_pytest_helpers_work_in_the_vm():
    import pytest
    with pytest.raises(ValueError, match="bad"):
        raise ValueError("bad input")
    assert pytest.approx(0.3) == 0.1 + 0.2

def test_time_is_virtual():
    import time
    t0 = time.ticks_ms()
    time.sleep(3600)
    assert time.ticks_diff(time.ticks_ms(), t0) == 3600000
'''


@pytest.mark.vm
def test_suite_runner_reports_each_vm_test_separately(micropython_vm: object, tmp_path: Path) -> None:
    path = tmp_path / "test_sample.py"
    path.write_text(textwrap.dedent(SAMPLE))
    names = collect_vm_tests(path)
    assert names == ["test_passes", "test_fails", "test_pytest_helpers_work_in_the_vm", "test_time_is_virtual"]

    results = run_vm_test_file(path, names)

    assert results["test_passes"].passed
    assert results["test_pytest_helpers_work_in_the_vm"].passed, results["test_pytest_helpers_work_in_the_vm"].detail
    assert results["test_time_is_virtual"].passed, results["test_time_is_virtual"].detail
    failed = results["test_fails"]
    assert not failed.passed
    assert "before the failure" in failed.detail
    assert "AssertionError: running in micropython" in failed.detail
    assert 'File "/_repo/tests/mpy/test_sample.py", line 13, in test_fails' in failed.detail


@pytest.mark.vm
def test_suite_runner_fails_every_test_of_a_module_that_does_not_import(micropython_vm: object, tmp_path: Path) -> None:
    path = tmp_path / "test_broken.py"
    path.write_text("import dataclasses\n\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n")

    results = run_vm_test_file(path, collect_vm_tests(path))

    assert set(results) == {"test_a", "test_b"}
    for outcome in results.values():
        assert not outcome.passed
        assert "importing the test module in the VM failed" in outcome.detail
        assert "ImportError: no module named 'dataclasses'" in outcome.detail


def test_collection_uses_ast_and_ignores_nested_and_non_test_functions(tmp_path: Path) -> None:
    path = tmp_path / "test_x.py"
    path.write_text("def test_one():\n    def test_inner():\n        pass\n\ndef helper():\n    pass\n\nclass TestC:\n    def test_m(self):\n        pass\n\ndef test_two():\n    pass\n")
    assert collect_vm_tests(path) == ["test_one", "test_two"]
    assert ast.parse(path.read_text())  # the file itself is valid Python
