"""Operations: distributed training on CPU processes, resuming a killed run, hyper-parameter search, logging."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

from recbole_srma.quick_start import load_data_and_model, run, run_recbole_srma
from recbole_srma.registry import get_trainer

REPO = Path(__file__).resolve().parents[1]
FAST = {"hidden_size": 16, "inner_size": 32}


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def _single_process_test_result(checkpoint):
    config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return dict(trainer.evaluate(test_data, load_best_model=False))


# --- distributed data-parallel training (gloo, CPU processes) --------------------------------------------------------


@pytest.mark.parametrize("model", ["CL4SRec", "SRMA", "MCLRec", "BT4SRec"])
def test_two_processes_train_evaluate_and_save_once(tmp_path, model):
    config = tiny_config(tmp_path, **FAST)
    extra = {"pretrain_epochs": 1} if model == "BT4SRec" else {}  # its pre-training stage under DDP too
    result = run(model, None, config_dict={**config, **extra}, nproc=2, port=_free_port())
    assert result is not None and result["epochs_trained"] == 1
    checkpoints = sorted(p.name for p in Path(config["checkpoint_dir"]).glob("*.pth"))
    assert checkpoints == [Path(result["checkpoint"]).name]  # one file, by rank 0, and no "-last" left behind
    # the test set was evaluated once across the two processes: the reduced metrics equal one process's
    single = _single_process_test_result(result["checkpoint"])
    assert result["test_result"] == pytest.approx(single, abs=1.5e-4)  # RecBole rounds the reduced values
    assert all(0 <= v <= 1 for v in single.values()) and single["hit@20"] > 0


# --- a run killed mid-training resumes from its last checkpoint ------------------------------------------------------


def test_a_killed_run_resumes_from_the_next_epoch_with_its_optimiser_state(tmp_path):
    config = tiny_config(tmp_path, **FAST, epochs=40, stopping_step=100)
    args = [f"--{k}={v}" for k, v in config.items()] + ["--model=CL4SRec"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "run_recbole_srma.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saved = Path(config["checkpoint_dir"])
    deadline = time.time() + 240
    last = None
    while time.time() < deadline and proc.poll() is None:
        found = list(saved.glob("*-last.pth"))
        if found and torch.load(found[0], weights_only=True)["epoch"] >= 2:
            last = found[0]
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert last is not None, proc.stderr.read().decode()[-2000:]
    assert proc.returncode == -signal.SIGKILL

    checkpoint = torch.load(last, weights_only=True)  # whatever the moment of the kill, the file is complete
    epoch = checkpoint["epoch"]
    assert checkpoint["kind"] == "last" and Path(checkpoint["best_model_file"]).is_file()

    from logging import getLogger

    from recbole_srma.config import Config
    from recbole_srma.quick_start import _build

    resumed_config = Config(model="CL4SRec", config_dict=dict(config, epochs=epoch + 3))
    *_, train_data, valid_data, test_data, model = _build(resumed_config, getLogger())
    trainer = get_trainer("SEQUENTIAL", "CL4SRec")(resumed_config, model)
    trainer.resume_checkpoint(last)
    assert trainer.start_epoch == epoch + 1 and trainer.saved_model_file == checkpoint["best_model_file"]
    state, saved_state = trainer.optimizer.state_dict()["state"], checkpoint["optimizer"]["state"]
    assert state.keys() == saved_state.keys() and state
    for key in state:
        torch.testing.assert_close(state[key]["exp_avg"], saved_state[key]["exp_avg"])
        torch.testing.assert_close(state[key]["exp_avg_sq"], saved_state[key]["exp_avg_sq"])
    trainer.fit(train_data, valid_data, saved=True)
    assert sorted(trainer.train_loss_dict) == [epoch + 1, epoch + 2]  # the next epochs, not from scratch
    assert not Path(trainer.last_checkpoint_file).exists()
    result = trainer.evaluate(test_data, load_best_model=True)
    assert 0 <= result["ndcg@10"] <= 1


def test_the_resume_command_continues_a_killed_run(tmp_path):
    """The documented command: ``run_recbole_srma.py ... --resume=<name>-last.pth``."""
    config = tiny_config(tmp_path, **FAST, epochs=3)
    first = run_recbole_srma(model="PluginSASRec", config_dict=config)
    best = first["checkpoint"]
    # a "last" checkpoint as a killed run leaves it, after epoch 0
    checkpoint = torch.load(best, weights_only=True)
    checkpoint.update(kind="last", best_model_file=best, epoch=0)
    last = Path(best[:-4] + "-last.pth")
    torch.save(checkpoint, last)
    result = run_recbole_srma(model="PluginSASRec", config_dict=config, resume=str(last))
    # epochs 1 and 2 trained here, epoch 0 before the kill: the run as a whole trained 3
    assert result["epochs_trained"] == 3 and result["last_epoch"] == 2 and result["checkpoint"] == best
    assert not last.exists()


def test_a_resumed_run_reports_the_best_epoch_from_before_the_stop(tmp_path):
    config = tiny_config(tmp_path, **FAST, epochs=2)
    best = run_recbole_srma(model="PluginSASRec", config_dict=config)["checkpoint"]
    checkpoint = torch.load(best, weights_only=True)
    saved = checkpoint["best_valid_result"]
    assert saved and any(v == pytest.approx(checkpoint["best_valid_score"]) for v in saved.values())
    # a score no later epoch can beat: the best epoch stays the one before the stop
    checkpoint.update(kind="last", best_model_file=best, epoch=0, best_valid_score=2.0)
    last = Path(best[:-4] + "-last.pth")
    torch.save(checkpoint, last)
    result = run_recbole_srma(model="PluginSASRec", config_dict=config, resume=str(last))
    assert result["best_valid_result"] == pytest.approx(saved)


@pytest.mark.parametrize("model", ["CL4SRec", "MCLRec"])
def test_kill_and_resume_gives_the_uninterrupted_runs_metrics_bit_for_bit(tmp_path, monkeypatch, model):
    """The last checkpoint carries every RNG state (torch, numpy, Python, the loader's shuffling): the resumed run
    draws the same batches, views and dropout masks as a run that was never stopped."""
    import recbole.trainer

    from recbole_srma.errors import RunInterrupted

    settings = dict(FAST, epochs=4, stopping_step=100, show_progress=False)
    (tmp_path / "whole").mkdir(), (tmp_path / "stopped").mkdir()
    whole = run_recbole_srma(model=model, config_dict=tiny_config(tmp_path / "whole", **settings))

    status_file = tmp_path / "stopped" / "status.json"
    stopped_config = tiny_config(tmp_path / "stopped", **settings, status_file=str(status_file))
    original = recbole.trainer.Trainer._train_epoch

    def killed_in_epoch_2(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 2:
            raise KeyboardInterrupt  # after the trainer wrote the state of epoch 1
        return original(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(recbole.trainer.Trainer, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(RunInterrupted):
        run_recbole_srma(model=model, config_dict=stopped_config)
    monkeypatch.setattr(recbole.trainer.Trainer, "_train_epoch", original)

    from recbole_srma.trainer import read_status

    status = read_status(status_file)
    assert status["epochs_done"] == 2 and not status["finished"]
    last = torch.load(status["last_checkpoint_file"], weights_only=True)
    assert last["epoch"] == 1 and set(last["rng"][0]) >= {"torch", "numpy", "python", "train_loader"}

    resumed = run_recbole_srma(model=model, config_dict=stopped_config, resume=status["last_checkpoint_file"])
    assert resumed["epochs_trained"] == whole["epochs_trained"] == 4
    assert resumed["best_valid_result"] == whole["best_valid_result"]
    assert resumed["test_result"] == whole["test_result"]
    status = read_status(status_file)
    assert status["finished"] and status["last_checkpoint_file"] is None
    assert status["best_model_file"] == str(Path(resumed["checkpoint"]).resolve())


# --- logging: the log file, TensorBoard scalars, the Weights & Biases switch -----------------------------------------


def test_log_file_and_tensorboard_scalars_for_each_loss_term_and_metric(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # RecBole writes log/ and log_tensorboard/ under the working directory
    result = run_recbole_srma(model="CL4SRec", config_dict=tiny_config(tmp_path, **FAST, epochs=2, state="INFO"))
    logs = list((tmp_path / "log" / "CL4SRec").glob("*.log"))
    assert len(logs) == 1 and "test result" in logs[0].read_text()
    runs = list((tmp_path / "log_tensorboard").iterdir())
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"Loss/Train0", "Loss/Train1"} <= tags  # next-item and contrastive terms, per epoch
    for metric in ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert [e.step for e in events.Scalars(f"Valid/{metric}")] == [0, 1]
        (test,) = events.Scalars(f"Test/{metric}")
        assert test.value == pytest.approx(result["test_result"][metric]) and test.step == result["best_epoch"]
    assert len(events.Scalars("Loss/Train1")) == 2


class FakeWandb:
    """Stands for the wandb package: records what RecBole's WandbLogger sends."""

    def __init__(self):
        self.run, self.inits, self.logged = None, [], []

    def init(self, project, config):
        self.inits.append((project, config["model"]))
        self.run = type("Run", (), {"summary": {}})()

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, metrics, commit=True):
        self.logged.append(dict(metrics))


def test_weights_and_biases_switch_still_works(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, **FAST, epochs=2, log_wandb=True, wandb_project="srma-test")
    result = run_recbole_srma(model="MCLRec", config_dict=config)
    assert fake.inits == [("srma-test", "MCLRec")]
    train_steps = [m["train_step"] for m in fake.logged if "train_step" in m]
    valid = [m for m in fake.logged if "valid/ndcg@10" in m]
    assert train_steps == [0, 1] and len(valid) == 2
    assert fake.run.summary["eval/ndcg@10"] == pytest.approx(result["test_result"]["ndcg@10"])


def test_wandb_switch_off_never_imports_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import would fail
    monkeypatch.chdir(tmp_path)
    run_recbole_srma(model="PluginSASRec", config_dict=tiny_config(tmp_path, **FAST))


# --- hyper-parameter search with RecBole's HyperTuning ---------------------------------------------------------------


def test_hyper_parameter_search_writes_the_results_table_and_the_best_config(tmp_path, monkeypatch):
    import yaml

    from recbole_srma import hyper

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, **FAST, epochs=1)
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate choice [0.01,0.0001]\nhidden_dropout_prob choice [0.2]\n")
    out = tmp_path / "search.result"
    argv = ["--model=PluginSASRec", f"--params_file={space}", f"--output_file={out}"]
    argv += [f"--{k}={v}" for k, v in config.items() if k != "state"]
    monkeypatch.setattr(sys, "argv", ["hyper", *argv])
    assert hyper.main(argv) == 0

    table = (tmp_path / "search.result.md").read_text().splitlines()
    rows = [line for line in table if "learning_rate:" in line]
    assert len(rows) == 2  # the whole grid, each trial once
    scores = [float(row.split("|")[2]) for row in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[1]  # 100x the learning rate learns faster
    best = yaml.safe_load((tmp_path / "search.result.best.yaml").read_text())
    assert best == {"model": "PluginSASRec", "dataset": "tiny-seq", "learning_rate": 0.01, "hidden_dropout_prob": 0.2}
    assert "learning_rate:0.01" in rows[0]
    # the best config is a config file for the next run
    result = run_recbole_srma(config_file_list=[str(tmp_path / "search.result.best.yaml")], config_dict=config)
    assert result["best_valid_score"] == pytest.approx(scores[0], abs=1e-4)


def test_hyper_parameter_search_refuses_a_bad_space(tmp_path, monkeypatch, capsys):
    from recbole_srma import hyper

    monkeypatch.chdir(tmp_path)
    config = tiny_config(tmp_path, **FAST, epochs=1)
    space = tmp_path / "space.hyper"
    space.write_text("learning_rate gaussian 0.1,0.2\n")
    argv = ["--model=PluginSASRec", f"--params_file={space}"] + [f"--{k}={v}" for k, v in config.items()]
    monkeypatch.setattr(sys, "argv", ["hyper", *argv])
    assert hyper.main(argv) == 2
    assert "bad search space" in capsys.readouterr().err
