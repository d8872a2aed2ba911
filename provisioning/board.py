"""A MicroPython board on a serial port, driven through mpremote's own serial transport.

``Board.connect(port)`` opens the port exclusively, interrupts whatever runs (Ctrl-C), enters the
raw REPL and identifies the board: MicroPython version, the .mpy format it loads
(``sys.implementation._mpy``: version, sub-version and native architecture), ``os.uname()``
machine, ``machine.unique_id()`` and free flash. Every later operation maps the transport's
failures to the specific errors of :mod:`provisioning.errors`.

Connecting while the board boots (or resets because the port was opened) can garble the first
exchange; the link is then drained and the raw REPL entered again, and a random token echoed by
the board proves the exchange is in step before anything else is sent.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from provisioning.errors import (
    BoardError,
    BoardGone,
    FilesystemFull,
    NotMicroPython,
    PortBusy,
    ProvisioningError,
    VerifyFailed,
)
from provisioning.identity import dev_eui_from_unique_id
from provisioning.ports import check_port

# The native architectures of sys.implementation._mpy >> 10 (MicroPython docs, "MicroPython .mpy files").
MPY_ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
              "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")
READ_TIMEOUT_S = 1.0  # one read on the port (the board's answers to the raw-paste handshake)
ENOSPC = 28

_IDENTIFY = """\
import sys, os
try:
    _m = sys.implementation._mpy
except AttributeError:
    _m = None
try:
    import machine
    _u = machine.unique_id()
except (ImportError, AttributeError):
    _u = None
_s = os.statvfs('/')
print(repr((tuple(sys.implementation.version)[:3], sys.platform, os.uname().machine, _m, _u,
            _s[0] * _s[4], _s[1] * _s[2])))
"""

_HASHES = """\
import hashlib
_b = bytearray(512)
_mv = memoryview(_b)
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    while True:
        n = f.readinto(_b)
        if not n:
            break
        h.update(_mv[:n])
    f.close()
    return h.digest()
print(repr([_h(p) for p in PATHS]))
"""


@dataclass(frozen=True)
class BoardInfo:
    """What a board says about itself when it is connected."""

    port: str
    version: tuple[int, int, int]
    platform: str
    machine: str
    mpy: int | None  # sys.implementation._mpy, None when the firmware has no .mpy support info
    unique_id: bytes | None
    free_bytes: int
    total_bytes: int

    @property
    def version_text(self) -> str:
        """``1.27.0``."""
        return ".".join(str(v) for v in self.version)

    @property
    def mpy_version(self) -> int | None:
        """The .mpy format version the board loads (6 for MicroPython 1.22 and later)."""
        return None if self.mpy is None else self.mpy & 0xFF

    @property
    def mpy_sub_version(self) -> int | None:
        """The .mpy sub-version (matters only for files with native code)."""
        return None if self.mpy is None else (self.mpy >> 8) & 3

    @property
    def mpy_arch(self) -> int | None:
        """The native-code architecture index (0: none)."""
        return None if self.mpy is None else self.mpy >> 10

    @property
    def arch_name(self) -> str:
        """``xtensawin``, ``armv6m`` ... or ``none``."""
        arch = self.mpy_arch
        if arch is None or arch >= len(MPY_ARCHES) or MPY_ARCHES[arch] is None:
            return "none" if arch == 0 else "unknown"
        return MPY_ARCHES[arch] or "none"

    @property
    def dev_eui(self) -> str | None:
        """The DevEUI derived from the unique id, when the board has one of 6 or 8 bytes."""
        if self.unique_id is None or len(self.unique_id) not in (6, 8):
            return None
        return dev_eui_from_unique_id(self.unique_id)

    def describe(self) -> str:
        """One line for a technician (no secrets in it)."""
        mpy = "?" if self.mpy is None else f"v{self.mpy_version}.{self.mpy_sub_version}"
        return (f"{self.port}: MicroPython {self.version_text} on {self.machine} "
                f"(mpy {mpy}, arch {self.arch_name}), {self.free_bytes // 1024} KB free")


class Board:
    """A connected board, in the raw REPL, ready for file operations."""

    def __init__(self, port: str, transport: SerialTransport, info: BoardInfo) -> None:
        self.port = port
        self.transport = transport
        self.info = info
        self._closed = False

    # -- connecting ---------------------------------------------------------------------------------
    @classmethod
    def connect(cls, port: str, timeout: float = 5.0, attempts: int = 3) -> Board:
        """Open ``port``, interrupt the board, enter the raw REPL and identify the board."""
        check_port(port)
        try:
            transport = SerialTransport(port, timeout=READ_TIMEOUT_S)
        except TransportError:
            check_port(port)  # says which: gone or busy
            raise PortBusy(f"{port} could not be opened: another program may hold it") from None
        board = cls(port, transport, _NO_INFO)
        try:
            board._sync(timeout, attempts)
            board.info = board._identify()
        except BaseException:
            board.close()
            raise
        return board

    def _sync(self, timeout: float, attempts: int) -> None:
        t = self.transport
        try:
            self._wake(timeout)
            for _ in range(attempts):
                try:
                    t.use_raw_paste = True
                    with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                        t.enter_raw_repl(soft_reset=False, timeout_overall=timeout)
                    token = secrets.token_hex(4)
                    if t.exec(f"print('sync-' + {token!r})").strip() == f"sync-{token}".encode():
                        return
                except (TransportError, struct.error):
                    pass
                self._drain()
        except (serial.SerialException, OSError) as exc:
            raise BoardGone(f"the board on {self.port} went away while connecting "
                            f"({exc}): plug it back in and try again") from None
        raise NotMicroPython(f"the device on {self.port} answers but not as MicroPython's raw "
                             "REPL: is MicroPython flashed on it (`cityedge flash`)? If it is, "
                             "press its reset button and try again")

    def _wake(self, timeout: float) -> None:
        """Interrupt the board and wait until it has said something and gone quiet."""
        ser = self.transport.serial
        ser.write(b"\r\x03")
        deadline = time.monotonic() + timeout
        while not ser.in_waiting:
            if time.monotonic() > deadline:
                raise NotMicroPython(
                    f"no answer from the device on {self.port} within {timeout:g} s: is "
                    "MicroPython flashed on it (`cityedge flash`), is it asleep or in bootloader "
                    "mode? Press its reset button and try again")
            time.sleep(0.02)
        self._drain()

    def _drain(self, quiet_s: float = 0.3, limit_s: float = 3.0) -> None:
        """Read and drop what the board sends until it has been quiet for ``quiet_s``."""
        ser = self.transport.serial
        start = last = time.monotonic()
        while time.monotonic() - last < quiet_s and time.monotonic() - start < limit_s:
            waiting = ser.in_waiting
            if waiting:
                ser.read(waiting)
                last = time.monotonic()
            else:
                time.sleep(0.02)

    def _identify(self) -> BoardInfo:
        try:
            version, platform, machine, mpy, uid, free, total = self.eval_code(
                _IDENTIFY, "identifying the board")
        except (BoardError, ValueError, SyntaxError, TypeError) as exc:
            raise NotMicroPython(f"the device on {self.port} has a REPL but did not identify "
                                 f"as a MicroPython board ({exc})") from None
        return BoardInfo(self.port, tuple(version), platform, machine, mpy, uid, free, total)

    # -- running code -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self, step: str) -> Iterator[None]:
        """Map transport failures during ``step`` to BoardGone / FilesystemFull / BoardError."""
        try:
            yield
        except TransportExecError as exc:
            last = (exc.error_output.strip().splitlines() or ["?"])[-1]
            if "ENOSPC" in last or f"Errno {ENOSPC}]" in last or last == f"OSError: {ENOSPC}":
                raise FilesystemFull(f"the board's flash is full while {step}: remove files "
                                     "or erase the filesystem, then run again") from None
            raise BoardError(f"the board on {self.port} failed while {step}: {last}") from None
        except ProvisioningError:
            raise
        except (TransportError, serial.SerialException, OSError, struct.error) as exc:
            raise BoardGone(f"lost the board on {self.port} while {step} ({exc}): plug it back "
                            "in and run the command again; it carries on where it stopped") from None

    def exec(self, code: str, step: str = "running code") -> bytes:
        """Run ``code`` on the board; its printed output."""
        with self.guard(step):
            return self.transport.exec(code)

    def eval_code(self, code: str, step: str = "running code") -> Any:
        """Run ``code`` whose last printed line is a Python literal; that value."""
        out = self.exec(code, step).decode("utf-8", "replace").strip().splitlines()
        return ast.literal_eval(out[-1] if out else "")

    # -- files ----------------------------------------------------------------------------------------
    def sha256(self, paths: list[str]) -> dict[str, bytes | None]:
        """The SHA-256 of each file on the board (hashlib there), None for a missing one."""
        result: dict[str, bytes | None] = {}
        for i in range(0, len(paths), 40):
            part = paths[i:i + 40]
            digests = self.eval_code(_HASHES.replace("PATHS", repr(part)), "hashing files on the board")
            result.update(zip(part, digests, strict=True))
        return result

    def read_file(self, path: str) -> bytes | None:
        """The bytes of a file on the board, or None when it does not exist."""
        with self.guard(f"reading {path}"):
            if not self.transport.fs_exists(path):
                return None
            return bytes(self.transport.fs_readfile(path, chunk_size=512))

    def make_dirs(self, folders: list[str]) -> None:
        """Create these folders (parents first) where they are missing."""
        if folders:
            ordered = sorted(set(folders), key=lambda d: d.count("/"))
            self.exec(f"import os\nfor d in {ordered!r}:\n try:\n  os.mkdir(d)\n"
                      " except OSError:\n  pass\n", "creating folders")

    def remove(self, paths: list[str], step: str = "removing files") -> None:
        """Remove these files if present."""
        if paths:
            self.exec(f"import os\nfor p in {paths!r}:\n try:\n  os.remove(p)\n"
                      " except OSError:\n  pass\n", step)

    def list_files(self, folders: list[str]) -> list[str]:
        """Every file path under these folders (recursively); missing folders are skipped."""
        code = ("import os\n_r = []\ndef _w(d):\n try:\n  es = list(os.ilistdir(d))\n"
                " except OSError:\n  return\n for e in es:\n  p = d + '/' + e[0]\n"
                "  if e[1] & 0x4000:\n   _w(p)\n  else:\n   _r.append(p)\n"
                f"for d in {folders!r}:\n _w(d)\nprint(repr(_r))\n")
        return list(self.eval_code(code, "listing files"))

    def write_file(self, path: str, data: bytes,
                   progress: Callable[[int], None] | None = None,
                   step: str | None = None) -> None:
        """Write ``path`` atomically: to ``path + '.part'``, check its hash, rename over the old."""
        temp = path + ".part"
        what = step or f"writing {path}"
        done = 0

        def advance(written: int, _total: int) -> None:
            nonlocal done
            if progress is not None:
                progress(written - done)
            done = written

        with self.guard(what):
            try:
                self.transport.fs_writefile(temp, data, chunk_size=1024, progress_callback=advance)
            except OSError as exc:  # mpremote turned the board's OSError into a local one
                if isinstance(exc, serial.SerialException) or exc.errno is None:
                    raise  # the line itself failed: guard() says the board is gone
                if exc.errno == ENOSPC:
                    self.remove([temp], "removing a partial file")
                    raise FilesystemFull(f"the board's flash is full while {what}: remove files "
                                         "or erase the filesystem, then run again") from None
                raise BoardError(f"the board on {self.port} failed while {what}: {exc}") from None
        got = self.sha256([temp])[temp]
        if got != hashlib.sha256(data).digest():
            self.remove([temp], "removing a corrupt file")
            raise VerifyFailed(f"{path} read back from the board differs from what was sent "
                               "(a bad cable or a failing flash): run again")
        self.exec(f"import os\ntry:\n os.rename({temp!r}, {path!r})\nexcept OSError:\n"
                  f" os.remove({path!r})\n os.rename({temp!r}, {path!r})\n", f"renaming {path}")

    # -- closing --------------------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the raw REPL and release the port (quietly if the board is gone)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, serial.SerialException, TransportError):
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
        with contextlib.suppress(OSError, serial.SerialException):
            self.transport.close()
        with contextlib.suppress(OSError, serial.SerialException):
            self.transport.serial.close()  # mpremote skips it when the line is already dead

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_NO_INFO = BoardInfo("", (0, 0, 0), "", "", None, None, 0, 0)
