"""recbole-srma: contrastive and self-supervised sequential recommenders as a RecBole 1.2.1 plugin.

Importing the package applies the RecBole workarounds of :mod:`recbole_srma.compat` first, so every entry point
(script, Python API, tests) runs on the same patched stack.
"""

from pathlib import Path

from recbole_srma import compat as _compat  # noqa: F401  (must run before anything touches RecBole)

__version__ = "0.1.0"

#: The yaml defaults: protocol, shared encoder, models, datasets, ablations (read by the Config and the data layer).
PROPERTIES_DIR = Path(__file__).resolve().parent.parent / "properties"

__all__ = ["__version__", "run_recbole_srma", "load_data_and_model", "objective_function"]


def __getattr__(name):
    # Lazy, so `import recbole_srma` stays cheap for the data CLI and the tests of pure-tensor pieces.
    if name in ("run_recbole_srma", "load_data_and_model", "objective_function"):
        from recbole_srma import quick_start

        return getattr(quick_start, name)
    raise AttributeError(f"module 'recbole_srma' has no attribute {name!r}")
