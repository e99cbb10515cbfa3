"""Training and evaluation speed of plugin models next to RecBole's stock SASRec, and the FLOPs floor. An arm is
``[stock/]Model[:key=value,...]``; each runs in its own process, one after the other (bench/README.md)."""

import math
import resource
import sys
import time
from pathlib import Path

import common
from common import REPO, parse_arm, timed

# Left out of the stock arm's config: keys RecBole does not read, and the plugin's CPU eval_batch_size.
PLUGIN_ONLY_KEYS = {"raw_data_dir", "raw_cache_dir", "eval_batch_size"}


def mclrec_steps(schedule):
    """MCLRec's ``meta_schedule`` (as the Config gives it) -> (encoder steps, augmenter steps) per batch."""
    from recbole_srma.model.mclrec import META_SCHEDULES
    phases = META_SCHEDULES[schedule] or ("encoder",)  # joint
    return phases.count("encoder"), phases.count("augmenter")


def layer_flops(length, hidden, inner):
    """Forward FLOPs of one Transformer block on one sequence of ``length`` real tokens (causal attention)."""
    dense = 2 * length * (4 * hidden * hidden + 2 * hidden * inner)  # Q, K, V, output; feed-forward
    attention = 2 * 2 * hidden * length * (length + 1) / 2  # QK^T and AV over the causal triangle
    return dense + attention


def view_lengths(length, operators, config, max_len=50):
    """The lengths one augmented view of a ``length``-item sequence can have, one per operator (equally likely)."""
    return [max(1, math.floor(config["crop_eta"] * length)) if op == "crop"
            else min(max_len, length + max(1, math.floor(config["insert_rate"] * length))) if op == "insert"
            else length for op in operators]


def view_flops(lengths, config, layers, short_pool=False):
    """Expected forward FLOPs of ``layers`` blocks on one augmented view of each sequence (``short_pool``: short ones
    draw from ``short_augmentations``)."""
    threshold = config.get("augment_threshold", -1)
    total = 0.0
    for n in lengths:
        short = short_pool and threshold not in (None, -1) and n <= threshold
        options = view_lengths(n, config["short_augmentations" if short else "augmentations"], config,
                               config.get("MAX_ITEM_LIST_LENGTH", 50))
        flops = [layers * layer_flops(v, config["hidden_size"], config["inner_size"]) for v in options]
        total += sum(flops) / len(flops)
    return total


def epoch_flops(model, config, train_lengths, n_items, batch_size):
    """FLOPs of one training epoch (forward + backward = 3x forward for what is trained) on real tokens only: every
    block at every real position, the next-item softmax over all items, the views at their expected lengths, InfoNCE,
    SRMA's layer-dropping blocks and frozen complement, MCLRec's similarities and augmenter steps, BT4SRec's views or
    partners, projector and cross-correlation, BERT4Rec's masked positions. Element-wise work and the optimiser are
    left out: the floor is a bound no implementation can beat at the machine's matmul rate."""
    H, I, n_layers = config["hidden_size"], config["inner_size"], config["n_layers"]
    max_len = config.get("MAX_ITEM_LIST_LENGTH", 50)
    encoder = sum(n_layers * layer_flops(n, H, I) for n in train_lengths)
    forward = encoder + len(train_lengths) * 2 * H * n_items  # + the next-item scores
    no_grad = views = 0.0
    full, rest = divmod(len(train_lengths), batch_size)
    info_nce = sum(2 * (2 * b) ** 2 * H for b in [batch_size] * full + [rest])  # one InfoNCE's similarities
    if model in ("CL4SRec", "SRMA", "CoSeRec", "MCLRec"):
        views = 2 * view_flops(train_lengths, config, n_layers, short_pool=True)
        forward += views + info_nce
    if model == "DuoRec":
        # a second pass of every sequence and / or a same-target one (whose lengths follow the training lengths)
        contrast = config["contrast"]  # as the Config gives it: old spellings already renamed
        extra = {"dropout_view_vs_same_target": 2, "dropout_pair": 1, "same_target_pair": 1, "both_pairs": 2}[contrast]
        forward += extra * encoder + (2 if contrast == "both_pairs" else 1) * info_nce
    if model == "BT4SRec" and config["alpha"] > 0:
        # two augmented views and / or a same-target partner; projector and [D, D] cross-correlation per pair
        if config["bt_positive"] in ("augment", "both"):
            views = 2 * view_flops(train_lengths, config, n_layers)
        pairs = {"augment": 1, "same_target": 1, "both": 2}[config["bt_positive"]]
        partners = encoder if config["bt_positive"] != "augment" else 0.0
        widths = [H, *config["projector_sizes"]]
        projector = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
        forward += views + partners + len(train_lengths) * pairs * 2 * (projector + 2 * widths[-1] ** 2)
    if model == "SRMA":
        K, M = config["layer_drop_K"], config["layer_drop_M"]
        forward += len(train_lengths) * (K + 2 * (K - M)) * 2 * 2 * H * I
        if config["complement_type"] in ("transformer", "same") and config["complement_gamma"] > 0:
            no_grad += view_flops(train_lengths, config, 1 if config["complement_type"] == "transformer" else n_layers)
    if model in ("BERT4Rec", "PluginBERT4Rec"):
        # a batch masks the last item with probability ft_ratio, else each real position with probability
        # mask_ratio (at most int(mask_ratio * L)), and scores the masked positions
        ft, rate = config["ft_ratio"], config["mask_ratio"]
        targets = sum(ft + (1 - ft) * min(rate * n, int(rate * max_len)) for n in train_lengths)
        forward = encoder + targets * (2 * H * n_items + 2 * H * H)  # + the output head's H x H layer
    if model == "MCLRec":
        # per batch: encoder steps (the above plus L_cl2 / R similarities) and augmenter steps (views without
        # gradient, the same similarities); the augmenter MLPs are negligible
        encoder_steps, augmenter_steps = mclrec_steps(config["meta_schedule"])
        similarities = 3 * (int(bool(config["use_cl2"])) + int(config["reg_gamma"] > 0)) * info_nce
        return 3 * encoder_steps * (forward + similarities) + augmenter_steps * (views + 3 * similarities)
    return 3 * forward + no_grad


def matmul_gflops(size=2048, repeats=5):
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / common.best_time(lambda: torch.mm(a, b), repeats) / 1e9


def build_stock(spec):
    """RecBole alone: nothing of the plugin but numpy aliases (its registry would switch RecBole's anomaly mode off)."""
    import yaml
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_logger, init_seed

    from recbole_srma import compat  # noqa: F401  (numpy aliases: RecBole 1.2.1 cannot start on numpy 2 without)
    from recbole_srma.data.convert import LOAD_COL

    protocol = yaml.safe_load((REPO / "properties" / "overall.yaml").read_text())
    # load_col: the converted file's columns (the plugin's Config adds them itself)
    config_dict = {**protocol, "load_col": LOAD_COL, **spec["common"], **spec["overrides"]}
    config = Config(model=spec["model"], dataset=spec["dataset"], config_dict={
        k: v for k, v in config_dict.items() if k not in PLUGIN_ONLY_KEYS | {"complement_epochs"}})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(spec["model"])(config, train_data._dataset).to(config["device"])
    return config, train_data, valid_data, model, Trainer(config, model)


def measure(spec):
    """The worker: "prepare" the dataset for every arm (the stock arm too), a "matmul" rate, or time one "arm"."""
    if spec["task"] == "prepare":
        from recbole_srma.config import Config
        from recbole_srma.data import prepare_dataset

        prepare_dataset(Config(model="PluginSASRec", dataset=spec["dataset"], config_dict=dict(spec["common"])))
        return {}
    if spec["task"] == "matmul":
        return matmul_gflops()
    import torch

    plugin_dict = dict(spec["common"], **spec["overrides"])
    if spec["model"] == "SRMA":
        plugin_dict.setdefault("complement_epochs", 1)
    if spec["stock"]:
        built, load_s = timed(build_stock, spec)
    else:
        built, load_s = timed(common.build, spec["model"], spec["dataset"], plugin_dict, prepared=True, log=True)
    config, train_data, valid_data, model, trainer = built
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # stages before training (SRMA's complement encoder): not part of the epoch; stock trainers have none
    pretrain_s = timed(trainer.run_stages, train_data, valid_data)[1] if hasattr(trainer, "run_stages") else None
    n_batches = len(train_data)
    loader = common.Slice(train_data, spec["batches"]) if spec["batches"] else train_data
    anomaly = torch.is_anomaly_enabled()
    train_s = timed(trainer._train_epoch, loader, 0, show_progress=False)[1]
    result, eval_s = timed(trainer.evaluate, valid_data, load_best_model=False, show_progress=False)
    lengths = train_data._dataset.inter_feat[model.ITEM_SEQ_LEN].tolist()
    eval_lengths = valid_data._dataset.inter_feat[model.ITEM_SEQ_LEN].tolist()
    flop_config, floor_model = dict(config.final_config_dict), "SASRec" if spec["stock"] else spec["model"]
    H, I = config["hidden_size"], config["inner_size"]  # evaluation: a SASRec-sized encoder and the scores
    eval_gflop = (sum(config["n_layers"] * layer_flops(n, H, I) for n in eval_lengths)
                  + len(eval_lengths) * 2 * H * model.n_items) / 1e9
    return {
        **{k: spec[k] for k in ("arm", "model", "stock", "overrides")}, "device": config["device"].type,
        "torch_threads": torch.get_num_threads(), "anomaly_mode": anomaly,
        "fast_path": config["fast_path"] if "fast_path" in config else None,
        "train_batch_size": config["train_batch_size"], "eval_batch_size": config["eval_batch_size"],
        "n_batches": n_batches, "timed_batches": len(loader), "load_s": load_s, "pretrain_s": pretrain_s,
        "timed_train_s": train_s, "epoch_s": train_s * n_batches / len(loader), "eval_s": eval_s,
        "eval_users": len(eval_lengths), "valid_ndcg@10": float(result["ndcg@10"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_after_load_mb": rss_loaded,
        "epoch_gflop": epoch_flops(floor_model, flop_config, lengths, model.n_items, config["train_batch_size"]) / 1e9,
        "eval_gflop": eval_gflop,
        "real_tokens": int(sum(lengths)), "padded_tokens": len(lengths) * config["MAX_ITEM_LIST_LENGTH"],
    }


def call(spec, log, what):
    with open(log, "w") as f:
        code = common.launch(__file__, spec, f, cwd=log.parent, threads=spec["threads"])[0]
    text = log.read_text(errors="replace")
    result = common.read_prefixed(text)
    if code or result is None:
        raise SystemExit(f"error: {what} failed (exit {code}); log {log}:\n" + "\n".join(text.splitlines()[-15:]))
    return result


def render_table(report):
    rows, rate = report["arms"], report["matmul_gflops"]
    stock = next((r for r in rows if r["stock"]), None)
    lines = ["| arm | epoch (s) | / stock SASRec epoch | floor (s) | / floor | eval, all users (s) | / stock eval | "
             "peak RSS (MB) | anomaly mode |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        floor, extrapolated = r["epoch_gflop"] / rate, "" if r["timed_batches"] == r["n_batches"] else "*"
        ratios = [f"{r[k] / stock[k]:.2f}" if stock else "-" for k in ("epoch_s", "eval_s")]
        lines.append(f"| {r['arm']} | {r['epoch_s']:.1f}{extrapolated} | {ratios[0]} | {floor:.1f} | "
                     f"{r['epoch_s'] / floor:.1f}x | {r['eval_s']:.1f} (batch {r['eval_batch_size']}) | {ratios[1]} | "
                     f"{r['peak_rss_mb']:.0f} | {'on' if r['anomaly_mode'] else 'off'} |")
    lines.append("")
    if any(r["timed_batches"] != r["n_batches"] for r in rows):
        lines.append(f"\\* extrapolated from the first {rows[0]['timed_batches']} of {rows[0]['n_batches']} batches")
    pre = [f"{r['arm']} " + (f"{r['pretrain_s']:.0f} s" if r["pretrain_s"] >= 1 else "from its cache")
           for r in rows if r.get("pretrain_s") is not None]
    lines += ["pre-training hook, not in the epoch: " + ", ".join(pre)] if pre else []
    if rows and rows[0]["eval_gflop"]:
        lines.append(f"evaluation floor (SASRec-sized encoder): {rows[0]['eval_gflop'] / rate:.2f} s")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return common.worker(argv[1], measure)
    parser = common.make_parser(__doc__)
    parser.add_argument("--dataset", default="amazon-sports")
    parser.add_argument("--arms", nargs="+", default=["stock/SASRec", "PluginSASRec", "CL4SRec", "SRMA"])
    parser.add_argument("--batches", type=int, default=None, help="time the first N batches only (extrapolated)")
    common.data_options(parser)
    parser.add_argument("--out", default=None, help="JSON report (default: bench/results/speed/<dataset>.json)")
    parser.add_argument("--runs-dir", default=str(REPO / "bench" / "runs" / "speed"), help="default: %(default)s")
    args = parser.parse_args(argv)
    arms = {arm: parse_arm(arm) for arm in args.arms}  # fails early on a malformed arm
    log_dir = Path(args.runs_dir).resolve() / args.dataset
    log_dir.mkdir(parents=True, exist_ok=True)
    task = {"dataset": args.dataset, "common": common.base_config(args, log_dir / "saved"), "threads": args.threads}
    started = time.time()
    report = dict(common.report_head(args.dataset, "speed.py", argv), arms=[])
    call(dict(task, task="prepare"), log_dir / "prepare.log", "converting the dataset")
    rates = [call(dict(task, task="matmul"), log_dir / "matmul.log", "the matmul measurement")]
    for arm, (stock, model, overrides) in arms.items():
        print(f"{arm} ...", flush=True)
        log = log_dir / (arm.replace("/", "_").replace(":", "_").replace(",", "_").replace("=", "-") + ".log")
        spec = dict(task, task="arm", arm=arm, stock=stock, model=model, overrides=overrides, batches=args.batches)
        record = dict(call(spec, log, f"arm {arm}"), log=str(log))
        report["arms"].append(record)
        print(f"  epoch {record['epoch_s']:.1f} s, eval {record['eval_s']:.1f} s, peak RSS "
              f"{record['peak_rss_mb']:.0f} MB", flush=True)
    rates.append(call(dict(task, task="matmul"), log_dir / "matmul.log", "the matmul measurement"))
    report.update(matmul_gflops=max(rates), matmul_gflops_runs=rates, wall_s=time.time() - started)
    out = Path(args.out) if args.out else REPO / "bench" / "results" / "speed" / f"{args.dataset}.json"
    common.write_json(out, report, indent=2)
    print(f"\n{args.dataset}, {report['machine']['cpu_model']}, {report['arms'][0]['torch_threads']} threads, "
          f"matmul {report['matmul_gflops']:.0f} GFLOP/s; report {out}\n")
    print(render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
