"""Energy model of the battery nodes: datasheet currents x measured times, and battery life.

Measured in the VM (bench.node_run; virtual time, exact): per wake from deep sleep, the board's
time up split into light sleep (``Boot.light_sleep_us``: receive delays and windows, time on air,
sensor warm-up) and awake (busy waits of the drivers, I2C transfers), the SX1276's time in each
mode, the SPS30's fan time, the soil probe's powered time, the valve pulses; the daily health
uplink's extra (power-on boot minus a wake boot); a watering (bench.node_run.measured_watering:
valve_open for 10 min, charged as the difference to a run without it).

Estimated from measurement (bench.node_cpu: host CPU of the VM's Python, scaled by pystones to an
ESP32): the CPU time of our own Python per wake, split into loading the .mpy modules (gone when
the application is frozen into the firmware) and the rest (module bodies, boot, one cycle).

Quoted (sources at each constant): the time from the wake to the first line of Python, per
firmware build; currents; batteries. Configurations compared: board (:data:`BOARDS`) x firmware
(:data:`FIRMWARES`) x cells (:data:`BATTERIES`). The CPU runs at 160 MHz: Python work is CPU
bound, so at 80 MHz it takes twice as long at 31 instead of 44 mA (more charge, printed).
Run: python -m bench.energy
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from bench.node_cpu import Calibration, calibrate, esp32_ms
from bench.node_run import (
    DEEPSLEEP_CAUSE,
    INTERVAL_S,
    WATERING_S,
    NodeRun,
    RadioTimes,
    import_split,
    measured,
    measured_watering,
    radio_between,
)
from bench.table import print_table

BATTERY_ROLES = ("air", "noise", "soil")
TARGET_YEARS_SOIL = 10.0
DAY_S = 86400
HOURS_PER_YEAR = 24 * 365

# -- MCU: Espressif "ESP32 Series Datasheet" v3.5, table "Power Consumption by Power Modes" -------
ESP32_ACTIVE_MA = {160: 44.0, 80: 31.0}  # modem-sleep, dual core: 160 MHz 27..44 mA, 80 MHz 20..31
ESP32_LIGHT_SLEEP_MA = 0.8  # light-sleep: 0.8 mA
ESP32_DEEP_SLEEP_UA = 10.0  # deep-sleep, RTC timer + RTC memory: 10 uA
CPU_MHZ = 160

# -- wake to the first line of Python, per firmware build (ESP32) --------------------------------
# Stock MicroPython on an ESP32-WROOM-32 DevKitC, main.py = machine.deepsleep(1000): 690 ms awake
# per wake (190 ms for the same in Arduino): forum.micropython.org t=9555 "What are the processes
# that run after a wake-up from deep sleep?" (Otii Arc measurement). That includes the image
# check on wake, MicroPython's start, mounting the filesystem and running main.py.
STOCK_WAKE_MS = 690.0
# CONFIG_BOOTLOADER_SKIP_VALIDATE_IN_DEEP_SLEEP and the application run from a frozen _boot.py
# (no filesystem): 70 ms and 3.32 mC at 5 V on an ESP32 module with a 15 mA background
# (github.com/glenn20/upy-esp32-experiments, OptimisingMicropythonBootTime; on the ESP32-S3 the
# skip alone took the time to app_main() from 264 to 47 ms, toitware/esp-idf#14 gives 361 -> 45
# ms for the ESP32 bootloader). The chip's own share: 3.32 mC - 15 mA x 70 ms.
FAST_WAKE_MS = 70.0
FAST_WAKE_MC = 3.32 - 15.0 * 0.070
# Mounting the filesystem and running main.py from it: 350 ms, 23.6 mC at 5 V (same source,
# ESP32-S3 at 240 MHz, "_boot.py to main.py and deepsleep"); charged here at the ESP32's 44 mA.
FS_MAIN_MS = 350.0

# -- radio: Semtech SX1276/77/78/79 datasheet rev 7, table 6 (band 1, 862-1020 MHz) -------------
SX1276_TX_MA = 87.0  # IDDT, RFOP +17 dBm on PA_BOOST: 87 mA (no +14 dBm PA_BOOST row: upper bound)
SX1276_RX_MA = 11.5  # IDDR, LnaBoost on, 125 kHz
SX1276_STANDBY_MA = 1.6  # IDDST
SX1276_SLEEP_UA = 0.2  # IDDSLEEP

# -- sensors and valve ---------------------------------------------------------------------------
SPS30_MEASURE_MA = 55.0  # Sensirion SPS30 datasheet: measurement mode 55 mA typ
SPS30_SLEEP_UA = 38.0  # same table, sleep mode
SHT4X_MEASURE_UA = 320.0  # Sensirion SHT4x datasheet: average current while measuring
SHT4X_MEASURE_MS = 8.3  # same: high repeatability, max
SHT4X_IDLE_UA = 0.08
DBM_ACTIVE_MA = 4.3  # PCB Artists PCBA-DBM-r3: active 4.3 mA (the role never powers it down)
SEESAW_ACTIVE_MA = 5.0  # Adafruit STEMMA soil sensor (SAM D09 at 48 MHz): rounded up, no vendor
# figure; powered only while read (settings.pins.sensor_power)
DRV8833_SLEEP_UA = 1.6  # TI DRV8833 datasheet: VM sleep current (nSLEEP low) 1.6 uA typ
VALVE_COIL_V = 9.0  # ASSUMPTION: DC latching solenoid (drivers/valve.py: 9-12 V, 3-8 ohm coils)
VALVE_COIL_OHM = 4.0  # ... at 9 V into 4 ohm: 2.25 A during the 50 ms pulse
VALVE_BOOST_EFFICIENCY = 0.80  # ASSUMPTION: the coil's 9 V from a boost converter on the cells
WATERINGS_PER_DAY = 1  # ASSUMPTION: one watering a day (measured: bench.node_run.WATERING_S)


@dataclass(frozen=True)
class Board:
    """The hardware around the ESP32 and the SX1276, as the battery sees it."""

    name: str
    sleep_ua: float  # deep sleep, everything on the rail
    light_extra_ua: float  # the board's own draw on top of the chips in light sleep
    rail_v: float | None  # a buck-boost to this rail (None: the battery current passes through)
    converter_efficiency: float = 1.0
    note: str = ""


BOARDS = (
    # Heltec WiFi LoRa 32 (V2) product page: "deep sleep 800 uA" (LDO, CP2102, battery divider);
    # its battery input is meant for a 3.7 V LiPo: 2 x AA (3.0 V) are below its 3.3 V LDO's input
    # from the start, so these figures are a comparison only.
    Board("Heltec WiFi LoRa 32 V2 as sold", 800.0, 800.0 - ESP32_DEEP_SLEEP_UA, None,
          note="2xAA below its regulator's input: comparison only"),
    # ESP32-WROOM-32 (3.0-3.6 V) on a 3.0 V rail from a TI TPS63900 buck-boost (datasheet: 75 nA
    # quiescent current, 1.8-5.5 V in: the cells run down to 0.9 V each), SX1276 asleep, the
    # DRV8833 asleep, the probe's supply switched off, no USB bridge on the rail.
    Board("low-power board (WROOM-32 + TPS63900 buck-boost)",
          ESP32_DEEP_SLEEP_UA + SX1276_SLEEP_UA + DRV8833_SLEEP_UA + 0.075, 0.0, 3.0,
          converter_efficiency=0.85),  # ASSUMPTION: 85 % at these loads (DS curves: 85-90 %)
)


@dataclass(frozen=True)
class Firmware:
    """What a wake costs before and around our own Python."""

    name: str
    wake_ms: float  # reset to our main.py (or frozen entry), quoted
    wake_mc: float  # its charge (mC)
    loads_mpy: bool  # the application's .mpy files are loaded from the filesystem on every wake
    implemented: bool  # does `cityedge` build and deploy this today?


FIRMWARES = (
    Firmware("stock MicroPython + application .mpy files (cityedge deploy)", STOCK_WAKE_MS,
             STOCK_WAKE_MS * ESP32_ACTIVE_MA[CPU_MHZ] / 1000, True, True),
    Firmware("frozen application (make firmware) + skip image check on wake, filesystem mounted "
             "for config.json and the valve file", FAST_WAKE_MS + FS_MAIN_MS,
             FAST_WAKE_MC + FS_MAIN_MS * ESP32_ACTIVE_MA[CPU_MHZ] / 1000, False, True),
    Firmware("frozen application started from frozen _boot.py on a deep-sleep wake, config and "
             "valve state kept in RTC memory (no filesystem)", FAST_WAKE_MS, FAST_WAKE_MC, False,
             False),
)


@dataclass(frozen=True)
class Battery:
    """Two cells in series."""

    name: str
    mah: float
    cell_v: float  # average cell voltage over the discharge at these loads
    temperature_derating: float  # outdoor service, -10..+40 degC
    self_discharge_per_year: float  # of the nominal capacity
    source: str


BATTERIES = (
    # Energizer E91 datasheet (data.energizer.com/PDFs/e91.pdf): ~2800 mAh at 25 mA to 0.8 V,
    # taken as 2500 mAh for the TX pulses (120-130 mA); Energizer "Alkaline Manganese Dioxide
    # Handbook": capacity falls in the cold, shelf loss about 2-3 %/year at 21 degC (10-year
    # shelf life); average 1.25 V per cell down to 0.9 V.
    Battery("2 x AA alkaline (Energizer E91)", 2500.0, 1.25, 0.80, 0.02,
            "E91 datasheet, Energizer alkaline handbook"),
    # Energizer L91 datasheet (data.energizer.com/PDFs/l91.pdf): 3000 mAh nearly independent of
    # the load (current issue: 3500 mAh), -40..60 degC, shelf life 15 years at 21 degC keeping
    # 90 % of capacity (current issue: 20 years): 0.7 %/year; 1.45 V per cell at low drain.
    Battery("2 x AA lithium iron disulfide (Energizer L91)", 3000.0, 1.45, 0.95, 0.007,
            "L91 datasheet, Energizer Li/FeS2 handbook"),
)


@dataclass
class Cycle:
    """Measured times of one reporting cycle (a wake from deep sleep), microseconds."""

    awake_us: float  # MCU running in virtual time (time up minus light sleep)
    light_sleep_us: float
    radio: RadioTimes
    sensor_on_us: dict[str, float]
    health_extra_awake_us: float  # once a day
    health_extra_light_us: float
    health_extra_radio: RadioTimes
    valve_pulse_us: float
    cpu_vm_us: float  # our Python per wake, host CPU in the VM, shims removed (min of the wakes)
    cpu_load_vm_us: float  # of which loading the .mpy files (bench.node_run.import_split)


@dataclass
class Budget:
    """Average current of one configuration, by consumer (uA at the rail), and its life."""

    board: Board
    firmware: Firmware
    battery: Battery
    parts_ua: dict[str, float] = field(default_factory=dict)

    @property
    def rail_ua(self) -> float:
        return sum(self.parts_ua.values())

    @property
    def battery_ua(self) -> float:
        """What the cells deliver: through the buck-boost, or passed through."""
        return battery_current(self.rail_ua, self.board, self.battery)

    @property
    def years(self) -> float:
        return life_years(self.battery_ua, self.battery)


def battery_current(rail_ua: float, board: Board, battery: Battery) -> float:
    """The cells' current for ``rail_ua`` on the board's rail."""
    if board.rail_v is None:
        return rail_ua
    return rail_ua * board.rail_v / (2 * battery.cell_v * board.converter_efficiency)


def life_years(battery_ua: float, battery: Battery) -> float:
    """Years until the derated capacity is spent by the load and self-discharge."""
    usable = battery.mah * battery.temperature_derating
    per_year = battery_ua / 1000 * HOURS_PER_YEAR + battery.mah * battery.self_discharge_per_year
    return usable / per_year


def allowed_ua(battery: Battery, years: float = TARGET_YEARS_SOIL) -> float:
    """Average battery current that lasts ``years``."""
    usable = battery.mah * battery.temperature_derating
    return (usable / years - battery.mah * battery.self_discharge_per_year) * 1000 / HOURS_PER_YEAR


def _program_cpu(run: NodeRun, wakes: list, cal: Calibration) -> float:
    own = [b.program_cpu_us - b.host_calls * cal.shim_us_per_call for b in wakes
           if b.program_cpu_us is not None and b.host_calls is not None]
    if not own:
        raise RuntimeError(f"{run.role}: the VM reported no CPU time")
    return max(0.0, min(own))  # noise (VM heap growth, host load) only ever adds


def cycle_of(run: NodeRun, cal: Calibration | None = None) -> Cycle:
    """Average the wake boots of a run; the power-on boot gives the daily health extra."""
    ended = [b for b in run.boots if b.ended_us is not None and b.outcome == "deepsleep"]
    wakes = [b for b in ended if b.cause == DEEPSLEEP_CAUSE]
    if not wakes or not ended or ended[0].cause == DEEPSLEEP_CAUSE:
        raise RuntimeError(f"{run.role}: no power-on boot and wake boots to measure")

    def span(b) -> int:
        return b.ended_us - b.started_us - b.light_sleep_us

    radios = [radio_between(run, b.started_us, b.ended_us) for b in wakes]
    avg = RadioTimes(*(mean(getattr(r, f) for r in radios)
                       for f in ("tx_us", "rx_us", "sleep_us", "standby_us")))
    first = ended[0]
    r0 = radio_between(run, first.started_us, first.ended_us)
    extra = RadioTimes(*(max(0.0, getattr(r0, f) - getattr(avg, f))
                         for f in ("tx_us", "rx_us", "sleep_us", "standby_us")))
    cpu = _program_cpu(run, wakes, cal) if cal is not None else 0.0
    load = sum(m.load_cpu_us for m in import_split(run.role)) if cal is not None else 0.0
    return Cycle(
        awake_us=mean(span(b) for b in wakes),
        light_sleep_us=mean(b.light_sleep_us for b in wakes),
        radio=avg,
        sensor_on_us={k: v / len(ended) for k, v in run.sensor_on_us.items()},
        health_extra_awake_us=max(0.0, span(first) - mean(span(b) for b in wakes)),
        health_extra_light_us=max(0.0, first.light_sleep_us - mean(b.light_sleep_us for b in wakes)),
        health_extra_radio=extra,
        valve_pulse_us=mean(run.valve_pulses_us) if run.valve_pulses_us else 0.0,
        cpu_vm_us=cpu,
        cpu_load_vm_us=min(load, cpu),
    )


def python_ms(c: Cycle, fw: Firmware, mhz: int = CPU_MHZ, cal: Calibration | None = None) -> float:
    """Our Python per wake on the ESP32 at ``mhz``: without the .mpy loading when frozen."""
    vm_us = c.cpu_vm_us if fw.loads_mpy else c.cpu_vm_us - c.cpu_load_vm_us
    return esp32_ms(vm_us, 0, mhz, cal) if vm_us > 0 else 0.0


def radio_uc(r: RadioTimes) -> float:
    """Charge (uC) of the SX1276's time in each mode."""
    return (SX1276_TX_MA * r.tx_us + SX1276_RX_MA * r.rx_us + SX1276_STANDBY_MA * r.standby_us
            + SX1276_SLEEP_UA / 1000 * r.sleep_us) / 1000


def valve_pulse_uc(pulse_us: float, battery: Battery) -> float:
    """Charge (uC) a coil pulse takes from the cells through the coil's boost converter."""
    joules = VALVE_COIL_V ** 2 / VALVE_COIL_OHM * pulse_us / 1e6
    return joules / VALVE_BOOST_EFFICIENCY / (2 * battery.cell_v) * 1e6


def wake_uc(c: Cycle, fw: Firmware, cal: Calibration | None = None) -> float:
    """Charge (uC, at the rail) of one wake's boot and Python, before the measured cycle."""
    return fw.wake_mc * 1000 + ESP32_ACTIVE_MA[CPU_MHZ] * python_ms(c, fw, cal=cal)


def budget(role: str, c: Cycle, board: Board, fw: Firmware, battery: Battery,
           interval_s: int = INTERVAL_S, watering_charge_uc: float = 0.0,
           cal: Calibration | None = None) -> Budget:
    """Average current of a node of ``role`` reporting every ``interval_s``."""
    b = Budget(board, fw, battery)
    per_s = 1.0 / interval_s
    day = 1.0 / DAY_S
    wake_s = fw.wake_ms / 1000 + python_ms(c, fw, cal=cal) / 1000
    awake_s = c.awake_us / 1e6
    light_s = c.light_sleep_us / 1e6
    asleep_s = interval_s - wake_s - awake_s - light_s
    b.parts_ua["wake to Python (quoted)"] = fw.wake_mc * 1000 * per_s
    b.parts_ua["our Python (estimated)"] = ESP32_ACTIVE_MA[CPU_MHZ] * python_ms(c, fw, cal=cal) * per_s
    b.parts_ua["MCU awake (measured)"] = ESP32_ACTIVE_MA[CPU_MHZ] * 1000 * (
        awake_s * per_s + c.health_extra_awake_us / 1e6 * day)
    b.parts_ua["MCU light sleep"] = (ESP32_LIGHT_SLEEP_MA * 1000 + board.light_extra_ua) * (
        light_s * per_s + c.health_extra_light_us / 1e6 * day)
    b.parts_ua["radio"] = radio_uc(c.radio) * per_s + radio_uc(c.health_extra_radio) * day
    b.parts_ua["deep sleep (board)"] = board.sleep_ua * asleep_s * per_s
    if role == "air":
        fan_s = c.sensor_on_us.get("sps30_fan", 0) / 1e6
        b.parts_ua["SPS30"] = SPS30_MEASURE_MA * 1000 * fan_s * per_s + SPS30_SLEEP_UA * (
            interval_s - fan_s) * per_s
        b.parts_ua["SHT4x"] = SHT4X_MEASURE_UA * SHT4X_MEASURE_MS / 1000 * per_s + SHT4X_IDLE_UA
    elif role == "noise":
        b.parts_ua["PCBA-DBM (never powered down)"] = DBM_ACTIVE_MA * 1000
    elif role == "soil":
        b.parts_ua["seesaw probe"] = SEESAW_ACTIVE_MA * 1000 * c.sensor_on_us.get(
            "seesaw", 0) / 1e6 * per_s
        if watering_charge_uc:
            b.parts_ua["watering (measured run)"] = watering_charge_uc * WATERINGS_PER_DAY * day
    return b


# -- the watering: measured as the difference between two runs of the soil node ---------------------

def run_uc(run: NodeRun, c: Cycle, board: Board, fw: Firmware, battery: Battery, t0: int,
           cal: Calibration | None = None) -> float:
    """Charge (uC at the rail, valve pulses at the cells converted) of a run from ``t0`` on."""
    boots = [b for b in run.boots if b.started_us >= t0 and b.ended_us is not None]
    up = sum(b.ended_us - b.started_us for b in boots)
    light = sum(b.light_sleep_us for b in boots)
    q = len(boots) * wake_uc(c, fw, cal)
    q += ESP32_ACTIVE_MA[CPU_MHZ] * (up - light) / 1000
    q += (ESP32_LIGHT_SLEEP_MA + board.light_extra_ua / 1000) * light / 1000
    q += radio_uc(radio_between(run, t0, run.run_us))
    q += board.sleep_ua / 1000 * (run.run_us - t0 - up) / 1000
    pulses = [ln for st, ln in zip(run.valve_pulse_starts_us, run.valve_pulses_us) if st >= t0]
    q += sum(valve_pulse_uc(p, battery) for p in pulses) / battery_current(1.0, board, battery)
    return q


def watering_uc(c: Cycle, board: Board, fw: Firmware, battery: Battery,
                cal: Calibration | None = None) -> float:
    """Extra charge (uC at the rail) of one watering: the watering run from its first wake on,
    minus the run without watering over the same span (its average current)."""
    base, wet = measured("soil"), measured_watering()
    t_base = next(b.started_us for b in base.boots if b.cause == DEEPSLEEP_CAUSE)
    t_wet = next(b.started_us for b in wet.boots if b.cause == DEEPSLEEP_CAUSE)
    q_base = run_uc(base, c, board, fw, battery, t_base, cal) / (base.run_us - t_base)
    return run_uc(wet, c, board, fw, battery, t_wet, cal) - q_base * (wet.run_us - t_wet)


def light_slept_watering_ua(c: Cycle, b: Budget) -> float:
    """The watering's daily average had the node light-slept from the opening to its next cycle
    (the firmware before it deep-slept with the valve open): the measured run's opening, one
    pause (``INTERVAL_S`` on average) in light sleep instead of deep sleep, the two pulses."""
    run = measured_watering()
    opened = run.valve_open_us[0][0]
    boot = max(b2.started_us for b2 in run.boots if b2.started_us <= opened)
    span_s = INTERVAL_S - (opened - boot) / 1e6
    light = span_s * (ESP32_LIGHT_SLEEP_MA * 1000 + b.board.light_extra_ua - b.board.sleep_ua)
    pulses = 2 * valve_pulse_uc(c.valve_pulse_us, b.battery) / battery_current(1.0, b.board,
                                                                                 b.battery)
    return (light + pulses) * WATERINGS_PER_DAY / DAY_S


def soil_budgets(cal: Calibration) -> tuple[Cycle, list[Budget]]:
    """Every configuration of the soil node."""
    c = cycle_of(measured("soil"), cal)
    out = []
    for board in BOARDS:
        for fw in FIRMWARES:
            for battery in BATTERIES:
                w = watering_uc(c, board, fw, battery, cal)
                out.append(budget("soil", c, board, fw, battery, watering_charge_uc=w, cal=cal))
    return c, out


def main() -> None:
    """Print the measured cycle, the per-wake CPU, the budgets and the verdict."""
    cal = calibrate()
    cycles = {role: cycle_of(measured(role), cal) for role in BATTERY_ROLES}
    print(f"measured per wake (one uplink per {INTERVAL_S // 60} min, SF7, 14 dBm; virtual time "
          "in the VM):\n")
    print_table(
        ("role", "awake", "light sleep", "TX", "RX", "standby", "sensor on", "valve pulse",
         "daily health extra"),
        [(role, f"{c.awake_us / 1e3:.0f} ms", f"{c.light_sleep_us / 1e3:.0f} ms",
          f"{c.radio.tx_us / 1e3:.1f} ms", f"{c.radio.rx_us / 1e3:.1f} ms",
          f"{c.radio.standby_us / 1e3:.0f} ms",
          ", ".join(f"{k} {v / 1e3:.0f} ms" for k, v in c.sensor_on_us.items()) or "-",
          f"{c.valve_pulse_us / 1e3:.0f} ms" if c.valve_pulse_us else "-",
          f"{c.health_extra_awake_us / 1e3:.0f} ms awake")
         for role, c in cycles.items()])
    print(f"\nour Python per wake (VM host CPU scaled to an ESP32: bench.node_cpu; VM "
          f"{cal.vm_pystones_per_s:.0f} pystones/s, ESP32 1014 pystones/s at 240 MHz):\n")
    rows = []
    for role, c in cycles.items():
        files, frozen = FIRMWARES[0], FIRMWARES[1]
        rows.append((role, f"{c.cpu_vm_us / 1e3:.1f} ms", f"{c.cpu_load_vm_us / 1e3:.1f} ms",
                     f"{python_ms(c, files, 160, cal):.0f} ms",
                     f"{python_ms(c, frozen, 160, cal):.0f} ms",
                     f"{python_ms(c, frozen, 80, cal):.0f} ms",
                     (f"{python_ms(c, frozen, 160, cal) * ESP32_ACTIVE_MA[160] / 1000:.1f} / "
                      f"{python_ms(c, frozen, 80, cal) * ESP32_ACTIVE_MA[80] / 1000:.1f} mC")))
    print_table(("role", "VM CPU", "of which .mpy loading", "ESP32 160 MHz, .mpy files",
                 "160 MHz, frozen", "80 MHz, frozen", "frozen charge 160 / 80 MHz"), rows)
    print("(the CPU runs at 160 MHz: the work is CPU bound, 80 MHz costs more charge)\n")

    c, soil = soil_budgets(cal)
    print(f"soil node, one uplink per {INTERVAL_S // 60} min, one {WATERING_S // 60}-minute "
          f"watering a day, target {TARGET_YEARS_SOIL:.0f} years:\n")
    rows = []
    for b in soil:
        rows.append((b.board.name, b.firmware.name[:60] + ("" if b.firmware.implemented
                                                           else " [NOT IMPLEMENTED]"),
                     b.battery.name.split(" (")[0], f"{b.battery_ua:.1f} uA",
                     f"{allowed_ua(b.battery):.1f} uA", f"{b.years:.2f} y",
                     "met" if b.years >= TARGET_YEARS_SOIL else "NOT MET",
                     "; ".join(f"{k} {v:.1f}" for k, v in b.parts_ua.items())))
    print_table(("board", "firmware", "cells", "battery current", "10 y allow", "life",
                 f">= {TARGET_YEARS_SOIL:.0f} y", "average current by consumer (uA at the rail)"),
                rows, left=(0, 1, 2, 7))
    met = [b for b in soil if b.years >= TARGET_YEARS_SOIL]
    best = max(soil, key=lambda b: b.years)
    print()
    if not met:
        print(f"soil, 10 years: NOT MET by any configuration. Best: {best.board.name}, "
              f"{best.firmware.name}, {best.battery.name}: {best.years:.2f} years, "
              f"{best.battery_ua:.1f} uA from the cells against {allowed_ua(best.battery):.1f} uA "
              "allowed.")
        factor = battery_current(1.0, best.board, best.battery)
        rest = {k: v for k, v in best.parts_ua.items() if k != "our Python (estimated)"}
        print(f"  without any Python CPU at all it would still draw {sum(rest.values()) * factor:.1f} "
              f"uA from the cells ({'; '.join(f'{k} {v * factor:.1f}' for k, v in rest.items())}): "
              "the ESP32's deep sleep, the radio and the valve pulses alone exceed the budget, so no "
              "firmware change reaches 10 years on an ESP32 board with 2 x AA")
        print(f"  our Python per wake adds {best.parts_ua['our Python (estimated)'] * factor:.1f} uA "
              f"({python_ms(c, best.firmware, cal=cal):.0f} ms at {CPU_MHZ} MHz per wake)")
    else:
        only = sorted({(b.board.name, b.firmware.name, b.battery.name) for b in met})
        print("soil, 10 years: met ONLY by the combination" + ("s" if len(only) > 1 else "") + ":")
        for board, fw, cells in only:
            print(f"  {board} + {fw} + {cells}")
    low = next(b for b in soil if b.board is BOARDS[1] and b.firmware is FIRMWARES[1]
               and b.battery is BATTERIES[0])
    print(f"watering, low-power board: {low.parts_ua['watering (measured run)']:.1f} uA with the "
          f"node deep-sleeping while the valve is open; {light_slept_watering_ua(c, low):.1f} "
          "uA if it light-slept through the open time and the rest of that cycle, as before "
          "(same measured run)")
    print("the wake-to-Python times are quoted (sources in bench/energy.py), our Python per wake "
          "is an estimate (bench/node_cpu.py): check both with a current probe on the board")
    print("\nair and noise (low-power board, frozen firmware with the filesystem, alkaline):\n")
    print_table(("role", "battery current", "life", "average current by consumer (uA at the rail)"),
                [(role, f"{b.battery_ua:.1f} uA", f"{b.years:.2f} y",
                  "; ".join(f"{k} {v:.1f}" for k, v in b.parts_ua.items()))
                 for role in ("air", "noise")
                 for b in [budget(role, cycles[role], BOARDS[1], FIRMWARES[1], BATTERIES[0],
                                  cal=cal)]], left=(0, 3))
    print("lighting: mains powered (Class C, receiving all the time): no battery model")


if __name__ == "__main__":
    main()
