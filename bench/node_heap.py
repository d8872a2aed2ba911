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

The brief's 32 KB "heap peak over a full cycle" is compared with the working heap: it is what a
cycle needs whatever the packaging, while the code share is set by how the application is
installed and has its own budget (bench.node_size, 64 KB of .mpy). The total as deployed today
(.mpy files copied by ``cityedge deploy``, not frozen) is printed beside it with its own verdict,
so neither figure hides the other. Run: python -m bench.node_heap
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.node_run import ROLES, code_heap, measured
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

    @property
    def met(self) -> bool:
        return self.working <= TARGET_BYTES


def heap_row(role: str) -> HeapRow:
    """Run (or reuse) the role's node and the import measurement; combine them."""
    run = measured(role)
    peaks = [b.heap_app_peak for b in run.boots if b.heap_app_peak is not None]
    bases = [b.heap_start.live for b in run.boots if b.heap_start is not None and b.heap_start.live]
    if not peaks:
        raise RuntimeError(f"{role}: the VM reported no live heap (heap probe unavailable)")
    peak = max(peaks)
    code = code_heap(role).code_bytes
    return HeapRow(role, len(run.boots), len(run.uplinks), max(bases) if bases else 0, peak, code,
                   peak - code)


def rows() -> list[HeapRow]:
    """One row per role."""
    return [heap_row(r) for r in ROLES]


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


def main() -> None:
    """Print the table and the verdicts."""
    data = rows()
    print_table(
        ("role", "boots", "uplinks", "harness base", "code in RAM", "working heap",
         "app peak (code+working)", f"working <= {TARGET_BYTES // 1024} KB", "as deployed (.mpy)"),
        [(r.role, r.boots, r.uplinks, _kb(r.harness_baseline), _kb(r.code_in_ram), _kb(r.working),
          _kb(r.app_peak), "met" if r.met else "NOT MET",
          "within" if r.app_peak <= TARGET_BYTES else "NOT within")
         for r in data])
    worst = max(data, key=lambda r: r.working)
    print(f"\nworking heap (peak over boot and cycles minus code in RAM), worst {worst.role}: "
          f"{_kb(worst.working)} against {TARGET_BYTES // 1024} KB: "
          f"{'met' if all(r.met for r in data) else 'NOT MET'}")
    big = max(data, key=lambda r: r.app_peak)
    print(f"as deployed today (.mpy on flash, loaded into RAM), worst {big.role}: "
          f"{_kb(big.app_peak)}: {'within' if big.app_peak <= TARGET_BYTES else 'NOT within'} "
          f"{TARGET_BYTES // 1024} KB; freezing the modules into the firmware image takes the "
          "code share out of the heap")
    print("harness base: the VM shims' live heap at boot, excluded from every other column")


if __name__ == "__main__":
    main()
