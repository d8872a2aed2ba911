"""A virtual MicroPython board on a serial port: a pseudo-terminal backed by the real VM.

What a technician's tools (mpremote, pyserial, `cityedge flash`/`provision`) see on /dev/ttyUSB0:
the friendly REPL with its banner, the raw REPL (Ctrl-A), raw-paste mode (Ctrl-E A Ctrl-A, with
its flow-control window), Ctrl-C interrupting the running program, Ctrl-D soft reset printing
``MPY: soft reboot``, and a flash folder that persists. Output is "cooked" like a board's UART
driver (``\\n`` sent as ``\\r\\n``).

Raw-paste is spoken here, on the host side of the line: the WebAssembly VM's event-driven REPL
cannot block on stdin, so the pasted code is collected with the protocol's flow control and then
typed into the VM's raw REPL, whose "OK" (which raw-paste does not send) is swallowed.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sim.clock import VirtualClock

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
RAW_PASTE_WINDOW = 256


class SerialLink:
    """The pseudo-terminal between a virtual board and whoever opens ``port``."""

    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # a UART: no echo, no line editing, bytes as they are
        self.port = os.ttyname(self._slave)
        self.raw = False  # the REPL mode the board is in (what soft reset returns to)
        self.waiting = False  # the VM waits at the REPL (True) or runs code (False)
        self.on_input: Callable[[], None] | None = None
        self.on_interrupt: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._in = bytearray()
        self._interrupt = False
        self._paste: bytearray | None = None  # raw-paste data being received
        self._paste_credit = 0
        self._escape = b""  # the start of a possible raw-paste request
        self._swallow = b""  # the raw REPL's "OK", not part of a raw-paste answer
        self._last_out = 0
        self.unplugged = False
        # The reader is stopped through this pipe before the pty is closed: a thread blocked on a
        # closed descriptor could otherwise read from whatever reuses its number next.
        self._stop_r, self._stop_w = os.pipe()
        self._reader = threading.Thread(target=self._read, name=f"serial {self.port}",
                                        daemon=True)
        self._reader.start()

    # -- from the port ---------------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                return
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        poke = interrupt = False
        with self._lock:
            for c in data:
                if self._paste is not None:
                    self._paste_byte(c)
                    if self._paste is None:
                        poke = True
                    continue
                if c == CTRL_C and not self.waiting:
                    self._interrupt = interrupt = True  # the UART's interrupt char: not input
                    self._in.clear()
                    continue
                if self.raw and self._raw_paste_request(c):
                    continue
                if c == CTRL_A:
                    self.raw = True
                elif c == CTRL_B:
                    self.raw = False
                self._in.append(c)
                poke = True
        if interrupt and self.on_interrupt is not None:
            self.on_interrupt()
        if poke and self.on_input is not None:
            self.on_input()

    def _raw_paste_request(self, c: int) -> bool:
        """Recognise Ctrl-E 'A' Ctrl-A at the raw prompt; True when ``c`` was consumed."""
        want = bytes((CTRL_E, ord("A"), CTRL_A))
        candidate = self._escape + bytes((c,))
        if want.startswith(candidate) and not self._in:
            self._escape = candidate
            if candidate == want:
                self._escape = b""
                self._paste = bytearray()
                self._paste_credit = RAW_PASTE_WINDOW
                self._write(b"R\x01" + struct.pack("<H", RAW_PASTE_WINDOW))
            return True
        if self._escape:  # not a raw-paste request after all: the held bytes are input
            self._in += self._escape
            self._escape = b""
        return False

    def _paste_byte(self, c: int) -> None:
        assert self._paste is not None
        if c == CTRL_D:
            code, self._paste = bytes(self._paste), None
            self._write(b"\x04")  # end of data acknowledged; the output follows
            self._swallow = b"OK"
            self._in += code + b"\x04"
            return
        self._paste.append(c)
        self._paste_credit -= 1
        if self._paste_credit == 0:
            self._paste_credit = RAW_PASTE_WINDOW
            self._write(b"\x01")

    def read_input(self) -> bytes:
        """Everything typed since the last call (for the VM's REPL)."""
        with self._lock:
            data, self._in = bytes(self._in), bytearray()
        return data

    def take_interrupt(self) -> bool:
        """True once per Ctrl-C typed while code was running."""
        with self._lock:
            hit, self._interrupt = self._interrupt, False
        return hit

    @property
    def interrupt_pending(self) -> bool:
        return self._interrupt

    # -- to the port -----------------------------------------------------------------------------
    def output(self, data: bytes) -> None:
        """Console bytes of the VM, cooked as a board's UART driver does."""
        with self._lock:
            if self._swallow:
                n = 0
                while n < len(data) and n < len(self._swallow) and data[n] == self._swallow[n]:
                    n += 1
                data = data[n:]
                self._swallow = self._swallow[n:] if n and data == b"" else b""
            out = bytearray()
            for c in data:
                if c == 10 and self._last_out != 13:
                    out.append(13)
                out.append(c)
                self._last_out = c
            self._write(bytes(out))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.unplugged:
            try:
                view = view[os.write(self._master, view):]
            except BlockingIOError:
                continue
            except OSError:
                return

    def unplug(self) -> None:
        """The USB cable pulled: the port goes away (open handles get I/O errors)."""
        if self.unplugged:
            return
        self.unplugged = True
        os.write(self._stop_w, b"x")
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        with self._lock:  # writers hold it: none writes to a descriptor number being reused
            for fd in (self._slave, self._master, self._stop_r, self._stop_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    close = unplug


class SerialBoard:
    """``with SerialBoard(flash_dir) as b:`` then open ``b.port`` like /dev/ttyUSB0.

    Time runs at real speed (a virtual clock paced 1:1) because the tools on the other end of
    the port are real-time programs.
    """

    def __init__(self, flash_dir: str | os.PathLike[str], name: str = "board",
                 hardware: Any | None = None, **board_kwargs: Any) -> None:
        from sim.vm.board import VirtualBoard

        self.clock = VirtualClock(speed=1.0)
        self.link = SerialLink()
        Path(flash_dir).mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"hardware": hardware} if hardware is not None else {}
        self.board = VirtualBoard(self.clock, name, flash_dir=Path(flash_dir), serial=self.link,
                                  **kwargs, **board_kwargs)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> str:
        return self.link.port

    def __enter__(self) -> Self:
        return self.start()

    def start(self, wait_ready: bool = True, timeout_s: float = 60.0) -> Self:
        """Power on; with ``wait_ready``, return once the VM runs its boot code and, unless
        main.py keeps running, waits at its REPL (a board plugged in a moment ago), so a tool
        does not race the start of the VM."""
        self.board.start()
        self._thread = threading.Thread(target=self.clock.run, kwargs={"raise_errors": False},
                                        name=f"clock {self.board.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while wait_ready and not self.link.waiting and not self._main_running(1.0):
            if time.monotonic() > deadline or self.board.state in ("failed", "hung", "stopped"):
                raise TimeoutError(f"virtual board {self.board.name} did not reach its REPL "
                                   f"(state {self.board.state})")
            time.sleep(0.02)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _main_running(self, for_s: float) -> bool:
        """The VM booted at least ``for_s`` real seconds ago and is still running main.py."""
        history = self.board.history
        if not history or not history[-1].requests or self.board.state != "running":
            return False
        self._booted_at = getattr(self, "_booted_at", None) or time.monotonic()
        return time.monotonic() - self._booted_at >= for_s

    def unplug(self) -> None:
        """Pull the cable: the board loses power and the port disappears."""
        self.board.power_cut()
        self.link.unplug()

    def close(self) -> None:
        self.board.stop()
        self.clock.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.link.close()
