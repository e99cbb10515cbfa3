"""Each RecBole 1.2.1 trap of DESIGN.md section 3: shown to bite without the workaround, and fixed with it."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import build

from recbole_srma import compat

REPO = Path(__file__).resolve().parents[1]


def _python(code):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


NDCG_WITHOUT_CONFIG = """
import numpy as np
from recbole.evaluator.metrics import NDCG
pos_index = np.array([[True, False, False]]); pos_len = np.array([1])
print(NDCG.metric_info(None, pos_index, pos_len)[0, 0])
"""


def test_numpy_aliases_needed_and_restored():
    bare = _python(NDCG_WITHOUT_CONFIG)
    assert bare.returncode != 0 and "has no attribute 'float'" in bare.stderr
    fixed = _python("import recbole_srma\n" + NDCG_WITHOUT_CONFIG)
    assert fixed.returncode == 0, fixed.stderr
    assert float(fixed.stdout.strip()) == pytest.approx(1.0)


def test_patch_numpy_fills_only_missing_names(monkeypatch):
    import numpy as np

    monkeypatch.delattr(np, "float_", raising=False)
    compat.patch_numpy()
    assert np.float_ is np.float64
    assert np.ndarray is np.ndarray  # existing names untouched


def test_anomaly_mode_left_on_by_recbole_and_switched_off_by_the_plugin():
    bare = _python("import torch, recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())")
    assert bare.stdout.strip() == "True", bare.stderr
    fixed = _python(
        "import torch, recbole_srma.registry\n"
        "from recbole.model.sequential_recommender.sine import SINE\n"
        "from recbole.model.sequential_recommender.sasrec import SASRec\n"
        "print(torch.is_anomaly_enabled())"
    )
    assert fixed.stdout.strip() == "False", fixed.stderr
    assert torch.is_anomaly_enabled() is False


def test_pandas_3_is_refused_and_declared():
    with pytest.raises(ImportError, match="pandas<3"):
        compat.check_pandas("3.0.1")
    compat.check_pandas("2.3.3")
    import pandas

    assert int(pandas.__version__.split(".")[0]) < 3
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert "pandas<3" in cfg["options"]["install_requires"]


def test_plugin_never_imports_recbole_quick_start_or_ray():
    out = _python(
        "import sys, recbole_srma.quick_start, recbole_srma.registry\n"
        "print('ray' in sys.modules, 'recbole.quick_start' in sys.modules)"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_unknown_model_names_never_reach_recbole_get_model():
    from recbole.utils import get_model as recbole_get_model

    from recbole_srma.errors import ConfigError
    from recbole_srma.registry import get_model

    with pytest.raises(Exception) as recbole_error:
        recbole_get_model("NotInRecBole")
    assert not isinstance(recbole_error.value, ConfigError)
    with pytest.raises(ConfigError, match="unknown model"):
        get_model("NotInRecBole")


def test_ce_loss_needs_no_negative_sampling(tmp_path):
    from recbole.config import Config as RecBoleConfig
    from tiny import tiny_config

    from recbole_srma.config import Config

    settings = tiny_config(tmp_path)
    with pytest.raises(ValueError, match="train_neg_sample_args"):
        RecBoleConfig(model="SASRec", config_dict=dict(settings, loss_type="CE"))
    assert Config(model="SASRec", config_dict=settings)["train_neg_sample_args"]["distribution"] == "none"


def test_best_model_reload_fails_with_recbole_trainer_and_works_with_the_plugin(tmp_path):
    from recbole.trainer import Trainer as RecBoleTrainer

    from recbole_srma.trainer import Trainer

    config, model, train_data, valid_data, _ = build("CL4SRec", tmp_path)
    theirs = RecBoleTrainer(config, model)
    theirs._save_checkpoint(0, verbose=False)
    with pytest.raises(Exception, match="weights_only"):
        theirs.evaluate(valid_data, load_best_model=True)

    ours = Trainer(config, model)
    ours._save_checkpoint(0, verbose=False)
    torch.load(ours.saved_model_file, weights_only=True)
    result = ours.evaluate(valid_data, load_best_model=True)
    assert set(result) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (5, 10, 20)}


def test_checkpoint_names_are_unique_within_a_second(tmp_path):
    from recbole_srma.trainer import Trainer

    config, model, *_ = build("CL4SRec", tmp_path)
    names = {Trainer(config, model).saved_model_file for _ in range(5)}
    assert len(names) == 5
