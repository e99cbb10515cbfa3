"""Time CoSeRec's item similarity on the real datasets: the offline ItemCF-IUF top-1 (sparse products, no cache)
and one hybrid refresh (top-1 by item-embedding dot products, chunked).

    python bench/coserec_similarity.py [--datasets amazon-sports ...] [--threads 2] [--raw-data-dir ../shared/data]
"""

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["amazon-sports"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--raw-data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]
    import torch
    from recbole.data import create_dataset, data_preparation

    from recbole_srma.config import Config
    from recbole_srma.data import prepare_dataset
    from recbole_srma.model import similarity

    if args.threads:
        torch.set_num_threads(args.threads)
    print("| dataset | items | training pairs | non-zero similarities | ItemCF-IUF top-1 (s) | hybrid refresh (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.datasets:
        config = Config(model="CoSeRec", dataset=name, config_dict={
            "raw_data_dir": args.raw_data_dir, "data_path": args.data_path, "state": "WARNING"})
        prepare_dataset(config)
        train = data_preparation(config, create_dataset(config))[0]._dataset
        item_seq = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        users, items = similarity.training_pairs(train, item_seq, train.uid_field, train.iid_field)
        _, _, info = similarity.offline_top1(train, item_seq, train.uid_field, train.iid_field, cache_dir=None)
        weight = torch.randn(train.item_num, config["hidden_size"]) * 0.02
        start = time.perf_counter()
        similarity.embedding_top1(weight)
        online = time.perf_counter() - start
        cells = [name, train.item_num - 1, len(users), info["nnz"], f"{info['seconds']:.2f}", f"{online:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
