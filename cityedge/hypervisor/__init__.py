"""The hypervisor's side of the MQTT interface, as a library and as `cityedge hypervisor ...`.

Receive: ``messages`` / ``decode_message`` verify and decode what gateways publish. Send:
``build_command`` -> ``sign_command`` -> ``subscribe_statuses`` + ``publish_command`` ->
``follow`` (verified statuses of one command) with ``CommandProgress`` saying when it is over.
docs/asyncapi.yaml and docs/hypervisor-guide.md describe the wire format these implement.
"""

from cityedge.hypervisor.command import (
    ACTION_ARGS,
    CommandError,
    build_command,
    command_topic,
    new_command_id,
    parse_action_args,
    sign_command,
)
from cityedge.hypervisor.follow import (
    CommandProgress,
    StatusUpdate,
    describe,
    follow,
    publish_command,
    status_topic,
    status_update,
    subscribe_statuses,
)
from cityedge.hypervisor.messages import (
    HypervisorMessage,
    decode_message,
    load_keys,
    messages,
    parse_topic,
    resolve,
)
from cityedge.hypervisor.watch import format_line

__all__ = [
    "ACTION_ARGS",
    "CommandError",
    "CommandProgress",
    "HypervisorMessage",
    "StatusUpdate",
    "build_command",
    "command_topic",
    "decode_message",
    "describe",
    "follow",
    "format_line",
    "load_keys",
    "messages",
    "new_command_id",
    "parse_action_args",
    "parse_topic",
    "publish_command",
    "resolve",
    "sign_command",
    "status_topic",
    "status_update",
    "subscribe_statuses",
]
