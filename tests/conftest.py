"""Shared pytest configuration: fixture plugins for the real broker and the real MicroPython VM."""

pytest_plugins = ["tests.fixtures.mosquitto", "tests.fixtures.micropython"]
