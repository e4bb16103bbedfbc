"""utils.colab: the Colab bootstrap cell and install plan, tested with a faked Colab."""
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from utils import colab

REPO = Path(__file__).resolve().parent.parent
COLAB = {"google.colab": types.ModuleType("google.colab")}
REQS = """# pinned
torch==2.13.0
numpy==2.4.6
scikit-learn==1.9.1   # comment
jupyter-book==1.0.4.post1
Sphinx==7.4.7
papermill==2.7.0
tqdm[notebook]==4.70.1
pytest==9.2.0
"""


@pytest.fixture
def fake_repo(tmp_path):
    repo = tmp_path / "hidden-gaussian-book"
    repo.mkdir()
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (repo / "requirements.txt").write_text(REQS)
    return repo


def test_myst_nb_is_installed_on_colab():
    """The chapters glue numbers into their prose with myst_nb: Colab must get it."""
    specs = colab.colab_requirements((REPO / "requirements.txt").read_text(), installed=lambda n: False)
    assert any(s.lower().startswith("myst-nb") for s in specs)


def test_requirements_refer_only_to_files_that_exist():
    import re
    for path in REPO.glob("requirements*.txt"):
        for ref in re.findall(r"[\w.-]+\.txt", path.read_text()):
            assert (REPO / ref).is_file(), f"{path.name} refers to {ref}, which does not exist"


def test_in_colab():
    assert colab.in_colab(COLAB) and not colab.in_colab({})
    assert colab.in_colab() == ("google.colab" in sys.modules)


def test_no_plan_outside_colab(fake_repo):
    assert colab.install_plan({"HGB_REPO_DIR": str(fake_repo)}, modules={}) == []
    assert colab.setup_colab({}, modules={}, run=pytest.fail) == []


def test_plan_keeps_colab_torch_and_installed_packages(fake_repo):
    installed = {"numpy", "tqdm"}.__contains__
    plan = colab.install_plan({"HGB_REPO_DIR": str(fake_repo)}, COLAB, installed=installed, python="py")
    assert plan == [["py", "-m", "pip", "install", "-q", "scikit-learn==1.9.1"],
                    ["py", "-m", "pip", "install", "-q", "--no-deps", "-e", str(fake_repo)]]


def test_plan_clones_a_missing_repo(tmp_path):
    target = tmp_path / "clone"
    plan = colab.install_plan({"HGB_REPO_DIR": str(target), "HGB_REPO_URL": "https://example.org/r"},
                              COLAB, installed=lambda name: True, python="py")
    assert plan[0] == ["git", "clone", "-q", "https://example.org/r", str(target)]
    assert plan[-1] == ["py", "-m", "pip", "install", "-q", "--no-deps", "-e", str(target)]
    assert len(plan) == 2          # everything else is "installed"


def test_repository_url_lives_in_config_yml(tmp_path):
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]
    assert (colab.REPO_URL, colab.REPO_BRANCH) == (cfg["url"], cfg["branch"])
    assert f'"{cfg["url"]}"' in colab.FIRST_CELL and f'"{cfg["branch"]}"' in colab.FIRST_CELL
    other = tmp_path / "_config.yml"
    other.write_text("title: x\nrepository:\n  url: https://github.com/me/fork  # a fork\n  branch: dev\n"
                     "html:\n  use_repository_button: true\n")
    assert colab.repository(other) == ("https://github.com/me/fork", "dev")
    other.write_text("title: x\n")
    with pytest.raises(ValueError, match="repository"):
        colab.repository(other)
    with pytest.raises(ValueError, match="ref"):
        colab.first_cell(ref='main"; rm -rf /')
    for path in (REPO / "book").glob("*.ipynb"):      # every chapter carries the config's URL
        assert cfg["url"] in path.read_text()
def test_real_requirements_never_install_torch_or_build_tools():
    specs = colab.colab_requirements((REPO / "requirements.txt").read_text(), installed=lambda n: False)
    names = {colab._canonical(s.split("=")[0].split("[")[0]) for s in specs}
    assert "torch" not in names and not names & colab.SKIP
    assert {"numpy", "matplotlib", "seaborn", "scikit-learn", "scikit-image", "tqdm"} <= names


def test_first_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})


def _fake_colab(monkeypatch, tmp_path, mounts=None):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=lambda where: mounts.append(where) if mounts is not None else None)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for var in ("HGB_REPO_URL", "HGB_ARTIFACTS", "HGB_DATA", "HGB_DRIVE_DIR"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_first_cell_bootstraps_on_fake_colab(tmp_path, fake_repo, monkeypatch, capsys):
    calls = _fake_colab(monkeypatch, tmp_path)
    monkeypatch.setenv("HGB_REPO_DIR", str(fake_repo))
    monkeypatch.chdir(tmp_path)                      # the clone is already here: no git clone
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})
    assert not any(c[0] == "git" for c in calls)
    assert calls[-1][-2:] == ["-e", str(fake_repo)]
    assert str(fake_repo) in sys.path
    out = capsys.readouterr().out
    assert "profile='auto'" in out and "KEEP_ON_DRIVE" in out       # the one-line hint, Drive off

    calls.clear()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")        # a fresh Colab session: clone, then check out
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})
    repo = str(tmp_path / "elsewhere" / colab.REPO_DIRNAME)
    assert calls[0] == ["git", "clone", "-q", colab.REPO_URL, repo]
    assert calls[1] == ["git", "-C", repo, "checkout", "-q", colab.REPO_BRANCH]


def test_first_cell_honours_the_url_override_and_the_built_commit(tmp_path, fake_repo, monkeypatch):
    calls = _fake_colab(monkeypatch, tmp_path)
    monkeypatch.setenv("HGB_REPO_DIR", str(fake_repo))
    monkeypatch.setenv("HGB_REPO_URL", "https://github.com/me/fork")
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")
    sha = "0123456789abcdef0123456789abcdef01234567"
    exec(compile(colab.first_cell(ref=sha), "<first cell>", "exec"), {})
    repo = str(tmp_path / "fresh" / colab.REPO_DIRNAME)
    assert calls[:2] == [["git", "clone", "-q", "https://github.com/me/fork", repo],
                         ["git", "-C", repo, "checkout", "-q", sha]]


def test_keep_on_drive_mounts_drive_and_points_the_caches_there(tmp_path, fake_repo, monkeypatch, capsys):
    mounts = []
    _fake_colab(monkeypatch, tmp_path, mounts)
    monkeypatch.setenv("HGB_REPO_DIR", str(fake_repo))
    monkeypatch.setenv("HGB_DRIVE_DIR", str(tmp_path / "MyDrive" / "hgb"))
    monkeypatch.chdir(tmp_path)
    cell = colab.FIRST_CELL.replace("KEEP_ON_DRIVE = False", "KEEP_ON_DRIVE = True")
    exec(compile(cell, "<first cell>", "exec"), {})
    assert mounts == [colab.DRIVE_MOUNT]
    assert os.environ["HGB_ARTIFACTS"] == str(tmp_path / "MyDrive" / "hgb" / "artifacts")
    assert os.environ["HGB_DATA"] == str(tmp_path / "MyDrive" / "hgb" / "data")
    assert "Google Drive" in capsys.readouterr().out
    from utils import data, paths
    assert paths.artifacts_dir() == tmp_path / "MyDrive" / "hgb" / "artifacts"
    assert data.cache_dir() == tmp_path / "MyDrive" / "hgb" / "data"


def test_first_cell_is_short_and_self_contained():
    assert len(colab.FIRST_CELL.splitlines()) <= 12
    assert 'KEEP_ON_DRIVE = False  # @param {type:"boolean"}' in colab.FIRST_CELL     # a Colab form checkbox
    head = colab.FIRST_CELL.split("from utils.colab")[0]
    assert "utils" not in head                               # nothing from utils before the clone


def test_sync_first_cell(tmp_path):
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "# T", "metadata": {}},
                                        {"cell_type": "code", "source": "old", "metadata": {"x": 1}, "id": "a",
                                         "outputs": [], "execution_count": None}],
                              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert colab.sync_first_cell(nb) and not colab.sync_first_cell(nb)
    cell = json.loads(nb.read_text())["cells"][1]
    assert "".join(cell["source"]) == colab.FIRST_CELL and cell["id"] == "a" and cell["metadata"] == {"x": 1}
