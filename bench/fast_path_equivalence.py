"""Does the fast path change what is learned? Trains one model with ``fast_path`` on and off, several seeds each,
through bench/run_models.py; "the same" means the difference of the means is within the seeds' spread."""

import statistics
import sys
from pathlib import Path

import common
import run_models

SETTINGS = {"fast-path-on": True, "fast-path-off": False}


def summarize(records, dataset, model, seeds, epochs, metric="ndcg@10"):
    lines = [f"{model} on {dataset}, validation {metric} after {epochs} epochs (best epoch, counted from 0, in "
             "brackets)", "", "| fast_path | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
             "|---|" + "---:|" * (len(seeds) + 2)]
    means, stds = {}, {}
    for tag in SETTINGS:
        by_seed = {r["seed"]: r for r in records if r.get("status") == "ok" and r["dataset"] == dataset
                   and r["model"] == model and r.get("tag") == tag and r["seed"] in seeds
                   and (r.get("overrides") or {}).get("epochs") == epochs}
        values = [by_seed[s]["valid"][metric] for s in seeds if s in by_seed]
        cells = [f"{by_seed[s]['valid'][metric]:.4f} ({by_seed[s]['best_epoch']})" if s in by_seed else "-"
                 for s in seeds]
        means[tag] = statistics.mean(values) if values else None
        stds[tag] = statistics.stdev(values) if len(values) > 1 else None
        spread = f"{means[tag]:.4f} | {stds[tag]:.4f}" if stds[tag] is not None else "- | -"
        lines.append(f"| {SETTINGS[tag]} | " + " | ".join(cells) + f" | {spread} |")
    if all(stds[t] is not None for t in SETTINGS):
        diff, spread = means["fast-path-on"] - means["fast-path-off"], max(stds.values())
        verdict = "within" if abs(diff) <= spread else "OUTSIDE"
        lines += ["", f"difference of the means {diff:+.4f}; largest seed std {spread:.4f}: {verdict} the spread"]
    return "\n".join(lines)


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("--dataset", default="amazon-toys")
    parser.add_argument("--model", default="SRMA")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    parser.add_argument("--epochs", type=int, default=3)
    common.data_options(parser, data_path="dataset")
    parser.add_argument("--results", default=None, help="default: bench/results/fast-path/<dataset>.json")
    parser.add_argument("--summary-only", action="store_true", help="print the table from recorded runs only")
    args = parser.parse_args(argv)
    results = Path(args.results or common.REPO / "bench" / "results" / "fast-path" / f"{args.dataset}.json")
    for tag, fast in SETTINGS.items():
        if not args.summary_only:
            run_models.main(
                ["--dataset", args.dataset, "--models", args.model, "--seeds", *map(str, args.seeds), "--epochs",
                 str(args.epochs), "--tag", tag, "--results", str(results), "--raw-data-dir", args.raw_data_dir,
                 "--data-path", args.data_path, "--set", f"fast_path={fast}"]
                + [a for item in args.overrides for a in ("--set", item)]
                + (["--threads", str(args.threads)] if args.threads else []))
    print(summarize(run_models.load_results(results), args.dataset, args.model, args.seeds, args.epochs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
