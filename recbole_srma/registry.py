"""Model and trainer lookup: plugin names first, then RecBole's own models.

RecBole's ``recbole.utils.get_model`` cannot be used for names it does not know: probing
``recbole.model.exlib_recommender`` imports lightgbm and xgboost and fails with ``ModuleNotFoundError`` instead of
"unknown model". The lookup here probes only RecBole's pure-PyTorch model packages and answers an unknown name with
the list of names it knows.
"""

import difflib
import importlib
import importlib.util

from recbole_srma import compat
from recbole_srma.errors import ConfigError

compat.patch_recbole()

# name -> "module:Class"; imported on first use so that looking up one model does not import every model.
MODELS = {
    "PluginSASRec": "recbole_srma.model.sasrec:PluginSASRec",
    "PluginBERT4Rec": "recbole_srma.model.bert4rec:PluginBERT4Rec",
    "CL4SRec": "recbole_srma.model.cl4srec:CL4SRec",
    "CoSeRec": "recbole_srma.model.coserec:CoSeRec",
    "DuoRec": "recbole_srma.model.duorec:DuoRec",
    "SRMA": "recbole_srma.model.srma:SRMA",
    "MCLRec": "recbole_srma.model.mclrec:MCLRec",
    "BT4SRec": "recbole_srma.model.bt4srec:BT4SRec",
}

# name -> "module:Class" for plugin models that need a training loop or stage of their own.
TRAINERS = {
    "MCLRec": "recbole_srma.model_trainers:MetaTrainer",
    "SRMA": "recbole_srma.model_trainers:SRMATrainer",
    "BT4SRec": "recbole_srma.model_trainers:BT4SRecTrainer",
}

_RECBOLE_PACKAGES = (
    "sequential_recommender",
    "general_recommender",
    "context_aware_recommender",
    "knowledge_aware_recommender",
)


def _load(path):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_model(name, model_class, trainer_class=None):
    """Make a model (and optionally its trainer) reachable by name from the script and the Python API."""
    MODELS[name] = model_class
    if trainer_class is not None:
        TRAINERS[name] = trainer_class


def get_model(name):
    """Return the model class for ``name``: a plugin model, else a RecBole model; ConfigError if neither."""
    if not isinstance(name, str):
        return name
    if name in MODELS:
        entry = MODELS[name]
        return _load(entry) if isinstance(entry, str) else entry
    for package in _RECBOLE_PACKAGES:
        module_path = f"recbole.model.{package}.{name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, name):
                return getattr(module, name)
    known = list(MODELS)
    recbole_classes = _recbole_class_names()
    close = difflib.get_close_matches(name, known + recbole_classes, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"unknown model '{name}'.{hint} Plugin models: {', '.join(known)}. Any RecBole model also works "
        f"(e.g. SASRec, GRU4Rec, BERT4Rec, Caser); names are case-sensitive."
    )


def _recbole_class_names():
    # Module file names are lower case; the class names users type are not. Map back through the module contents.
    names = []
    for package in _RECBOLE_PACKAGES:
        pkg = importlib.import_module(f"recbole.model.{package}")
        names += [n for n in dir(pkg) if n[:1].isupper()]
    return names


def get_trainer(model_type, model_name):
    """The trainer class for a model: the plugin's own, else RecBole's choice with plugin-safe checkpoints."""
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_srma.trainer import Trainer, with_safe_checkpoints

    if model_name in TRAINERS:
        entry = TRAINERS[model_name]
        return _load(entry) if isinstance(entry, str) else entry
    trainer_class = recbole_get_trainer(model_type, model_name)
    import recbole.trainer

    if trainer_class is recbole.trainer.Trainer:
        return Trainer
    return with_safe_checkpoints(trainer_class)
