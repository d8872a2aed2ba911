"""The command path: hypervisor commands in, checked, stored, delivered, their life reported.

Only the pure modules are re-exported here (the store imports ``model`` and ``actions``);
import ``gateway.commands.intake``, ``.message`` and ``.status`` by their full names.
"""

from gateway.commands.actions import ACTIONS, Action, ArgumentError, to_node_command
from gateway.commands.model import FINAL, OPEN, REJECTION_REASONS, CommandRow

__all__ = [
    "ACTIONS",
    "FINAL",
    "OPEN",
    "REJECTION_REASONS",
    "Action",
    "ArgumentError",
    "CommandRow",
    "to_node_command",
]
