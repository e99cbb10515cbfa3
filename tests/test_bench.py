"""bench/run_models.py and bench/render_results.py end to end on the tiny dataset (one epoch, one seed)."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "bench" / "run_models.py"
RENDERER = REPO / "bench" / "render_results.py"
METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
TINY_SETTINGS = [
    "--set", "hidden_size=16",
    "--set", "inner_size=32",
    "--set", "MAX_ITEM_LIST_LENGTH=20",
    "--set", "train_batch_size=64",
    "--epochs", "1",
    "--threads", "1",  # on a busy 2-core machine two torch threads per run can be 50x slower
]


def _run(script, args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One benchmark invocation: SASRec and CL4SRec, seed 2020, on a (smaller) tiny dataset."""
    root = tmp_path_factory.mktemp("bench")
    data = make_tiny_dataset(root, n_users=150)
    results = root / "results" / "tiny.json"
    base = [
        "--dataset", data["dataset"],
        "--data-path", data["data_path"],
        "--results", str(results),
        "--runs-dir", str(root / "runs"),
        *TINY_SETTINGS,
    ]
    out = _run(RUNNER, [*base, "--models", "SASRec", "CL4SRec", "--seeds", "2020"], root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"root": root, "results": results, "base": base, "stdout": out.stdout, "dataset": data["dataset"]}


def test_records_hold_metrics_timing_and_machine(bench):
    records = json.loads(bench["results"].read_text())
    assert [r["model"] for r in records] == ["SASRec", "CL4SRec"]
    for r in records:
        assert r["status"] == "ok", r.get("error_tail")
        assert r["dataset"] == bench["dataset"] and r["seed"] == 2020 and r["tag"] is None
        assert r["overrides"] == {
            "hidden_size": 16, "inner_size": 32, "MAX_ITEM_LIST_LENGTH": 20, "train_batch_size": 64, "epochs": 1
        }
        assert r["epochs"] == 1 and r["epochs_trained"] == 1 and r["stopped_early"] is False
        for split in ("valid", "test"):
            assert set(r[split]) == set(METRICS)
            assert all(isinstance(v, float) and 0 <= v <= 1 for v in r[split].values())
        assert r["wall_time_s"] > 0 and r["peak_rss_mb"] > 10
        machine = r["machine"]
        for key in ("hostname", "platform", "cpu_model", "cpu_count", "torch", "device"):
            assert machine[key], key
        assert machine["device"] in ("cpu", "cuda") and machine["torch_threads"] == 1
        assert r["command"] and "run_models.py" in r["command"]
        assert r["equivalent_command"].startswith("python run_recbole_srma.py --model=" + r["model"])
        assert r["started_utc"].endswith("+00:00")
        assert "git_commit" in r
        log = Path(r["log"])
        assert log.is_file() and log.name == f"{r['model']}-seed2020.log"
        assert "BENCH_RESULT" in log.read_text()
    assert "SASRec" in bench["stdout"] and "CL4SRec" in bench["stdout"]


def test_second_invocation_skips_finished_runs(bench):
    before = bench["results"].read_text()
    logs = {p: p.stat().st_mtime_ns for p in (bench["root"] / "runs").rglob("*.log")}
    start = time.monotonic()
    out = _run(RUNNER, [*bench["base"], "--models", "SASRec", "CL4SRec", "--seeds", "2020"], bench["root"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert time.monotonic() - start < 20
    assert out.stdout.count("already done, skipped") == 2
    assert bench["results"].read_text() == before
    assert {p: p.stat().st_mtime_ns for p in logs} == logs


def test_time_budget_records_a_timeout(bench):
    out = _run(
        RUNNER,
        [*bench["base"], "--models", "SASRec", "--seeds", "2020", "--tag", "budget", "--time-budget-min", "0.001"],
        bench["root"],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = json.loads(bench["results"].read_text())
    timeout = [r for r in records if r.get("tag") == "budget"]
    assert len(timeout) == 1 and len([r for r in records if r.get("tag") is None]) == 2
    r = timeout[0]
    assert r["status"] == "timeout" and r["test"] is None and r["valid"] is None
    assert r["time_budget_s"] == pytest.approx(0.06)
    assert Path(r["log"]).name == "SASRec-seed2020-budget.log"


def test_config_files_are_used_and_part_of_the_identity(bench):
    extra = bench["root"] / "extra.yaml"
    extra.write_text("hidden_dropout_prob: 0.3\n")
    args = [*bench["base"], "--models", "SASRec", "--config-files", str(extra), "--tag", "cfg"]
    out = _run(RUNNER, args, bench["root"])
    assert out.returncode == 0, out.stderr[-3000:]
    records = json.loads(bench["results"].read_text())
    r = next(r for r in records if r.get("tag") == "cfg")
    assert r["status"] == "ok", r.get("error_tail")
    assert r["config_files"] == [str(extra)]
    assert "--config_files=" + str(extra) in r["equivalent_command"]
    assert "hidden_dropout_prob = 0.3" in Path(r["log"]).read_text()


def test_render_marks_partial_runs(bench, tmp_path):
    page = tmp_path / "results.md"
    dataset = json.loads(bench["results"].read_text())[0]["dataset"]
    (bench["results"].parent / f"{dataset}.notes.md").write_text("Hand-written reading of these runs.\n")
    out = _run(RENDERER, ["--results-dir", str(bench["results"].parent), "--out", str(page)], bench["root"])
    assert out.returncode == 0, out.stderr[-3000:]
    text = page.read_text()
    assert "bench/render_results.py" in text.split("##")[0]
    assert "| **SASRec** |" in text and "| **CL4SRec** |" in text
    assert "partial (budget)" in text
    assert "HR@10" in text and "NDCG@20" in text
    assert "run_recbole_srma.py --model=SASRec" in text
    section = text[text.index(f"## {dataset}") :]
    assert section.index("Hand-written reading of these runs.") < section.index("### Our runs")
    # charts: linked from the page and real PNG files; the runs recorded their per-epoch validation curve
    for chart in (f"{dataset}-vs-published.png", f"{dataset}-valid-curves.png"):
        assert f"](img/{chart})" in section
        assert (tmp_path / "img" / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [r for r in json.loads(bench["results"].read_text()) if r["status"] == "ok"]
    assert records and all([e for e, _ in r["valid_curve"]] == list(range(r["epochs_trained"])) for r in records)
    assert all(len(r["epoch_times_s"]) == r["epochs_trained"] for r in records)


def test_curves_are_read_from_recbole_epoch_lines():
    runner = _load(RUNNER, "bench_run_models")
    log = (
        "\x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 1.50s, train_loss1: 3.0]\n"
        "epoch 0 training [time: 1.50s, train_loss1: 3.0]\n"
        "pre-training epoch 0 [time: 9.00s, Barlow Twins loss: 1.0]\n"
        "epoch 1 training [time: 2.25s, train loss: 2.0]\n"
        "epoch 1 evaluating [time: 0.10s, valid_score: 0.012500]\n"
    )
    curves = runner.training_curves(log)
    assert curves["valid_curve"] == [[1, 0.0125]]
    # a stage with its own epochs before training (SRMA's complement): only the model's own epochs count
    stage = "epoch 0 evaluating [time: 0.1s, valid_score: 0.5]\nepoch 1 evaluating [time: 0.1s, valid_score: 0.6]\n"
    main = "epoch 0 evaluating [time: 0.1s, valid_score: 0.01]\nepoch 1 evaluating [time: 0.1s, valid_score: 0.02]\n"
    assert runner.training_curves(stage + main)["valid_curve"] == [[0, 0.01], [1, 0.02]]
    assert curves["epoch_times_s"][-1] == [1, 2.25] and [0, 9.0] not in curves["epoch_times_s"]


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_are_parsed_like_the_command_line():
    runner = _load(RUNNER, "bench_run_models")
    parsed = runner.parse_overrides(["learning_rate=1e-3", "use_gpu=False", "hidden_act=gelu", "topk=[5, 10]", "n=3"])
    assert parsed == {"learning_rate": 0.001, "use_gpu": False, "hidden_act": "gelu", "topk": [5, 10], "n": 3}
    key = runner.run_key("d", "M", 1, None, {"b": 1, "a": 2})
    assert key == runner.run_key("d", "M", 1, "", {"a": 2, "b": 1})


def test_relative_difference_against_published_numbers():
    renderer = _load(RENDERER, "bench_render_results")
    assert set(renderer.PUBLISHED) == {"amazon-beauty", "amazon-sports", "amazon-toys", "yelp"}
    for entries in renderer.PUBLISHED.values():
        assert all(source in renderer.SOURCES and len(values) == 6 for source, _, values in entries)
    assert renderer.fmt_rel(0.0330, 0.0300) == "+10.0%"
    assert renderer.fmt_rel(0.0270, 0.0300) == "−10.0%"
