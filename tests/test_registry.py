"""The registry file format (gateway.registry): parse, validate, write, compare with the store.

Real files and a real SQLite store; a property test feeds the parser arbitrary text and rows.
"""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.registry import (
    FORMAT_VERSION,
    RegistryEntry,
    RegistryError,
    apply_plan,
    device_for,
    entry_from_device,
    parse_registry,
    plan_import,
    read_registry,
    serialize_registry,
    write_registry,
)
from gateway.store import DeviceConflictError, Store

APP_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
NWK_S_KEY = "000102030405060708090a0b0c0d0e0f"
APP_S_KEY = "f0e0d0c0b0a090807060504030201000"
HEADER = json.dumps({"cityedge_registry": FORMAT_VERSION})


def otaa_row(n: int = 1, **over: object) -> dict[str, object]:
    row: dict[str, object] = {"dev_eui": f"70b3d57ed000{n:04x}", "role": "air",
                              "activation": "otaa", "join_eui": "70b3d57ed0000000",
                              "app_key": APP_KEY}
    row.update(over)
    return row


def abp_row(n: int = 2, **over: object) -> dict[str, object]:
    row: dict[str, object] = {"dev_eui": f"70b3d57ed000{n:04x}", "role": "lighting",
                              "activation": "abp", "dev_addr": f"2601{n:04x}",
                              "nwk_s_key": NWK_S_KEY, "app_s_key": APP_S_KEY}
    row.update(over)
    return row


def text_of(*rows: dict[str, object], header: str = HEADER) -> str:
    return "\n".join([header, *(json.dumps(r) for r in rows)]) + "\n"


def error_of(text: str) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, "reg.jsonl")
    return info.value


def assert_no_key_in(message: str) -> None:
    for key in (APP_KEY, NWK_S_KEY, APP_S_KEY):
        assert key not in message.lower()


# ------------------------------------------------------------------------- parsing


def test_otaa_and_abp_rows_parse_into_typed_entries() -> None:
    reg = parse_registry(text_of(otaa_row(1, name="Cours Mirabeau 1", latitude=43.52,
                                          longitude=5.45), abp_row(2)))

    otaa, abp = reg.entries
    assert otaa.dev_eui == "70b3d57ed0000001" and otaa.activation == "otaa"
    assert otaa.app_key == bytes.fromhex(APP_KEY) and otaa.dev_class == "A"
    assert otaa.latitude == 43.52 and otaa.name == "Cours Mirabeau 1"
    assert abp.dev_class == "C"  # lighting defaults to Class C
    assert abp.dev_addr == "26010002" and abp.nwk_s_key == bytes.fromhex(NWK_S_KEY)
    assert reg.lines == (2, 3)


def test_separators_and_upper_case_are_normalised() -> None:
    reg = parse_registry(text_of(otaa_row(dev_eui="70:B3:D5:7E:D0:00:00:01",
                                          app_key=APP_KEY.upper())))

    assert reg.entries[0].dev_eui == "70b3d57ed0000001"
    assert reg.entries[0].app_key == bytes.fromhex(APP_KEY)


def test_blank_lines_crlf_and_a_byte_order_mark_are_accepted() -> None:
    text = "\ufeff" + text_of(otaa_row(1), abp_row(2)).replace("\n", "\r\n\r\n")

    assert len(parse_registry(text).entries) == 2


def test_repr_of_an_entry_never_shows_a_key() -> None:
    entry = parse_registry(text_of(otaa_row(), abp_row())).entries
    assert_no_key_in(repr(entry))


@pytest.mark.parametrize(
    ("row", "field", "expected"),
    [
        (otaa_row(app_key="00112233"), "app_key", "expected 32 hex digits"),
        (otaa_row(app_key=None), "app_key", "missing"),
        (otaa_row(app_key="0" * 32), "app_key", "all zeros"),
        (otaa_row(dev_eui="70b3d57ed00000"), "dev_eui", "expected 16 hex digits"),
        (otaa_row(role="parking"), "role", "expected one of air, noise, soil, lighting"),
        (otaa_row(activation="magic"), "activation", "expected one of otaa, abp"),
        (otaa_row(**{"class": "B"}), "class", "expected one of A, C"),
        (otaa_row(dev_addr="26011234"), "dev_addr", "is an ABP field"),
        (abp_row(app_key=APP_KEY), "app_key", "is an OTAA field"),
        (abp_row(dev_addr="2601"), "dev_addr", "expected 8 hex digits"),
        (abp_row(app_s_key=None), "app_s_key", "missing"),
        (abp_row(fcnt_up=2**32), "fcnt_up", "expected an integer"),
        (otaa_row(latitude=91, longitude=5), "latitude", "expected degrees"),
        (otaa_row(latitude=43.5), "longitude", "latitude and longitude go together"),
        (otaa_row(name="a\x00b"), "name", "printable"),
        (otaa_row(appkey=APP_KEY), "appkey", "did you mean 'app_key'"),
        (otaa_row(dev_nonce_mode="random"), "dev_nonce_mode", "expected one of"),
    ],
)
def test_a_bad_field_is_named_with_its_line_and_what_is_expected(
    row: dict[str, object], field: str, expected: str
) -> None:
    err = error_of(text_of(otaa_row(9), row))

    assert err.line == 3 and err.field == field
    assert str(err).startswith(f"reg.jsonl: line 3: {field}: ")
    assert expected in str(err)
    assert_no_key_in(str(err))


def test_a_key_pasted_into_the_wrong_field_is_not_echoed() -> None:
    err = error_of(text_of(otaa_row(dev_eui=APP_KEY)))

    assert err.field == "dev_eui"
    assert_no_key_in(str(err))


def test_invalid_json_line_names_the_line_without_echoing_it() -> None:
    text = HEADER + "\n" + json.dumps(otaa_row())[:-5] + "\n"

    err = error_of(text)

    assert err.line == 2 and "not valid JSON" in str(err)
    assert_no_key_in(str(err))


def test_missing_or_wrong_header_is_refused() -> None:
    assert "header" in str(error_of(json.dumps(otaa_row()) + "\n"))
    assert "empty file" in str(error_of("\n\n"))
    newer = error_of(text_of(otaa_row(), header='{"cityedge_registry": 2}'))
    assert "version 2 is not supported" in str(newer) and "upgrade" in str(newer)


def test_duplicate_dev_eui_or_dev_addr_in_one_file_is_refused() -> None:
    err = error_of(text_of(otaa_row(1), otaa_row(1)))
    assert err.line == 3 and err.field == "dev_eui" and "already on line 2" in str(err)

    err = error_of(text_of(abp_row(2), abp_row(3, dev_addr="26010002")))
    assert err.line == 3 and err.field == "dev_addr"


def test_a_truncated_file_is_caught_by_the_header_count() -> None:
    text = text_of(otaa_row(1), header='{"cityedge_registry": 1, "count": 2}')

    assert "announces 2 nodes but the file has 1" in str(error_of(text))


def test_duplicate_fields_and_nan_are_refused() -> None:
    assert "appears twice" in str(error_of(HEADER + '\n{"role": "air", "role": "soil"}\n'))
    assert "not valid JSON" in str(error_of(HEADER + '\n{"latitude": NaN}\n'))


def test_private_x_fields_are_ignored() -> None:
    reg = parse_registry(text_of(otaa_row(x_board="heltec-v3", x_batch=7)))

    assert reg.entries[0].dev_eui == "70b3d57ed0000001"


# ------------------------------------------------------------------------- property tests

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(max_size=40)
_json_values = _json_scalars | st.lists(_json_scalars, max_size=2) | \
    st.dictionaries(st.text(max_size=5), _json_scalars, max_size=2)
_field_names = st.sampled_from(["dev_eui", "role", "class", "activation", "app_key", "join_eui",
                                "dev_addr", "nwk_s_key", "app_s_key", "name", "latitude",
                                "longitude", "fcnt_up", "fcnt_down", "dev_nonce_mode",
                                "location", "asset_id", "x_note"]) | st.text(max_size=12)
_rows = st.dictionaries(_field_names, _json_values | st.sampled_from(
    ["air", "lighting", "otaa", "abp", "A", "C", APP_KEY, "70b3d57ed0000001", "26011234"]),
    max_size=10)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_parses_or_raises_a_registry_error(text: str) -> None:
    try:
        parse_registry(text, "fuzz.jsonl")
    except RegistryError as exc:
        assert str(exc).startswith("fuzz.jsonl")
        assert exc.line is None or exc.line >= 1


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_rows, max_size=3), st.booleans())
def test_arbitrary_rows_parse_or_raise_with_a_row_number(rows: list[dict], blank: bool) -> None:
    text = text_of(*rows).replace("\n", "\n\n" if blank else "\n")
    try:
        reg = parse_registry(text, "fuzz.jsonl")
    except RegistryError as exc:
        assert exc.line is not None or exc.field == "count"
        assert_no_key_in(str(exc))
    else:
        assert len(reg.entries) == len(rows)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_in_a_file_raise_only_registry_error(tmp_path_factory: pytest.TempPathFactory,
                                                             data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-registry.jsonl"
    path.write_bytes(data)
    try:
        read_registry(path)
    except RegistryError as exc:
        assert str(exc).startswith(str(path))


_entries = st.builds(
    lambda n, role, otaa, name, lat: parse_registry(text_of(
        otaa_row(n, role=role, name=name, **({"latitude": lat, "longitude": 5.0} if lat else {}))
        if otaa else abp_row(n, role=role, name=name, fcnt_up=n))).entries[0],
    st.integers(1, 0xFFFF), st.sampled_from(["air", "noise", "soil", "lighting"]), st.booleans(),
    st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1,
                        max_size=30).map(str.strip).filter(lambda t: bool(t) and t.isprintable()),
    st.none() | st.floats(-90, 90, allow_nan=False),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_entries, max_size=5, unique_by=lambda e: e.dev_eui))
def test_serialized_entries_parse_back_equal(entries: list[RegistryEntry]) -> None:
    addrs = [e.dev_addr for e in entries if e.dev_addr]
    if len(addrs) != len(set(addrs)):
        return
    reg = parse_registry(serialize_registry(entries, gateway_id="gw1"))

    assert list(reg.entries) == entries and reg.gateway_id == "gw1"


# ------------------------------------------------------------------------- files


def test_written_file_is_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    entries = parse_registry(text_of(otaa_row(1), abp_row(2))).entries
    path = tmp_path / "reg.jsonl"

    write_registry(path, entries)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_registry(path).entries == entries
    with pytest.raises(RegistryError, match="already exists"):
        write_registry(path, entries)
    write_registry(path, entries[:1], force=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_registry(path).entries) == 1


def test_unreadable_or_non_utf8_files_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such file"):
        read_registry(tmp_path / "missing.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(HEADER.encode() + b"\n{\"name\": \"caf\xe9\"}\n")
    with pytest.raises(RegistryError, match="line 2: not UTF-8"):
        read_registry(bad)


# ------------------------------------------------------------------------- with the store


def test_plan_sorts_entries_into_added_updated_unchanged_and_conflicting(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite") as store:
        first = parse_registry(text_of(otaa_row(1), otaa_row(2), abp_row(3))).entries
        apply_plan(store, plan_import(first, []), replace_conflicting=False)
        second = parse_registry(text_of(
            otaa_row(1),                                   # unchanged
            otaa_row(2, name="renamed"),                   # updated (no key change)
            abp_row(3, nwk_s_key=APP_KEY),                 # conflicting (other key)
            otaa_row(4),                                   # added
        )).entries

        plan = plan_import(second, store.list_devices())

        assert [e.dev_eui[-1] for e in plan.unchanged] == ["1"]
        assert [(e.dev_eui[-1], d) for e, _, d in plan.updated] == [("2", ["name"])]
        assert [(e.dev_eui[-1], d) for e, _, d in plan.conflicting] == [("3", ["nwk_s_key"])]
        assert [e.dev_eui[-1] for e in plan.added] == ["4"]


def test_update_keeps_the_session_and_replacement_starts_it_over(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite") as store:
        entry = parse_registry(text_of(abp_row(3))).entries[0]
        store.upsert_device(device_for(entry, None))
        dev = store.get_device(entry.dev_eui)
        assert dev is not None
        store.upsert_device(replace(dev, fcnt_up=41, fcnt_down=7))
        dev = store.get_device(entry.dev_eui)
        assert dev is not None

        renamed = parse_registry(text_of(abp_row(3, name="north"))).entries[0]
        kept = device_for(renamed, dev)
        assert (kept.fcnt_up, kept.fcnt_down, kept.name) == (41, 7, "north")

        rekeyed = parse_registry(text_of(abp_row(3, app_s_key=APP_KEY))).entries[0]
        fresh = device_for(rekeyed, dev)
        assert (fresh.fcnt_up, fresh.fcnt_down) == (-1, 0)
        assert fresh.app_s_key == bytes.fromhex(APP_KEY)


def test_a_dev_addr_held_by_another_registered_node_is_a_clash(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite") as store:
        apply_plan(store, plan_import(parse_registry(text_of(abp_row(2))).entries, []),
                   replace_conflicting=False)
        other = parse_registry(text_of(abp_row(9, dev_addr="26010002"))).entries

        plan = plan_import(other, store.list_devices())

        assert [(e.dev_eui, owner) for e, owner in plan.addr_clashes] == [
            ("70b3d57ed0000009", "70b3d57ed0000002")]


def test_a_failed_apply_puts_every_device_back(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite") as store:
        first = parse_registry(text_of(otaa_row(1), abp_row(2))).entries
        apply_plan(store, plan_import(first, []), replace_conflicting=False)
        before = store.list_devices()
        # The ABP entry takes the DevAddr of node 2: the real store refuses it when it comes to
        # it, after the update of node 1 and the addition of node 5 were written.
        entries = parse_registry(text_of(otaa_row(1, name="new"), otaa_row(5),
                                         abp_row(6, dev_addr="26010002"))).entries
        plan = plan_import(entries, before)
        plan.addr_clashes.clear()  # as if the check had been skipped

        with pytest.raises(DeviceConflictError):
            apply_plan(store, plan, replace_conflicting=False)

        after = store.list_devices()
        assert [(d.dev_eui, d.name) for d in after] == [(d.dev_eui, d.name) for d in before]


def test_export_of_a_stored_device_round_trips(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite") as store:
        entries = parse_registry(text_of(otaa_row(1, location="Rue X"), abp_row(2))).entries
        apply_plan(store, plan_import(entries, []), replace_conflicting=False)

        exported = [entry_from_device(d) for d in store.list_devices()]

    again = parse_registry(serialize_registry(exported)).entries
    assert again[0] == entries[0]
    assert again[1].nwk_s_key == entries[1].nwk_s_key and again[1].fcnt_up == -1
