"""Atomic file writes (checkpoints, downloads, dataset conversion) and the run status file; standard library only,
so a supervisor can read a status without importing torch."""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path, suffix=".tmp"):
    """Open a temp file beside ``path`` for binary writing; on success fsync it and rename it to ``path``.

    On any exception (a crash, Ctrl-C, a failed check raised inside the block) the temp file is removed and ``path``
    keeps its previous content, so a reader never sees a half-written file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder):
    # Makes the rename itself durable; not supported everywhere, and then only durability (not atomicity) is lost.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


STATUS_FORMAT = "recbole_srma/status/1"


def read_status(path):
    """The run status a trainer wrote to ``status_file`` (a dict), or None when there is none yet."""
    try:
        with open(path) as f:
            status = json.load(f)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("format") == STATUS_FORMAT else None
