"""What the bench scripts share: options, ``--set`` parsing, building a run through the package's quick start, the
worker protocol (a JSON spec in, one ``BENCH_RESULT {json}`` line out), slices of a loader, timing, machine state."""

import argparse
import ast
import contextlib
import datetime
import itertools
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "
KILL_GRACE_S = 10
TICK_S = 30  # how often a running worker's wall time is reported to ``on_tick``


def make_parser(doc):
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def data_options(parser, raw_data_dir=str(REPO.parent / "shared" / "data"), data_path=str(REPO / "dataset")):
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); "
                        "on a shared or small machine 1 can be much faster than oversubscribed cores")
    parser.add_argument("--raw-data-dir", default=raw_data_dir, help="raw benchmark files (default: %(default)s)")
    parser.add_argument("--data-path", default=data_path, help="converted datasets (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")


def parse_value(text):
    """A ``--set`` value as RecBole's command line reads it: a Python / JSON / YAML literal, else the string."""
    import yaml

    for parse in (ast.literal_eval, json.loads):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    with contextlib.suppress(yaml.YAMLError):
        value = yaml.safe_load(text)
        return text if isinstance(value, str) else value
    return text


def parse_overrides(items, what="--set"):
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise SystemExit(f"error: {what} expects key=value, got '{item}'")
        overrides[key] = parse_value(value.strip())
    return overrides


def parse_arm(text):
    """``[stock/]Model[:k=v,...]`` -> (stock, model, overrides)."""
    stock = text.startswith("stock/")
    model, _, rest = text[len("stock/") if stock else 0 :].partition(":")
    if not model:
        raise SystemExit(f"error: arm '{text}' names no model")
    return stock, model, parse_overrides(filter(None, rest.split(",")), f"arm '{text}': after ':' each item")


def base_config(args, checkpoint_dir):
    """The config entries every arm of a timing script shares: data folders, quiet logs, ``--set``."""
    return {"raw_data_dir": str(Path(args.raw_data_dir).resolve()), "data_path": str(Path(args.data_path).resolve()),
            "show_progress": False, "state": "WARNING", "checkpoint_dir": str(Path(checkpoint_dir).resolve()),
            **parse_overrides(args.overrides)}


def build(model, dataset, config_dict, prepared=False, log=False):
    """Config, train and valid loaders, model and trainer as ``run_recbole_srma`` builds them; ``log``: RecBole's."""
    import logging

    from recbole.utils import init_seed

    from recbole_srma import registry
    from recbole_srma.compat import init_logger
    from recbole_srma.config import Config
    from recbole_srma.quick_start import _build

    config = Config(model=model, dataset=dataset, config_dict=dict(config_dict))
    init_seed(config["seed"], config["reproducibility"])
    if log:
        init_logger(config)
    _, train_data, valid_data, _, net = _build(config, logging.getLogger(), prepared=prepared)
    return config, train_data, valid_data, net, registry.get_trainer(config["MODEL_TYPE"], model)(config, net)


class Slice:
    """``n`` batches of a loader (its first ones unless ``batches`` is given) that a trainer's ``_train_epoch``
    takes for the whole epoch; every other attribute is the loader's."""

    def __init__(self, loader, n, batches=None):
        self.loader, self.n, self.batches = loader, n, loader if batches is None else batches

    def __iter__(self):
        return itertools.islice(iter(self.batches), self.n)

    def __len__(self):
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - start


def best_time(fn, repeats):
    """The fastest of ``repeats`` calls after a warm-up call, in seconds: the least disturbed by other work."""
    fn()
    return min(timed(fn)[1] for _ in range(repeats))


def worker(spec_json, fn):
    """The worker side of ``launch``: ``fn(spec)`` in this fresh process, its result printed as the result line."""
    sys.argv = sys.argv[:1]  # RecBole's Config reads every --key=value of sys.argv: the worker's must not reach it
    out = json.dumps(fn(json.loads(spec_json)))  # torch's threads: OMP_NUM_THREADS, set by launch
    sys.stderr.flush()
    print(RESULT_PREFIX + out, flush=True)
    return 0


def read_prefixed(text, prefix=RESULT_PREFIX):
    line = next((line for line in reversed(text.splitlines()) if line.startswith(prefix)), None)
    try:
        return None if line is None else json.loads(line[len(prefix) :])
    except ValueError:
        return None


def _stop(pid):
    """SIGTERM the worker's process group, SIGKILL what is left after a grace period; reap it: (wait status, rusage)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    done, status, rusage = os.wait4(pid, os.WNOHANG)
    while not done and time.monotonic() < deadline:
        time.sleep(0.1)
        done, status, rusage = os.wait4(pid, os.WNOHANG)
    with contextlib.suppress(ProcessLookupError):  # the worker if still there, and anything it started
        os.killpg(pid, signal.SIGKILL)
    return (status, rusage) if done else os.wait4(pid, 0)[1:]


def launch(script, spec, log_file, cwd, time_budget_s=None, threads=None, on_tick=None):
    """Run ``script --worker spec``, output to ``log_file``: (exit code, wall s, the worker's own peak RSS in MiB from
    ``wait4``, timed out). Past the budget or on Ctrl-C / SIGTERM, the worker and all it started are stopped."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    start = last_tick = time.monotonic()
    pid = subprocess.Popen([sys.executable, str(script), "--worker", json.dumps(spec)], stdout=log_file,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                           start_new_session=True).pid
    timed_out = False
    try:
        while True:
            done, status, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time_budget_s is not None and time.monotonic() - start > time_budget_s:
                timed_out = True
                status, rusage = _stop(pid)
                break
            if on_tick is not None and time.monotonic() - last_tick >= TICK_S:
                last_tick = time.monotonic()
                on_tick(last_tick - start)
            time.sleep(0.2)
    except BaseException:
        _stop(pid)
        raise
    return os.waitstatus_to_exitcode(status), time.monotonic() - start, rusage.ru_maxrss / 1024, timed_out


def git_state():
    """(commit, whether tracked files outside bench/results have uncommitted changes); None where git cannot tell."""
    def git(*args):
        return subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()

    try:
        # the result files the runners themselves write are not a change to the code that produced them
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no", "--", ".",
                                                  ":(exclude)bench/results"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def machine_info():
    """The machine as the parent sees it; device, GPU and torch threads are for the worker's report to fill in."""
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):  # no /proc/cpuinfo: not Linux
        cpu = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.partition(":")[0].strip() in ("model name", "Hardware", "cpu model")), cpu)
    versions = {dist: metadata.version(dist) for dist in ("torch", "recbole")}  # both required by the package
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_model": cpu,
            "cpu_count": os.cpu_count(), "cpu_affinity": affinity, "python": platform.python_version(), **versions,
            "device": None, "gpu_name": None, "torch_threads": None}


def report_head(dataset, script, argv):
    return {"dataset": dataset, "started": now_utc(), "machine": machine_info(), "git": git_state(),
            "command": " ".join([Path(sys.executable).name, f"bench/{script}", *argv])}


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path, data, indent=1):
    """Atomically (the package's atomic_open): a reader never sees half a file."""
    from recbole_srma.fileio import atomic_open

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        f.write((json.dumps(data, indent=indent) + "\n").encode())


def fmt_time(seconds):
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"
