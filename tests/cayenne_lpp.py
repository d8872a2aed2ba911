"""A Cayenne LPP reference encoder, used only to compare payload sizes (bench and tests).

Written from the LPP data type table (myDevices Cayenne LPP 1.0, plus the extended types of the
widely used ElectronicCats CayenneLPP library). Every value is [channel][type][data], data
big-endian at the type's fixed resolution.
"""

from protocol.payload.fields import BOOL, ENUM, FLAGS, SEMVER, UPLINKS

# name: (type id, ((bytes, multiplier, signed), ...) one tuple per component)
TYPES = {
    "digital_input": (0, ((1, 1, False),)),
    "digital_output": (1, ((1, 1, False),)),
    "analog_input": (2, ((2, 100, True),)),
    "analog_output": (3, ((2, 100, True),)),
    "generic": (100, ((4, 1, False),)),
    "illuminance": (101, ((2, 1, False),)),
    "presence": (102, ((1, 1, False),)),
    "temperature": (103, ((2, 10, True),)),
    "humidity": (104, ((1, 2, False),)),
    "accelerometer": (113, ((2, 1000, True),) * 3),
    "barometer": (115, ((2, 10, False),)),
    "voltage": (116, ((2, 100, False),)),
    "current": (117, ((2, 1000, False),)),
    "frequency": (118, ((4, 1, False),)),
    "percentage": (120, ((1, 1, False),)),
    "altitude": (121, ((2, 1, True),)),
    "concentration": (125, ((2, 1, False),)),
    "power": (128, ((2, 1, False),)),
    "distance": (130, ((4, 1000, False),)),
    "energy": (131, ((4, 1000, False),)),
    "direction": (132, ((2, 1, False),)),
    "unixtime": (133, ((4, 1, False),)),
    "gyrometer": (134, ((2, 100, True),) * 3),
    "colour": (135, ((1, 1, False),) * 3),
    "gps": (136, ((3, 10000, True), (3, 10000, True), (3, 100, True))),
    "switch": (142, ((1, 1, False),)),
}

# For each of our readings: (LPP type, factor from our reading unit to that type's unit). The
# type is the quantity's own LPP type when it carries our resolution, else the smallest type of
# LPP that does: LPP's temperature (0.1 °C) and humidity (0.5 %) types are coarser than our
# 0.01, so those go as analog input (0.01); integers up to 65535 (mV, seconds) go in LPP 1.0's
# only unsigned 16-bit type, illuminance. Names and bit sets go as one digital input byte.
LPP_TYPE_OF = {
    # air quality
    "temperature": ("analog_input", 1),
    "humidity": ("analog_input", 1),
    "pm1_0": ("analog_input", 1),
    "pm2_5": ("analog_input", 1),
    "pm4_0": ("analog_input", 1),
    "pm10": ("analog_input", 1),
    "battery": ("illuminance", 1),
    # noise
    "laeq": ("analog_input", 1),
    "lamax": ("analog_input", 1),
    "lamin": ("analog_input", 1),
    "la10": ("analog_input", 1),
    "la90": ("analog_input", 1),
    "interval": ("illuminance", 1),
    # soil + watering
    "soil_moisture": ("analog_input", 1),
    "soil_temperature": ("temperature", 1),
    "valve": ("digital_input", 1),
    "water_volume": ("analog_input", 1),
    # lighting cabinet
    "level": ("percentage", 1),
    "relay": ("switch", 1),
    "level_source": ("digital_input", 1),
    "energy": ("energy", 0.001),  # Wh -> kWh
    "lamp_current": ("current", 0.001),  # mA -> A
    "lamp_voltage": ("voltage", 1),
    "mains_voltage": ("voltage", 1),
    "alarms": ("digital_input", 1),
    # node health
    "supply": ("illuminance", 1),
    "reset_cause": ("digital_input", 1),
    "faults": ("digital_input", 1),
    "firmware": ("illuminance", 1),  # major << 12 | minor << 6 | patch, as ours
    "uptime": ("generic", 1),
    # command acknowledgement
    "cmd_seq": ("digital_input", 1),
    "cmd_result": ("digital_input", 1),
}


def _component(value, size, mult, signed, what):
    raw = round(value * mult)
    bits = 8 * size
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= raw <= hi:
        raise ValueError(f"{what}: {value!r} does not fit {size} bytes at 1/{mult}")
    return (raw & ((1 << bits) - 1)).to_bytes(size, "big")


def encode(entries):
    """LPP bytes of [(channel, type name, value or tuple of values), ...]."""
    out = bytearray()
    for channel, name, value in entries:
        type_id, parts = TYPES[name]
        values = value if isinstance(value, tuple) else (value,)
        if len(values) != len(parts) or not 0 <= channel <= 255:
            raise ValueError(f"{name} on channel {channel!r}: expected {len(parts)} values")
        out += bytes((channel, type_id))
        for v, (size, mult, signed) in zip(values, parts):
            out += _component(v, size, mult, signed, name)
    return bytes(out)


def _as_number(field, value, factor):
    """Our reading as the number LPP carries: names become an index or a bit mask."""
    kind, names = field[1], field[6]
    if kind == ENUM:
        return names.index(value)
    if kind == FLAGS:
        return sum(1 << (len(names) - 1 - names.index(n)) for n in value)
    if kind == SEMVER:
        major, minor, patch = (int(p) for p in value.split("."))
        return major << 12 | minor << 6 | patch
    if kind == BOOL:
        return int(value)
    return value * factor


def encode_readings(role, readings):
    """LPP bytes of one of our reading sets of `role`, one channel per reading."""
    entries = []
    for f in UPLINKS[role][1]:
        value = readings.get(f[0])
        if value is not None:
            name, factor = LPP_TYPE_OF[f[0]]
            entries.append((len(entries), name, _as_number(f, value, factor)))
    return encode(entries)
