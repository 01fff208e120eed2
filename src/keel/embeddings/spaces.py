"""Embedding spaces, and the one interface every embedder offers.

A space names everything that decides what a vector means: the model, how it was run
(``onnx-int8`` and ``torch-fp32`` give slightly different vectors for the same text), the
SHA-256 of the weights actually loaded, the dimension, whether rows are L2-normalised and
how many tokens of a text the model reads. Its ``id`` is derived from all of them, so two
vectors may be compared only when their space ids are equal: int8 and fp32 vectors of the
same model never mix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from keel.embeddings.tokens import TokenCounter
from keel.errors import ConfigError

SPACE_FIELDS = ("model", "variant", "weights_sha256", "dimension", "normalised", "max_tokens")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class EmbeddingSpace:
    """The space a vector lives in; stored with every vector and in the ledger.

    ``weights_sha256`` is the SHA-256 of the weights file the embedder loaded. A remote
    server's weights cannot be hashed from here: its space carries the hash the operator
    declared, or else the SHA-256 of the model name the server is asked for, which tells
    models apart by name only.
    """

    model: str  # e.g. sentence-transformers/all-MiniLM-L6-v2
    variant: str  # onnx-int8, torch-fp32, remote
    weights_sha256: str
    dimension: int
    normalised: bool
    max_tokens: int  # tokens of text the model reads, special tokens excluded

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.weights_sha256):
            raise ConfigError(
                f"embedding space of {self.model!r}: weights_sha256 must be 64 lowercase "
                f"hex digits, not {self.weights_sha256!r}",
                {"model": self.model, "weights_sha256": self.weights_sha256},
            )
        if self.dimension < 1 or self.max_tokens < 1:
            raise ConfigError(
                f"embedding space of {self.model!r}: dimension and max_tokens must be "
                f"positive, not {self.dimension} and {self.max_tokens}",
                {"model": self.model},
            )

    @property
    def id(self) -> str:
        """Stable text naming the space, e.g.
        ``all-minilm-l6-v2:onnx-int8:8199be6f699a:384:l2:254``."""
        name = self.model.rsplit("/", 1)[-1].lower()
        scale = "l2" if self.normalised else "raw"
        return (
            f"{name}:{self.variant}:{self.weights_sha256[:12]}:{self.dimension}:"
            f"{scale}:{self.max_tokens}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbeddingSpace:
        """The space a ``to_dict`` wrote; any missing or unknown key is an error."""
        if set(data) != set(SPACE_FIELDS):
            raise ConfigError(
                f"an embedding space has exactly the keys {', '.join(SPACE_FIELDS)}; "
                f"got {', '.join(sorted(data))}",
                {"keys": sorted(data)},
            )
        numbers = {key: data[key] for key in ("dimension", "max_tokens")}
        if not isinstance(data["normalised"], bool):
            raise ConfigError(
                f"an embedding space's normalised is true or false, not {data['normalised']!r}",
                {"normalised": data["normalised"]},
            )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()):
            raise ConfigError(
                f"an embedding space's dimension and max_tokens are integers, not {numbers}",
                {"dimension": data["dimension"], "max_tokens": data["max_tokens"]},
            )
        return cls(
            model=str(data["model"]),
            variant=str(data["variant"]),
            weights_sha256=str(data["weights_sha256"]),
            dimension=data["dimension"],
            normalised=data["normalised"],
            max_tokens=data["max_tokens"],
        )


class Embedder(Protocol):
    """Turns texts into vectors of one space. Queries and passages use the same call."""

    @property
    def space(self) -> EmbeddingSpace: ...

    @property
    def tokenizer(self) -> TokenCounter: ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """float32 rows, shape ``(len(texts), space.dimension)``, L2-normalised when the
        space says so; no texts give shape ``(0, dimension)``."""
        ...


def sha256_file(path: Path) -> str:
    """The SHA-256 of a weights file, read in blocks (the fp32 model is 87 MiB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def l2_normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to length 1; an all-zero row stays zero rather than becoming NaN."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)
