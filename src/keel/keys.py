"""Key files a project keeps beside its data: the data-encryption key and the ledger signing key.

Keys are created on first use with mode 0600 in the project's keys directory
(``.keel/keys`` by default, ``KEEL_KEYS_DIR`` to move them, e.g. onto a secrets volume).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keel.errors import ConfigError

DATA_KEY_FILE = "data.key"
SIGNING_KEY_FILE = "ledger-signing.pem"


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_data_key(keys_dir: Path) -> tuple[str, bytes]:
    """Return (key id, 32-byte AES key), creating the key on first use."""
    path = keys_dir / DATA_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process created it first
            _write_secret(path, base64.b64encode(secrets.token_bytes(32)) + b"\n")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read data key {path}: {exc}", {"path": str(path)}) from exc
    if len(key) != 32:
        raise ConfigError(
            f"data key {path} must hold 32 bytes, base64-encoded", {"path": str(path)}
        )
    return hashlib.sha256(key).hexdigest()[:16], key


def load_signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The Ed25519 key that signs ledger checkpoints, created on first use."""
    path = keys_dir / SIGNING_KEY_FILE
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with contextlib.suppress(FileExistsError):
            _write_secret(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc}", {"path": str(path)}) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key", {"path": str(path)})
    return key


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ConfigError(f"not an Ed25519 public key (base64 of 32 bytes): {exc}") from exc
