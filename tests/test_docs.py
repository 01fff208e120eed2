"""The documentation site: its generated reference pages match the code, and it builds
strictly (no broken link, no missing page) with nothing fetched from elsewhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from keel.docs import generate
from tests.test_cli import all_commands

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "reference"


def test_generated_reference_pages_match_the_code() -> None:
    stale = [
        name
        for name, text in generate(REFERENCE).items()
        if (REFERENCE / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], f"stale: {stale}; run `python -m keel.docs` and commit the pages"


def test_the_site_builds_strictly_and_fetches_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
    built = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    fetched = set()
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        fetched.update(
            re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        )
    assert fetched == set()  # no CDN, no web fonts, no analytics
    http = (site / "reference" / "http" / "index.html").read_text(encoding="utf-8")
    explorer = re.search(
        r'<iframe class="swagger-ui-iframe"[^>]* src="(swagger-[0-9a-f]+\.html)"', http
    )
    assert explorer, "the HTTP page embeds Swagger UI"
    frame = (site / "reference" / "http" / explorer[1]).read_text(encoding="utf-8")
    assert (site / "assets" / "javascripts" / "swagger-ui-bundle.js").is_file()
    assert "swagger-ui-bundle.js" in frame and "openapi.json" in frame
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = all_commands()
    assert {"ledger verify", "deliveries list", "flow stop"} <= set(commands)
    assert [c for c in commands if f">keel {c}<" not in cli] == []  # a heading each


def test_every_error_code_but_programming_errors_has_an_http_status() -> None:
    """A request that meets any error but a programming error gets its own 4xx or 503,
    never a bare 500; and every error class says what it means (the errors page)."""
    from keel.api.errors import STATUS
    from keel.docs import _all_modules, _subclasses
    from keel.errors import KeelError

    _all_modules()
    classes = [c for c in [KeelError, *_subclasses(KeelError)] if c.__module__.startswith("keel")]
    without = {c.code for c in classes if c.code not in STATUS}  # type: ignore[attr-defined]
    assert without == {"nested_transaction", "refresh_in_transaction"}
    assert [c.__name__ for c in classes if not (c.__doc__ or "").strip()] == []
