"""bench/run_models.py and bench/render_results.py end to end on the tiny dataset (one epoch, one seed)."""

import importlib.util
import json
import os
import shutil
import signal
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


def test_records_hold_the_protocol_and_a_table_of_mixed_protocols_is_refused(bench):
    records = json.loads(bench["results"].read_text())
    sasrec, cl4srec = records
    assert sasrec["protocol"] == cl4srec["protocol"]  # RecBole's SASRec and a plugin model: one protocol
    assert sasrec["protocol"]["loss_type"] == "CE" and sasrec["protocol"]["eval_args"]["mode"]["test"] == "full"
    renderer = _load(RENDERER, "bench_render_results")
    renderer.render(records)
    other = dict(cl4srec, protocol=dict(cl4srec["protocol"], topk=[10]))
    with pytest.raises(SystemExit, match="different protocols cannot share a table"):
        renderer.render([sasrec, other])


def test_a_model_outside_the_protocol_is_refused(bench, tmp_path):
    _run(RUNNER, [*bench["base"], "--results", str(tmp_path / "r.json"), "--runs-dir", str(tmp_path / "runs"),
                        "--models", "BPR", "--seeds", "2020"], bench["root"])
    (record,) = json.loads((tmp_path / "r.json").read_text())
    assert record["status"] == "failed" and "does not follow the plugin's protocol" in record["error_tail"]


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


def test_a_run_that_finished_unrecorded_is_recorded_from_its_log(bench, tmp_path):
    """A runner stopped after its worker's last line but before it wrote the results file: the next invocation
    records the finished run from the log instead of training it again."""
    runs = tmp_path / "runs"
    shutil.copytree(bench["root"] / "runs", runs)
    trained = json.loads(bench["results"].read_text())[0]
    log = runs / bench["dataset"] / "SASRec-seed2020.log"
    before = log.read_text()
    results = tmp_path / "results.json"  # holds no record of the run, as if the runner never wrote it
    base = [a if a != str(bench["results"]) else str(results) for a in bench["base"]]
    base = [a if a != str(bench["root"] / "runs") else str(runs) for a in base]
    out = _run(RUNNER, [*base, "--models", "SASRec", "--seeds", "2020"], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [r] = json.loads(results.read_text())
    assert r["status"] == "ok" and r["test"] == trained["test"] and r["epochs_trained"] == 1
    assert r["wall_time_s"] == trained["wall_time_s"] and r["pieces"] == 1
    assert r["started_utc"] == trained["started_utc"]
    text = log.read_text()
    assert text.startswith(before) and "recorded from this log" in text[len(before):]
    assert text.count("epoch 0 training") == 1  # not trained again


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
    if str(path.parent) not in sys.path:  # the scripts import bench/common.py, as they do when run
        sys.path.insert(0, str(path.parent))
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
    datasets = {"amazon-beauty", "amazon-sports", "amazon-toys", "yelp"}
    # sections of a dataset under a protocol switch: "<dataset>+<switch>"
    assert {key.split("+")[0] for key in renderer.PUBLISHED} == datasets and datasets <= set(renderer.PUBLISHED)
    switched = {"dataset": "d", "protocol": {"exclude_history_items": True}}
    assert renderer.section_key(switched) == "d+exclude_history_items"
    assert renderer.section_key({"dataset": "d", "protocol": {"MAX_ITEM_LIST_LENGTH": 50}}) == "d"
    for entries in renderer.PUBLISHED.values():
        assert all(source in renderer.SOURCES and len(values) == 6 for source, _, values in entries)
    assert renderer.fmt_rel(0.0330, 0.0300) == "+10.0%"
    assert renderer.fmt_rel(0.0270, 0.0300) == "−10.0%"
    assert renderer.fmt_rel(0.0270, None) == "-"


def test_a_published_value_that_cannot_be_right_is_shown_as_na_and_not_compared():
    """The MCLRec paper's yelp DuoRec NDCG@10 (.0235) is below its NDCG@5: the report must not compare with it."""
    renderer = _load(RENDERER, "bench_render_results")
    [duorec] = [v for source, m, v in renderer.PUBLISHED["yelp"] if m == "DuoRec"]
    assert duorec[renderer.METRICS.index("ndcg@10")] is None and duorec[renderer.METRICS.index("hit@10")] == 0.0614
    # a DuoRec far below the paper's HR@10 is flagged from HR@10 alone; NDCG@10 is not compared
    record = dict(_record("DuoRec", 0.0150), dataset="yelp")  # HR@10 .0300: −51 % against .0614
    page = renderer.render([record])
    yelp = page[page.index("## yelp") :]
    glance = yelp[: yelp.index("### Our runs")]
    [row] = [line for line in glance.splitlines() if line.startswith("| **DuoRec** |")]
    assert "0.0614 / n/a (MCLRec paper)" in row and "−51.1% / -" in row
    assert "DuoRec vs the MCLRec paper (−51.1%)" in yelp
    published = yelp[yelp.index("### Published numbers") :]
    assert "| DuoRec | MCLRec paper | 0.0429 | 0.0614 | 0.0868 | 0.0324 | n/a | 0.0447 |" in published
    assert "n/a: not reported by the source, or a value that cannot be right" in published
    assert "n/a: not reported" not in page[: page.index("## yelp")]  # only where a value is left out


def _record(model, ndcg, *, status="ok", stopped=True, overrides=None, seed=2020, config_files=(), curve=None):
    test = {m: ndcg * (2 if m.startswith("hit") else 1) for m in METRICS} if status == "ok" else None
    return {
        "dataset": "amazon-toys", "model": model, "seed": seed, "tag": None, "overrides": overrides or {},
        "config_files": list(config_files), "status": status, "epochs": 300, "epochs_trained": 40 if test else None,
        "best_epoch": 29 if test else None, "stopped_early": stopped if test else None, "valid": test, "test": test,
        "wall_time_s": 60.0, "machine": {"device": "cpu"}, "valid_curve": curve or [], "resumable": True,
    }


def test_headline_table_has_every_model_and_says_what_is_missing():
    renderer = _load(RENDERER, "bench_render_results")
    records = [
        # PluginSASRec stands for SASRec; seeds are averaged; the short one is flagged
        _record("PluginSASRec", 0.0300, seed=2020), _record("PluginSASRec", 0.0320, seed=2021),
        # a partial run loses against a complete one of the same model, and is not flagged when short
        _record("CL4SRec", 0.0100, stopped=False, overrides={"epochs": 8}), _record("CL4SRec", 0.0420),
        # an override equal to the protocol's value, or one another model reads, keeps the default setup
        _record("SRMA", 0.0480, overrides={"train_batch_size": 256, "epochs": 300}),
        _record("CoSeRec", 0.0470, overrides={"complement_epochs": 5}),
        # a real change of setup is not the headline
        _record("BT4SRec", 0.0900, overrides={"alpha": 0.5}),
        _record("DuoRec", 0.0, status="interrupted", curve=[[0, 0.01], [1, 0.02]]),
        _record("MCLRec", 0.0200, stopped=False, overrides={"epochs": 5}),
        _record("MCLRec", 0.0, status="timeout", curve=[[e, 0.01] for e in range(12)]),
        _record("SRMA", 0.0410, config_files=["properties/ablation/SRMA-wo-D.yaml"]),
        # PluginBERT4Rec stands for BERT4Rec; a stopped run of RecBole's class does not replace a complete one
        _record("BERT4Rec", 0.0, status="interrupted", curve=[[0, 0.01]]), _record("PluginBERT4Rec", 0.0330),
    ]
    page = renderer.render(records)
    toys = page[page.index("## amazon-toys") :]
    glance = toys[toys.index("### Every model at a glance") :]
    glance = glance[: glance.index("\n### ", 5)]
    rows = {line.split("|")[1].strip(" *"): line for line in glance.splitlines() if line.startswith("| **")}
    assert list(rows) == renderer.HEADLINE_MODELS
    # every dataset of the report has its section, run or not
    assert all(f"## {d}" in page for d in renderer.DATASET_ORDER) and "| **SRMA** | not run |" in page
    assert "PluginSASRec, 2 seeds" in rows["SASRec"] and "0.0310 ± 0.0014" in rows["SASRec"]
    assert "−17.1%" in rows["SASRec"]  # 0.0310 / 0.0374 - 1 against the SRMA paper's NDCG@10
    assert "early-stopped" in rows["CL4SRec"] and "0.0420" in rows["CL4SRec"] and "0.0100" not in rows["CL4SRec"]
    assert "0.0480" in rows["SRMA"] and "0.0470" in rows["CoSeRec"]
    assert "0.0330" in rows["BERT4Rec"] and "early-stopped" in rows["BERT4Rec"]
    assert "not run" in rows["BT4SRec"] and "not run" in rows["GRU4Rec"]
    assert "in progress: 2 epochs so far (best valid NDCG@10 0.0200)" in rows["DuoRec"]
    assert "partial (budget of 300)" in rows["MCLRec"]
    assert "a longer run is in progress (12 epochs so far)" in rows["MCLRec"]
    assert "More than 10 % below" in glance and "SASRec vs the SRMA paper" in glance
    assert "CL4SRec vs" not in glance  # −1.9 % only
    assert "| **SRMA** |" in glance and "0.0410" not in glance  # a variant is not the model's headline
    # the SRMA paper's ablations: each variant's run next to the paper's value
    ablations = toys[toys.index("### SRMA paper's ablations") :]
    ablations = ablations[: ablations.index("\n### ", 5)]
    rows = {line.split("|")[1].strip(): line for line in ablations.splitlines() if line.startswith("| ")}
    assert "0.0410" in rows["SRMA w/o D"] and "0.0402" in rows["SRMA w/o D"]  # ours NDCG@10, the paper's
    assert "0.0480" in rows["SRMA"] and "0.0410" not in rows["SRMA"]
    assert "not run" in rows["SRMA w/o M"]
    assert renderer.fmt_rel(0.0270, 0.0300) == "−10.0%"


def test_a_stopped_run_continues_from_its_last_finished_epoch(tmp_path):
    """SIGTERM the runner mid-training (as the end of a session does); the next invocation continues the run."""
    data = make_tiny_dataset(tmp_path, n_users=150)
    results = tmp_path / "results.json"
    args = [
        "--dataset", data["dataset"], "--data-path", data["data_path"], "--results", str(results),
        "--runs-dir", str(tmp_path / "runs"), "--models", "PluginSASRec",
        *TINY_SETTINGS, "--epochs", "6", "--set", "stopping_step=100",  # the last --epochs wins
    ]
    log = tmp_path / "runs" / data["dataset"] / "PluginSASRec-seed2020.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(RUNNER), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    # epoch 1's training line: epoch 0 is finished, so its state is on disk as the "-last" checkpoint
    while not (log.is_file() and "epoch 1 training" in log.read_text(errors="replace")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    [stopped] = json.loads(results.read_text())
    assert stopped["status"] == "interrupted" and stopped["resumable"] is True and stopped["test"] is None
    reached = stopped["valid_curve"][-1][0]
    assert 0 <= reached < 5 and stopped["pieces"] == 1

    out = _run(RUNNER, args, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [r] = json.loads(results.read_text())
    assert r["status"] == "ok", r.get("error_tail")
    assert r["pieces"] == 2 and r["wall_time_s"] > stopped["wall_time_s"]
    assert r["epochs_trained"] == 6 and r["started_utc"] == stopped["started_utc"]
    # one curve over both pieces, each epoch once; the second piece did not start again from epoch 0
    assert [e for e, _ in r["valid_curve"]] == list(range(6))
    text = log.read_text()
    assert "# resumed from " in text and text.count("epoch 0 training") == 1
    assert not list((tmp_path / "runs").rglob("*-last.pth"))  # finished: only the best checkpoint stays


def test_a_run_held_by_another_runner_is_skipped(tmp_path):
    runner = _load(RUNNER, "bench_run_models")
    log = tmp_path / "d" / "M-seed1.log"
    first = runner.claim_run(log)
    assert first is not None and runner.claim_run(log) is None
    first.close()
    again = runner.claim_run(log)
    assert again is not None
    again.close()


def test_history_mask_recomputes_recbole_metrics_and_masks_repeated_targets(bench, tmp_path):
    """bench/history_mask.py: its RecBole column equals the trainer's test metrics; masking zeroes the repeats."""
    record = next(r for r in json.loads(bench["results"].read_text()) if r["model"] == "SASRec")
    assert Path(record["checkpoint"]).is_file() and record["checkpoint"].endswith(".pth")
    out_file = tmp_path / "mask.json"
    script = REPO / "bench" / "history_mask.py"
    out = _run(script, [record["checkpoint"], "--threads", "1", "--json", str(out_file)], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out_file.read_text())

    sequences = [line.split()[1:] for line in (bench["root"] / f"{bench['dataset']}.txt").read_text().splitlines()]
    repeats = sum(seq[-1] in seq[:-1] for seq in sequences)
    assert summary["users"] == len(sequences) and summary["users_target_in_history"] == repeats > 0
    for metric in METRICS:
        assert abs(summary["recbole"][metric] - record["test"][metric]) <= 1e-4, metric
        assert summary["masked_target_in_history"][metric] == 0.0
        # masking only removes competitors of a target that is not in the history, so it can only rise
        assert summary["masked_target_new"][metric] >= summary["recbole_target_new"][metric]
    assert summary["recbole_target_in_history"]["hit@20"] > 0  # else the masked column could not differ
