"""Tests of the dataset layer (recbole_srma.data): conversion, validation, atomicity, lookup, download, CLI."""

import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from recbole_srma.data import convert as convert_mod
from recbole_srma.data import convert_sequences, find_raw_file, known_datasets, prepare_dataset, trusted_inter
from recbole_srma.data import raw as raw_mod
from recbole_srma.errors import DatasetError

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = "1 5 3 9\n2 3 4\n3 7 7 5 1\n"
TINY_ROWS = [
    ("1", "5", "0"), ("1", "3", "1"), ("1", "9", "2"),
    ("2", "3", "0"), ("2", "4", "1"),
    ("3", "7", "0"), ("3", "7", "1"), ("3", "5", "2"), ("3", "1", "3"),
]
HEADER = "user_id:token\titem_id:token\ttimestamp:float"

REAL = {
    "amazon-sports": ("Sports_and_Outdoors.txt", 35598, 18357, 296337),
    "amazon-beauty": ("Beauty.txt", 22363, 12101, 198502),
    "amazon-toys": ("Toys_and_Games.txt", 19412, 11924, 167597),
    "yelp": ("Yelp.txt", 30431, 20033, 316354),
}


class Cfg(dict):
    """Stands in for RecBole's Config: a missing key reads as None."""

    def __getitem__(self, key):
        return self.get(key)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read_rows(path):
    lines = Path(path).read_text().split("\n")
    assert lines[-1] == ""
    return lines[0], [tuple(line.split("\t")) for line in lines[1:-1]]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    # Never touch the real ~/.cache, never inherit a user's raw dir, never go through a proxy for 127.0.0.1.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECBOLE_SRMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RECBOLE_SRMA_RAW_DIR", raising=False)
    monkeypatch.delenv("RECBOLE_SRMA_OFFLINE", raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def tiny(tmp_path):
    """A small raw file in its own folder, and a config for it as a 'known' dataset named tiny."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    src = raw_dir / "tiny.txt"
    src.write_text(TINY)
    cfg = Cfg(
        dataset="tiny",
        data_path=str(tmp_path / "data" / "tiny"),
        raw_file="tiny.txt",
        raw_sha256=sha(TINY.encode()),
        raw_url=None,
        raw_data_dir=str(raw_dir),
    )
    return src, cfg


@pytest.fixture
def convert_spy(monkeypatch):
    calls = []
    real = raw_mod.convert_into_folder

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(raw_mod, "convert_into_folder", spy)
    return calls


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path/'srv' on 127.0.0.1; yields (folder, base_url)."""
    folder = tmp_path / "srv"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------- conversion


def test_convert_output_and_sidecar(tmp_path, tiny):
    src, _ = tiny
    out = convert_sequences(src, "tiny", tmp_path / "root")
    assert out == tmp_path / "root" / "tiny" / "tiny.inter"
    header, rows = read_rows(out)
    assert header == HEADER
    assert len(rows) == 9
    assert rows == TINY_ROWS  # file order, per-user 0-based positions as timestamps, repeats kept
    meta = json.loads((out.parent / "tiny.srma.json").read_text())
    assert (meta["users"], meta["items"], meta["interactions"]) == (3, 6, 9)
    assert meta["raw_sha256"] == sha(TINY.encode())
    assert meta["converter_version"] == convert_mod.CONVERTER_VERSION
    assert meta["inter_sha256"] == sha(out.read_bytes())
    assert trusted_inter(out.parent, "tiny", raw_sha256=meta["raw_sha256"]) is not None


def test_convert_normalises_ids_and_line_endings(tmp_path):
    src = tmp_path / "x.txt"
    src.write_bytes(b"01 007 7\r\n2 10\r\n\r\n")
    out = convert_sequences(src, "x", tmp_path)
    _, rows = read_rows(out)
    assert rows == [("1", "7", "0"), ("1", "7", "1"), ("2", "10", "0")]
    assert json.loads((tmp_path / "x" / "x.srma.json").read_text())["items"] == 2


def test_convert_expected_sha_mismatch(tmp_path, tiny):
    src, _ = tiny
    with pytest.raises(DatasetError, match="0" * 64):
        convert_sequences(src, "tiny", tmp_path / "root", expected_sha256="0" * 64)
    assert not (tmp_path / "root" / "tiny" / "tiny.inter").exists()


@pytest.mark.parametrize(
    "content, lineno, fragment",
    [
        ("1 2 3\n2\n3 4\n", 2, "at least one item"),
        ("1 2 3\n\n3 4\n", 2, "blank"),
        ("1 2 3\n2 4 x5\n", 2, "'x5'"),
        ("1 2 3\n2 4 -5\n", 2, "'-5'"),
        ("1 2\n2 3\n1 4\n", 3, "already appeared on line 1"),
        ("1 2\n2 3\n01 4\n", 3, "already appeared on line 1"),
    ],
)
def test_malformed_lines(tmp_path, content, lineno, fragment):
    src = tmp_path / "bad.txt"
    src.write_text(content)
    with pytest.raises(DatasetError) as info:
        convert_sequences(src, "bad", tmp_path / "root")
    message = str(info.value)
    assert f"line {lineno}:" in message
    assert fragment in message
    assert str(src) in message
    assert "USER_ID ITEM_ID" in message  # says what the format must be
    assert not (tmp_path / "root" / "bad" / "bad.inter").exists()


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    src = tmp_path / "empty.txt"
    src.write_text(content)
    with pytest.raises(DatasetError, match="empty") as info:
        convert_sequences(src, "empty", tmp_path / "root")
    assert "USER_ID ITEM_ID" in str(info.value)


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "sp ace"])
def test_bad_names(tmp_path, tiny, name):
    with pytest.raises(DatasetError, match="Invalid dataset name"):
        convert_sequences(tiny[0], name, tmp_path)


# --------------------------------------------------------------------------------------------- atomicity


def test_interrupted_inter_write_leaves_nothing_trusted(tmp_path, tiny, monkeypatch):
    _, cfg = tiny
    folder = Path(cfg["data_path"])
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(convert_mod.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        prepare_dataset(cfg)
    # No .inter, no sidecar, no temp file left behind.
    assert sorted(p.name for p in folder.iterdir()) == []
    monkeypatch.setattr(convert_mod.os, "replace", real_replace)
    path = prepare_dataset(cfg)
    assert read_rows(path) == (HEADER, TINY_ROWS)


def test_crash_between_inter_and_sidecar_is_reconverted(tmp_path, tiny, monkeypatch, convert_spy):
    _, cfg = tiny
    folder = Path(cfg["data_path"])
    assert len(convert_spy) == 0
    prepare_dataset(cfg)  # a good, trusted conversion first
    assert len(convert_spy) == 1
    real_replace = os.replace

    def crash_on_sidecar(src, dst):
        if str(dst).endswith(".srma.json"):
            raise OSError("simulated crash before the sidecar")
        return real_replace(src, dst)

    monkeypatch.setattr(convert_mod.os, "replace", crash_on_sidecar)
    with pytest.raises(OSError):
        convert_mod.convert_into_folder(tiny[0], "tiny", folder)  # directly, not through the spy
    monkeypatch.setattr(convert_mod.os, "replace", real_replace)
    # The .inter is there but the old sidecar was removed first, so it is not trusted ...
    assert (folder / "tiny.inter").exists()
    assert not (folder / "tiny.srma.json").exists()
    assert trusted_inter(folder, "tiny", raw_sha256=cfg["raw_sha256"]) is None
    # ... and the next call converts again.
    prepare_dataset(cfg)
    assert len(convert_spy) == 2
    assert trusted_inter(folder, "tiny", raw_sha256=cfg["raw_sha256"]) is not None


def test_leftover_inter_without_sidecar_is_reconverted(tiny):
    _, cfg = tiny
    folder = Path(cfg["data_path"])
    folder.mkdir(parents=True)
    (folder / "tiny.inter").write_text(HEADER + "\n1\t5\t0\n1\t3")  # half-written, no sidecar
    path = prepare_dataset(cfg)
    assert read_rows(path) == (HEADER, TINY_ROWS)


def test_sidecar_of_other_sha_is_reconverted(tiny, convert_spy):
    _, cfg = tiny
    folder = Path(cfg["data_path"])
    prepare_dataset(cfg)
    meta_path = folder / "tiny.srma.json"
    meta = json.loads(meta_path.read_text())
    meta["raw_sha256"] = "f" * 64
    meta_path.write_text(json.dumps(meta))
    prepare_dataset(cfg)
    assert len(convert_spy) == 2
    assert json.loads(meta_path.read_text())["raw_sha256"] == cfg["raw_sha256"]


def test_truncated_inter_with_sidecar_is_reconverted(tiny, convert_spy):
    _, cfg = tiny
    path = Path(prepare_dataset(cfg))
    path.write_bytes(path.read_bytes()[:-7])
    assert read_rows(prepare_dataset(cfg)) == (HEADER, TINY_ROWS)
    assert len(convert_spy) == 2


def test_trusted_inter_is_reused_without_raw_file(tiny, convert_spy):
    src, cfg = tiny
    path = prepare_dataset(cfg)
    mtime = os.stat(path).st_mtime_ns
    src.unlink()  # the raw file is not needed any more
    assert prepare_dataset(cfg) == path
    assert len(convert_spy) == 1
    assert os.stat(path).st_mtime_ns == mtime


def test_converter_version_change_is_reconverted(tiny, convert_spy, monkeypatch):
    _, cfg = tiny
    prepare_dataset(cfg)
    monkeypatch.setattr(convert_mod, "CONVERTER_VERSION", convert_mod.CONVERTER_VERSION + 1)
    prepare_dataset(cfg)
    assert len(convert_spy) == 2


# --------------------------------------------------------------------------------------------- lookup, checksum


def test_truncated_raw_file_fails_checksum(tmp_path, tiny):
    _, cfg = tiny
    bad_dir = tmp_path / "user_raw"
    bad_dir.mkdir()
    (bad_dir / "tiny.txt").write_text(TINY[:-4])
    cfg["raw_data_dir"] = str(bad_dir)
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg)
    message = str(info.value)
    assert str(bad_dir / "tiny.txt") in message
    assert cfg["raw_sha256"] in message
    assert sha(TINY[:-4].encode()) in message
    assert "Delete" in message or "replace" in message
    assert not (Path(cfg["data_path"]) / "tiny.inter").exists()


def _place(folder, good):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.txt").write_text(TINY if good else TINY + "9 9\n")
    return folder / "tiny.txt"


def test_search_order(tmp_path, tiny, monkeypatch):
    _, cfg = tiny
    user_dir, env_dir, cache_raw = tmp_path / "u", tmp_path / "e", tmp_path / "cache" / "raw"
    monkeypatch.setenv("RECBOLE_SRMA_RAW_DIR", str(env_dir))
    cfg["raw_data_dir"] = str(user_dir)

    # raw_data_dir beats the env var (which holds a corrupt copy that must not be read).
    good = _place(user_dir, True)
    _place(env_dir, False)
    _place(cache_raw, False)
    assert find_raw_file(cfg) == good

    # The env var beats the cache when raw_data_dir has no copy.
    good.unlink()
    _place(env_dir, True)
    assert find_raw_file(cfg) == env_dir / "tiny.txt"

    # The cache is used last.
    (env_dir / "tiny.txt").unlink()
    _place(cache_raw, True)
    assert find_raw_file(cfg) == cache_raw / "tiny.txt"

    # A copy that is found is checked, never skipped: a corrupt one in raw_data_dir is an error.
    _place(user_dir, False)
    _place(env_dir, True)
    with pytest.raises(DatasetError, match=str(user_dir / "tiny.txt")):
        find_raw_file(cfg)


def test_raw_cache_dir_option_beats_env(tmp_path, tiny):
    _, cfg = tiny
    cfg["raw_data_dir"] = None
    good = _place(tmp_path / "mycache" / "raw", True)
    _place(tmp_path / "cache" / "raw", False)  # $RECBOLE_SRMA_CACHE_DIR
    cfg["raw_cache_dir"] = str(tmp_path / "mycache")
    assert find_raw_file(cfg) == good
    assert read_rows(prepare_dataset(cfg)) == (HEADER, TINY_ROWS)


# --------------------------------------------------------------------------------------------- download


def test_download_verifies_and_converts(tmp_path, tiny, http_dir):
    _, cfg = tiny
    folder, base = http_dir
    (folder / "tiny.txt").write_text(TINY)
    cfg["raw_data_dir"] = None
    cfg["raw_url"] = f"{base}/tiny.txt"
    cache_raw = tmp_path / "cache" / "raw"
    assert not cache_raw.exists()
    path = prepare_dataset(cfg)
    assert read_rows(path) == (HEADER, TINY_ROWS)
    assert sorted(p.name for p in cache_raw.iterdir()) == ["tiny.txt"]
    assert (cache_raw / "tiny.txt").read_text() == TINY
    # Second time (another data root): found in the cache, no server needed.
    (folder / "tiny.txt").unlink()
    cfg["data_path"] = str(tmp_path / "data2" / "tiny")
    assert read_rows(prepare_dataset(cfg)) == (HEADER, TINY_ROWS)


def test_download_wrong_bytes_leaves_nothing(tmp_path, tiny, http_dir):
    _, cfg = tiny
    folder, base = http_dir
    (folder / "tiny.txt").write_text(TINY[:-3])  # truncated on the server
    cfg["raw_data_dir"] = None
    cfg["raw_url"] = f"{base}/tiny.txt"
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg)
    message = str(info.value)
    assert "Checksum mismatch" in message and cfg["raw_sha256"] in message and cfg["raw_url"] in message
    cache_raw = tmp_path / "cache" / "raw"
    assert list(cache_raw.iterdir()) == []  # neither the file nor a temp file
    assert not (Path(cfg["data_path"]) / "tiny.inter").exists()


@pytest.mark.parametrize("kind", ["closed-port", "404"])
def test_unreachable_url_message(tmp_path, tiny, http_dir, kind):
    _, cfg = tiny
    cfg["raw_data_dir"] = None
    cfg["raw_url"] = (
        f"http://127.0.0.1:{closed_port()}/data/tiny.txt" if kind == "closed-port" else f"{http_dir[1]}/nope.txt"
    )
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg)
    message = str(info.value)
    assert "tiny.txt" in message
    assert "RECBOLE_SRMA_RAW_DIR" in message
    assert "raw_data_dir" in message
    assert cfg["raw_url"] in message
    assert str(tmp_path / "cache" / "raw") in message
    assert list((tmp_path / "cache" / "raw").iterdir()) == []


def test_github_source_named_in_message(tiny, monkeypatch):
    _, cfg = tiny
    cfg["raw_data_dir"] = None
    cfg["raw_url"] = "https://raw.githubusercontent.com/salesforce/SRMA/abc123/data/tiny.txt"
    monkeypatch.setenv("RECBOLE_SRMA_OFFLINE", "1")  # no network attempt
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg)
    message = str(info.value)
    assert "https://github.com/salesforce/SRMA" in message and "abc123" in message
    assert "RECBOLE_SRMA_OFFLINE" in message


# --------------------------------------------------------------------------------------------- unknown names, CLI


def test_known_datasets_and_yamls():
    known = known_datasets()
    assert sorted(known) == sorted(REAL)
    for name, (raw_file, users, items, inter) in REAL.items():
        info = known[name]
        assert info["raw_file"] == raw_file
        assert (info["users"], info["items"], info["interactions"]) == (users, items, inter)
        assert len(info["raw_sha256"]) == 64
        assert info["raw_url"].endswith("/data/" + raw_file)
        text = Path(info["yaml"]).read_text()
        for key in ("raw_file", "raw_sha256", "raw_url"):
            line = next(line for line in text.splitlines() if line.startswith(key + ":"))
            assert "# (str)" in line


def test_unknown_dataset_then_cli_convert(tmp_path):
    root = tmp_path / "data"
    cfg = Cfg(dataset="myshop", data_path=str(root / "myshop"))
    with pytest.raises(DatasetError) as info:
        prepare_dataset(cfg)
    message = str(info.value)
    for name in REAL:
        assert name in message
    assert "python -m recbole_srma.data convert" in message and "--name myshop" in message

    src = tmp_path / "shop.txt"
    src.write_text(TINY)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_srma.data", "convert", str(src), "--name", "myshop", "--data_path", str(root)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(root / "myshop" / "myshop.inter") in proc.stdout
    assert "3 users, 6 items, 9 interactions" in proc.stdout
    assert f"--dataset=myshop --data_path={root}" in proc.stdout
    assert prepare_dataset(cfg) == str(root / "myshop" / "myshop.inter")
    assert read_rows(prepare_dataset(cfg)) == (HEADER, TINY_ROWS)

    # Errors: message on stderr, exit status 2, no traceback.
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2\n2 x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_srma.data", "convert", str(bad), "--name", "bad", "--data_path", str(root)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_in_process(tmp_path, tiny, capsys):
    from recbole_srma.data.__main__ import main

    src, _ = tiny
    assert main(["list", "--data_path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "amazon-sports" in out and "296337" in out
    # A known name may not be reused for a different file.
    assert main(["convert", str(src), "--name", "yelp", "--data_path", str(tmp_path)]) == 2
    assert "known dataset" in capsys.readouterr().err
    # fetch of an unknown name lists the known ones.
    assert main(["fetch", "nope", "--data_path", str(tmp_path)]) == 2
    assert "amazon-toys" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- real files


def _count(path):
    users, items, rows = set(), set(), 0
    with open(path) as f:
        assert f.readline() == HEADER + "\n"
        for line in f:
            user, item, _ = line.split("\t")
            users.add(user)
            items.add(item)
            rows += 1
    return len(users), len(items), rows


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets(tmp_path, shared_data_dir, name):
    raw_file, users, items, interactions = REAL[name]
    info = known_datasets()[name]
    cfg = Cfg(info, dataset=name, data_path=str(tmp_path / "data" / name), raw_data_dir=str(shared_data_dir))
    start = time.perf_counter()
    path = prepare_dataset(cfg)
    elapsed = time.perf_counter() - start
    print(f"\n{name}: checksum + conversion of {raw_file} took {elapsed:.3f} s")
    assert path == str(tmp_path / "data" / name / f"{name}.inter")
    assert _count(path) == (users, items, interactions)
    meta = json.loads((tmp_path / "data" / name / f"{name}.srma.json").read_text())
    assert meta["raw_sha256"] == info["raw_sha256"]
    assert (meta["users"], meta["items"], meta["interactions"]) == (users, items, interactions)
    if name == "amazon-sports":
        assert elapsed < 2.0
