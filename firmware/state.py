"""Frame counters, session and MAC settings that survive reboots and deep sleep, without reusing
a counter and without wearing out flash.

Write-ahead in steps: the flash holds a counter value *reserved* STEP frames ahead; frames below it
need no flash write. After a power cut the node resumes at the reservation, skipping at most STEP
counters, never reusing one. Two alternating slots with a sequence number make every write
atomic: a torn write leaves the other slot valid. Across deep sleep the exact counters are kept in
RTC memory where the board has it (ESP32), so waking or a watchdog or commanded reset costs no
skipped counters; the application
adds its own bytes there (duty-cycle and uptime, see app.py) through ``rtc_extra``.

Also on flash, written only when they change: the OTAA session (DevAddr and session keys), the
MAC settings the network gave (mac.py), the next DevNonce (LoRaWAN 1.0.4 §6.2.4: a counter that
never repeats for a JoinEUI, written before each Join-request goes out), the last JoinNonce
accepted, the reporting interval set by command, the last command run and its result (a repeat is
answered, not run again), and the DevEUI the state belongs to (a board re-provisioned with another
identity starts afresh).
"""

import json
import struct

STEP = 32
_SLOTS = ("state_a.json", "state_b.json")
_RTC_MAGIC = b"CEF2"
_RTC_HEAD = "<4sII"  # magic, FCntUp (next), FCntDown (next expected)
_RTC_HEAD_LEN = 12


def _read(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        if isinstance(d, dict) and isinstance(d.get("seq"), int):
            return d
    except (OSError, ValueError):
        pass
    return None


def _int(d, key, default):
    v = d.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else default


class State:
    """Persistent node state: counters, session, MAC settings, DevNonce, interval."""

    def __init__(self, rtc=None, deep_sleep_wake=False, step=STEP, owner=None):
        self.step = step
        self._rtc = rtc
        slots = [_read(p) for p in _SLOTS]
        valid = [s for s in slots if s is not None]
        best = max(valid, key=lambda s: s["seq"]) if valid else {"seq": 0}
        self._seq = best["seq"]
        self._slot = slots.index(best) if valid else 1
        self.dev_nonce = _int(best, "dev_nonce", 0)
        if owner is not None and best.get("owner") not in (None, owner):
            best = {"seq": self._seq}  # another identity's state: keep only the DevNonce
        self.join_nonce = _int(best, "join_nonce", -1)
        self.owner = owner
        self.session = best.get("session")
        self.mac = best.get("mac")
        self.interval_s = best.get("interval_s")
        last = best.get("last_cmd")  # [payload bytes, result] of the last command run (app.py)
        self.last_cmd = last if isinstance(last, list) and len(last) == 2 else None
        self.reserved = _int(best, "reserved", 0)
        self.fcnt_down = _int(best, "fcnt_down", 0)
        self.fcnt_up = self.reserved
        self.counters_skipped = 0
        self.rtc_extra = b""
        if rtc is not None:
            # RTC memory survives deep sleep and every reset but a power cut (which clears it),
            # and is written after the flash reservation: trust it when it agrees with flash.
            kept = self._rtc_load()
            if kept is not None and kept[0] <= self.reserved and kept[1] >= self.fcnt_down:
                self.fcnt_up, self.fcnt_down, self.rtc_extra = kept
        if self.fcnt_up == self.reserved and self.reserved:
            self.counters_skipped = 1  # resumed at a reservation after a reset

    def next_fcnt_up(self):
        """The counter for the next uplink, reserving ahead on flash when needed."""
        fcnt = self.fcnt_up
        if fcnt >= self.reserved:
            self.reserved = fcnt + self.step
            self.save()
        self.fcnt_up = fcnt + 1
        self.rtc_save()
        return fcnt

    def set_fcnt_down(self, fcnt):
        """The next downlink counter to accept; saved at once (downlinks are rare: no wear)."""
        self.fcnt_down = fcnt
        self.save()
        self.rtc_save()

    def next_dev_nonce(self):
        """The DevNonce for a new Join-request, written to flash before it is used."""
        n = self.dev_nonce
        if n > 0xFFFF:
            raise ValueError("DevNonce exhausted for this JoinEUI: re-provision the node")
        self.dev_nonce = n + 1
        self.save()
        return n

    def new_session(self, session, mac, join_nonce=None):
        """A fresh session restarts the counters (LoRaWAN 1.0.x §6.2.4)."""
        self.session = session
        self.mac = mac
        if join_nonce is not None:
            self.join_nonce = join_nonce
        self.fcnt_up = 0
        self.fcnt_down = 0
        self.reserved = 0
        self.save()
        self.rtc_save()

    def save(self):
        """Write the other slot (atomic replacement of the older copy)."""
        self._seq += 1
        self._slot ^= 1
        d = {"seq": self._seq, "reserved": self.reserved, "fcnt_down": self.fcnt_down,
             "session": self.session, "mac": self.mac, "dev_nonce": self.dev_nonce,
             "join_nonce": self.join_nonce, "interval_s": self.interval_s, "owner": self.owner,
             "last_cmd": self.last_cmd}
        with open(_SLOTS[self._slot], "w") as f:
            f.write(json.dumps(d))

    def rtc_save(self):
        """Counters and the app's bytes into RTC memory (RAM: no flash wear)."""
        if self._rtc is None:
            return
        self._rtc.memory(struct.pack(_RTC_HEAD, _RTC_MAGIC, self.fcnt_up, self.fcnt_down)
                         + self.rtc_extra)

    def _rtc_load(self):
        m = self._rtc.memory()
        if len(m) < _RTC_HEAD_LEN or m[:4] != _RTC_MAGIC:
            return None
        _, up, down = struct.unpack_from(_RTC_HEAD, m, 0)
        return up, down, bytes(m[_RTC_HEAD_LEN:])
