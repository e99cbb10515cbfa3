"""Training cost of models relative to a reference model, measured in one process and interleaved in rounds.

    python bench/cost_ratio.py --arms CL4SRec MCLRec MCLRec:meta_schedule=official [--dataset amazon-sports] \
        [--batches 30] [--rounds 4] [--threads 2] [--set key=value ...] [--raw-data-dir ../shared/data] [--out FILE]

On a shared, noisy machine, arms timed one after the other in separate processes (bench/speed.py) drift with the
machine's load. Here every arm (``Model[:key=value,...]``, as in speed.py; plugin models only) is built in the same
process on the same data, and each round times the next ``--batches`` batches of every arm in turn (RecBole's
``Trainer._train_epoch`` on that slice, the model's own trainer). The report gives, per arm, the seconds of each
round and the ratio to the first arm within each round (the median is the headline), plus the extrapolated epoch
time. The ratio, not the absolute time, is what to compare across machines.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_models import REPO, git_state, machine_info, now_utc  # noqa: E402
from speed import parse_arm, parse_value  # noqa: E402


class Batches:
    """Successive slices of a loader's batches (the loader is restarted when it runs out)."""

    def __init__(self, loader):
        self.loader = loader
        self.iterator = iter(loader)

    def take(self, n):
        out = []
        while len(out) < n:
            try:
                out.append(next(self.iterator))
            except StopIteration:
                self.iterator = iter(self.loader)
        return Slice(self.loader, out)


class Slice:
    def __init__(self, loader, batches):
        self.loader, self.batches = loader, batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def measure(args):
    import torch

    sys.argv = [sys.argv[0]]
    if args.threads:
        torch.set_num_threads(args.threads)
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    from recbole_srma import registry
    from recbole_srma.config import Config
    from recbole_srma.data import prepare_dataset

    common = {
        "raw_data_dir": str(Path(args.raw_data_dir).resolve()),
        "data_path": str(Path(args.data_path).resolve()),
        "show_progress": False,
        "state": "WARNING",
        "checkpoint_dir": str(Path(args.runs_dir).resolve() / "saved"),
    }
    for item in args.overrides:
        key, _, value = item.partition("=")
        common[key.strip()] = parse_value(value.strip())
    arms = []
    for text in args.arms:
        stock, model_name, overrides = parse_arm(text)
        if stock:
            raise SystemExit(f"error: arm '{text}': stock RecBole arms are timed by bench/speed.py, not here")
        config = Config(model=model_name, dataset=args.dataset, config_dict={**common, **overrides})
        prepare_dataset(config)
        init_seed(config["seed"], config["reproducibility"])
        train_data, _, _ = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], config["reproducibility"])
        model = registry.get_model(model_name)(config, train_data._dataset).to(config["device"])
        trainer = registry.get_trainer(config["MODEL_TYPE"], model_name)(config, model)
        if hasattr(model, "before_fit"):  # e.g. SRMA's complement pre-training: not part of the timed work
            model.before_fit(trainer, train_data, None, False)
        arms.append({"arm": text, "trainer": trainer, "batches": Batches(train_data), "n_batches": len(train_data)})

    seconds = {arm["arm"]: [] for arm in arms}
    for _ in range(args.warmup_rounds + args.rounds):
        for arm in arms:
            work = arm["batches"].take(args.batches)
            start = time.perf_counter()
            arm["trainer"]._train_epoch(work, 0, show_progress=False)
            seconds[arm["arm"]].append(time.perf_counter() - start)
    seconds = {k: v[args.warmup_rounds:] for k, v in seconds.items()}
    reference = seconds[arms[0]["arm"]]
    rows = []
    for arm in arms:
        times = seconds[arm["arm"]]
        ratios = [t / r for t, r in zip(times, reference)]
        rows.append(
            {
                "arm": arm["arm"],
                "round_s": times,
                "ratio_per_round": ratios,
                "ratio_median": statistics.median(ratios),
                "epoch_s_estimate": statistics.median(times) * arm["n_batches"] / args.batches,
                "n_batches": arm["n_batches"],
            }
        )
    return rows, torch.get_num_threads()


def render(report):
    reference = report["arms"][0]["arm"]
    lines = [
        f"| arm | ratio to {reference} (median) | per round | epoch estimate (s) |",
        "|---|---:|---|---:|",
    ]
    for row in report["arms"]:
        per_round = ", ".join(f"{r:.2f}" for r in row["ratio_per_round"])
        lines.append(f"| {row['arm']} | {row['ratio_median']:.2f} | {per_round} | {row['epoch_s_estimate']:.0f} |")
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-sports")
    parser.add_argument("--arms", nargs="+", required=True, help="the first arm is the reference")
    parser.add_argument("--batches", type=int, default=30, help="batches per arm per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="untimed first rounds (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--raw-data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--runs-dir", default=str(REPO / "bench" / "runs" / "cost_ratio"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every arm (repeatable)")
    parser.add_argument("--out", default=None, help="JSON report (default: none, only printed)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    for arm in args.arms:
        parse_arm(arm)
    if args.batches < 1 or args.rounds < 1 or args.warmup_rounds < 0:
        raise SystemExit("error: --batches and --rounds must be >= 1, --warmup-rounds >= 0")
    started = time.time()
    report = {
        "dataset": args.dataset, "started": now_utc(), "machine": machine_info(), "git": git_state(),
        "command": " ".join(["python", "bench/cost_ratio.py", *(sys.argv[1:] if argv is None else argv)]),
        "batches_per_round": args.batches, "rounds": args.rounds, "warmup_rounds": args.warmup_rounds,
    }
    report["arms"], report["torch_threads"] = measure(args)
    report["wall_s"] = time.time() - started
    table = render(report)
    print(f"{args.dataset}, {report['machine']['cpu_model']}, {report['torch_threads']} threads, "
          f"{args.rounds} rounds of {args.batches} batches per arm\n\n{table}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)
        print(f"\nreport: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
