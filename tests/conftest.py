"""Shared fixtures.

The real benchmark files live in ``../shared/data`` beside the checkout (never in the repository). Tests that need
them use ``shared_data_dir`` and are skipped where that folder is absent, so the suite also passes on a machine
without it; CI has it, so there they run.
"""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _find_shared_data():
    env = os.environ.get("RECBOLE_SRMA_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if (path / "Toys_and_Games.txt").is_file():
            return path
    return None


SHARED_DATA = _find_shared_data()


@pytest.fixture
def shared_data_dir():
    if SHARED_DATA is None:
        pytest.skip("../shared/data (the real benchmark files) is not present on this machine")
    return SHARED_DATA


RUN_FOLDERS = ("log", "log_tensorboard", "saved", "dataset")


def _run_files_in_checkout():
    return {str(p.relative_to(REPO_ROOT)) for name in RUN_FOLDERS for p in (REPO_ROOT / name).glob("*/*")}


@pytest.fixture(scope="session", autouse=True)
def _checkout_stays_clean():
    """The suite writes only into temporary folders: nothing new under the checkout's log/, saved/, ... at the end."""
    before = _run_files_in_checkout()
    yield
    new = sorted(_run_files_in_checkout() - before)
    assert not new, f"the tests left files in the checkout: {new[:10]}"


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    # RecBole writes log/, log_tensorboard/ and saved/ under the working directory: keep them out of the checkout.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    # RecBole's Config parses every --key=value in sys.argv; pytest's own options must not leak into configs.
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
