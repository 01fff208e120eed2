"""Shared fixtures: a real example project on disk, a fresh copy (and SQLite file) per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.engine import Engine, open_engine
from keel.scaffold import init_project


@pytest.fixture(scope="session")
def template_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The credit-limit example, with its trained model, written once per session."""
    return init_project(tmp_path_factory.mktemp("template") / "credit")


@pytest.fixture
def project(template_project: Path, tmp_path: Path) -> Path:
    target = tmp_path / "project"
    shutil.copytree(template_project, target)
    return target


@pytest.fixture
def engine(project: Path) -> Iterator[Engine]:
    with open_engine(project, environ={}) as eng:
        yield eng


LOW_RISK = {
    "annual_income": 85000.0,
    "debt_to_income": 0.08,
    "credit_utilization": 0.1,
    "delinquencies_2y": 0,
    "credit_history_years": 12.0,
    "employment_years": 9.0,
    "requested_limit": 6000.0,
    "region": "north",
}


@pytest.fixture
def low_risk() -> dict[str, object]:
    return dict(LOW_RISK)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")
