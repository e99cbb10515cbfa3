"""Hyper-parameter search over any model (plugin or RecBole) with RecBole's ``HyperTuning``, as RecBole's
``run_hyper.py`` does it, plus a results table and the best configuration as a yaml file.

    python -m recbole_srma.hyper --model=BT4SRec --dataset=amazon-toys --params_file=bt4srec.hyper \
        [--config_files=fixed.yaml] [--algo=exhaustive|random|bayes] [--max_evals=20] [--output_file=hyper.result] \
        [--key=value ...]

``--params_file`` is in RecBole's format, one parameter per line: ``name choice [v1,v2]``, ``name uniform low,high``,
``name loguniform low,high`` or ``name quniform low,high,q``. Every other ``--key=value`` is fixed for every trial,
as with ``run_recbole_srma.py``. Each trial is one full training run with early stopping on the validation metric.

Writes ``<output_file>`` (RecBole's per-trial text), ``<output_file>.md`` (a table: one row per trial, its parameters,
validation and test metrics, best first) and ``<output_file>.best.yaml`` (model, dataset and the best trial's
parameters: ``--config_files`` of a later run). Needs ``hyperopt`` (``pip install -e ".[tune]"``).
"""

import argparse
import sys

import yaml

from recbole_srma.errors import ConfigError

ALGOS = ("exhaustive", "random", "bayes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params_file", required=True, help="search space, RecBole's hyper-parameter file format")
    parser.add_argument(
        "--config_files", default=None, help="yaml files fixed for every trial (comma- or space-separated)"
    )
    parser.add_argument("--output_file", default="hyper.result", help="where the results go (plus .md and .best.yaml)")
    parser.add_argument("--algo", default="exhaustive", choices=ALGOS, help="hyperopt search (exhaustive: every point)")
    parser.add_argument("--max_evals", type=int, default=100, help="trials at most (random / bayes)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without progress")
    args, _ = parser.parse_known_args(argv)  # the rest (--model, --dataset, --key=value) is read by the Config
    return args


def results_table(tuner, valid_metric, bigger=True):
    """A markdown table of every trial (parameters, validation and test metrics), best validation score first."""
    rows = sorted(
        (
            (r["best_valid_score"], params, r["best_valid_result"], r["test_result"])
            for params, r in tuner.params2result.items()
        ),
        key=lambda row: row[0],
        reverse=bigger,
    )
    metrics = list(rows[0][2]) if rows else []
    header = ["parameters", f"valid {valid_metric}"] + [f"valid {m}" for m in metrics] + [f"test {m}" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for score, params, valid, test in rows:
        cells = [params, f"{score:.4f}"] + [f"{valid[m]:.4f}" for m in metrics] + [f"{test[m]:.4f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    try:
        import hyperopt  # noqa: F401
    except ImportError:
        print('error: hyper-parameter search needs hyperopt: pip install -e ".[tune]"', file=sys.stderr)
        return 2
    from recbole.trainer.hyper_tuning import HyperTuning

    from recbole_srma.config import Config
    from recbole_srma.errors import RecBoleSRMAError
    from recbole_srma.quick_start import objective_function

    config_files = args.config_files.replace(",", " ").split() if args.config_files else None
    try:
        # checks model, dataset and fixed settings before the first trial, with the plugin's clear errors
        config = Config(config_file_list=config_files)
        tuner = HyperTuning(
            objective_function,
            algo=args.algo,
            max_evals=args.max_evals,
            early_stop=args.early_stop,
            params_file=args.params_file,
            fixed_config_file_list=config_files,
        )
        tuner.run()
    except RecBoleSRMAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, SyntaxError) as err:
        print(f"error: bad search space in {args.params_file}: {err}", file=sys.stderr)
        return 2
    if tuner.best_params is None:
        raise ConfigError(f"no trial finished; see the log under log/{config['model']}/")
    tuner.export_result(output_file=args.output_file)
    with open(args.output_file + ".md", "w") as f:
        f.write(f"# {config['model']} on {config['dataset']}: {len(tuner.params2result)} trials ({args.algo})\n\n")
        f.write(results_table(tuner, config["valid_metric"], config["valid_metric_bigger"]))
    best = {"model": config["model"], "dataset": config["dataset"], **_plain(tuner.best_params)}
    with open(args.output_file + ".best.yaml", "w") as f:
        yaml.safe_dump(best, f, sort_keys=False)
    best_result = tuner.params2result[tuner.params2str(tuner.best_params)]
    print("best params:", _plain(tuner.best_params))
    print("best valid result:", dict(best_result["best_valid_result"]))
    print("test result of the best params:", dict(best_result["test_result"]))
    print(f"wrote {args.output_file}, {args.output_file}.md, {args.output_file}.best.yaml")
    return 0


def _plain(params):
    """hyperopt hands numpy scalars and tuples; yaml wants plain values."""
    out = {}
    for key, value in params.items():
        if hasattr(value, "item"):
            value = value.item()
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


if __name__ == "__main__":
    sys.exit(main())
