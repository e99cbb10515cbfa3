"""Train and evaluate a model with RecBole's pipeline: any plugin model (SRMA, CL4SRec, ...) or any RecBole model.

    python run_recbole_srma.py                       # the demo: SRMA on RecBole's ml-100k sample, a few minutes
    python run_recbole_srma.py --model=SRMA --dataset=amazon-sports
    python run_recbole_srma.py --model=SASRec --dataset=amazon-toys --config_files=a.yaml,b.yaml --learning_rate=5e-4

Every other ``--key=value`` is a RecBole / plugin hyper-parameter (command line > config dict > files > plugin
defaults > RecBole defaults), exactly as with RecBole's run_recbole.py.
"""

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent
DEMO_CONFIG = REPO / "properties" / "demo.yaml"


def _help_epilog():
    import yaml

    from recbole_srma.data import known_datasets

    def defaults(name):
        path = REPO / "properties" / name
        return yaml.safe_load(path.read_text()) if path.is_file() else {}

    try:
        from recbole_srma.registry import MODELS

        plugin_models = ", ".join(MODELS)
    except ImportError as err:  # RecBole missing: --help still works, and says what to install
        plugin_models = f"(cannot list them: {err})"
    protocol, backbone, srma = defaults("overall.yaml"), defaults("backbone.yaml"), defaults("model/SRMA.yaml")
    training = " ".join(
        f"--{key}={protocol[key]}"
        for key in ("epochs", "learning_rate", "train_batch_size", "eval_batch_size", "stopping_step", "seed")
    )
    shown = ("hidden_size", "n_layers", "n_heads", "hidden_dropout_prob")
    encoder = " ".join(f"--{key}={backbone[key]}" for key in shown)
    datasets = ", ".join(known_datasets())
    return f"""\
with no --model and no --dataset it runs the demo: SRMA on RecBole's ml-100k sample (shipped inside the recbole
package, no download) with {DEMO_CONFIG.relative_to(REPO)} (a few minutes on 2 CPU cores).

models:
  plugin:   {plugin_models}
  RecBole:  any RecBole model by its class name (SASRec, GRU4Rec, BERT4Rec, Caser, NARM, FPMC, BPR, LightGCN, DIN, ...)
  The plugin's protocol (properties/overall.yaml: CE, full ranking, leave-one-out) applies to the plugin's models and
  to RecBole's next-item sequential models; every other RecBole model keeps RecBole's own defaults for its type.

datasets:
  {datasets}: the raw file is read from --raw_data_dir=DIR, $RECBOLE_SRMA_RAW_DIR
      or ~/.cache/recbole_srma/raw, else downloaded; its sha256 is always checked (docs/datasets.md)
  ml-100k: RecBole's sample; your own file: python -m recbole_srma.data convert FILE --name NAME

most used hyper-parameters (--key=value; protocol defaults shown):
  {training}
  {encoder} --MAX_ITEM_LIST_LENGTH={protocol['MAX_ITEM_LIST_LENGTH']}
  --gpu_id=0 (a GPU if CUDA is available; --gpu_id='' forces the CPU)   --threads=N (CPU threads per process)
  SRMA pre-trains its complement encoder BEFORE its main training, for up to
      --complement_epochs={srma.get('complement_epochs')} epochs with early stopping, whatever --epochs says
      (cached under checkpoint_dir; --complement_type=none turns it off)
  BT4SRec: --pretrain_epochs=N pre-trains on the Barlow Twins loss first (default 0)
  every key and its default: properties/overall.yaml (protocol), properties/backbone.yaml (shared encoder),
  properties/model/<Model>.yaml (each plugin model, commented); RecBole's own keys:
  https://recbole.io/docs/user_guide/config_settings.html; the models and their options: docs/models.md
"""


def parse_args(argv=None, with_help=False):
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=_help_epilog() if with_help else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", type=str, default=None, help="model name (plugin or RecBole)")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="dataset name")
    parser.add_argument(
        "--config_files", type=str, default=None, help="yaml config files, separated by commas or spaces"
    )
    parser.add_argument("--resume", type=str, default=None, help="checkpoint to continue training from (-last.pth)")
    parser.add_argument("--raw_data_dir", type=str, default=None, help="folder holding the raw benchmark files")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads per process (default: $OMP_NUM_THREADS, else all cores)",
    )
    parser.add_argument("--nproc", type=int, default=1, help="number of processes (distributed training)")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the main process")
    parser.add_argument(
        "--port", type=str, default=None,
        help="port of the main process (default: a free one on one machine, else 5678)",
    )
    parser.add_argument("--world_size", type=int, default=-1, help="total number of processes")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this machine's processes")
    # The rest (--key=value, --raw_data_dir and --threads included) is read by the Config from sys.argv, as in RecBole.
    args, _ = parser.parse_known_args(argv)
    return args


def resume_command(argv, resume_file):
    """The command that continues this run from ``resume_file``: the same arguments, with ``--resume`` replaced."""
    kept = [a for a in argv if not a.startswith("--resume")]
    return shlex.join(["python", sys.argv[0], *kept, f"--resume={resume_file}"])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv, with_help=any(a in ("-h", "--help") for a in argv))
    config_files = args.config_files.replace(",", " ").split() if args.config_files else None
    if args.model is None and args.dataset is None and config_files is None:
        print(
            f"No --model or --dataset given: running the demo, SRMA on RecBole's ml-100k sample with "
            f"{DEMO_CONFIG.relative_to(REPO)}. See --help for everything else.",
            file=sys.stderr,
        )
        config_files = [str(DEMO_CONFIG)]

    from recbole_srma.compat import check_recbole_installed
    from recbole_srma.errors import RecBoleSRMAError, RunInterrupted

    try:
        check_recbole_installed()
        from recbole_srma.quick_start import run

        # also given as "--raw_data_dir DIR" (with a space), which the Config's own argv parsing does not read
        given = {"raw_data_dir": args.raw_data_dir, "threads": args.threads}
        config_dict = {k: v for k, v in given.items() if v is not None}
        run(
            args.model,
            args.dataset,
            config_file_list=config_files,
            config_dict=config_dict,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
            resume=args.resume,
        )
    except (RecBoleSRMAError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunInterrupted as err:
        if err.resume_file:
            print(f"interrupted; continue with: {resume_command(argv, err.resume_file)}", file=sys.stderr)
        elif err.best_model_file:
            print(
                f"interrupted during the test: training had finished and its best model is {err.best_model_file} "
                "(recbole_srma.load_data_and_model reloads it)",
                file=sys.stderr,
            )
        else:
            print(
                "interrupted before the first epoch finished: nothing to resume, start the run again", file=sys.stderr
            )
        return 130
    except KeyboardInterrupt:
        if args.nproc > 1:
            print(
                "interrupted; if an epoch had finished, checkpoint_dir (saved/) holds <Model>-<dataset>-...-last.pth: "
                "continue with the same command and --resume=<that file>",
                file=sys.stderr,
            )
        else:
            print("interrupted before training started: nothing was saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
