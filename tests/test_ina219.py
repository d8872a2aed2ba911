"""The INA219 driver (drivers/ina219.py) against the register-level model (sim/ina219.py).

Datasheet facts checked: register map and byte order, power-on values and the reset bit, the
calibration formula with its worked numbers, current and power register maths and LSBs, shunt and
bus ranges, CNVR and OVF flags.
"""

from __future__ import annotations

import pytest

from drivers.ina219 import (
    ADC_AVG_128,
    CONFIG_DEFAULT,
    INA219,
    MODE_POWER_DOWN,
    MODE_SHUNT_BUS_TRIGGERED,
    SensorError,
)
from sim.bus import SimI2C
from sim.ina219 import CALIBRATION, CONFIG, INA219Model


def _wired(shunt_ohms: float = 0.1, address: int = 0x40) -> tuple[INA219, INA219Model, SimI2C]:
    bus = SimI2C(0)
    model = INA219Model(address, shunt_ohms)
    bus.attach(address, model)
    return INA219(bus, address), model, bus


def test_calibration_follows_the_datasheet_formula_and_reaches_the_chip_msb_first() -> None:
    ina, model, _ = _wired()
    # 3.2768 A max -> Current_LSB = 100 uA; Cal = trunc(0.04096 / (100e-6 * 0.1)) = 4096.
    assert ina.calibrate(0.1, 3.2768) == 100
    assert model.regs[CALIBRATION] == 4096
    assert ina.read_register(CALIBRATION) == 4096
    # 3.2 A max -> 97.66 uA rounded up to 98 uA; Cal = trunc(4179.59) = 4179, void bit 0 cleared.
    assert ina.calibrate(0.1, 3.2) == 98
    assert model.regs[CALIBRATION] == 4178


def test_current_power_shunt_and_bus_readings_match_the_circuit() -> None:
    ina, model, _ = _wired()
    ina.configure()
    ina.calibrate(0.1, 3.2768)
    model.current_a, model.bus_v = 1.5, 12.0

    assert ina.shunt_voltage_uv() == 150_000  # 1.5 A x 0.1 ohm, LSB 10 uV
    assert ina.bus_voltage_mv() == 12_000  # LSB 4 mV
    assert ina.current_ua() == 1_500_000  # 15000 x 4096 / 4096 = 15000 LSB of 100 uA
    # Power = Current x Bus / 5000 = 15000 x 3000 / 5000 = 9000 LSB of 20 x 100 uW.
    assert ina.power_uw() == 18_000_000


def test_reverse_current_reads_negative() -> None:
    ina, model, _ = _wired()
    ina.configure()
    ina.calibrate(0.1, 3.2768)
    model.current_a, model.bus_v = -0.5, 5.0
    assert ina.shunt_voltage_uv() == -50_000
    assert ina.current_ua() == -500_000


def test_shunt_range_follows_the_pga_and_bus_range_follows_brng() -> None:
    ina, model, _ = _wired()
    ina.configure(bus_range_v=16, gain=1)  # +/-40 mV shunt, 16 V bus
    model.current_a, model.bus_v = 1.0, 24.0  # 100 mV across the shunt, 24 V bus
    assert ina.shunt_voltage_uv() == 40_000
    assert ina.bus_voltage_mv() == 16_000
    ina.configure(bus_range_v=32, gain=8)
    assert ina.shunt_voltage_uv() == 100_000
    assert ina.bus_voltage_mv() == 24_000


def test_math_overflow_flag_when_the_current_does_not_fit() -> None:
    ina, model, _ = _wired()
    ina.configure()
    ina.calibrate(0.1, 0.5)  # 16 uA LSB: at most ~0.52 A
    model.current_a, model.bus_v = 0.4, 12.0
    assert ina.overflow() is False
    model.current_a = 1.0  # 10000 x 25600 / 4096 = 62500 > 32767
    assert ina.overflow() is True


def test_conversion_ready_is_cleared_by_reading_power_and_by_a_mode_write() -> None:
    ina, model, _ = _wired()
    ina.configure()
    ina.calibrate(0.1, 3.2768)
    model.bus_v = 10.0
    assert ina.conversion_ready() is True
    ina.power_uw()
    assert model.regs[2] & 0x0002 == 0  # CNVR cleared by the Power read
    ina.configure(mode=MODE_POWER_DOWN)
    assert ina.conversion_ready() is False  # powered down: no new conversion
    assert ina.bus_voltage_mv() == 10_000  # last results are kept
    model.bus_v = 11.0
    ina.trigger(MODE_SHUNT_BUS_TRIGGERED)
    assert ina.conversion_ready() is True
    assert ina.bus_voltage_mv() == 11_000
    model.bus_v = 12.0
    assert ina.bus_voltage_mv() == 11_000  # triggered: one conversion only


def test_reset_restores_power_on_values_and_a_brown_out_is_repaired() -> None:
    ina, model, _ = _wired()
    ina.configure(bus_range_v=16, gain=4, shunt_adc=ADC_AVG_128)
    ina.calibrate(0.1, 3.2768)
    model.current_a = 1.0
    assert ina.ensure_calibrated() is False
    assert ina.current_ua() == 1_000_000

    model.brown_out()
    assert model.regs[CONFIG] == CONFIG_DEFAULT and model.regs[CALIBRATION] == 0
    assert ina.current_ua() == 0  # an uncalibrated chip reads no current at all
    assert ina.ensure_calibrated() is True
    assert ina.current_ua() == 1_000_000
    assert ina.ensure_calibrated() is False

    ina.reset()
    assert ina.read_register(CONFIG) == CONFIG_DEFAULT
    assert ina.read_register(CALIBRATION) == 0
    with pytest.raises(SensorError, match="calibrate"):
        ina.current_ua()


def test_a_missing_or_stuck_chip_raises_sensor_error_naming_the_address() -> None:
    ina, model, bus = _wired(address=0x41)
    model.stuck = True
    with pytest.raises(SensorError, match="0x41"):
        ina.bus_voltage_mv()
    bus.detach(0x41)
    with pytest.raises(SensorError, match="0x41"):
        ina.configure()


def test_bad_settings_are_refused_before_touching_the_chip() -> None:
    ina, model, bus = _wired()
    with pytest.raises(ValueError, match="address"):
        INA219(bus, 0x39)
    with pytest.raises(ValueError, match="bus range"):
        ina.configure(bus_range_v=20)
    with pytest.raises(ValueError, match="gain"):
        ina.configure(gain=3)
    with pytest.raises(ValueError, match="ADC"):
        ina.configure(bus_adc=5)
    with pytest.raises(ValueError, match="calibration"):
        ina.calibrate(0.0001, 0.01)  # Cal would exceed 16 bits
    with pytest.raises(ValueError, match="positive"):
        ina.calibrate(0.1, 0)
    assert model.regs[CONFIG] == CONFIG_DEFAULT and model.regs[CALIBRATION] == 0
