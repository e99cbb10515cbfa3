"""Convert a ``user item item ...`` sequence file into a RecBole atomic ``.inter`` file.

Input format (one line per user, chronological)::

    1 12 7 33 7
    2 5 12 9

Output (tab-separated, header included)::

    user_id:token	item_id:token	timestamp:float
    1	12	0
    1	7	1
    ...

The timestamp is the 0-based position of the item in its user's line: RecBole's ``SequentialDataset`` sorts by
user and time, so the original order is kept. The ``.inter`` file is written atomically (temp file, fsync,
``os.replace``), then a sidecar ``<name>.srma.json`` records the raw file's sha256, the converter version, the
``.inter`` file's size and sha256 and the counts. An ``.inter`` without a matching sidecar is never trusted.

Only the standard library is used, so this module is cheap to import.
"""

import hashlib
import json
import os
import re
from pathlib import Path

from recbole_srma.errors import DatasetError
from recbole_srma.fileio import atomic_open

#: Bump when the output of the converter changes, so that files written by an older version are rebuilt.
CONVERTER_VERSION = 1

INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
#: RecBole's ``load_col`` for a converted file: every column, the position timestamp included (it keeps each user's
#: order, which RecBole's sequential datasets sort by).
LOAD_COL = {"inter": ["user_id", "item_id", "timestamp"]}
SIDECAR_SUFFIX = ".srma.json"

FORMAT_HELP = (
    "The file must hold one line per user: `USER_ID ITEM_ID ITEM_ID ...`, integer ids separated by spaces, "
    "items in chronological order, each user on exactly one line."
)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name):
    """Raise ``DatasetError`` unless ``name`` is usable as a dataset (folder and file) name."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise DatasetError(
            f"Invalid dataset name {name!r}: use letters, digits, '.', '_' and '-' only "
            "(it becomes a folder and file name), e.g. --name my-shop."
        )
    return name


def inter_path(folder, name):
    """``<folder>/<name>.inter``."""
    return Path(folder) / f"{name}.inter"


def sidecar_path(folder, name):
    """``<folder>/<name>.srma.json``: the metadata written next to a converted ``.inter`` file."""
    return Path(folder) / f"{name}{SIDECAR_SUFFIX}"


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bad_token(tokens):
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            return token
    return None


def parse_sequences(text, source="<input>"):
    """Parse and validate the text of a sequence file.

    Returns ``(lines, stats)`` where ``lines`` is a list of token lists (user first), normalised so that each id
    is a canonical decimal integer (``"007"`` -> ``"7"``), and ``stats`` holds ``users``, ``items`` and
    ``interactions``. Raises ``DatasetError`` naming the file and the 1-based line number of the first problem.
    """
    raw_lines = text.split("\n")
    # Trailing blank lines (a final newline, or several) are not users.
    end = len(raw_lines)
    while end and not raw_lines[end - 1].strip():
        end -= 1
    if end == 0:
        raise DatasetError(f"{source} is empty: no user lines found. {FORMAT_HELP}")

    parsed = []
    seen_users = {}
    items = set()
    interactions = 0
    single = []  # (user, line) of the users with one interaction
    for lineno in range(1, end + 1):
        tokens = raw_lines[lineno - 1].split()
        if len(tokens) < 2:
            what = "is blank" if not tokens else f"has only the user id {tokens[0]!r} and no item"
            raise DatasetError(
                f"{source}, line {lineno}: the line {what}; each line needs a user id and at least one item. "
                f"{FORMAT_HELP}"
            )
        joined = "".join(tokens)
        if not (joined.isascii() and joined.isdigit()):
            bad = _bad_token(tokens)
            raise DatasetError(
                f"{source}, line {lineno}: {bad!r} is not a non-negative integer id. {FORMAT_HELP}"
            )
        if "0" in joined and any(len(t) > 1 and t[0] == "0" for t in tokens):
            tokens = [str(int(t)) for t in tokens]
        user = tokens[0]
        if user in seen_users:
            raise DatasetError(
                f"{source}, line {lineno}: user id {user} already appeared on line {seen_users[user]}; "
                f"each user must be on exactly one line. {FORMAT_HELP}"
            )
        seen_users[user] = lineno
        if len(tokens) == 2:
            single.append((user, lineno))
        items.update(tokens[1:])
        interactions += len(tokens) - 1
        parsed.append(tokens)
    stats = {"users": len(parsed), "items": len(items), "interactions": interactions}
    if single:
        stats["single_interaction_users"] = len(single)
        stats["first_single_interaction_user"] = {"user": single[0][0], "line": single[0][1]}
    return parsed, stats


def single_interaction_warning(meta):
    """A one-line warning when the converted file has users with a single interaction (from the sidecar's counts),
    else None. Conversion keeps them (the file is the user's), but RecBole's leave-one-out split uses them nowhere."""
    count = meta.get("single_interaction_users", 0) if meta else 0
    if not count:
        return None
    first = meta.get("first_single_interaction_user", {})
    return (
        f"{meta.get('name', 'the dataset')}: {count} user(s) have a single interaction (first: user "
        f"{first.get('user')}, line {first.get('line')} of {meta.get('raw_file')}); leave-one-out gives them no "
        "training sample and no validation or test case, so they are never used (users need 3 interactions to be "
        "trained, validated and tested). Remove them from the file if that is not what you want"
    )


def render_inter(lines):
    """The ``.inter`` file's text for parsed lines (see :func:`parse_sequences`)."""
    out = [INTER_HEADER]
    append = out.append
    for tokens in lines:
        prefix = tokens[0] + "\t"
        append("".join([prefix + item + "\t" + str(pos) + "\n" for pos, item in enumerate(tokens[1:])]))
    return "".join(out)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically; on any failure ``path`` is left as it was."""
    with atomic_open(path) as f:
        f.write(data)


def read_sidecar(folder, name):
    """The sidecar's dict, or ``None`` if it is missing or unreadable."""
    try:
        with open(sidecar_path(folder, name), "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def trusted_inter(folder, name, raw_sha256=None, check_content=True):
    """Return the sidecar dict if ``<folder>/<name>.inter`` is a complete output of this converter, else ``None``.

    Trusted means: the sidecar exists and names this dataset and converter version, its raw sha256 equals
    ``raw_sha256`` (when given), and the ``.inter`` file's size (and, with ``check_content``, sha256) equal the
    recorded ones. A half-written, stale or hand-edited ``.inter`` fails one of these.
    """
    meta = read_sidecar(folder, name)
    if meta is None:
        return None
    if meta.get("converter_version") != CONVERTER_VERSION or meta.get("name") != name:
        return None
    if raw_sha256 is not None and str(meta.get("raw_sha256", "")).lower() != str(raw_sha256).lower():
        return None
    path = inter_path(folder, name)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if size != meta.get("inter_bytes"):
        return None
    if check_content and sha256_file(path) != meta.get("inter_sha256"):
        return None
    return meta


def convert_into_folder(src_path, name, folder, *, expected_sha256=None):
    """Convert ``src_path`` into ``<folder>/<name>.inter`` (+ sidecar); return the sidecar dict.

    ``folder`` is the dataset folder itself (RecBole's ``config["data_path"]``).
    """
    check_name(name)
    src_path = Path(src_path)
    try:
        data = src_path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"Cannot convert {src_path}: the file does not exist.") from None
    except IsADirectoryError:
        raise DatasetError(f"Cannot convert {src_path}: it is a folder, not a file. {FORMAT_HELP}") from None
    except OSError as exc:
        raise DatasetError(f"Cannot read {src_path}: {exc}") from None
    raw_sha256 = sha256_bytes(data)
    if expected_sha256 is not None and raw_sha256 != str(expected_sha256).lower():
        raise DatasetError(
            f"Checksum mismatch for {src_path}: sha256 is {raw_sha256}, expected {str(expected_sha256).lower()}. "
            "The file is corrupt, truncated or a different version; delete or replace it with the original."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"{src_path}, line {lineno}: not UTF-8 text. {FORMAT_HELP}") from None
    lines, stats = parse_sequences(text, source=str(src_path))
    payload = render_inter(lines).encode("utf-8")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Drop the old sidecar first: from here until the new sidecar is written, the .inter is untrusted.
    try:
        os.unlink(sidecar_path(folder, name))
    except FileNotFoundError:
        pass
    atomic_write_bytes(inter_path(folder, name), payload)
    meta = {
        "name": name,
        "converter_version": CONVERTER_VERSION,
        "raw_file": src_path.name,
        "raw_sha256": raw_sha256,
        "inter_file": inter_path(folder, name).name,
        "inter_bytes": len(payload),
        "inter_sha256": sha256_bytes(payload),
        **stats,
    }
    atomic_write_bytes(sidecar_path(folder, name), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return meta


def convert_sequences(src_path, name, data_root, *, expected_sha256=None):
    """Convert a ``user item item ...`` file into ``<data_root>/<name>/<name>.inter``; return that path.

    ``expected_sha256``, when given, must equal the source file's sha256 (else ``DatasetError``).
    Counts and hashes go to the sidecar ``<data_root>/<name>/<name>.srma.json``.
    """
    check_name(name)
    folder = Path(data_root) / name
    convert_into_folder(src_path, name, folder, expected_sha256=expected_sha256)
    return inter_path(folder, name)
