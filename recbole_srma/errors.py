"""Exceptions raised by recbole-srma.

Every error the plugin raises on bad input is one of these, so callers can catch the plugin's errors
without catching unrelated bugs, and each message names the problem and the fix.
"""


class RecBoleSRMAError(Exception):
    """Base class of every error the plugin raises on purpose."""


class ConfigError(RecBoleSRMAError, ValueError):
    """A hyper-parameter is missing, misspelt, or out of range; or the model name is unknown."""


class DatasetError(RecBoleSRMAError, ValueError):
    """A dataset is unknown, its raw file is missing, corrupt or malformed."""


class CheckpointError(RecBoleSRMAError, ValueError):
    """A checkpoint file is not a recbole-srma checkpoint or does not match the model."""


class RunInterrupted(KeyboardInterrupt):
    """A run was interrupted (Ctrl-C) once training had started. During training ``resume_file`` is the ``-last.pth``
    checkpoint to continue from (None when no epoch had finished); during the final test ``best_model_file`` is the
    trained model, complete."""

    def __init__(self, resume_file=None, best_model_file=None):
        super().__init__(resume_file or best_model_file)
        self.resume_file = resume_file
        self.best_model_file = best_model_file
