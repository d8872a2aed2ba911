"""Errors raised on bad frames from the air: all are ValueError, so one `except` covers them."""


class FrameError(ValueError):
    """A frame that cannot be parsed or is not allowed by LoRaWAN 1.0.4."""


class MICError(FrameError):
    """A frame whose MIC does not match: wrong key, wrong frame counter or corrupted bytes."""


class MACCommandError(FrameError):
    """MAC commands that cannot be parsed; `parsed` holds the commands read before the fault."""

    def __init__(self, message, parsed):
        super().__init__(message)
        self.parsed = parsed
