"""Start-up of the virtual board, run by runner.mjs: what a board's firmware does after reset.

Installs the virtual ``time`` and ``os``, then runs ``boot.py`` (its errors are printed and ignored, as on a
board) and the entry module ``main.py`` as ``__main__``, or the given code for ad-hoc runs. An
uncaught exception prints its traceback on the console; then the board reports how the run ended
(with the heap figures of micropython.mem_info()) and sits at the REPL, i.e. the process ends.
"""

import io
import json
import os
import sys

import _hw
import _vos
import _vtime

sys.modules["time"] = _vtime
sys.modules["utime"] = _vtime
sys.modules["os"] = _vos
sys.modules["uos"] = _vos


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _run(source, filename):
    exec(compile(source, filename, "exec"), {"__name__": "__main__", "__file__": filename})  # noqa: S102


def _run_file(path):
    with open(path) as f:
        source = f.read()
    _run(source, path)


def _traceback(e):
    """The traceback as a board prints it: without this module's own frames."""
    buf = io.StringIO()
    sys.print_exception(e, buf)
    own = 'File "/_vm/_boot.py"'
    return "".join(line + "\n" for line in buf.getvalue().split("\n")[:-1] if own not in line)


def main():
    cfg = _hw.cfg
    sys.path[:] = ["/_vm", "", ".frozen", "/lib"] + cfg["path"]
    # In a board's firmware (ROM) these cost no heap: load them before the heap baseline.
    for name in ("binascii", "cryptolib", "machine"):
        __import__(name)
    # The peak restarts here: Boot.heap_peak is the application's, over the harness's baseline.
    _hw.call(json.dumps({"op": "boot", "mem": _hw.mem(), "heap": _hw.heap(True),
                         "cpu_us": _hw.cpu_us()}))
    status = "exit"
    tb = None
    try:
        if cfg["code"] is not None:
            _run(cfg["code"], "<code>")
        else:
            if _exists("boot.py"):
                try:
                    _run_file("boot.py")
                except SystemExit:
                    pass
                except Exception as e:  # noqa: BLE001 - boot.py errors never stop a board
                    print(_traceback(e), end="")
            entry = cfg["entry"] + ".py"
            if _exists(entry) and not cfg.get("raw"):  # soft reset into the raw REPL skips main.py
                _run_file(entry)
    except SystemExit:
        pass
    except BaseException as e:  # noqa: BLE001 - a board prints any uncaught exception, stops
        tb = _traceback(e)
        print(tb, end="")
        status = "crash"
    _hw.call(json.dumps({"op": "end", "status": status, "tb": tb, "mem": _hw.mem(), "heap": _hw.heap(),
                         "cpu_us": _hw.cpu_us()}))
