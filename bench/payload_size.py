"""Payload size per role and typical reading set: our codec against Cayenne LPP.

Same readings at the same resolution (see tests/cayenne_lpp.py for the LPP type of each
reading). The brief's target: ours at most 60 % of LPP. Run: python -m bench.payload_size
"""

from protocol.payload import encode_uplink
from tests.cayenne_lpp import encode_readings

TARGET = 0.60

_AIR = {"temperature": 21.37, "humidity": 48.52, "pm1_0": 4.2, "pm2_5": 7.9, "pm4_0": 9.1,
        "pm10": 12.3, "battery": 3012}
_NOISE = {"laeq": 62.4, "lamax": 78.9, "lamin": 41.2, "la10": 66.0, "la90": 48.3,
          "interval": 900, "battery": 2950}
_SOIL = {"soil_moisture": 27.5, "soil_temperature": 14.2, "valve": "open", "water_volume": 120.5,
         "battery": 3100}
_LIGHTING = {"level": 70, "relay": True, "level_source": "calendar", "energy": 1234567,
             "lamp_current": 4230, "lamp_voltage": 229.8, "mains_voltage": 231.2,
             "alarms": ("door_open",)}
_HEALTH = {"supply": 3012, "reset_cause": "deep_sleep", "faults": ("particulate",),
           "firmware": "0.1.0", "uptime": 86400}


def _only(readings, *keys):
    return {k: readings[k] for k in keys}


READING_SETS = {
    "air": (
        ("full: SHT4x + SPS30 + battery", _AIR),
        ("SHT4x + PM1/2.5/10 + battery", _only(_AIR, "temperature", "humidity", "pm1_0",
                                                "pm2_5", "pm10", "battery")),
        ("SHT4x + battery (no PM sensor)", _only(_AIR, "temperature", "humidity", "battery")),
    ),
    "noise": (
        ("full: Leq Lmax Lmin L10 L90", _NOISE),
        ("Leq Lmax L90 + interval + battery", _only(_NOISE, "laeq", "lamax", "la90",
                                                     "interval", "battery")),
    ),
    "soil": (
        ("full: watering in progress", _SOIL),
        ("no watering since last report", _only(_SOIL, "soil_moisture", "soil_temperature",
                                                "battery")),
        ("valve event", _only(_SOIL, "valve", "water_volume")),
    ),
    "lighting": (
        ("full: state + metering + alarms", _LIGHTING),
        ("state change", _only(_LIGHTING, "level", "relay", "level_source", "alarms")),
    ),
    "health": (
        ("full", _HEALTH),
        ("boot: supply, reset cause, faults, firmware", _only(
            _HEALTH, "supply", "reset_cause", "faults", "firmware")),
    ),
    "ack": (("seq + result", {"cmd_seq": 17, "cmd_result": "done"}),),
}
"""role -> ((label, readings), ...): the reading sets of the table, also checked by the tests."""


def rows():
    """(role, FPort, label, number of readings, our bytes, LPP bytes, ratio) per reading set."""
    out = []
    for role, sets in READING_SETS.items():
        for label, readings in sets:
            fport, ours = encode_uplink(role, readings)
            lpp = encode_readings(role, readings)
            out.append((role, fport, label, len(readings), len(ours), len(lpp),
                        len(ours) / len(lpp)))
    return out


def main():
    header = ("role", "FPort", "reading set", "n", "ours B", "LPP B", "ratio")
    table = [header] + [(r[0], str(r[1]), r[2], str(r[3]), str(r[4]), str(r[5]),
                         f"{100 * r[6]:.0f} %") for r in rows()]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j in (0, 2) else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    worst = max(r[6] for r in rows())
    verdict = "met" if worst <= TARGET else "NOT MET"
    print(f"\nworst ratio {100 * worst:.0f} % (target: at most {100 * TARGET:.0f} % of "
          f"Cayenne LPP): {verdict}")


if __name__ == "__main__":
    main()
