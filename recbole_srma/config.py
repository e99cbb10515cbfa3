"""The plugin's Config: RecBole's, plus plugin model lookup, plugin yaml layering and start-up checks.

Precedence, lowest to highest (RecBole's own order with the plugin's defaults slotted in above RecBole's):

1. RecBole's defaults (its overall.yaml, model yaml, dataset yamls and quick-start yamls),
2. the plugin's ``properties/overall.yaml`` (the evaluation protocol shared by every model, RecBole's included),
   then ``properties/backbone.yaml`` (plugin models only), ``properties/model/<Model>.yaml``,
   ``properties/dataset/<dataset>.yaml`` and ``properties/model/<Model>/<dataset>.yaml`` (a model's published
   settings for one dataset, where the paper gives them),
3. config files (``config_file_list`` / ``--config_files``), in order,
4. the ``config_dict`` argument,
5. ``--key=value`` on the command line.
"""

import copy
import difflib
import os
from pathlib import Path

from recbole.config import Config as RecBoleConfig
from recbole.utils import (
    dataset_arguments,
    evaluation_arguments,
    general_arguments,
    training_arguments,
)

from recbole_srma import registry
from recbole_srma.errors import ConfigError

PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"

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
    "raw_data_dir",
    "raw_cache_dir",
    "use_gpu",
    "MODEL_TYPE",
}


class Config(RecBoleConfig):
    """RecBole's Config, aware of the plugin's models and yaml files.

    Adds ``raw_config_dict`` (the merged hyper-parameters before RecBole derives anything from them: what a
    checkpoint stores to rebuild the run) and ``unknown_keys`` (user keys no component declares; a key that is a
    near miss of a declared one is an error instead, since it is almost always a typo that would otherwise read as
    the default silently).
    """

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

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.plugin_yaml_files = [PROPERTIES_DIR / "overall.yaml"]
        if getattr(model_class, "uses_plugin_backbone", False):
            self.plugin_yaml_files.append(PROPERTIES_DIR / "backbone.yaml")
        self.plugin_yaml_files.append(PROPERTIES_DIR / "model" / f"{model}.yaml")
        dataset_yaml = PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"
        self.plugin_yaml_files.append(dataset_yaml)
        # a model's published settings for one dataset (e.g. MCLRec's per-dataset weights)
        self.plugin_yaml_files.append(PROPERTIES_DIR / "model" / str(model) / f"{dataset}.yaml")
        for path in self.plugin_yaml_files:
            if path.is_file():
                loaded = self._update_internal_config_dict(str(path))
                if path == dataset_yaml and loaded:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        # Snapshot before _set_default_parameters joins data_path with the dataset name, fills in sampling
        # defaults, etc.: rebuilding a Config from this snapshot gives the same run.
        self.raw_config_dict = copy.deepcopy(final)
        return final

    def _set_default_parameters(self):
        super()._set_default_parameters()
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
        use_cuda = bool(gpu_id) and cfg.get("use_gpu", True) is not False and torch.cuda.is_available()

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
