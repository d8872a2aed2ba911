"""The `cityedge` command line, the simulated-district demo and the hypervisor-side tools."""

__version__ = "0.1.0"
