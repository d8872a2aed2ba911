"""The one error the payload codec raises: bad bytes from the air or readings it cannot encode."""


class PayloadError(ValueError):
    """A payload that cannot be decoded, or readings/commands that cannot be encoded.

    The message names the FPort or command, the field and the value, so a technician or the
    gateway log says exactly what was wrong; nothing else ever leaves the codec.
    """
