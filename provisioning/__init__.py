"""Provisioning: giving a board its identity, keys, role and settings, and registering it."""
