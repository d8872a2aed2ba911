"""Portable chip drivers: the same code on MicroPython boards, the Raspberry Pi and in the sim."""
