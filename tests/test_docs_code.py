"""Every code block of README.md and docs/*.rst runs as written.

The blocks of a page run in order, as a reader pastes them: the Python blocks in
one namespace (a block with ``>>>`` prompts runs as a doctest in it), the shell
blocks with bash, all in one fresh folder per page in which ``examples``,
``benchmarks`` and ``docs`` point into the repository. So a page defines or
imports every name it uses, and any set-up a block needs is on the page.

Languages: ``python``; ``bash`` (the block is a script); ``console`` (the ``$``
lines are commands, the other lines their output); ``json`` (must parse);
``text`` (not run: layouts, formulas, output). Every block names its language:
a bare ``::`` literal block, or a Markdown fence without one, is an error.

A block is not run when the line before it (an RST comment, or an HTML comment in
Markdown) says ``doc-test: skip (why)``; the page itself says what the block
needs (a VOC copy, a GPU, the package index, minutes of training).
``literalinclude`` of a whole Python file runs the file; of a marked part, the
markers must exist (the drop-in recipes run in ``tests/test_dropin.py``).
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import seedkit
from seedkit import kernels
from seedkit.checks import check_mode

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
RUN = {"python", "bash", "console", "json", "text"}
SKIP = re.compile(r"doc-test:\s*skip\s*\((?P<why>.+)\)")


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    skip: str | None = None  # the reason, when the page marks the block as not run
    options: dict[str, str] | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line} ({self.language})"


def _dedent(lines: list[str]) -> str:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return "\n".join(x[indent:] for x in lines) + "\n"


def rst_blocks(path: Path) -> list[Block]:
    """Code blocks, literal (``::``) blocks and literalincludes of an RST page."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    previous = ""  # the last non-blank line before the current one
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = re.match(
            r"^(\s*)\.\. (code-block|code|sourcecode|literalinclude)::\s*(.*)$", line
        )
        literal = (
            directive is None
            and line.rstrip().endswith("::")
            and not line.lstrip().startswith("..")
        )
        if directive or literal:
            indent = len(line) - len(line.lstrip())
            j = i + 1
            options: dict[str, str] = {}
            while directive and j < len(lines) and re.match(r"^\s+:[\w-]+:", lines[j]):
                key, _, value = lines[j].strip()[1:].partition(":")
                options[key] = value.strip()
                j += 1
            body = []
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
            ):
                body.append(lines[j])
                j += 1
            skip = SKIP.search(previous)
            if directive and directive.group(2) == "literalinclude":
                language, code = "literalinclude", directive.group(3).strip()
            elif directive:
                language, code = directive.group(3).strip() or "<none>", _dedent(body)
            else:
                language, code = "<literal ::>", _dedent(body)
            if code.strip():
                blocks.append(
                    Block(path.name, i + 1, language, code, skip and skip.group("why"), options)
                )
            i = j
            continue
        if line.strip():
            previous = line
        i += 1
    return blocks


def markdown_blocks(path: Path) -> list[Block]:
    """Fenced blocks of a Markdown page; an indented (4-space) code block is an error."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    previous, i = "", 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\S*)\s*$", line)
        if fence:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            skip = SKIP.search(previous)
            why = skip and skip.group("why")
            language = fence.group(1) or "<none>"
            blocks.append(Block(path.name, i + 1, language, _dedent(lines[i + 1 : j]), why))
            i, previous = j + 1, ""
            continue
        indented = line.startswith("    ") and line.strip()
        after_paragraph = not lines[i - 1].strip() and not re.match(r"^\s*([-*]|\d+\.)\s", previous)
        if indented and after_paragraph and not previous.startswith(" "):
            blocks.append(Block(path.name, i + 1, "<indented>", line.strip()))
        if line.strip():
            previous = line
        i += 1
    return blocks


def page_blocks(path: Path) -> list[Block]:
    return markdown_blocks(path) if path.suffix == ".md" else rst_blocks(path)


def _console_commands(code: str) -> str:
    """The ``$`` commands of a console block (with their ``\\`` continuation lines)."""
    commands, continuing = [], False
    for line in code.splitlines():
        if line.startswith("$ ") or continuing:
            commands.append(line[2:] if line.startswith("$ ") and not continuing else line)
            continuing = line.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def _shell_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _run_python(block: Block, namespace: dict) -> None:
    if re.search(r"^>>> ", block.code, re.MULTILINE):
        test = doctest.DocTestParser().get_doctest(
            block.code, namespace, block.where, block.page, block.line
        )
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        runner.run(test, clear_globs=False)
        assert runner.failures == 0, f"{block.where}: doctest failed (output above)"
        return
    exec(compile(block.code, block.where, "exec"), namespace)


def _run_shell(block: Block, script: str, cwd: Path) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=_shell_env(),
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{block.where} exited {result.returncode}:\n{script}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def _check_literalinclude(block: Block, page: Path, cwd: Path) -> None:
    target = (page.parent / block.code).resolve()
    assert target.is_file(), f"{block.where}: {block.code} does not exist"
    text = target.read_text()
    marks = [block.options.get(k) for k in ("start-after", "end-before") if block.options]
    marks = [m for m in marks if m]
    for mark in marks:
        assert mark in text, f"{block.where}: marker {mark!r} is not in {block.code}"
    if target.suffix == ".py" and not marks and target.parent.name == "examples":
        _run_shell(block, f"python {target}", cwd)
    elif target.suffix == ".py" and not marks:
        pytest.fail(f"{block.where}: a whole Python file outside examples/ is shown; run it here")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_names_its_language(page):
    unknown = [b.where for b in page_blocks(page) if b.language not in RUN | {"literalinclude"}]
    assert not unknown, f"blocks without a known language ({sorted(RUN)}): {unknown}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_code_runs_in_order(page, tmp_path, monkeypatch):
    for link in ("examples", "benchmarks", "docs"):
        (tmp_path / link).symlink_to(ROOT / link)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": f"doc_{page.stem}"}
    # A page may switch the value checks or the kernel backend, in a block (context-local)
    # or for the process (set_input_checks / set_backend): both come back afterwards, so
    # the tests that run after this one see the state they started with.
    backend, mode = kernels.get_backend(), check_mode()
    try:
        with seedkit.input_checks(True), kernels.use_backend(backend):
            for block in page_blocks(page):
                _run_block(block, page, namespace, tmp_path)
    finally:
        kernels.set_backend(backend)
        seedkit.set_input_checks(False if mode is None else mode)


def _run_block(block: Block, page: Path, namespace: dict, tmp_path: Path) -> None:
    if block.skip or block.language == "text":
        return
    if block.language == "python":
        _run_python(block, namespace)
    elif block.language == "bash":
        _run_shell(block, block.code, tmp_path)
    elif block.language == "console":
        _run_shell(block, _console_commands(block.code), tmp_path)
    elif block.language == "json":
        json.loads(block.code)
    elif block.language == "literalinclude":
        _check_literalinclude(block, page, tmp_path)


def test_skipped_blocks_say_why_and_are_few():
    skipped = [(b.where, b.skip) for p in PAGES for b in page_blocks(p) if b.skip]
    assert all(len(why) >= 10 for _, why in skipped), skipped
    runnable = [
        b for p in PAGES for b in page_blocks(p) if b.language in {"python", "bash", "console"}
    ]
    assert len(skipped) < len(runnable) / 2, skipped
