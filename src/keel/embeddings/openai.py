"""A client of any OpenAI-compatible ``POST /v1/embeddings`` server (vLLM, llama.cpp,
Ollama, text-embeddings-inference…), on the standard library's HTTP client.

The server's dimension is declared, not discovered: a vector of any other length is refused
with an error, never stored, because it would belong to a different space.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from keel.embeddings.spaces import EmbeddingSpace, l2_normalise
from keel.embeddings.tokens import TokenCounter
from keel.errors import ModelError

TIMEOUT_S = 30.0
BATCH_SIZE = 64


class OpenAIEmbedder:
    """Embeds by calling ``{url}/v1/embeddings`` with ``model``; rows are L2-normalised
    here whatever the server returns, so the space is always normalised."""

    def __init__(
        self,
        url: str,
        model: str,
        dimension: int,
        tokenizer: TokenCounter,
        weights_sha256: str | None = None,
        api_key: str | None = None,
        timeout_s: float = TIMEOUT_S,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/v1/embeddings"
        self.model = model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self._api_key = api_key
        self._tokenizer = tokenizer
        self._space = EmbeddingSpace(
            model=model,
            variant="remote",
            weights_sha256=weights_sha256 or hashlib.sha256(model.encode()).hexdigest(),
            dimension=dimension,
            normalised=True,
            max_tokens=tokenizer.max_tokens,
        )

    @property
    def space(self) -> EmbeddingSpace:
        return self._space

    @property
    def tokenizer(self) -> TokenCounter:
        return self._tokenizer

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = [np.zeros((0, self._space.dimension), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            rows.append(self._call(list(texts[start : start + self.batch_size])))
        return l2_normalise(np.concatenate(rows))

    def _call(self, texts: list[str]) -> npt.NDArray[np.float32]:
        answer = self._post({"model": self.model, "input": texts})
        data = answer.get("data") if isinstance(answer, Mapping) else None
        if not isinstance(data, list) or not all(isinstance(i, Mapping) for i in data):
            raise self._error("answered without a 'data' list of embeddings")
        if len(data) != len(texts):
            raise self._error(f"answered {len(data)} embeddings for {len(texts)} texts")
        indexes = [item.get("index") for item in data]
        if not all(isinstance(i, int) for i in indexes) or sorted(indexes) != list(
            range(len(texts))
        ):
            raise self._error("answered embeddings whose 'index' values are not 0…n-1")
        ordered = sorted(data, key=lambda item: int(item["index"]))
        vectors = [item.get("embedding") for item in ordered]
        for vector in vectors:
            if not isinstance(vector, list) or len(vector) != self._space.dimension:
                got = len(vector) if isinstance(vector, list) else type(vector).__name__
                raise self._error(
                    f"answered a vector of dimension {got}, but the space declares "
                    f"{self._space.dimension}: check the model name and 'dimension'"
                )
        return np.array(vectors, dtype=np.float32)

    def _post(self, body: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(  # noqa: S310 - the operator's configured URL
            self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as failed:
            text = failed.read(500).decode("utf-8", "replace")
            raise self._error(f"answered HTTP {failed.code}: {text}") from None
        except urllib.error.URLError as failed:
            raise self._error(f"could not be reached: {failed.reason}") from None
        except (OSError, ValueError, http.client.HTTPException) as failed:
            # timeouts, resets, an answer that is not JSON
            raise self._error(f"failed: {failed}") from None

    def _error(self, what: str) -> ModelError:
        """A server that fails or answers the wrong shape yields no vectors: a ModelError
        (503), as for any model that fails."""
        return ModelError(
            f"the embedding server {self.endpoint} (model {self.model!r}) {what}",
            {"url": self.endpoint, "model": self.model},
        )
