"""Train and evaluate a model with RecBole's pipeline: any plugin model (CL4SRec, ...) or any RecBole model.

    python run_recbole_srma.py --model=CL4SRec --dataset=amazon-toys
    python run_recbole_srma.py --model=SASRec --dataset=amazon-toys --config_files=a.yaml,b.yaml --learning_rate=5e-4

Every other ``--key=value`` is a RecBole / plugin hyper-parameter (command line > config dict > files > plugin
defaults > RecBole defaults), exactly as with RecBole's run_recbole.py.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", type=str, default=None, help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="dataset name")
    parser.add_argument(
        "--config_files", type=str, default=None, help="yaml config files, separated by commas or spaces"
    )
    parser.add_argument("--resume", type=str, default=None, help="checkpoint to continue training from")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes (distributed training)")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the main process")
    parser.add_argument("--port", type=str, default="5678", help="port of the main process")
    parser.add_argument("--world_size", type=int, default=-1, help="total number of processes")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this machine's processes")
    # The rest (--key=value) is read by the Config from sys.argv, as in RecBole.
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    config_files = args.config_files.replace(",", " ").split() if args.config_files else None

    from recbole_srma.errors import RecBoleSRMAError
    from recbole_srma.quick_start import run

    try:
        run(
            args.model,
            args.dataset,
            config_file_list=config_files,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
            resume=args.resume,
        )
    except RecBoleSRMAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
