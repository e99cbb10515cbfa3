"""The install: RecBole's requirements declared without ray, and nothing of the plugin needs ray or pkg_resources.

README's install: ``pip install -e .`` (RecBole's other requirements, setup.cfg) then
``pip install --no-deps recbole==1.2.1``; ``pip install -e ".[ray]"`` brings RecBole's full list (ray) back.
"""

import configparser
import os
import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


def _name(requirement):
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return parser


def _lines(text):
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_install_requires_is_recboles_list_without_ray():
    recbole = {_name(r) for r in requires("recbole") if "extra ==" not in r}
    ours = {_name(r) for r in _lines(_setup_cfg()["options"]["install_requires"])}
    assert "ray" in recbole  # RecBole 1.2.1 asks for it...
    assert ours == recbole - {"ray"}  # ...the plugin declares everything else, and neither ray nor RecBole itself
    assert not any(_name(r) == "setuptools" for r in _lines(_setup_cfg()["options"]["install_requires"]))


def test_the_ray_extra_brings_recbole_with_all_its_requirements_back():
    extras = _setup_cfg()["options.extras_require"]
    ray = _lines(extras["ray"])
    assert "recbole==1.2.1" in ray and any(r.startswith("setuptools<") for r in ray)
    assert "hyperopt" in extras["tune"] and "recbole" not in extras["tune"]


def test_training_and_the_hyper_parameter_search_never_import_ray_or_pkg_resources(tmp_path):
    config = tiny_config(tmp_path, hidden_size=16, inner_size=32)
    code = f"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("ray", "pkg_resources"):
            raise ImportError(f"{{name}} must not be needed")

sys.meta_path.insert(0, Refuse())
from recbole_srma import run_recbole_srma
result = run_recbole_srma(model="SRMA", config_dict={config!r})
from recbole.trainer.hyper_tuning import HyperTuning  # what python -m recbole_srma.hyper uses
import recbole_srma.hyper
print("OK", result["test_result"]["ndcg@10"])
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_a_missing_recbole_is_a_clear_error_with_the_install_command(tmp_path):
    code = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "recbole" else real(name, *a)
sys.argv = ["run_recbole_srma.py", "--model=SASRec", "--dataset=x"]
import runpy
runpy.run_path(%r, run_name="__main__")
""" % str(REPO / "run_recbole_srma.py")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: recbole-srma needs RecBole 1.2.1" in out.stderr
    assert "pip install --no-deps recbole==1.2.1" in out.stderr
    assert "Traceback" not in out.stderr
