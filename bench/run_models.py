"""Resumable benchmark runner: models and seeds on one dataset, one worker process per run. Runs recorded "ok" are
skipped; a stopped run continues from its last finished epoch, named by its trainer's status file (bench/README.md)."""

import fcntl
import json
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import common
from common import REPO, RESULT_PREFIX, fmt_time, parse_overrides, read_prefixed, write_json

from recbole_srma.fileio import read_status  # the trainer's status file, without importing torch

METRICS = ["hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10", "ndcg@20"]
ENV_PREFIX = "BENCH_ENV "


def train(spec):
    """The worker; its ``BENCH_ENV`` line comes first, so that a stopped run is recorded with its protocol too."""
    import resource

    import torch

    from recbole_srma.config import Config, protocol_settings
    from recbole_srma.quick_start import run_recbole_srma

    model, dataset, files = spec["model"], spec["dataset"], spec["config_files"] or None
    # The resolved configuration (cheap to build): the epoch budget and the device the run will really use.
    config = Config(model=model, dataset=dataset, config_file_list=files, config_dict=dict(spec["config_dict"]))
    if not config.follows_protocol:  # its rows would sit among results of another split and other metrics
        print(f"error: {model} keeps RecBole's own defaults (it does not follow the plugin's protocol): it cannot be "
              "compared in these tables", file=sys.stderr, flush=True)
        raise SystemExit(2)
    device = config["device"]
    env = {"protocol": protocol_settings(config), "epochs": config["epochs"], "device": device.type,
           "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "torch_threads": torch.get_num_threads()}
    print(ENV_PREFIX + json.dumps(env), flush=True)
    result = run_recbole_srma(model=model, dataset=dataset, config_file_list=files,
                              config_dict=dict(spec["config_dict"]), saved=True, resume=spec["resume"])
    return {**env, **{k: result[k] for k in ("epochs_trained", "last_epoch", "best_epoch", "checkpoint")},
            "best_valid_score": float(result["best_valid_score"]), "valid": dict(result["best_valid_result"] or {}),
            "test": dict(result["test_result"] or {}), "stopped_early": bool(result["stopped_early"]),
            "worker_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "gpu_peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None}


def run_key(dataset, model, seed, tag, overrides, config_files=None):
    """What makes two runs the same run (paths, threads and the time budget do not)."""
    overrides = json.dumps(overrides or {}, sort_keys=True, default=str)
    return (dataset, model, int(seed), tag or None, overrides, tuple(config_files or ()))


def record_key(r):
    return run_key(r["dataset"], r["model"], r["seed"], r.get("tag"), r.get("overrides"), r.get("config_files"))


def load_results(path):
    text = Path(path).read_text() if Path(path).is_file() else ""
    records = json.loads(text) if text.strip() else []
    if not isinstance(records, list):
        raise SystemExit(f"error: {path} does not hold a JSON list of run records")
    return records


def save_record(path, record):
    """Replace the run's record or append it, re-reading the file under a lock: runners may share it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).with_name(f".{Path(path).name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_json(path, [r for r in load_results(path) if record_key(r) != record_key(record)] + [record])


def log_path(runs_dir, dataset, model, seed, tag):
    return Path(runs_dir) / dataset / f"{model}-seed{seed}{f'-{tag}' if tag else ''}.log"


def side_file(log, kind):
    """``state``: the runner's (identity, start, wall time per piece); ``status``: the trainer's ``status_file``."""
    return log.with_name(f"{log.stem}.{kind}.json")


def resume_point(log, key):
    """(the ``-last.pth`` a stopped run continues from or None, the runner's state of a run of this identity or None,
    the trainer's status or {}). The status names the ``-last.pth`` until training ends (and removes it)."""
    try:
        state = json.loads(side_file(log, "state").read_text())
    except (OSError, ValueError):
        state = {}
    state = state if state.get("key") == json.loads(json.dumps(key)) else None
    status = read_status(side_file(log, "status")) or {}
    last = None if status.get("finished") else status.get("last_checkpoint_file")
    return last if state is not None and last and Path(last).is_file() else None, state, status


def _display_path(path):
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def run_one(args, model, seed, overrides, config_files, paths, results_path, machine, git):
    dataset, tag, runs_dir = args.dataset, args.tag, Path(args.runs_dir).resolve()
    log = log_path(runs_dir, dataset, model, seed, tag)  # its folder made by claim_run
    key = run_key(dataset, model, seed, tag, overrides, config_files)
    config_dict = {**overrides, **paths, "seed": seed, "show_progress": False,
                   "checkpoint_dir": str(runs_dir / dataset / "saved"), "status_file": str(side_file(log, "status"))}
    resume_from, state, trainer_status = (None, None, {}) if args.restart else resume_point(log, key)
    spec = {"model": model, "dataset": dataset, "config_dict": config_dict, "resume": resume_from,
            "config_files": [str(REPO / f) for f in config_files]}  # absolute ones stay absolute
    budget_s = args.time_budget_min * 60 if args.time_budget_min else None
    started, command = common.now_utc(), shlex.join([sys.executable, *sys.argv])
    # a run whose trainer finished but whose runner was stopped before recording it: its result is in its log (a
    # fresh run rewrites its log and removes the old status file, so a result line there is this run's)
    finished = not resume_from and state is not None and trainer_status.get("finished") and log.is_file()
    recovered = read_prefixed(log.read_text(errors="replace")) if finished else None
    returncode, timed_out, interrupted = 0, False, None
    if recovered is not None:  # its state is the stopped runner's: its start and wall time
        with open(log, "a") as f:
            f.write(f"\n# finished before its runner was stopped: recorded from this log {started}\n")
        peak_mb = recovered.get("worker_max_rss_mb") or 0.0
    else:
        if resume_from is None:  # a fresh run: what an earlier one's trainer wrote is not this run's
            side_file(log, "status").unlink(missing_ok=True)
            state = {"key": key, "started_utc": started, "wall_time_s": 0.0, "pieces": []}
        state["pieces"].append({"started_utc": started, "resumed_from": resume_from, "wall_time_s": 0.0})
        prior_wall = state["wall_time_s"]

        def on_tick(elapsed):
            state["pieces"][-1]["wall_time_s"] = round(elapsed, 2)
            state["wall_time_s"] = round(prior_wall + elapsed, 2)
            write_json(side_file(log, "state"), state)

        with open(log, "a" if resume_from else "w") as f:
            f.write(f"\n# {command}\n# resumed from {resume_from} {started}\n" if resume_from else
                    f"# {command}\n# run: model={model} seed={seed} tag={tag} started {started}\n")
            f.write(f"# config_dict: {json.dumps(config_dict, default=str)}\n")
            f.flush()
            run_start = time.monotonic()
            try:
                returncode, wall, peak_mb, timed_out = common.launch(
                    __file__, spec, f, runs_dir / dataset, budget_s, args.threads, on_tick)
            except BaseException as exc:  # Ctrl-C / SIGTERM: launch stopped the run; record where it got
                interrupted, returncode, wall, peak_mb = exc, None, time.monotonic() - run_start, 0.0
                f.write(f"\n# interrupted ({type(interrupted).__name__}) after {wall:.0f} s\n")
            if timed_out:
                f.write(f"\n# stopped by the benchmark: time budget of {budget_s:.0f} s exceeded after {wall:.0f} s\n")
        on_tick(wall)
    text = log.read_text(errors="replace")
    result = read_prefixed(text, RESULT_PREFIX) if interrupted is None and not timed_out else None
    env = read_prefixed(text, ENV_PREFIX) or {}
    status = ("interrupted" if interrupted is not None else "timeout" if timed_out
              else "ok" if returncode == 0 and result is not None else "failed")
    record = {
        "dataset": dataset, "model": model, "seed": seed, "tag": tag, "overrides": overrides,
        "config_files": list(config_files), "status": status, "epochs": env.get("epochs", overrides.get("epochs")),
        "epochs_trained": None, "best_epoch": None, "stopped_early": None, "valid": None, "test": None,
        "wall_time_s": state["wall_time_s"], "pieces": len(state["pieces"]), "time_budget_s": budget_s,
        "threads": args.threads, "peak_rss_mb": round(peak_mb, 1), "gpu_peak_mem_mb": None, "returncode": returncode,
        "machine": dict(machine, **{k: env.get(k) for k in ("device", "gpu_name", "torch_threads")}),
        "git_commit": git[0], "git_dirty": git[1], "command": command, "protocol": env.get("protocol"),
        "equivalent_command": shlex.join(  # the same run outside the benchmark
            ["python", "run_recbole_srma.py", f"--model={model}", f"--dataset={dataset}", f"--seed={seed}"]
            + (["--config_files=" + ",".join(config_files)] if config_files else [])
            + [f"--{k}={v}" for k, v in {**overrides, **paths}.items()]),
        "log": _display_path(log), "started_utc": state["started_utc"],
    }
    if status == "ok":
        record.update(
            {k: result[k] for k in ("epochs", "epochs_trained", "best_epoch", "stopped_early")},
            valid={m: result["valid"].get(m) for m in METRICS}, test={m: result["test"].get(m) for m in METRICS},
            gpu_peak_mem_mb=round(result["gpu_peak_mem_mb"], 1) if result.get("gpu_peak_mem_mb") else None,
            checkpoint=_display_path(result["checkpoint"]) if result.get("checkpoint") else None,
            **training_curves(text),
        )
    elif status in ("timeout", "interrupted"):  # how far it got; the next invocation continues from here
        record.update(training_curves(text), resumable=resume_point(log, key)[0] is not None)
    else:
        record["error_tail"] = "\n".join(text.splitlines()[-40:])
    save_record(results_path, record)
    if interrupted is not None:
        raise interrupted
    return record


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EPOCH_TRAIN = re.compile(r"epoch (\d+) training \[time: ([\d.]+)s")
_EPOCH_VALID = re.compile(r"epoch (\d+) evaluating \[time: [\d.]+s, valid_score: ([\d.]+)\]")


def training_curves(text):
    """Epoch times and validation scores from a run's log. A stage before training (SRMA's complement) numbers its
    epochs from 0 too: only the last sequence counts. An epoch logged twice (a stop interrupted it) keeps its last."""
    text = _ANSI.sub("", text)

    def last_sequence(pairs):
        out = []
        for epoch, value in pairs:
            out = [] if int(epoch) == 0 else [pair for pair in out if pair[0] < int(epoch)]
            out.append([int(epoch), float(value)])
        return out

    return {"epoch_times_s": last_sequence(_EPOCH_TRAIN.findall(text)),
            "valid_curve": last_sequence(_EPOCH_VALID.findall(text))}


def print_table(rows):
    lines = [["model", "seed", "tag", "status", "epochs", "test hit@10", "test ndcg@10", "wall", "peak RSS"]]
    for note, r in rows:
        test = r.get("test") or {}
        lines.append([
            r["model"], str(r["seed"]), r.get("tag") or "", r["status"] + (f" ({note})" if note else ""),
            f"{r['epochs_trained']}/{r['epochs']}" if r.get("epochs_trained") is not None else "-",
            *[f"{test[m]:.4f}" if test.get(m) is not None else "-" for m in ("hit@10", "ndcg@10")],
            fmt_time(r.get("wall_time_s")), f"{r['peak_rss_mb']:.0f}MiB" if r.get("peak_rss_mb") is not None else "-",
        ])
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    for row in lines[:1] + [["-" * w for w in widths]] + lines[1:]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def claim_run(log):
    """A lock held while the run trains, or None when another runner holds it: runners may share a plan."""
    log.parent.mkdir(parents=True, exist_ok=True)
    f = open(log.with_name(log.name + ".lock"), "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return f
    except OSError:
        f.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return common.worker(argv[1], train)
    parser = common.make_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset name (amazon-toys, amazon-beauty, ...)")
    parser.add_argument("--models", nargs="+", default=["SASRec", "CL4SRec", "SRMA"], help="default: %(default)s")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020], help="seeds (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default: the config's, 300)")
    parser.add_argument("--time-budget-min", type=float, default=None, help="per run and invocation; then 'timeout'")
    parser.add_argument("--config-files", nargs="+", default=[], metavar="FILE", help="yaml files for every run")
    common.data_options(parser, raw_data_dir=None, data_path="dataset")
    parser.add_argument("--results", default=None, help="results JSON (default: bench/results/<dataset>.json)")
    parser.add_argument("--runs-dir", default=str(REPO / "bench" / "runs"), help="logs (default: %(default)s)")
    parser.add_argument("--tag", default=None, help="name for this set of runs (in log names and records)")
    parser.add_argument("--restart", action="store_true", help="start stopped runs afresh instead of continuing them")
    parser.add_argument("--backfill-curves", action="store_true", help="only recompute curves from the kept logs")
    args = parser.parse_args(argv)
    # a session or a job scheduler ends the benchmark with SIGTERM: stop the run cleanly and record how far it got
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.tag is not None and not args.tag.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit("error: --tag may hold letters, digits, '-', '_' and '.' only")
    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    # Paths are made absolute (the worker runs in the runs folder) and are not part of a run's identity.
    paths = {"data_path": str(Path(args.data_path).resolve())}
    if args.raw_data_dir:
        paths["raw_data_dir"] = str(Path(args.raw_data_dir).resolve())
    paths.update({key: overrides.pop(key) for key in ("data_path", "raw_data_dir") if key in overrides})
    for name in args.config_files:
        if not Path(name).is_file():
            raise SystemExit(f"error: config file {name} not found")
    config_files = [_display_path(name) for name in args.config_files]  # relative to the repository when inside it
    results_path = Path(args.results) if args.results else REPO / "bench" / "results" / f"{args.dataset}.json"
    if args.backfill_curves:  # the logs are the source
        records = load_results(results_path)
        kept = [r for r in records if r.get("status") == "ok" and r.get("log") and (REPO / r["log"]).is_file()]
        for record in kept:
            record.update(training_curves((REPO / record["log"]).read_text(errors="replace")))
        if kept:
            write_json(results_path, records)
        print(f"{len(kept)} records of {_display_path(results_path)} got their curves")
        return 0

    done = {record_key(r) for r in load_results(results_path) if r.get("status") == "ok"}
    machine, rows = common.machine_info(), []
    plan = [(m, s) for m in args.models for s in args.seeds]
    for i, (model, seed) in enumerate(plan, 1):
        head = f"[{i}/{len(plan)}] {model} seed {seed}:"
        key = run_key(args.dataset, model, seed, args.tag, overrides, config_files)
        if key in done:
            print(f"{head} already done, skipped", flush=True)
            rows.append(("skipped", next(r for r in load_results(results_path) if record_key(r) == key)))
            continue
        lock = claim_run(log_path(Path(args.runs_dir).resolve(), args.dataset, model, seed, args.tag))
        if lock is None:
            print(f"{head} running in another runner, skipped", flush=True)
            continue
        print(f"{head} running ...", flush=True)
        try:
            # each run's own commit: a long queue outlives commits made while it waits
            record = run_one(args, model, seed, overrides, config_files, paths, results_path, machine,
                             common.git_state())
        finally:
            lock.close()
        print(f"{head} {record['status']} in {fmt_time(record['wall_time_s'])} (log: {record['log']})", flush=True)
        rows.append(("", record))
    print(f"\n{args.dataset}: results in {_display_path(results_path)}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
