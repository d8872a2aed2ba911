"""The network side of LoRaWAN on the gateway: joins, frame checks, counters, decryption,
MAC commands, ADR, downlink scheduling within the EU868 duty-cycle budget."""

from gateway.lorawan.downlink import DownlinkHandle, DownlinkStatus, Window
from gateway.lorawan.dutycycle import DutyCycleBudget
from gateway.lorawan.join import COMMON_EU868_CFLIST_HZ, JoinGranted, JoinSettings
from gateway.lorawan.mac import MacState
from gateway.lorawan.network import DownlinkError, NetworkSide, Rejection, UplinkReply

__all__ = [
    "COMMON_EU868_CFLIST_HZ",
    "DownlinkError",
    "DownlinkHandle",
    "DownlinkStatus",
    "DutyCycleBudget",
    "JoinGranted",
    "JoinSettings",
    "MacState",
    "NetworkSide",
    "Rejection",
    "UplinkReply",
    "Window",
]
