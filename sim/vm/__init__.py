"""Virtual MicroPython boards: the real MicroPython VM (WebAssembly port) under Node.js.

Its ``machine``, ``time`` and ``cryptolib`` reach the simulation (sim.clock, sim.bus) over pipes;
see board.py for the host side, runner.mjs for the VM process and mpy/ for the VM-side shims.
"""

from sim.vm.board import (
    DEEPSLEEP_RESET,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
    BoardHardware,
    Boot,
    CodeError,
    CodeResult,
    HeapStats,
    VirtualBoard,
    VMError,
    VMInstall,
    VMUnavailable,
    find_vm,
    harness_heap_bytes,
    run_code,
    run_snippet,
)

__all__ = [
    "DEEPSLEEP_RESET",
    "HARD_RESET",
    "PWRON_RESET",
    "SOFT_RESET",
    "WDT_RESET",
    "BoardHardware",
    "Boot",
    "CodeError",
    "CodeResult",
    "HeapStats",
    "VMError",
    "VMInstall",
    "VMUnavailable",
    "VirtualBoard",
    "find_vm",
    "harness_heap_bytes",
    "run_code",
    "run_snippet",
]
