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


# What a Colab kernel must not get: the book-building stack (glue prints its values there instead).
BUILD_STACK = {"myst-nb", "myst-parser", "sphinx", "jupyter-cache", "jupyter-book", "papermill"}


def _requires(name: str) -> set[str]:
    """Canonical names of the unconditional requirements of the installed distribution ``name``."""
    from importlib import metadata
    import re
    out = set()
    for req in metadata.requires(name) or []:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue                                         # an optional extra: not installed by default
        out.add(colab._canonical(re.split(r"[\s<>=!~\[;(@]", req, maxsplit=1)[0]))
    return out


def test_colab_install_pulls_no_sphinx_stack():
    """Neither the packages the Colab install names nor anything they depend on (followed through
    the installed distributions' metadata) is myst-nb, Sphinx, jupyter-cache or jupyter-book."""
    from importlib import metadata
    specs = colab.colab_requirements((REPO / "requirements.txt").read_text(), installed=lambda n: False)
    names = {colab._canonical(s.split("=")[0].split("[")[0].strip()) for s in specs}
    assert not names & BUILD_STACK and not any(n.startswith(colab.SKIP_PREFIXES) for n in names), names
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += sorted(_requires(name) - seen)
        except metadata.PackageNotFoundError:
            continue
    assert not seen & BUILD_STACK and not any(n.startswith("sphinx") for n in seen), sorted(seen & BUILD_STACK)
    assert "myst-nb" in {colab._canonical(n) for n in colab.SKIP}


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


# What use_drive adds to the environment (and a test must take away again).
DRIVE_STATE = ("HGB_RESULTS_DIR", "HGB_DRIVE_MOUNT", "HGB_DRIVE_SET")


def _unset(monkeypatch, *names):
    """Unset ``names`` for this test and restore them afterwards -- also those the code under test
    sets (monkeypatch.delenv of an absent variable would not undo a later assignment)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _fake_colab(monkeypatch, tmp_path, mounts=None):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=lambda where: mounts.append(where) if mounts is not None else None)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    _unset(monkeypatch, "HGB_REPO_URL", "HGB_ARTIFACTS", "HGB_DATA", "HGB_DRIVE_DIR", *DRIVE_STATE)
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


# --------------------------------------------------------------------------- glue without myst_nb

def test_glue_prints_its_value_where_myst_nb_is_missing(monkeypatch, capsys):
    import numpy as np
    import torch
    from utils import book
    monkeypatch.setitem(sys.modules, "myst_nb", None)            # `from myst_nb import glue` fails
    assert book.glue("gl_small", np.float64(0.1234567891)) is None
    book.glue("n_train", 16384)
    book.glue("steps", torch.tensor(6000))
    book.glue("ladder", "64, 256, 1,024")
    book.glue("flag", True)
    assert capsys.readouterr().out.splitlines() == ["gl_small = 0.123457", "n_train = 16,384", "steps = 6,000",
                                                    "ladder = 64, 256, 1,024", "flag = True"]
    book.key_figure(object())                                    # no myst_nb: nothing to do, nothing printed
    assert capsys.readouterr().out == ""


def test_glue_stores_silently_where_myst_nb_is_there(monkeypatch, capsys):
    from utils import book
    stored = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: stored.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    book.glue("x", 0.5)
    assert stored == [("x", 0.5, False)] and capsys.readouterr().out == ""


def test_a_chapter_kernel_runs_without_the_sphinx_stack(tmp_path):
    """As on Colab: with myst_nb, sphinx, jupyter_cache and jupyter_book unimportable, utils and every
    chapter module import, glue prints, and none of them is loaded."""
    code = """
import sys, importlib.abc
BLOCKED = ("myst_nb", "myst_parser", "sphinx", "jupyter_cache", "jupyter_book", "papermill")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, Block())
import utils, utils.book, utils.colab
from utils import chapters
for stem in chapters.CHAPTERS:
    chapters.module(stem)
utils.book.glue("gl_value", 0.25)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gl_value = 0.25" in out.stdout


# --------------------------------------------------------------------------- the ledger on Drive

def _colab_with_drive(monkeypatch, tmp_path, fake_repo):
    """A fake Colab whose ``drive`` records mount / flush_and_unmount; returns (events, drive folder)."""
    events = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: None)
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=lambda where: events.append(("mount", where)),
                                         flush_and_unmount=lambda: events.append(("flush",)))
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    _unset(monkeypatch, "HGB_REPO_URL", "HGB_ARTIFACTS", "HGB_DATA", "HGB_STRICT_CLAIMS", *DRIVE_STATE)
    drive_dir = tmp_path / "MyDrive" / "hgb"
    monkeypatch.setenv("HGB_DRIVE_DIR", str(drive_dir))
    monkeypatch.setenv("HGB_REPO_DIR", str(fake_repo))
    monkeypatch.chdir(tmp_path)
    return events, drive_dir


def _claim(passed=True):
    from utils import book
    return [book.Claim(id="ch9.c", kind="check", claim="c holds", paper="< 1", ours="0.5", passed=passed)]


def test_keep_on_drive_writes_the_ledger_to_drive_and_flushes_at_the_chapter_end(tmp_path, fake_repo, monkeypatch,
                                                                                  capsys):
    from utils import book, paths
    events, drive_dir = _colab_with_drive(monkeypatch, tmp_path, fake_repo)
    colab.setup_colab(keep_on_drive=True)
    assert events == [("mount", colab.DRIVE_MOUNT)]
    assert paths.results_dir() == drive_dir / "results"
    assert os.environ["HGB_DRIVE_MOUNT"] == colab.DRIVE_MOUNT
    capsys.readouterr()

    book.record_claims("09_demo", _claim(), "colab")
    assert json.loads((drive_dir / "results" / "09_demo.json").read_text())[0]["id"] == "ch9.c"
    assert events[-1] == ("flush",) and len(events) == 2
    out = capsys.readouterr().out
    assert "Google Drive flushed" in out and str(drive_dir / "results") in out
    # Drive is unmounted now: the variables it set are gone, so later cells never write into the
    # empty mount point; nothing is flushed twice
    for var in ("HGB_ARTIFACTS", "HGB_DATA", "HGB_RESULTS_DIR", "HGB_DRIVE_MOUNT", "HGB_DRIVE_SET"):
        assert var not in os.environ, var
    assert not colab.flush_drive()
    # the first cell run again mounts Drive again and points the folders back there
    colab.setup_colab(keep_on_drive=True)
    assert events[-1] == ("mount", colab.DRIVE_MOUNT) and paths.results_dir() == drive_dir / "results"


def test_drive_is_flushed_before_a_failing_claim_stops_the_chapter(tmp_path, fake_repo, monkeypatch, capsys):
    from utils import book
    events, drive_dir = _colab_with_drive(monkeypatch, tmp_path, fake_repo)
    colab.setup_colab(keep_on_drive=True)
    book.record_claims("09_demo", _claim(False), "colab")          # interactive Colab: one message
    assert events[-1] == ("flush",) and "1 of 1 claims of 09_demo failed" in capsys.readouterr().out
    colab.setup_colab(keep_on_drive=True)
    monkeypatch.setenv("HGB_STRICT_CLAIMS", "1")                    # strict: raises, after the flush
    with pytest.raises(AssertionError, match="1 of 1 claims"):
        book.record_claims("09_demo", _claim(False), "colab")
    assert events[-1] == ("flush",) and (drive_dir / "results" / "09_demo.json").is_file()


def test_no_flush_without_drive_or_outside_colab(tmp_path, fake_repo, monkeypatch):
    from utils import book
    events, _ = _colab_with_drive(monkeypatch, tmp_path, fake_repo)
    monkeypatch.setenv("HGB_RESULTS_DIR", str(tmp_path / "results"))
    colab.setup_colab(keep_on_drive=False)                          # Colab, Drive off
    book.record_claims("09_demo", _claim(), "colab")
    assert events == []
    env = {"HGB_DRIVE_MOUNT": "/content/drive", "HGB_DRIVE_SET": "HGB_DATA", "HGB_DATA": "/x"}
    assert not colab.flush_drive(env, modules={}, flush=pytest.fail)   # not Colab: nothing happens
    assert env["HGB_DATA"] == "/x"


def test_use_drive_keeps_folders_the_user_set(tmp_path, monkeypatch):
    env = {"HGB_DRIVE_DIR": str(tmp_path / "d"), "HGB_ARTIFACTS": str(tmp_path / "mine")}
    colab.use_drive(env, mount=lambda where: None)
    assert env["HGB_ARTIFACTS"] == str(tmp_path / "mine") and env["HGB_DATA"] == str(tmp_path / "d" / "data")
    assert env["HGB_DRIVE_SET"] == "HGB_DATA,HGB_RESULTS_DIR"
    flushed = []
    assert colab.flush_drive(env, modules=COLAB, flush=lambda: flushed.append(1)) and flushed == [1]
    assert env == {"HGB_DRIVE_DIR": str(tmp_path / "d"), "HGB_ARTIFACTS": str(tmp_path / "mine")}


# --------------------------------------------------------------------------- docs that match the code

def _row(table_text: str, first_cell: str) -> str:
    return next(line for line in table_text.splitlines() if line.startswith(f"| {first_cell} |"))


def test_run_it_yourself_describes_the_colab_and_gpu_profiles_as_configured():
    from utils import profiles
    text = (REPO / "book" / "run_it_yourself.md").read_text()
    colab_row, gpu_row = _row(text, "`colab`"), _row(text, "`gpu`")
    base = profiles._BASE["colab"]
    assert base["dataset"] == "mnist" and "MNIST" in colab_row and "32×32" in colab_row
    for number in (min(base["train_sizes"]), max(base["train_sizes"]), base["model_channels"], base["train_steps"],
                   base["batch_size"], min(base["scales"])):
        assert f"{number:,d}" in colab_row, number
    assert profiles._BASE["gpu"]["dataset"] == "cifar10" and "CIFAR-10" in gpu_row and "MNIST" not in gpu_row
    assert f"{profiles._BASE['gpu']['model_channels']}-channel" in gpu_row
    times = text[text.index("| chapter | `smoke` | `cpu` | `colab` | `gpu` |"):]
    assert all("estimate" in line for line in times.splitlines()[2:7])       # the colab column: an estimate
    assert "make gpu-check" in text and "KEEP_ON_DRIVE" in text


def test_readme_keeps_two_commands_and_states_estimates_as_estimates():
    text = (REPO / "README.md").read_text()
    assert "sized to finish within one free T4 session" not in text
    blocks = text.split("```bash")[1:]
    commands = [line.split("#")[0].strip() for b in blocks for line in b.split("```")[0].splitlines()]
    assert [c for c in commands if c] == ["make book", "make test"]
    assert "TORCH_INDEX" in text and "CUDA build" in text and "LICENSE" in text and "CITATION.cff" in text
    makefile = (REPO / "Makefile").read_text()
    header = makefile[:makefile.index("PY ")]
    assert "CUDA build" in header and "--force-reinstall" in header and "CPU torch, pinned" not in header
    assert "\ngpu-check:" in makefile
