"""The one table of every payload field: wire width, resolution, range and SenML name and unit.

Encoder, decoder and SenML mapping all read this table, so a field is defined exactly once.
A field is a tuple indexed by the `F_*` constants; `num()`, `enum()`... build them.

Wire format of an uplink (FPort names the role, see docs/architecture.md):

    [version:3][one presence bit per optional field, table order][present fields, table order][0 pad]

Bits are packed MSB first, multi-bit fields big-endian. A numeric field carries
raw = round(value * scale) in `bits` bits, two's complement when its range goes below zero.
The reading's key is also its SenML record name `n`; SenML value = raw * mul / (scale * div).

| FPort | role | key | reading unit | resolution, range | bits | SenML unit |
|---|---|---|---|---|---|---|
| 10 | air | temperature | °C | 0.01, -40..125 (SHT4x range, saturates) | 15 | Cel |
| 10 | air | humidity | %RH | 0.01, 0..100 (SHT4x: crop to 0..100) | 14 | %RH |
| 10 | air | pm1_0 pm2_5 pm4_0 pm10 | µg/m³ | 0.1, 0..1000 (SPS30 range, saturates) | 14 each | kg/m3 |
| 10 | air | battery | mV | 1, 0..8191 | 13 | V |
| 11 | noise | laeq lamax lamin la10 la90 | dB(A) | 0.1, 20..130 (saturates) | 11 each | dB |
| 11 | noise | interval | s | 1, 1..65535 | 16 | s |
| 11 | noise | battery | mV | as air | 13 | V |
| 12 | soil | soil_moisture | % volumetric water content | 0.1, 0..100 (saturates) | 10 | / |
| 12 | soil | soil_temperature | °C | 0.1, -40..85 | 12 | Cel |
| 12 | soil | valve | closed / open / fault | - | 2 | (vs) |
| 12 | soil | water_volume | litres since last report | 0.1, 0..6553.5 | 16 | m3 |
| 12 | soil | battery | mV | as air | 13 | V |
| 13 | lighting | level | % of full output | 1, 0..100 | 7 | / |
| 13 | lighting | relay | True = contactor closed | - | 1 | (vb) |
| 13 | lighting | level_source | calendar / override / presence / fallback | - | 2 | (vs) |
| 13 | lighting | energy | Wh, cumulative | 1, 0..2**32-1 | 32 | J |
| 13 | lighting | lamp_current | mA | 1, 0..65535 | 16 | A |
| 13 | lighting | lamp_voltage mains_voltage | V | 0.1, 0..500 | 13 each | V |
| 13 | lighting | alarms | subset of ALARMS | - | 4 | alarm_<name> (vb) |
| 20 | health | supply | mV | 1, 0..65535 | 16 | V |
| 20 | health | reset_cause | one of RESET_CAUSES | - | 3 | (vs) |
| 20 | health | faults | subset of FAULTS | - | 8 | fault_<name> (vb) |
| 20 | health | firmware | "major.minor.patch" | 0..15 . 0..63 . 0..63 | 16 | (vs) |
| 20 | health | uptime | s | 1, 0..2**32-1 | 32 | s |
| 30 | ack | cmd_seq, cmd_result (both required) | 0..255, one of RESULTS | - | 8 + 3 | (v), (vs) |

Soil moisture is volumetric water content computed on the node from the probe's raw counts and
its per-node calibration, so the wire format and the city's data do not change with the probe.
Fields marked "saturates" are clamped to their range by the encoder (the sensor cannot measure
beyond it); every other out-of-range value raises PayloadError.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


FORMAT_VERSION = const(1)
VERSION_BITS = const(3)

# Field tuple indices.
F_KEY = const(0)
F_KIND = const(1)
F_BITS = const(2)
F_SCALE = const(3)
F_LO = const(4)  # raw minimum
F_HI = const(5)  # raw maximum (lists: most items)
F_NAMES = const(6)  # enum or flag names; item layout for lists
F_OPTS = const(7)
F_SENML = const(8)  # numbers: (unit, mul, div); flags: record name prefix; else None

# Kinds.
NUM = const(0)
ENUM = const(1)
BOOL = const(2)
FLAGS = const(3)
SEMVER = const(4)
LIST = const(5)

# Options.
REQUIRED = const(1)  # always present: no presence bit
SATURATES = const(2)  # clamp to the range instead of raising (a sensor's own limit)


def num(key, bits, scale, lo, hi, unit=None, mul=1, div=1, opts=0):
    """A fixed-point number: raw = round(value * scale), lo..hi in reading units."""
    return (key, NUM, bits, scale, round(lo * scale), round(hi * scale), None, opts,
            (unit, mul, div))


def enum(key, bits, names, opts=0):
    """One name out of `names`, sent as its index."""
    return (key, ENUM, bits, 1, 0, len(names) - 1, names, opts, None)


def boolean(key, opts=0):
    """True or False in one bit."""
    return (key, BOOL, 1, 1, 0, 1, None, opts, None)


def flags(key, names, prefix):
    """A subset of `names`, one bit each (first name = most significant bit)."""
    return (key, FLAGS, len(names), 1, 0, 0, names, 0, prefix)


def semver(key):
    """A "major.minor.patch" version in 4 + 6 + 6 bits."""
    return (key, SEMVER, 16, 1, 0, 0, None, 0, None)


def items(key, count_bits, most, layout, opts=0):
    """A list of at most `most` dicts, each packed by `layout` (all its fields required)."""
    return (key, LIST, count_bits, 1, 0, most, layout, opts, None)


VALVE_STATES = ("closed", "open", "fault")
LEVEL_SOURCES = ("calendar", "override", "presence", "fallback")
ALARMS = ("lamp_failure", "relay_failure", "door_open", "calendar_fallback")
RESET_CAUSES = ("power_on", "hard", "watchdog", "deep_sleep", "soft", "brownout", "panic",
                "other")
FAULTS = ("temp_humidity", "particulate", "sound", "soil", "flow", "valve", "energy_meter",
          "clock")
RESULTS = ("done", "unknown_command", "out_of_range", "busy", "not_supported", "failed")

_PM = 10 ** 9  # µg/m³ -> kg/m3
_BATTERY = num("battery", 13, 1, 0, 8191, "V", 1, 1000)


def _level(key):
    return num(key, 11, 10, 20, 130, "dB", opts=SATURATES)


def _pm(key):
    return num(key, 14, 10, 0, 1000, "kg/m3", 1, _PM, SATURATES)


def _volts(key):
    return num(key, 13, 10, 0, 500, "V")


UPLINKS = {
    "air": (10, (
        num("temperature", 15, 100, -40, 125, "Cel", opts=SATURATES),
        num("humidity", 14, 100, 0, 100, "%RH", opts=SATURATES),
        _pm("pm1_0"), _pm("pm2_5"), _pm("pm4_0"), _pm("pm10"),
        _BATTERY,
    )),
    "noise": (11, (
        _level("laeq"), _level("lamax"), _level("lamin"), _level("la10"), _level("la90"),
        num("interval", 16, 1, 1, 65535, "s"),
        _BATTERY,
    )),
    "soil": (12, (
        num("soil_moisture", 10, 10, 0, 100, "/", 1, 100, SATURATES),
        num("soil_temperature", 12, 10, -40, 85, "Cel"),
        enum("valve", 2, VALVE_STATES),
        num("water_volume", 16, 10, 0, 6553.5, "m3", 1, 1000),
        _BATTERY,
    )),
    "lighting": (13, (
        num("level", 7, 1, 0, 100, "/", 1, 100),
        boolean("relay"),
        enum("level_source", 2, LEVEL_SOURCES),
        num("energy", 32, 1, 0, 0xFFFFFFFF, "J", 3600),
        num("lamp_current", 16, 1, 0, 65535, "A", 1, 1000),
        _volts("lamp_voltage"),
        _volts("mains_voltage"),
        flags("alarms", ALARMS, "alarm_"),
    )),
    "health": (20, (
        num("supply", 16, 1, 0, 65535, "V", 1, 1000),
        enum("reset_cause", 3, RESET_CAUSES),
        flags("faults", FAULTS, "fault_"),
        semver("firmware"),
        num("uptime", 32, 1, 0, 0xFFFFFFFF, "s"),
    )),
    "ack": (30, (
        num("cmd_seq", 8, 1, 0, 255, opts=REQUIRED),
        enum("cmd_result", 3, RESULTS, REQUIRED),
    )),
}
"""role -> (FPort, field layout)."""

COMMAND_FPORT = const(40)
OPCODE_BITS = const(5)
SEQ_BITS = const(8)

_EXPIRY = num("expiry_min", 14, 1, 1, 10080)  # an operator override lasts at most a week
_CALENDAR_POINT = (
    enum("ref", 2, ("clock", "dusk", "dawn"), REQUIRED),
    num("minutes", 12, 1, -720, 1439, opts=REQUIRED),  # clock: 0..1439 after midnight; else offset
    num("level", 7, 1, 0, 100, opts=REQUIRED),
)
MAX_SWITCH_POINTS = const(16)

COMMANDS = {
    "dim": (1, (
        num("level", 7, 1, 0, 100, opts=REQUIRED),
        num("ramp_s", 8, 1, 0, 255),
        _EXPIRY,
    )),
    "switch": (2, (boolean("on", REQUIRED), _EXPIRY)),
    "valve_open": (3, (num("seconds", 16, 1, 1, 65535, opts=REQUIRED),)),
    "valve_close": (4, ()),
    "set_interval": (5, (num("seconds", 17, 1, 60, 86400, opts=REQUIRED),)),
    "reboot": (6, ()),
    "calendar": (7, (items("points", 5, MAX_SWITCH_POINTS, _CALENDAR_POINT, REQUIRED),)),
}
"""command name -> (opcode, argument layout); every command also carries a sequence number."""
