"""Every tutorial and how-to guide runs, block by block, against a fresh directory.

How a block runs is in ``tests/docs_examples.py``. A block that cannot run is marked
``<!-- not-runnable: why -->``; each shows here as a skipped test with its reason (``pytest
-rs``), and there are at most ten in the whole site.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres_database
from tests.docs_examples import blocks, run_page, unrunnable

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for part in ("tutorials", "how-to") for p in (DOCS / part).rglob("*.md"))
EVERY_PAGE = sorted(DOCS.rglob("*.md"))
MAX_NOT_RUNNABLE = 10


def _marked() -> list[tuple[str, str]]:
    return [
        (b.where, b.not_runnable)
        for page in EVERY_PAGE
        for b in blocks(page, ROOT)
        if b.not_runnable is not None
    ]


POSTGRES = "KEEL_DOCS_POSTGRES_URL"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(DOCS).as_posix() for p in PAGES])
def test_the_page_runs_end_to_end(page: Path) -> None:
    if POSTGRES not in page.read_text(encoding="utf-8"):
        run_page(page, ROOT)
        return
    with fresh_postgres_database() as url:
        run_page(page, ROOT, {POSTGRES: url})


@pytest.mark.parametrize(("where", "reason"), _marked())
def test_a_block_marked_not_runnable_says_why(where: str, reason: str) -> None:
    assert reason.strip(), f"{where}: say why the block cannot run"
    pytest.skip(f"{where} is not run: {reason}")


def test_at_most_ten_blocks_are_not_run_and_every_block_is_accounted_for() -> None:
    marked = _marked()
    assert len(marked) <= MAX_NOT_RUNNABLE, marked
    stray = [
        f"{b.where}: {why}"
        for page in PAGES
        for b in blocks(page, ROOT)
        if (why := unrunnable(b)) is not None
    ]
    assert stray == []


def _page(tmp_path: Path, text: str) -> Path:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_the_runner_carries_state_and_checks_what_a_page_shows(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        """A page.

```yaml title="project/settings.yaml"
name: shown
```

```bash
cd project
GREETING=hello
```

```console
$ cat settings.yaml
name: shown
$ echo "$GREETING from $(basename "$PWD")" && \\
>   keel --help
hello from project
Usage: keel …
```

<!-- exit: 3 -->
<!-- replace: /the/shown/path => REAL -->
```console
$ test "/the/shown/path" = "/the/real/path" || exit 4
$ exit 3
```

```python
import pathlib
names = [pathlib.Path("settings.yaml").read_text().split()[1]]
```

```python
assert names == ["shown"], names
```

```text
anything
```
""",
    )
    run_page(page, tmp_path, {"REAL": "/the/real/path"})


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("```bash\nfalse\n```\n", "exit 1"),
        ("```console\n$ echo one\ntwo\n```\n", "did not print 'two'"),
        ("```console\n$ echo a; echo b\nb\na\n```\n", "did not print 'a'"),
        ("```console\n$ keel no-such-command\n```\n", "exited 2"),
        ("```python\nraise ValueError('broken example')\n```\n", "broken example"),
        ("```python\nx = 1\n```\n\n```python\nassert y\n```\n", "NameError"),
        ("<!-- replace: a => NOT_GIVEN -->\n```bash\necho a\n```\n", "NOT_GIVEN is not set"),
    ],
)
def test_the_runner_fails_a_page_whose_example_is_wrong(
    tmp_path: Path, body: str, complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint) as failed:
        run_page(_page(tmp_path, body), tmp_path)
    assert str(failed.value).startswith("page.md:")  # the block is named


def test_a_block_of_another_language_must_be_run_written_or_marked(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        '```json\n{"a": 1}\n```\n\n```json title="a.json"\n{}\n```\n\n'
        "<!-- not-runnable: needs a real mail server -->\n```bash\nsendmail\n```\n",
    )
    found = blocks(page, tmp_path)
    assert [unrunnable(b) is None for b in found] == [False, True, True]
    assert found[2].not_runnable == "needs a real mail server"


def test_a_server_a_page_leaves_running_is_stopped(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    page = _page(tmp_path, f"```bash\nsleep 600 &\necho $! > {pidfile}\n```\n")
    run_page(page, tmp_path)
    pid = int(pidfile.read_text())
    import time

    for _ in range(100):  # the signal is delivered at once; the process table may lag
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the background process is still running")
