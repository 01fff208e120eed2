"""Personal data at rest: salted digests in the ledger, encrypted values beside it.

A decision's personal and sensitive inputs never enter the hashed record in clear. The record
holds ``{"$protected": "sha256:<hex>"}`` for each, a digest over a per-decision random salt
and the value; the salt and the values are encrypted together (AES-256-GCM, the record id as
associated data) in ``protected_values``. Deleting that row erases the data; the ledger still
verifies, and without the salt the digests reveal nothing about low-entropy values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keel.errors import ErasedDataError, StoreError

PROTECTED_MARK = "$protected"


@dataclass(frozen=True)
class Sealed:
    record_id: str
    key_id: str
    nonce: bytes
    ciphertext: bytes

    def row(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "key_id": self.key_id,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }


class Protector:
    def __init__(self, key_id: str, key: bytes) -> None:
        self.key_id = key_id
        self._aead = AESGCM(key)

    def split(
        self, record_id: str, inputs: Mapping[str, Any], protected: list[str]
    ) -> tuple[dict[str, Any], Sealed | None]:
        """Return the inputs as the ledger stores them, and the sealed personal values."""
        secret = {name: inputs[name] for name in protected if name in inputs}
        if not secret:
            return dict(inputs), None
        salt = os.urandom(16).hex()
        public = dict(inputs)
        for name, value in secret.items():
            public[name] = {PROTECTED_MARK: "sha256:" + _digest(salt, name, value)}
        nonce = os.urandom(12)
        plaintext = json.dumps({"salt": salt, "values": secret}).encode()
        ciphertext = self._aead.encrypt(nonce, plaintext, record_id.encode())
        return public, Sealed(record_id, self.key_id, nonce, ciphertext)

    def join(
        self, record_id: str, stored_inputs: Mapping[str, Any], sealed: Sealed | None
    ) -> dict[str, Any]:
        """Restore the original inputs of a record, checking each value against its digest."""
        marked = [
            k for k, v in stored_inputs.items() if isinstance(v, dict) and PROTECTED_MARK in v
        ]
        if not marked:
            return dict(stored_inputs)
        if sealed is None:
            raise ErasedDataError(
                f"the personal inputs of {record_id} ({', '.join(marked)}) have been erased",
                {"record_id": record_id, "fields": marked},
            )
        if sealed.key_id != self.key_id:
            raise StoreError(
                f"{record_id} was sealed with data key {sealed.key_id}, not the current key "
                f"{self.key_id}: restore that key file to read it",
                {"record_id": record_id},
            )
        try:
            plain = self._aead.decrypt(sealed.nonce, sealed.ciphertext, record_id.encode())
        except InvalidTag as exc:
            raise StoreError(
                f"protected values of {record_id} fail authentication: altered or wrong key",
                {"record_id": record_id},
            ) from exc
        payload = json.loads(plain)
        out = dict(stored_inputs)
        for name in marked:
            value = payload["values"].get(name)
            expected = stored_inputs[name][PROTECTED_MARK]
            if "sha256:" + _digest(payload["salt"], name, value) != expected:
                raise StoreError(
                    f"protected value {name} of {record_id} does not match the ledger digest",
                    {"record_id": record_id, "field": name},
                )
            out[name] = value
        return out


def _digest(salt: str, name: str, value: Any) -> str:
    """SHA-256 over salt, field name and the value's ``repr``, separated by U+001F.

    Values here passed the flow's schema (str, int, float or bool), whose ``repr`` is exact
    and survives the JSON round trip through the sealed payload unchanged.
    """
    return hashlib.sha256(f"{salt}\x1f{name}\x1f{value!r}".encode()).hexdigest()
