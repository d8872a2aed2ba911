"""Benchmarks: `make bench` runs them; each prints a table for the numbers the brief promises."""
