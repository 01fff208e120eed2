"""Build an embedder from a small mapping, as a collection's settings name it.

    {"kind": "onnx-int8"}                                    # the default
    {"kind": "onnx-int8", "max_tokens": 128}                 # smaller chunks: another space
    {"kind": "torch"}                                        # needs keel[embeddings-torch]
    {"kind": "openai", "url": "http://gpu-1:8000", "model": "bge-small",
     "dimension": 384, "weights_sha256": "…", "timeout_s": 30}

The default is all-MiniLM-L6-v2 as int8 ONNX on onnxruntime, chosen by measurement with
its cost in view (bench/embed.py; bench/RESULTS.md, 2026-11-30). It is not the faster
variant on this project's 2-core machine: 0.69 times the passages per second of
sentence-transformers fp32 and 0.84 times the short texts. It is the one that needs no
torch: about 700 MB less to install, and no risk of a CUDA build. Its vectors agree with
fp32 to a mean cosine of 0.9994 on passages. Queries are short, so the difference is paid
at ingest; a deployment that ingests large corpora can choose ``{"kind": "torch"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.embeddings.onnx import OnnxEmbedder
from keel.embeddings.openai import TIMEOUT_S, OpenAIEmbedder
from keel.embeddings.spaces import Embedder
from keel.embeddings.tokenizer import HuggingFaceTokenizer
from keel.errors import ConfigError

KINDS = ("onnx-int8", "torch", "openai")
DEFAULT = {"kind": "onnx-int8"}
_KEYS = {
    "onnx-int8": {"kind", "max_tokens"},
    "torch": {"kind"},
    "openai": {"kind", "url", "model", "dimension", "weights_sha256", "timeout_s"},
}
_REQUIRED = {"openai": {"url", "model", "dimension"}}


def default_embedder() -> Embedder:
    """The embedded default: int8 ONNX all-MiniLM-L6-v2 (see the module docstring)."""
    return embedder_for(DEFAULT)


def embedder_for(config: Mapping[str, Any]) -> Embedder:
    """The embedder ``config`` names; an unknown kind, key or a missing key is a
    ``ConfigError`` naming it."""
    kind = config.get("kind")
    if kind not in _KEYS:
        raise ConfigError(
            f"embedder kind must be one of {', '.join(KINDS)}, not {kind!r}", {"kind": kind}
        )
    unknown = sorted(set(config) - _KEYS[kind])
    missing = sorted(_REQUIRED.get(kind, set()) - set(config))
    if unknown or missing:
        raise ConfigError(
            f"embedder {kind!r}: "
            + "; ".join(
                part
                for part in (
                    f"unknown keys {', '.join(unknown)}" if unknown else "",
                    f"missing keys {', '.join(missing)}" if missing else "",
                )
                if part
            ),
            {"kind": kind, "unknown": unknown, "missing": missing},
        )
    if kind == "onnx-int8":
        if "max_tokens" in config:
            return OnnxEmbedder(tokenizer=HuggingFaceTokenizer(max_tokens=config["max_tokens"]))
        return OnnxEmbedder()
    if kind == "torch":
        from keel.embeddings.torch import SentenceTransformerEmbedder  # noqa: PLC0415 - pulls torch only when asked for

        return SentenceTransformerEmbedder()
    dimension = config["dimension"]
    if not isinstance(dimension, int) or isinstance(dimension, bool) or dimension < 1:
        raise ConfigError(
            f"embedder 'openai': dimension must be a positive integer, not {dimension!r}",
            {"kind": kind, "dimension": dimension},
        )
    return OpenAIEmbedder(
        url=str(config["url"]),
        model=str(config["model"]),
        dimension=dimension,
        tokenizer=HuggingFaceTokenizer(),
        weights_sha256=config.get("weights_sha256"),
        timeout_s=float(config.get("timeout_s", TIMEOUT_S)),
    )
