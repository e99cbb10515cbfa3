"""The plugin's Config: RecBole's, plus plugin model lookup, plugin yaml layering and start-up checks.

Precedence, lowest to highest (RecBole's own order with the plugin's defaults slotted in above RecBole's):

1. RecBole's defaults (its overall.yaml, model yaml, dataset yamls and quick-start yamls),
2. the plugin's ``properties/plugin.yaml`` (keys only the plugin reads, every model), then, for the models that follow
   the protocol (:func:`follows_protocol`), ``properties/overall.yaml`` (the protocol), ``properties/backbone.yaml``
   (plugin models only), ``properties/model/<Model>.yaml``; then ``properties/dataset/<dataset>.yaml`` (every model)
   and ``properties/model/<Model>/<dataset>.yaml`` (a model's published settings for one dataset),
3. config files (``config_file_list`` / ``--config_files``), in order,
4. the ``config_dict`` argument,
5. ``--key=value`` on the command line.

Any other RecBole model (general, context-aware, knowledge-aware, DIN / DIEN, GRU4RecKG / KSR) gets exactly what
RecBole's own Config gives it, plus the keys of ``plugin.yaml``.
"""

import copy
import difflib
import os
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import (
    ModelType,
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_srma import PROPERTIES_DIR, hparams, registry
from recbole_srma.compat import plain_data
from recbole_srma.data.convert import LOAD_COL, sidecar_path
from recbole_srma.errors import ConfigError

# RecBole's sequential models that RecBole itself does not configure as next-item rankers (its quick-start config for
# them is not sequential.yaml): DIN and DIEN are click-through models (labels, AUC on 100 sampled negatives),
# GRU4RecKG and KSR need pre-trained knowledge-graph embeddings. They keep RecBole's defaults.
RECBOLE_SEQUENTIAL_NOT_NEXT_ITEM = frozenset({"DIN", "DIEN", "GRU4RecKG", "KSR"})


#: The settings that make two results comparable: split, ranking mode, metrics and cut-offs, model selection, loss
#: and negative sampling, history length. bench/run_models.py records them per run and bench/render_results.py
#: refuses a table whose rows differ in them.
PROTOCOL_KEYS = (
    "eval_args", "repeatable", "metrics", "topk", "valid_metric", "loss_type", "train_neg_sample_args",
    "MAX_ITEM_LIST_LENGTH",
)


#: Evaluation switches that are off in RecBole's protocol; a record names them only when they are on, so that every
#: result recorded before they existed still reads as the protocol it was produced under.
PROTOCOL_SWITCHES = ("exclude_history_items", "train_on_validation_item")


def protocol_settings(config):
    """``PROTOCOL_KEYS`` of a built Config as plain data (json / yaml), and the ``PROTOCOL_SWITCHES`` that are on."""
    settings = {key: plain_data(config[key]) for key in PROTOCOL_KEYS}
    settings.update({key: True for key in PROTOCOL_SWITCHES if config[key]})
    return settings


def is_recbole_model(model_class):
    """A model shipped with RecBole (as opposed to the plugin's, or one registered by a user)."""
    return model_class.__module__.startswith("recbole.")


def follows_protocol(model_name, model_class):
    """True for the models compared under the plugin's protocol (properties/overall.yaml): every model that is not
    RecBole's own, and RecBole's next-item sequential models. Every other RecBole model keeps RecBole's defaults."""
    if not is_recbole_model(model_class):
        return True
    return model_class.type == ModelType.SEQUENTIAL and model_name not in RECBOLE_SEQUENTIAL_NOT_NEXT_ITEM

# Keys the plugin or RecBole's launcher read that no yaml declares.
_EXTRA_KNOWN_KEYS = {
    "model",
    "dataset",
    "config_files",
    "nproc",
    "world_size",
    "ip",
    "port",
    "offset",
    "group_offset",
    "local_rank",
    "resume",
    # recbole_srma.hyper's options (its command line is also the trials' Config command line)
    "params_file",
    "output_file",
    "algo",
    "max_evals",
    "early_stop",
    "MODEL_TYPE",
}


class Config(RecBoleConfig):
    """RecBole's Config, aware of the plugin's models and yaml files.

    Adds ``raw_config_dict`` (the merged hyper-parameters before RecBole derives anything from them: what a
    checkpoint stores to rebuild the run) and ``unknown_keys`` (user keys no component declares; a key that is a
    near miss of a declared one is an error instead, since it is almost always a typo that would otherwise read as
    the default silently).
    """

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None):
        # Things worth a warning in the run's log (the logger does not exist yet while the Config is built).
        self.start_warnings = []
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise ConfigError(
                    "no model given: pass --model=NAME, put 'model: NAME' in a config file, or call "
                    "run_recbole_srma(model=NAME, ...)"
                )
        model_class = registry.get_model(model)
        model_name = model if isinstance(model, str) else model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise ConfigError(
                    "no dataset given: pass --dataset=NAME (amazon-sports, amazon-beauty, amazon-toys, yelp, or a "
                    "dataset you converted), or put 'dataset: NAME' in a config file"
                )
        return model_name, model_class, dataset

    def _load_config_files(self, file_list):
        """RecBole's, with an error naming the file for a missing file, invalid yaml or yaml that is not a mapping."""
        merged = {}
        for file in file_list or []:
            try:
                with open(file, "r", encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {file} (check the path given to --config_files)") from None
            except OSError as err:
                raise ConfigError(f"cannot read config file {file}: {err.strerror}") from None
            try:
                loaded = yaml.load(text, Loader=self.yaml_loader)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ConfigError(f"config file {file} is not valid yaml{where}: {problem}") from None
            if loaded is None:
                continue
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"config file {file} must hold 'key: value' lines, not a {type(loaded).__name__}"
                )
            merged.update(loaded)
        return merged

    def _load_cmd_line(self):
        try:
            return super()._load_cmd_line()
        except SyntaxError as err:  # RecBole's "duplicate commend arg '--key=b' with different value"
            arg = str(err).split("'")[1] if str(err).count("'") >= 2 else str(err)
            raise ConfigError(
                f"command line: {arg} gives a key a second, different value; give each key once"
            ) from None

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        internal = self.internal_config_dict
        recbole_choice = {key: internal.get(key) for key in ("loss_type", "train_neg_sample_args")}
        self.follows_protocol = follows_protocol(model, model_class)

        self.plugin_yaml_files = [PROPERTIES_DIR / "plugin.yaml"]
        if self.follows_protocol:
            self.plugin_yaml_files.append(PROPERTIES_DIR / "overall.yaml")
        if getattr(model_class, "uses_plugin_backbone", False):
            self.plugin_yaml_files.append(PROPERTIES_DIR / "backbone.yaml")
        if not is_recbole_model(model_class):
            self.plugin_yaml_files.append(PROPERTIES_DIR / "model" / f"{model}.yaml")
        dataset_yaml = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        if not dataset_yaml.is_file() and self._is_converted_dataset(dataset):
            internal["load_col"] = copy.deepcopy(LOAD_COL)  # a converted file's columns, for every model
        self.plugin_yaml_files.append(dataset_yaml)
        # a model's published settings for one dataset (e.g. MCLRec's per-dataset weights)
        self.plugin_yaml_files.append(PROPERTIES_DIR / "model" / str(model) / f"{dataset}.yaml")
        for path in self.plugin_yaml_files:
            if path.is_file():
                loaded = self._update_internal_config_dict(str(path))
                if path == dataset_yaml and loaded:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
        if self.follows_protocol and is_recbole_model(model_class):
            self._keep_recbole_choices(model_class, recbole_choice)

    def _keep_recbole_choices(self, model_class, recbole_choice):
        """Where the protocol's defaults do not fit a RecBole model, RecBole's choice stands (docs/design.md).

        - A model with a fixed input type (FPMC, TransRec, SINE: pairwise BPR) keeps its own loss and RecBole's
          negative sampling: it cannot train with CE.
        - A model trained with another loss than CE by the user's choice (``--loss_type=BPR``) gets RecBole's
          negative sampling back, unless the user set ``train_neg_sample_args`` too.
        """
        internal, external = self.internal_config_dict, self.external_config_dict

        def restore(key):
            if recbole_choice[key] is None:
                internal.pop(key, None)
            else:
                internal[key] = copy.deepcopy(recbole_choice[key])

        if hasattr(model_class, "input_type"):
            restore("loss_type")
            restore("train_neg_sample_args")
        elif external.get("loss_type", internal.get("loss_type")) != "CE" and "train_neg_sample_args" not in external:
            restore("train_neg_sample_args")

    def _is_converted_dataset(self, dataset):
        """True when ``<data_path>/<dataset>`` holds a file written by the plugin's converter (its sidecar)."""
        data_path = self.external_config_dict.get("data_path", self.internal_config_dict.get("data_path"))
        return bool(data_path) and sidecar_path(Path(str(data_path)).expanduser() / dataset, dataset).is_file()

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        if not is_recbole_model(self.model_class):
            # renamed option values: the old spellings of published configs and checkpoints keep working
            self.start_warnings += hparams.rename_deprecated_values(final)
        # Snapshot before _set_default_parameters joins data_path with the dataset name, fills in sampling
        # defaults, etc.: rebuilding a Config from this snapshot gives the same run.
        self.raw_config_dict = copy.deepcopy(final)
        return final

    def _set_default_parameters(self):
        hparams.check_run_settings(self.final_config_dict)
        try:
            super()._set_default_parameters()
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
            # RecBole's own checks (CE with negative sampling, value metrics with full ranking, ...)
            raise ConfigError(f"{self.model}: {err}") from None
        self._check_keys()
        check = getattr(self.model_class, "check_config", None)
        if check is not None:
            check(self.final_config_dict)

    def _check_keys(self):
        known = set(self.internal_config_dict) | _EXTRA_KNOWN_KEYS
        for args in (general_arguments, training_arguments, evaluation_arguments, dataset_arguments):
            known.update(args)
        known.update(getattr(self.model_class, "HPARAMS", {}))
        self.unknown_keys = []
        for key in self.external_config_dict:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            if close:
                raise ConfigError(
                    f"unknown hyper-parameter '{key}': did you mean '{close[0]}'? (model {self.model}; "
                    f"a misspelt key would silently leave '{close[0]}' at its default)"
                )
            self.unknown_keys.append(key)

    def _init_device(self):
        """RecBole's device set-up, made to work without CUDA.

        RecBole 1.2.1 ignores ``use_gpu`` (only ``gpu_id: ''`` selects the CPU) and its distributed branch
        hard-codes the nccl backend, a CUDA device per rank and one GPU id per process. Here: CUDA is used when it
        is available, ``use_gpu`` is true and ``gpu_id`` is not empty; otherwise the CPU, and distributed runs use
        the gloo backend on CPU processes.
        """
        import torch
        import torch.distributed as dist

        cfg = self.final_config_dict
        gpu_id = cfg.get("gpu_id", "")
        if isinstance(gpu_id, (tuple, list)):
            gpu_id = ",".join(map(str, gpu_id))
        gpu_id = "" if gpu_id is None else str(gpu_id)
        cfg["gpu_id"] = gpu_id
        if gpu_id:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
        wants_cuda = bool(gpu_id) and cfg.get("use_gpu", True) is not False
        use_cuda = wants_cuda and torch.cuda.is_available()
        asked = "gpu_id" in self.external_config_dict or self.external_config_dict.get("use_gpu")
        if wants_cuda and not use_cuda and asked:
            self.start_warnings.append(
                f"gpu_id={gpu_id} asks for a GPU, but CUDA is not available to this torch "
                f"({torch.__version__}): running on the CPU"
            )
        cfg["use_gpu"] = use_cuda  # what the run does, not what was asked: the logged config must not say True on a CPU

        if "local_rank" not in cfg:
            cfg["single_spec"] = True
            cfg["local_rank"] = 0
            cfg["device"] = torch.device("cuda") if use_cuda else torch.device("cpu")
            return

        rank = cfg["local_rank"] + cfg.get("offset", 0)
        if use_cuda and len(gpu_id.split(",")) < cfg["nproc"]:
            raise ConfigError(
                f"nproc={cfg['nproc']} processes need as many GPU ids in gpu_id (got '{gpu_id}'); "
                "list them, e.g. --gpu_id=0,1"
            )
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if use_cuda else "gloo",
                rank=rank,
                world_size=cfg["world_size"],
                init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
            )
        if use_cuda:
            cfg["device"] = torch.device("cuda", cfg["local_rank"])
            torch.cuda.set_device(cfg["local_rank"])
        else:
            cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False
