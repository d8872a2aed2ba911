"""``os`` on the virtual board: the VM's own, with the harness folders hidden from the root.

Installed as ``sys.modules["os"]``/``["uos"]``; ``listdir``/``ilistdir`` of ``/`` show only what
the board's flash holds (not /dev, /proc, /_vm or the test mounts).
"""

from os import *
from os import getcwd
from os import ilistdir as _ilistdir

import _hw

_HIDDEN = set(_hw.cfg["hide"])


def _is_root(path):
    if path in (None, "", "."):
        return getcwd() == "/"
    return path.rstrip("/") == "" and path.startswith("/")


def ilistdir(path=None):
    entries = _ilistdir() if path is None else _ilistdir(path)
    if not _is_root(path):
        return entries
    return (e for e in entries if e[0] not in _HIDDEN)


def listdir(path=None):
    return [e[0] for e in ilistdir(path)]
