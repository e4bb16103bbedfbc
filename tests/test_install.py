"""A non-editable install (``pip install .``) ships every subpackage of ``utils`` (issue 23, item 8).

The project is copied to a temporary folder first (pip builds in the source tree and would leave
``build/`` behind), installed with ``--no-deps --no-build-isolation`` (offline: the venv's setuptools)
into a target folder, and imported from there in a fresh interpreter whose working directory is not
the repository, so nothing resolves to the checkout.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _subpackages(root: Path) -> list[str]:
    """Dotted names of the packages under ``root/utils`` (every folder holding an ``__init__.py``)."""
    return sorted(".".join(p.parent.relative_to(root).parts) for p in (root / "utils").rglob("__init__.py")
                  if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("install")
    src, target = tmp / "src", tmp / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "utils", src / "utils", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return target


def test_every_subpackage_is_installed(installed):
    assert _subpackages(REPO) and set(_subpackages(REPO)) <= set(_subpackages(installed)), \
        "pyproject.toml must list every package under utils/ ([tool.setuptools.packages.find] include = ['utils*'])"
    assert not (installed / "tests").exists() and not (installed / "scripts").exists()


def test_the_installed_package_imports_every_chapter(installed, tmp_path):
    code = f"""
import importlib, sys
import utils
assert utils.__file__.startswith({str(installed)!r}), utils.__file__
from utils import chapters
for pkg in {_subpackages(REPO)!r}:
    importlib.import_module(pkg)
mods = [chapters.module(stem) for stem in chapters.CHAPTERS]
assert all(m.__file__.startswith({str(installed)!r}) for m in mods)
import utils.book, utils.colab          # utils.colab reads _config.yml only when the repository is asked for
print("imported", len(mods), "chapter modules")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
                              "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"imported {len(__import__('utils.chapters').chapters.CHAPTERS)} chapter modules" in out.stdout


def test_licence_and_citation_match_the_project():
    import tomllib

    import yaml
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    licence = (REPO / "LICENSE").read_text()
    assert meta["license"] == "MIT" and licence.startswith("MIT License")
    assert f"Copyright (c) {config['copyright']} {config['author']}" in licence
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and {"message", "title", "authors"} <= set(cff)
    assert cff["license"] == meta["license"] and cff["version"] == meta["version"]
    assert cff["repository-code"] == config["repository"]["url"] and cff["authors"] == [{"name": config["author"]}]
    paper = cff["references"][0]                      # the reproduced paper, as in book/references.bib
    bib = (REPO / "book" / "references.bib").read_text()
    assert [a["family-names"] for a in paper["authors"]] == ["Li", "Dai", "Qu"] and str(paper["year"]) in bib
    assert "2410.24060" in paper["url"] and "2410.24060" in bib
