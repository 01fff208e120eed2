"""Embedding throughput and agreement: ONNX int8 against sentence-transformers fp32.

    make bench-embed      # or: .venv/bin/python bench/embed.py [--passages 64 --short 256]

Texts are cut from Keel's own documentation (docs/**/*.md, read offline): "short" texts are
the first 10 tokens of its paragraphs, "passages" are 240-token windows of each page, both
counted with all-MiniLM-L6-v2's tokenizer. Each variant embeds each set best-of-3 with the
same batch size. Agreement is the cosine of each variant's vector to the fp32
sentence-transformers vector of the same passage (mean and minimum). sentence-transformers
runs only where ``keel[embeddings-torch]`` is installed; its row says so otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from keel.embeddings.onnx import OnnxEmbedder
from keel.embeddings.spaces import Embedder
from keel.embeddings.tokenizer import HuggingFaceTokenizer
from keel.errors import MissingExtraError

DOCS = Path(__file__).resolve().parent.parent / "docs"
BATCH_SIZE = 32


def texts_from_docs(tokenizer: HuggingFaceTokenizer, tokens: int, limit: int) -> list[str]:
    """Windows of ``tokens`` tokens from the docs' paragraphs (short) or pages (passages)."""
    found: list[str] = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        parts = [p for p in text.split("\n\n") if p.strip()] if tokens < 50 else [text]
        for part in parts:
            spans = tokenizer.spans(part)
            for start in range(0, len(spans) - tokens + 1, tokens):
                window = spans[start : start + tokens]
                found.append(part[window[0][0] : window[-1][1]])
                if tokens < 50:
                    break  # one short text per paragraph
    if len(found) < limit:
        raise SystemExit(f"only {len(found)} texts of {tokens} tokens in {DOCS}")
    step = len(found) / limit  # spread the sample over the whole site
    return [found[int(i * step)] for i in range(limit)]


def best_rate(embed: Callable[[Sequence[str]], object], texts: list[str], runs: int) -> float:
    embed(texts[:BATCH_SIZE])  # warm-up: first-call allocations
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        embed(texts)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=256, help="short texts (~10 tokens)")
    parser.add_argument("--passages", type=int, default=64, help="240-token passages")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tokenizer = HuggingFaceTokenizer()
    short = texts_from_docs(tokenizer, 10, args.short)
    passages = texts_from_docs(tokenizer, 240, args.passages)
    variants: dict[str, Embedder] = {"onnx-int8": OnnxEmbedder(batch_size=BATCH_SIZE)}
    try:
        from keel.embeddings.torch import SentenceTransformerEmbedder

        variants["torch-fp32"] = SentenceTransformerEmbedder(batch_size=BATCH_SIZE)
    except MissingExtraError as missing:
        print(f"sentence-transformers not measured: {missing.message}")
    load = os.getloadavg()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; batch size {BATCH_SIZE}; best of "
        f"{args.runs}; {len(short)} short texts, {len(passages)} passages of 240 tokens "
        "from docs/"
    )
    rates = {
        name: (best_rate(e.embed, short, args.runs), best_rate(e.embed, passages, args.runs))
        for name, e in variants.items()
    }
    reference = variants["torch-fp32"].embed(passages) if "torch-fp32" in variants else None
    print(
        f"{'variant':<12} {'short/s':>9} {'× st':>6} {'passages/s':>11} {'× st':>6} "
        f"{'mean cos':>9} {'min cos':>8}  space"
    )
    st = rates.get("torch-fp32")
    for name, embedder in variants.items():
        short_rate, passage_rate = rates[name]
        ratio_short = f"{short_rate / st[0]:.2f}" if st else "—"
        ratio_passage = f"{passage_rate / st[1]:.2f}" if st else "—"
        if reference is not None:
            agree = cosines(embedder.embed(passages), reference)
            mean, low = f"{agree.mean():.5f}", f"{agree.min():.5f}"
        else:
            mean = low = "—"
        print(
            f"{name:<12} {short_rate:>9.1f} {ratio_short:>6} {passage_rate:>11.1f} "
            f"{ratio_passage:>6} {mean:>9} {low:>8}  {embedder.space.id}"
        )


if __name__ == "__main__":
    sys.exit(main())
