"""docs/results.md is exactly what bench/render_results.py makes of the committed bench/results/: a change to the
renderer (or to the published numbers it loads) that alters the page shows here."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_committed_results_render_to_the_committed_page(tmp_path):
    pytest.importorskip("matplotlib")  # without it the page has no chart links, so it cannot equal the committed one
    if str(REPO / "bench") not in sys.path:  # the scripts import bench/common.py, as they do when run
        sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("bench_render_identity", REPO / "bench" / "render_results.py")
    renderer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(renderer)
    page = tmp_path / "results.md"  # charts go to tmp_path/img, not docs/img
    assert renderer.main(["--results-dir", str(REPO / "bench" / "results"), "--out", str(page)]) == 0
    assert page.read_bytes() == (REPO / "docs" / "results.md").read_bytes()
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == sorted(
        line.split("](img/")[1].rstrip(")") for line in page.read_text().splitlines() if "](img/" in line
    )
