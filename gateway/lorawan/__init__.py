"""The network side of LoRaWAN on the gateway: frame checks, counters, decryption, decoding."""

from gateway.lorawan.network import NetworkSide, Rejection

__all__ = ["NetworkSide", "Rejection"]
