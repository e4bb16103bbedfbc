"""utils.colab: the Colab bootstrap cell and install plan, tested with a faked Colab."""
import subprocess
import sys
import types
from pathlib import Path

import pytest

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
    assert plan[0] == ["git", "clone", "--depth", "1", "https://example.org/r", str(target)]
    assert plan[-1] == ["py", "-m", "pip", "install", "-q", "--no-deps", "-e", str(target)]
    assert len(plan) == 2          # everything else is "installed"


def test_real_requirements_never_install_torch_or_build_tools():
    specs = colab.colab_requirements((REPO / "requirements.txt").read_text(), installed=lambda n: False)
    names = {colab._canonical(s.split("=")[0].split("[")[0]) for s in specs}
    assert "torch" not in names and not names & colab.SKIP
    assert {"numpy", "matplotlib", "seaborn", "scikit-learn", "scikit-image", "tqdm"} <= names


def test_first_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})


def test_first_cell_bootstraps_on_fake_colab(tmp_path, fake_repo, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.setitem(sys.modules, "google.colab", COLAB["google.colab"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HGB_REPO_DIR", str(fake_repo))
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "artifacts"))

    monkeypatch.chdir(tmp_path)                      # the clone is already here: no git clone
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})
    assert not any(c[0] == "git" for c in calls)
    assert calls[-1][-2:] == ["-e", str(fake_repo)]
    assert str(fake_repo) in sys.path
    assert "profile='auto'" in capsys.readouterr().out

    calls.clear()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")        # a fresh Colab session: clone first
    exec(compile(colab.FIRST_CELL, "<first cell>", "exec"), {})
    assert calls[0] == ["git", "clone", "--depth", "1", colab.REPO_URL]


def test_first_cell_is_short_and_self_contained():
    assert len(colab.FIRST_CELL.splitlines()) <= 10
    head = colab.FIRST_CELL.split("from utils.colab")[0]
    assert "utils" not in head                               # nothing from utils before the clone
