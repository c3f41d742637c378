"""The distribution: one import name, ``mergecl`` (bench/ and methods/ install as mergecl.bench and
mergecl.methods, no top-level ``bench`` or ``methods``), every package listed, data files shipped."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def test_every_package_folder_is_listed():
    listed, roots = _packages()
    found = set()
    for name, folder in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *relative.parts]) if relative.parts else name)
    assert found == set(listed)


@pytest.mark.e2e
def test_the_wheel_installs_mergecl_only(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("mergecl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("mergecl-")}
    assert tops == {"mergecl"}
    assert "mergecl/bench/config/presets.yaml" in names
    assert "mergecl/bench/config/grids/leaderboard.yaml" in names
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    check = ("import importlib, mergecl.methods, mergecl.bench, mergecl.bench.config\n"
             "for name in ('methods', 'bench'):\n"
             "    try:\n        importlib.import_module(name)\n"
             "    except ModuleNotFoundError:\n        print('no', name)\n"
             "    else:\n        print('found', name)\n")
    out = subprocess.run([str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["no methods", "no bench"]
