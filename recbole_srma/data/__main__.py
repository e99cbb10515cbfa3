"""``python -m recbole_srma.data {convert,fetch,list}``: dataset command line.

- ``convert PATH --name NAME [--data_path dataset/]``: convert your own ``user item item ...`` file.
- ``fetch NAME [--data_path dataset/] [--raw_data_dir DIR] [--raw_cache_dir DIR]``: find or download a known
  dataset's raw file, verify it and convert it.
- ``list``: the known datasets and their statistics.

Errors print the message and exit with status 2 (no traceback).
"""

import argparse
import sys
import time
from pathlib import Path

from recbole_srma.errors import DatasetError

RUN_SCRIPT = "run_recbole_srma.py"


def _stats_line(meta):
    return f"{meta['users']} users, {meta['items']} items, {meta['interactions']} interactions"


def _train_hint(name, data_root):
    return f"python {RUN_SCRIPT} --model=CL4SRec --dataset={name} --data_path={data_root}"


def cmd_convert(args):
    from recbole_srma.data.convert import (
        check_name,
        convert_into_folder,
        inter_path,
        sha256_file,
        single_interaction_warning,
    )
    from recbole_srma.data.raw import known_datasets

    name = check_name(args.name)
    known = known_datasets().get(name)
    if known and known.get("raw_sha256") and Path(args.path).is_file():
        if sha256_file(args.path) != known["raw_sha256"]:
            raise DatasetError(
                f"{name!r} is the name of a known dataset ({known['raw_file']}), and {args.path} is not that "
                f"file (its sha256 differs from {known['raw_sha256']}); a training run would replace it with the "
                f"official data. Pick another --name."
            )
    folder = Path(args.data_path) / name
    start = time.perf_counter()
    meta = convert_into_folder(args.path, name, folder)
    elapsed = time.perf_counter() - start
    print(f"Wrote {inter_path(folder, name)} in {elapsed:.2f} s: {_stats_line(meta)}.")
    warning = single_interaction_warning(meta)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Train on it with: {_train_hint(name, args.data_path)}")
    return 0


def cmd_fetch(args):
    from recbole_srma.data.convert import read_sidecar
    from recbole_srma.data.raw import known_datasets, prepare_dataset, unknown_dataset_message

    known = known_datasets()
    folder = Path(args.data_path) / args.name
    if args.name not in known:
        raise DatasetError(unknown_dataset_message(args.name, folder))
    config = dict(known[args.name])
    config.update(
        dataset=args.name,
        data_path=str(folder),
        raw_data_dir=args.raw_data_dir,
        raw_cache_dir=args.raw_cache_dir,
    )
    path = prepare_dataset(config)
    meta = read_sidecar(folder, args.name)
    print(f"Ready: {path}" + (f": {_stats_line(meta)}." if meta else ""))
    print(f"Train on it with: {_train_hint(args.name, args.data_path)}")
    return 0


def cmd_list(args):
    from recbole_srma.data.convert import inter_path
    from recbole_srma.data.raw import known_datasets

    known = known_datasets()
    if not known:
        print("No known datasets (no properties/dataset/*.yaml with raw_file).")
        return 0
    rows = [("name", "raw file", "users", "items", "interactions", "converted")]
    for name, info in known.items():
        converted = inter_path(Path(args.data_path) / name, name).is_file()
        rows.append(
            (
                name,
                info["raw_file"],
                str(info.get("users", "?")),
                str(info.get("items", "?")),
                str(info.get("interactions", "?")),
                "yes" if converted else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m recbole_srma.data",
        description="Prepare datasets for recbole-srma (RecBole atomic .inter files).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert your own `user item item ...` file into NAME.inter")
    p.add_argument("path", help="text file, one line per user: USER_ID ITEM_ID ITEM_ID ... (chronological)")
    p.add_argument("--name", required=True, help="dataset name, used later as --dataset=NAME")
    p.add_argument("--data_path", default="dataset/", help="data root; the file goes to DATA_PATH/NAME/NAME.inter")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("fetch", help="find or download a known dataset, verify and convert it")
    p.add_argument("name", help="a known dataset name (see `list`)")
    p.add_argument("--data_path", default="dataset/", help="data root (default: dataset/)")
    p.add_argument("--raw_data_dir", default=None, help="folder holding the raw file (looked up first)")
    p.add_argument("--raw_cache_dir", default=None, help="cache folder (default: $RECBOLE_SRMA_CACHE_DIR or "
                   "~/.cache/recbole_srma)")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("list", help="list the known datasets and their statistics")
    p.add_argument("--data_path", default="dataset/", help="data root checked for converted files")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
