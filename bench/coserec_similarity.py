"""Time CoSeRec's item similarity on the real datasets: the offline ItemCF-IUF top-1 (sparse products, no cache)
and one hybrid refresh (top-1 by item-embedding dot products, chunked)."""

import sys
import time

import common
import torch
from recbole.data import create_dataset, data_preparation

from recbole_srma.config import Config
from recbole_srma.data import prepare_dataset
from recbole_srma.model import similarity


def main(argv=None):
    parser = common.make_parser(__doc__)
    parser.add_argument("--datasets", nargs="+", default=["amazon-sports"])
    common.data_options(parser)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads every --key=value of sys.argv
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| dataset | items | training pairs | non-zero similarities | ItemCF-IUF top-1 (s) | hybrid refresh (s) |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name in args.datasets:
        config = Config(model="CoSeRec", dataset=name, config_dict={"raw_data_dir": args.raw_data_dir, "data_path":
                        args.data_path, "state": "WARNING", **common.parse_overrides(args.overrides)})
        prepare_dataset(config)
        train = data_preparation(config, create_dataset(config))[0]._dataset
        fields = (config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"], train.uid_field, train.iid_field)
        users = similarity.training_pairs(train, *fields)[0]
        info = similarity.offline_top1(train, *fields, cache_dir=None)[2]
        weight = torch.randn(train.item_num, config["hidden_size"]) * 0.02
        start = time.perf_counter()
        similarity.embedding_top1(weight)
        cells = [name, train.item_num - 1, len(users), info["nnz"], f"{info['seconds']:.2f}",
                 f"{time.perf_counter() - start:.2f}"]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
