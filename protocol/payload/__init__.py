"""The compact sensor payload codec for every node role, its commands and its SenML mapping.

Portable (CPython and MicroPython 1.27). The FPort names the role (docs/architecture.md); the
formats, resolutions and units are in one table, `fields.py`. Every bad input raises
PayloadError (a ValueError) with a message naming the port or command, field and value.
"""

from protocol.payload.commands import decode_command
from protocol.payload.errors import PayloadError
from protocol.payload.fields import COMMAND_FPORT, COMMANDS, UPLINKS
from protocol.payload.uplink import decode_uplink, encode_uplink

__all__ = [
    "COMMANDS",
    "COMMAND_FPORT",
    "UPLINKS",
    "PayloadError",
    "decode_command",
    "decode_uplink",
    "encode_command",
    "encode_uplink",
    "to_senml",
]


def encode_command(cmd):
    """The FPort 40 bytes of a command dict (command_encoder.py); gateway side, nodes never do."""
    from protocol.payload.command_encoder import encode_command as encode

    return encode(cmd)


def to_senml(role, readings, base_name, base_time=None):
    """SenML records of one reading set (see senml.py); imported on first use, nodes never do."""
    from protocol.payload.senml import to_senml as convert

    return convert(role, readings, base_name, base_time)
