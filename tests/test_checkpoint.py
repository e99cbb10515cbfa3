"""Plugin checkpoints: weights_only loading, rebuilding in a new process, clear errors, atomic writes, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import build, tiny_config

from recbole_srma.errors import CheckpointError
from recbole_srma.quick_start import load_data_and_model, run_recbole_srma
from recbole_srma.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


class PickledConfig:
    """Stands for RecBole's Config object, which RecBole's Trainer pickles into its checkpoints."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # before the per-test working directory of conftest.py: RecBole logs under the cwd
        result = run_recbole_srma(model="CL4SRec", config_dict=tiny_config(root, epochs=2))
    return root, result


def test_checkpoint_is_plain_data(trained):
    _, result = trained
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["format"] == "recbole_srma/1" and checkpoint["model"] == "CL4SRec"
    json.dumps(checkpoint["config"])  # plain data all the way down
    assert checkpoint["config"]["cl_lambda"] == 0.1
    assert "optimizer" in checkpoint and checkpoint["epoch"] >= 0


def test_reload_in_a_new_process_reproduces_the_test_result(trained):
    root, result = trained
    code = f"""
import json, torch
from recbole_srma.quick_start import load_data_and_model
from recbole_srma.registry import get_trainer
torch.load({result['checkpoint']!r}, weights_only=True)
config, model, dataset, train, valid, test = load_data_and_model({result['checkpoint']!r})
trainer = get_trainer(config['MODEL_TYPE'], config['model'])(config, model)
print(json.dumps(dict(trainer.evaluate(test, load_best_model=False))))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert reloaded == pytest.approx(dict(result["test_result"]))


def test_mismatched_checkpoint_is_a_clear_error(trained, tmp_path):
    _, result = trained
    config, model, *_ = build("CL4SRec", tmp_path, hidden_size=32, inner_size=64)
    with pytest.raises(CheckpointError, match="does not match CL4SRec.*shape mismatch"):
        Trainer(config, model).resume_checkpoint(result["checkpoint"])
    config, model, *_ = build("SASRec", tmp_path)
    with pytest.raises(CheckpointError, match="holds a CL4SRec model, not SASRec"):
        Trainer(config, model).resume_checkpoint(result["checkpoint"])


def test_foreign_and_corrupt_files_are_refused(trained, tmp_path):
    _, result = trained
    pickled = tmp_path / "recbole.pth"
    torch.save({"config": PickledConfig(), "state_dict": {}}, pickled)  # like RecBole's own checkpoints
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_data_and_model(pickled)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(result["checkpoint"]).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_data_and_model(truncated)
    text = tmp_path / "data.inter"
    text.write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_data_and_model(text)
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a recbole-srma checkpoint"):
        load_data_and_model(plain)
    with pytest.raises(CheckpointError, match="not found"):
        load_data_and_model(tmp_path / "missing.pth")


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    config, model, *_ = build("CL4SRec", tmp_path)
    trainer = Trainer(config, model)
    trainer._save_checkpoint(3, verbose=False)
    before = Path(trainer.saved_model_file).read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        trainer._save_checkpoint(4, verbose=False)
    monkeypatch.undo()
    assert Path(trainer.saved_model_file).read_bytes() == before
    assert torch.load(trainer.saved_model_file, weights_only=True)["epoch"] == 3
    assert [p.name for p in Path(trainer.checkpoint_dir).iterdir()] == [Path(trainer.saved_model_file).name]


def test_resume_restores_weights_optimizer_and_epoch(tmp_path):
    config, model, train_data, valid_data, _ = build("CL4SRec", tmp_path)
    first = Trainer(config, model)
    first._train_epoch(train_data, 0)
    first._save_checkpoint(0, verbose=False)

    config2, model2, *_ = build("CL4SRec", tmp_path)
    second = Trainer(config2, model2)
    second.resume_checkpoint(first.saved_model_file)
    assert second.start_epoch == 1
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    state_a, state_b = first.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for key in state_a:
        torch.testing.assert_close(state_a[key]["exp_avg"], state_b[key]["exp_avg"])
