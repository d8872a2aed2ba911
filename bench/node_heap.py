"""Node RAM: the MicroPython heap a node of each role needs over boot and several cycles.

Measured in the real MicroPython VM (sim/vm) running the role's node from exactly the files of
its per-role selection (bench.node_run). The VM's gc.collect() is deferred to the end of a run, so
only the runner's live-heap probe means anything: ``Boot.heap_app_peak`` is the highest live heap
sampled at every host call of a boot, above the harness's own baseline (machine, time, os,
cryptolib shims: ROM on a board). That peak has two parts, reported apart:

* code in RAM: the role's .mpy modules loaded from flash are copied into the heap (bytecode,
  interned names, module dicts and tables): measured as the live heap an import of every module
  of the selection adds (bench.node_run.measure_code_heap). Frozen into the firmware image
  (MicroPython's manifest.py), that code runs from flash and this share leaves the heap;
* working heap: the peak minus the code, i.e. what boot and a reporting cycle allocate and hold.

The brief's target, at most 32 KB of heap peak over a full cycle, is judged twice:

* with the application's .mpy files on the board's filesystem, as ``cityedge deploy`` installs
  them (``app peak``): not met, and loading only what a cycle needs cannot meet it either (the
  LoRaWAN frame layer, payload codec and radio driver take more than 32 KB once imported);
* with the application frozen into the firmware (``make firmware``), the configuration a node
  ships with. The WebAssembly VM cannot be rebuilt with our modules frozen in, and it has no
  ROMFS either (MicroPython 1.25+ can execute .mpy in place from a ROM partition; this VM build
  has no ``vfs.rom_ioctl`` nor ``vfs.VfsRom``), so the frozen peak is estimated: every import is
  split at the first line of the module's body (bench.node_run.measure_import_split). What comes
  before it (reading the .mpy: bytecode, constants, new names) stays in flash when frozen; what
  the body creates (globals dict, functions, classes, tables built at import) is in RAM either
  way. Frozen peak = working heap + what the bodies create.
Run: python -m bench.node_heap
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.node_run import ROLES, code_heap, import_split, measure_code_heap, measured
from bench.table import print_table

TARGET_BYTES = 32 * 1024


@dataclass
class HeapRow:
    """Heap figures of one role (bytes)."""

    role: str
    boots: int
    uplinks: int
    harness_baseline: int  # live heap of the harness at boot (not the application's)
    app_peak: int  # highest heap_app_peak over the boots (code in RAM + working heap)
    code_in_ram: int
    working: int
    bodies: int  # what the modules' bodies create: in RAM even when frozen

    @property
    def frozen_peak(self) -> int:
        """Estimated peak of the frozen build: the working heap and the modules' objects."""
        return self.working + self.bodies

    @property
    def met(self) -> bool:
        """The brief's target: the peak over a cycle, code included, at most 32 KB."""
        return self.app_peak <= TARGET_BYTES


def heap_row(role: str) -> HeapRow:
    """Run (or reuse) the role's node and the import measurement; combine them."""
    run = measured(role)
    peaks = [b.heap_app_peak for b in run.boots if b.heap_app_peak is not None]
    bases = [b.heap_start.live for b in run.boots if b.heap_start is not None and b.heap_start.live]
    if not peaks:
        raise RuntimeError(f"{role}: the VM reported no live heap (heap probe unavailable)")
    peak = max(peaks)
    code = code_heap(role).code_bytes
    bodies = sum(m.run_heap for m in import_split(role))
    return HeapRow(role, len(run.boots), len(run.uplinks), max(bases) if bases else 0, peak, code,
                   peak - code, bodies)


def rows() -> list[HeapRow]:
    """One row per role."""
    return [heap_row(r) for r in ROLES]


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


CYCLE_CORE = ["protocol.lorawan", "protocol.payload", "drivers.sx127x"]
"""Modules every reporting cycle of every role uses (frames, payloads, the radio)."""


def main() -> None:
    """Print the table and the verdicts."""
    data = rows()
    limit = TARGET_BYTES // 1024
    print_table(
        ("role", "boots", "uplinks", "harness base", "code in RAM", "working heap",
         "peak, .mpy files", f"<= {limit} KB", "module objects", "peak, frozen (est.)",
         f"<= {limit} KB"),
        [(r.role, r.boots, r.uplinks, _kb(r.harness_baseline), _kb(r.code_in_ram), _kb(r.working),
          _kb(r.app_peak), "met" if r.met else "NOT MET", _kb(r.bodies), _kb(r.frozen_peak),
          "met" if r.frozen_peak <= TARGET_BYTES else "NOT MET") for r in data])
    big = max(data, key=lambda r: r.app_peak)
    print(f"\nheap peak over boot and cycles, code included (.mpy files on the board's flash, "
          f"loaded into RAM), worst {big.role}: {_kb(big.app_peak)} against "
          f"{TARGET_BYTES // 1024} KB: {'met' if all(r.met for r in data) else 'NOT MET'}")
    core = measure_code_heap("soil", modules=CYCLE_CORE)
    print(f"the modules every cycle needs ({', '.join(CYCLE_CORE)}) take {_kb(core.code_bytes)} "
          "of heap once imported: loading code lazily cannot bring the peak under the target")
    worst = max(data, key=lambda r: r.frozen_peak)
    print(f"frozen into the firmware (make firmware, build/firmware/frozen/<role>/manifest.py), "
          f"estimated: worst {worst.role}: {_kb(worst.frozen_peak)} = working heap "
          f"{_kb(worst.working)} + module objects {_kb(worst.bodies)} (each import split at its "
          f"body's first line: bench.node_run.measure_import_split): "
          f"{'met' if all(r.frozen_peak <= TARGET_BYTES for r in data) else 'NOT MET'}")
    print("this VM has no ROMFS (no vfs.rom_ioctl, no vfs.VfsRom) and cannot be rebuilt with our "
          "modules frozen in: the frozen figure is an estimate; check it on a board with "
          "gc.collect(); gc.mem_alloc() after a cycle")
    print("harness base: the VM shims' live heap at boot, excluded from every other column")


if __name__ == "__main__":
    main()
