"""Test metrics of a checkpoint under RecBole's convention (every item ranked, the user's earlier ones too) and with
``exclude_history_items`` (the user's whole history masked, as the Salesforce code behind the SRMA paper and RecTools'
filter_viewed do: a repeated test item never hits), split by whether the test item repeats an earlier one. The
masking is the trainer's own (recbole_srma.trainer.mask_history)."""

from pathlib import Path

import common
import numpy as np
import torch
from recbole.evaluator.metrics import NDCG, Hit

from recbole_srma import load_data_and_model
from recbole_srma.trainer import mask_history

KS = (5, 10, 20)


def _per_user(metrics, scores, target):
    """Per-user hit and NDCG at each k, from RecBole's own metric classes (one positive item per user)."""
    pos_index = (torch.topk(scores, max(KS), dim=1).indices.cpu() == target.unsqueeze(1)).numpy()
    hit = metrics["hit"].metric_info(pos_index)
    ndcg = metrics["ndcg"].metric_info(pos_index, np.ones(len(target), dtype=np.int64))
    return {f"{m}@{k}": torch.from_numpy(v[:, k - 1]).float() for k in KS for m, v in (("hit", hit), ("ndcg", ndcg))}


@torch.no_grad()
def evaluate(model, dataset, test_data, config):
    metrics = {"hit": Hit(config), "ndcg": NDCG(config)}
    history = test_data._dataset.history_items  # the user's items before the test item
    indptr, items = history
    per, repeat = {"recbole": [], "masked": []}, []
    for interaction, history_index, positive_u, positive_i in test_data:
        interaction = interaction.to(config["device"])
        scores = model.full_sort_predict(interaction).view(-1, dataset.item_num).float()
        scores[:, 0] = -torch.inf
        if history_index is not None:  # RecBole passes none for sequential models; honour it if it ever does
            scores[history_index] = -torch.inf
        target = torch.full((scores.size(0),), -1, dtype=torch.long)
        target[positive_u.cpu()] = positive_i.cpu()
        users = interaction[dataset.uid_field].cpu()
        for user, item in zip(users.tolist(), target.tolist()):
            repeat.append(bool((items[indptr[user] : indptr[user + 1]] == item).any()))
        per["recbole"].append(_per_user(metrics, scores, target))
        per["masked"].append(_per_user(metrics, mask_history(scores.clone(), users, history), target))
    merged = {conv: {m: torch.cat([b[m] for b in batches]) for m in batches[0]} for conv, batches in per.items()}
    return merged, torch.tensor(repeat)


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary to this file")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint at {args.checkpoint}; pass a .pth file written by a training run")
    if args.threads:
        torch.set_num_threads(args.threads)
    # the switch only attaches the histories here: the RecBole column is scored without it
    config, model, dataset, _, _, test_data = load_data_and_model(str(args.checkpoint), {"exclude_history_items": True})
    per_user, repeat = evaluate(model, dataset, test_data, config)
    summary = {"checkpoint": str(args.checkpoint), "model": config["model"], "dataset": config["dataset"],
               "users": int(len(repeat)), "users_target_in_history": int(repeat.sum())}
    for conv, metrics in per_user.items():  # every user, those whose test item repeats an earlier one, the others
        for part, users in (("", slice(None)), ("_target_in_history", repeat), ("_target_new", ~repeat)):
            summary[conv + part] = {m: round(float(v[users].mean()), 4) if len(v[users]) else None
                                    for m, v in metrics.items()}
    print(f"{summary['model']} on {summary['dataset']}: {summary['users']} test users, "
          f"{summary['users_target_in_history']} with a test item already in their history")
    names = [f"{m}@{k}" for m in ("hit", "ndcg") for k in KS]
    print(f"{'convention':<34}" + "".join(f"{n:>9}" for n in names))
    for row in [conv + part for conv in ("recbole", "masked") for part in ("", "_target_in_history", "_target_new")]:
        cells = "".join(f"{'-' if summary[row][n] is None else format(summary[row][n], '.4f'):>9}" for n in names)
        print(f"{row:<34}{cells}")
    if args.json:
        common.write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
