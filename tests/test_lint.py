"""ruff and mypy over the package are part of the suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_ruff_clean() -> None:
    p = subprocess.run([_tool("ruff"), "check", "ashjobs", "tests", "bench"], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy_clean() -> None:
    p = subprocess.run([_tool("mypy"), "ashjobs"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cli_imports_no_heavy_modules_for_version() -> None:
    code = ("import sys, ashjobs.cli as c\n"
            "try:\n    c.main(['--version'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('rich', 'zeroconf', 'msgpack', 'prometheus_client', 'sqlite3', 'cronsim')"
            " if m in sys.modules]\nprint('heavy=' + ','.join(heavy))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.stdout.strip().splitlines()[-1] == "heavy=", p.stdout
