"""Bytes on air and time on air of each role's typical uplink, at SF7 and SF12 (125 kHz, EU868).

Bytes on air = the LoRaWAN PHYPayload: MHDR 1 + DevAddr 4 + FCtrl 1 + FCnt 2 + FPort 1 + MIC 4
(13 bytes of overhead) + FOpts + the application payload. Two sources per role:

* measured: the role's data uplinks (its FPort) as the simulated gateway received them from the
  node running in the MicroPython VM (bench.node_run), at SF7; the channel's time on air is shown
  beside the formula's as a cross-check;
* full reading set: the first (largest) reading set of bench.payload_size for the role, encoded
  with protocol.payload and framed with no FOpts.

Times on air come from protocol.airtime (Semtech's formula, explicit header, CRC on, CR 4/5,
8-symbol preamble, low data rate optimisation at SF12 as EU868 requires). Run:
python -m bench.node_airtime
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bench.node_run import ROLES, measured
from bench.payload_size import READING_SETS
from bench.table import print_table
from protocol.airtime import time_on_air_us
from protocol.payload import encode_uplink

LORAWAN_OVERHEAD = 13  # MHDR + DevAddr + FCtrl + FCnt + FPort + MIC
DATA_PORTS = {"air": 10, "noise": 11, "soil": 12, "lighting": 13}


@dataclass
class AirRow:
    """One uplink kind of one role."""

    role: str
    source: str
    payload: int
    fopts: int
    phy: int
    toa_sf7_us: int
    toa_sf12_us: int
    channel_sf7_us: int | None = None  # what the simulated channel measured (measured rows)


def _row(role: str, source: str, payload: int, fopts: int,
         channel_us: int | None = None) -> AirRow:
    phy = LORAWAN_OVERHEAD + fopts + payload
    return AirRow(role, source, payload, fopts, phy, time_on_air_us(phy, 7), time_on_air_us(phy, 12),
                  channel_us)


def rows() -> list[AirRow]:
    """Measured typical uplink and full reading set, per role."""
    out = []
    for role in ROLES:
        run = measured(role)
        ups = [u for u in run.uplinks if u.fport == DATA_PORTS[role] and u.sf == 7]
        if ups:
            phy, _n = Counter(u.phy_bytes for u in ups).most_common(1)[0]
            one = next(u for u in ups if u.phy_bytes == phy)
            out.append(_row(role, f"measured in VM ({len(ups)} uplinks)",
                            phy - LORAWAN_OVERHEAD - one.fopts, one.fopts, one.airtime_us))
        label, readings = READING_SETS[role][0]
        _fport, payload = encode_uplink(role, readings)
        out.append(_row(role, f"full set: {label}", len(payload), 0))
    return out


def main() -> None:
    """Print the table."""
    data = rows()
    print_table(
        ("role", "uplink", "payload B", "FOpts B", "PHYPayload B", "ToA SF7", "ToA SF12",
         "channel SF7"),
        [(r.role, r.source, r.payload, r.fopts, r.phy, f"{r.toa_sf7_us / 1000:.1f} ms",
          f"{r.toa_sf12_us / 1000:.1f} ms",
          f"{r.channel_sf7_us / 1000:.1f} ms" if r.channel_sf7_us is not None else "-")
         for r in data], left=(0, 1))
    print("\nPHYPayload = 13 B LoRaWAN overhead + FOpts + payload; ToA: Semtech's formula, 125 kHz, "
          "CR 4/5, 8-symbol preamble, explicit header, CRC; LDRO at SF12")


if __name__ == "__main__":
    main()
