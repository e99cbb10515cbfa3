"""bench/speed.py: the FLOPs floor, arm parsing, and one end-to-end run on the tiny dataset."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
SPEED = REPO / "bench" / "speed.py"


def _module():
    sys.path.insert(0, str(SPEED.parent))
    spec = importlib.util.spec_from_file_location("speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


speed = _module()

CONFIG = {
    "hidden_size": 64, "inner_size": 256, "n_layers": 2, "augmentations": ["crop", "mask", "reorder"],
    "crop_eta": 0.6, "layer_drop_K": 2, "layer_drop_M": 1, "complement_type": "transformer",
    "complement_gamma": 0.1, "insert_rate": 0.4, "short_augmentations": ["insert", "mask"], "augment_threshold": 4,
    "contrast": "dropout_view_vs_same_target",
}


def test_arm_parsing():
    assert speed.parse_arm("stock/SASRec") == (True, "SASRec", {})
    assert speed.parse_arm("SRMA:fast_path=False,cl_lambda=0.2") == (
        False, "SRMA", {"fast_path": False, "cl_lambda": 0.2}
    )
    with pytest.raises(SystemExit, match="key=value"):
        speed.parse_arm("SRMA:fast_path")


def test_floor_counts_real_tokens_views_and_extras():
    short, long = [5] * 100, [50] * 100
    sasrec_short = speed.epoch_flops("PluginSASRec", CONFIG, short, 1000, 256)
    assert speed.epoch_flops("PluginSASRec", CONFIG, long, 1000, 256) > 5 * sasrec_short  # grows with real tokens
    cl4srec = speed.epoch_flops("CL4SRec", CONFIG, short, 1000, 256)
    srma = speed.epoch_flops("SRMA", CONFIG, short, 1000, 256)
    assert sasrec_short < cl4srec < srma
    # crop shortens the views: two views cost less than two more copies of the sequences
    encoder_only = speed.epoch_flops("PluginSASRec", CONFIG, short, 0, 256)
    assert cl4srec - sasrec_short < 2 * encoder_only
    # one block on one token: 2 * (4 H^2 + 2 H I) + causal attention 2 * 2 * H * 1
    assert speed.layer_flops(1, 64, 256) == 2 * (4 * 64 * 64 + 2 * 64 * 256) + 4 * 64
    assert speed.view_lengths(10, ["crop", "mask", "insert"], CONFIG) == [6, 10, 14]
    assert speed.view_lengths(1, ["crop"], CONFIG) == [1]
    assert speed.view_lengths(48, ["insert"], CONFIG) == [50]  # insert keeps the 50 most recent
    # DuoRec's default (the paper's model): two more passes of every sequence
    duorec = speed.epoch_flops("DuoRec", CONFIG, short, 1000, 256)
    assert duorec - sasrec_short > 2 * encoder_only
    coserec = speed.epoch_flops("CoSeRec", {**CONFIG, "augmentations": ["insert"]}, short, 1000, 256)
    assert coserec > cl4srec  # inserted items lengthen the views
    # MCLRec: the joint schedule is CL4SRec plus the meta similarities; each phase schedule adds its steps
    meta = {**CONFIG, "use_cl2": True, "reg_gamma": 0.1}
    joint, alternate, official = (
        speed.epoch_flops("MCLRec", {**meta, "meta_schedule": s}, short, 1000, 256)
        for s in ("joint", "alternate", "encoder_augmenter_encoder")
    )
    assert cl4srec < joint < alternate < official
    assert official - alternate == pytest.approx(joint)  # one more encoder step per batch
    # BT4SRec: full-length views (mask, segment mask, reorder) cost more than CL4SRec's cropped ones; both positives
    # add a same-target pass; alpha 0 is the one-view path
    bt = {**CONFIG, "alpha": 0.05, "bt_positive": "augment", "projector_sizes": [256, 64],
          "augmentations": ["mask", "segment_mask", "reorder"]}
    bt_augment, bt_both = (speed.epoch_flops("BT4SRec", {**bt, "bt_positive": p}, short, 1000, 256)
                           for p in ("augment", "both"))
    assert cl4srec < bt_augment and bt_both - bt_augment > encoder_only
    assert speed.epoch_flops("BT4SRec", {**bt, "alpha": 0.0}, short, 1000, 256) == sasrec_short
    # BERT4Rec: always-last batches score one position per sequence like SASRec (plus the output head's layer);
    # masking 20 % of 50 items scores ten
    bert = {**CONFIG, "mask_ratio": 0.2, "ft_ratio": 1.0}
    assert speed.epoch_flops("PluginBERT4Rec", bert, long, 1000, 256) == pytest.approx(
        speed.epoch_flops("PluginSASRec", CONFIG, long, 1000, 256) + 3 * 100 * 2 * 64 * 64)
    masked = speed.epoch_flops("PluginBERT4Rec", {**bert, "ft_ratio": 0.0}, long, 1000, 256)
    expected = 3 * 100 * 10 * (2 * 64 * 1000 + 2 * 64 * 64)
    assert masked - speed.epoch_flops("PluginSASRec", CONFIG, long, 0, 256) == pytest.approx(expected)


def test_speed_bench_runs_end_to_end_on_tiny_data(tmp_path):
    data = make_tiny_dataset(tmp_path, n_users=120)
    out = tmp_path / "speed.json"
    args = [
        "--dataset", data["dataset"], "--data-path", data["data_path"], "--raw-data-dir", str(tmp_path),
        "--arms", "stock/SASRec", "PluginSASRec", "PluginSASRec:fast_path=False",
        "--batches", "2", "--threads", "1", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
        "--set", "hidden_size=16", "--set", "inner_size=32", "--set", "MAX_ITEM_LIST_LENGTH=20",
        "--set", "train_batch_size=32",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(SPEED), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    assert arms["stock/SASRec"]["anomaly_mode"] is True  # RecBole as RecBole leaves it
    assert arms["stock/SASRec"]["eval_batch_size"] == 4096  # RecBole's default
    assert arms["PluginSASRec"]["anomaly_mode"] is False and arms["PluginSASRec"]["fast_path"] is True
    assert arms["PluginSASRec:fast_path=False"]["fast_path"] is False
    for arm in arms.values():
        assert arm["timed_batches"] == 2 and arm["n_batches"] > 2 and arm["epoch_s"] > 0 and arm["eval_s"] > 0
        assert arm["real_tokens"] < arm["padded_tokens"] and arm["epoch_gflop"] > 0
    assert report["matmul_gflops"] > 0
    assert "| stock/SASRec |" in proc.stdout and "extrapolated from the first 2" in proc.stdout


def test_components_benchmark_prints_its_comparisons(capsys):
    sys.path.insert(0, str(SPEED.parent))
    import components

    assert components.main(["--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("dropout mask", "attention with dropout", "encoder forward + backward"):
        assert name in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 3


def test_equivalence_summary_compares_the_means_with_the_seed_spread():
    sys.path.insert(0, str(SPEED.parent))
    import fast_path_equivalence as eq

    def record(tag, seed, value):
        return {"status": "ok", "dataset": "d", "model": "M", "tag": tag, "seed": seed, "overrides": {"epochs": 3},
                "valid": {"ndcg@10": value}, "best_epoch": 2, "wall_time_s": 1.0}

    near = [record("fast-path-on", s, v) for s, v in [(1, 0.020), (2, 0.022), (3, 0.021)]]
    near += [record("fast-path-off", s, v) for s, v in [(1, 0.0205), (2, 0.0215), (3, 0.0212)]]
    text = eq.summarize(near, "d", "M", [1, 2, 3], 3)
    assert "| True | 0.0200 (2) | 0.0220 (2) | 0.0210 (2) | 0.0210 | 0.0010 |" in text
    assert "within the spread" in text
    far = near[:3] + [record("fast-path-off", s, v) for s, v in [(1, 0.030), (2, 0.031), (3, 0.0305)]]
    assert "OUTSIDE the spread" in eq.summarize(far, "d", "M", [1, 2, 3], 3)
    other_epochs = near[:3] + [dict(r, overrides={"epochs": 5}) for r in near[3:]]
    assert "| False | - | - | - | - | - |" in eq.summarize(other_epochs, "d", "M", [1, 2, 3], 3)


def test_cost_ratio_times_arms_interleaved_against_the_first(tmp_path):
    data = make_tiny_dataset(tmp_path, n_users=120)
    out = tmp_path / "ratio.json"
    args = [
        "--dataset", data["dataset"], "--data-path", data["data_path"], "--raw-data-dir", str(tmp_path),
        "--arms", "CL4SRec", "MCLRec", "MCLRec:meta_schedule=official", "--batches", "2", "--rounds", "2",
        "--threads", "1", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
        "--set", "hidden_size=16", "--set", "inner_size=32", "--set", "train_batch_size=32",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    script = REPO / "bench" / "cost_ratio.py"
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    rows = {r["arm"]: r for r in report["arms"]}
    assert rows["CL4SRec"]["ratio_per_round"] == [1.0, 1.0]
    for row in rows.values():
        assert len(row["round_s"]) == 2 and all(t > 0 for t in row["round_s"]) and row["epoch_s_estimate"] > 0
    # three optimiser steps per batch (two of them full encoder steps) cost more than one
    assert rows["MCLRec:meta_schedule=official"]["ratio_median"] > 1.0
    assert "| MCLRec:meta_schedule=official |" in proc.stdout
