"""The node application for MicroPython: boot, configuration, roles, LoRaWAN end device, persistence."""
