"""Run one node of a role in the real MicroPython VM, from only that role's compiled files.

The benchmark harness behind bench.node_heap and bench.energy: the board's flash holds what
``sim.mpy.compile_role`` selects for the role (firmware core, the role, its drivers, the protocol
modules they import), ``main.py`` and an ABP ``config.json``; the board is wired per the Heltec
WiFi LoRa 32 (V2) pin map to a register-level SX1276 on the simulated channel and to the role's
chip models. A Concentrator captures the uplinks (no network answers them: Class A receive
windows close empty, as most of them do in the field).

What is measured, all in virtual time or from the VM's heap probe (nothing from the wall clock):
per boot the live heap peak and the awake time; the SX1276's time in each mode (from the register
model's mode changes); the SPS30 fan time, the soil probe's powered time, the valve pulses and
open spans; every uplink's PHYPayload size and time on air. Besides, per boot, the host CPU time
of the program's Python (``Boot.program_cpu_us``, scaled to an ESP32 by bench.node_cpu) and, per
module, what an import costs before and after the first line of its body (heap and CPU:
:func:`measure_import_split`, the frozen-firmware estimate of bench.node_heap and bench.energy).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from firmware.boards import pin_map
from protocol import lorawan
from protocol import payload as codec
from protocol import region_eu868 as region
from sim.channel import Concentrator, RadioChannel, RxPacket
from sim.clock import VirtualClock
from sim.environment import Environment
from sim.ina219 import INA219Model, LampCircuit
from sim.mpy import REPO, CompileReport, compile_role
from sim.pcba_dbm import DecibelMeterModel
from sim.seesaw import SeesawSoilModel
from sim.sht4x import SHT4xModel
from sim.sps30 import SPS30Model
from sim.sx1276 import MODE_RX_CONTINUOUS, MODE_RX_SINGLE, MODE_SLEEP, MODE_TX, SX1276Model
from sim.valve import LatchingValveModel
from sim.vm.board import WDT_RESET, BoardHardware, Boot, VirtualBoard

ROLES = ("air", "noise", "soil", "lighting")
DEEPSLEEP_CAUSE = 4  # machine.DEEPSLEEP_RESET (sim.vm.board numbering)
BOARD = "heltec-lora32-v2"
BATTERY_UV = 3_000_000  # 2xAA, fresh, as seen by the board's divider input
NWK_S_KEY = bytes(range(1, 17))  # ABP session keys of the bench nodes (test values)
APP_S_KEY = bytes(range(2, 18))
INTERVAL_S = 900  # one uplink per 15 minutes (the brief's soil target)
SOIL_POWER_PIN = 13  # the probe's supply switch (free on the Heltec V2, not a strapping pin)
SOIL_BRIDGE_SLEEP_PIN = 23  # the H-bridge's nSLEEP: the bridge sleeps between pulses
SOIL_VALVE = (32, 33)  # firmware/roles/soil.py PINS defaults
LIGHTING_PINS = {"pwm": 25, "relay": 13, "s0": 32}  # firmware/roles/lighting.py PINS defaults

# Settings of the benchmark nodes. Air and noise run shorter than their defaults (30 s PM warm-up,
# 60 s noise window) because with the defaults the node's 30 s watchdog resets the board in every
# cycle: the roles feed ``hw.wdt`` during their long waits, but firmware/app.py never gives the
# Hardware object a ``wdt`` attribute (a firmware bug, reported; run_node refuses WDT resets).
SETTINGS: dict[str, dict[str, Any]] = {
    "air": {"pm_warmup_s": 20},  # SPS30 DS: start-up time 8 s to 30 s depending on concentration
    "noise": {"window_s": 20},  # 20 one-second LAeq samples per report
    # the low-power design switches the probe's supply: it is powered only while read
    "soil": {"pins": {"sensor_power": SOIL_POWER_PIN, "valve_enable": SOIL_BRIDGE_SLEEP_PIN}},
    "lighting": {},
}


@dataclass
class RadioTimes:
    """Microseconds the SX1276 spent in each state, from its register model's mode changes."""

    tx_us: int = 0
    rx_us: int = 0
    sleep_us: int = 0
    standby_us: int = 0  # STDBY, FSTX, FSRX: oscillator running, neither TX nor RX


def _kind(mode: int) -> str:
    """The RadioTimes field an SX1276 operating mode counts in."""
    if mode == MODE_TX:
        return "tx_us"
    if mode in (MODE_RX_CONTINUOUS, MODE_RX_SINGLE):
        return "rx_us"
    if mode == MODE_SLEEP:
        return "sleep_us"
    return "standby_us"


class MeteredSX1276(SX1276Model):
    """The SX1276 model, integrating the time spent in each operating mode."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.times = RadioTimes()
        self.segments: list[tuple[int, int, str]] = []  # (from_us, to_us, RadioTimes field)
        self._since: int | None = None
        self._mode_now = MODE_SLEEP
        super().__init__(*args, **kwargs)
        self._since = self.clock.now_us()
        self._mode_now = self.mode

    def _account(self) -> None:
        if self._since is None:
            return
        now = self.clock.now_us()
        spent = now - self._since
        mode = self._mode_now
        kind = _kind(mode)
        setattr(self.times, kind, getattr(self.times, kind) + spent)
        if spent:
            self.segments.append((self._since, now, kind))
        self._since = now
        self._mode_now = self.mode

    def _write_op_mode(self, value: int) -> None:
        self._account()
        super()._write_op_mode(value)
        self._mode_now = self.mode

    def _to_standby(self) -> None:
        self._account()
        super()._to_standby()
        self._mode_now = self.mode

    def _power_on_reset(self) -> None:
        self._account()
        super()._power_on_reset()
        self._mode_now = self.mode if hasattr(self, "_common") else MODE_SLEEP

    def flush(self) -> RadioTimes:
        """Account up to now and return the totals."""
        self._account()
        return self.times


@dataclass
class Uplink:
    """One uplink the concentrator heard."""

    at_us: int
    phy_bytes: int
    fport: int | None
    sf: int
    airtime_us: int
    fopts: int = 0  # FOpts bytes (MAC answers riding along)


@dataclass
class NodeRun:
    """What one role's node did over a run (all times virtual)."""

    role: str
    boots: list[Boot]
    uplinks: list[Uplink]
    radio: RadioTimes
    radio_segments: list[tuple[int, int, str]]
    run_us: int
    compiled: CompileReport
    sensor_on_us: dict[str, int] = field(default_factory=dict)  # chip -> time powered/active
    valve_pulses_us: list[int] = field(default_factory=list)  # each pulse's length
    valve_pulse_starts_us: list[int] = field(default_factory=list)  # and its start
    valve_open_us: list[tuple[int, int]] = field(default_factory=list)  # (opened, closed) spans
    console: str = ""


def _fport(phy: bytes) -> int | None:
    """FPort of a LoRaWAN data frame (None when it carries none)."""
    if len(phy) < 12:
        return None
    fopts_len = phy[5] & 0x0F
    pos = 8 + fopts_len
    return phy[pos] if len(phy) > pos + 4 else None


def build_flash(role: str, flash: Path, interval_s: int = INTERVAL_S, sf: int = 7) -> CompileReport:
    """Fill ``flash`` with the role's compiled selection, main.py and an ABP config.json."""
    report = compile_role(role, flash)
    if report.errors:
        raise RuntimeError("; ".join(f"{e.source}: {e.error}" for e in report.errors))
    shutil.copyfile(REPO / "firmware" / "main.py", flash / "main.py")
    cfg = {"version": 1, "dev_eui": "70b3d57ed0000" + f"{ROLES.index(role) + 1:03x}",
           "role": role, "board": BOARD, "activation": "abp",
           "abp": {"dev_addr": f"260b{ROLES.index(role) + 1:04x}",
                   "nwk_s_key": NWK_S_KEY.hex(), "app_s_key": APP_S_KEY.hex()},
           "radio": {"sf": sf, "tx_power_dbm": 14, "adr": False}, "interval_s": interval_s,
           "location": {"lat": 43.53, "lon": 5.45}, "settings": SETTINGS[role]}
    (flash / "config.json").write_text(json.dumps(cfg))
    return report


def command_frame(index: int, cmd: dict[str, Any], fcnt_down: int = 0) -> bytes:
    """A downlink of the bench session ``index`` carrying ``cmd`` on FPort 40."""
    return lorawan.build_data_frame(
        lorawan.default_aes(), lorawan.MTYPE_UNCONFIRMED_DOWN, 0x260B0000 + index, fcnt_down,
        codec.COMMAND_FPORT, codec.encode_command(cmd), NWK_S_KEY, APP_S_KEY)


def reboot_frame(index: int) -> bytes:
    """The first downlink of the bench session ``index``: a reboot command on FPort 40."""
    return command_frame(index, {"cmd": "reboot", "seq": 1})


def run_node(role: str, cycles: int = 4, interval_s: int = INTERVAL_S, sf: int = 7,
             workdir: Path | None = None,
             commands: dict[int, dict[str, Any]] | None = None,
             radio_dies_after: int | None = None) -> NodeRun:
    """Boot a node of ``role`` and run it through ``cycles`` reporting cycles (boots for Class A).

    ``commands`` maps n to a command sent in RX1 of the node's n-th reading uplink (1-based),
    as a network server answers a Class A device. ``radio_dies_after`` n: 10 s after the n-th
    reading uplink the SX1276 stops answering on SPI (reads 0xFF, as a dead or unplugged chip).
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    tmp = Path(tempfile.mkdtemp(prefix=f"cityedge-bench-{role}-", dir=workdir))
    try:
        flash = tmp / "flash"
        flash.mkdir()
        report = build_flash(role, flash, interval_s, sf)
        clock = VirtualClock(speed=None)
        channel = RadioChannel(clock, seed=1)
        env = Environment(seed=1)
        heard: list[Uplink] = []
        data_ports = {"air": 10, "noise": 11, "soil": 12, "lighting": 13}
        todo = dict(commands or {})

        def on_uplink(pkt: RxPacket) -> None:
            if pkt.crc_ok and pkt.payload:
                heard.append(Uplink(pkt.tmst_us, len(pkt.payload), _fport(pkt.payload), pkt.sf,
                                    pkt.time_on_air_us, pkt.payload[5] & 0x0F))
                n = sum(1 for u in heard if u.fport == data_ports[role])
                if heard[-1].fport == data_ports[role] and n == radio_dies_after:
                    clock.call_later(10_000_000, setattr, radio, "spi_byte", lambda out: 0xFF)
                if heard[-1].fport == data_ports[role] and n in todo:
                    sent = len(commands or {}) - len(todo)
                    gateway.send_at(pkt.tmst_us + region.RECEIVE_DELAY1_S * 1_000_000,
                                    pkt.freq_hz, pkt.sf, 125,
                                    command_frame(ROLES.index(role) + 1, todo.pop(n), sent))

        gateway = Concentrator(clock, channel, on_uplink=on_uplink, name="bench-gateway")
        spi_id, _sck, _mosi, _miso, cs, reset, dio0, i2c_id, _sda, _scl, adc, div = pin_map(BOARD)
        hw = BoardHardware()
        radio = MeteredSX1276(clock, channel, position=(300.0, 0.0), name=f"bench-{role}",
                              dio0=hw.pin(dio0), reset=hw.pin(reset))
        hw.spi_bus(spi_id).attach(hw.pin(cs), radio)
        if adc is not None:
            hw.adc[adc] = lambda: int(BATTERY_UV / div)
        bus = hw.i2c_bus(i2c_id)
        sps30: SPS30Model | None = None
        valve: LatchingValveModel | None = None
        probe_on: dict[str, int] = {"on_us": 0, "since": -1}
        if role == "air":
            sps30 = SPS30Model(clock, env)
            bus.attach(0x69, sps30)
            bus.attach(0x44, SHT4xModel(clock, env))
        elif role == "noise":
            bus.attach(0x48, DecibelMeterModel(clock, env))
        elif role == "soil":
            power = hw.pin(SOIL_POWER_PIN)

            def on_power(level: int) -> None:
                now = clock.now_us()
                if level and probe_on["since"] < 0:
                    probe_on["since"] = now
                elif not level and probe_on["since"] >= 0:
                    probe_on["on_us"] += now - probe_on["since"]
                    probe_on["since"] = -1

            power.watch(on_power)
            bus.attach(0x36, SeesawSoilModel(clock, moisture=31.0, temperature_c=14.0,
                                             noise_counts=0, power=power))
            valve = LatchingValveModel(clock, hw.pin(SOIL_VALVE[0]), hw.pin(SOIL_VALVE[1]))
        elif role == "lighting":
            lamps = LampCircuit(hw.pin(LIGHTING_PINS["relay"]), hw.pin(LIGHTING_PINS["pwm"]))
            bus.attach(0x40, INA219Model(0x40, 0.1, source=lamps))
            hw.pin(LIGHTING_PINS["s0"]).drive(1)
        board = VirtualBoard(clock, f"bench-{role}", flash, hw, hang_timeout_s=60.0)
        board.start()
        rebooting = False
        try:
            limit = clock.now_us() + (cycles + 1) * interval_s * 1_000_000
            while clock.now_us() < limit:
                clock.run(until_us=clock.now_us() + 10_000_000)
                if WDT_RESET in board.reset_causes:
                    raise RuntimeError(f"the {role} node was reset by its watchdog: the figures "
                                       f"would not be a normal cycle:\n{board.output[-2000:]}")
                if board.crashed is not None or board.state in ("repl", "hung", "crashed"):
                    raise RuntimeError(f"the {role} node stopped ({board.state}):\n"
                                       f"{board.output[-3000:]}")
                done = sum(1 for u in heard if u.fport == data_ports[role])
                if role == "lighting":
                    # Class C never ends a boot by itself, and a boot's heap peak is reported
                    # when it ends: after the cycles, a reboot command (a downlink in RX2, as the
                    # network sends to Class C) ends it through the command path.
                    if done >= cycles and not rebooting:
                        rebooting = True
                        gateway.send_at(clock.now_us() + 1000, region.RX2_FREQ_HZ,
                                        region.data_rate(region.RX2_DR)[0], 125,
                                        reboot_frame(ROLES.index(role) + 1))
                    if len(board.history) >= 2:
                        break
                elif done >= cycles and board.state == "deepsleep":
                    break
        finally:
            board.stop()
            clock.stop()
        sensor_on = {}
        if sps30 is not None:
            sensor_on["sps30_fan"] = sps30.fan_on_us
        if role == "soil":
            sensor_on["seesaw"] = probe_on["on_us"]
        pulses = valve.pulses if valve is not None else []
        spans: list[tuple[int, int]] = []
        for p in pulses:
            if p.moved and p.direction == "open":
                spans.append((p.start_us, -1))
            elif p.moved and spans and spans[-1][1] < 0:
                spans[-1] = (spans[-1][0], p.start_us)
        totals = radio.flush()
        return NodeRun(role, list(board.history), heard, totals, radio.segments, clock.now_us(), report,
                       sensor_on, [p.length_us for p in pulses], [p.start_us for p in pulses],
                       spans, board.output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cache
def measured(role: str) -> NodeRun:
    """One run per role and process, shared by the heap and energy benchmarks (VM compiled
    before it runs, so that ``Boot.program_cpu_us`` means something: bench.node_cpu)."""
    from bench.node_cpu import eager_vm

    with eager_vm():
        return run_node(role)


WATERING_S = 600  # the bench's watering: valve_open for 10 min, shorter than the 15 min pause
WATERING_AFTER = 2  # sent in RX1 of the 2nd reading (the first wake from deep sleep)


@cache
def measured_watering(seconds: int = WATERING_S) -> NodeRun:
    """A soil node run like :func:`measured` ("soil"), with one ``valve_open`` of ``seconds``."""
    from bench.node_cpu import eager_vm

    with eager_vm():
        return run_node("soil", commands={WATERING_AFTER: {"cmd": "valve_open", "seq": 7,
                                                           "seconds": seconds}})


def radio_between(run: NodeRun, t0_us: int, t1_us: int) -> RadioTimes:
    """The radio's time per state within [t0_us, t1_us) of a run (e.g. one boot)."""
    out = RadioTimes()
    for a, b, kind in run.radio_segments:
        lo, hi = max(a, t0_us), min(b, t1_us)
        if hi > lo:
            setattr(out, kind, getattr(out, kind) + hi - lo)
    return out


@dataclass
class CodeHeap:
    """Live heap the role's compiled code and module data take once every module is imported."""

    role: str
    modules: int
    code_bytes: int  # live heap after the imports minus before (bytecode, qstrs, module objects)
    mpy_bytes: int  # the same modules' .mpy files on flash


def _dotted(rel: Path) -> str:
    name = ".".join(rel.with_suffix("").parts)
    return name.removesuffix(".__init__")


def measure_code_heap(role: str, workdir: Path | None = None,
                      modules: list[str] | None = None) -> CodeHeap:
    """Import, in a fresh VM, every module of the role's selection from exactly those .mpy files.

    This is also the check that the selection is complete: a missing module raises ImportError
    in the VM (``sim.vm.board.CodeError``). ``firmware/main.py`` is left out (it runs the app).
    ``modules`` (dotted names) imports only those instead (and what they import).
    """
    from sim.mpy import role_sources
    from sim.vm.board import run_snippet

    tmp = Path(tempfile.mkdtemp(prefix=f"cityedge-code-{role}-", dir=workdir))
    try:
        report = compile_role(role, tmp)
        if report.errors:
            raise RuntimeError("; ".join(f"{e.source}: {e.error}" for e in report.errors))
        mods = modules or [_dotted(p) for p in role_sources(role)
                           if p.as_posix() != "firmware/main.py"]
        code = ("import _hw\nbefore = _hw.heap()['live']\n"
                + "".join(f"import {m}\n" for m in mods)
                + "print('CODE', _hw.heap()['live'] - before)\n")
        out = run_snippet(code, mounts=[(tmp / p, f"/_repo/{p}") for p in ("drivers", "firmware", "protocol")
                                        if (tmp / p).is_dir()],
                          sys_path=["/_repo"], heap_bytes=256 * 1024)
        line = next(ln for ln in out.splitlines() if ln.startswith("CODE "))
        mpy = sum(f.size for f in report.files if f.source.as_posix() != "firmware/main.py"
                  and (modules is None or any(_dotted(f.source).startswith(m) for m in modules)))
        return CodeHeap(role, len(mods), int(line.split()[1]), mpy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cache
def code_heap(role: str) -> CodeHeap:
    """:func:`measure_code_heap`, once per role and process."""
    return measure_code_heap(role)


@dataclass
class ModuleCost:
    """What importing one module costs, split at the first line of its body.

    ``load``: from the import statement to the body's first line: reading the .mpy, its bytecode,
    constants and new names copied into the heap; frozen into the firmware, all of it stays in
    flash (the module object and its dict, also made here, are a few dozen bytes). ``run``: the
    body itself: the module's globals, function, class and other objects it creates, in RAM
    whether the module is frozen or not.
    """

    module: str
    load_heap: int
    run_heap: int
    load_cpu_us: int  # host CPU in the VM (bench.node_cpu scales it to a board)
    run_cpu_us: int


MARK = "_cityedge_mark(__name__)\n"  # first and last line of every module (measure_import_split)


def import_order(role: str) -> list[str]:
    """The role's modules (dotted), each after the modules it imports, so that most imports
    load one module (a package's ``__init__`` still loads the submodules it imports)."""
    from sim.mpy import module_imports, role_sources

    files = [p for p in role_sources(role) if p.as_posix() != "firmware/main.py"]
    known = set(files)
    order: list[Path] = []
    seen: set[Path] = set()

    def visit(rel: Path) -> None:
        if rel in seen:
            return
        seen.add(rel)
        for dep in module_imports(REPO, rel):
            if dep in known:
                visit(dep)
        order.append(rel)

    for rel in files:
        visit(rel)
    return [_dotted(p) for p in order]


def _split(events: list[tuple[int, int, int, int]]) -> dict[int, list[int]]:
    """Per module index: [load heap, run heap, load cpu, run cpu] from the mark events.

    Events are (kind, module index, heap, cpu) with kind 0 = before an import statement of the
    probe, 1 = a module's first line, 2 = its last line. A module's load is from the event
    before its first line to that line; its run is first to last line minus the modules it
    loaded in between (the few bytecodes of the importing module's own between two nested
    imports count as the nested module's load: a small overestimate of what freezing saves).
    """
    out: dict[int, list[int]] = {}
    stack: list[tuple[int, int, int]] = []  # (module, heap at first line, cpu at first line)
    prev = None
    for kind, mod, heap, cpu in events:
        if kind == 1:
            assert prev is not None
            out[mod] = [heap - prev[2], 0, cpu - prev[3], 0]
            stack.append((mod, heap, cpu))
        elif kind == 2:
            m, h0, c0 = stack.pop()
            assert m == mod, "mark events out of order"
            out[m][1] += heap - h0
            out[m][3] += cpu - c0
            if stack:  # the parent's run excludes what this module cost
                parent = out[stack[-1][0]]
                parent[1] -= (heap - h0) + out[m][0]
                parent[3] -= (cpu - c0) + out[m][2]
        prev = (kind, mod, heap, cpu)
    return out


def measure_import_split(role: str, workdir: Path | None = None) -> list[ModuleCost]:
    """Import the role's modules (:func:`import_order`) in a fresh VM, from .mpy files compiled
    from their sources with :data:`MARK` as first and last line, and split every module's heap
    and CPU at its first line: what freezing saves (load) and what it does not (run)."""
    from sim.mpy import compile_file, role_sources
    from sim.vm.board import run_snippet

    mods = import_order(role)
    tmp = Path(tempfile.mkdtemp(prefix=f"cityedge-split-{role}-", dir=workdir))
    try:
        for rel in role_sources(role):
            if rel.as_posix() == "firmware/main.py":
                continue
            src = tmp / "src" / rel
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_text(MARK + (REPO / rel).read_text() + "\n" + MARK)
            done = compile_file(src, tmp / "mpy" / rel.with_suffix(".mpy"), rel.as_posix())
            if not done.ok:
                raise RuntimeError(f"{rel}: {done.error}")
        size = 4 * (3 * len(mods) + 4)
        code = (
            "import _hw, builtins, array\n"
            f"MODS = {mods!r}\n"
            f"E = array.array('i', [0] * {size})\n"
            "n = [0, {}]\n"  # [events so far, first-line marks seen by module]
            "def event(kind, mod):\n"
            "    i = 4 * n[0]\n"
            "    E[i] = kind\n"
            "    E[i + 1] = mod\n"
            "    E[i + 2] = _hw.heap()['live']\n"
            "    E[i + 3] = _hw.cpu_us()[0]\n"
            "    n[0] += 1\n"
            "first = set()\n"
            "def _mark(name):\n"
            "    k = MODS.index(name)\n"
            "    if k in first:\n"
            "        event(2, k)\n"
            "    else:\n"
            "        first.add(k)\n"
            "        event(1, k)\n"
            "builtins._cityedge_mark = _mark\n"
            "for i in range(len(MODS)):\n"
            "    if i not in first:\n"
            "        event(0, i)\n"
            "        __import__(MODS[i])\n"
            "print('EVENTS', n[0], list(E))\n"
        )
        out = run_snippet(code, mounts=[(tmp / "mpy" / p, f"/_repo/{p}")
                                        for p in ("drivers", "firmware", "protocol")
                                        if (tmp / "mpy" / p).is_dir()],
                          sys_path=["/_repo"], heap_bytes=256 * 1024)
        line = next(ln for ln in out.splitlines() if ln.startswith("EVENTS "))
        count, rest = line[len("EVENTS "):].split(" ", 1)
        flat = [int(x) for x in rest.strip("[]").split(",")]
        events = [tuple(flat[4 * i:4 * i + 4]) for i in range(int(count))]
        split = _split(events)  # type: ignore[arg-type]
        missing = [m for i, m in enumerate(mods) if i not in split]
        if missing:
            raise RuntimeError(f"modules never imported: {missing}")
        return [ModuleCost(m, *split[i]) for i, m in enumerate(mods)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@cache
def import_split(role: str) -> tuple[ModuleCost, ...]:
    """:func:`measure_import_split`, once per role and process (VM compiled before it runs)."""
    from bench.node_cpu import eager_vm

    with eager_vm():
        return tuple(measure_import_split(role))
