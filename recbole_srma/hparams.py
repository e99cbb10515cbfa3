"""Declarative hyper-parameter checks for plugin models.

A plugin model lists its hyper-parameters as ``HPARAMS = {name: check}``; the plugin's Config runs the checks when
it is built, before any data is loaded, so a missing, misspelt or out-of-range value fails at start with the key's
name instead of later as ``None`` deep inside a forward pass. A check is a callable ``value -> None`` that raises
``ValueError`` with the allowed range.
"""

import math

from recbole_srma.errors import ConfigError


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    return value


def rate(value):
    """a number in [0, 1]"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be in [0, 1], got {value!r}")


def decay(value):
    """a number in [0, 1) (a moving-average decay: 1 would never update)"""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"must be a number in [0, 1), got {value!r}")


def temperature(value):
    """a number > 0 and finite (a temperature)"""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"must be > 0 and finite (a temperature), got {value!r}")


def positive(value):
    if not _number(value) > 0:
        raise ValueError(f"must be > 0, got {value!r}")


def non_negative(value):
    if not _number(value) >= 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an integer >= 1, got {value!r}")


def non_negative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")


def string(value):
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")


def one_of(*choices, what=None):
    """One of ``choices``; ``what`` names the kind of value in the message (e.g. ``similarity``)."""
    kind = f" (a {what})" if what else ""

    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}{kind}, got {value!r}")

    check.__doc__ = f"one of {list(choices)}{kind}"
    return check


def subset_of(*choices):
    """A non-empty list of distinct items from ``choices``."""

    def check(value):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"must be a non-empty list drawn from {list(choices)}, got {value!r}")
        unknown = [v for v in value if v not in choices]
        if unknown:
            raise ValueError(f"has unknown entries {unknown}; allowed: {list(choices)}")
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat an entry, got {list(value)}")

    check.__doc__ = f"a non-empty list drawn from {list(choices)}"
    return check


def list_of(check):
    """A list (possibly empty) whose every item passes ``check``."""

    def wrapped(value):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a list, got {value!r}")
        for item in value:
            try:
                check(item)
            except ValueError as err:
                raise ValueError(f"has an entry that {err}") from None

    return wrapped


def optional(check):
    """Allow ``None`` (``~`` in yaml) as well as whatever ``check`` allows."""

    def wrapped(value):
        if value is not None:
            check(value)

    wrapped.optional = True
    return wrapped


def check_hyper_parameters(model_name, spec, config):
    """Raise :class:`ConfigError` for the first missing or invalid hyper-parameter of ``model_name``.

    ``config`` is a mapping (the final config dict). A key counts as missing when it is absent or ``None`` and its
    check is not :func:`optional`.
    """
    for key, check in spec.items():
        value = config.get(key)
        if value is None and not getattr(check, "optional", False):
            allowed = f" ({check.__doc__.strip()})" if check.__doc__ else ""
            raise ConfigError(
                f"{model_name} needs the hyper-parameter '{key}'{allowed}, which is not set. Its default lives in "
                f"properties/model/{model_name}.yaml (or properties/overall.yaml); set it in a config file or with "
                f"--{key}=VALUE. If you set it, check the spelling of the key."
            )
        try:
            check(value)
        except ValueError as err:
            raise ConfigError(f"{model_name}: hyper-parameter '{key}' {err}") from None


def _topk(value):
    values = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    list_of(positive_int)(values)
    if isinstance(values, (list, tuple)) and not values:
        raise ValueError("must be an integer >= 1 or a non-empty list of them, got []")


#: RecBole's learners (``AbstractTrainer._build_optimizer``); RecBole silently falls back to Adam for any other name.
LEARNERS = ("adam", "sgd", "adagrad", "rmsprop", "sparse_adam")


def _learner(value):
    if not isinstance(value, str) or value.lower() not in LEARNERS:
        raise ValueError(f"must be one of {list(LEARNERS)}, got {value!r} (RecBole would silently use Adam instead)")


#: Checks of the training and evaluation settings every model reads, RecBole's included: a bad value would otherwise
#: end in a traceback deep inside RecBole, or be accepted (``epochs: -1`` trained nothing and reported a result).
RUN_HPARAMS = {
    "epochs": positive_int,
    "train_batch_size": positive_int,
    "eval_batch_size": positive_int,
    "learning_rate": positive,
    "weight_decay": optional(non_negative),
    "learner": _learner,
    "adam_beta2": optional(decay),
    "stopping_step": positive_int,
    "eval_step": non_negative_int,
    "topk": _topk,
    "MAX_ITEM_LIST_LENGTH": optional(positive_int),
    "seed": optional(non_negative_int),
    "threads": optional(positive_int),
    "status_file": optional(string),
    "exclude_history_items": optional(boolean),
    "train_on_validation_item": optional(boolean),
}


def check_run_settings(config):
    """Raise :class:`ConfigError` for the first invalid training or evaluation setting (``RUN_HPARAMS``), and for a
    ``valid_metric`` that the evaluation will not compute (RecBole only notices after the first epoch)."""
    for key, check in RUN_HPARAMS.items():
        value = config.get(key)
        if value is None and getattr(check, "optional", False):
            continue
        try:
            check(value)
        except ValueError as err:
            raise ConfigError(f"'{key}' {err}; set it with --{key}=VALUE or in a config file") from None
    _check_valid_metric(config)


def _check_valid_metric(config):
    from recbole.evaluator import metric_types
    from recbole.utils import EvaluatorType

    metrics = config.get("metrics")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    topk = config["topk"] if isinstance(config["topk"], (list, tuple)) else [config["topk"]]
    unknown = [m for m in metrics if str(m).lower() not in metric_types]
    if unknown:
        raise ConfigError(
            f"unknown metric(s) {unknown} in 'metrics'; RecBole's metrics are {sorted(metric_types)}"
        )
    computed = []
    for metric in metrics:
        if metric_types[metric.lower()] == EvaluatorType.RANKING:
            computed += [f"{metric.lower()}@{k}" for k in topk]
        else:
            computed.append(metric.lower())
    valid_metric = str(config.get("valid_metric", ""))
    if valid_metric.lower() not in computed:
        raise ConfigError(
            f"valid_metric '{valid_metric}' is not among the metrics the evaluation computes ({', '.join(computed)}); "
            "choose one of them, or add its metric to 'metrics' / its cut-off to 'topk'"
        )


#: Option values renamed to say what they do. The old spellings (published configs, older checkpoints) still work:
#: the Config reads them as the new ones and says so in one line at the start of the run.
RENAMED_VALUES = {
    "complement_mode": {"official": "contrast_original"},  # SRMA
    "meta_schedule": {"official": "encoder_augmenter_encoder"},  # MCLRec
    "contrast": {  # DuoRec
        "us_x": "dropout_view_vs_same_target",
        "un": "dropout_pair",
        "su": "same_target_pair",
        "us": "both_pairs",
    },
}


def rename_deprecated_values(config_dict):
    """Replace old spellings of renamed option values in ``config_dict``; return one message per replacement."""
    messages = []
    for key, renamed in RENAMED_VALUES.items():
        value = config_dict.get(key)
        if isinstance(value, str) and value in renamed:
            config_dict[key] = renamed[value]
            messages.append(
                f"{key}: '{value}' is a deprecated name, read as '{renamed[value]}' (the same setting); "
                f"write {key}: {renamed[value]}"
            )
    return messages
