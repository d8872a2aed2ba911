"""Radio front ends: where frames enter the gateway (sim, sx127x, semtech-udp) and downlinks leave."""

from gateway.radio.frame import RxFrame, TxRequest

__all__ = ["RxFrame", "TxRequest", "open_frontend"]


def open_frontend(config, *, counters=None, **kwargs):
    """The front end named in ``[radio] frontend``; hardware modules are imported only when chosen.

    ``semtech-udp`` listens on ``[radio.semtech_udp] bind``/``port`` and counts its rejections
    in ``counters`` (pass the agent's, so they show with the others); other keyword arguments go
    to the front end's constructor.
    """
    name = config.radio.frontend
    if name == "sim":
        from gateway.radio.sim import SimFrontEnd

        return SimFrontEnd(config.radio, **kwargs)
    if name == "sx127x":
        from gateway.radio.sx127x import Sx127xFrontEnd

        return Sx127xFrontEnd(config.radio, counters=counters, **kwargs)
    if name == "semtech-udp":
        from gateway.radio.semtech_udp import SemtechUdpFrontEnd

        return SemtechUdpFrontEnd(config.radio, counters=counters, **kwargs)
    raise ValueError(f"radio.frontend = {name!r}: expected sim, sx127x or semtech-udp")
