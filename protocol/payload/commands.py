"""Downlink commands on FPort 40: bytes -> a command dict, refusing anything it does not know.

Wire format: [version:3][opcode:5][seq:8][presence bits of optional arguments][arguments][0 pad].
A command dict is {"cmd": name, "seq": 0..255, <arguments of fields.COMMANDS[name]>}; the node
acknowledges it on FPort 30 with the same seq.
"""

from protocol.payload.bits import BitReader
from protocol.payload.codec import decode_layout
from protocol.payload.errors import PayloadError
from protocol.payload.fields import COMMANDS, OPCODE_BITS, SEQ_BITS
from protocol.payload.uplink import check_version


def _check_points(points, what):
    for i, p in enumerate(points):
        minutes = p["minutes"]
        if p["ref"] == "clock":
            if minutes < 0:
                raise PayloadError(f"{what}: points[{i}]: a clock time is 0..1439 minutes "
                                   f"after midnight, got {minutes}")
        elif not -720 <= minutes <= 720:
            raise PayloadError(f"{what}: points[{i}]: a {p['ref']} offset is -720..720 "
                               f"minutes, got {minutes}")


def decode_command(data):
    """The command dict of FPort 40 bytes; PayloadError for unknown opcodes or bad arguments."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"command: payload must be bytes, got {data!r}")
    if not len(data):
        raise PayloadError("command: empty payload")
    r = BitReader(data, "command")
    check_version(r, "command")
    opcode = r.read(OPCODE_BITS)
    for name in COMMANDS:
        if COMMANDS[name][0] == opcode:
            break
    else:
        raise PayloadError(f"command: unknown opcode {opcode}")
    r.what = f"command {name}"
    cmd = {"cmd": name, "seq": r.read(SEQ_BITS)}
    cmd.update(decode_layout(r, COMMANDS[name][1], r.what))
    r.finish()
    if name == "calendar":
        _check_points(cmd["points"], r.what)
    return cmd
