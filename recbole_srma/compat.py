"""Every workaround for RecBole 1.2.1 on today's numpy / torch / pandas, in one place.

Each trap below was reproduced with RecBole 1.2.1, torch 2.13 and numpy 1.26 / 2.x (see docs/design.md). The fixes
that are a patch live in this module; the ones that are an override of a RecBole method live in the subclass that
owns the method, and are listed here so this docstring stays the one index:

===============================================  ====================================================================
trap                                             where it is handled
===============================================  ====================================================================
numpy aliases (``np.float``, ``np.bool``,        :func:`patch_numpy`, at ``import recbole_srma``
``np.long`` removed in 1.24, ``np.float_``,
``np.bool8`` ... removed in 2.0)
``sine.py`` turns autograd anomaly mode on at    :func:`patch_recbole` (imports RecBole's models, then switches it
import (every step slower; docs/performance.md)  off), run when ``recbole_srma.registry`` is imported: every model
                                                 and trainer lookup goes through it
``torch.load`` defaults to ``weights_only=True``  :func:`checkpoint_config` / :func:`load_checkpoint`: plugin
since torch 2.6; RecBole pickles its Config       checkpoints hold tensors and a plain config dict, loaded with
                                                 ``weights_only=True``; used by ``trainer.py`` and ``quick_start.py``
pandas 3 copy-on-write makes RecBole's            ``pandas<3`` in setup.cfg and :func:`check_pandas` (clear error)
``fillna(inplace=True)`` a silent no-op
``recbole.quick_start`` imports ray, which needs  never imported: the plugin has its own ``quick_start``
``pkg_resources`` (gone in setuptools >= 82)
``recbole.utils.get_model`` of an unknown name    ``registry.get_model`` (never routes plugin names through RecBole)
imports ``exlib_recommender`` (lightgbm)
CE loss with RecBole's default                   ``train_neg_sample_args: ~`` in properties/overall.yaml
``train_neg_sample_args`` raises
SequentialDataset needs a time field             the converter writes a position timestamp; the Config loads it
                                                 for every converted dataset (``data.convert.LOAD_COL``)
``Config`` parses every ``--key=value`` in argv   tests clear sys.argv (tests/conftest.py)
checkpoint file name has 1-second resolution      ``trainer.py``: unique name per run
``gpu_id: ''`` is the only CPU switch;            ``config.Config._init_device``: follows ``use_gpu`` and
``use_gpu`` does nothing                          ``torch.cuda.is_available()``
distributed init hard-codes nccl + CUDA           ``config.Config._init_device``: gloo and CPU without CUDA
DDP built with ``device_ids=[rank]`` and          :func:`distributed_data_parallel` (patched into RecBole's trainer
SyncBatchNorm, both GPU-only                      module): no device ids and plain BatchNorm on CPU processes
``init_logger`` uses ``logging.basicConfig``:      :func:`init_logger` (used by ``quick_start``)
a second run in one process logs to the first
run's file (or to none)
``ensure_dir`` checks then creates: the        :func:`ensure_dir`, patched into the RecBole modules that use it
processes of a distributed run race on it
exhaustive ``HyperTuning`` gives hyperopt       :class:`_NumpyForHyperopt` (RecBole's ``hyper_tuning`` module only)
>= 0.2.7 a ``RandomState`` (no ``integers``)
``eval_batch_size`` 4096 is slower than 256 for   ``eval_batch_size: 256`` in properties/overall.yaml
full sort on a 2-core CPU (docs/performance.md)
``other_parameter()`` of some RecBole models      ``trainer.storable_other_parameter``: only tensors and plain data
holds modules (DIN) or numpy / scipy objects      go into plugin checkpoints (modules are in the state dict, the
(EASE): not loadable with ``weights_only=True``   matrices are rebuilt from the data)
graph models (LightGCN, NGCF, NCL, GCMC,           :func:`patch_scipy`: puts the removed private method back
SpectralCF, KGIN, MCCLK) call
``dok_matrix._update``, gone from scipy >= 1.12
``ray`` (RecBole's requirement, 150 MB, only for   not installed: setup.cfg declares RecBole's other requirements and
its ``run_hyper --tool Ray``)                    RecBole is installed with ``--no-deps`` (README, docs/design.md)
one-machine DDP always uses port 5678: two       ``quick_start.free_port`` (a free port per run unless ``port`` is
concurrent runs collide                          set; several machines must agree on one)
RecBole's ``fit`` does not say how many epochs   ``quick_start.training_summary`` (from the trainer's loss record)
ran, nor whether early stopping ended them
RecBole writes its log file and TensorBoard       ``quick_start.RunFiles``: removed again when a run fails or is
folder before a run can fail on bad input         interrupted before training starts
a top-k cut-off >= the number of items ranks      ``quick_start.check_enough_items``: refused at start
every item (RecBole computes it anyway)
torch's default CPU threads oversubscribe the     ``quick_start.set_threads`` (``threads`` key, a share of the
cores of a distributed CPU run                    cores per process, logged)
(not a bug in torch) oneDNN's GELU on CPU         :func:`gelu`, used by the encoder's feed-forward blocks
compiles and caches a kernel per input shape:
packed tokens grow the process without bound
===============================================  ====================================================================
"""

import enum
import functools
import os
import warnings

import numpy as np

_NUMPY_ALIASES = {
    # removed in numpy 1.24 (RecBole's evaluator and dataset use them)
    "float": float,
    "int": int,
    "bool": bool,
    "object": object,
    "str": str,
    "complex": complex,
    "long": np.int64,
    # removed in numpy 2.0 (RecBole's Config.compatibility_settings reads them)
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
    "unicode": np.str_,
}


def patch_numpy():
    """Restore the numpy aliases RecBole 1.2.1 uses, only where numpy no longer has them."""
    with warnings.catch_warnings():
        # numpy 1.2x warns on reading its deprecated aliases (np.bool8, ...); reading is only a presence test here.
        warnings.simplefilter("ignore")
        for name, value in _NUMPY_ALIASES.items():
            try:
                getattr(np, name)
            except AttributeError:
                setattr(np, name, value)


_recbole_patched = False


def patch_recbole():
    """Import RecBole's sequential models once, then undo the side effects of that import.

    ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)`` at import
    time, and importing any RecBole sequential model imports the package that imports ``sine``. Importing the
    package here first means the side effect has already happened when it is switched off, so no later import of a
    RecBole model can switch it back on.
    """
    global _recbole_patched
    if _recbole_patched:
        return
    check_recbole_installed()
    check_pandas()
    import recbole.model.sequential_recommender  # noqa: F401  (runs sine.py's import-time side effect)
    import torch

    torch.autograd.set_detect_anomaly(False)
    patch_scipy()
    _silence_known_recbole_warnings()
    import recbole.trainer.trainer as recbole_trainer

    recbole_trainer.DistributedDataParallel = distributed_data_parallel
    import recbole.trainer.hyper_tuning as hyper_tuning

    hyper_tuning.np = _NumpyForHyperopt()
    import importlib

    for name in ("recbole.utils", "recbole.utils.utils", "recbole.utils.logger", "recbole.trainer.trainer",
                 "recbole.data.utils", "recbole.data.dataset.dataset"):
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir
    _recbole_patched = True


def patch_scipy():
    """Give ``scipy.sparse.dok_matrix`` back the private ``_update`` (a bulk insert without per-key checks) that
    RecBole 1.2.1's graph models use to build their adjacency matrix; scipy 1.12 removed it."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


def ensure_dir(dir_path):
    """RecBole's ``ensure_dir`` without its race: it checks, then creates, so two processes of a distributed run
    starting together can both see the folder missing, and the second ``makedirs`` fails."""
    os.makedirs(dir_path, exist_ok=True)


class _NumpyForHyperopt:
    """numpy as RecBole's ``hyper_tuning`` module sees it: ``random.RandomState`` is a ``Generator``.

    RecBole's exhaustive search hands hyperopt ``np.random.RandomState(seed)``; hyperopt >= 0.2.7 samples with
    ``rng.integers``, which only ``numpy.random.Generator`` has.
    """

    class random:
        RandomState = staticmethod(np.random.default_rng)

    def __getattr__(self, name):
        return getattr(np, name)


def distributed_data_parallel(module, device_ids=None, **kwargs):
    """``DistributedDataParallel`` as RecBole's ``AbstractTrainer`` builds it, made to work on CPU processes.

    RecBole 1.2.1 passes ``device_ids=[local_rank]``, which torch refuses for a module on the CPU, and converts every
    BatchNorm to ``SyncBatchNorm``, which only runs on GPUs. On the CPU both are undone: no device ids, and each
    process normalises its own batch (the converted modules become ``BatchNorm1d`` again, with their state; the
    sequential models have no other kind of BatchNorm).
    """
    from torch.nn.parallel import DistributedDataParallel

    if next(module.parameters()).device.type == "cpu":
        device_ids = None
        _undo_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def _undo_sync_batchnorm(module):
    import torch

    for name, child in module.named_children():
        if isinstance(child, torch.nn.SyncBatchNorm):
            bn = torch.nn.BatchNorm1d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            _undo_sync_batchnorm(child)


def _silence_known_recbole_warnings():
    """Hide the FutureWarnings RecBole 1.2.1 triggers on every run and that are harmless on the supported stack.

    pandas 2 warns that RecBole's chained ``fillna(inplace=True)`` will stop working in pandas 3 (excluded by
    :func:`check_pandas`); numpy 2 warns about RecBole passing torch tensors to numpy functions; torch warns that
    ``torch.cuda.amp.GradScaler`` is deprecated (RecBole's trainer).
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset\.dataset")
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*", category=FutureWarning)
    # numpy 2: RecBole's SequentialDataset passes torch tensors to numpy functions; the result is still correct.
    warnings.filterwarnings("ignore", message=r"__array_wrap__ must accept context", category=DeprecationWarning)
    # torch: RecBole's graph models (LightGCN, NGCF, ...) build their adjacency with the deprecated constructor.
    warnings.filterwarnings("ignore", message=r"torch\.sparse\.SparseTensor\(indices, values", category=UserWarning)


_logger_handlers = []


def init_logger(config):
    """RecBole's ``init_logger``, so that every run in a process logs to its own file.

    RecBole attaches its console and file handlers with ``logging.basicConfig``, which does nothing when the root
    logger already has handlers: in a process that runs several models (the Python API, HyperTuning, a notebook,
    pytest), every run after the first wrote into the first run's log file or into none. Here the handlers of the
    previous run are removed, any other handlers (a notebook's, pytest's) are set aside while RecBole attaches its
    own, then put back.
    """
    import logging

    from recbole.utils import init_logger as recbole_init_logger

    root = logging.getLogger()
    for handler in _logger_handlers:
        root.removeHandler(handler)
        handler.close()
    others = root.handlers[:]
    for handler in others:
        root.removeHandler(handler)
    try:
        recbole_init_logger(config)
        _logger_handlers[:] = root.handlers[:]
    finally:
        for handler in others:
            root.addHandler(handler)


RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"


def check_recbole_installed():
    """Raise ImportError with the install command when RecBole is missing: setup.cfg cannot require it (pip would
    install its ray requirement too), so ``pip install -e .`` alone does not bring it (README, Install)."""
    import importlib.util

    if importlib.util.find_spec("recbole") is None:
        raise ImportError(
            f"recbole-srma needs RecBole 1.2.1, which is not installed. Fix: {RECBOLE_INSTALL} "
            '(or pip install -e ".[ray]" for RecBole with all its requirements, ray included)'
        )


def check_pandas(version=None):
    """Refuse pandas >= 3, where RecBole's ``fillna(inplace=True)`` silently leaves missing values as NaN."""
    if version is None:
        import pandas

        version = pandas.__version__
    major = int(str(version).split(".")[0])
    if major >= 3:
        raise ImportError(
            f"recbole-srma needs pandas<3 (found pandas {version}): under pandas 3 copy-on-write RecBole 1.2.1's "
            "fillna(inplace=True) does nothing and missing values silently stay NaN. "
            'Fix: pip install "pandas<3".'
        )


# --- checkpoints ---------------------------------------------------------------------------------------------------

# Keys RecBole derives inside Config; they are recomputed when a config is rebuilt, and some are not plain data.
_DERIVED_CONFIG_KEYS = frozenset(
    {
        "MODEL_TYPE",
        "MODEL_INPUT_TYPE",
        "eval_type",
        "device",
        "single_spec",
        "local_rank",
        "valid_neg_sample_args",
        "test_neg_sample_args",
        "valid_metric_bigger",
        # distributed-launch keys: a reloaded checkpoint must not try to join a process group
        "world_size",
        "nproc",
        "offset",
        "ip",
        "port",
    }
)


_PATH_KEYS = ("data_path", "checkpoint_dir", "raw_data_dir", "raw_cache_dir", "status_file")


def plain_data(value):
    """Convert a config value to the types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def checkpoint_config(config):
    """The hyper-parameters of ``config`` as a plain dict that rebuilds the same Config.

    Uses the merged parameters from before RecBole's derivations (``Config.raw_config_dict`` of the plugin's
    Config), so feeding the dict back as ``config_dict`` reproduces the run's settings exactly.
    """
    raw = getattr(config, "raw_config_dict", None)
    if raw is None:
        raw = config.final_config_dict
    plain = {k: plain_data(v) for k, v in raw.items() if k not in _DERIVED_CONFIG_KEYS}
    plain["model"], plain["dataset"] = config["model"], config["dataset"]
    for key in _PATH_KEYS:
        # absolute, so the checkpoint can be reloaded from another working directory
        if isinstance(plain.get(key), str):
            plain[key] = os.path.abspath(plain[key])
    return plain


def load_checkpoint(path, map_location="cpu"):
    """Load a plugin checkpoint with ``weights_only=True`` (never unpickles arbitrary objects).

    Raises :class:`~recbole_srma.errors.CheckpointError` with the reason when the file is missing, is not a
    checkpoint at all, is a pickle that needs arbitrary code (e.g. written by RecBole's own Trainer), or lacks the
    keys a plugin checkpoint has.
    """
    import pickle

    import torch

    from recbole_srma.errors import CheckpointError

    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} cannot be loaded safely with torch.load(weights_only=True): it pickles Python objects "
            "(a checkpoint written by RecBole's own Trainer, or not a checkpoint). Only checkpoints written by "
            f"recbole-srma are accepted. Detail: {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # torch raises many types on garbage (RuntimeError, EOFError, IndexError, ...)
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, corrupt, or another kind of file): "
            f"{type(err).__name__}: {err}"
        ) from None
    required = ("format", "config", "state_dict")
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in required):
        raise CheckpointError(f"{path} is not a recbole-srma checkpoint (expected the keys {list(required)})")
    return checkpoint


def gelu(x):
    """Exact GELU; on CPU computed by ATen's own kernel, never oneDNN's (:func:`native_gelu`)."""
    if x.device.type != "cpu":
        import torch.nn.functional as F

        return F.gelu(x)
    return native_gelu().apply(x)


@functools.lru_cache(maxsize=None)
def native_gelu():
    """The autograd function behind :func:`gelu` on CPU (built on first use: importing the package needs no torch).

    On CPU, ``F.gelu`` hands float32 inputs to a oneDNN primitive that is JIT-compiled and cached per tensor shape.
    The fast path's token count changes with every batch, so every batch compiled new primitives and the process
    kept growing (docs/performance.md, "ATen's GELU"). ATen's kernel computes the same function (``erf`` form) at the
    same speed, with no cache.
    """
    import torch

    def without_onednn(fn, *args):
        # Only the enabled switch: torch.backends.mkldnn.flags() also resets TF32 settings and warns on every call.
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return fn(*args)
        finally:
            torch.backends.mkldnn.enabled = previous

    class NativeGELU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return without_onednn(torch.ops.aten.gelu, x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return without_onednn(torch.ops.aten.gelu_backward, grad, x)

    return NativeGELU

patch_numpy()
