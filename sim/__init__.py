"""Simulated hardware: virtual clock, buses, register-level chip models, LoRa channel, virtual MicroPython boards."""
