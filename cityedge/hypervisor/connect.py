"""The hypervisor tools' broker connection: host:port, TLS and credentials named like ``[mqtt]``.

Options mirror the gateway's config keys (``[mqtt.tls] ca_file, cert_file, key_file, insecure``;
``[mqtt] username, password_file``) so one broker set-up reads the same on both sides.
"""

from __future__ import annotations

import argparse
import ssl
import uuid
from pathlib import Path

import aiomqtt

__all__ = ["BrokerOptionError", "add_broker_arguments", "client_from_args", "parse_broker"]


class BrokerOptionError(ValueError):
    """A broker option cannot be used (bad address, unreadable CA or password file)."""


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """--broker, --tls, --tls-ca-file, --tls-cert-file, --tls-key-file, --tls-insecure,
    --username, --password-file."""
    g = parser.add_argument_group("broker")
    g.add_argument("--broker", default="127.0.0.1", metavar="HOST[:PORT]",
                   help="MQTT broker (default 127.0.0.1; port 1883, or 8883 with TLS)")
    g.add_argument("--tls", action="store_true",
                   help="connect over TLS (implied by any --tls-* option); system CAs by default")
    g.add_argument("--tls-ca-file", type=Path, metavar="PEM",
                   help="CA certificate(s) to verify the broker with (like mqtt.tls.ca_file)")
    g.add_argument("--tls-cert-file", type=Path, metavar="PEM",
                   help="client certificate for mutual TLS (like mqtt.tls.cert_file)")
    g.add_argument("--tls-key-file", type=Path, metavar="PEM",
                   help="the client certificate's private key (like mqtt.tls.key_file)")
    g.add_argument("--tls-insecure", action="store_true",
                   help="skip the broker host name check (the chain is still verified)")
    g.add_argument("--username", help="MQTT user name (like mqtt.username)")
    g.add_argument("--password-file", type=Path, metavar="FILE",
                   help="file whose first line is the MQTT password (like mqtt.password_file)")


def _uses_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file
                or args.tls_insecure)


def parse_broker(text: str, *, tls: bool) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host:
        raise BrokerOptionError(f"--broker {text!r}: expected HOST or HOST:PORT")
    if not port:
        return host, 8883 if tls else 1883
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerOptionError(f"--broker {text!r}: the port must be a number 1..65535")
    return host, int(port)


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise BrokerOptionError("--tls-cert-file and --tls-key-file go together (mutual TLS)")
    try:
        context = ssl.create_default_context(cafile=args.tls_ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise BrokerOptionError(f"--tls-ca-file {args.tls_ca_file}: not a usable CA "
                                f"certificate file ({type(exc).__name__})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.tls_cert_file is not None:
        try:
            context.load_cert_chain(args.tls_cert_file, args.tls_key_file)
        except (ssl.SSLError, OSError) as exc:
            raise BrokerOptionError(
                f"--tls-cert-file {args.tls_cert_file} / --tls-key-file {args.tls_key_file}: "
                f"cannot load the client certificate and key ({type(exc).__name__})") from None
    if args.tls_insecure:
        context.check_hostname = False
    return context


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is None:
        return None
    if args.username is None:
        raise BrokerOptionError("--password-file needs --username")
    try:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerOptionError(f"--password-file {args.password_file}: cannot read it "
                                f"({type(exc).__name__})") from None
    if not lines or not lines[0]:
        raise BrokerOptionError(f"--password-file {args.password_file}: the first line is empty")
    return lines[0]


def client_from_args(args: argparse.Namespace, role: str) -> aiomqtt.Client:
    """An aiomqtt client (not yet connected) for the broker options in ``args``."""
    tls = _uses_tls(args)
    host, port = parse_broker(args.broker, tls=tls)
    return aiomqtt.Client(
        host, port, identifier=f"cityedge-{role}-{uuid.uuid4().hex[:12]}",
        username=args.username, password=_password(args),
        tls_context=_tls_context(args) if tls else None,
    )
