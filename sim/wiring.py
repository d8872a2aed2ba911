"""Wiring a node's simulated chips onto a virtual board, by the board's pin map.

One function, `wire_node`, used wherever a virtual board stands for a node (the simulated
district, `cityedge sim board`): the board's SX1276 on its SPI bus (chip select, DIO0 and RESET
pins from firmware/boards.py) on a radio channel, its battery divider on its ADC pin, and the
role's chips on its I2C bus and GPIO pins:

| role | chips on the board (address / pins) | what feeds them |
|---|---|---|
| air | SHT4x (0x44), SPS30 (0x69) | air temperature, humidity, particulates |
| noise | PCB Artists decibel meter (0x48) | A-weighted sound level, day/night |
| soil | seesaw soil probe (0x36), latching valve (H-bridge pins), flow meter | a `SoilPlot` dried by evaporation, wetted by rain and by the valve |
| lighting | INA219 (0x40) on a `LampCircuit`, PWM, relay, door, PIR, S0 meter pins | the node's own PWM and relay; an `S0Meter` pulsing per Wh drawn |

Pins are the role's settings (``settings["pins"]``) over the role firmware's defaults, so the
chips sit where the node's config.json makes the firmware look for them.
"""

from __future__ import annotations

from typing import Any

from firmware.boards import pin_map
from firmware.config import ROLES
from firmware.roles.lighting import PINS as LIGHTING_ROLE_PINS
from firmware.roles.soil import PINS as SOIL_ROLE_PINS
from sim.channel import RadioChannel
from sim.clock import VirtualClock
from sim.environment import Environment, SoilPlot
from sim.ina219 import INA219Model, LampCircuit
from sim.pcba_dbm import DecibelMeterModel
from sim.seesaw import SeesawSoilModel
from sim.sht4x import SHT4xModel
from sim.sps30 import SPS30Model
from sim.sx1276 import SX1276Model
from sim.valve import FlowMeterModel, LatchingValveModel
from sim.vm.board import BoardHardware

BATTERY_UV = 3_000_000  # 2xAA, fresh
# The pins a role's firmware uses where its settings name none (what the chips are wired to).
ROLE_PINS: dict[str, dict[str, int | None]] = {"lighting": LIGHTING_ROLE_PINS,
                                               "soil": SOIL_ROLE_PINS}
FLOW_LITRES_PER_PULSE = 1 / 450  # the soil role's default flow meter (a YF-S201)


class S0Meter:
    """The cabinet's kWh meter: one S0 pulse (the open collector pulled low for 50 ms) per
    ``1 / pulses_per_kwh`` kWh the lamps draw, integrated every ``step_s`` of virtual time."""

    PULSE_US = 50_000

    def __init__(self, clock: VirtualClock, pin: Any, lamps: LampCircuit,
                 pulses_per_kwh: int = 1000, step_s: float = 5.0) -> None:
        self.clock = clock
        self.pin = pin
        self.lamps = lamps
        self.wh_per_pulse = 1000.0 / pulses_per_kwh
        self.step_us = int(step_s * 1e6)
        self.wh = 0.0
        self.pulses = 0
        self._acc = 0.0
        pin.drive(1)  # idle high
        clock.call_later(self.step_us, self._step)

    def _step(self) -> None:
        current_a, _bus_v = self.lamps()
        wh = current_a * self.lamps.lamp_v * self.step_us / 3.6e9
        self.wh += wh
        self._acc += wh
        if self._acc >= self.wh_per_pulse:
            self._acc -= self.wh_per_pulse
            self.pulses += 1
            self.pin.drive(0)
            self.clock.call_later(self.PULSE_US, self.pin.drive, 1)
        self.clock.call_later(self.step_us, self._step)


def wire_node(hw: BoardHardware, board: str, role: str | None, clock: VirtualClock,
              channel: RadioChannel, environment: Environment, *,
              settings: dict[str, Any] | None = None, position: tuple[float, float] = (0.0, 0.0),
              radio_name: str = "sx1276", seed: int = 0,
              battery_uv: int = BATTERY_UV) -> tuple[SX1276Model, dict[str, Any]]:
    """Wire a ``board`` (a firmware/boards.py name) of ``role`` (None: no role chips) onto ``hw``.

    Returns the SX1276 (on ``channel`` at ``position``) and the role's chip models by name.
    ValueError for an unknown board or role.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    spi_id, _sck, _mosi, _miso, cs, reset, dio0, i2c_id, _sda, _scl, adc, div = pin_map(board)
    radio = SX1276Model(clock, channel, position=position, name=radio_name, dio0=hw.pin(dio0),
                        reset=hw.pin(reset))
    hw.spi_bus(spi_id).attach(hw.pin(cs), radio)
    if adc is not None:
        hw.adc[adc] = lambda: int(battery_uv / div)
    if role is None:
        return radio, {}
    return radio, _wire_role(hw, i2c_id, role, clock, environment, settings or {}, seed)


def _wire_role(hw: BoardHardware, i2c_id: int, role: str, clock: VirtualClock,
               env: Environment, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Attach the role's chip models to the board's I2C bus and pins."""
    i2c = hw.i2c_bus(i2c_id)
    models: dict[str, Any] = {}
    pins = {**ROLE_PINS.get(role, {}), **settings.get("pins", {})}
    if role == "air":
        models["sht4x"] = SHT4xModel(clock, env)
        i2c.attach(0x44, models["sht4x"])
        models["sps30"] = SPS30Model(clock, env)
        i2c.attach(0x69, models["sps30"])
    elif role == "noise":
        models["meter"] = DecibelMeterModel(clock, env)
        i2c.attach(0x48, models["meter"])
    elif role == "soil":
        valve = LatchingValveModel(clock, hw.pin(pins["valve_open"]),
                                   hw.pin(pins["valve_close"]))
        models["valve"] = valve
        if pins.get("flow") is not None:
            models["flow"] = FlowMeterModel(
                clock, hw.pin(pins["flow"]), valve,
                litres_per_pulse=settings.get("litres_per_pulse", FLOW_LITRES_PER_PULSE))
        plot = SoilPlot(env, watering_lpm=lambda: 6.0 if valve.state == "open" else 0.0)
        models["plot"] = plot
        models["probe"] = SeesawSoilModel(clock, moisture=plot.moisture,
                                          temperature_c=plot.temperature_c, seed=seed)
        i2c.attach(0x36, models["probe"])
    elif role == "lighting":
        lamps = LampCircuit(hw.pin(pins["relay"]), hw.pin(pins["pwm"]))
        models["lamps"] = lamps
        models["ina219"] = INA219Model(0x40, 0.1, source=lamps)
        i2c.attach(0x40, models["ina219"])
        models["meter"] = S0Meter(clock, hw.pin(pins["s0"]), lamps,
                                  settings.get("pulses_per_kwh", 1000))
        hw.pin(pins["door"]).drive(0)  # door shut (the role's door_open_value is 1)
        hw.pin(pins["presence"]).drive(0)  # nobody in the street
    return models
