"""The style guard: ruff (declared in the test extras, configured in pyproject.toml) over the package, bench/ and
tests/, so the README's test command, and so CI, enforces line length, import order and unused names."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail('ruff is not installed: pip install -e ".[test]" brings it')
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "recbole_srma", "bench", "tests", "run_recbole_srma.py"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
