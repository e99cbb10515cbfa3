"""Test metrics of a trained checkpoint under both history conventions: RecBole's and the Salesforce code's.

    python bench/history_mask.py CHECKPOINT [--threads 2] [--json OUT]

RecBole's full-sort evaluation of sequential models ranks every item, including those already in the user's
history; the Salesforce code behind the SRMA paper's numbers (and CoSeRec's) sets the scores of every item the user
interacted with before the target to zero first, so a user whose test item repeats an earlier one can never hit.
On a dataset with repeat consumption (yelp: about 2,000 such users) the two conventions give different numbers for
the same model; this script measures how much, on the test split, from one checkpoint (a ``-last.pth`` or best
checkpoint of ``bench/run_models.py`` or ``run_recbole_srma.py``).

The history is the user's whole interaction list before the test item, not only the last MAX_ITEM_LIST_LENGTH
items the model sees, as in the Salesforce code. The "recbole" column recomputes what the trainer reports (it
should equal the run's recorded test metrics); the script checks that each test target is the user's last item.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

KS = (5, 10, 20)


def user_histories(dataset, item_seq_field, item_seq_len_field):
    """Per user id: (test item, array of every earlier item).

    After RecBole's sequential build, the dataset holds one row per target item (every item but each user's first,
    which has no prefix), sorted by (user, time); a user's first item is the whole prefix of their first row.
    """
    uids = dataset.inter_feat[dataset.uid_field].numpy()
    iids = dataset.inter_feat[dataset.iid_field].numpy()
    seqs = dataset.inter_feat[item_seq_field].numpy()
    lens = dataset.inter_feat[item_seq_len_field].numpy()
    order = np.argsort(uids, kind="stable")  # stable: keeps the time order within a user
    uids, iids, seqs, lens = uids[order], iids[order], seqs[order], lens[order]
    starts = np.flatnonzero(np.r_[True, uids[1:] != uids[:-1]])
    ends = np.r_[starts[1:], len(uids)]
    return {
        int(uids[s]): (int(iids[e - 1]), np.r_[seqs[s, : lens[s]], iids[s : e - 1]]) for s, e in zip(starts, ends)
    }


def _per_user(metrics, topk_items, target):
    """Per-user hit and NDCG at each k, from RecBole's own metric classes (one positive item per user)."""
    pos_index = (topk_items == target.unsqueeze(1)).numpy()
    hit = metrics["hit"].metric_info(pos_index)
    ndcg = metrics["ndcg"].metric_info(pos_index, np.ones(len(target), dtype=np.int64))
    out = {}
    for k in KS:
        out[f"hit@{k}"] = torch.from_numpy(hit[:, k - 1]).float()
        out[f"ndcg@{k}"] = torch.from_numpy(ndcg[:, k - 1]).float()
    return out


@torch.no_grad()
def evaluate(model, dataset, test_data, config):
    """Per-user metric arrays for both conventions, and which users' target repeats an earlier item."""
    from recbole.evaluator.metrics import NDCG, Hit

    metrics = {"hit": Hit(config), "ndcg": NDCG(config)}
    device = config["device"]
    histories = user_histories(dataset, model.ITEM_SEQ, model.ITEM_SEQ_LEN)
    n_items = dataset.item_num
    per = {"recbole": [], "masked": []}
    repeat = []
    for interaction, history_index, positive_u, positive_i in test_data:
        interaction = interaction.to(device)
        scores = model.full_sort_predict(interaction).view(-1, n_items).float()
        scores[:, 0] = -torch.inf
        if history_index is not None:  # RecBole passes none for sequential models; honour it if it ever does
            scores[history_index] = -torch.inf
        users = interaction[dataset.uid_field].cpu().numpy()
        target = torch.full((scores.size(0),), -1, dtype=torch.long)
        target[positive_u.cpu()] = positive_i.cpu()
        rows, cols, rep = [], [], []
        for row, user in enumerate(users):
            last, earlier = histories[int(user)]
            if int(target[row]) != last:
                raise SystemExit(
                    f"error: user {user}'s test item is {int(target[row])}, not their last item {last}; this "
                    "script assumes RecBole's leave-one-out split of a sequential dataset (eval_args split LS)"
                )
            rows.append(np.full(len(earlier), row))
            cols.append(earlier)
            rep.append(bool((earlier == last).any()))
        rows = torch.from_numpy(np.concatenate(rows)).to(scores.device)
        cols = torch.from_numpy(np.concatenate(cols)).to(scores.device)
        top = torch.topk(scores, max(KS), dim=1).indices.cpu()
        per["recbole"].append(_per_user(metrics, top, target))
        scores[rows, cols] = -torch.inf
        top = torch.topk(scores, max(KS), dim=1).indices.cpu()
        per["masked"].append(_per_user(metrics, top, target))
        repeat.extend(rep)
    merged = {
        conv: {m: torch.cat([b[m] for b in batches]) for m in batches[0]} for conv, batches in per.items()
    }
    return merged, torch.tensor(repeat)


def summarize(per_user, repeat):
    def mean(values, rows=None):
        values = values if rows is None else values[rows]
        return round(float(values.mean()), 4) if len(values) else None

    out = {"users": int(len(repeat)), "users_target_in_history": int(repeat.sum())}
    for conv, metrics in per_user.items():
        out[conv] = {m: mean(v) for m, v in metrics.items()}
        out[conv + "_target_in_history"] = {m: mean(v, repeat) for m, v in metrics.items()}
        out[conv + "_target_new"] = {m: mean(v, ~repeat) for m, v in metrics.items()}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary to this file")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint at {args.checkpoint}; pass a .pth file written by a training run")
    if args.threads:
        torch.set_num_threads(args.threads)

    from recbole_srma import load_data_and_model

    config, model, dataset, _, _, test_data = load_data_and_model(str(args.checkpoint))
    per_user, repeat = evaluate(model, dataset, test_data, config)
    summary = {"checkpoint": str(args.checkpoint), "model": config["model"], "dataset": config["dataset"]}
    summary.update(summarize(per_user, repeat))

    print(f"{summary['model']} on {summary['dataset']}: {summary['users']} test users, "
          f"{summary['users_target_in_history']} with a test item already in their history")
    names = [f"{m}@{k}" for m in ("hit", "ndcg") for k in KS]
    print(f"{'convention':<34}" + "".join(f"{n:>9}" for n in names))
    for conv in ("recbole", "masked"):
        for part in ("", "_target_in_history", "_target_new"):
            row = summary[conv + part]
            cells = "".join(f"{'-' if row[n] is None else format(row[n], '.4f'):>9}" for n in names)
            print(f"{conv + part:<34}{cells}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
