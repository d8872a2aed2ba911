"""The node's main loop: boot, read the role's sensors, send, listen, sleep, repeat.

Battery roles deep-sleep between cycles (the board resets on wake; state lives in flash and RTC
memory); a watchdog guards every cycle. A bad configuration stops the node at the REPL with a
fault report, so a technician on USB sees it and provisioning can fix it.
"""

import random
import time

from drivers.sx127x import SX127x
from firmware import config as node_config
from firmware.boards import Hardware
from firmware.device import EndDevice, Session
from firmware.state import State
from protocol import payload as codec

VERSION = "0.1.0"
_WDT_MS = 30000
_CAUSES = {1: "power-on", 2: "hard", 3: "watchdog", 4: "deep-sleep", 5: "soft"}


def _role(name, hw, settings):
    if name == "air":
        from firmware.roles.air import AirRole

        return AirRole(hw, settings)
    raise node_config.ConfigError("role %r is not in this firmware build" % name)


def _log(*parts):
    print("[%d]" % time.ticks_ms(), *parts)


class Node:
    """One node's hardware, LoRaWAN device and role, built from the configuration."""

    def __init__(self, machine, cfg):
        self.machine = machine
        self.cfg = cfg
        self.hw = Hardware(machine, cfg.board)
        self.radio = SX127x(self.hw.spi, self.hw.cs, reset=self.hw.reset, dio0=self.hw.dio0)
        rtc = machine.RTC() if hasattr(machine, "RTC") else None
        self.reset_cause = machine.reset_cause()
        self.state = State(rtc, deep_sleep_wake=self.reset_cause == machine.DEEPSLEEP_RESET)
        session = Session(cfg.dev_addr, cfg.nwk_s_key, cfg.app_s_key)
        self.device = EndDevice(self.radio, session, self.state, cfg.channels, cfg.sf,
                                cfg.tx_power_dbm)
        self.role = _role(cfg.role, self.hw, cfg.settings)

    def cycle(self):
        """Read, encode and send one reading set; returns the downlink if one arrived."""
        readings = self.role.read()
        fport, data = codec.encode_uplink(self.role.name, readings)
        dl = self.device.send(fport, data)
        _log("uplink fcnt=%d fport=%d bytes=%d faults=%d" % (
            self.state.fcnt_up - 1, fport, len(data), self.role.faults))
        return dl

    def sleep_ms(self):
        """How long to sleep until the next cycle: the interval with +-5 % jitter."""
        base = self.cfg.interval_s * 1000
        return base - base // 20 + random.getrandbits(16) % (base // 10 + 1)


def main(machine=None):
    """Boot entry (called by main.py)."""
    if machine is None:
        import machine
    try:
        cfg = node_config.load()
    except node_config.ConfigError as exc:
        print("FAULT config:", exc)
        return
    wdt = machine.WDT(timeout=_WDT_MS)
    node = Node(machine, cfg)
    _log("cityedge node %s role=%s fw=%s boot=%s" % (
        "".join("%02x" % b for b in cfg.dev_eui), cfg.role, VERSION,
        _CAUSES.get(node.reset_cause, str(node.reset_cause))))
    while True:
        wdt.feed()
        node.cycle()
        wdt.feed()
        pause = node.sleep_ms()
        if cfg.deep_sleep:
            node.radio.sleep()
            machine.deepsleep(pause)
        else:
            end = time.ticks_add(time.ticks_ms(), pause)
            while time.ticks_diff(end, time.ticks_ms()) > 0:
                time.sleep_ms(min(_WDT_MS // 2, max(1, time.ticks_diff(end, time.ticks_ms()))))
                wdt.feed()
