"""Air-quality role: temperature and humidity from a Sensirion SHT4x (particulates come next)."""

from drivers.sht4x import SensorError, SHT4x

FAULT_SHT4X = 1


class AirRole:
    """Reads the role's sensors; a failed sensor is reported as a fault bit, not a crash."""

    name = "air"

    def __init__(self, hw, settings):
        self.hw = hw
        self.sht = SHT4x(hw.i2c, settings.get("sht4x_address", 0x44))
        self.faults = 0

    def read(self):
        """One reading set for the payload codec; absent keys mean 'sensor not read'."""
        readings = {}
        self.faults = 0
        try:
            t, rh = self.sht.measure()
            readings["temperature"] = t / 100
            readings["humidity"] = rh / 100
        except (SensorError, OSError):
            self.faults |= FAULT_SHT4X
        mv = self.hw.battery_mv()
        if mv:
            readings["battery"] = mv
        return readings
