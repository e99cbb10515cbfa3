"""Training and evaluation speed of every plugin model next to RecBole's stock SASRec, and the FLOPs floor.

    python bench/speed.py [--dataset amazon-sports] [--arms stock/SASRec PluginSASRec CL4SRec SRMA] \
        [--batches N] [--threads 2] [--raw-data-dir ../shared/data] [--out bench/results/speed/<dataset>.json]

An arm is ``[stock/]Model[:key=value,...]``:
- ``stock/SASRec``: RecBole 1.2.1 as a RecBole user runs it: RecBole's Config, SASRec, Trainer and dataloader, with
  autograd anomaly mode as RecBole leaves it (on, switched on by importing its models) and RecBole's default
  ``eval_batch_size`` (4096). Only the numpy aliases RecBole needs to start at all are set. Same data, split,
  CE loss and ``train_batch_size`` (256) as the plugin.
- ``Model``: that model through the plugin (its Config, model and Trainer), e.g. ``PluginSASRec`` (the one-view
  path), ``CL4SRec``, ``SRMA``, or ``SASRec`` (RecBole's model through the plugin's trainer);
  ``SRMA:fast_path=False`` runs the padded reference path.

Each arm runs in its own process, one after the other (never two at once: the cores are shared): load the data,
run the model's pre-training hook if it has one (SRMA's complement encoder, ``complement_epochs`` 1 by default
here: it is not part of the epoch), time one training epoch (``Trainer._train_epoch``, RecBole's loop), then one
full-sort evaluation of every user of the validation split, and report the peak RSS. ``--batches N`` times the
first N batches only and extrapolates to the epoch (labelled as such).

The floor of an arm is the FLOPs of its work on the real (non-padding) tokens, forward and backward, divided by
the machine's measured float32 matrix-multiply rate (measured in this run): see :func:`epoch_flops`.
"""

import argparse
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_models import REPO, git_state, machine_info, now_utc, parse_value  # noqa: E402

DEFAULT_ARMS = ["stock/SASRec", "PluginSASRec", "CL4SRec", "SRMA"]
RESULT_PREFIX = "SPEED_RESULT "
# Left out of the stock arm's config: the plugin's own keys (RecBole does not read them) and the plugin's CPU
# eval_batch_size (the stock arm keeps RecBole's).
PLUGIN_ONLY_KEYS = {"raw_data_dir", "raw_cache_dir", "eval_batch_size"}


def parse_arm(text):
    """``[stock/]Model[:k=v,...]`` -> (stock, model, overrides)."""
    stock = text.startswith("stock/")
    name = text[len("stock/"):] if stock else text
    model, _, rest = name.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: arm '{text}': expected key=value after ':', got '{item}'")
        overrides[key.strip()] = parse_value(value.strip())
    if not model:
        raise SystemExit(f"error: arm '{text}' names no model")
    return stock, model, overrides


# ----------------------------------------------------------------------------------------------------------------
# FLOPs of the real tokens
# ----------------------------------------------------------------------------------------------------------------


def layer_flops(length, hidden, inner):
    """Forward FLOPs of one Transformer block on one sequence of ``length`` real tokens (causal attention)."""
    dense = 2 * length * (4 * hidden * hidden + 2 * hidden * inner)  # Q, K, V, output; feed-forward
    attention = 2 * 2 * hidden * length * (length + 1) / 2  # QK^T and AV over the causal triangle
    return dense + attention


def view_lengths(length, operators, config, max_len=50):
    """The lengths one augmented view of a ``length``-item sequence can have, one per operator (equally likely)."""
    out = []
    for op in operators:
        if op == "crop":
            out.append(max(1, math.floor(config["crop_eta"] * length)))
        elif op == "insert":
            out.append(min(max_len, length + max(1, math.floor(config["insert_rate"] * length))))
        else:
            out.append(length)
    return out


def _view_pool(length, config):
    threshold = config.get("augment_threshold", -1)
    if threshold not in (None, -1) and length <= threshold:
        return config["short_augmentations"]
    return config["augmentations"]


def epoch_flops(model, config, train_lengths, n_items, batch_size):
    """FLOPs of one training epoch (forward + backward = 3x forward for what is trained) on real tokens only.

    Counts every block at every real position (what the model defines), the next-item softmax over all items,
    the views' encoder passes at their expected lengths, InfoNCE, SRMA's kept layer-dropping blocks and its frozen
    complement's forward pass, MCLRec's extra similarity matrices and its augmenter steps (views without gradient),
    BT4SRec's views or same-target partners, projector and cross-correlation.
    BERT4Rec scores its expected number of masked positions instead of the last one.
    Element-wise work (LayerNorm, softmax, dropout, GELU) and the optimiser are left out: the floor is a bound no
    implementation can beat at the machine's matmul rate.
    """
    H, I, n_layers = config["hidden_size"], config["inner_size"], config["n_layers"]
    max_len = config.get("MAX_ITEM_LIST_LENGTH", 50)
    encoder = sum(n_layers * layer_flops(n, H, I) for n in train_lengths)
    scoring = len(train_lengths) * 2 * H * n_items
    forward = encoder + scoring
    no_grad = 0.0
    full, rest = divmod(len(train_lengths), batch_size)
    info_nce = sum(2 * (2 * b) ** 2 * H for b in [batch_size] * full + [rest])  # one InfoNCE's similarities
    views = 0.0
    if model in ("CL4SRec", "SRMA", "CoSeRec", "MCLRec"):
        for n in train_lengths:
            options = view_lengths(n, _view_pool(n, config), config, max_len)
            views += 2 * sum(n_layers * layer_flops(v, H, I) for v in options) / len(options)
        forward += views + info_nce
    if model == "DuoRec":
        # a second pass of every sequence and / or a same-target sequence; partners are drawn from the training
        # rows themselves, so over an epoch their lengths follow the training lengths
        extra = {"us_x": 2, "un": 1, "su": 1, "us": 2}[config["contrast"]]
        forward += extra * encoder + (2 if config["contrast"] == "us" else 1) * info_nce
    if model == "BT4SRec" and config["alpha"] > 0:
        # two augmented views and / or a same-target partner (lengths follow the training lengths); projector and
        # the [D, D] cross-correlation per pair
        if config["bt_positive"] in ("augment", "both"):
            for n in train_lengths:
                options = view_lengths(n, config["augmentations"], config, max_len)
                views += 2 * sum(n_layers * layer_flops(v, H, I) for v in options) / len(options)
        pairs = {"augment": 1, "same_target": 1, "both": 2}[config["bt_positive"]]
        partners = encoder if config["bt_positive"] != "augment" else 0.0
        widths = [H, *config["projector_sizes"]]
        projector = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
        correlation = 2 * widths[-1] ** 2
        forward += views + partners + len(train_lengths) * pairs * 2 * (projector + correlation)
    if model == "SRMA":
        K, M = config["layer_drop_K"], config["layer_drop_M"]
        forward += len(train_lengths) * (K + 2 * (K - M)) * 2 * 2 * H * I
        if config["complement_type"] in ("transformer", "same") and config["complement_gamma"] > 0:
            c_layers = 1 if config["complement_type"] == "transformer" else n_layers
            for n in train_lengths:
                options = view_lengths(n, config["augmentations"], config, max_len)
                no_grad += sum(c_layers * layer_flops(v, H, I) for v in options) / len(options)
    if model in ("BERT4Rec", "PluginBERT4Rec"):
        # the cloze task scores its predicted positions, not the last one: a batch masks the last item with
        # probability ft_ratio, else each real position with probability mask_ratio, at most int(mask_ratio * L)
        ft, rate = config["ft_ratio"], config["mask_ratio"]
        cap = int(rate * max_len)
        targets = sum(ft + (1 - ft) * min(rate * n, cap) for n in train_lengths)
        forward = encoder + targets * (2 * H * n_items + 2 * H * H)  # + the output head's H x H layer
    if model == "MCLRec":
        # per batch: encoder steps (everything above, plus L_cl2 / R similarities, trained) and augmenter steps (the
        # views encoded without gradient, then the same similarities); the augmenter MLPs are negligible
        encoder_steps, augmenter_steps = MCLREC_STEPS[config["meta_schedule"]]
        similarities = 3 * (int(bool(config["use_cl2"])) + int(config["reg_gamma"] > 0)) * info_nce
        return 3 * encoder_steps * (forward + similarities) + augmenter_steps * (views + 3 * similarities)
    return 3 * forward + no_grad


# MCLRec's meta_schedule -> (encoder steps, augmenter steps) per batch (recbole_srma.trainer.META_SCHEDULES)
MCLREC_STEPS = {"alternate": (1, 1), "official": (2, 1), "joint": (1, 0)}


def eval_flops(config, eval_lengths, n_items, n_layers=None):
    H, I = config["hidden_size"], config["inner_size"]
    n_layers = n_layers or config["n_layers"]
    return sum(n_layers * layer_flops(n, H, I) for n in eval_lengths) + len(eval_lengths) * 2 * H * n_items


def matmul_gflops(size=2048, repeats=5):
    """Best float32 matrix-multiply rate of this process's threads, GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ----------------------------------------------------------------------------------------------------------------
# Worker: one arm
# ----------------------------------------------------------------------------------------------------------------


class FirstBatches:
    """The first ``n`` batches of a RecBole loader, which the trainer iterates as if it were the whole epoch."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self):
        return self.n

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _stock_config(spec):
    import yaml
    from recbole.config import Config as RecBoleConfig

    from recbole_srma import compat  # noqa: F401  (numpy aliases: RecBole 1.2.1 cannot start on numpy 2 without)
    from recbole_srma.data.convert import LOAD_COL

    protocol = yaml.safe_load((REPO / "properties" / "overall.yaml").read_text())
    config_dict = {k: v for k, v in protocol.items() if k not in PLUGIN_ONLY_KEYS}
    config_dict["load_col"] = LOAD_COL  # the converted file's columns (the plugin's Config adds them itself)
    config_dict.update(spec["common"], **spec["overrides"])
    for key in PLUGIN_ONLY_KEYS | {"complement_epochs"}:
        config_dict.pop(key, None)
    return RecBoleConfig(model=spec["model"], dataset=spec["dataset"], config_dict=config_dict)


def prepare_main(spec_json):
    """Convert the dataset's raw file once, before any arm (the stock arm reads the same converted file)."""
    spec = json.loads(spec_json)
    sys.argv = [sys.argv[0]]
    from recbole_srma.config import Config
    from recbole_srma.data import prepare_dataset

    prepare_dataset(Config(model="PluginSASRec", dataset=spec["dataset"], config_dict=dict(spec["common"])))
    return 0


def worker_main(spec_json):
    spec = json.loads(spec_json)
    sys.argv = [sys.argv[0]]
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_logger, init_seed

    start = time.perf_counter()
    if spec["stock"]:
        # Nothing of the plugin but the numpy aliases: its registry would switch RecBole's anomaly mode off.
        from recbole.trainer import Trainer as StockTrainer
        from recbole.utils import get_model

        config = _stock_config(spec)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        dataset = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(spec["model"])(config, train_data._dataset).to(config["device"])
        trainer = StockTrainer(config, model)
    else:
        from recbole_srma import registry
        from recbole_srma.config import Config

        plugin_dict = dict(spec["common"], **spec["overrides"])
        if spec["model"] == "SRMA":
            plugin_dict.setdefault("complement_epochs", 1)
        config = Config(model=spec["model"], dataset=spec["dataset"], config_dict=plugin_dict)
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        dataset = create_dataset(config)
        train_data, valid_data, _ = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = registry.get_model(spec["model"])(config, train_data._dataset).to(config["device"])
        trainer = registry.get_trainer(config["MODEL_TYPE"], spec["model"])(config, model)
    load_s = time.perf_counter() - start
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    pretrain_s = None
    if hasattr(model, "before_fit"):
        start = time.perf_counter()
        model.before_fit(trainer, train_data, valid_data, False)
        pretrain_s = time.perf_counter() - start

    n_batches = len(train_data)
    loader = FirstBatches(train_data, spec["batches"]) if spec.get("batches") else train_data
    timed_batches = len(loader)
    anomaly = torch.is_anomaly_enabled()
    start = time.perf_counter()
    trainer._train_epoch(loader, 0, show_progress=False)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    result = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    eval_s = time.perf_counter() - start

    lengths = train_data._dataset.inter_feat[model.ITEM_SEQ_LEN].tolist()
    eval_lengths = valid_data._dataset.inter_feat[model.ITEM_SEQ_LEN].tolist()
    flop_config = dict(config.final_config_dict)
    floor_model = spec["model"] if not spec["stock"] else "SASRec"
    out = {
        "arm": spec["arm"],
        "model": spec["model"],
        "stock": spec["stock"],
        "overrides": spec["overrides"],
        "device": config["device"].type,
        "torch_threads": torch.get_num_threads(),
        "anomaly_mode": anomaly,
        "fast_path": config["fast_path"] if "fast_path" in config else None,
        "train_batch_size": config["train_batch_size"],
        "eval_batch_size": config["eval_batch_size"],
        "n_batches": n_batches,
        "timed_batches": timed_batches,
        "load_s": load_s,
        "pretrain_s": pretrain_s,
        "timed_train_s": train_s,
        "epoch_s": train_s * n_batches / timed_batches,
        "eval_s": eval_s,
        "eval_users": len(eval_lengths),
        "valid_ndcg@10": float(result["ndcg@10"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_load_mb": rss_loaded,
        "epoch_gflop": epoch_flops(floor_model, flop_config, lengths, model.n_items, config["train_batch_size"]) / 1e9,
        "eval_gflop": eval_flops(flop_config, eval_lengths, model.n_items) / 1e9,
        "real_tokens": int(sum(lengths)),
        "padded_tokens": len(lengths) * config["MAX_ITEM_LIST_LENGTH"],
    }
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------------------------


def run_arm(arm, args, common, log_dir):
    stock, model, overrides = parse_arm(arm)
    spec = {
        "arm": arm, "stock": stock, "model": model, "overrides": overrides, "dataset": args.dataset,
        "common": common, "batches": args.batches, "threads": args.threads,
    }
    safe = arm.replace("/", "_").replace(":", "_").replace(",", "_").replace("=", "-")
    log = log_dir / f"{safe}.log"
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(log, "w") as handle:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
            stderr=handle, text=True, cwd=log_dir, env=env,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"error: arm {arm} failed (exit {proc.returncode}); log {log}:\n" + "\n".join(tail))
    record = json.loads(lines[-1][len(RESULT_PREFIX):])
    record["log"] = str(log)
    return record


def _matmul_in_subprocess(threads):
    code = (
        "import sys, torch; sys.path.insert(0, %r); from speed import matmul_gflops; "
        "%s print(matmul_gflops())"
        % (str(Path(__file__).parent), f"torch.set_num_threads({threads});" if threads else "")
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def render_table(report):
    rows = report["arms"]
    stock = next((r for r in rows if r["stock"]), None)
    rate = report["matmul_gflops"]
    lines = [
        "| arm | epoch (s) | / stock SASRec epoch | floor (s) | / floor | eval, all users (s) | / stock eval | "
        "peak RSS (MB) | anomaly mode |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        floor = r["epoch_gflop"] / rate
        ratio = f"{r['epoch_s'] / stock['epoch_s']:.2f}" if stock else "-"
        eval_ratio = f"{r['eval_s'] / stock['eval_s']:.2f}" if stock else "-"
        extrapolated = "" if r["timed_batches"] == r["n_batches"] else "*"
        lines.append(
            f"| {r['arm']} | {r['epoch_s']:.1f}{extrapolated} | {ratio} | {floor:.1f} | {r['epoch_s'] / floor:.1f}x | "
            f"{r['eval_s']:.1f} (batch {r['eval_batch_size']}) | {eval_ratio} | {r['peak_rss_mb']:.0f} | "
            f"{'on' if r['anomaly_mode'] else 'off'} |"
        )
    notes = []
    if any(r["timed_batches"] != r["n_batches"] for r in rows):
        notes.append(f"\\* extrapolated from the first {rows[0]['timed_batches']} of {rows[0]['n_batches']} batches")
    pre = [f"{r['arm']} " + (f"{r['pretrain_s']:.0f} s" if r["pretrain_s"] >= 1 else "from its cache")
           for r in rows if r.get("pretrain_s") is not None]
    if pre:
        notes.append("pre-training hook, not in the epoch: " + ", ".join(pre))
    eval_floor = rows[0]["eval_gflop"] / rate if rows else None
    if eval_floor:
        notes.append(f"evaluation floor (SASRec-sized encoder): {eval_floor:.2f} s")
    return "\n".join(lines + [""] + notes)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="amazon-sports")
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help="default: %(default)s")
    parser.add_argument("--batches", type=int, default=None, help="time the first N batches only (extrapolated)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--raw-data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every arm (repeatable)")
    parser.add_argument("--out", default=None, help="JSON report (default: bench/results/speed/<dataset>.json)")
    parser.add_argument("--runs-dir", default=str(REPO / "bench" / "runs" / "speed"))
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1])
    if argv[:1] == ["--prepare"]:
        return prepare_main(argv[1])
    args = build_parser().parse_args(argv)
    for arm in args.arms:
        parse_arm(arm)  # fail early on a malformed arm
    common = {
        "raw_data_dir": str(Path(args.raw_data_dir).resolve()),
        "data_path": str(Path(args.data_path).resolve()),
        "show_progress": False,
        "state": "WARNING",
    }
    for item in args.overrides:
        key, _, value = item.partition("=")
        common[key.strip()] = parse_value(value.strip())
    log_dir = Path(args.runs_dir) / args.dataset
    log_dir.mkdir(parents=True, exist_ok=True)
    common["checkpoint_dir"] = str((log_dir / "saved").resolve())
    started = time.time()
    report = {"dataset": args.dataset, "started": now_utc(), "machine": machine_info(), "git": git_state(),
              "command": " ".join([sys.executable.split("/")[-1], "bench/speed.py", *argv]), "arms": []}
    subprocess.run([sys.executable, __file__, "--prepare", json.dumps({"dataset": args.dataset, "common": common})],
                   check=True, cwd=log_dir)
    rates = [_matmul_in_subprocess(args.threads)]
    for arm in args.arms:
        print(f"{arm} ...", flush=True)
        record = run_arm(arm, args, common, log_dir)
        report["arms"].append(record)
        print(f"  epoch {record['epoch_s']:.1f} s, eval {record['eval_s']:.1f} s, peak RSS "
              f"{record['peak_rss_mb']:.0f} MB", flush=True)
    rates.append(_matmul_in_subprocess(args.threads))
    report["matmul_gflops"] = max(rates)
    report["matmul_gflops_runs"] = rates
    report["wall_s"] = time.time() - started
    out = Path(args.out) if args.out else REPO / "bench" / "results" / "speed" / f"{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    print(f"\n{args.dataset}, {report['machine']['cpu_model']}, {report['arms'][0]['torch_threads']} threads, "
          f"matmul {report['matmul_gflops']:.0f} GFLOP/s; report {out}\n")
    print(render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
