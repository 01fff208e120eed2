"""Retrieval evaluation: the frozen BEIR-format set in tests/fixtures/knowledge/eval."""

from __future__ import annotations

import hashlib
from pathlib import Path

EVAL_SET = Path(__file__).parent / "fixtures" / "knowledge" / "eval"


def test_the_frozen_eval_set_matches_its_manifest() -> None:
    """The set was frozen before tuning: a changed file must be a deliberate new set."""
    lines = (EVAL_SET / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    manifest = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(manifest) == ["corpus.jsonl", "qrels/test.tsv", "queries.jsonl"]
    for name, digest in manifest.items():
        assert hashlib.sha256((EVAL_SET / name).read_bytes()).hexdigest() == digest, name
