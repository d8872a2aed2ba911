"""A node's label: a QR code with DevEUI, JoinEUI, role and asset reference, as PNG and PDF.

The QR payload is a short ``key:value`` text any phone reader shows as it is; it never holds a
key. The PNG (segno) carries the payload again in a ``tEXt`` chunk; the PDF (written here: the
code as filled squares plus the readable lines in Helvetica) is sized for a 62 mm label printer.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import segno

FORMAT = "CITYEDGE1"
MODULE_PT = 3.0  # one QR module in PDF points
MARGIN_PT = 12.0


@dataclass(frozen=True)
class Label:
    """What a label says: public identity only."""

    dev_eui: str
    join_eui: str | None
    role: str
    asset: str
    street: str = ""

    def payload(self) -> str:
        """The QR code's text (``CITYEDGE1;D:<DevEUI>;J:<JoinEUI>;R:<role>;A:<asset>``)."""
        parts = [FORMAT, f"D:{self.dev_eui.upper()}", f"J:{(self.join_eui or '-').upper()}",
                 f"R:{self.role}", f"A:{self.asset or '-'}"]
        return ";".join(p.replace(";", ",") for p in parts)

    def lines(self) -> list[str]:
        """The human-readable lines printed under the code."""
        out = [f"DevEUI {self.dev_eui.upper()}", f"JoinEUI {(self.join_eui or '-').upper()}",
               f"role {self.role}", f"asset {self.asset or '-'}"]
        if self.street:
            out.append(self.street)
        return out


def qr_code(label: Label) -> segno.QRCode:
    """The QR code of a label (error correction M, never a Micro QR)."""
    return segno.make(label.payload(), error="m", micro=False)


def _png_with_text(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with a tEXt chunk inserted after IHDR (PNG spec 11.3.4.3)."""
    body = keyword.encode("latin-1") + b"\0" + text.encode("latin-1", "replace")
    chunk = (struct.pack(">I", len(body)) + b"tEXt" + body
             + struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF))
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def _pdf_text(s: str) -> str:
    """A PDF literal string body (Latin-1, with \\, ( and ) escaped)."""
    clean = s.encode("latin-1", "replace").decode("latin-1")
    return clean.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def label_pdf(label: Label) -> bytes:
    """A one-page PDF: the QR code (4-module quiet zone) above the readable lines."""
    matrix = qr_code(label).matrix
    n = len(matrix)
    side = (n + 8) * MODULE_PT
    lines = label.lines()
    width = max(side, 7.0 * max(len(x) for x in lines)) + 2 * MARGIN_PT
    text_h = 14.0 * len(lines)
    height = side + text_h + 2 * MARGIN_PT
    ops = ["0 g"]
    x0 = (width - side) / 2 + 4 * MODULE_PT
    top = height - MARGIN_PT - 4 * MODULE_PT
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                ops.append(f"{x0 + c * MODULE_PT:.1f} {top - (r + 1) * MODULE_PT:.1f} "
                           f"{MODULE_PT:.1f} {MODULE_PT:.1f} re")
    ops.append("f")
    y = MARGIN_PT + text_h - 11
    for line in lines:
        ops.append(f"BT /F1 10 Tf {MARGIN_PT:.1f} {y:.1f} Td ({_pdf_text(line)}) Tj ET")
        y -= 14
    content = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:.1f} {height:.1f}] "
         "/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>").encode(),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({_pdf_text(label.payload())}) /Producer (cityedge) >>".encode("latin-1"),
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, len(objects), xref))
    return out.getvalue()


def write_label(label: Label, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<DevEUI>.png`` and ``<DevEUI>.pdf`` into ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    qr_code(label).save(buf, kind="png", scale=6, border=4)
    png = out_dir / f"{label.dev_eui}.png"
    pdf = out_dir / f"{label.dev_eui}.pdf"
    png.write_bytes(_png_with_text(buf.getvalue(), "cityedge", label.payload()))
    pdf.write_bytes(label_pdf(label))
    return png, pdf
