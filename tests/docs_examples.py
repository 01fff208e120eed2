"""Run the code blocks of a documentation page, in order, against a fresh directory.

The tutorials and how-to guides are tested the way a reader uses them: every block of a page
runs, top to bottom, in one working directory of its own, with the ``keel`` of the running
environment first on ``PATH``. What a fenced block does depends on its info string:

- ``sh``, ``bash``, ``shell``: a bash script (``set -euo pipefail``). A ``cd`` or a
  variable carries over to the page's later blocks, as in the reader's terminal.
- ``console``: lines starting with ``$ `` are commands (a trailing ``\\`` continues one);
  the lines under a command are its output as the reader will see it (a continuation line
  may start with the ``> `` prompt). Each shown line must
  match a line of the real output, in order (spaces collapsed; ``…`` matches anything, and a
  line of its own ``…`` marks lines left out), so a page shows the lines that matter and may
  leave out the rest. A command must succeed
  unless the block is preceded by ``<!-- exit: N -->`` (then its last command must exit N).
- ``python``: run in one Python process per page, so names defined in one block are there
  in the next.
- any block with ``title="path"`` (``yaml``, ``json``, ``python``…): a file the reader
  writes; it is written to that path, relative to the current directory.
- ``text``: output or prose shown as is; never run.

A block that must reach something the suite provides shows the reader's value and says
what runs instead: ``<!-- replace: postgresql+psycopg://keel@db.example.com/keel =>
KEEL_DOCS_POSTGRES_URL -->`` runs it with that variable's value (the suite gives a page that
names ``KEEL_DOCS_POSTGRES_URL`` a fresh PostgreSQL database, and skips it where there is
none). Markers may be stacked on the lines above a fence.

Anything else must be preceded by ``<!-- not-runnable: why -->``, and so may any block whose
effect cannot happen in a test (it installs software, say). The suite lists those blocks,
and there may be at most ten in the whole site. Processes a block leaves running (``keel
serve &``) are stopped when the page ends.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

SHELL = frozenset({"sh", "bash", "shell"})
SHOWN = frozenset({"text", "txt", ""})
TIMEOUT_S = 300
NOT_RUNNABLE = re.compile(r"<!--\s*not-runnable:\s*(.*?)\s*-->")
EXIT = re.compile(r"<!--\s*exit:\s*(\d+)\s*-->")
REPLACE = re.compile(r"<!--\s*replace:\s*(.+?)\s*=>\s*([A-Z0-9_]+)\s*-->")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it is, its language and attributes, its text."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: str | None
    text: str
    not_runnable: str | None  # the reason, when marked
    exit_code: int
    substitutions: tuple[tuple[str, str], ...] = ()  # (text shown, variable whose value runs)

    @property
    def where(self) -> str:
        return f"{self.page.as_posix()}:{self.line}"


def blocks(page: Path, root: Path) -> list[Block]:
    """The fenced blocks of ``page``, with the marker comment just above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        marker = _markers(lines, i)
        reason = NOT_RUNNABLE.search(marker)
        code = EXIT.search(marker)
        title = TITLE.search(info)
        found.append(
            Block(
                page=page.relative_to(root),
                line=i + 1,
                language=info.split()[0].lstrip("{.").rstrip("}") if info else "",
                title=title[1] if title else None,
                text="\n".join(body) + "\n",
                not_runnable=reason[1] if reason else None,
                exit_code=int(code[1]) if code else 0,
                substitutions=tuple((m[1], m[2]) for m in REPLACE.finditer(marker)),
            )
        )
        i = j + 1
    return found


def _markers(lines: list[str], i: int) -> str:
    """The HTML comments on the lines just above line ``i`` (blank lines between allowed)."""
    found: list[str] = []
    for line in reversed(lines[:i]):
        if line.strip().startswith("<!--"):
            found.append(line)
        elif line.strip():
            break
    return "\n".join(found)


def unrunnable(block: Block) -> str | None:
    """Why ``block`` cannot run as it stands, or None when it can (or is only shown)."""
    if block.not_runnable is not None or block.title or block.language in SHOWN:
        return None
    if block.language in SHELL | {"console", "python"}:
        return None
    return f"a `{block.language}` block is neither run, a file (title=) nor marked not-runnable"


@dataclass
class Page:
    """The state a page's blocks share: a directory, the environment, a Python process."""

    home: Path
    env: dict[str, str]
    cwd: Path
    groups: list[int] = field(default_factory=list)
    python: subprocess.Popen[str] | None = None

    def run(self, block: Block) -> None:
        """Run one block, or raise AssertionError naming it and what went wrong."""
        if block.not_runnable is not None or (block.language in SHOWN and not block.title):
            return
        for shown, variable in block.substitutions:
            _expect(variable in self.env, block, f"${variable} is not set for this page", "")
            block = replace(block, text=block.text.replace(shown, self.env[variable]))
        if block.title:
            target = self.cwd / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
        elif block.language in SHELL:
            code, output = self.shell(block.text)
            _expect(code == block.exit_code, block, f"exit {code}", output)
        elif block.language == "console":
            self.console(block)
        elif block.language == "python":
            self.python_block(block)
        else:
            raise AssertionError(f"{block.where}: {unrunnable(block)}")

    def shell(self, script: str) -> tuple[int, str]:
        """Run a bash script in the page's directory and environment; keep its cd/exports."""
        state = self.home / ".state"
        wrapped = (
            "set -euo pipefail -o allexport\n"  # a variable set in one block is there in the next
            f"cd {shlex.quote(str(self.cwd))}\n"
            f"{script}\n"
            f"pwd > {shlex.quote(str(state / 'cwd'))}\n"
            f"export -p > {shlex.quote(str(state / 'env'))}\n"
        )
        state.mkdir(exist_ok=True)
        log = state / "output"
        with log.open("w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                ["bash", "-c", wrapped],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,  # a file, not a pipe: a server left running must not hold us
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.groups.append(proc.pid)
            try:
                code = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill(proc.pid)
                code = -1
        output = log.read_text(encoding="utf-8", errors="replace")
        if code == 0:
            self.cwd = Path((state / "cwd").read_text(encoding="utf-8").strip())
            self.env = _exported(state / "env", self.env)
        return code, output

    def console(self, block: Block) -> None:
        commands = list(_commands(block.text))
        for n, (command, shown) in enumerate(commands):
            code, output = self.shell(command)
            wanted = block.exit_code if n == len(commands) - 1 else 0
            _expect(code == wanted, block, f"`{command}` exited {code}", output)
            missing = _unmatched(shown, output)
            _expect(missing is None, block, f"`{command}` did not print {missing!r}", output)

    def python_block(self, block: Block) -> None:
        if self.python is None:
            self.python = subprocess.Popen(
                [sys.executable, "-u", "-c", _DRIVER],
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self.groups.append(self.python.pid)
        assert self.python.stdin is not None and self.python.stdout is not None
        self.python.stdin.write(json.dumps({"code": block.text, "cwd": str(self.cwd)}) + "\n")
        self.python.stdin.flush()
        reply = self.python.stdout.readline()
        _expect(bool(reply), block, "the Python process died", "")
        answer = json.loads(reply)
        _expect(
            answer["error"] is None, block, "raised", answer["output"] + (answer["error"] or "")
        )

    def close(self) -> None:
        """Stop everything the page started (servers it left running included)."""
        for group in self.groups:
            _kill(group)
        if self.python is not None:
            self.python.communicate(timeout=30)  # closes its pipes and reaps it


def run_page(page: Path, root: Path, given: dict[str, str] | None = None) -> None:
    """Run every block of ``page`` in a fresh directory; AssertionError at the first failure.

    ``given`` adds to the page's environment what the suite provides (a database, say)."""
    with tempfile.TemporaryDirectory(prefix="keel-docs-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "PYTEST_"))}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["HOME"] = str(home)
        env["NO_COLOR"] = "1"
        env["COLUMNS"] = "160"
        env.update(given or {})
        state = Page(home=home, env=env, cwd=home)
        try:
            for block in blocks(page, root):
                state.run(block)
        finally:
            state.close()


def _commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each ``$ `` line of a console block."""
    command: list[str] = []
    shown: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing:
            command.append(line[2:] if line.startswith("> ") else line)
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            if command:
                yield "\n".join(command), shown
            command, shown = [line[2:]], []
            continuing = line.endswith("\\")
        elif command:
            shown.append(line)
    if command:
        yield "\n".join(command), shown


def _unmatched(shown: list[str], output: str) -> str | None:
    """The first shown line that no later output line matches, or None when all match."""
    actual = [" ".join(line.split()) for line in output.splitlines()]
    at = 0
    for line in shown:
        want = " ".join(line.split())
        if want in ("", "…"):  # a line of its own "…" stands for lines left out
            continue
        pattern = re.compile(".*".join(re.escape(part) for part in want.split("…")) + r"\Z")
        while at < len(actual) and not pattern.match(actual[at]):
            at += 1
        if at == len(actual):
            return line
        at += 1
    return None


def _exported(path: Path, before: dict[str, str]) -> dict[str, str]:
    """The environment after a block: what ``export -p`` printed."""
    env = dict(before)
    script = f"source {shlex.quote(str(path))}; {sys.executable} -c " + shlex.quote(
        "import json, os; print(json.dumps(dict(os.environ)))"
    )
    done = subprocess.run(
        ["bash", "-c", script], env=before, capture_output=True, text=True, check=True
    )
    env.update(json.loads(done.stdout))
    return env


def _expect(ok: bool, block: Block, what: str, output: str) -> None:
    if not ok:
        raise AssertionError(f"{block.where}: {what}\n--- output ---\n{output[-4000:]}")


def _kill(group: int) -> None:
    try:
        os.killpg(group, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return


# The page's Python process: each request is {"code", "cwd"}; each reply {"output", "error"}.
_DRIVER = r"""
import contextlib, io, json, os, sys, traceback
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    request = json.loads(line)
    os.chdir(request["cwd"])
    sys.path.insert(0, request["cwd"])
    out = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(request["code"], "<docs>", "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    sys.stdout.write(json.dumps({"output": out.getvalue(), "error": error}) + "\n")
    sys.stdout.flush()
"""
