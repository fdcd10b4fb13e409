"""The wheel is one namespace (``tocsin``) built from the design card's folders, with every module and data file."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"tocsin": "tocsin", "producers": "tocsin/producers", "processors": "tocsin/processors",
           "sinks": "tocsin/sinks", "schemas": "tocsin/schemas"}
DATA = (".py", ".avsc", ".yaml", ".j2", ".html", ".js", ".css")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")  # a copy: building in place would leave build/ and egg-info behind
    for name in ("pyproject.toml", "README.md", *FOLDERS):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, cwd=src,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("tocsin-*.whl")
    return zipfile.ZipFile(path)


def test_one_top_level_package(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"tocsin"}, sorted(tops)
    assert not any(n.startswith(("bench/", "tocsin/bench/", "tests/")) for n in wheel.namelist())


def test_every_module_and_data_file_is_in_the_wheel(wheel):
    names = set(wheel.namelist())
    missing = []
    for folder, target in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in DATA or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT / folder).as_posix()
            if folder == "tocsin" and rel.split("/")[0] in ("producers", "processors", "sinks", "schemas"):
                continue
            if f"{target}/{rel}" not in names:
                missing.append(f"{folder}/{rel}")
    assert not missing, f"not in the wheel (a package missing from pyproject's list?): {missing[:20]}"
