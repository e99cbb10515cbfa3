"""Resumable benchmark runner: train and evaluate several models and seeds on one dataset, one subprocess per run.

    python bench/run_models.py --dataset amazon-toys --models SASRec CL4SRec SRMA --seeds 2020 2021 \
        [--epochs 50] [--time-budget-min 60] [--set key=value ...] [--raw-data-dir DIR] [--data-path DIR] \
        [--results bench/results/amazon-toys.json] [--runs-dir bench/runs] [--tag NAME]

Each (model, seed) run executes ``run_recbole_srma`` in its own Python process (``--worker`` mode of this script), so
a crash, an out-of-memory kill or a time-budget stop of one run leaves the others alone, and the peak memory is the
run's own. The full log of a run is kept in ``<runs-dir>/<dataset>/<model>-seed<seed>[-<tag>].log``; RecBole's own
log files, tensorboard files and checkpoints go under ``<runs-dir>/<dataset>/`` too.

After each run one record is written (atomically) to the results file, a JSON list; a run already recorded there with
status "ok" for the same dataset, model, seed, tag and overrides is skipped, so an interrupted benchmark resumes
where it stopped. A run that was stopped (time budget, Ctrl-C, SIGTERM, a killed session) continues from the state
after its last finished epoch (the trainer's ``<checkpoint>-last.pth``, found through the run's log) with the same
optimiser state, early-stopping counter and best checkpoint; its log is appended to and its wall time accumulates
across the pieces (kept in ``<log>.state.json``). A run that finished but was not recorded (the runner was killed
between its worker's last line and the results file) is recorded from its log. ``--restart`` starts such runs from
scratch instead. "failed" runs and runs stopped before their first epoch ended start again.
"""

import argparse
import ast
import datetime
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by tests, not run as a script
from render_results import fmt_time  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["SASRec", "CL4SRec", "SRMA"]
METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
RESULT_PREFIX = "BENCH_RESULT "
ENV_PREFIX = "BENCH_ENV "
LOG_TAIL_LINES = 40
KILL_GRACE_S = 10
TICK_S = 30  # how often a running run's accumulated wall time is written to its state file


# ----------------------------------------------------------------------------------------------------------------
# Worker: one run in its own process
# ----------------------------------------------------------------------------------------------------------------


def worker_main(spec_json):
    """Run one model/seed as described by ``spec_json``; print the result as one ``BENCH_RESULT {json}`` line."""
    spec = json.loads(spec_json)
    # RecBole's Config reads every --key=value of sys.argv: the worker's own arguments must not reach it.
    sys.argv = [sys.argv[0]]

    import resource

    import torch

    from recbole_srma.config import Config, protocol_settings
    from recbole_srma.quick_start import run_recbole_srma

    model, dataset, config_dict = spec["model"], spec["dataset"], spec["config_dict"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    # The resolved configuration (cheap to build): the epoch budget and the device the run will really use.
    files = spec.get("config_files") or None
    config = Config(model=model, dataset=dataset, config_file_list=files, config_dict=dict(config_dict))
    if not config.follows_protocol:
        # its rows would sit in a table of results computed under another split and other metrics
        print(f"error: {model} keeps RecBole's own defaults (it does not follow the plugin's protocol): it cannot be "
              "compared in these tables", file=sys.stderr, flush=True)
        return 2
    device = config["device"]
    env = {
        "protocol": protocol_settings(config),
        "epochs": config["epochs"],
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
    }
    print(ENV_PREFIX + json.dumps(env), flush=True)

    result = run_recbole_srma(
        model=model, dataset=dataset, config_file_list=files, config_dict=dict(config_dict), saved=True,
        resume=spec.get("resume"),
    )
    out = {
        **env,
        "best_valid_score": float(result["best_valid_score"]),
        "valid": dict(result["best_valid_result"] or {}),
        "test": dict(result["test_result"] or {}),
        "epochs_trained": result["epochs_trained"],
        "last_epoch": result["last_epoch"],
        "best_epoch": result["best_epoch"],
        "stopped_early": bool(result["stopped_early"]),
        "checkpoint": result["checkpoint"],
        "worker_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    sys.stdout.flush()
    sys.stderr.flush()
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parent: plan, launch, record
# ----------------------------------------------------------------------------------------------------------------


def parse_value(text):
    """A ``--set`` value as RecBole's command line reads it: a Python / JSON / YAML literal, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml

        value = yaml.safe_load(text)
        if not isinstance(value, str):
            return value
    except Exception:
        pass
    return text


def parse_overrides(items):
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise SystemExit(f"error: --set expects key=value, got '{item}'")
        overrides[key] = parse_value(value.strip())
    return overrides


def run_key(dataset, model, seed, tag, overrides, config_files=None):
    """What makes two runs the same run (paths, threads and the time budget do not)."""
    overrides = json.dumps(overrides or {}, sort_keys=True, default=str)
    return (dataset, model, int(seed), tag or None, overrides, tuple(config_files or ()))


def record_key(record):
    return run_key(
        record["dataset"], record["model"], record["seed"], record.get("tag"), record.get("overrides"),
        record.get("config_files"),
    )


def load_results(path):
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    if not text.strip():
        return []
    records = json.loads(text)
    if not isinstance(records, list):
        raise SystemExit(f"error: {path} does not hold a JSON list of run records")
    return records


def write_results(path, records):
    """Atomic: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_record(path, record):
    """Re-read the file (another runner may have written to it), replace the run's old record or append.

    Under an exclusive lock on a side file, so that two runners sharing a results file (e.g. two 1-thread runners
    on a 2-core machine) cannot lose each other's records.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = load_results(path)
        key = record_key(record)
        records = [r for r in records if record_key(r) != key]
        records.append(record)
        write_results(path, records)


def _git(*args):
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state():
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, (bool(status) if status is not None else None)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info():
    """The machine as the parent sees it; device, GPU and threads are filled in from the worker's report."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "recbole": _version("recbole"),
        "device": None,
        "gpu_name": None,
        "torch_threads": None,
    }


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def log_path(runs_dir, dataset, model, seed, tag):
    suffix = f"-{tag}" if tag else ""
    return Path(runs_dir) / dataset / f"{model}-seed{seed}{suffix}.log"


def equivalent_command(model, dataset, seed, overrides, paths, config_files=()):
    """The user-facing command that trains the same run outside the benchmark."""
    args = ["python", "run_recbole_srma.py", f"--model={model}", f"--dataset={dataset}", f"--seed={seed}"]
    if config_files:
        args.append("--config_files=" + ",".join(config_files))
    for key, value in {**overrides, **paths}.items():
        args.append(f"--{key}={value}")
    return shlex.join(args)


def _parse_prefixed(text, prefix):
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            try:
                return json.loads(line[len(prefix) :])
            except ValueError:
                return None
    return None


def _stop(pid):
    """SIGTERM the run's process group, SIGKILL it after a grace period; reap the run: (wait status, rusage)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        done, status, rusage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, rusage = os.wait4(pid, 0)
    try:  # anything the run started that outlived it
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return status, rusage


def launch(spec, log_file, cwd, time_budget_s=None, threads=None, on_tick=None):
    """Run the worker for ``spec``; return (exit code, wall seconds, peak RSS in MiB, timed out).

    The peak RSS is the run process's own maximum resident set size (``wait4``'s rusage of that child only).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
        start_new_session=True,
    )
    timed_out = False
    last_tick = start
    try:
        while True:
            done, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            if time_budget_s is not None and time.monotonic() - start > time_budget_s:
                timed_out = True
                status, rusage = _stop(proc.pid)
                break
            if on_tick is not None and time.monotonic() - last_tick >= TICK_S:
                last_tick = time.monotonic()
                on_tick(last_tick - start)
            time.sleep(0.2)
    except BaseException:  # Ctrl-C or SIGTERM: take the run down with us
        _stop(proc.pid)
        raise
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, rusage.ru_maxrss / 1024, timed_out


_SAVED = re.compile(r"Saving current: (\S+\.pth)")


def state_path(log):
    return log.with_name(log.stem + ".state.json")


def read_state(log, key):
    """The run's state file if it belongs to this run (same identity), else None."""
    path = state_path(log)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("key") == json.loads(json.dumps(key)) else None


def write_state(log, state):
    path = state_path(log)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def resume_point(log, key):
    """Where a stopped run continues: (its trainer's ``-last.pth``, its state), or (None, None) to start afresh.

    The log names the run's best-model checkpoint (RecBole's "Saving current: <file>" lines; a resumed run keeps
    writing to the same file); the trainer keeps ``<file minus .pth>-last.pth`` while training runs and removes it
    when training ends.
    """
    state = read_state(log, key)
    if state is None or not log.is_file():
        return None, None
    saved = _SAVED.findall(_ANSI.sub("", log.read_text(errors="replace")))
    if not saved:
        return None, None
    last = saved[-1][: -len(".pth")] + "-last.pth"
    return (last, state) if os.path.isfile(last) else (None, None)


def finished_in_log(log, key):
    """The result of a run that finished but was never recorded (its runner was stopped between the worker's last
    line and the results file), read from its log; None otherwise.

    Only a run of this identity (its state file) whose trainer has removed its ``-last.pth`` counts: a fresh run
    rewrites its log, so a result line in it is that run's.
    """
    if read_state(log, key) is None or not log.is_file() or resume_point(log, key)[0] is not None:
        return None
    return _parse_prefixed(log.read_text(errors="replace"), RESULT_PREFIX)


def run_one(args, model, seed, overrides, config_files, paths, results_path, machine, git):
    dataset, tag = args.dataset, args.tag
    runs_dir = Path(args.runs_dir).resolve()
    log = log_path(runs_dir, dataset, model, seed, tag)
    log.parent.mkdir(parents=True, exist_ok=True)
    key = run_key(dataset, model, seed, tag, overrides, config_files)
    config_dict = {
        **overrides,
        **paths,
        "seed": seed,
        "show_progress": False,
        "checkpoint_dir": str(runs_dir / dataset / "saved"),
    }
    resume_from, state = (None, None) if args.restart else resume_point(log, key)
    spec = {
        "model": model,
        "dataset": dataset,
        "config_dict": config_dict,
        "config_files": [str((REPO / f) if not Path(f).is_absolute() else f) for f in config_files],
        "threads": args.threads,
        "resume": resume_from,
    }
    budget_s = args.time_budget_min * 60 if args.time_budget_min else None
    started = now_utc()
    command = shlex.join([sys.executable, *sys.argv])
    recovered = None if args.restart or resume_from else finished_in_log(log, key)
    if recovered is not None:
        state = read_state(log, key)  # the stopped runner's: its start and wall time
    elif state is None:
        state = {"key": key, "started_utc": started, "wall_time_s": 0.0, "pieces": []}
    prior_wall = state["wall_time_s"]
    interrupted = None
    if recovered is not None:
        with open(log, "a") as f:
            f.write(f"\n# finished before its runner was stopped: recorded from this log {started}\n")
        returncode, timed_out = 0, False
        peak_mb = recovered.get("worker_max_rss_mb") or 0.0
    else:
        state["pieces"].append({"started_utc": started, "resumed_from": resume_from, "wall_time_s": 0.0})

    def on_tick(elapsed):
        state["pieces"][-1]["wall_time_s"] = round(elapsed, 2)
        state["wall_time_s"] = round(prior_wall + elapsed, 2)
        write_state(log, state)

    if recovered is None:
        with open(log, "a" if resume_from else "w") as f:
            if resume_from:
                f.write(f"\n# {command}\n# resumed from {resume_from} {started}\n")
            else:
                f.write(f"# {command}\n# run: model={model} seed={seed} tag={tag} started {started}\n")
            f.write(f"# config_dict: {json.dumps(config_dict, default=str)}\n")
            f.flush()
            run_start = time.monotonic()
            try:
                returncode, wall, peak_mb, timed_out = launch(
                    spec, f, cwd=runs_dir / dataset, time_budget_s=budget_s, threads=args.threads, on_tick=on_tick
                )
            except BaseException as exc:  # Ctrl-C / SIGTERM: launch stopped the run; record where it got
                interrupted = exc
                returncode, wall, peak_mb, timed_out = None, time.monotonic() - run_start, 0.0, False
        on_tick(wall)
    if timed_out:
        with open(log, "a") as f:
            f.write(f"\n# stopped by the benchmark: time budget of {budget_s:.0f} s exceeded after {wall:.0f} s\n")
    if interrupted is not None:
        with open(log, "a") as f:
            f.write(f"\n# interrupted ({type(interrupted).__name__}) after {wall:.0f} s\n")
    text = log.read_text(errors="replace")
    result = _parse_prefixed(text, RESULT_PREFIX) if interrupted is None and not timed_out else None
    env = _parse_prefixed(text, ENV_PREFIX) or {}
    machine = dict(machine, **{k: env.get(k) for k in ("device", "gpu_name", "torch_threads")})

    if interrupted is not None:
        status = "interrupted"
    elif timed_out:
        status = "timeout"
    elif returncode == 0 and result is not None:
        status = "ok"
    else:
        status = "failed"
    record = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "tag": tag,
        "overrides": overrides,
        "config_files": list(config_files),
        "status": status,
        "epochs": env.get("epochs", overrides.get("epochs")),
        "epochs_trained": None,
        "best_epoch": None,
        "stopped_early": None,
        "valid": None,
        "test": None,
        "wall_time_s": state["wall_time_s"],
        "pieces": len(state["pieces"]),
        "time_budget_s": budget_s,
        "threads": args.threads,
        "peak_rss_mb": round(peak_mb, 1),
        "gpu_peak_mem_mb": None,
        "returncode": returncode,
        "machine": machine,
        "git_commit": git[0],
        "git_dirty": git[1],
        "command": command,
        "protocol": env.get("protocol"),
        "equivalent_command": equivalent_command(model, dataset, seed, overrides, paths, config_files),
        "log": _display_path(log),
        "started_utc": state["started_utc"],
    }
    if status == "ok":
        record.update(
            epochs=result["epochs"],
            epochs_trained=result["epochs_trained"],
            best_epoch=result["best_epoch"],
            stopped_early=result["stopped_early"],
            valid={m: result["valid"].get(m) for m in METRICS},
            test={m: result["test"].get(m) for m in METRICS},
            gpu_peak_mem_mb=round(result["gpu_peak_mem_mb"], 1) if result.get("gpu_peak_mem_mb") else None,
            checkpoint=_display_path(result["checkpoint"]) if result.get("checkpoint") else None,
            **training_curves(text),
        )
    elif status in ("timeout", "interrupted"):
        # how far it got; the next invocation continues from here
        record.update(training_curves(text), resumable=resume_point(log, key)[0] is not None)
    else:
        record["error_tail"] = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
    save_record(results_path, record)
    if interrupted is not None:
        raise interrupted
    return record


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EPOCH_TRAIN = re.compile(r"epoch (\d+) training \[time: ([\d.]+)s")
_EPOCH_VALID = re.compile(r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]")


def training_curves(text):
    """Per-epoch training time and validation score, from a run's log (RecBole's epoch lines).

    Returns ``{"epoch_times_s": [[epoch, seconds], ...], "valid_curve": [[epoch, score], ...]}``. A stage before
    training that logs epochs of its own with RecBole's trainer (SRMA's complement pre-training) starts its numbering
    again at 0: only the last sequence of epochs, the model's own training, is kept. A run resumed after a stop
    continues its numbering in the same log; an epoch logged twice (the one the stop interrupted) keeps its last
    lines.
    """
    text = _ANSI.sub("", text)

    def last_sequence(pairs):
        out = []
        for epoch, value in pairs:
            epoch = int(epoch)
            if epoch == 0:
                out = []
            else:  # a resumed run repeats the epoch it was stopped in: the later lines replace the earlier ones
                out = [pair for pair in out if pair[0] < epoch]
            out.append([epoch, float(value)])
        return out

    return {
        "epoch_times_s": last_sequence(_EPOCH_TRAIN.findall(text)),
        "valid_curve": last_sequence(_EPOCH_VALID.findall(text)),
    }


def backfill_curves(results_path):
    """(Re)compute the curves of the records whose run log is still there (the log is the source)."""
    records = load_results(results_path)
    changed = 0
    for record in records:
        log = REPO / record.get("log", "") if record.get("log") else None
        if record.get("status") != "ok" or log is None or not log.is_file():
            continue
        record.update(training_curves(log.read_text(errors="replace")))
        changed += 1
    if changed:
        write_results(results_path, records)
    return changed


def _display_path(path):
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def print_table(rows):
    header = ["model", "seed", "tag", "status", "epochs", "test hit@10", "test ndcg@10", "wall", "peak RSS"]
    lines = [header]
    for note, r in rows:
        test = r.get("test") or {}
        epochs = f"{r['epochs_trained']}/{r['epochs']}" if r.get("epochs_trained") is not None else "-"
        lines.append(
            [
                r["model"],
                str(r["seed"]),
                r.get("tag") or "",
                r["status"] + (f" ({note})" if note else ""),
                epochs,
                f"{test['hit@10']:.4f}" if test.get("hit@10") is not None else "-",
                f"{test['ndcg@10']:.4f}" if test.get("ndcg@10") is not None else "-",
                fmt_time(r.get("wall_time_s")),
                f"{r['peak_rss_mb']:.0f}MiB" if r.get("peak_rss_mb") is not None else "-",
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for i, row in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name (amazon-toys, amazon-beauty, ...)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="models to run (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020], help="seeds (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default: the config's, 300)")
    parser.add_argument(
        "--time-budget-min", type=float, default=None, help="wall-clock limit per run and invocation, in minutes; "
        "past it the run is stopped and recorded as 'timeout' (no test metrics); the next invocation continues it"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every run (repeatable); part of a run's identity",
    )
    parser.add_argument(
        "--config-files", nargs="+", default=[], metavar="FILE",
        help="yaml config files for every run (e.g. properties/ablation/SRMA-wo-D.yaml); part of a run's identity",
    )
    parser.add_argument("--raw-data-dir", default=None, help="folder holding the raw benchmark files")
    parser.add_argument("--data-path", default=None, help="converted datasets folder (default: ./dataset)")
    parser.add_argument("--results", default=None, help="results JSON (default: bench/results/<dataset>.json)")
    parser.add_argument("--runs-dir", default=str(REPO / "bench" / "runs"), help="logs (default: %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per run (default: torch's choice); on a "
        "shared machine 1 can be much faster than oversubscribed cores. Not part of a run's identity",
    )
    parser.add_argument("--tag", default=None, help="name for this set of runs (in log names and records)")
    parser.add_argument(
        "--restart", action="store_true",
        help="start stopped runs from scratch instead of continuing them from their last finished epoch",
    )
    parser.add_argument(
        "--backfill-curves", action="store_true",
        help="only (re)compute the per-epoch curves of the dataset's records from their kept logs, then exit",
    )
    return parser


def claim_run(log):
    """An exclusive, non-blocking lock on one run (its log's lock file), held while it runs; None if another runner
    holds it. Several runners can then work through overlapping plans without training the same run twice."""
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log.with_name(log.name + ".lock"), "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1])
    args = build_parser().parse_args(argv)
    # a session or a job scheduler ends the benchmark with SIGTERM: stop the run cleanly and record how far it got
    signal.signal(signal.SIGTERM, _terminate)
    if args.tag is not None and not args.tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit("error: --tag may hold letters, digits, '-', '_' and '.' only")
    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    # Paths are made absolute (the worker runs in the runs folder) and are not part of a run's identity.
    paths = {"data_path": str(Path(args.data_path or "dataset").resolve())}
    if args.raw_data_dir:
        paths["raw_data_dir"] = str(Path(args.raw_data_dir).resolve())
    for key in ("data_path", "raw_data_dir"):
        if key in overrides:
            paths[key] = overrides.pop(key)
    config_files = []
    for name in args.config_files:
        path = Path(name).resolve()
        if not path.is_file():
            raise SystemExit(f"error: config file {name} not found")
        config_files.append(_display_path(path))  # relative to the repository when inside it: stable identity
    results_path = Path(args.results) if args.results else REPO / "bench" / "results" / f"{args.dataset}.json"
    if args.backfill_curves:
        print(f"{backfill_curves(results_path)} records of {_display_path(results_path)} got their curves")
        return 0

    done = {record_key(r) for r in load_results(results_path) if r.get("status") == "ok"}
    machine = machine_info()
    git = git_state()
    rows = []
    plan = [(m, s) for m in args.models for s in args.seeds]
    for i, (model, seed) in enumerate(plan, 1):
        key = run_key(args.dataset, model, seed, args.tag, overrides, config_files)
        if key in done:
            record = next(r for r in load_results(results_path) if record_key(r) == key)
            print(f"[{i}/{len(plan)}] {model} seed {seed}: already done, skipped", flush=True)
            rows.append(("skipped", record))
            continue
        lock = claim_run(log_path(Path(args.runs_dir).resolve(), args.dataset, model, seed, args.tag))
        if lock is None:
            print(f"[{i}/{len(plan)}] {model} seed {seed}: running in another runner, skipped", flush=True)
            continue
        print(f"[{i}/{len(plan)}] {model} seed {seed}: running ...", flush=True)
        try:
            record = run_one(args, model, seed, overrides, config_files, paths, results_path, machine, git)
        finally:
            lock.close()
        print(f"[{i}/{len(plan)}] {model} seed {seed}: {record['status']} in {fmt_time(record['wall_time_s'])}"
              f" (log: {record['log']})", flush=True)
        rows.append(("", record))
    print(f"\n{args.dataset}: results in {_display_path(results_path)}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
