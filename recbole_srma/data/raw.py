"""Find, download and verify raw dataset files; ``prepare_dataset`` ties it together with the converter.

A *known* dataset is one with a yaml in the repository's ``properties/dataset/`` holding ``raw_file``,
``raw_sha256`` and ``raw_url``. Its raw file is looked up, in this order:

1. the folder named by the config key ``raw_data_dir``;
2. the folder named by the environment variable ``RECBOLE_SRMA_RAW_DIR``;
3. ``<cache>/raw/`` where ``<cache>`` is ``raw_cache_dir``, else ``$RECBOLE_SRMA_CACHE_DIR``, else
   ``~/.cache/recbole_srma``;
4. otherwise it is downloaded from ``raw_url`` into ``<cache>/raw/`` (unless ``RECBOLE_SRMA_OFFLINE=1``).

Every copy found or downloaded must match ``raw_sha256``.
"""

import hashlib
import logging
import os
import re
from pathlib import Path

from recbole_srma import PROPERTIES_DIR
from recbole_srma.data.convert import (
    convert_into_folder,
    inter_path,
    read_sidecar,
    sha256_file,
    single_interaction_warning,
    trusted_inter,
)
from recbole_srma.errors import DatasetError
from recbole_srma.fileio import atomic_open

logger = logging.getLogger("recbole_srma.data")

RAW_DIR_ENV = "RECBOLE_SRMA_RAW_DIR"
CACHE_DIR_ENV = "RECBOLE_SRMA_CACHE_DIR"
OFFLINE_ENV = "RECBOLE_SRMA_OFFLINE"
DEFAULT_CACHE_DIR = Path("~/.cache/recbole_srma")
DOWNLOAD_TIMEOUT_S = 30

DATASET_PROPERTIES_DIR = PROPERTIES_DIR / "dataset"

_STATS_RE = re.compile(r"users\s*=\s*(\d+)\s+items\s*=\s*(\d+)\s+interactions\s*=\s*(\d+)")
_GITHUB_RAW_RE = re.compile(r"https?://raw\.githubusercontent\.com/([^/]+)/([^/]+)/([^/]+)/(.+)")


def _get(config, key):
    """``config[key]`` or ``None``: works for RecBole's Config and for plain dicts."""
    try:
        value = config[key]
    except (KeyError, IndexError):
        return None
    return value


def known_datasets():
    """``{name: info}`` for every yaml in ``properties/dataset/`` that defines ``raw_file``.

    ``info`` holds ``raw_file``, ``raw_sha256``, ``raw_url``, ``yaml`` (its path) and, when the yaml has a
    ``# Statistics: users=U items=I interactions=N`` comment, ``users``, ``items`` and ``interactions``.
    """
    import yaml

    result = {}
    if not DATASET_PROPERTIES_DIR.is_dir():
        return result
    for path in sorted(DATASET_PROPERTIES_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise DatasetError(f"{path} is not valid yaml: {exc}") from None
        if not isinstance(values, dict) or not values.get("raw_file"):
            continue
        info = {
            "raw_file": str(values["raw_file"]),
            "raw_sha256": str(values.get("raw_sha256") or "").lower() or None,
            "raw_url": values.get("raw_url"),
            "yaml": str(path),
        }
        match = _STATS_RE.search(text)
        if match:
            info["users"], info["items"], info["interactions"] = (int(g) for g in match.groups())
        result[path.stem] = info
    return result


def cache_dir(config=None):
    """The cache folder: ``raw_cache_dir``, else ``$RECBOLE_SRMA_CACHE_DIR``, else ``~/.cache/recbole_srma``."""
    value = _get(config, "raw_cache_dir") if config is not None else None
    value = value or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return Path(value).expanduser()


def source_description(url):
    """Human description of where a URL points (repository, commit, path for raw GitHub URLs)."""
    if not url:
        return "no download URL is configured"
    match = _GITHUB_RAW_RE.match(url)
    if match:
        owner, repo, commit, path = match.groups()
        return (
            f"{url} (GitHub repository https://github.com/{owner}/{repo}, commit {commit}, file {path})"
        )
    return url


def _verify(path, expected_sha256):
    if not expected_sha256:
        return
    actual = sha256_file(path)
    if actual != expected_sha256.lower():
        raise DatasetError(
            f"Checksum mismatch for raw file {path}: sha256 is {actual}, expected {expected_sha256.lower()}. "
            "The file is corrupt, truncated or a different version. Delete it (it will then be looked up "
            "elsewhere or downloaded again) or replace it with the original file."
        )


def _search_dirs(config):
    """``[(label, folder)]`` in lookup order; folders that are not configured are left out."""
    dirs = []
    user_dir = _get(config, "raw_data_dir")
    if user_dir:
        dirs.append(("raw_data_dir", Path(user_dir).expanduser()))
    env_dir = os.environ.get(RAW_DIR_ENV)
    if env_dir:
        dirs.append((f"${RAW_DIR_ENV}", Path(env_dir).expanduser()))
    dirs.append(("cache", cache_dir(config) / "raw"))
    return dirs


def _missing_message(config, raw_file, url, reason):
    name = _get(config, "dataset")
    user_dir = _get(config, "raw_data_dir")
    env_dir = os.environ.get(RAW_DIR_ENV)
    cache_raw = cache_dir(config) / "raw"
    searched = [str(folder / raw_file) for _, folder in _search_dirs(config)]
    return (
        f"Raw file {raw_file} for dataset {name!r} was not found and could not be downloaded ({reason}).\n"
        f"Looked for: {', '.join(searched)}.\n"
        f"Fix: get {raw_file} from {source_description(url)} and put it in one of:\n"
        f"  - a folder passed as the option raw_data_dir (--raw_data_dir=DIR"
        + (f"; now {user_dir}" if user_dir else "")
        + ")\n"
        f"  - the folder named by the environment variable {RAW_DIR_ENV}"
        + (f" (now {env_dir})" if env_dir else "")
        + "\n"
        f"  - the cache folder {cache_raw} (set raw_cache_dir or {CACHE_DIR_ENV} to move the cache)."
    )


def download(url, dest, expected_sha256=None, timeout=DOWNLOAD_TIMEOUT_S):
    """Download ``url`` to ``dest`` atomically, checking ``expected_sha256`` before the rename.

    The bytes go to a temp file beside ``dest``, which is removed on any failure. Network errors raise
    ``OSError`` (including ``urllib.error.URLError``); a checksum mismatch raises ``DatasetError``.
    """
    import urllib.request

    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_open(dest, suffix=".part") as out:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"Downloading {dest.name}",
                leave=False,
            ) as bar:
                while True:
                    chunk = response.read(1 << 16)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if expected_sha256 and actual != expected_sha256.lower():
            raise DatasetError(
                f"Checksum mismatch for {dest.name} downloaded from {url}: sha256 is {actual}, expected "
                f"{expected_sha256.lower()}. Nothing was saved. The server sent a different or truncated file; "
                f"try again later, or download {dest.name} yourself, check it, and put it in {dest.parent} "
                f"or in the folder named by {RAW_DIR_ENV}."
            )
    return dest


def find_raw_file(config):
    """Return the verified path of a known dataset's raw file, downloading it into the cache if needed."""
    raw_file = str(_get(config, "raw_file"))
    expected = _get(config, "raw_sha256")
    expected = str(expected).lower() if expected else None
    url = _get(config, "raw_url")

    for label, folder in _search_dirs(config):
        candidate = folder / raw_file
        if candidate.is_file():
            logger.info("Using raw file %s (from %s)", candidate, label)
            _verify(candidate, expected)
            return candidate

    dest = cache_dir(config) / "raw" / raw_file
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes"):
        raise DatasetError(_missing_message(config, raw_file, url, f"downloads are disabled by {OFFLINE_ENV}"))
    if not url:
        raise DatasetError(_missing_message(config, raw_file, url, "no raw_url is set"))
    logger.info("Downloading %s from %s", raw_file, url)
    try:
        download(url, dest, expected)
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad URL
        raise DatasetError(_missing_message(config, raw_file, url, f"download failed: {exc}")) from None
    return dest


def unknown_dataset_message(name, folder):
    """Message for a dataset that is neither known (no yaml) nor converted (no ``.inter``)."""
    known = ", ".join(sorted(known_datasets())) or "(none found)"
    root = Path(folder).parent
    return (
        f"Unknown dataset {name!r}: there is no {inter_path(folder, name)} and no "
        f"properties/dataset/{name}.yaml. Known datasets: {known}.\n"
        f"To use your own file (one line per user: `USER_ID ITEM_ID ITEM_ID ...`, chronological), convert it "
        f"first:\n"
        f"  python -m recbole_srma.data convert PATH/TO/FILE.txt --name {name} --data_path {root}\n"
        f"then run with --dataset={name} --data_path={root}."
    )


def prepare_dataset(config):
    """Make sure ``<data_path>/<dataset>.inter`` exists and is current; return its path (str).

    ``config`` is RecBole's Config (or a dict-like whose ``[key]`` gives ``None`` when absent). Keys read:
    ``dataset``, ``data_path`` (the dataset folder, as RecBole sets it), ``raw_file``, ``raw_sha256``,
    ``raw_url``, ``raw_data_dir``, ``raw_cache_dir``.
    """
    name = _get(config, "dataset")
    if not name:
        raise DatasetError("No dataset name is set: pass --dataset=NAME.")
    name = str(name)
    data_path = _get(config, "data_path")
    folder = Path(data_path).expanduser() if data_path else Path("dataset") / name
    inter = inter_path(folder, name)
    raw_file = _get(config, "raw_file")

    if not raw_file:
        if inter.is_file():
            warning = single_interaction_warning(read_sidecar(folder, name))
            if warning:
                logger.warning(warning)
            return str(inter)
        raise DatasetError(unknown_dataset_message(name, folder))

    expected = _get(config, "raw_sha256")
    if inter.is_file() and trusted_inter(folder, name, raw_sha256=expected) is not None:
        return str(inter)

    src = find_raw_file(config)
    logger.info("Converting %s into %s", src, inter)
    # The bytes actually read are checked again, in case the file changed since it was verified.
    meta = convert_into_folder(src, name, folder, expected_sha256=expected)
    logger.info(
        "Dataset %s: %d users, %d items, %d interactions", name, meta["users"], meta["items"], meta["interactions"]
    )
    return str(inter)
