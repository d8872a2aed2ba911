"""Node CPU time per wake: the program's own Python, measured in the VM and scaled to an ESP32.

The VM runs in virtual time, so CPU time is taken from the host instead, by a method that does
not depend on the host's speed:

1. ``Boot.program_cpu_us``: host CPU time of the VM process from main.py's start to the end of
   the boot (deep sleep), minus what the harness does outside the VM (host calls, heap probe,
   the AES shim: a hardware engine on an ESP32); node runs with V8 compiling the whole
   WebAssembly VM before it starts (:data:`EAGER_FLAGS`), so no compilation is counted.
2. Minus the machine shims' own Python (JSON requests) for every host call the program made:
   ``Boot.host_calls`` x the per-call cost measured by :func:`calibrate` (C code on a board).
3. Scaled by the VM's speed against an ESP32's, both in pystones (pystone 1.2, the benchmark
   the MicroPython ESP32 figures below are quoted in). Pystone itself is not in this repository:
   :func:`calibrate` times :data:`KERNEL` (our own loop), whose pystone worth
   (:data:`KERNEL_PYSTONES`) was measured once against pystone 1.2 in the same VM.

ESP32 speed: MicroPython pystone_lowmem at 240 MHz, 1014 pystones/s (v1.13, issue
micropython/micropython#6565; 1075 in v923z/micropython-ulab#296; v1.12 gave 1602): the slower
figure, scaled linearly with the CPU clock (flash-cache stalls make the real scaling slightly
better than linear at 80 MHz, so this errs on the long side).
Run: python -m bench.node_cpu
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

from sim.vm.board import NODE_FLAGS_ENV, run_snippet

EAGER_FLAGS = "--no-liftoff --no-wasm-tier-up --no-wasm-lazy-compilation --single-threaded"
ESP32_PYSTONES_240MHZ = 1014.0  # micropython/micropython#6565 (v1.13, ESP32 module, 240 MHz)

KERNEL = """
class _Rec:
    def __init__(self, a, b):
        self.a = a
        self.b = b

    def step(self, k):
        return (self.a * k + self.b) % 9973


def kernel(n):
    acc = 0
    buf = bytearray(32)
    r = _Rec(3, 7)
    names = {"a": 1, "b": 2}
    for i in range(n):
        acc = r.step(acc + i)
        buf[i & 31] = acc & 0xFF
        if acc & 1:
            acc += names["a"] + len(buf)
        s = "%d" % (acc & 255)
        acc ^= len(s)
    return acc
"""
# Pystone 1.2 loops worth one KERNEL iteration: measured 2026-11-23 in this VM (eager flags),
# pystone 67,000 loops/s and KERNEL 437,000 iterations/s of CPU, over three runs of 20,000 each.
KERNEL_PYSTONES = 0.153

_CALIBRATE = KERNEL + """
import _hw, machine
def cpu():
    return _hw.cpu_us()[0]
kernel(2000)
t0 = cpu()
kernel(N_KERNEL)
t1 = cpu()
spi = machine.SPI(1, baudrate=1000000, sck=machine.Pin(5), mosi=machine.Pin(27), miso=machine.Pin(19))
cs = machine.Pin(18, machine.Pin.OUT, value=1)
buf = bytearray(2)
c0 = _hw.cpu_us()
for i in range(N_CALLS):
    cs.value(0)
    spi.write_readinto(b"\\x42\\x00", buf)
    cs.value(1)
c1 = _hw.cpu_us()
print("CAL", t1 - t0, c1[0] - c0[0], c1[1] - c0[1])
"""


@contextmanager
def eager_vm() -> Iterator[None]:
    """VMs started inside run with the whole WebAssembly VM compiled before it starts."""
    old = os.environ.get(NODE_FLAGS_ENV)
    os.environ[NODE_FLAGS_ENV] = EAGER_FLAGS
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(NODE_FLAGS_ENV, None)
        else:
            os.environ[NODE_FLAGS_ENV] = old


@dataclass(frozen=True)
class Calibration:
    """The VM's speed on this host, in this process."""

    kernel_per_s: float  # KERNEL iterations per second of host CPU
    shim_us_per_call: float  # host CPU of a machine shim's Python per host call

    @property
    def vm_pystones_per_s(self) -> float:
        return self.kernel_per_s * KERNEL_PYSTONES


@cache
def calibrate(n: int = 20000, calls: int = 3000) -> Calibration:
    """Time :data:`KERNEL` and a machine-shim host call in a VM compiled before it runs."""
    with eager_vm():
        code = _CALIBRATE.replace("N_KERNEL", str(n)).replace("N_CALLS", str(calls))
        out = run_snippet(code, heap_bytes=256 * 1024,
                          hang_timeout_s=120)
    line = next(ln for ln in out.splitlines() if ln.startswith("CAL "))
    kernel_us, shim_us, made = (int(x) for x in line.split()[1:])
    return Calibration(n / (kernel_us / 1e6), shim_us / made)


def esp32_pystones(mhz: int) -> float:
    """MicroPython pystones per second on an ESP32 at ``mhz`` (linear in the clock)."""
    return ESP32_PYSTONES_240MHZ * mhz / 240


def esp32_ms(vm_cpu_us: float, host_calls: int, mhz: int, cal: Calibration | None = None) -> float:
    """ESP32 milliseconds at ``mhz`` for program work measured as VM CPU with ``host_calls``."""
    cal = cal or calibrate()
    own_us = max(0.0, vm_cpu_us - host_calls * cal.shim_us_per_call)
    return own_us / 1e3 * cal.vm_pystones_per_s / esp32_pystones(mhz)


def main() -> None:
    """Print the calibration."""
    cal = calibrate()
    print(f"VM on this host: {cal.vm_pystones_per_s:.0f} pystones/s of CPU; machine shim "
          f"{cal.shim_us_per_call:.1f} us of CPU per host call; one ms of VM CPU is "
          f"{cal.vm_pystones_per_s / esp32_pystones(160):.0f} ms on an ESP32 at 160 MHz")


if __name__ == "__main__":
    main()
