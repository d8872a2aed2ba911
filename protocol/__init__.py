"""Portable wire formats shared by the nodes and the gateway.

`protocol.lorawan` holds the LoRaWAN 1.0.x frame layer (frames, MIC, encryption, join, MAC
commands). Everything under this package runs unchanged on CPython and MicroPython 1.27.
"""
