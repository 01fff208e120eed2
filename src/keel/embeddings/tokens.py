"""Tokens as an embedding model counts them: chunk sizes are measured in these."""

from __future__ import annotations

from typing import Protocol


class TokenCounter(Protocol):
    """The tokenizer of an embedding model, as chunking needs it."""

    max_tokens: int  # the most tokens of text the model reads (special tokens excluded)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The character span ``(start, end)`` in ``text`` of each of its tokens, in order,
        without the model's special tokens."""
        ...
