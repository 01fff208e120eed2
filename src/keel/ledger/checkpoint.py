"""Signed checkpoints of the chain head (Ed25519).

A checkpoint kept outside the database (a file, a ticket, a transparency log) detects what
the chain alone cannot: entries removed from the end, or the whole chain recomputed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keel.canonical import canonical_bytes
from keel.errors import KeelError
from keel.keys import public_key_from_text, public_key_text

CHECKPOINT_SCHEMA_VERSION = 1


class CheckpointError(KeelError):
    """A checkpoint file is unreadable, of an unknown schema, or not signed by the key it
    must be signed by."""

    code = "invalid_checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    project: str
    seq: int
    head_hash: str
    created_at: str
    public_key: str
    signature: str

    def signed_part(self) -> dict[str, Any]:
        return {
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "project": self.project,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "created_at": self.created_at,
            "public_key": self.public_key,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.signed_part(), "signature": self.signature}

    def verify_signature(self, trusted_key: Ed25519PublicKey | None = None) -> None:
        """Raise unless the signature is valid (for ``trusted_key`` when one is pinned)."""
        key = trusted_key or public_key_from_text(self.public_key)
        if trusted_key is not None and public_key_text(trusted_key) != self.public_key:
            raise CheckpointError("the checkpoint was signed by another key than the trusted one")
        try:
            key.verify(base64.b64decode(self.signature), canonical_bytes(self.signed_part()))
        except (InvalidSignature, ValueError) as exc:
            raise CheckpointError("the checkpoint's signature is not valid") from exc


def make_checkpoint(
    key: Ed25519PrivateKey, project: str, seq: int, head_hash: str, created_at: str
) -> Checkpoint:
    unsigned = Checkpoint(
        project, seq, head_hash, created_at, public_key_text(key.public_key()), ""
    )
    signature = base64.b64encode(key.sign(canonical_bytes(unsigned.signed_part()))).decode()
    return Checkpoint(project, seq, head_hash, created_at, unsigned.public_key, signature)


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
            raise CheckpointError(f"{path}: unsupported checkpoint schema_version")
        return Checkpoint(
            project=str(raw["project"]),
            seq=int(raw["seq"]),
            head_hash=str(raw["head_hash"]),
            created_at=str(raw["created_at"]),
            public_key=str(raw["public_key"]),
            signature=str(raw["signature"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: not a Keel checkpoint file: {exc}", {"path": str(path)}
        ) from exc
