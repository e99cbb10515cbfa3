"""Does the fast path change what is learned? Train one model with ``fast_path`` on and off, several seeds each.

    python bench/fast_path_equivalence.py [--dataset amazon-toys] [--model SRMA] [--seeds 2020 2021 2022] \
        [--epochs 3] [--set key=value ...] [--threads 2] [--raw-data-dir ../shared/data]

Runs go through bench/run_models.py (one process per run, resumable; records in
``bench/results/fast-path/<dataset>.json``, logs in ``bench/runs/``), then the table of validation NDCG@10 after
the same number of epochs is printed: per seed, mean and sample standard deviation per setting, and the difference
of the means next to the seed spread (wall times are in the records; speed claims come from bench/speed.py, not
from these runs, which may share the machine). The paths differ in random draws only (dropout masks are drawn in another
order), so "the same" means: the difference of the means is within the spread of the seeds.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_models  # noqa: E402

REPO = run_models.REPO
SETTINGS = {"fast-path-on": True, "fast-path-off": False}


def summarize(records, dataset, model, seeds, epochs, metric="ndcg@10"):
    rows = {}
    for tag in SETTINGS:
        by_seed = {}
        for r in records:
            if (r.get("status") == "ok" and r["dataset"] == dataset and r["model"] == model and r.get("tag") == tag
                    and r["seed"] in seeds and (r.get("overrides") or {}).get("epochs") == epochs):
                by_seed[r["seed"]] = r
        rows[tag] = by_seed
    lines = [
        f"{model} on {dataset}, validation {metric} after {epochs} epochs (best epoch, counted from 0, in brackets)",
        "",
    ]
    lines.append("| fast_path | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |")
    lines.append("|---|" + "---:|" * (len(seeds) + 2))
    means, stds = {}, {}
    for tag, by_seed in rows.items():
        values = [by_seed[s]["valid"][metric] for s in seeds if s in by_seed]
        cells = [f"{by_seed[s]['valid'][metric]:.4f} ({by_seed[s]['best_epoch']})" if s in by_seed else "-"
                 for s in seeds]
        means[tag] = statistics.mean(values) if values else None
        stds[tag] = statistics.stdev(values) if len(values) > 1 else None
        lines.append(
            f"| {SETTINGS[tag]} | " + " | ".join(cells) + f" | {means[tag]:.4f} | {stds[tag]:.4f} |"
            if values and stds[tag] is not None else f"| {SETTINGS[tag]} | " + " | ".join(cells) + " | - | - |"
        )
    if all(stds.get(t) is not None for t in SETTINGS):
        diff = means["fast-path-on"] - means["fast-path-off"]
        spread = max(stds.values())
        verdict = "within" if abs(diff) <= spread else "OUTSIDE"
        lines += ["", f"difference of the means {diff:+.4f}; largest seed std {spread:.4f}: {verdict} the spread"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-toys")
    parser.add_argument("--model", default="SRMA")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--raw-data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--results", default=None, help="default: bench/results/fast-path/<dataset>.json")
    parser.add_argument("--summary-only", action="store_true", help="print the table from recorded runs only")
    args = parser.parse_args(argv)
    results = Path(args.results or REPO / "bench" / "results" / "fast-path" / f"{args.dataset}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for tag, fast in SETTINGS.items():
            run_argv = ["--dataset", args.dataset, "--models", args.model, "--seeds", *map(str, args.seeds),
                        "--epochs", str(args.epochs), "--tag", tag, "--results", str(results),
                        "--raw-data-dir", args.raw_data_dir, "--set", f"fast_path={fast}"]
            for item in args.overrides:
                run_argv += ["--set", item]
            if args.threads:
                run_argv += ["--threads", str(args.threads)]
            run_models.main(run_argv)
    records = json.loads(results.read_text()) if results.exists() else []
    print(summarize(records, args.dataset, args.model, args.seeds, args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
