"""Radio front ends: where frames enter the gateway (sim, sx127x, semtech-udp) and downlinks leave."""

from gateway.radio.frame import RxFrame, TxRequest

__all__ = ["RxFrame", "TxRequest", "open_frontend"]


def open_frontend(config, **kwargs):
    """The front end named in ``[radio] frontend``; hardware modules are imported only when chosen."""
    name = config.radio.frontend
    if name == "sim":
        from gateway.radio.sim import SimFrontEnd

        return SimFrontEnd(config.radio, **kwargs)
    raise NotImplementedError(
        f"radio.frontend = {name!r} is not available in this build yet; use \"sim\""
    )
