"""Python API mirroring RecBole's quick start: ``run_recbole_srma``, ``run``, ``objective_function``,
``load_data_and_model``.

RecBole's own ``recbole.quick_start`` is never imported: it imports ray, which needs ``pkg_resources`` (gone from
setuptools >= 82), and its ``load_data_and_model`` unpickles whole Config objects.
"""

import gc
import logging
import os
import shutil
import socket
import sys
from collections import OrderedDict
from logging import getLogger

import numpy as np
import torch
import torch.distributed as dist
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import cat_interactions
from recbole.utils import EvaluatorType, init_seed, set_color

from recbole_srma import registry
from recbole_srma.compat import init_logger, load_checkpoint
from recbole_srma.config import Config
from recbole_srma.data import prepare_dataset
from recbole_srma.errors import CheckpointError, ConfigError, RunInterrupted
from recbole_srma.trainer import load_model_state


def format_results(title_to_result):
    """A small table of metric name -> value for each of several results (e.g. valid and test)."""
    results = {t: r for t, r in title_to_result.items() if r}
    if not results:
        return ""
    metrics = list(next(iter(results.values())).keys())
    width = max(len(m) for m in metrics)
    lines = [" " * width + "".join(f"{t:>10}" for t in results)]
    for metric in metrics:
        lines.append(f"{metric:<{width}}" + "".join(f"{r.get(metric, float('nan')):>10.4f}" for r in results.values()))
    return "\n".join(lines)


def training_summary(trainer, config):
    """Epochs trained, best epoch and whether early stopping ended the run (RecBole's fit does not return them).

    Epochs are counted from 0 over the whole run: a run resumed from a checkpoint trained the epochs before it too
    (``train_loss_dict`` holds only the epochs of this process).
    """
    epochs = sorted(trainer.train_loss_dict)
    last = epochs[-1] if epochs else trainer.start_epoch - 1
    return {
        "epochs_trained": last + 1,
        "last_epoch": last,
        "best_epoch": last - trainer.cur_step * trainer.eval_step,
        "stopped_early": last + 1 < config["epochs"],
    }


def _floats(result):
    """RecBole's metric dicts hold numpy scalars; plain floats print and serialise cleanly."""
    return None if result is None else OrderedDict((k, float(v)) for k, v in result.items())


def split_loaders(config, dataset):
    """RecBole's train / valid / test loaders, with the training samples the config asks for.

    ``exclude_history_items``: the evaluation datasets get each user's history (:func:`attach_histories`).
    ``train_objective: every_position``: one sample per user, the last of RecBole's prefix samples, whose history is
    the user's whole training sequence (as far as ``MAX_ITEM_LIST_LENGTH`` reaches) and whose target is its last
    training item. ``train_on_validation_item: True``: the validation samples are training samples too (each
    user's validation item becomes a training target, as when a final model is refitted on everything but the test
    item); validation scores are then optimistic and pick the epoch on data the model has seen (the log says so).
    Validation and test loaders are RecBole's, untouched; so are the dataset's stored interactions (the training
    loader gets a copy)."""
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if config["exclude_history_items"]:
        attach_histories(config, dataset, valid_data, test_data)
    every_position = config["train_objective"] == "every_position"
    with_validation = bool(config["train_on_validation_item"])
    if not every_position and not with_validation:
        return train_data, valid_data, test_data
    train = train_data._dataset
    feat = train.inter_feat
    if with_validation:
        feat = cat_interactions([feat, valid_data._dataset.inter_feat])
        getLogger().warning(
            "train_on_validation_item: every validation item is also a training target; validation scores are "
            "optimistic and early stopping selects on items the model was trained on"
        )
    if every_position:
        users = feat[train.uid_field].numpy()
        lengths = feat[config["ITEM_LIST_LENGTH_FIELD"]].numpy()
        # RecBole writes a user's prefixes in time order (the validation sample after them): the longest, latest
        # one is the user's last row in this order
        order = np.lexsort((np.arange(len(users)), lengths, users))
        last = order[np.r_[users[order][1:] != users[order][:-1], True]]
        getLogger().info(
            f"train_objective every_position: {len(last)} training sequences (from {len(users)} prefixes)"
        )
        feat = feat[torch.from_numpy(np.sort(last))]
    loader = type(train_data)(config, train.copy(feat), train_data._sampler, shuffle=train_data.shuffle)
    return loader, valid_data, test_data


def attach_histories(config, dataset, valid_data, test_data):
    """For ``exclude_history_items``: each user's items before its validation and before its test item (the whole
    history, not only the ``MAX_ITEM_LIST_LENGTH`` the model reads), as ``history_items = (indptr, items)`` over user
    ids on the two evaluation datasets (the trainer masks them). Needs the leave-one-out split."""
    split = (config["eval_args"] or {}).get("split")
    if split != {"LS": "valid_and_test"}:
        raise ConfigError(
            f"exclude_history_items needs the leave-one-out split (eval_args split {{'LS': 'valid_and_test'}}, the "
            f"protocol's), not {split}; set exclude_history_items: False"
        )
    feat = dataset.inter_feat  # after RecBole's build: one row per target item, in time order per user
    users = feat[dataset.uid_field].numpy()
    order = np.argsort(users, kind="stable")
    users, targets = users[order], feat[dataset.iid_field].numpy()[order]
    first_items = feat[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]].numpy()[order, 0]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    # a user's items: the history's first item of its earliest row, then every target
    items = np.insert(targets, starts, first_items[starts])
    per_user = np.bincount(users, minlength=dataset.user_num) + np.bincount(users[starts], minlength=dataset.user_num)
    indptr = np.r_[0, np.cumsum(per_user)]
    rank = np.arange(len(items)) - np.repeat(indptr[:-1], per_user)  # each item's place in its user's sequence
    for loader, held_out in ((valid_data, 2), (test_data, 1)):
        keep = np.clip(per_user - held_out, 0, None)  # the items before the evaluated one
        history_ptr = np.r_[0, np.cumsum(keep)]
        loader._dataset.history_items = (
            torch.from_numpy(history_ptr.astype(np.int64)),
            torch.from_numpy(items[rank < np.repeat(keep, per_user)].astype(np.int64)),
        )


def _build(config, logger, prepared=False):
    """Dataset, split loaders and model for a built Config (shared by training and reloading)."""
    if not prepared:
        prepare_dataset(config)
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = split_loaders(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    return dataset, train_data, valid_data, test_data, model


def check_enough_items(config, dataset):
    """Full ranking with a cut-off at or above the number of items ranks every item: refuse it at start."""
    if config["eval_type"] != EvaluatorType.RANKING or "full" not in config["eval_args"]["mode"].values():
        return
    n_items = dataset.item_num - 1  # RecBole's item 0 is padding, never ranked
    largest = max(config["topk"])
    if n_items <= largest:
        raise ConfigError(
            f"dataset {config['dataset']} has {n_items} items, not more than the largest top-k cut-off ({largest}): "
            f"every top-{largest} list would hold all items. Lower topk (e.g. --topk=[1,5]) or use a larger dataset"
        )


def set_threads(config, logger):
    """torch's CPU threads for this process: ``threads`` if set, else ``$OMP_NUM_THREADS`` (torch reads it itself),
    else a share of the cores in a distributed CPU run, else torch's default (every core). Logged, since a run
    sharing the cores with another process slows down many times with torch's default (docs/operations.md)."""
    if config["device"].type != "cpu":
        return
    if config["threads"]:
        torch.set_num_threads(config["threads"])
        source = "threads"
    elif os.environ.get("OMP_NUM_THREADS"):
        source = "OMP_NUM_THREADS"
    elif not config["single_spec"]:
        # CPU processes share the cores: torch's default (every core per process) oversubscribes them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // config["nproc"]))
        source = f"{os.cpu_count()} cores / {config['nproc']} processes"
    else:
        source = "torch's default; --threads=N sets it"
    logger.info(f"CPU threads: {torch.get_num_threads()} ({source})")


class RunFiles:
    """The files a run writes (log file, TensorBoard folder, checkpoint folder), removed again if the run fails or
    is interrupted before training starts: a run that never started leaves nothing behind.

    Only what this run created is removed: its own log file and TensorBoard folder, and the folders holding them
    (``log/<Model>``, ``log``, ``log_tensorboard``, ``checkpoint_dir``) if they did not exist before and are empty.
    Converted datasets and downloaded raw files are kept: they are verified data that any later run reuses.
    """

    def __init__(self, config):
        folders = [os.path.join("log", str(config["model"])), "log", "log_tensorboard", config["checkpoint_dir"]]
        self.new_folders = [f for f in folders if not os.path.isdir(f)]
        self.files, self.writers = [], []

    def add_log_file(self):
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                self.files.append(handler.baseFilename)

    def remove(self):
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if isinstance(handler, logging.FileHandler) and handler.baseFilename in self.files:
                root.removeHandler(handler)
                handler.close()
        for path in self.files:
            if os.path.isfile(path):
                os.remove(path)
        for writer in self.writers:  # TensorBoard writers: closed first, or their thread writes the folder again
            writer.close()
            shutil.rmtree(writer.log_dir, ignore_errors=True)
        for folder in self.new_folders:  # deepest first: log/<Model> before log
            try:
                os.rmdir(folder)
            except OSError:
                pass


def pretraining_note(config):
    """What a model trains before its main training (and its budget), to be said up front; None if nothing."""
    note = getattr(config.model_class, "pretraining_note", None)
    return note(config) if note is not None else None


def run_recbole_srma(
    model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None, resume=None
):
    """Train and evaluate one model, as ``recbole.quick_start.run_recbole`` does.

    Args:
        model, dataset: names (or given in a config file / on the command line).
        config_file_list: yaml files, later ones override earlier ones.
        config_dict: parameters overriding the files.
        saved: write checkpoints and reload the best one for the test.
        queue: used by :func:`run` for multi-process runs.
        resume: a checkpoint to continue training from.

    Returns:
        dict with ``best_valid_score``, ``valid_score_bigger``, ``best_valid_result``, ``test_result``,
        ``checkpoint`` (path of the best model, or None when ``saved`` is false), and ``epochs_trained``,
        ``last_epoch``, ``best_epoch``, ``stopped_early`` (see :func:`training_summary`).
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    run_files = RunFiles(config)
    init_logger(config)
    run_files.add_log_file()
    logger = getLogger()
    try:
        for warning in config.start_warnings:
            logger.warning(warning)
        set_threads(config, logger)
        note = pretraining_note(config)
        if note:
            logger.info(set_color(note, "yellow"))
        prepare_dataset(config)  # before the long config dump, so a data problem is the last thing printed
        logger.info(sys.argv)
        logger.info(config)
        for key in getattr(config, "unknown_keys", []):
            logger.warning(f"config key '{key}' is not read by {config['model']} or RecBole's pipeline")

        dataset, train_data, valid_data, test_data, model = _build(config, logger, prepared=True)
        check_enough_items(config, dataset)
        logger.info(model)

        trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        run_files.writers.append(trainer.tensorboard)
        if resume:
            trainer.resume_checkpoint(resume)
    except BaseException:
        run_files.remove()
        raise
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=config["show_progress"]
        )
    except KeyboardInterrupt:
        last = trainer.last_checkpoint_file if saved else None
        raise RunInterrupted(last if last and os.path.isfile(last) else None) from None
    try:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    except KeyboardInterrupt:  # training is over: its best model is saved, only the test is missing
        raise RunInterrupted(best_model_file=trainer.saved_model_file if saved else None) from None
    test_result = _floats(test_result)
    best_valid_result = _floats(best_valid_result)
    summary = training_summary(trainer, config)
    trainer.log_test_result(test_result, summary["best_epoch"])  # every trainer has the plugin's checkpoint mixin

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    logger.info(
        f"{config['model']} on {config['dataset']}:\n"
        + format_results({"valid": best_valid_result, "test": test_result})
    )

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
        **summary,
    }
    if not config["single_spec"]:
        # Every rank reaches the end before any tears down, and the DDP reducer (which holds the gloo group) is freed
        # now rather than during interpreter shutdown, where gloo's threads can abort the process (SIGABRT,
        # "terminate called without an active exception") after the run has succeeded.
        dist.barrier()
        trainer.tensorboard.close()
        del trainer, model
        gc.collect()
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def _run_rank(rank, kwargs):
    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    run_recbole_srma(**kwargs)
    # The run is done and its result handed over (a SimpleQueue writes synchronously): leave without interpreter
    # finalisation, where native threads of the process group can still crash a finished rank. An exception above
    # takes the normal path, so the parent reports its traceback.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port=None,
    group_offset=0,
    resume=None,
):
    """One process, or ``nproc`` processes with RecBole's distributed settings (gloo on CPU).

    ``port``: the main process's port; by default a free one on a single machine (so that two runs started together
    do not collide on RecBole's fixed 5678), and RecBole's 5678 for a run over several machines, which must agree.
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_srma(
            model=model,
            dataset=dataset,
            config_file_list=config_file_list,
            config_dict=config_dict,
            saved=saved,
            resume=resume,
        )
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    if port is None:
        port = free_port(ip) if world_size == nproc else "5678"
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    kwargs = {
        "model": model,
        "dataset": dataset,
        "config_file_list": config_file_list,
        "config_dict": config_dict,
        "saved": saved,
        "queue": queue,
        "resume": resume,
    }
    mp.start_processes(_run_rank, args=(kwargs,), nprocs=nproc, join=True, start_method="spawn")
    return None if queue.empty() else queue.get()


def free_port(ip="localhost"):
    """A TCP port nobody listens on now (the system picks it), for the main process of a one-machine run."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return str(sock.getsockname()[1])


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The objective for RecBole's ``HyperTuning`` (hyperopt), without RecBole's ray dependency."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, train_data, valid_data, test_data, model = _build(config, logger)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": _floats(best_valid_result),
        "test_result": _floats(test_result),
    }


def load_data_and_model(model_file, overrides=None):
    """Rebuild config, model and data from a plugin checkpoint (loaded with ``weights_only=True``).

    Returns ``(config, model, dataset, train_data, valid_data, test_data)`` like RecBole's function of the same
    name; the model holds the checkpoint's weights and is in eval mode. ``overrides`` replace settings of the stored
    configuration (e.g. ``{"exclude_history_items": True}`` to evaluate under another protocol).
    """
    checkpoint = load_checkpoint(model_file)
    saved = checkpoint["config"]
    try:
        config = Config(
            model=checkpoint["model"], dataset=checkpoint["dataset"], config_dict={**saved, **(overrides or {})}
        )
    except Exception as err:
        raise CheckpointError(f"cannot rebuild the configuration stored in {model_file}: {err}") from err
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    dataset, train_data, valid_data, test_data, model = _build(config, logger)
    load_model_state(model, {k: v.to(config["device"]) for k, v in checkpoint["state_dict"].items()}, model_file)
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    return config, model, dataset, train_data, valid_data, test_data
