"""Test HR@10 and NDCG@10 of several checkpoints of one dataset, split by the length of each test user's history (the
items before the test item, as the model reads them: at most MAX_ITEM_LIST_LENGTH): where does a model's difference
to the first checkpoint (the base) come from? Each checkpoint is scored under its own stored protocol (with the
trainer's own history masking when it has ``exclude_history_items``), so give checkpoints of one protocol.

    python bench/by_history_length.py BASE.pth MODEL.pth [MODEL2.pth ...] [--json out.json]

Per bucket: the users in it, each checkpoint's mean, and each later checkpoint's difference to the first with a 95 %
paired bootstrap interval over the bucket's users (the same users score under both, so the pairing removes most of
the between-user variance; the interval says nothing about seeds).
"""

from pathlib import Path

import common
import numpy as np
import torch

from recbole_srma import load_data_and_model
from recbole_srma.trainer import mask_history

BUCKETS = [(1, 4), (5, 5), (6, 7), (8, 11), (12, 10**9)]  # Toys and Beauty: 33, 19, 20, 15, 13 % of the test users
METRICS = ("hit@10", "ndcg@10")


@torch.no_grad()
def per_user(checkpoint):
    """``(label, {user: (history length, hit@10, ndcg@10)})`` on the test split under the checkpoint's protocol."""
    config, model, dataset, _, _, test_data = load_data_and_model(str(checkpoint))
    out = {}
    for interaction, history_index, positive_u, positive_i in test_data:
        interaction = interaction.to(config["device"])
        scores = model.full_sort_predict(interaction).view(-1, dataset.item_num).float()
        scores[:, 0] = -torch.inf
        users = interaction[dataset.uid_field].cpu()
        if config["exclude_history_items"]:
            scores = mask_history(scores, users, test_data._dataset.history_items)
        target = torch.full((scores.size(0),), -1, dtype=torch.long)
        target[positive_u.cpu()] = positive_i.cpu()
        rank = (scores > scores.gather(1, target.clamp(min=0).unsqueeze(1).to(scores.device))).sum(1).cpu()
        hit = rank < 10
        ndcg = torch.where(hit, 1.0 / torch.log2(rank.float() + 2), torch.zeros_like(rank, dtype=torch.float))
        lengths = interaction[model.ITEM_SEQ_LEN].cpu()
        for user, length, h, n in zip(users.tolist(), lengths.tolist(), hit.tolist(), ndcg.tolist()):
            out[user] = (length, float(h), n)
    return f"{config['model']} ({Path(checkpoint).name})", out


def bootstrap(diff, rng, n=1000):
    if len(diff) == 0:
        return None, None
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def summarise(runs, seed=0):
    """Per bucket and metric: each checkpoint's mean, and each later one's difference to the first with its interval."""
    (_, first), rng = runs[0], np.random.default_rng(seed)
    users = sorted(set(first).intersection(*(set(r) for _, r in runs[1:])))
    if len(users) != len(first):
        raise SystemExit("error: the checkpoints do not score the same test users: give checkpoints of one dataset")
    lengths = np.array([first[u][0] for u in users])
    table = []
    for low, high in BUCKETS + [(1, 10**9)]:
        chosen = [u for u, length in zip(users, lengths) if low <= length <= high]
        row = {"bucket": f"{low}-{high}" if high < 10**9 else (f"{low}+" if low > 1 else "all"), "users": len(chosen)}
        for m, metric in enumerate(METRICS):
            values = [np.array([r[u][1 + m] for u in chosen]) for _, r in runs]
            row[metric] = [float(v.mean()) if len(v) else None for v in values]
            row[metric + " diff"] = [(float((v - values[0]).mean()), *bootstrap(v - values[0], rng))
                                     if len(v) else None for v in values[1:]]
        table.append(row)
    return table


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("checkpoints", type=Path, nargs="+", help="the base first, then the models to compare")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("give the base's checkpoint and at least one other")
    for path in args.checkpoints:
        if not path.is_file():
            parser.error(f"no checkpoint at {path}; pass .pth files written by training runs")
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [per_user(path) for path in args.checkpoints]
    table = summarise(runs)
    labels = [label for label, _ in runs]
    print("checkpoints: " + "; ".join(f"[{i}] {label}" for i, label in enumerate(labels)))
    for metric in METRICS:
        print(f"\n{metric}: mean per checkpoint; [i] - [0] with a 95 % paired bootstrap interval")
        for row in table:
            means = " ".join(f"{v:.4f}" for v in row[metric])
            base = row[metric][0] or float("nan")
            diffs = "  ".join(f"[{i}] {d:+.4f} ({lo:+.4f}, {hi:+.4f}) {d / base * 100:+.1f}%"
                              for i, (d, lo, hi) in enumerate(row[metric + " diff"], 1))
            print(f"  history {row['bucket']:>6}  {row['users']:6d} users  {means}  {diffs}")
    if args.json:
        common.write_json(args.json, {"checkpoints": [str(p) for p in args.checkpoints], "labels": labels,
                                      "buckets": table})
    return table


if __name__ == "__main__":
    main()
