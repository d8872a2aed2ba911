"""A fresh, empty current directory (the board's flash) for tests run both under CPython and in
the MicroPython VM (which has no tempfile)."""

import os

_n = [0]


def in_fresh_dir(fn):
    """Run fn() with a new empty directory as the current one."""
    try:
        import tempfile

        base = tempfile.mkdtemp()
    except ImportError:
        _n[0] += 1
        base = "/fresh_dir_%d" % _n[0]
        os.mkdir(base)
    old = os.getcwd()
    os.chdir(base)
    try:
        fn()
    finally:
        os.chdir(old)
