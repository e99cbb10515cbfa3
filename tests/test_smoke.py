"""One epoch of every plugin model and of RecBole baselines on the tiny dataset, through the public API."""

import pytest
import torch
from tiny import tiny_config

from recbole_srma.quick_start import run_recbole_srma
from recbole_srma.registry import MODELS

METRICS = {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}


@pytest.mark.parametrize("model", sorted(MODELS) + ["SASRec", "GRU4Rec", "BERT4Rec", "Caser"])
def test_one_epoch(tmp_path, model):
    result = run_recbole_srma(model=model, config_dict=tiny_config(tmp_path))
    assert set(result["test_result"]) == METRICS and set(result["best_valid_result"]) == METRICS
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
    assert result["test_result"]["hit@20"] >= result["test_result"]["hit@5"]
    assert result["epochs_trained"] == 1 and result["best_epoch"] == 0 and not result["stopped_early"]
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["model"] == model
