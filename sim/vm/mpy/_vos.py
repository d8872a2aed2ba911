"""``os`` on the virtual board: the VM's own, shaped like a board's VFS.

Installed as ``sys.modules["os"]``/``["uos"]`` (and ``open`` in builtins): ``listdir``/``ilistdir``
of ``/`` show only what the board's flash holds (not /dev, /proc, /_vm or the test mounts);
``ilistdir`` gives 4-tuples with the size as LittleFS does; errors carry MicroPython's errno
numbers (the WebAssembly filesystem raises Emscripten's: 44 for ENOENT), so tools such as
mpremote read them as they would from a board.
"""

import builtins
import os as _os
from os import *
from os import getcwd

import _hw

_HIDDEN = set(_hw.cfg["hide"])
# Emscripten errno -> MicroPython (POSIX) errno
_ERRNO = {63: 1, 44: 2, 29: 5, 8: 9, 6: 11, 48: 12, 2: 13, 20: 17, 43: 19, 54: 20, 31: 21,
          28: 22, 33: 24, 22: 27, 51: 28, 69: 30, 37: 36, 55: 39, 138: 95}


def _fix(e):
    if e.args and isinstance(e.args[0], int):
        return OSError(_ERRNO.get(e.args[0], e.args[0]))
    return e


def _wrap(fn):
    def call(*args):
        try:
            return fn(*args)
        except OSError as e:
            raise _fix(e) from None

    return call


stat = _wrap(_os.stat)
remove = _wrap(_os.remove)
unlink = remove
rmdir = _wrap(_os.rmdir)
mkdir = _wrap(_os.mkdir)
rename = _wrap(_os.rename)
chdir = _wrap(_os.chdir)
statvfs = _wrap(_os.statvfs)
_open = builtins.open
open = _wrap(_open)
builtins.open = open


def _is_root(path):
    if path in (None, "", "."):
        return getcwd() == "/"
    return path.rstrip("/") == "" and path.startswith("/")


def _sized(base, entries):
    for e in entries:
        size = 0
        if e[1] == 0x8000:
            try:
                size = _os.stat(base + e[0])[6]
            except OSError:
                pass
        yield (e[0], e[1], e[2], size)


def ilistdir(path=None):
    try:
        entries = _os.ilistdir() if path is None else _os.ilistdir(path)
    except OSError as e:
        raise _fix(e) from None
    base = "" if path in (None, "", ".") else path.rstrip("/") + "/"
    entries = _sized(base, entries)
    if not _is_root(path):
        return entries
    return (e for e in entries if e[0] not in _HIDDEN)


def listdir(path=None):
    return [e[0] for e in ilistdir(path)]


class _Uname(tuple):
    sysname = property(lambda s: s[0])
    nodename = property(lambda s: s[1])
    release = property(lambda s: s[2])
    version = property(lambda s: s[3])
    machine = property(lambda s: s[4])


def uname():
    """What a board reports (platform and machine come from the board's configuration)."""
    import sys

    v = sys.implementation.version
    rel = "%d.%d.%d" % (v[0], v[1], v[2])
    return _Uname((_hw.cfg.get("platform", "esp32"), _hw.cfg.get("platform", "esp32"), rel,
                   "v" + rel, _hw.cfg.get("machine", "Generic ESP32 module with ESP32")))
