"""Running a chapter on Google Colab.

Before the repository is cloned, ``utils`` cannot be imported, so the first code cell of every
chapter is the self-contained snippet :data:`FIRST_CELL` (tests check that each chapter's first
code cell is exactly this string). On Colab it clones the repository next to the notebook, puts it
on ``sys.path`` and calls :func:`setup_colab`; anywhere else it does nothing.

:func:`install_plan` decides what :func:`setup_colab` runs:

1. ``git clone --depth 1`` the repository, if it is not there yet;
2. ``pip install`` the pinned requirements that Colab does not have, **except** torch (Colab's
   CUDA build is kept; the pinned CPU wheel would replace it) and the book-building and test tools
   (jupyter-book, papermill, pytest, ...), which a chapter does not need. A package Colab already
   ships (numpy, matplotlib, scikit-learn, ...) is kept at Colab's version: replacing it under a
   running kernel that has already imported it breaks that kernel;
3. ``pip install --no-deps -e <repo>``, so ``import utils`` also works in new kernels.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_URL = "https://github.com/hidden-gaussian/hidden-gaussian-book"
REPO_DIRNAME = "hidden-gaussian-book"

# Paste exactly this as the first code cell of every chapter (tests/test_pipeline.py checks it).
FIRST_CELL = f'''# On Colab: fetch the book's code and install what is missing (does nothing elsewhere).
import os, sys, subprocess
if "google.colab" in sys.modules:
    if not os.path.isdir("{REPO_DIRNAME}"):
        subprocess.run(["git", "clone", "--depth", "1", "{REPO_URL}"], check=True)
    sys.path.insert(0, os.path.abspath("{REPO_DIRNAME}"))
    from utils.colab import setup_colab
    setup_colab()'''

# Never installed on Colab: torch (keep Colab's CUDA build) and tools only the book build and the
# test suite use.
SKIP = frozenset({"torch", "jupyter-book", "myst-nb", "sphinx", "sphinx-mathjax-offline", "papermill", "nbformat",
                  "ipykernel", "pytest"})


def in_colab(modules=None) -> bool:
    """True inside a Google Colab kernel (``google.colab`` is imported there at start-up)."""
    return "google.colab" in (sys.modules if modules is None else modules)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def colab_requirements(text: str, installed=_is_installed) -> list[str]:
    """The requirement lines of ``text`` (a requirements.txt) to install on Colab: everything but
    :data:`SKIP` and the packages ``installed(name)`` says are already there."""
    specs = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = _canonical(re.split(r"[\s<>=!~\[;@]", line, maxsplit=1)[0])
        if name in SKIP or installed(name):
            continue
        specs.append(line)
    return specs


def _repo_dir(env) -> Path:
    """The clone: ``$HGB_REPO_DIR``, else the repository this package was imported from."""
    return Path(env.get("HGB_REPO_DIR") or Path(__file__).resolve().parent.parent)


def install_plan(env: dict | None = None, modules=None, *, installed=_is_installed,
                 python: str | None = None) -> list[list[str]]:
    """The commands :func:`setup_colab` runs, in order (an empty list outside Colab).

    ``env`` (default ``os.environ``) may override the clone's location with ``HGB_REPO_DIR`` and
    its URL with ``HGB_REPO_URL``; ``modules`` (default ``sys.modules``) decides whether this is
    Colab; ``installed(name) -> bool`` whether a distribution is present. The requirements are
    read from the clone's requirements.txt (or, before the clone exists, from the one shipped
    beside this package).
    """
    if not in_colab(modules):
        return []
    env = os.environ if env is None else env
    python = python or sys.executable
    here = Path(__file__).resolve().parent.parent
    repo = _repo_dir(env)
    plan = []
    if not (repo / "pyproject.toml").is_file():
        plan.append(["git", "clone", "--depth", "1", env.get("HGB_REPO_URL", REPO_URL), str(repo)])
    reqs = repo / "requirements.txt"
    if not reqs.is_file():
        reqs = here / "requirements.txt"
    specs = colab_requirements(reqs.read_text(encoding="utf-8"), installed) if reqs.is_file() else []
    if specs:
        plan.append([python, "-m", "pip", "install", "-q", *specs])
    plan.append([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)])
    return plan


def setup_colab(env: dict | None = None, modules=None, run=None) -> list[list[str]]:
    """Run :func:`install_plan` (printing each command; ``run`` defaults to ``subprocess.run``)
    and put the clone on ``sys.path``. Does nothing outside Colab. Returns the plan it ran.
    """
    run = run or subprocess.run
    plan = install_plan(env, modules)
    for cmd in plan:
        print("$", shlex.join(cmd), flush=True)
        run(cmd, check=True)
    if plan:
        env = os.environ if env is None else env
        repo = str(_repo_dir(env))
        if repo not in sys.path:
            sys.path.insert(0, repo)
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        print(f"ready: torch {torch.__version__}, "
              + (f"GPU {gpu}: profile='auto' runs the gpu profile." if gpu else
                 "no GPU (Runtime > Change runtime type > T4 GPU): profile='auto' runs the cpu profile."))
        if "HGB_ARTIFACTS" not in env:
            print("checkpoints go to the clone's artifacts/ and vanish with this session; to keep them, "
                  "mount Drive and set os.environ['HGB_ARTIFACTS'] = '/content/drive/MyDrive/hgb-artifacts'.")
    return plan
