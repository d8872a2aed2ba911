"""Energy model of the battery nodes: datasheet currents x measured awake, radio and sensor times.

Measured (virtual time of the node running in the MicroPython VM, bench.node_run): per wake from
deep sleep, the board's time up (``Boot.ended_us - Boot.started_us``) split into light sleep
(``Boot.light_sleep_us``: the VM's machine.lightsleep, used by a battery node for every wait it
knows the length of: receive delays and windows, time on air, sensor warm-up) and awake (the
rest: busy waits of the drivers, I2C transfers in virtual time), the SX1276's time in TX,
RX, standby and sleep within it (from the register model's mode changes), the SPS30's fan time and
the soil probe's powered time per read, the valve pulse length; the extra of the daily health
uplink is the power-on boot (health + reading) minus a wake boot (reading only). The receive
windows are what the firmware opens: RXSINGLE for the symbols of firmware.device.rx_window,
closed by the chip's RxTimeout (register model), the radio asleep before and between them.

Not measured, stated as assumptions: the VM runs Python code in zero virtual time, so the time the
ESP32 spends booting MicroPython and running the code (ROM and bootloader, VM start-up, loading
the .mpy modules, AES) is a fixed ``CPU_MS_PER_WAKE`` at the active current; one watering a day
(one opening and one closing pulse) for the soil node.

Currents (typical values, sources named at each constant; the PCBA-DBM figure was checked on the
vendor's page for this benchmark, the others are quoted from the named documents and should be
re-checked against their current revisions before the figures are published). Two designs:

* board as sold: a Heltec WiFi LoRa 32 (V2) (the TTGO LoRa32 is of the same kind): its deep-sleep
  current is set by the board (LDO, USB-UART bridge, battery divider), not by the ESP32;
* low-power design: the same firmware on an ESP32 module (WROOM-32) with a low-Iq LDO, no USB
  bridge on the battery rail and the SX1276 put to sleep: the chips' own sleep currents.

Battery: 2 x AA alkaline in series, 2500 mAh at 3 V nominal; the board's LDO passes the battery
current through (an LDO's input current is its load current plus Iq; no conversion gain), 80 % of
the capacity usable before the cells reach the ESP32's 2.3 V minimum supply (cold weather, end
voltage) and 2 % of the nominal capacity lost per year to self-discharge.
Run: python -m bench.energy
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from bench.node_run import DEEPSLEEP_CAUSE, INTERVAL_S, NodeRun, RadioTimes, measured, radio_between
from bench.table import print_table

BATTERY_ROLES = ("air", "noise", "soil")
TARGET_YEARS_SOIL = 10.0

# -- battery ---------------------------------------------------------------------------------------
BATTERY_MAH = 2500.0  # 2 x AA alkaline in series (e.g. Energizer E91: ~2500 mAh at low drain)
USABLE = 0.80  # to the ESP32's 2.3 V minimum (Espressif ESP32 datasheet, VDD 2.3..3.6 V)
SELF_DISCHARGE_PER_YEAR = 0.02  # alkaline shelf loss, of the nominal capacity

# -- MCU: Espressif "ESP32 Series Datasheet", section Power Consumption by Power Modes --------------
ESP32_ACTIVE_MA = 44.0  # modem-sleep (CPU on, Wi-Fi/BT off) at 160 MHz: 27..44 mA (upper value)
ESP32_LIGHT_SLEEP_MA = 0.8  # light-sleep (CPU and digital peripherals clock-gated): 0.8 mA
ESP32_DEEP_SLEEP_UA = 10.0  # deep-sleep, RTC timer + RTC memory powered: 10 uA
CPU_MS_PER_WAKE = 600  # ASSUMPTION (not measured: code runs in zero virtual time): ROM boot,
# bootloader, MicroPython start, loading ~60 KB of .mpy, AES, at the active current

# -- boards ------------------------------------------------------------------------------------------
HELTEC_V2_DEEP_SLEEP_UA = 800.0  # Heltec WiFi LoRa 32 (V2) product page: "deep sleep 800 uA"
# (the board's LDO, CP2102 USB-UART and battery divider stay powered)
LDO_IQ_UA = 1.6  # Microchip MCP1700 datasheet: quiescent current 1.6 uA typ (low-power design)

# -- radio: Semtech SX1276/77/78/79 datasheet rev 7, table 6 (band 1, 862-1020 MHz) ------------------
SX1276_TX_MA = 87.0  # IDDT, RFOP +17 dBm on PA_BOOST: 87 mA. The boards wire PA_BOOST; DS gives no
# +14 dBm PA_BOOST figure, so the next one up is used (an upper bound)
SX1276_RX_MA = 11.5  # IDDR, LnaBoost on, 125 kHz: 11.5 mA
SX1276_STANDBY_MA = 1.6  # IDDST, standby (crystal oscillator running): 1.6 mA
SX1276_SLEEP_UA = 0.2  # IDDSLEEP, sleep: 0.2 uA typ

# -- sensors -------------------------------------------------------------------------------------------
SPS30_MEASURE_MA = 55.0  # Sensirion SPS30 datasheet, supply current in measurement mode: 55 mA typ
SPS30_SLEEP_UA = 38.0  # same table, sleep mode: 38 uA typ (the role puts the chip to sleep)
SHT4X_MEASURE_UA = 320.0  # Sensirion SHT4x datasheet: average current while measuring, 320 uA
SHT4X_MEASURE_MS = 8.3  # same: high-repeatability measurement, 8.3 ms max
SHT4X_IDLE_UA = 0.08  # same: idle current 0.08 uA typ
DBM_ACTIVE_MA = 4.3  # PCB Artists PCBA-DBM-r3 "Pinout and Electrical Characteristics": active 4.3 mA
# at 3.3 V (sleep 90 uA, but the noise role never powers the module down: active all the time)
SEESAW_ACTIVE_MA = 5.0  # Adafruit STEMMA soil sensor (ATSAMD09 at 48 MHz): no vendor figure; the
# SAM D09 datasheet's active current at 48 MHz is a few mA, rounded up to 5 mA for the board
SEESAW_OFF_UA = 0.0  # its supply switched off by settings.pins.sensor_power between reads
DRV8833_SLEEP_UA = 1.6  # TI DRV8833 datasheet: VM sleep current (nSLEEP low) 1.6 uA typ
VALVE_COIL_V = 9.0  # ASSUMPTION, a DC latching solenoid (drivers/valve.py: 9-12 V, 3-8 ohm coils)
VALVE_COIL_OHM = 4.0  # ... at 9 V into 4 ohm: 2.25 A during the pulse
BOOST_EFFICIENCY = 0.80  # ASSUMPTION: the 9 V for the coil from a boost converter on the 3 V cells
VALVE_PULSES_PER_DAY = 2  # ASSUMPTION: one watering a day (open + close)
BATTERY_V = 3.0


@dataclass
class Cycle:
    """Measured times of one reporting cycle (a wake from deep sleep), microseconds."""

    awake_us: float  # MCU running (time up minus light sleep)
    light_sleep_us: float
    radio: RadioTimes
    sensor_on_us: dict[str, float]
    health_extra_awake_us: float  # once a day
    health_extra_light_us: float
    health_extra_radio: RadioTimes
    valve_pulse_us: float


@dataclass
class Budget:
    """Average current of one design, by consumer (uA), and the battery life it gives."""

    design: str
    parts_ua: dict[str, float] = field(default_factory=dict)

    @property
    def total_ua(self) -> float:
        return sum(self.parts_ua.values())

    @property
    def years(self) -> float:
        usable_mah = BATTERY_MAH * USABLE
        per_year_mah = self.total_ua / 1000 * 24 * 365 + BATTERY_MAH * SELF_DISCHARGE_PER_YEAR
        return usable_mah / per_year_mah


def cycle_of(run: NodeRun) -> Cycle:
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
    reads = len(ended)
    return Cycle(
        awake_us=mean(span(b) for b in wakes),
        light_sleep_us=mean(b.light_sleep_us for b in wakes),
        radio=avg,
        sensor_on_us={k: v / reads for k, v in run.sensor_on_us.items()},
        health_extra_awake_us=max(0.0, span(first) - mean(span(b) for b in wakes)),
        health_extra_light_us=max(0.0, first.light_sleep_us - mean(b.light_sleep_us for b in wakes)),
        health_extra_radio=extra,
        valve_pulse_us=mean(run.valve_pulses_us) if run.valve_pulses_us else 0.0,
    )


def budget(role: str, c: Cycle, low_power: bool, interval_s: int = INTERVAL_S) -> Budget:
    """Average current of a node of ``role`` reporting every ``interval_s`` (one design)."""
    b = Budget("low-power design" if low_power else "board as sold (Heltec V2)")
    per_s = 1.0 / interval_s  # cycles per second
    day = 1.0 / 86400
    awake_s = c.awake_us / 1e6 + CPU_MS_PER_WAKE / 1000
    light_s = c.light_sleep_us / 1e6
    asleep_s = interval_s - awake_s - light_s  # deep sleep

    def avg_ua(ma: float, seconds_per_cycle: float) -> float:
        return ma * 1000 * seconds_per_cycle * per_s

    b.parts_ua["MCU awake"] = avg_ua(ESP32_ACTIVE_MA, awake_s) + \
        ESP32_ACTIVE_MA * 1000 * c.health_extra_awake_us / 1e6 * day
    b.parts_ua["MCU light sleep"] = avg_ua(ESP32_LIGHT_SLEEP_MA, light_s) + \
        ESP32_LIGHT_SLEEP_MA * 1000 * c.health_extra_light_us / 1e6 * day
    radio_ua = 0.0
    for r, rate in ((c.radio, per_s), (c.health_extra_radio, day)):
        radio_ua += (SX1276_TX_MA * r.tx_us + SX1276_RX_MA * r.rx_us
                     + SX1276_STANDBY_MA * r.standby_us
                     + SX1276_SLEEP_UA / 1000 * r.sleep_us) * 1000 / 1e6 * rate
    b.parts_ua["radio TX/RX/standby/sleep"] = radio_ua
    if low_power:
        b.parts_ua["deep sleep: MCU + SX1276"] = (ESP32_DEEP_SLEEP_UA
                                                  + SX1276_SLEEP_UA) * asleep_s * per_s
        b.parts_ua["LDO quiescent"] = LDO_IQ_UA
    else:  # the board's own draw (LDO, USB bridge, divider) stays on in light sleep too
        b.parts_ua["sleep: board"] = (HELTEC_V2_DEEP_SLEEP_UA * asleep_s + (
            HELTEC_V2_DEEP_SLEEP_UA - ESP32_DEEP_SLEEP_UA) * light_s) * per_s
    if role == "air":
        fan_s = c.sensor_on_us.get("sps30_fan", 0) / 1e6
        b.parts_ua["SPS30"] = avg_ua(SPS30_MEASURE_MA, fan_s) + SPS30_SLEEP_UA * (
            interval_s - fan_s) * per_s
        b.parts_ua["SHT4x"] = avg_ua(SHT4X_MEASURE_UA / 1000, SHT4X_MEASURE_MS / 1000) \
            + SHT4X_IDLE_UA
    elif role == "noise":
        b.parts_ua["PCBA-DBM (never powered down)"] = DBM_ACTIVE_MA * 1000
    elif role == "soil":
        on_s = c.sensor_on_us.get("seesaw", 0) / 1e6
        b.parts_ua["seesaw probe"] = avg_ua(SEESAW_ACTIVE_MA, on_s) + SEESAW_OFF_UA
        b.parts_ua["H-bridge asleep"] = DRV8833_SLEEP_UA
        pulse_j = VALVE_COIL_V ** 2 / VALVE_COIL_OHM * c.valve_pulse_us / 1e6
        battery_c = pulse_j / BOOST_EFFICIENCY / BATTERY_V  # coulombs per pulse from the cells
        b.parts_ua["valve pulses"] = battery_c * 1e6 * VALVE_PULSES_PER_DAY * day
    return b


def avg_boot_ua(interval_s: int = INTERVAL_S) -> float:
    """Average current of the assumed boot/CPU time of every wake (not measured in the VM)."""
    return ESP32_ACTIVE_MA * 1000 * CPU_MS_PER_WAKE / 1000 / interval_s


def results() -> list[tuple[str, Cycle, Budget, Budget]]:
    """(role, measured cycle, board as sold, low-power design) per battery role."""
    out = []
    for role in BATTERY_ROLES:
        c = cycle_of(measured(role))
        out.append((role, c, budget(role, c, False), budget(role, c, True)))
    return out


def main() -> None:
    """Print the measured cycle, the current budgets and the battery lives."""
    data = results()
    print(f"measured per wake (one uplink per {INTERVAL_S // 60} min, SF7, 14 dBm; virtual time "
          "in the VM):\n")
    print_table(
        ("role", "awake", "light sleep", "TX", "RX", "standby", "sensor on", "valve pulse",
         "daily health extra"),
        [(role, f"{c.awake_us / 1e3:.0f} ms", f"{c.light_sleep_us / 1e3:.0f} ms",
          f"{c.radio.tx_us / 1e3:.1f} ms",
          f"{c.radio.rx_us / 1e3:.1f} ms", f"{c.radio.standby_us / 1e3:.0f} ms",
          ", ".join(f"{k} {v / 1e3:.0f} ms" for k, v in c.sensor_on_us.items()) or "-",
          f"{c.valve_pulse_us / 1e3:.0f} ms" if c.valve_pulse_us else "-",
          f"{c.health_extra_awake_us / 1e3:.0f} ms awake")
         for role, c, _a, _b in data])
    print(f"\nplus {CPU_MS_PER_WAKE} ms of CPU per wake at {ESP32_ACTIVE_MA:.0f} mA (assumed: "
          "boot and code run in zero virtual time)\n")
    rows = []
    for role, _c, sold, low in data:
        for b in (sold, low):
            parts = "; ".join(f"{k} {v:.1f}" for k, v in b.parts_ua.items())
            target = ""
            if role == "soil":
                target = "met" if b.years >= TARGET_YEARS_SOIL else "NOT MET"
            rows.append((role, b.design, f"{b.total_ua:.1f} uA", f"{b.years:.2f} y",
                         target, parts))
    print_table(("role", "design", "average", "2xAA life", f">= {TARGET_YEARS_SOIL:.0f} y",
                 "average current by consumer (uA)"), rows, left=(0, 1, 5))
    soil_low = next(low for role, _c, _s, low in data if role == "soil")
    allowed = (BATTERY_MAH * USABLE / TARGET_YEARS_SOIL
               - BATTERY_MAH * SELF_DISCHARGE_PER_YEAR) * 1000 / (24 * 365)
    print(f"\nbattery: 2 x AA, {BATTERY_MAH:.0f} mAh at {BATTERY_V:.0f} V through the board's LDO "
          f"(current passes through), {USABLE:.0%} usable, {SELF_DISCHARGE_PER_YEAR:.0%} of it "
          "self-discharged per year")
    print(f"soil, low-power design: {soil_low.years:.2f} years (target {TARGET_YEARS_SOIL:.0f}): "
          f"{'met' if soil_low.years >= TARGET_YEARS_SOIL else 'NOT MET'}; 10 years allow "
          f"{allowed:.1f} uA on average in all")
    measured = {k: v for k, v in soil_low.parts_ua.items()
                if k not in ("MCU awake", "valve pulses")}
    floor = sum(measured.values())
    print(f"soil, low-power design, where the 10 years go: the assumed {CPU_MS_PER_WAKE} ms of "
          f"boot/CPU per wake alone averages {avg_boot_ua():.1f} uA and the valve pulses "
          f"{soil_low.parts_ua['valve pulses']:.1f} uA; without both (MCU awake time measured in "
          f"the VM only: {soil_low.parts_ua['MCU awake'] - avg_boot_ua():.1f} uA) the node "
          f"still averages {floor + soil_low.parts_ua['MCU awake'] - avg_boot_ua():.1f} uA, of "
          f"which deep sleep, LDO and H-bridge {sum(measured[k] for k in measured if k.startswith(('deep', 'LDO', 'H-'))):.1f} uA "
          f"and the radio {measured['radio TX/RX/standby/sleep']:.1f} uA: above the "
          f"{allowed:.1f} uA that 10 years on 2 x AA alkaline allow")
    print("lighting: mains powered (Class C, receiving all the time): no battery model")


if __name__ == "__main__":
    main()
