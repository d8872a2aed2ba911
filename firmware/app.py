"""The node's main loop: boot, join, read the role's sensors, send, listen, sleep, repeat.

Battery roles (Class A) deep-sleep between cycles: the board resets on wake, and the counters,
duty-cycle state and uptime come back from RTC memory (flash after a power cut, see state.py).
A role deadline before the next cycle (``poll()``: a soil valve's closing) ends the deep sleep
early when the role allows it (``may_deep_sleep()``), else the node light-sleeps until then.
Mains roles (Class C) stay awake and alternate ``role.poll()`` with continuous reception on the
RX2 parameters. A ``machine.WDT`` guards every role: it is fed in every wait of the loop, so a role
or driver that hangs resets the board.

A bad configuration stops the node at the REPL with a fault report naming the key (never key
material), so a technician on USB sees it and provisioning can fix it.

Roles are used only through the interface of docs/architecture.md "Node roles"; a role of the
older kind (``read()`` only, ``faults`` as a bit mask) still runs.
"""

import random
import struct
import time

from firmware import config as node_config
from firmware.dutycycle import BYTES as _DC_BYTES
from firmware.dutycycle import DutyCycle
from protocol import payload as codec
from protocol import region_eu868 as region
from protocol.payload.fields import FAULTS

VERSION = "0.2.0"
_WDT_MS = 30000
_WDT_MIN_MS = 8000  # RP2040: the watchdog counts at most 8.3 s
_FEED_MS = 3000  # longest wait between two watchdog feeds
_HEALTH_MS = 86400000  # health uplink once a day (and at every boot)
_RETRY_MS = 600000  # a node whose radio is missing retries after 10 minutes
_RT_FMT = "<QQQII"  # RTC memory after the counters: uptime, reset, health due, sleep, ADR cnt
_RT_LEN = 32
_CAUSES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deep_sleep", 5: "soft"}
_ROLE_CLASSES = {"air": "AirRole", "noise": "NoiseRole", "soil": "SoilRole",
                 "lighting": "LightingRole"}
RESULTS = ("done", "unknown_command", "out_of_range", "busy", "not_supported", "failed")


def _log(*parts):
    print("[%d]" % time.ticks_ms(), *parts)


def load_role(name, hw, settings):
    """The role object for a configured role name (imported only now, to save RAM)."""
    cls = _ROLE_CLASSES.get(name)
    try:
        mod = __import__("firmware.roles." + name, None, None, (cls,), 0)
        return getattr(mod, cls)(hw, settings)
    except (ImportError, AttributeError):
        raise node_config.ConfigError("role %r is not in this firmware build" % name)


def command_result(payload):
    """(seq, decoded command or None, rejection) for an FPort 40 payload; never raises."""
    try:
        return payload[1] if len(payload) > 1 else 0, codec.decode_command(payload), None
    except ValueError as exc:
        msg = str(exc)
        bad = "outside" in msg or "offset is" in msg or "clock time" in msg or "at most" in msg
        return (payload[1] if len(payload) > 1 else 0, None,
                "out_of_range" if bad else "unknown_command")


def fault_names(faults):
    """Fault names of a role's ``faults``: names already, or a bit mask of the old roles."""
    if isinstance(faults, int):
        return [FAULTS[i] for i in range(len(FAULTS)) if faults >> i & 1]
    return [f for f in faults if f in FAULTS]


class Uptime:
    """Milliseconds of node life, continuous across deep sleep (restored from RTC memory)."""

    def __init__(self, base_ms=0):
        self._base = base_ms
        self._t0 = time.ticks_ms()

    def __call__(self):
        t = time.ticks_ms()
        self._base += time.ticks_diff(t, self._t0)  # re-based on every call: no tick wrap
        self._t0 = t
        return self._base


class Node:
    """One node: hardware, radio, LoRaWAN device, role and persistent state."""

    def __init__(self, machine, cfg, wdt=None):
        from drivers.sx127x import SX127x
        from firmware.boards import Hardware
        from firmware.device import EndDevice
        from firmware.state import State

        self.machine = machine
        self.cfg = cfg
        self.wdt = wdt
        self.reset_cause = machine.reset_cause()
        woke = self.reset_cause == machine.DEEPSLEEP_RESET
        self.hw = Hardware(machine, cfg.board)
        self.hw.wdt = wdt  # roles with long measurements (SPS30 warm-up, noise window) feed it
        rtc = machine.RTC() if hasattr(machine, "RTC") else None
        if not hasattr(rtc, "memory"):
            rtc = None  # RP2040: no RTC memory; counters resume at the flash reservation
        self.state = State(rtc, deep_sleep_wake=woke, owner=cfg.dev_eui_hex)
        self.dc = DutyCycle()
        up = reset_at = adr_cnt = 0
        self.health_due = 0
        rt = self.state.rtc_extra
        if len(rt) == _RT_LEN + _DC_BYTES:
            up, reset_at, self.health_due, slept, adr_cnt = struct.unpack_from(_RT_FMT, rt, 0)
            if woke:
                up += slept
            else:
                reset_at = up  # no clock across a reset: count on from where we were
            self.dc.load(rt[_RT_LEN:])
        self.now = Uptime(up)
        self.reset_at = reset_at
        self.interval_s = self.state.interval_s or cfg.interval_s
        self.radio = SX127x(self.hw.spi, self.hw.cs, reset=self.hw.reset, dio0=self.hw.dio0)
        self.role = load_role(cfg.role, self.hw, cfg.settings)
        self.dev_class = getattr(self.role, "device_class", cfg.dev_class)
        mains = self.dev_class == "C"
        # A battery node waits in light sleep (RAM, pins and timers kept: ESP32 DS 0.8 mA
        # instead of ~40 mA awake); the radio's and the roles' known waits go through it too.
        light = not mains and cfg.deep_sleep and hasattr(machine, "lightsleep")
        self._nap = machine.lightsleep if light else time.sleep_ms
        self.hw.nap = self.wait
        if light:
            self.radio.nap = machine.lightsleep  # short (time on air, RX windows): no feeding
        from firmware.mac import battery_level

        self.device = EndDevice(
            self.radio, self.state, self.dc, self.now, self.wait, cfg.tx_power_dbm,
            battery=lambda: battery_level(self.hw.battery_mv(), mains), log=_log, adr=cfg.adr)
        self.device.adr_ack_cnt = adr_cnt
        self.device.on_frame = getattr(self.role, "downlink_seen", None)  # lighting: fallback
        self.radio.sleep()  # until the first transmission (1.6 mA in standby over a warm-up)
        self.acks = []  # (seq, result) to send on FPort 30
        self.reboot = False

    # -- waiting with the watchdog fed ------------------------------------------------------------
    def feed(self):
        if self.wdt is not None:
            self.wdt.feed()

    def wait(self, ms):
        """Sleep ms (light sleep on a battery node, radio as it is), feeding the watchdog."""
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            self.feed()
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            self._nap(min(left, _FEED_MS))  # an IRQ may end a light sleep early: loop

    # -- persistence of the runtime state in RTC memory -------------------------------------------
    def keep(self, sleep_ms=0):
        self.state.rtc_extra = struct.pack(_RT_FMT, self.now(), self.reset_at, self.health_due,
                                           sleep_ms, self.device.adr_ack_cnt) + self.dc.to_bytes()
        self.state.rtc_save()

    # -- activation -------------------------------------------------------------------------------
    def activate(self):
        """ABP keys, the OTAA session kept in the state, or a join (retried with back-off)."""
        cfg = self.cfg
        dr = region.dr_of(cfg.sf)
        st = self.state
        if cfg.activation == "abp":
            s = st.session
            if s is None:
                st.session = {"dev_addr": cfg.dev_addr}  # keep the counters already used
                st.save()
            elif not isinstance(s, dict) or s.get("dev_addr") != cfg.dev_addr:
                st.new_session({"dev_addr": cfg.dev_addr}, None)  # new ABP identity: counters 0
            self.device.activate(cfg.dev_addr, cfg.nwk_s_key, cfg.app_s_key, st.mac, dr)
            if st.mac is None:  # extra channels the installer configured for ABP
                extra = [f for f in cfg.channels if f not in region.DEFAULT_CHANNELS_HZ]
                for i in range(min(len(extra), 13)):
                    self.device.mac.set_channel(3 + i, extra[i])
            return
        s = st.session
        if isinstance(s, dict) and "nwk_s_key" in s:
            self.device.activate(s["dev_addr"], bytes.fromhex(s["nwk_s_key"]),
                                 bytes.fromhex(s["app_s_key"]),
                                 st.mac, dr)
            _log("session restored devaddr=%08x fcnt_up=%d" % (s["dev_addr"], st.fcnt_up))
            return
        while not self.device.join(cfg.dev_eui, cfg.join_eui, cfg.app_key, dr):
            self.keep()
            _log("join: no accept, backing off")
        self.keep()

    # -- one cycle --------------------------------------------------------------------------------
    def uplink(self, fport, data, confirmed=False):
        dls, acked = self.device.send(fport, data, confirmed)
        self.keep()
        if confirmed:
            _log("confirmed uplink %s" % ("acknowledged" if acked else "not acknowledged"))
        for dl in dls:
            self.downlink(dl)
        return acked

    def downlink(self, dl):
        if dl.fport != codec.COMMAND_FPORT:
            _log("downlink on FPort %d ignored" % dl.fport)
            return
        seq, cmd, result = command_result(dl.payload)
        key = list(dl.payload)
        last = self.state.last_cmd
        if cmd is not None and last is not None and last[0] == key:
            # the same command again (its answer or the network's ACK was lost): answer, not rerun
            _log("command seq=%d repeated -> %s" % (seq, last[1]))
            self.acks.append((seq, last[1]))
            return
        if cmd is not None:
            result = self.execute(cmd)
            self.state.last_cmd = [key, result]
            self.state.save()  # before the answer goes (and before a commanded reboot)
        _log("command seq=%d %s -> %s" % (seq, cmd["cmd"] if cmd else "?", result))
        self.acks.append((seq, result))

    def execute(self, cmd):
        """Run a decoded command: node-level ones here, the others by the role."""
        name = cmd["cmd"]
        if name == "set_interval":
            self.interval_s = cmd["seconds"]
            self.state.interval_s = self.interval_s
            self.state.save()
            return "done"
        if name == "reboot":
            self.reboot = True
            return "done"
        handler = getattr(self.role, "command", None)
        if handler is None:
            return "not_supported"
        try:
            result = handler(cmd)
        except Exception as exc:  # noqa: BLE001 - a role's bug must not stop the node
            _log("role command failed: %r" % (exc,))
            return "failed"
        return result if result in RESULTS else "failed"

    def send_acks(self):
        while self.acks:
            seq, result = self.acks.pop(0)
            fport, data = codec.encode_uplink("ack", {"cmd_seq": seq, "cmd_result": result})
            self.uplink(fport, data)
        if self.reboot:
            _log("rebooting on command")
            self.keep()
            self.radio.sleep()
            self.machine.reset()

    def health(self):
        faults = fault_names(getattr(self.role, "faults", ()))
        readings = {
            "supply": min(65535, self.hw.battery_mv()),
            "reset_cause": _CAUSES.get(self.reset_cause, "other"),
            "faults": faults,
            "firmware": VERSION,
            "uptime": (self.now() - self.reset_at) // 1000,
        }
        fport, data = codec.encode_uplink("health", readings)
        self.health_due = self.now() + _HEALTH_MS
        self.device.link_check()  # daily: is the network still hearing us, and how well?
        self.uplink(fport, data)

    def cycle(self):
        """Read the role, send its reading set (confirmed on alarm), then acks and health."""
        self.feed()
        try:
            readings = self.role.read()
            alarm = getattr(self.role, "alarm", None)
            confirmed = bool(alarm()) if alarm is not None else False
            fport, data = codec.encode_uplink(self.role.name, readings)
        except Exception as exc:  # noqa: BLE001 - a role's bug costs one reading, not the node
            _log("reading dropped: %r" % (exc,))
            fport = None
        self.feed()
        if fport is not None:
            self.uplink(fport, data, confirmed)
        self.send_acks()
        if self.now() >= self.health_due:
            self.health()
            self.send_acks()

    def pause_ms(self):
        """Time to the next cycle: the interval with +-5 % jitter (no synchronised nodes)."""
        base = self.interval_s * 1000
        return base - base // 20 + random.getrandbits(16) % (base // 10 + 1)

    def idle(self, ms):
        """Class A without deep sleep, or Class C: poll the role, listen (C), feed the watchdog."""
        end = time.ticks_add(time.ticks_ms(), ms)
        poll = getattr(self.role, "poll", None)
        while True:
            self.feed()
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            step = min(left, _FEED_MS)
            if poll is not None:
                nxt = poll()
                if nxt is not None:
                    step = max(1, min(step, nxt))
            if self.dev_class == "C":
                for dl in self.device.listen(step):
                    self.downlink(dl)
                self.send_acks()
            else:
                self._nap(step)  # e.g. a soil node awake while its valve is open


def _without_radio(machine, cfg):
    """The radio (or a bus) failed: the role still meets its deadline (a watering valve closes
    on time, radio or not). -> ms to deep-sleep before trying again."""
    from firmware.boards import Hardware

    try:
        role = load_role(cfg.role, Hardware(machine, cfg.board), cfg.settings)
        role.boot(machine.reset_cause())
        due = role.poll()
        if due is not None and due <= 1500:
            time.sleep_ms(due)
            due = role.poll()
    except Exception:  # noqa: BLE001 - no poll, or the role's own chips are gone as well
        due = None
    return _RETRY_MS if due is None else max(1000, min(_RETRY_MS, due - 1000))


def main(machine=None):
    """Boot entry (called by main.py)."""
    if machine is None:
        import machine
    try:
        cfg = node_config.load()
    except node_config.ConfigError as exc:
        print("FAULT config:", exc)
        return
    random.seed(int.from_bytes(machine.unique_id(), "big") ^ time.ticks_us())
    try:
        wdt = machine.WDT(timeout=_WDT_MS)
    except ValueError:
        wdt = machine.WDT(timeout=_WDT_MIN_MS)
    try:
        node = Node(machine, cfg, wdt)
    except node_config.ConfigError as exc:
        print("FAULT config:", exc)
        return  # the REPL does not feed the watchdog: it resets the board to try again
    except Exception as exc:  # noqa: BLE001 - radio or bus missing: report, retry later
        print("FAULT hardware:", exc)
        machine.deepsleep(_without_radio(machine, cfg))
        return
    _log("cityedge node %s role=%s class=%s fw=%s boot=%s" % (
        cfg.dev_eui_hex, cfg.role, node.dev_class, VERSION,
        _CAUSES.get(node.reset_cause, str(node.reset_cause))))
    boot = getattr(node.role, "boot", None)
    if boot is not None:
        boot(node.reset_cause)
    poll = getattr(node.role, "poll", None)
    due = poll and node.reset_cause == machine.DEEPSLEEP_RESET and poll()
    if due and due <= 1000:  # woken just ahead of a role's deadline (below): meet it, then cycle
        node.idle(due)
    node.activate()
    if node.reset_cause != machine.DEEPSLEEP_RESET:
        node.health()
        node.send_acks()
    deep_ok = getattr(node.role, "may_deep_sleep", None)
    while True:
        node.cycle()
        pause = node.pause_ms()
        busy = poll() if poll is not None else None  # ms to the role's next deadline, or None
        if node.dev_class == "A" and cfg.deep_sleep:
            if busy is not None and busy < pause and deep_ok and deep_ok():
                # wake 1 s early (more than a wake takes to reach role.boot()), see above
                pause = max(1, busy - 1000)
            if busy is None or busy >= pause:
                node.keep(pause)
                node.radio.sleep()
                machine.deepsleep(pause)
        node.idle(pause)  # a role that needs the board up until its deadline (light sleep)
