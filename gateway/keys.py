"""The gateway's Ed25519 signing key: generated once, kept in a 0600 PEM file, never logged.

Everything the gateway publishes is a COSE_Sign1 made with this key; the hypervisor trusts the
matching public key, which ``generate_signing_key`` also writes beside it as ``<path>.pub``.

Key identifier (``kid``): the first 8 bytes of SHA-256 over the 32-byte raw Ed25519 public key.
It is short enough to travel in every message and lets a verifier holding many gateways' keys
pick the right one; it is not a secret and not a security boundary (the signature is).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "KeyFileError",
    "SigningKey",
    "generate_signing_key",
    "key_id",
    "load_public_key",
    "load_signing_key",
]

KID_LENGTH = 8


class KeyFileError(Exception):
    """A key file is missing, unreadable, unsafe or of the wrong kind; the message says what to do."""


def key_id(public_key: Ed25519PublicKey) -> bytes:
    """The kid of an Ed25519 public key: SHA-256 of its raw 32 bytes, first 8 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KID_LENGTH]


class SigningKey:
    """An Ed25519 private key with its kid; ``repr`` never shows key material."""

    __slots__ = ("_private", "kid", "public_bytes", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.public_bytes: bytes = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid: bytes = hashlib.sha256(self.public_bytes).digest()[:KID_LENGTH]

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key held only in memory (tests, the demo)."""
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def private_pem(self) -> bytes:
        """PKCS8 PEM of the private key, for writing to a 0600 file only."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of the public key (what the hypervisor is given)."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid.hex()})"


def _public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _write_new(path: Path, data: bytes, mode: int, *, force: bool) -> None:
    """Write ``data`` to ``path`` created with ``mode`` from the start (no window with wider
    permissions); with ``force`` an existing file is replaced atomically."""
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise KeyFileError(
                f"{path}: already exists; refusing to overwrite a key "
                "(move it away first, or use --force if you mean to replace it)"
            ) from None
        target = path
    else:
        target = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; make it exactly `mode`
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if target != path:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def generate_signing_key(path: str | os.PathLike[str], *, force: bool = False) -> SigningKey:
    """Create a new Ed25519 key at ``path`` (PKCS8 PEM, mode 0600) and ``<path>.pub`` (0644)."""
    file = Path(path)
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"{file.parent}: cannot create the key directory: {exc.strerror or exc}"
        ) from None
    key = SigningKey.generate()
    try:
        _write_new(file, key.private_pem(), 0o600, force=force)
        _write_new(_public_path(file), key.public_pem(), 0o644, force=True)
    except OSError as exc:
        raise KeyFileError(f"{file}: cannot write the key: {exc.strerror or exc}") from None
    return key


def _read_key_file(file: Path, what: str) -> bytes:
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{file}: no {what} here; create one with `cityedge gateway init` "
            "or point gateway.signing_key at the right file"
        ) from None
    except IsADirectoryError:
        raise KeyFileError(f"{file}: is a directory; expected a PEM {what} file") from None
    except PermissionError:
        raise KeyFileError(
            f"{file}: permission denied; run the gateway as the user that owns the key"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{file}: cannot read the {what}: {exc.strerror or exc}") from None


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load the gateway's private key, refusing a file that group or others could read."""
    file = Path(path)
    try:
        st = file.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise KeyFileError(f"{file}: cannot inspect the key file: {exc.strerror or exc}") \
            from None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        raise KeyFileError(
            f"{file}: the private key is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with `chmod 600 {file}`"
        )
    data = _read_key_file(file, "signing key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(
            f"{file}: the key is encrypted; cityedge needs an unencrypted PKCS8 PEM key "
            "protected by file permissions (0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"{file}: not a PEM private key; expected the PKCS8 Ed25519 key written by "
            "`cityedge gateway init`"
        ) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(
            f"{file}: holds a {type(private).__name__.removeprefix('_')} key; "
            "expected an Ed25519 key"
        )
    return SigningKey(private)


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key (SubjectPublicKeyInfo PEM), e.g. a gateway's ``.pub`` file."""
    file = Path(path)
    data = _read_key_file(file, "public key")
    try:
        public = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"{file}: not a PEM public key; expected a SubjectPublicKeyInfo Ed25519 key "
            "(the .pub file written beside the gateway's signing key)"
        ) from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(
            f"{file}: holds a {type(public).__name__.removeprefix('_')} key; "
            "expected an Ed25519 key"
        )
    return public
