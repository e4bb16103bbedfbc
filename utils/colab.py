"""Running a chapter on Google Colab.

Before the repository is cloned, ``utils`` cannot be imported, so the first code cell of every
chapter is the self-contained snippet :data:`FIRST_CELL` (tests check that each chapter's first
code cell is exactly this string). On Colab it clones the repository next to the notebook, checks
out the version the notebook belongs to, puts it on ``sys.path`` and calls :func:`setup_colab`;
anywhere else it does nothing.

**One place for the repository.** Its URL and default branch are read from ``_config.yml``
(``repository: url, branch``), the same entry that makes Jupyter Book's "launch in Colab" button.
The first cell honours an override, ``os.environ["HGB_REPO_URL"]`` (a fork). A committed notebook
checks out the default branch; the copy of a notebook in the built book checks out the commit the
book was built from (``scripts/build_book.py`` stages it with :func:`first_cell` ``(ref=<commit>)``),
so its code and its text match.

**Persistence.** ``KEEP_ON_DRIVE = True`` in the first cell (a Colab form checkbox) mounts Google
Drive and points the model cache (``HGB_ARTIFACTS``) and the data cache (``HGB_DATA``) there, so a
new session resumes an interrupted training from its last checkpoint and a later chapter loads the
models an earlier one trained. Off by default: then everything lives in the session's disk and
vanishes when Colab recycles the runtime.

:func:`install_plan` decides what :func:`setup_colab` runs:

1. ``git clone`` the repository, if it is not there yet (the first cell normally did it);
2. ``pip install`` the pinned requirements that Colab does not have, **except** torch (Colab's
   CUDA build is kept; the pinned CPU wheel would replace it) and the book-building and test tools
   (jupyter-book, papermill, pytest, ...), which a chapter does not need. A package Colab already
   ships (numpy, matplotlib, scikit-learn, ...) is kept at Colab's version: replacing it under a
   running kernel that has already imported it breaks that kernel;
3. ``pip install --no-deps -e <repo>``, so ``import utils`` also works in new kernels.

``python -m utils.colab sync book/*.ipynb`` rewrites the first code cell of notebooks to
:data:`FIRST_CELL` (after a change of ``_config.yml``'s repository, e.g. in a fork).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_DIRNAME = "hidden-gaussian-book"
DRIVE_MOUNT = "/content/drive"
DRIVE_DIR = DRIVE_MOUNT + "/MyDrive/hidden-gaussian-book"      # models and data when KEEP_ON_DRIVE


def repository(config: Path = REPO_ROOT / "_config.yml") -> tuple[str, str]:
    """``(url, branch)`` of the ``repository:`` entry of Jupyter Book's ``_config.yml``.

    Read with a small parser (PyYAML is not needed to import this module on a fresh Colab)."""
    try:
        text = Path(config).read_text(encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"{config} is missing: it holds the repository's url and branch") from e
    block = re.search(r"^repository:\s*\n((?:[ \t]+.*\n?)+)", text, flags=re.M)
    fields = dict(re.findall(r"^[ \t]+(\w+):[ \t]*['\"]?([^'\"#\n]*?)['\"]?[ \t]*(?:#.*)?$", block.group(1), flags=re.M)) \
        if block else {}
    if not fields.get("url"):
        raise ValueError(f"{config} has no `repository: url:` entry (the book's GitHub repository)")
    return fields["url"], fields.get("branch") or "main"


REPO_URL, REPO_BRANCH = repository()


def first_cell(ref: str = REPO_BRANCH, url: str = REPO_URL) -> str:
    """The Colab bootstrap cell that checks out ``ref`` (a branch or a commit) of ``url``."""
    for name, value in (("ref", ref), ("url", url)):
        if not isinstance(value, str) or not re.fullmatch(r"[\w.:/@+~-]+", value):
            raise ValueError(f"{name} must be a git ref or URL without spaces or quotes, got {value!r}")
    return f'''# On Colab: fetch the book's code at this notebook's version and install what is missing (does nothing elsewhere).
# Tick KEEP_ON_DRIVE to keep models and data on Google Drive: a new session resumes, later chapters reuse them.
KEEP_ON_DRIVE = False  # @param {{type:"boolean"}}
import os, sys, subprocess
if "google.colab" in sys.modules:
    repo, url, ref = os.path.abspath("{REPO_DIRNAME}"), os.environ.get("HGB_REPO_URL", "{url}"), "{ref}"
    if not os.path.isdir(repo):
        subprocess.run(["git", "clone", "-q", url, repo], check=True)
        subprocess.run(["git", "-C", repo, "checkout", "-q", ref], check=True)
    sys.path.insert(0, repo)
    from utils.colab import setup_colab
    setup_colab(keep_on_drive=KEEP_ON_DRIVE)'''


# Paste exactly this as the first code cell of every chapter (tests/test_pipeline.py checks it).
FIRST_CELL = first_cell()

# Never installed on Colab: torch (keep Colab's CUDA build), the kernel's own packages, and tools
# only the book build and the test suite use. (myst-nb is installed: the chapters glue numbers into
# their prose with it.)
SKIP = frozenset({"torch", "jupyter-book", "sphinx", "sphinx-mathjax-offline", "papermill", "nbformat",
                  "ipykernel", "ipython", "jupyter-client", "pytest"})


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
    return Path(env.get("HGB_REPO_DIR") or REPO_ROOT)


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
    repo = _repo_dir(env)
    plan = []
    if not (repo / "pyproject.toml").is_file():
        plan.append(["git", "clone", "-q", env.get("HGB_REPO_URL", REPO_URL), str(repo)])
    reqs = repo / "requirements.txt"
    if not reqs.is_file():
        reqs = REPO_ROOT / "requirements.txt"
    specs = colab_requirements(reqs.read_text(encoding="utf-8"), installed) if reqs.is_file() else []
    if specs:
        plan.append([python, "-m", "pip", "install", "-q", *specs])
    plan.append([python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(repo)])
    return plan


def _mount_drive(mountpoint: str) -> None:
    from google.colab import drive          # only exists on Colab
    drive.mount(mountpoint)


def use_drive(env: dict | None = None, mount=None) -> Path:
    """Mount Google Drive (``mount(mountpoint)``; default: ``google.colab.drive.mount``) and point
    the model cache (``HGB_ARTIFACTS``) and the data cache (``HGB_DATA``) into ``$HGB_DRIVE_DIR``
    (default :data:`DRIVE_DIR`), unless they are set already. Returns the folder."""
    env = os.environ if env is None else env
    (mount or _mount_drive)(DRIVE_MOUNT)
    root = Path(env.get("HGB_DRIVE_DIR", DRIVE_DIR))
    for var, sub in (("HGB_ARTIFACTS", "artifacts"), ("HGB_DATA", "data")):
        env.setdefault(var, str(root / sub))
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    return root


def setup_colab(keep_on_drive: bool = False, env: dict | None = None, modules=None, run=None,
                mount=None) -> list[list[str]]:
    """Run :func:`install_plan` (printing each command; ``run`` defaults to ``subprocess.run``),
    put the clone on ``sys.path`` and, with ``keep_on_drive``, keep models and data on Google Drive
    (:func:`use_drive`). Does nothing outside Colab. Returns the plan it ran.
    """
    run = run or subprocess.run
    plan = install_plan(env, modules)
    for cmd in plan:
        print("$", shlex.join(cmd), flush=True)
        run(cmd, check=True)
    if not plan:
        return plan
    env = os.environ if env is None else env
    repo = str(_repo_dir(env))
    if repo not in sys.path:
        sys.path.insert(0, repo)
    if keep_on_drive:
        root = use_drive(env, mount)
        print(f"models and data are kept on Google Drive in {root}: a new session resumes an interrupted "
              f"training from its last checkpoint, and later chapters load the models earlier ones trained "
              f"(same profile and seed).")
    else:
        print("models and data live in this session only and vanish when Colab recycles it; tick "
              "KEEP_ON_DRIVE in the first cell to keep them on Google Drive.")
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"ready: torch {torch.__version__}, "
          + (f"GPU {gpu}: profile='auto' runs the colab profile (MNIST 32x32); each chapter prints its "
             f"training time, measured on this GPU, before it trains." if gpu else
             "no GPU (Runtime > Change runtime type > T4 GPU): profile='auto' runs the cpu profile."))
    return plan


def sync_first_cell(path) -> bool:
    """Make the first code cell of the notebook at ``path`` exactly :data:`FIRST_CELL` (keeping the
    cell's id and metadata). Returns whether the file changed."""
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = next((c for c in nb.get("cells", []) if c.get("cell_type") == "code"), None)
    if cell is None:
        raise ValueError(f"{path} has no code cell")
    lines = FIRST_CELL.splitlines(keepends=True)
    if cell.get("source") in (lines, FIRST_CELL):
        return False
    cell["source"] = lines
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


if __name__ == "__main__":                     # python -m utils.colab sync book/*.ipynb
    if len(sys.argv) < 3 or sys.argv[1] != "sync":
        raise SystemExit("usage: python -m utils.colab sync NOTEBOOK.ipynb ...")
    for arg in sys.argv[2:]:
        print(("updated " if sync_first_cell(arg) else "unchanged ") + arg)
