"""bench/ssl_study.py (issue 50): the study's plan follows its rules, reuses issue 49's runs, and every self-supervised
model trains on the strong base of either protocol."""

import statistics
import sys
from pathlib import Path

import pytest
import yaml
from tiny import tiny_config

from recbole_srma import PROPERTIES_DIR
from recbole_srma.config import Config
from recbole_srma.quick_start import run_recbole_srma

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "bench") not in sys.path:  # the scripts import bench/common.py, as they do when run
    sys.path.insert(0, str(REPO / "bench"))

import render_results  # noqa: E402
import ssl_study  # noqa: E402
from run_models import record_key  # noqa: E402

BASE_FILES = {"recbole": ["strong-base/sasrec-plus-recbole-protocol.yaml"],
              "benchmark": ["protocol/transformer-benchmark.yaml", "strong-base/sasrec-plus-rectools.yaml"]}


def test_each_grid_starts_at_the_models_default_and_each_rate_is_another_value():
    for model in ssl_study.MODELS:
        defaults = yaml.safe_load((PROPERTIES_DIR / "model" / f"{model}.yaml").read_text())
        key, values = ssl_study.WEIGHTS[model]
        assert values[0] == defaults[key] and len(set(values)) == 3
        rate_key, rate = ssl_study.RATES[model]
        assert rate_key in defaults and rate != defaults[rate_key]


@pytest.mark.parametrize("protocol", ["recbole", "benchmark"])
def test_the_studys_base_is_the_strong_base_file_of_its_protocol(tmp_path, protocol):
    """The study runs the base as issue 49 did (so its runs are reused); that must be the strong-base file."""
    spec = ssl_study.PROTOCOLS[protocol]
    config = tiny_config(tmp_path)
    for key in ("hidden_size", "inner_size"):
        config.pop(key)
    as_run = Config("CL4SRec", config_file_list=[str(REPO / f) for f in spec["config_files"]],
                    config_dict={**config, **spec["overrides"]})
    files = [str(PROPERTIES_DIR / f) for f in BASE_FILES[protocol]]
    as_file = Config("CL4SRec", config_file_list=files, config_dict=config)
    keys = set().union(*(yaml.safe_load(Path(f).read_text()) for f in files)) - set(config)
    assert {k: as_run[k] for k in keys} == {k: as_file[k] for k in keys}


def _record(step, valid, test, wall=60.0):
    return {"dataset": step.dataset, "model": step.model, "seed": step.seed, "tag": step.tag,
            "overrides": step.overrides, "config_files": step.spec["config_files"], "status": "ok",
            "valid": {"ndcg@10": valid}, "test": {"ndcg@10": test, "hit@10": 2 * test}, "wall_time_s": wall,
            "epoch_times_s": [[0, 5.0], [1, 7.0]], "best_epoch": 1, "epochs_trained": 2, "stopped_early": True,
            "machine": {"device": "cpu", "cpu_model": "test CPU", "cpu_count": 2}}


def _records(records, steps, valid, test):
    for step in steps:
        records[record_key(_record(step, valid, test))] = _record(step, valid, test)


def _study(records):
    return ssl_study.Study(records).build()


def test_the_plan_runs_the_base_then_defaults_then_the_grid_and_reuses_recorded_runs():
    study = _study({})
    first = study.ready[0]
    assert (first.protocol, first.dataset, first.model, first.seed) == ("recbole", "amazon-toys", "PluginSASRec", 2020)
    assert first.tag == "every-position" and first.overrides == {"train_objective": "every_position"}
    toys = [s for s in study.ready if (s.protocol, s.dataset) == ("recbole", "amazon-toys")]
    assert [s.phase for s in toys] == sorted(s.phase for s in toys)  # every model's defaults before any grid point
    assert [s.setting for s in toys if s.model == "SRMA"] == [{}, {"cl_lambda": 0.03}, {"cl_lambda": 0.3}]
    assert not any(s.dataset == "yelp" for s in study.ready)
    # a recorded run (issue 49's base, with the same identity) is not planned again
    records = {}
    _records(records, toys[:3], 0.05, 0.044)
    assert {s.key for s in toys[:3]}.isdisjoint(s.key for s in _study(records).ready)
    assert toys[0].results.name == "every-position.json" and toys[3].results.parent.name == "ssl-study"


def _grid(records, protocol, dataset, model, valids, test=0.044):
    """Record the weight grid with these validation scores; returns the rate step the study then plans."""
    steps = [s for s in _study(records).ready if (s.protocol, s.dataset, s.model, s.phase) in
             {(protocol, dataset, model, 1), (protocol, dataset, model, 2)}]
    assert len(steps) == 3
    for step, valid in zip(steps, valids):
        _records(records, [step], valid, test)
    (rate,) = [s for s in _study(records).ready if (s.protocol, s.dataset, s.model, s.phase) ==
               (protocol, dataset, model, 3)]
    return steps, rate


def _toys_base():
    """Records of the base's three seeds under RecBole's protocol on amazon-toys: mean .0440, std .0005."""
    records = {}
    base = [ssl_study.Step("recbole", "amazon-toys", "PluginSASRec", seed) for seed in ssl_study.SEEDS]
    for step, test in zip(base, (0.0440, 0.0445, 0.0435)):
        _records(records, [step], 0.053, test)
    return records


def test_the_rate_is_tried_at_the_best_weight_and_the_pick_is_the_best_validation_point():
    records = _toys_base()
    steps, rate = _grid(records, "recbole", "amazon-toys", "SRMA", [0.050, 0.052, 0.051], test=0.046)
    assert rate.setting == {"cl_lambda": 0.03, "neuron_mask_p": 0.2}
    _records(records, [rate], 0.049, 0.047)  # the rate loses on validation: the pick is cl_lambda 0.03
    study = _study(records)
    assert study.picks["recbole", "amazon-toys", "SRMA"] == {"cl_lambda": 0.03}
    # its test score (0.046) is 4 base std (0.0005) above the base: one seed answers
    assert study.runs["recbole", "amazon-toys", "SRMA"] == [records[steps[1].key]]
    assert not any(s.model == "SRMA" and s.seed != 2020 and s.dataset == "amazon-toys" for s in study.ready)
    # SRMA's control: its pick without the contrastive term, on the pick's seeds, reported against the pick
    (control,) = [s for s in study.ready if s.phase == 5]
    assert (control.model, control.seed) == ("SRMA", 2020)
    assert control.setting == {"cl_lambda": 0.0, "complement_type": "none"}
    _records(records, [control], 0.050, 0.045)
    rows, _ = render_results.study_rows(_study(records), "recbole", "amazon-toys")
    assert ["SRMA control", "cl_lambda=0.0, complement_type=none", "2020"] == rows[-1][:3]
    assert rows[-1][5] == "pick vs control +2.2%"


def test_a_pick_within_two_base_std_gets_two_more_seeds_and_the_report_says_so():
    records = _toys_base()
    _, rate = _grid(records, "recbole", "amazon-toys", "CL4SRec", [0.052, 0.050, 0.051], test=0.0441)
    _records(records, [rate], 0.049, 0.046)
    study = _study(records)
    seeds = [s for s in study.ready if s.model == "CL4SRec" and s.seed != 2020]
    assert [(s.seed, s.setting) for s in seeds] == [(2021, {}), (2022, {})]
    rows, gains = render_results.study_rows(study, "recbole", "amazon-toys")
    cl4srec = next(row for row in rows if row[0] == "**CL4SRec**")
    assert cl4srec[1] == "defaults (more seeds to come)" and cl4srec[5] == "+0.2%"
    for step, test in zip(seeds, (0.0450, 0.0452)):
        _records(records, [step], 0.052, test)
    study = _study(records)
    rows, gains = render_results.study_rows(study, "recbole", "amazon-toys")
    cl4srec = next(row for row in rows if row[0] == "**CL4SRec**")
    mean = statistics.mean([0.0441, 0.0450, 0.0452])
    assert cl4srec[2] == "2020, 2021, 2022" and cl4srec[5] == f"{(mean / 0.044 - 1) * 100:+.1f}%"
    assert 0 < float(cl4srec[7]) < 1  # Welch's p over three seeds a side
    assert gains["CL4SRec"][3] == 3


def test_the_study_section_renders_each_block_with_its_grid(tmp_path):
    records = {}
    base = [ssl_study.Step("benchmark", "amazon-beauty", "PluginSASRec", seed) for seed in ssl_study.SEEDS]
    for step, test in zip(base, (0.056, 0.057, 0.058)):
        _records(records, [step], 0.07, test)
    _grid(records, "benchmark", "amazon-beauty", "DuoRec", [0.070, 0.071, 0.069], test=0.06)
    study = _study(records)
    text = "\n".join(render_results.render_study(study, "a reading", {"amazon-beauty": "x.png"}))
    assert "#### amazon-beauty, the transformer benchmark's protocol" in text and "a reading" in text
    assert "| **DuoRec** | sem_lambda=0.03 (grid 3 of 4 so far) | 2020 |" in text
    assert "tb-sasrec-plus-rectools-sem_lambda0.03" in text and "![ssl-study-amazon-beauty](img/x.png)" in text
    pytest.importorskip("matplotlib")
    assert render_results.plot_study(study, "amazon-beauty", tmp_path) == "ssl-study-amazon-beauty.png"


@pytest.mark.parametrize("protocol", ["recbole", "benchmark"])
@pytest.mark.parametrize("model", ssl_study.MODELS)
def test_every_model_trains_on_the_strong_base_of_each_protocol(tmp_path, model, protocol):
    spec = ssl_study.PROTOCOLS[protocol]
    config = {**tiny_config(tmp_path, epochs=1, complement_epochs=1), **spec["overrides"]}
    result = run_recbole_srma(model=model, config_file_list=[str(REPO / f) for f in spec["config_files"]],
                              config_dict=config)
    assert 0 < result["test_result"]["ndcg@10"] <= 1


@pytest.mark.parametrize("exclude", [False, True])
def test_history_length_buckets_add_up_to_the_trainers_test_metrics(tmp_path, exclude):
    import by_history_length

    files = {}
    for model in ("PluginSASRec", "CL4SRec"):
        config = tiny_config(tmp_path, epochs=1, exclude_history_items=exclude)
        result = run_recbole_srma(model=model, config_dict=config, saved=True)
        files[model] = result["checkpoint"]
        label, users = by_history_length.per_user(files[model])
        assert model in label and len(users) == 300
        for m, metric in enumerate(by_history_length.METRICS, 1):
            mean = statistics.mean(values[m] for values in users.values())
            assert mean == pytest.approx(result["test_result"][metric], abs=1e-4)
    table = by_history_length.main([files["PluginSASRec"], files["CL4SRec"]])
    *buckets, everyone = table
    assert everyone["bucket"] == "all" and sum(row["users"] for row in buckets) == everyone["users"] == 300
    diff, low, high = everyone["ndcg@10 diff"][0]
    assert diff == pytest.approx(everyone["ndcg@10"][1] - everyone["ndcg@10"][0]) and low <= diff <= high


@pytest.mark.parametrize("protocol", ["recbole", "benchmark"])
def test_a_steps_command_records_the_steps_run_identity(tmp_path, protocol):
    """What ``run`` starts is recorded under the identity the plan looks for (values parsed back to the same types)."""
    import json
    import os
    import subprocess

    from run_models import load_results, run_key

    data = tiny_config(tmp_path)
    step = ssl_study.Step(protocol, data["dataset"], "DuoRec", 2020, {"sem_lambda": 0.03, "tau": 0.5})
    results = tmp_path / "results.json"
    extra = {"epochs": 1, "MAX_ITEM_LIST_LENGTH": 20}
    command = step.command(threads=1) + ["--data-path", data["data_path"], "--runs-dir", str(tmp_path / "runs"),
                                         "--results", str(results), "--epochs", "1", "--set", "MAX_ITEM_LIST_LENGTH=20"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = load_results(results)
    assert record["status"] == "ok", json.dumps(record)[:2000]
    assert record_key(record) == run_key(step.dataset, step.model, step.seed, step.tag, {**step.overrides, **extra},
                                         step.spec["config_files"])
