"""A RecBole user's first hour: bad input gets one line and exit code 2 and leaves no files, Ctrl-C says how to
resume, the demo runs offline, --help, --threads, the GPU switch on a CPU, two distributed runs at once, a
TensorBoard run folder per stage, and users with a single interaction."""

import glob
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny import make_tiny_dataset, tiny_config

from recbole_srma.config import Config

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_recbole_srma", REPO / "run_recbole_srma.py")
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)
FAST = {"hidden_size": 16, "inner_size": 32}
RUN_FOLDERS = ("log", "log_tensorboard", "saved")


def _argv(config, **extra):
    return [f"--{k}={v}" for k, v in {**config, **extra}.items()]


def _main(monkeypatch, args):
    """The script's main() in this process, with the command line RecBole's Config reads."""
    monkeypatch.setattr(sys, "argv", ["run_recbole_srma.py", *args])
    return script.main(args)


def _script(args, cwd, env=None, output=subprocess.PIPE):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, str(REPO / "run_recbole_srma.py"), *args],
        cwd=cwd, env=env, stdout=output, stderr=output, text=True,
        # a suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and so would the run
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _left_behind(root):
    return [name for name in RUN_FOLDERS if (Path(root) / name).exists()]


# --- bad input: one line, exit code 2, nothing written -----------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path):
    data = make_tiny_dataset(tmp_path)
    (tmp_path / "broken.yaml").write_text("epochs: 3\nmetrics: [Hit, NDCG\n")
    (tmp_path / "list.yaml").write_text("- epochs: 3\n")
    base = ["--model=PluginSASRec", f"--dataset={data['dataset']}", f"--data_path={data['data_path']}",
            "--show_progress=False", "--state=WARNING"]
    return base, [
        (["--train_batch_size=0"], "'train_batch_size' must be an integer >= 1, got 0"),
        (["--learning_rate=-1"], "'learning_rate' must be > 0, got -1"),
        (["--epochs=-1"], "'epochs' must be an integer >= 1, got -1"),
        (["--eval_batch_size=0"], "'eval_batch_size' must be an integer >= 1"),
        (["--learner=adamw"], "'learner' must be one of"),
        (["--valid_metric=NDCG@7"], "valid_metric 'NDCG@7' is not among the metrics"),
        (["--config_files=missing.yaml"], "config file not found: missing.yaml"),
        (["--config_files=broken.yaml"], "config file broken.yaml is not valid yaml, line 3"),
        (["--config_files=list.yaml"], "config file list.yaml must hold 'key: value' lines"),
        # found only once the data are loaded (80 items): the log file and TensorBoard folder are removed again
        (["--topk=[5,10,100]"], "has 80 items, not more than the largest top-k cut-off (100)"),
        (["--resume=no-such.pth"], "checkpoint file not found: no-such.pth"),
        (["--seed=1", "--seed=2"], "--seed=2 gives a key a second, different value"),
    ]


def test_bad_input_is_one_error_line_with_exit_code_2_and_leaves_nothing(tmp_path, monkeypatch, capsys, bad_inputs):
    base, cases = bad_inputs
    for extra, message in cases:
        assert _main(monkeypatch, base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and message in err[-1], (extra, err)
        assert _left_behind(tmp_path) == [], extra


def test_bad_input_from_the_real_script_has_no_traceback(tmp_path, bad_inputs):
    base, cases = bad_inputs
    for extra, message in [cases[2], cases[7], cases[9]]:
        proc = _script(base + extra, cwd=tmp_path)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in err, (extra, err[-2000:])
        assert err.strip().splitlines()[-1].startswith("error: ") and message in err
        assert _left_behind(tmp_path) == [], extra


def test_recboles_own_refusals_are_clear_errors_too(tmp_path):
    config = tiny_config(tmp_path)
    neg = {"distribution": "uniform", "sample_num": 1}
    with pytest.raises(Exception) as info:
        Config(model="SASRec", config_dict=dict(config, loss_type="CE", train_neg_sample_args=neg))
    assert type(info.value).__name__ == "ConfigError" and "should be None when the loss_type is CE" in str(info.value)
    with pytest.raises(Exception) as info:
        Config(model="SASRec", config_dict=dict(config, metrics=["Hit", "Foo"]))
    assert "unknown metric(s) ['Foo']" in str(info.value)


def test_a_run_interrupted_before_training_leaves_nothing(tmp_path, monkeypatch, capsys):
    import recbole_srma.quick_start as quick_start

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(quick_start, "prepare_dataset", interrupted)
    config = tiny_config(tmp_path, **FAST)
    assert _main(monkeypatch, _argv(config, model="PluginSASRec")) == 130
    assert "interrupted before training started: nothing was saved" in capsys.readouterr().err
    assert _left_behind(tmp_path) == []


# --- Ctrl-C during training --------------------------------------------------------------------------------------


def test_ctrl_c_keeps_the_last_checkpoint_and_prints_the_command_that_resumes(tmp_path):
    # small batches: epochs of a second or two, so the interrupt lands mid-run
    config = tiny_config(tmp_path, **FAST, epochs=6, stopping_step=100, train_batch_size=8, state="INFO")
    with open(tmp_path / "first.txt", "w") as output:  # a file, not a pipe nobody reads while the run logs
        proc = _script(_argv(config, model="CL4SRec"), cwd=tmp_path, output=output)
        deadline = time.time() + 240
        last = f"{config['checkpoint_dir']}/*-last.pth"
        while time.time() < deadline and proc.poll() is None and not glob.glob(last):
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    err = (tmp_path / "first.txt").read_text()
    ignored = [line for line in err.splitlines() if "ignored" in line or "Interrupt" in line]  # if Ctrl-C was lost
    assert proc.returncode == 130 and "Traceback" not in err, (ignored, err[-3000:])
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted; continue with: python ")
    resume = line.split("--resume=")[1]
    assert resume.endswith("-last.pth") and Path(resume).is_file()
    epoch = torch.load(resume, weights_only=True)["epoch"]

    # the printed command continues the run to its end
    command = line.split("continue with: ")[1].split()
    done = _script(command[2:], cwd=tmp_path)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    assert not Path(resume).exists()  # a finished run removes its -last file
    log = max((tmp_path / "log" / "CL4SRec").glob("*.log"), key=os.path.getmtime).read_text()
    assert f"Resume training from epoch {epoch + 1}" in log


def test_ctrl_c_during_the_test_names_the_trained_model(tmp_path, monkeypatch, capsys):
    from recbole_srma.trainer import SafeCheckpointMixin

    evaluate = SafeCheckpointMixin.evaluate

    def interrupted_test(self, eval_data, load_best_model=True, **kwargs):
        if load_best_model:  # the final test reloads the best model; validation does not
            raise KeyboardInterrupt
        return evaluate(self, eval_data, load_best_model=False, **kwargs)

    monkeypatch.setattr(SafeCheckpointMixin, "evaluate", interrupted_test)
    config = tiny_config(tmp_path, **FAST)
    assert _main(monkeypatch, _argv(config, model="PluginSASRec")) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interrupted during the test: training had finished and its best model is ")
    assert Path(err.split("best model is ")[1].split(" ")[0]).is_file()


# --- the demo, --help, threads, the GPU switch, ports --------------------------------------------------------------


def test_no_model_and_no_dataset_runs_the_demo_config(monkeypatch, capsys):
    import recbole_srma.quick_start as quick_start

    calls = []
    monkeypatch.setattr(quick_start, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    assert _main(monkeypatch, []) == 0
    (args, kwargs), = calls
    assert args == (None, None) and kwargs["config_file_list"] == [str(REPO / "properties" / "demo.yaml")]
    assert "running the demo, SRMA on RecBole's ml-100k sample" in capsys.readouterr().err
    demo = yaml.safe_load((REPO / "properties" / "demo.yaml").read_text())
    assert demo["model"] == "SRMA" and demo["dataset"] == "ml-100k"
    # the sample ships inside RecBole's package: nothing to download
    config = Config(config_file_list=kwargs["config_file_list"], config_dict={"state": "WARNING"})
    assert Path(config["data_path"], "ml-100k.inter").is_file()
    assert config["epochs"] == demo["epochs"] and config["complement_epochs"] == demo["complement_epochs"]


def test_the_demo_trains_and_evaluates_offline(tmp_path):
    # the demo's own command, with a smaller budget than the README's (which takes about 3 minutes)
    proc = _script(["--epochs=1", "--complement_epochs=1", "--MAX_ITEM_LIST_LENGTH=5", "--show_progress=False"],
                   cwd=tmp_path, env={"RECBOLE_SRMA_OFFLINE": "1", "OMP_NUM_THREADS": "2"})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    log = out + err
    assert "SRMA on ml-100k:" in log and "test" in log[log.rindex("SRMA on ml-100k:"):]
    assert "SRMA first pre-trains its transformer complement encoder for up to complement_epochs=1" in log


def test_help_lists_models_datasets_options_and_where_the_rest_is_documented():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(REPO / "run_recbole_srma.py"), "--help"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in ("SRMA", "CL4SRec", "MCLRec", "BT4SRec", "SASRec", "LightGCN", "amazon-sports", "yelp", "ml-100k",
                     "--raw_data_dir", "--threads", "--epochs=300", "--learning_rate=0.001", "--complement_epochs=30",
                     "properties/overall.yaml", "docs/models.md", "the demo"):
        assert expected in text, expected


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_option_sets_torch_threads_and_says_so(tmp_path, monkeypatch, capsys, restore_threads):
    config = tiny_config(tmp_path, **FAST, state="INFO")
    assert _main(monkeypatch, _argv(config, model="PluginSASRec", threads=1)) == 0
    assert torch.get_num_threads() == 1
    log = next((tmp_path / "log" / "PluginSASRec").glob("*.log")).read_text()
    assert "CPU threads: 1 (threads)" in log


def test_gpu_id_without_cuda_warns_and_reports_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    asked = Config(model="PluginSASRec", config_dict=tiny_config(tmp_path, gpu_id="0"))
    assert asked["device"].type == "cpu" and asked["use_gpu"] is False
    (warning,) = asked.start_warnings
    assert "gpu_id=0 asks for a GPU, but CUDA is not available" in warning and "running on the CPU" in warning
    default = Config(model="PluginSASRec", config_dict=tiny_config(tmp_path))
    assert default["use_gpu"] is False and default.start_warnings == []  # RecBole's default gpu_id: no warning


def test_two_distributed_runs_started_together_do_not_collide_on_a_port(tmp_path):
    procs = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        config = tiny_config(root, **FAST)
        procs.append((root, _script(_argv(config, model="PluginSASRec") + ["--nproc=2"], cwd=root)))
    for root, proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert len(list((root / "saved").glob("*.pth"))) == 1


# --- TensorBoard: a run folder per training stage ----------------------------------------------------------------


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder)).Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("model, stage, extra", [
    ("SRMA", "complement_pretraining", {"complement_epochs": 2}),
    ("BT4SRec", "pretraining", {"pretrain_epochs": 2}),
])
def test_pretraining_stages_have_their_own_tensorboard_run(tmp_path, model, stage, extra):
    from recbole_srma.quick_start import run_recbole_srma

    run_recbole_srma(model=model, config_dict=tiny_config(tmp_path, **FAST, epochs=2, **extra))
    (run,) = (tmp_path / "log_tensorboard").iterdir()
    main = _scalars(run)
    assert main["Valid/ndcg@10"] == [0, 1]  # one value per main epoch, none from the stage
    assert main["Loss/Train0"] == [0, 1]
    staged = _scalars(run / stage)
    assert staged["Loss/Train"] == [0, 1] and "Loss/Train0" not in staged


def test_srma_says_up_front_that_it_pretrains_on_its_own_budget(tmp_path):
    from recbole_srma.quick_start import run_recbole_srma

    run_recbole_srma(model="SRMA", config_dict=tiny_config(tmp_path, **FAST, complement_epochs=1, state="INFO"))
    log = next((tmp_path / "log" / "SRMA").glob("*.log")).read_text().splitlines()
    note = [i for i, line in enumerate(log) if "SRMA first pre-trains its transformer complement encoder" in line]
    assert note and "complement_epochs=1" in log[note[0]] and "--epochs does not limit it" in log[note[0]]
    first_epoch = next(i for i, line in enumerate(log) if "epoch 0 training" in line)
    assert note[0] < first_epoch


# --- users with a single interaction -----------------------------------------------------------------------------


def test_a_user_with_a_single_interaction_is_reported_at_conversion_and_at_every_run(tmp_path, caplog):
    from tiny import write_tiny_sequences

    raw = write_tiny_sequences(tmp_path / "raw.txt")
    raw.write_text(raw.read_text() + "301 5\n302 7 8\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "recbole_srma.data", "convert", str(raw), "--name", "singles",
                           "--data_path", str(tmp_path / "data")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "warning: singles: 1 user(s) have a single interaction (first: user 301, line 301" in proc.stderr

    from recbole_srma.data import prepare_dataset

    config = {"dataset": "singles", "data_path": str(tmp_path / "data" / "singles")}
    with caplog.at_level(logging.WARNING, logger="recbole_srma.data"):
        prepare_dataset(config)
    assert any("1 user(s) have a single interaction" in r.getMessage() for r in caplog.records)
