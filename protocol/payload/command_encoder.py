"""Command dict -> FPort 40 bytes (the gateway's side of protocol.payload.commands).

Kept apart from the decoder so a node, which only decodes commands, never ships it; see
``protocol.payload.encode_command``.
"""

from protocol.payload.bits import BitWriter
from protocol.payload.codec import encode_layout
from protocol.payload.commands import decode_command
from protocol.payload.errors import PayloadError
from protocol.payload.fields import COMMANDS, FORMAT_VERSION, OPCODE_BITS, SEQ_BITS, VERSION_BITS


def encode_command(cmd):
    """The FPort 40 bytes of a command dict; PayloadError names what is unknown or out of range."""
    if not isinstance(cmd, dict):
        raise PayloadError(f"command: expected a dict, got {cmd!r}")
    name = cmd.get("cmd")
    entry = COMMANDS.get(name) if isinstance(name, str) else None
    if entry is None:
        known = ", ".join(sorted(COMMANDS))
        raise PayloadError(f"command: unknown command {name!r} (known: {known})")
    opcode, layout = entry
    seq = cmd.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 255:
        raise PayloadError(f"command {name}: seq = {seq!r}: expected an integer 0..255")
    w = BitWriter()
    w.write(FORMAT_VERSION, VERSION_BITS)
    w.write(opcode, OPCODE_BITS)
    w.write(seq, SEQ_BITS)
    encode_layout(w, layout, cmd, f"command {name}", ("cmd", "seq"))
    data = w.getvalue()
    decode_command(data)  # the rules that tie fields together live in one place: the decoder
    return data
