"""Python 3.10 has no `tomllib`: the registry is read with `tomli` there (issue 11). A child process
with `tomllib` made unimportable takes the path a 3.10 interpreter takes, end to end."""

import subprocess
import sys
from pathlib import Path

from blendin_local.backends.registry import tomllib  # tomli on Python 3.10

WITHOUT_TOMLLIB = """
import importlib.abc, sys

class NoTomllib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tomllib":
            raise ModuleNotFoundError("No module named 'tomllib'", name=name)

sys.meta_path.insert(0, NoTomllib())
try:
    import tomllib
    raise SystemExit("tomllib was still importable")
except ModuleNotFoundError:
    pass

from blendin_local.backends import registry as model_registry
print(model_registry.tomllib.__name__)
from blendin_local.interfaces.cli import main
main(["models", "list"])
"""


def test_the_registry_reads_without_tomllib():
    child = subprocess.run([sys.executable, "-c", WITHOUT_TOMLLIB], capture_output=True, timeout=120)
    assert child.returncode == 0, child.stderr.decode()
    out = child.stdout.decode().splitlines()
    assert out[0] == "tomli" and any(line.startswith("pair default:") for line in out), out


def test_python_310_installs_get_tomli():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    assert any(
        d.replace(" ", "").startswith("tomli>=") and d.replace(" ", "").endswith(';python_version<"3.11"')
        for d in project["dependencies"]
    ), project["dependencies"]
