"""Gateway stages on this machine, one core: network checks, group commit, signing, verification.

The full Semtech-UDP-to-broker figures belong to the gateway agent issue; these are the stages
they are built from, each measured alone on synthetic but valid frames.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from gateway.counters import Counters
from gateway.keys import generate_signing_key
from gateway.lorawan import NetworkSide
from gateway.radio import RxFrame
from gateway.store import Device, Store
from gateway.uplink.cose import CONTENT_SENML_CBOR, sign1, verify1
from gateway.uplink.senml import encode_pack
from protocol import lorawan
from protocol import payload as codec

DEVICES = 100
FRAMES = 20_000


def _frames(aes, devices: list[Device], per_device: int) -> list[RxFrame]:
    port, data = codec.encode_uplink("air", {"temperature": 21.37, "humidity": 48.2,
                                             "pm2_5": 12.0, "battery": 3.01})
    now = time.time()
    out = []
    for fcnt in range(1, per_device + 1):
        for d in devices:
            phy = lorawan.build_data_frame(aes, lorawan.MTYPE_UNCONFIRMED_UP, int(d.dev_addr, 16),
                                           fcnt, port, data, d.nwk_s_key, d.app_s_key)
            out.append(RxFrame(phy=phy, tmst_us=0, freq_hz=868_100_000, sf=7, bw_khz=125,
                               rssi_dbm=-90.0, snr_db=6.5, received_at=now))
    return out


def rows() -> list[tuple[str, str, str, str]]:
    """(stage, rate, wall per item, CPU per item) measured now."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        devices = []
        for i in range(DEVICES):
            d = Device(dev_eui=f"70b3d57ed1{i:06x}", role="air", dev_addr=f"26{i:06x}",
                       nwk_s_key=os.urandom(16), app_s_key=os.urandom(16))
            store.upsert_device(d)
            devices.append(d)
        net = NetworkSide(store, "bench-gw", Counters())
        frames = _frames(net.aes, devices, FRAMES // DEVICES)

        t0, c0 = time.perf_counter(), time.process_time()
        accepted = [net.handle(f) for f in frames]
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append(_row("MIC + FCnt + decrypt + decode + SenML", len(frames), dt, cpu))

        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(accepted), 512):
            store.accept_uplinks(accepted[i:i + 512])
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append(_row("SQLite commit, groups of 512 (WAL, FULL)", len(accepted), dt, cpu))

        key = generate_signing_key(Path(tmp) / "k.pem")
        bodies = [encode_pack(a.records) for a in accepted[:5000]]
        t0, c0 = time.perf_counter(), time.process_time()
        signed = [sign1(b, key, CONTENT_SENML_CBOR) for b in bodies]
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append(_row("COSE_Sign1 Ed25519 over a SenML pack", len(bodies), dt, cpu))

        t0, c0 = time.perf_counter(), time.process_time()
        for s in signed:
            verify1(s, {key.kid: key.public_key})
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append(_row("COSE_Sign1 verify (hypervisor side)", len(signed), dt, cpu))
        store.close()
    return out


def _row(stage: str, n: int, seconds: float, cpu: float) -> tuple[str, str, str, str]:
    return (stage, f"{n / seconds:,.0f} /s", f"{seconds / n * 1e6:.1f} µs",
            f"{cpu / n * 1e6:.1f} µs")


def main() -> None:
    from bench.table import print_table

    print_table(("stage (one core)", "rate", "per item", "CPU per item"), rows())


if __name__ == "__main__":
    main()
