"""Repository rules that CI enforces through the test suite: lint, format, docstrings."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src" / "modelload"


LINTED = [d for d in ("src", "tests", "examples", "benchmarks") if (REPO / d).is_dir()]


def _ruff() -> str:
    found = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    assert Path(found).exists(), "ruff is missing: pip install -e '.[dev]'"
    return found


def test_ruff_check_is_clean() -> None:
    result = subprocess.run(
        [_ruff(), "check", *LINTED],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run(
        [_ruff(), "format", "--check", *LINTED],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_module_has_a_docstring() -> None:
    missing = [p.name for p in SRC.glob("*.py") if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_public_api_is_exported_and_importable() -> None:
    import modelload

    for name in modelload.__all__:
        assert hasattr(modelload, name), name


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)\n(.+?)\n```", section, re.S)
    commands = [b for b in blocks if not b.lstrip().startswith("curl")]
    assert len(commands) == 2, commands
    assert all("\n" not in c.strip() for c in commands), "each command is one line"
    assert "<!-- test-command -->" in section
    ci = (REPO / ".ci" / "run").read_text()
    assert "test-command" in ci and "python3 -m venv" in ci


def test_changelog_has_unreleased_section() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog")
    assert "## [Unreleased]" in text
