"""The ``seedkit`` command as a whole: help without torch, a missing command, ``python -m``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seedkit.cli import COMMAND_MODULES, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["eval-seeds", "viz", "make-cls-labels", "make-demo-data"]


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_every_command_module_is_listed():
    assert len(COMMAND_MODULES) == len(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_does_not_import_torch(command):
    """Argument parsing and --help import neither torch nor numpy (the help answers at once)."""
    argv = ["--help"] if command is None else [command, "--help"]
    result = _python(
        "import sys\n"
        "from seedkit.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'timm', 'PIL') if m in sys.modules)\n"
        "print('EXIT', code, 'HEAVY', heavy, file=sys.stderr)\n"
    )
    assert "EXIT 0 HEAVY []" in result.stderr, result.stderr[-2000:]
    assert "usage: seedkit" in result.stdout


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: seedkit")
    assert "error: a command is required (one of eval-seeds, viz," in captured.err


def test_python_dash_m_seedkit_is_the_seedkit_command(tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    run = [sys.executable, "-m", "seedkit"]
    result = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.startswith("seedkit ")
    result = subprocess.run(run, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "a command is required" in result.stderr
    result = subprocess.run(
        [*run, "make-demo-data", str(tmp_path / "demo"), "--num-images", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()
