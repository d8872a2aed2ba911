"""A small seeded model of the outdoor conditions a street-level sensor sees, in virtual time.

Every quantity is a pure function of the virtual epoch time (Unix seconds, ``clock.epoch()``) and
the seed: the same seed and instant always give the same value, whatever was asked before or by
whom, so several chip models can share one ``Environment`` and a run replays exactly.

What is modelled:

* air temperature: ``mean_temp_c`` plus an optional seasonal cycle (``annual_amplitude_c``, warmest
  around 20 July in the northern hemisphere, 20 January in the southern), plus a daily cycle of
  +/- ``daily_amplitude_c`` with its minimum at sunrise and its maximum at 15:00 local solar time
  (sunrise from ``latitude`` and the sun's declination, solar time from ``longitude``), plus smooth
  seeded "weather" noise (a 3-hour and a 10-minute component, together within
  +/- ``weather_noise_c``);
* humidity: the dew point (the air's water content) follows the seasonal mean with slow seeded
  noise and hardly moves over a day, so relative humidity, computed with the Magnus formula, falls
  as the air warms in the afternoon and rises towards 100 % (fog) at dawn: anti-correlated with
  temperature as outdoors. ``mean_rh`` is the relative humidity at the mean temperature;
* first placeholders for later sensors: particulate matter (a background plus morning and evening
  traffic peaks) and the A-weighted sound level (day and night levels). Deliberately simple.

* rain: seeded showers (``rain_mm_h``), a few per simulated day, none most of the time;
* soil: ``SoilPlot`` keeps the volumetric water content of one bed of soil (it needs state): it
  dries with evaporation that rises with the air temperature, and is wetted by rain and by the water
  a valve lets through (a callable giving litres per minute). Its temperature follows the air's,
  damped and delayed.

Not modelled: wind, sun and shade, urban heat islands, fronts, anything a sensor does to its own
reading (see the chip models).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

# Magnus formula over water (Sonntag 1990 coefficients, as used by Sensirion's dew point note).
_MAGNUS_A = 6.112  # hPa
_MAGNUS_B = 17.62
_MAGNUS_C = 243.12  # degC

_DAY_S = 86_400.0
_YEAR_S = 365.2422 * _DAY_S
_MARCH_EQUINOX_2000 = 953_537_700.0  # 2000-03-20T07:35Z: solar declination 0, rising
_WARMEST_2000 = 964_051_200.0  # 2000-07-20T00:00Z: northern seasonal temperature peak
_AXIAL_TILT_DEG = 23.44
_T_MAX_SOLAR_HOUR = 15.0

_MASK64 = (1 << 64) - 1

# Noise channels: each quantity draws from its own stream.
_CH_WEATHER_SLOW = 1
_CH_WEATHER_FAST = 2
_CH_DEW_POINT = 3
_CH_PM = 4
_CH_SOUND = 5
_CH_RAIN = 6


def saturation_vapour_pressure_hpa(temp_c: float) -> float:
    """Saturation vapour pressure over water at ``temp_c`` (Magnus formula), in hPa."""
    return _MAGNUS_A * math.exp(_MAGNUS_B * temp_c / (_MAGNUS_C + temp_c))


def dew_point_c(temp_c: float, rh: float) -> float:
    """Dew point of air at ``temp_c`` and ``rh`` %RH (0 < rh <= 100), in degC."""
    if not 0.0 < rh <= 100.0:
        raise ValueError(f"relative humidity must be in (0, 100] %RH, got {rh}")
    gamma = math.log(rh / 100.0) + _MAGNUS_B * temp_c / (_MAGNUS_C + temp_c)
    return _MAGNUS_C * gamma / (_MAGNUS_B - gamma)


def relative_humidity(temp_c: float, dew_c: float) -> float:
    """Relative humidity (%RH, 0..100) of air at ``temp_c`` whose dew point is ``dew_c``."""
    rh = 100.0 * saturation_vapour_pressure_hpa(dew_c) / saturation_vapour_pressure_hpa(temp_c)
    return min(100.0, max(0.0, rh))


def _unit(seed: int, channel: int, k: int) -> float:
    """A deterministic pseudo-random value in [-1, 1) for knot ``k`` (splitmix64 finaliser)."""
    x = seed * 0x9E3779B97F4A7C15 + channel * 0xBF58476D1CE4E5B9 + k * 0x94D049BB133111EB
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x >> 11) / float(1 << 52) - 1.0


def _smooth_noise(seed: int, channel: int, t: float, period_s: float) -> float:
    """Smooth noise in [-1, 1]: seeded knots every ``period_s``, smoothstep in between."""
    u = t / period_s
    k = math.floor(u)
    f = u - k
    w = f * f * (3.0 - 2.0 * f)
    a = _unit(seed, channel, k)
    b = _unit(seed, channel, k + 1)
    return a + (b - a) * w


class Environment:
    """Outdoor temperature, humidity (and first placeholders) at one place, seeded."""

    def __init__(
        self,
        seed: int = 0,
        latitude: float = 43.53,  # Aix-en-Provence
        mean_temp_c: float = 15.0,
        daily_amplitude_c: float = 5.0,
        *,
        longitude: float = 5.45,
        annual_amplitude_c: float = 0.0,
        mean_rh: float = 70.0,
        weather_noise_c: float = 1.0,
        dew_point_noise_c: float = 1.0,
        pm2_5_background_ugm3: float = 8.0,
        pm2_5_traffic_ugm3: float = 10.0,
        sound_day_dba: float = 62.0,
        sound_night_dba: float = 48.0,
    ) -> None:
        if not -90.0 <= latitude <= 90.0:
            raise ValueError(f"latitude must be within -90..90 degrees, got {latitude}")
        if not -180.0 <= longitude <= 180.0:
            raise ValueError(f"longitude must be within -180..180 degrees, got {longitude}")
        if not 0.0 < mean_rh <= 100.0:
            raise ValueError(f"mean_rh must be in (0, 100] %RH, got {mean_rh}")
        for name, value in (
            ("daily_amplitude_c", daily_amplitude_c),
            ("annual_amplitude_c", annual_amplitude_c),
            ("weather_noise_c", weather_noise_c),
            ("dew_point_noise_c", dew_point_noise_c),
            ("pm2_5_background_ugm3", pm2_5_background_ugm3),
            ("pm2_5_traffic_ugm3", pm2_5_traffic_ugm3),
        ):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        self.seed = int(seed)
        self.latitude = latitude
        self.longitude = longitude
        self.mean_temp_c = mean_temp_c
        self.daily_amplitude_c = daily_amplitude_c
        self.annual_amplitude_c = annual_amplitude_c
        self.mean_rh = mean_rh
        self.weather_noise_c = weather_noise_c
        self.dew_point_noise_c = dew_point_noise_c
        self.pm2_5_background_ugm3 = pm2_5_background_ugm3
        self.pm2_5_traffic_ugm3 = pm2_5_traffic_ugm3
        self.sound_day_dba = sound_day_dba
        self.sound_night_dba = sound_night_dba

    # -- sun and seasons --------------------------------------------------------------------------
    def solar_hour(self, epoch_s: float) -> float:
        """Local mean solar time in hours (0..24): UTC shifted by longitude."""
        return (epoch_s / 3600.0 + self.longitude / 15.0) % 24.0

    def sunrise_hour(self, epoch_s: float) -> float:
        """Sunrise in local solar hours on the day of ``epoch_s`` (held to 2..11 near the poles)."""
        phase = 2.0 * math.pi * (epoch_s - _MARCH_EQUINOX_2000) / _YEAR_S
        decl = math.radians(_AXIAL_TILT_DEG) * math.sin(phase)
        cos_w = -math.tan(math.radians(self.latitude)) * math.tan(decl)
        half_day_h = math.degrees(math.acos(min(1.0, max(-1.0, cos_w)))) / 15.0
        return min(11.0, max(2.0, 12.0 - half_day_h))

    def seasonal_mean_c(self, epoch_s: float) -> float:
        """Mean temperature for the time of year (``mean_temp_c`` when there is no annual cycle)."""
        if not self.annual_amplitude_c:
            return self.mean_temp_c
        phase = 2.0 * math.pi * (epoch_s - _WARMEST_2000) / _YEAR_S
        hemisphere = 1.0 if self.latitude >= 0 else -1.0
        return self.mean_temp_c + hemisphere * self.annual_amplitude_c * math.cos(phase)

    def _daily_shape(self, epoch_s: float) -> float:
        """-1 at sunrise, +1 at 15:00 solar time, cosine-shaped warming and cooling in between."""
        hour = self.solar_hour(epoch_s)
        rise = self.sunrise_hour(epoch_s)
        if rise <= hour < _T_MAX_SOLAR_HOUR:
            return -math.cos(math.pi * (hour - rise) / (_T_MAX_SOLAR_HOUR - rise))
        cooling_h = 24.0 - (_T_MAX_SOLAR_HOUR - rise)
        since_max = (hour - _T_MAX_SOLAR_HOUR) % 24.0
        return math.cos(math.pi * since_max / cooling_h)

    # -- what a temperature/humidity sensor sees ------------------------------------------------
    def temperature_c(self, epoch_s: float) -> float:
        """Air temperature in degC."""
        weather = 0.8 * _smooth_noise(self.seed, _CH_WEATHER_SLOW, epoch_s, 3 * 3600.0)
        weather += 0.2 * _smooth_noise(self.seed, _CH_WEATHER_FAST, epoch_s, 600.0)
        return (
            self.seasonal_mean_c(epoch_s)
            + self.daily_amplitude_c * self._daily_shape(epoch_s)
            + self.weather_noise_c * weather
        )

    def dew_point_c(self, epoch_s: float) -> float:
        """Dew point in degC: slow, hardly any daily cycle; never above the air temperature."""
        base = dew_point_c(self.seasonal_mean_c(epoch_s), self.mean_rh)
        dew = base + self.dew_point_noise_c * _smooth_noise(
            self.seed, _CH_DEW_POINT, epoch_s, 6 * 3600.0
        )
        return min(dew, self.temperature_c(epoch_s))

    def humidity_rh(self, epoch_s: float) -> float:
        """Relative humidity in %RH (0..100), anti-correlated with temperature."""
        return relative_humidity(self.temperature_c(epoch_s), self.dew_point_c(epoch_s))

    # -- placeholders for later sensors (first-order shapes only) ------------------------------
    def pm2_5_ugm3(self, epoch_s: float) -> float:
        """PM2.5 in ug/m3: background plus traffic peaks near 08:00 and 18:30 solar time."""
        hour = self.solar_hour(epoch_s)
        traffic = math.exp(-(((hour - 8.0) / 1.5) ** 2)) + math.exp(-(((hour - 18.5) / 2.0) ** 2))
        wobble = 1.0 + 0.3 * _smooth_noise(self.seed, _CH_PM, epoch_s, 1800.0)
        return max(0.0, (self.pm2_5_background_ugm3 + self.pm2_5_traffic_ugm3 * traffic) * wobble)

    def pm1_ugm3(self, epoch_s: float) -> float:
        """PM1 in ug/m3 (a fixed share of PM2.5, typical of urban traffic aerosol)."""
        return 0.7 * self.pm2_5_ugm3(epoch_s)

    def pm10_ugm3(self, epoch_s: float) -> float:
        """PM10 in ug/m3 (a fixed multiple of PM2.5)."""
        return 1.6 * self.pm2_5_ugm3(epoch_s)

    def sound_level_dba(self, epoch_s: float) -> float:
        """Instantaneous A-weighted sound level in dB(A): day level 07:00-22:00, night otherwise."""
        hour = self.solar_hour(epoch_s)
        # Smooth 1-hour ramps around 07:00 and 22:00 (logistic), plus +/-3 dB fluctuation.
        day = 1.0 / (1.0 + math.exp(-(hour - 7.0) * 4.0)) - 1.0 / (
            1.0 + math.exp(-(hour - 22.0) * 4.0)
        )
        level = self.sound_night_dba + (self.sound_day_dba - self.sound_night_dba) * day
        return level + 3.0 * _smooth_noise(self.seed, _CH_SOUND, epoch_s, 5.0)

    # -- rain -------------------------------------------------------------------------------------
    def rain_mm_h(self, epoch_s: float) -> float:
        """Rain rate in mm/h: seeded showers of an hour or two, dry most of the time."""
        shower = _smooth_noise(self.seed, _CH_RAIN, epoch_s, 2 * 3600.0)
        return 0.0 if shower < 0.55 else 12.0 * (shower - 0.55)


class SoilPlot:
    """The water content of one bed of soil, integrated over virtual time as it is asked for.

    ``moisture(epoch_s)`` gives the volumetric water content in % (what a capacitive probe sees);
    ``temperature_c(epoch_s)`` the soil temperature. Water comes from rain (``environment``) and
    from ``watering_lpm()`` (a valve's current flow, in litres per minute) spread on ``area_m2``;
    evaporation grows with the air temperature. Queries must go forward in time (earlier instants
    return the current value). Thread-safe: chip models may ask from the scheduler thread while a
    test reads it.
    """

    def __init__(
        self,
        environment: Environment,
        *,
        start_moisture: float = 32.0,
        field_capacity: float = 45.0,
        wilting_point: float = 8.0,
        root_depth_mm: float = 200.0,
        area_m2: float = 4.0,
        evaporation_mm_day: float = 4.0,
        watering_lpm: Callable[[], float] | None = None,
    ) -> None:
        if not wilting_point < start_moisture <= field_capacity <= 100.0:
            raise ValueError(
                f"moisture must be within ({wilting_point}, {field_capacity}] %, got {start_moisture}")
        if root_depth_mm <= 0 or area_m2 <= 0:
            raise ValueError("root_depth_mm and area_m2 must be positive")
        self.environment = environment
        self.field_capacity = field_capacity
        self.wilting_point = wilting_point
        self.root_depth_mm = root_depth_mm
        self.area_m2 = area_m2
        self.evaporation_mm_day = evaporation_mm_day
        self.watering_lpm = watering_lpm
        self._moisture = start_moisture
        self._t: float | None = None
        self.rain_mm = 0.0
        self.watered_l = 0.0
        self._lock = threading.Lock()

    def _advance(self, epoch_s: float) -> None:
        if self._t is None:
            self._t = epoch_s
            return
        while self._t < epoch_s:
            dt = min(60.0, epoch_s - self._t)
            t = self._t + dt / 2
            temp = self.environment.temperature_c(t)
            evap_mm = self.evaporation_mm_day * max(0.2, (temp + 5.0) / 25.0) * dt / 86_400.0
            # evaporation slows as the soil dries towards the wilting point
            dryness = (self._moisture - self.wilting_point) / (self.field_capacity - self.wilting_point)
            evap_mm *= max(0.0, min(1.0, dryness))
            rain = self.environment.rain_mm_h(t) * dt / 3600.0
            water_l = (self.watering_lpm() if self.watering_lpm else 0.0) * dt / 60.0
            self.rain_mm += rain
            self.watered_l += water_l
            gain_mm = rain + water_l / self.area_m2  # 1 L on 1 m2 = 1 mm
            self._moisture += 100.0 * (gain_mm - evap_mm) / self.root_depth_mm
            self._moisture = min(self.field_capacity, max(self.wilting_point, self._moisture))
            self._t += dt

    def moisture(self, epoch_s: float) -> float:
        """Volumetric water content in % at ``epoch_s``."""
        with self._lock:
            self._advance(epoch_s)
            return self._moisture

    def temperature_c(self, epoch_s: float) -> float:
        """Soil temperature at root depth: the air's of three hours before, damped to a third."""
        env = self.environment
        mean = env.seasonal_mean_c(epoch_s)
        return mean + (env.temperature_c(epoch_s - 3 * 3600.0) - mean) / 3.0
