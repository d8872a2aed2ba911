"""`cityedge node check`: what a technician needs to know on the spot about a connected board.

Firmware version (``firmware/app`` VERSION, read from the board's files), the configuration with
keys masked, an I2C scan naming the chips we know, a spot reading of a sensing role (its cycle cut
short, `SPOT_READ`) when the application is on the board, and a radio self-test: the SX127x
``RegVersion`` register (address 0x42, DS SX1276/77/78/79 rev 7 section 6.4) read over SPI through
the board, which must read 0x12.
Nothing is written to the board and no actuator is touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from firmware.boards import BOARDS
from provisioning.board import Board
from provisioning.errors import BoardError
from provisioning.nodeconfig import masked, read_config

REG_VERSION = 0x42
SX127X_VERSION = 0x12
KNOWN_I2C = {
    0x36: "Adafruit seesaw soil sensor",
    0x44: "SHT4x temperature/humidity",
    0x45: "SHT4x temperature/humidity (alt. address)",
    0x48: "PCB Artists decibel meter",
    0x69: "SPS30 particulate matter",
    **{a: "INA219 current/power monitor" for a in range(0x40, 0x44)},
}
SENSING_ROLES = {"air": "AirRole", "noise": "NoiseRole"}  # reading them moves no actuator
# Settings over the node's own for the spot reading: its full cycle (SPS30 warm-up 30 s, a 60 s
# sound window) would outlast mpremote's 10 s exec timeout, and a fan cleaning would write air.json.
SPOT_READ = {"air": {"pm_warmup_s": 2, "pm_samples": 1, "fan_clean_s": 0},
             "noise": {"window_s": 3}}

_PROBE = """\
import machine, time
from machine import Pin
_i2c = machine.I2C({i2c}, sda=Pin({sda}), scl=Pin({scl}), freq=100000)
_found = _i2c.scan()
_spi = machine.SPI({spi}, baudrate=1000000, polarity=0, phase=0, sck=Pin({sck}), mosi=Pin({mosi}), miso=Pin({miso}))
_cs = Pin({cs}, Pin.OUT, value=1)
_rst = Pin({rst}, Pin.OUT, value=1)
_rst.value(0)
time.sleep_ms(1)
_rst.value(1)
time.sleep_ms(10)
_b = bytearray(2)
_cs.value(0)
_spi.write_readinto(bytes([{reg}, 0]), _b)
_cs.value(1)
print(repr((_found, _b[1])))
"""

_ROLE_READ = """\
import json, machine
from firmware.boards import Hardware
import firmware.roles.{role} as _m
_r = _m.{cls}(Hardware(machine, {board!r}), json.loads({settings!r}))
_v = _r.read()
_f = getattr(_r, 'faults', ())
print(repr((_v, list(_f) if isinstance(_f, (list, tuple)) else [])))
"""


@dataclass
class CheckReport:
    """What `node check` found; ``problems`` lists what a technician must fix."""

    board: str
    firmware: str | None = None
    config: dict[str, Any] | None = None
    i2c: list[tuple[int, str]] = field(default_factory=list)
    readings: dict[str, Any] | None = None
    readings_note: str = ""
    radio_version: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def radio_ok(self) -> bool:
        """The SX127x answered with its silicon version."""
        return self.radio_version == SX127X_VERSION


def firmware_version(board: Board) -> str | None:
    """VERSION of firmware/app on the board (source, or the string in the .mpy)."""
    src = board.read_file("firmware/app.py")
    if src is not None:
        m = re.search(rb'^VERSION\s*=\s*"([^"]+)"', src, re.MULTILINE)
        return m.group(1).decode() if m else None
    try:
        out = board.eval_code("import firmware.app as _a\nprint(repr(_a.VERSION))",
                              "reading the firmware version")
    except (BoardError, ValueError, SyntaxError):
        return None
    return str(out)


def check_node(board: Board, board_name: str | None = None) -> CheckReport:
    """Run every check on a connected board."""
    report = CheckReport(board=board.info.describe())
    report.firmware = firmware_version(board)
    if report.firmware is None:
        report.problems.append("no node application on the board: run `cityedge deploy`")
    cfg = read_config(board)
    if cfg is not None:
        report.config = masked(cfg)
    else:
        report.problems.append("no config.json: run `cityedge provision`")
    name = board_name or (cfg or {}).get("board")
    if name not in BOARDS:
        report.problems.append("board type unknown (no config): give --board to test "
                               "sensors and radio")
        return report
    spi, sck, mosi, miso, cs, rst, _dio0, i2c, sda, scl, _adc, _div = BOARDS[name]
    found, version = board.eval_code(_PROBE.format(
        i2c=i2c, sda=sda, scl=scl, spi=spi, sck=sck, mosi=mosi, miso=miso, cs=cs, rst=rst,
        reg=REG_VERSION & 0x7F), "probing the I2C bus and the radio")
    report.i2c = [(a, KNOWN_I2C.get(a, "unknown chip")) for a in found]
    report.radio_version = version
    if not report.radio_ok:
        report.problems.append(
            f"radio: SX127x RegVersion read 0x{version:02x}, expected 0x12: check the radio "
            "module, its SPI wiring and that --board is right" if version not in (0, 0xFF) else
            f"radio: no SX127x answers on SPI (RegVersion 0x{version:02x}): radio module missing "
            "or badly wired")
    if not found:
        report.problems.append("I2C: no chip answers: check the sensor cable")
    role = (cfg or {}).get("role")
    if role in SENSING_ROLES and report.firmware is not None:
        try:
            report.readings, faults = board.eval_code(_ROLE_READ.format(
                role=role, cls=SENSING_ROLES[role], board=name,
                settings=json.dumps({**cfg.get("settings", {}), **SPOT_READ[role]})),
                f"reading the {role} sensors")
            report.problems += [f"sensor fault: {f} (no answer or a bad reading)"
                                for f in faults]
        except (BoardError, ValueError, SyntaxError) as exc:
            report.readings_note = f"the {role} role could not read its sensors: {exc}"
            report.problems.append(report.readings_note)
    elif role:
        report.readings_note = (f"the {role} role drives actuators: not read here; the I2C "
                                "scan shows which sensors answer")
    return report
