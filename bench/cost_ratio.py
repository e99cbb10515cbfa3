"""Training cost of plugin models relative to the first arm, measured in one process: each round times the next
batches of every arm in turn, so drift in a shared machine's load hits all arms of a round alike (bench/README.md)."""

import itertools
import sys
import time
from pathlib import Path
from statistics import median

import common


def measure(args):
    import torch

    sys.argv = sys.argv[:1]  # RecBole's Config reads every --key=value of sys.argv
    if args.threads:
        torch.set_num_threads(args.threads)
    shared, arms = common.base_config(args, Path(args.runs_dir) / "saved"), []
    for text in args.arms:
        _, model, overrides = common.parse_arm(text)
        _, train_data, _, net, trainer = common.build(model, args.dataset, {**shared, **overrides})
        if hasattr(trainer, "run_stages"):  # e.g. SRMA's complement pre-training: not part of the timed work
            trainer.run_stages(train_data)
        batches = itertools.chain.from_iterable(itertools.repeat(train_data))  # epoch after epoch
        arms.append((text, trainer, train_data, batches, []))
    for _ in range(args.warmup_rounds + args.rounds):
        for text, trainer, loader, batches, seconds in arms:
            work = common.Slice(loader, args.batches, list(itertools.islice(batches, args.batches)))
            seconds.append(common.timed(trainer._train_epoch, work, 0, show_progress=False)[1])
    rows = []
    for text, _, loader, _, seconds in arms:
        times = seconds[args.warmup_rounds :]
        ratios = [t / r for t, r in zip(times, arms[0][4][args.warmup_rounds :])]
        rows.append({"arm": text, "round_s": times, "ratio_per_round": ratios, "ratio_median": median(ratios),
                     "epoch_s_estimate": median(times) * len(loader) / args.batches, "n_batches": len(loader)})
    return rows, torch.get_num_threads()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = common.make_parser(__doc__)
    parser.add_argument("--dataset", default="amazon-sports")
    parser.add_argument("--arms", nargs="+", required=True, help="the first arm is the reference")
    parser.add_argument("--batches", type=int, default=30, help="batches per arm per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (default: %(default)s)")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="untimed first rounds (default: %(default)s)")
    common.data_options(parser)
    parser.add_argument("--runs-dir", default=str(common.REPO / "bench" / "runs" / "cost_ratio"))
    parser.add_argument("--out", default=None, help="JSON report (default: none, only printed)")
    args = parser.parse_args(argv)
    for arm in args.arms:
        if common.parse_arm(arm)[0]:
            raise SystemExit(f"error: arm '{arm}': stock RecBole arms are timed by bench/speed.py, not here")
    if args.batches < 1 or args.rounds < 1 or args.warmup_rounds < 0:
        raise SystemExit("error: --batches and --rounds must be >= 1, --warmup-rounds >= 0")
    started = time.time()
    report = dict(common.report_head(args.dataset, "cost_ratio.py", argv), batches_per_round=args.batches,
                  rounds=args.rounds, warmup_rounds=args.warmup_rounds)
    report["arms"], report["torch_threads"] = measure(args)
    report["wall_s"] = time.time() - started
    lines = [f"| arm | ratio to {args.arms[0]} (median) | per round | epoch estimate (s) |", "|---|---:|---|---:|"]
    lines += [f"| {row['arm']} | {row['ratio_median']:.2f} | {', '.join(f'{r:.2f}' for r in row['ratio_per_round'])}"
              f" | {row['epoch_s_estimate']:.0f} |" for row in report["arms"]]
    print(f"{args.dataset}, {report['machine']['cpu_model']}, {report['torch_threads']} threads, "
          f"{args.rounds} rounds of {args.batches} batches per arm\n\n" + "\n".join(lines))
    if args.out:
        common.write_json(args.out, report, indent=2)
        print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
