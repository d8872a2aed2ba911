"""Gateway-local rules that keep the city running when the hypervisor is away (watering)."""

from gateway.rules.hours import in_window, local_day
from gateway.rules.watering import WateringRules, readings_from_senml, selects

__all__ = ["WateringRules", "in_window", "local_day", "readings_from_senml", "selects"]
