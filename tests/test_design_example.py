"""docs/design.md's worked example of adding a model runs as written: registered, checked at start, trained."""

import re
import types
from pathlib import Path

import pytest
from tiny import tiny_config

from recbole_srma.errors import ConfigError
from recbole_srma.quick_start import run_recbole_srma
from recbole_srma.registry import MODELS, register_model

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


@pytest.fixture
def example_model():
    code = re.search(r"```python\n(# recbole_srma/model/dropl4srec.py\n.*?)```", DESIGN.read_text(), re.S).group(1)
    module = types.ModuleType("dropl4srec")
    exec(compile(code, str(DESIGN), "exec"), module.__dict__)
    register_model("DropL4SRec", module.DropL4SRec)
    yield module.DropL4SRec
    MODELS.pop("DropL4SRec")


def test_the_worked_example_trains_and_its_keys_are_checked(tmp_path, example_model):
    settings = {"cl_lambda": 0.1, "tau": 1.0, "sim": "dot"}  # what its yaml would hold
    result = run_recbole_srma(model="DropL4SRec", config_dict=tiny_config(tmp_path, **settings))
    assert result["epochs_trained"] == 1 and 0 <= result["test_result"]["ndcg@10"] <= 1
    with pytest.raises(ConfigError, match="temperature"):
        run_recbole_srma(model="DropL4SRec", config_dict=tiny_config(tmp_path, **dict(settings, tau=0)))


def test_models_never_import_trainers_config_or_the_quick_start():
    """docs/design.md: imports run from trainers to models, never back (a stage belongs to a trainer)."""
    model_dir = Path(__file__).resolve().parents[1] / "recbole_srma" / "model"
    forbidden = re.compile(r"^\s*(from|import) recbole_srma\.(trainer|model_trainers|config|quick_start)\b", re.M)
    offenders = {p.name: forbidden.findall(p.read_text()) for p in model_dir.glob("*.py")}
    assert {name: hits for name, hits in offenders.items() if hits} == {}
    assert not any("before_fit" in p.read_text() for p in model_dir.glob("*.py"))
