"""What can go wrong with a board on a USB cable, one exception class per case.

Every message says what happened and what the technician can do about it; none ever carries
key material.
"""

from __future__ import annotations


class ProvisioningError(RuntimeError):
    """Base class: a board could not be flashed, deployed or provisioned; the message says why."""


class PortNotFound(ProvisioningError):
    """The serial port does not exist (wrong name, cable out)."""


class PortBusy(ProvisioningError):
    """Another program holds the serial port open (a terminal, mpremote, another cityedge)."""


class PortPermission(ProvisioningError):
    """The operating system refused to open the port (not in the dialout group)."""


class NotMicroPython(ProvisioningError):
    """Something answers on the port, or nothing does, but not a MicroPython REPL."""


class BoardGone(ProvisioningError):
    """The board stopped answering in the middle of a job (unplugged, reset, crashed)."""


class VersionMismatch(ProvisioningError):
    """The compiled files do not fit the MicroPython the board runs."""


class FilesystemFull(ProvisioningError):
    """The board's flash has no room for what must be written."""


class VerifyFailed(ProvisioningError):
    """A file read back from the board differs from what was sent."""


class BoardError(ProvisioningError):
    """Code run on the board raised an error that is not one of the cases above."""


class ConfigRefused(ProvisioningError):
    """The board already belongs to another DevEUI and replacing it was not asked for."""


class ConfigInvalid(ProvisioningError):
    """The configuration built for the node would not pass the node's own validation."""
