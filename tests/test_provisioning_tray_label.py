"""Tray CSV checks, label files and esptool failures: no board needed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from provisioning.flash import FlashFailed, run_esptool
from provisioning.label import Label, label_pdf, write_label
from provisioning.provision import Options
from provisioning.tray import TrayError, read_tray


def tray(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tray.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("port,role\n/dev/ttyUSB0,air\n", "row 1: missing column(s) board"),
    ("port,role,board\n/dev/ttyUSB0,air,heltec-lora32-v2\n/dev/ttyUSB0,air,pico-rfm95\n",
     "row 3: port: /dev/ttyUSB0 is already on row 2"),
    ("port,role,board,dev_eui\n/dev/ttyUSB0,air,pico-rfm95,12345\n",
     "row 2: dev_eui: '12345' is not an EUI-64"),
    ("port,role,board,lat\n/dev/ttyUSB0,air,pico-rfm95,43.5\n",
     "row 2: lon: empty (a location needs both lat and lon)"),
    ("port,role,board,interval\n/dev/ttyUSB0,air,pico-rfm95,1\n", "row 2: the node would refuse"),
    ("port,role,board\n,air,pico-rfm95\n", "row 2: port: empty"),
    ("port,role,board\n", "no boards listed"),
    ("port,role,board,latitude,longitude\n/dev/ttyUSB0,air,pico-rfm95,43.5,5.4\n",
     "row 1: column 'latitude': call it 'lat'"),
])
def test_a_bad_tray_names_the_row_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TrayError, match=re.escape(message)):
        read_tray(tray(tmp_path, text), Options())


def test_extra_columns_are_role_settings_read_as_json_when_they_can_be(tmp_path: Path) -> None:
    (spec,) = read_tray(tray(tmp_path, "port,role,board,max_open_s,zone,street\n"
                             "/dev/ttyUSB0,soil,pico-rfm95,1800,north,Cours Mirabeau\n\n"),
                        Options())
    assert spec.settings == {"max_open_s": 1800, "zone": "north"}
    assert spec.street == "Cours Mirabeau" and spec.row == 2


def test_label_pdf_is_well_formed_and_carries_no_key(tmp_path: Path) -> None:
    label = Label("70b3d57ed0000042", "70b3d57ed0000000", "lighting", "AIX-LGT-(3)", "Rue d'Italie")
    pdf = label_pdf(label)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    start = int(pdf.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert pdf[start:].startswith(b"xref\n")
    offsets = re.findall(rb"(\d{10}) 00000 n ", pdf)
    for n, off in enumerate(offsets, 1):
        assert pdf[int(off):].startswith(b"%d 0 obj" % n)
    assert b"AIX-LGT-\\(3\\)" in pdf and b"Rue d'Italie" in pdf
    png, written = write_label(label, tmp_path / "labels")
    assert png.read_bytes().startswith(b"\x89PNG") and written.read_bytes() == pdf
    assert label.payload() == "CITYEDGE1;D:70B3D57ED0000042;J:70B3D57ED0000000;R:lighting;A:AIX-LGT-(3)"


def test_a_failing_esptool_is_a_device_fault_with_advice() -> None:
    cmd = [sys.executable, "-c", "raise SystemExit(2)", "--port", "/dev/ttyUSB0"]
    with pytest.raises(FlashFailed, match=r"esptool failed \(exit 2\) on /dev/ttyUSB0: hold"):
        run_esptool([cmd])
