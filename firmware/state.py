"""Frame counters and session that survive reboots and deep sleep, without reusing a counter
and without wearing out flash.

Write-ahead in steps: the flash holds a counter value *reserved* STEP frames ahead; frames below it
need no flash write. After a power cut the node resumes at the reservation, skipping at most STEP
counters, never reusing one. Two alternating slots with a sequence number make every write
atomic: a torn write leaves the other slot valid. Across deep sleep the exact counter is kept in
RTC memory where the board has it (ESP32), so waking costs no skipped counters.
"""

import json

STEP = 32
_SLOTS = ("state_a.json", "state_b.json")
_RTC_MAGIC = b"CEF1"


def _read(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        if isinstance(d, dict) and isinstance(d.get("seq"), int):
            return d
    except (OSError, ValueError):
        pass
    return None


class State:
    """Persistent node state: frame counters (up/down) and an optional OTAA session."""

    def __init__(self, rtc=None, deep_sleep_wake=False, step=STEP):
        self.step = step
        self._rtc = rtc
        slots = [_read(p) for p in _SLOTS]
        valid = [s for s in slots if s is not None]
        best = max(valid, key=lambda s: s["seq"]) if valid else {"seq": 0}
        self._seq = best["seq"]
        self._slot = slots.index(best) if valid else 1
        self.session = best.get("session")
        self.reserved = best.get("reserved", 0)
        self.fcnt_down = best.get("fcnt_down", 0)
        self.fcnt_up = self.reserved
        self.counters_skipped = 0
        if deep_sleep_wake and rtc is not None:
            kept = self._rtc_load()
            if kept is not None and kept[0] <= self.reserved:
                self.fcnt_up, self.fcnt_down = kept
        if self.fcnt_up == self.reserved and self.reserved:
            self.counters_skipped = 1  # resumed at a reservation after a reset

    def next_fcnt_up(self):
        """The counter for the next uplink, reserving ahead on flash when needed."""
        fcnt = self.fcnt_up
        if fcnt >= self.reserved:
            self.reserved = fcnt + self.step
            self.save()
        self.fcnt_up = fcnt + 1
        self._rtc_save()
        return fcnt

    def set_fcnt_down(self, fcnt):
        self.fcnt_down = fcnt
        self._rtc_save()

    def new_session(self, session):
        """A fresh OTAA session restarts the counters (LoRaWAN 1.0.x §6.2.4)."""
        self.session = session
        self.fcnt_up = 0
        self.fcnt_down = 0
        self.reserved = 0
        self.save()

    def save(self):
        """Write the other slot (atomic replacement of the older copy)."""
        self._seq += 1
        self._slot ^= 1
        d = {"seq": self._seq, "reserved": self.reserved, "fcnt_down": self.fcnt_down,
             "session": self.session}
        with open(_SLOTS[self._slot], "w") as f:
            f.write(json.dumps(d))

    def _rtc_save(self):
        if self._rtc is None:
            return
        self._rtc.memory(_RTC_MAGIC + self.fcnt_up.to_bytes(4, "little")
                         + self.fcnt_down.to_bytes(4, "little"))

    def _rtc_load(self):
        m = self._rtc.memory()
        if len(m) < 12 or m[:4] != _RTC_MAGIC:
            return None
        return int.from_bytes(m[4:8], "little"), int.from_bytes(m[8:12], "little")
