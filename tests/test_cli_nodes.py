"""`cityedge gateway nodes ...` as an installer runs it: real processes, real files, real SQLite.

Every test checks what the person at the terminal sees; no key ever appears there.
"""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import default_config, write_config
from gateway.registry import read_registry
from gateway.store import Store

APP_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
NWK_S_KEY = "000102030405060708090a0b0c0d0e0f"
APP_S_KEY = "f0e0d0c0b0a090807060504030201000"
OTHER_KEY = "5f3c2a1e0d9b8a7766554433221100ff"
CMDLINE_KEY = "00112233445566778899aabbccddeef1"
EUI1 = "70b3d57ed0000001"
EUI2 = "70b3d57ed0000002"
EUI3 = "70b3d57ed0000003"


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "cityedge", *args], check=False,
                       capture_output=True, text=True, cwd=cwd, timeout=60,
                       input=stdin if stdin is not None else "")
    seen = (r.stdout + r.stderr).lower()
    for key in (APP_KEY, NWK_S_KEY, APP_S_KEY, OTHER_KEY, CMDLINE_KEY):
        assert key not in seen, f"a key was printed by {args}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


def init_gateway(directory: Path, gateway_id: str) -> Path:
    """What `cityedge gateway init` writes (tested in test_cli_gateway), made in-process."""
    write_config(directory / "gateway.toml", default_config(gateway_id, directory))
    return directory


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    """A gateway directory with its gateway.toml; the store is created by the first write."""
    return init_gateway(tmp_path, "gw1")


def nodes(gw: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run("gateway", "nodes", *args, "--config", str(gw / "gateway.toml"), cwd=gw,
               stdin=stdin)


def key_file(gw: Path, name: str, key: str, mode: int = 0o600) -> Path:
    path = gw / name
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def stored(gw: Path) -> dict[str, object]:
    """What the store holds, read directly: DevEUI -> Device."""
    with Store.open(gw / "cityedge.db") as store:
        return {d.dev_eui: d for d in store.list_devices()}


def listed(gw: Path) -> list[dict]:
    r = nodes(gw, "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def registry_file(gw: Path, name: str, *rows: dict, mode: int = 0o600) -> Path:
    path = gw / name
    path.write_text("\n".join([json.dumps({"cityedge_registry": 1}),
                               *(json.dumps(r) for r in rows)]) + "\n")
    path.chmod(mode)
    return path


def otaa(eui: str, key: str = APP_KEY, **more: object) -> dict:
    return {"dev_eui": eui, "role": "air", "activation": "otaa", "app_key": key, **more}


def abp(eui: str, addr: str, **more: object) -> dict:
    return {"dev_eui": eui, "role": "lighting", "activation": "abp", "dev_addr": addr,
            "nwk_s_key": NWK_S_KEY, "app_s_key": APP_S_KEY, **more}


# ------------------------------------------------------------------------- add, list, show


def test_add_otaa_node_with_key_file_then_list_and_show_mask_the_key(gw: Path) -> None:
    kf = key_file(gw, "appkey.hex", APP_KEY)

    r = nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", str(kf),
              "--join-eui", "70b3d57ed0000000", "--name", "Cours Mirabeau 3",
              "--asset-id", "AQ-0042", "--lat", "43.5263", "--lon", "5.4454")

    assert r.returncode == 0, r.stderr
    assert f"added node {EUI1}" in r.stdout
    dev = stored(gw)[EUI1]
    assert dev.app_key == bytes.fromhex(APP_KEY) and dev.join_eui == "70b3d57ed0000000"
    assert (dev.role, dev.dev_class, dev.asset_id) == ("air", "A", "AQ-0042")
    [view] = listed(gw)
    assert view["dev_eui"] == EUI1 and view["activation"] == "otaa"
    assert view["keys"] == {"app_key": "set (16 bytes)", "nwk_s_key": "not set",
                            "app_s_key": "not set"}
    show = nodes(gw, "show", EUI1.upper())
    assert show.returncode == 0
    assert "set (16 bytes)" in show.stdout and "Cours Mirabeau 3" in show.stdout
    table = nodes(gw, "list")
    assert EUI1 in table.stdout and "OTAA" in table.stdout


def test_add_abp_node_reads_both_session_keys_from_stdin(gw: Path) -> None:
    r = nodes(gw, "add", EUI2, "--role", "lighting", "--dev-addr", "26011234",
              "--nwk-s-key-file", "-", "--app-s-key-file", "-",
              stdin=f"{NWK_S_KEY}\n{APP_S_KEY}\n")

    assert r.returncode == 0, r.stderr
    dev = stored(gw)[EUI2]
    assert dev.nwk_s_key == bytes.fromhex(NWK_S_KEY) and dev.app_s_key == bytes.fromhex(APP_S_KEY)
    assert dev.dev_addr == "26011234" and dev.dev_class == "C"  # lighting: Class C
    assert json.loads(nodes(gw, "show", EUI2, "--json").stdout)["keys"]["nwk_s_key"] == \
        "set (16 bytes)"


def test_a_raw_16_byte_key_file_is_accepted(gw: Path) -> None:
    raw = gw / "appkey.bin"
    raw.write_bytes(bytes.fromhex(APP_KEY))
    raw.chmod(0o600)

    r = nodes(gw, "add", EUI1, "--role", "soil", "--app-key-file", str(raw))

    assert r.returncode == 0, r.stderr
    assert stored(gw)[EUI1].app_key == bytes.fromhex(APP_KEY)


def test_key_on_the_command_line_works_but_warns_about_shell_history(gw: Path) -> None:
    r = nodes(gw, "add", EUI1, "--role", "noise", "--app-key", CMDLINE_KEY.upper())

    assert r.returncode == 0, r.stderr
    assert "shell history" in r.stderr and "--app-key-file" in r.stderr
    assert stored(gw)[EUI1].app_key == bytes.fromhex(CMDLINE_KEY)


def test_a_world_readable_key_file_gets_a_warning(gw: Path) -> None:
    kf = key_file(gw, "appkey.hex", APP_KEY, mode=0o644)

    r = nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", str(kf))

    assert r.returncode == 0
    assert "group or others may read it" in r.stderr and "chmod 600" in r.stderr


def test_no_key_and_no_terminal_says_how_to_give_one(gw: Path) -> None:
    r = nodes(gw, "add", EUI1, "--role", "air")

    assert r.returncode == 2
    assert "no AppKey given" in r.stderr and "--app-key-file" in r.stderr
    assert not (gw / "cityedge.db").exists() or EUI1 not in stored(gw)


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["--role", "air", "--app-key-file", "-"], "0011\n", "the AppKey: expected 32 hex digits"),
        (["--role", "air", "--app-key-file", "-"], "0" * 32 + "\n", "all zeros"),
        (["--role", "air", "--app-key-file", "-"], "", "found end of input"),
        (["--role", "air", "--app-key-file", "-", "--join-eui", "123"], APP_KEY + "\n",
         "--join-eui"),
        (["--role", "air", "--app-key-file", "-", "--lat", "43.5"], APP_KEY + "\n",
         "latitude and longitude go together"),
        (["--role", "air", "--dev-addr", "2601"], "", "--dev-addr: \"2601\": expected 8 hex"),
        (["--role", "air", "--app-key-file", "/nonexistent/key"], "", "no such file"),
        (["--role", "air", "--app-key-file", "-", "--nwk-s-key-file", "-"], APP_KEY + "\n",
         "not used by an OTAA node"),
    ],
)
def test_bad_add_input_is_refused_with_the_option_and_what_is_expected(
    gw: Path, args: list[str], stdin: str, expected: str
) -> None:
    r = nodes(gw, "add", EUI1, *args, stdin=stdin)

    assert r.returncode == 2
    assert expected in r.stderr
    assert r.stderr.startswith("cityedge: ")


def test_bad_dev_eui_is_refused_before_asking_for_a_key(gw: Path) -> None:
    r = nodes(gw, "add", "70b3d57e", "--role", "air")

    assert r.returncode == 2 and "DEV_EUI" in r.stderr and "16 hex digits" in r.stderr


def test_adding_an_existing_dev_eui_refuses_unless_replace(gw: Path) -> None:
    assert nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-",
                 stdin=APP_KEY).returncode == 0

    same = nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-", stdin=APP_KEY)
    assert same.returncode == 0 and "nothing changed" in same.stdout

    other = nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-", stdin=OTHER_KEY)
    assert other.returncode == 2
    assert "already registered" in other.stderr and "app_key" in other.stderr
    assert "--replace" in other.stderr
    assert stored(gw)[EUI1].app_key == bytes.fromhex(APP_KEY)

    replaced = nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-", "--replace",
                     stdin=OTHER_KEY)
    assert replaced.returncode == 0 and "replaced" in replaced.stdout
    assert stored(gw)[EUI1].app_key == bytes.fromhex(OTHER_KEY)


def test_a_dev_addr_already_in_use_is_refused(gw: Path) -> None:
    keys = f"{NWK_S_KEY}\n{APP_S_KEY}\n"
    assert nodes(gw, "add", EUI2, "--role", "lighting", "--dev-addr", "26011234",
                 "--nwk-s-key-file", "-", "--app-s-key-file", "-", stdin=keys).returncode == 0

    r = nodes(gw, "add", EUI3, "--role", "lighting", "--dev-addr", "26011234",
              "--nwk-s-key-file", "-", "--app-s-key-file", "-", stdin=keys)

    assert r.returncode == 2 and f"already belongs to node {EUI2}" in r.stderr
    assert EUI3 not in stored(gw)


def test_listing_an_empty_registry_does_not_create_the_store(gw: Path) -> None:
    r = nodes(gw, "list")

    assert r.returncode == 0 and "no nodes registered" in r.stdout
    assert listed(gw) == []
    assert not (gw / "cityedge.db").exists()


def test_show_of_an_unknown_node_says_so(gw: Path) -> None:
    r = nodes(gw, "show", EUI3)

    assert r.returncode == 2 and f"node {EUI3} is not registered" in r.stderr


def test_a_bad_config_names_the_file(gw: Path) -> None:
    cfg = gw / "gateway.toml"
    cfg.write_text(cfg.read_text().replace("max_records = 1000000", "max_records = 5"))

    r = nodes(gw, "list")

    assert r.returncode == 2 and str(cfg) in r.stderr and "store.max_records" in r.stderr


# ------------------------------------------------------------------------- remove


def test_remove_needs_yes_when_not_on_a_terminal(gw: Path) -> None:
    assert nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-",
                 stdin=APP_KEY).returncode == 0

    refused = nodes(gw, "remove", EUI1)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert EUI1 in stored(gw)

    done = nodes(gw, "remove", EUI1, "--yes")
    assert done.returncode == 0 and f"removed node {EUI1}" in done.stdout
    assert stored(gw) == {}
    assert nodes(gw, "remove", EUI1, "--yes").returncode == 2


# ------------------------------------------------------------------------- export, import


def test_export_writes_a_0600_file_with_the_keys_and_never_shows_them(gw: Path) -> None:
    assert nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-",
                 stdin=APP_KEY).returncode == 0
    out = gw / "export.jsonl"

    r = nodes(gw, "export", str(out))

    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert APP_KEY in out.read_text()
    reg = read_registry(out)
    assert reg.gateway_id == "gw1" and reg.entries[0].app_key == bytes.fromhex(APP_KEY)
    again = nodes(gw, "export", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    assert nodes(gw, "export", str(out), "--force").returncode == 0
    to_stdout = nodes(gw, "export", "-")
    assert to_stdout.returncode == 2 and "holds keys" in to_stdout.stderr


def test_export_then_import_on_another_gateway_registers_the_same_nodes(
    gw: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-", "--location",
                 "Rue Espariat", stdin=APP_KEY).returncode == 0
    assert nodes(gw, "add", EUI2, "--role", "lighting", "--dev-addr", "26011234",
                 "--nwk-s-key-file", "-", "--app-s-key-file", "-",
                 stdin=f"{NWK_S_KEY}\n{APP_S_KEY}\n").returncode == 0
    export = gw / "export.jsonl"
    assert nodes(gw, "export", str(export)).returncode == 0
    other = init_gateway(tmp_path_factory.mktemp("gw2"), "gw2")

    r = nodes(other, "import", str(export))

    assert r.returncode == 0, r.stderr
    assert "2 added, 0 updated, 0 unchanged" in r.stdout
    assert {k: (d.role, d.app_key, d.nwk_s_key, d.dev_addr, d.location)
            for k, d in stored(other).items()} == \
        {k: (d.role, d.app_key, d.nwk_s_key, d.dev_addr, d.location)
         for k, d in stored(gw).items()}


def test_import_with_one_bad_row_imports_nothing_and_names_row_and_field(gw: Path) -> None:
    bad_key = APP_KEY[:-2] + "zz"
    path = registry_file(gw, "reg.jsonl", otaa(EUI1), abp(EUI2, "26011234"),
                         otaa(EUI3, key=bad_key))

    r = nodes(gw, "import", str(path))

    assert r.returncode == 2
    assert f"{path}: line 4: app_key: expected 32 hex digits" in r.stderr
    assert "nothing imported" in r.stderr
    assert bad_key not in r.stderr
    assert listed(gw) == []


def test_import_reports_added_updated_and_unchanged(gw: Path) -> None:
    first = registry_file(gw, "a.jsonl", otaa(EUI1), otaa(EUI2, key=OTHER_KEY))
    assert nodes(gw, "import", str(first)).returncode == 0
    second = registry_file(gw, "b.jsonl", otaa(EUI1), otaa(EUI2, key=OTHER_KEY, name="north"),
                           abp(EUI3, "26011234"))

    r = nodes(gw, "import", str(second))

    assert r.returncode == 0, r.stderr
    assert "1 added, 1 updated, 1 unchanged, 0 conflicting" in r.stdout
    assert stored(gw)[EUI2].name == "north"


def test_import_never_silently_overwrites_other_keys(gw: Path) -> None:
    assert nodes(gw, "import", str(registry_file(gw, "a.jsonl", otaa(EUI1)))).returncode == 0
    changed = registry_file(gw, "b.jsonl", otaa(EUI1, key=OTHER_KEY), otaa(EUI3))

    r = nodes(gw, "import", str(changed))

    assert r.returncode == 2
    assert f"line 2: node {EUI1} is registered with other app_key" in r.stderr
    assert "nothing imported" in r.stderr and "--replace" in r.stderr
    assert set(stored(gw)) == {EUI1} and stored(gw)[EUI1].app_key == bytes.fromhex(APP_KEY)

    replaced = nodes(gw, "import", str(changed), "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert "1 added, 0 updated, 0 unchanged, 1 replaced" in replaced.stdout
    assert stored(gw)[EUI1].app_key == bytes.fromhex(OTHER_KEY)


def test_import_refuses_a_dev_addr_held_by_a_registered_node(gw: Path) -> None:
    assert nodes(gw, "import", str(registry_file(gw, "a.jsonl", abp(EUI2, "26011234")))
                 ).returncode == 0
    clash = registry_file(gw, "b.jsonl", otaa(EUI1), abp(EUI3, "26011234"))

    r = nodes(gw, "import", str(clash))

    assert r.returncode == 2
    assert f"line 3: dev_addr: 26011234 already belongs to registered node {EUI2}" in r.stderr
    assert set(stored(gw)) == {EUI2}


def test_dry_run_reports_and_writes_nothing(gw: Path) -> None:
    path = registry_file(gw, "a.jsonl", otaa(EUI1), otaa(EUI2, key=OTHER_KEY))

    r = nodes(gw, "import", str(path), "--dry-run")

    assert r.returncode == 0 and "would be 2 added" in r.stdout and "nothing written" in r.stdout
    assert not (gw / "cityedge.db").exists()


def test_import_of_a_readable_file_warns_that_it_holds_keys(gw: Path) -> None:
    path = registry_file(gw, "a.jsonl", otaa(EUI1), mode=0o644)

    r = nodes(gw, "import", str(path))

    assert r.returncode == 0
    assert "holds keys but group or others may read it" in r.stderr


def test_import_of_a_missing_or_foreign_file_says_what_is_wrong(gw: Path) -> None:
    missing = nodes(gw, "import", str(gw / "nope.jsonl"))
    assert missing.returncode == 2 and "nope.jsonl: no such file" in missing.stderr

    csv = gw / "boards.csv"
    csv.write_text("dev_eui,role\n70b3d57ed0000001,air\n")
    foreign = nodes(gw, "import", str(csv))
    assert foreign.returncode == 2 and "line 1" in foreign.stderr
    assert "not valid JSON" in foreign.stderr


# ------------------------------------------------------------------------- on a terminal


def on_terminal(gw: Path, *args: str, answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run `cityedge gateway nodes ...` on a pseudo-terminal, typing each answer once its
    prompt appears; returns (exit status, everything the terminal showed)."""
    argv = [sys.executable, "-m", "cityedge", "gateway", "nodes", *args, "--config",
            str(gw / "gateway.toml")]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling tty
        os.chdir(gw)
        os.execv(sys.executable, argv)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and pending[0][0].encode() in shown:
                os.write(fd, pending.pop(0)[1].encode() + b"\r")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_the_key_is_asked_for_on_a_terminal_and_not_echoed(gw: Path) -> None:
    status, shown = on_terminal(gw, "add", EUI1, "--role", "air",
                                answers=[("AppKey (32 hex digits, not shown):", APP_KEY)])

    assert status == 0, shown
    assert f"added node {EUI1}" in shown
    assert APP_KEY not in shown.lower()
    assert stored(gw)[EUI1].app_key == bytes.fromhex(APP_KEY)


def test_remove_on_a_terminal_asks_first(gw: Path) -> None:
    assert nodes(gw, "add", EUI1, "--role", "air", "--app-key-file", "-",
                 stdin=APP_KEY).returncode == 0

    status, shown = on_terminal(gw, "remove", EUI1, answers=[("[y/N]", "n")])
    assert status == 1 and "nothing removed" in shown
    assert EUI1 in stored(gw)

    status, shown = on_terminal(gw, "remove", EUI1, answers=[("[y/N]", "y")])
    assert status == 0 and f"removed node {EUI1}" in shown
    assert stored(gw) == {}


def test_lorawan_dev_nonce_mode_is_the_default_for_nodes_registered_without_one(
        tmp_path: Path) -> None:
    """1.0.2/1.0.3 fleets: `[lorawan] dev_nonce_mode = "unique"` applies to nodes that do not
    say otherwise, whether added on the command line or imported; an explicit value wins."""
    from dataclasses import replace

    config = default_config("gw1", tmp_path)
    config = replace(config, lorawan=replace(config.lorawan, dev_nonce_mode="unique"))
    write_config(tmp_path / "gateway.toml", config)
    assert nodes(tmp_path, "add", EUI1, "--role", "air", "--app-key-file", "-",
                 stdin=APP_KEY).returncode == 0
    file = registry_file(tmp_path, "in.jsonl", otaa(EUI2),
                         otaa("70b3d57ed0000003", dev_nonce_mode="increasing"))
    r = nodes(tmp_path, "import", str(file))
    assert r.returncode == 0, r.stderr
    modes = {k: d.dev_nonce_mode for k, d in stored(tmp_path).items()}
    assert modes == {EUI1: "unique", EUI2: "unique", "70b3d57ed0000003": "increasing"}
