"""RecBole's own models through the plugin: the protocol where it belongs, RecBole's defaults everywhere else.

The rule (docs/design.md, "Which models follow the protocol"): the plugin's models and RecBole's next-item
sequential models get properties/overall.yaml (CE, full ranking, leave-one-out); a model with a fixed BPR loss keeps
it with RecBole's negative sampling, and so does one the user switches to BPR; every other RecBole model gets exactly
the Config RecBole itself builds, plus the plugin's own keys and the converted file's columns.
"""

import math

import pytest
from recbole.config import Config as RecBoleConfig
from tiny import tiny_config

from recbole_srma.compat import load_checkpoint
from recbole_srma.config import Config
from recbole_srma.data.convert import LOAD_COL
from recbole_srma.quick_start import run_recbole_srma

PROTOCOL_METRICS = {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}
GENERAL_METRICS = {f"{m}@10" for m in ("recall", "mrr", "ndcg", "hit", "precision")}

# (model, extra settings, follows the protocol, loss, negative sampling, test metrics)
CASES = [
    ("SASRec", {}, True, "CE", "none", PROTOCOL_METRICS),
    ("SASRec", {"loss_type": "BPR"}, True, "BPR", "uniform", PROTOCOL_METRICS),
    ("GRU4Rec", {}, True, "CE", "none", PROTOCOL_METRICS),
    ("GRU4Rec", {"loss_type": "BPR"}, True, "BPR", "uniform", PROTOCOL_METRICS),
    ("FPMC", {}, True, "BPR", "uniform", PROTOCOL_METRICS),
    ("NARM", {"loss_type": "BPR"}, True, "BPR", "uniform", PROTOCOL_METRICS),
    ("BPR", {}, False, None, "uniform", GENERAL_METRICS),
    ("LightGCN", {}, False, None, "uniform", GENERAL_METRICS),
    ("DIN", {}, False, None, "uniform", {"auc", "logloss"}),
]
IDS = [model + ("-" + "-".join(f"{k}={v}" for k, v in extra.items()) if extra else "") for model, extra, *_ in CASES]

# keys the plugin adds to RecBole's own Config for any model (properties/plugin.yaml), and the one it corrects
PLUGIN_KEYS = {"threads", "raw_data_dir", "raw_cache_dir"}


def _settings(tmp_path, extra):
    # the tiny-data budget only: no protocol key, so the defaults under test are the ones each model gets (and no
    # SASRec-only key: DIN would rightly call hidden_size a misspelt mlp_hidden_size)
    settings = tiny_config(tmp_path, **extra)
    for key in ("hidden_size", "inner_size"):
        settings.pop(key)
    return settings


@pytest.mark.parametrize("model, extra, protocol, loss, sampling, metrics", CASES, ids=IDS)
def test_recbole_model_builds_trains_one_epoch_and_evaluates(tmp_path, model, extra, protocol, loss, sampling, metrics):
    config = Config(model=model, config_dict=_settings(tmp_path, extra))
    assert config.follows_protocol is protocol
    assert config["train_neg_sample_args"]["distribution"] == sampling
    if loss is not None:
        assert config["loss_type"] == loss
    if protocol:
        assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
        assert config["eval_args"]["mode"]["test"] == "full"
        assert config["metrics"] == ["Hit", "NDCG"] and config["valid_metric"] == "NDCG@10"

    result = run_recbole_srma(model=model, config_dict=_settings(tmp_path, extra))
    assert set(result["test_result"]) == metrics
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in result["test_result"].values())
    assert result["epochs_trained"] == 1
    load_checkpoint(result["checkpoint"])  # weights_only=True, for RecBole's models too (DIN keeps a module aside)


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "DIN"])
def test_other_recbole_models_get_exactly_recboles_config(tmp_path, model):
    settings = _settings(tmp_path, {})
    ours = Config(model=model, config_dict=dict(settings)).final_config_dict
    theirs = RecBoleConfig(model=model, config_dict=dict(settings)).final_config_dict
    differ = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    # use_gpu: the plugin says what the run does (False without CUDA); load_col: the converted file's timestamp,
    # without which RecBole's sequential datasets (DIN) cannot order the interactions
    assert differ <= PLUGIN_KEYS | {"use_gpu", "load_col"}, {k: (ours.get(k), theirs.get(k)) for k in differ}
    assert ours["load_col"] == LOAD_COL
    assert ours["eval_args"] == theirs["eval_args"] and ours["metrics"] == theirs["metrics"]


def test_general_model_keeps_recboles_random_split_and_metrics(tmp_path):
    config = Config(model="BPR", config_dict=_settings(tmp_path, {}))
    assert config["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]} and config["eval_args"]["order"] == "RO"
    assert config["metrics"] == ["Recall", "MRR", "NDCG", "Hit", "Precision"] and config["topk"] == [10]
    assert config["valid_metric"] == "MRR@10" and config["stopping_step"] == 10 and "fast_path" not in config


def test_din_keeps_its_labels_and_sampled_auc_evaluation(tmp_path):
    config = Config(model="DIN", config_dict=_settings(tmp_path, {}))
    assert config["eval_args"]["mode"] == {"valid": "uni100", "test": "uni100"}
    assert config["metrics"] == ["AUC", "LogLoss"] and config["valid_metric"] == "AUC"


def test_bpr_with_your_own_negative_sampling_keeps_it(tmp_path):
    neg = {"distribution": "popularity", "sample_num": 2}
    config = Config(model="SASRec", config_dict=_settings(tmp_path, {"loss_type": "BPR", "train_neg_sample_args": neg}))
    assert config["train_neg_sample_args"]["distribution"] == "popularity"
    assert config["train_neg_sample_args"]["sample_num"] == 2


def test_ml_100k_keeps_recboles_columns(tmp_path):
    # RecBole's dataset yaml for its ml-100k sample loads the rating too; the plugin only supplies columns for the
    # files its converter wrote
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"state": "WARNING"})
    assert config["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    assert config.follows_protocol and config["metrics"] == ["Hit", "NDCG"]
