"""The script as a user runs it: conventions of RecBole's run_recbole.py, and clear errors on bad input."""

import os
import subprocess
import sys
from pathlib import Path

from tiny import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole_srma.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_train_with_config_files_and_overrides(tmp_path):
    data = make_tiny_dataset(tmp_path)
    (tmp_path / "a.yaml").write_text("epochs: 1\nhidden_size: 16\ninner_size: 32\nshow_progress: False\n")
    (tmp_path / "b.yaml").write_text("MAX_ITEM_LIST_LENGTH: 20\ntrain_batch_size: 64\n")
    out = _run(
        [
            "--model=CL4SRec",
            f"--dataset={data['dataset']}",
            f"--data_path={data['data_path']}",
            "--config_files=a.yaml,b.yaml",
            "--cl_lambda=0.2",
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "cl_lambda = 0.2" in log and "train_batch_size = 64" in log
    table = log[log.rindex("CL4SRec on tiny-seq") :]
    for metric in ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"):
        assert metric in table
    assert "valid" in table and "test" in table
    assert list((tmp_path / "saved").glob("CL4SRec-tiny-seq-*.pth"))
    assert list((tmp_path / "log" / "CL4SRec").glob("*.log"))


def test_bad_inputs_fail_with_a_clear_message_and_no_traceback(tmp_path):
    data = make_tiny_dataset(tmp_path)
    base = [f"--dataset={data['dataset']}", f"--data_path={data['data_path']}"]
    cases = [
        (["--model=CL4SRecc", *base], "unknown model 'CL4SRecc'"),
        (
            ["--model=CL4SRec", "--dataset=no-such-data", f"--data_path={data['data_path']}"],
            "Unknown dataset 'no-such-data'",
        ),
        (["--model=CL4SRec", *base, "--cl_lambd=0.3"], "did you mean 'cl_lambda'"),
        (["--model=CL4SRec", *base, "--mask_gamma=1.3"], "mask_gamma' must be in [0, 1]"),
    ]
    for args, message in cases:
        out = _run(args, tmp_path)
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert message in out.stderr, (args, out.stderr[-2000:])
        assert "Traceback" not in out.stderr, args
