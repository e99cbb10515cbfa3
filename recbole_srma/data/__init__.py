"""Dataset layer: known benchmark datasets, raw-file lookup/download/verification, conversion to RecBole.

Importing this package is cheap: it does not import RecBole, torch or numpy.

- :func:`prepare_dataset` (``config`` -> path of the ``.inter`` file) is called before RecBole loads data.
- :func:`convert_sequences` converts a ``user item item ...`` file into a RecBole atomic ``.inter`` file.
- :func:`known_datasets` lists the datasets defined by ``properties/dataset/*.yaml``.

Command line: ``python -m recbole_srma.data {convert,fetch,list}`` (see ``docs/datasets.md``).
"""

from recbole_srma.data.convert import CONVERTER_VERSION, convert_sequences, read_sidecar, trusted_inter
from recbole_srma.data.raw import (
    CACHE_DIR_ENV,
    OFFLINE_ENV,
    RAW_DIR_ENV,
    cache_dir,
    find_raw_file,
    known_datasets,
    prepare_dataset,
)

__all__ = [
    "CACHE_DIR_ENV",
    "CONVERTER_VERSION",
    "OFFLINE_ENV",
    "RAW_DIR_ENV",
    "cache_dir",
    "convert_sequences",
    "find_raw_file",
    "known_datasets",
    "prepare_dataset",
    "read_sidecar",
    "trusted_inter",
]
