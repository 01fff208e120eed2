"""Screenshots of the documentation site, taken in Debian's Chromium: `make docs-screenshots`.

Builds the site strictly into a temporary folder, serves it on 127.0.0.1 with the standard
library's HTTP server, and writes the viewport of the home page and of the HTTP API
reference at 1280×900 to docs/images/. Playwright drives the system's chromium (apt package
`chromium`); it never downloads a browser of its own. A request the pages make to any other
origin fails the run: the site must work offline.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
VIEWPORT = {"width": 1280, "height": 900}
PAGES = {"site-home.png": "", "site-reference.png": "reference/http/"}
# Debian's launcher (/usr/bin/chromium) is a shell script; Playwright needs the binary.
CHROMIUM = ("/usr/lib/chromium/chromium", "chromium")


class Failed(Exception):
    """A step that cannot go on; the message says what to do."""


def chromium() -> str:
    for candidate in CHROMIUM:
        found = shutil.which(candidate)
        if found and not _is_script(Path(found)):
            return found
    raise Failed("Debian's chromium is not installed: apt-get install chromium")


def _is_script(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"#!"


def build(site: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(site)]
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise Failed(f"the site does not build strictly:\n{done.stderr}{done.stdout}")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _note(url: str, origin: str, elsewhere: list[str]) -> None:
    if not url.startswith(origin):
        elsewhere.append(url)


def shoot(site: Path, browser_path: str) -> list[Path]:
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - keel[docs]
    except ImportError:
        raise Failed("Playwright is not installed: pip install 'keel[docs]'") from None
    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    elsewhere: list[str] = []
    written: list[Path] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            page.on("request", lambda r: _note(r.url, origin, elsewhere))
            IMAGES.mkdir(parents=True, exist_ok=True)
            for name, path in PAGES.items():
                page.goto(origin + path, wait_until="networkidle")
                target = IMAGES / name
                page.screenshot(path=str(target))
                written.append(target)
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    if elsewhere:
        raise Failed(f"the site fetched from other origins: {sorted(set(elsewhere))}")
    return written


def main() -> int:
    try:
        browser_path = chromium()
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            build(site)
            for path in shoot(site, browser_path):
                print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size:,} bytes)")
    except Failed as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
