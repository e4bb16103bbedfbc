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
Drive and points the model cache (``HGB_ARTIFACTS``), the data cache (``HGB_DATA``) and the claims
ledger (``HGB_RESULTS_DIR``) there, so a new session resumes an interrupted training from its last
checkpoint, a later chapter loads the models an earlier one trained, and each chapter's results
outlive the session. Drive uploads what is written in the background; the only public way to make
sure everything has reached it is ``google.colab.drive.flush_and_unmount()``, so the chapter's last
call, ``utils.book.record_claims``, ends with :func:`flush_drive` (which then forgets the Drive
folders: cells run after it use the session's disk until the first cell is run again). Off by
default: then everything lives in the session's disk and vanishes when Colab recycles the runtime.

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
DRIVE_DIR = DRIVE_MOUNT + "/MyDrive/hidden-gaussian-book"      # models, data, results: KEEP_ON_DRIVE


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


# REPO_URL, REPO_BRANCH and FIRST_CELL are module attributes computed on first use (see __getattr__
# below), so that `import utils.colab` also works where _config.yml is absent (a non-editable install).


def _repository_default() -> tuple[str, str]:
    return repository()


def __getattr__(name: str):
    if name == "REPO_URL":
        return _repository_default()[0]
    if name == "REPO_BRANCH":
        return _repository_default()[1]
    if name == "FIRST_CELL":
        return first_cell()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def first_cell(ref: str | None = None, url: str | None = None) -> str:
    """The Colab bootstrap cell that checks out ``ref`` (a branch or a commit; default: the branch of
    ``_config.yml``) of ``url`` (default: the repository of ``_config.yml``)."""
    if ref is None or url is None:
        default_url, default_branch = _repository_default()
        ref = default_branch if ref is None else ref
        url = default_url if url is None else url
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


# FIRST_CELL (= first_cell()): paste exactly this as the first code cell of every chapter
# (tests/test_pipeline.py checks it).

# Never installed on Colab: torch (keep Colab's CUDA build), the kernel's own packages, and tools
# only the book build and the test suite use -- myst-nb included: it would pull Sphinx and
# jupyter-cache into the kernel only for glue, which on Colab prints its values instead
# (utils.book.glue). Any sphinx* / jupyter-book* / myst* distribution is left out as well.
SKIP = frozenset({"torch", "jupyter-book", "myst-nb", "myst-parser", "jupyter-cache", "sphinx",
                  "sphinx-mathjax-offline", "papermill", "nbformat", "ipykernel", "ipython", "jupyter-client",
                  "pytest"})
SKIP_PREFIXES = ("sphinx", "jupyter-book", "myst")


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
        if name in SKIP or name.startswith(SKIP_PREFIXES) or installed(name):
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
        plan.append(["git", "clone", "-q", env.get("HGB_REPO_URL") or _repository_default()[0], str(repo)])
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


# The folders KEEP_ON_DRIVE puts on Drive: environment variable -> sub-folder of the Drive folder.
DRIVE_VARS = (("HGB_ARTIFACTS", "artifacts"), ("HGB_DATA", "data"), ("HGB_RESULTS_DIR", "results"))


def use_drive(env: dict | None = None, mount=None) -> Path:
    """Mount Google Drive (``mount(mountpoint)``; default: ``google.colab.drive.mount``) and point
    the model cache (``HGB_ARTIFACTS``), the data cache (``HGB_DATA``) and the claims ledger
    (``HGB_RESULTS_DIR``) into ``$HGB_DRIVE_DIR`` (default :data:`DRIVE_DIR`), unless they are set
    already. Records the mount point in ``HGB_DRIVE_MOUNT`` and the variables it set in
    ``HGB_DRIVE_SET`` (for :func:`flush_drive`). Returns the folder."""
    env = os.environ if env is None else env
    (mount or _mount_drive)(DRIVE_MOUNT)
    root = Path(env.get("HGB_DRIVE_DIR", DRIVE_DIR))
    added = [var for var, _ in DRIVE_VARS if var not in env]
    for var, sub in DRIVE_VARS:
        env.setdefault(var, str(root / sub))
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    env["HGB_DRIVE_MOUNT"] = DRIVE_MOUNT
    env["HGB_DRIVE_SET"] = ",".join(sorted(set(added) | set(filter(None, env.get("HGB_DRIVE_SET", "").split(",")))))
    return root


def _flush_and_unmount() -> None:
    from google.colab import drive          # only exists on Colab
    drive.flush_and_unmount()


def flush_drive(env: dict | None = None, modules=None, flush=None) -> bool:
    """On Colab with Google Drive mounted by :func:`use_drive` (``HGB_DRIVE_MOUNT`` set): write
    everything to Drive with ``flush()`` (default: ``google.colab.drive.flush_and_unmount()``, the
    only public flush, which also unmounts), then unset the variables :func:`use_drive` pointed at
    Drive, so that cells run afterwards write to the session's disk instead of the empty mount point
    (which would keep Drive from mounting there again). Prints what happened. Returns whether it
    flushed; elsewhere (not Colab, Drive not in use) it does nothing.

    ``utils.book.record_claims`` calls it at the end of every chapter."""
    env = os.environ if env is None else env
    mountpoint = env.get("HGB_DRIVE_MOUNT")
    if not mountpoint or not in_colab(modules):
        return False
    folders = {var: env.get(var) for var, _ in DRIVE_VARS if env.get(var)}
    (flush or _flush_and_unmount)()
    for var in filter(None, env.pop("HGB_DRIVE_SET", "").split(",")):
        env.pop(var, None)
    env.pop("HGB_DRIVE_MOUNT", None)
    saved = ", ".join(f"{var[4:].lower().replace('_dir', '')} in {path}" for var, path in folders.items())
    print(f"Google Drive flushed and unmounted: this chapter's files are saved there ({saved}). Cells run "
          f"after this one use the session's disk; run the first cell again to keep working on Drive.",
          flush=True)
    return True


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
        print(f"models, data and the claims ledger are kept on Google Drive in {root}: a new session resumes "
              f"an interrupted training from its last checkpoint, and later chapters load the models earlier "
              f"ones trained (same profile and seed). The chapter's last cell flushes Drive.")
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
    text = first_cell()
    lines = text.splitlines(keepends=True)
    if cell.get("source") in (lines, text):
        return False
    cell["source"] = lines
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


if __name__ == "__main__":                     # python -m utils.colab sync book/*.ipynb
    if len(sys.argv) < 3 or sys.argv[1] != "sync":
        raise SystemExit("usage: python -m utils.colab sync NOTEBOOK.ipynb ...")
    for arg in sys.argv[2:]:
        print(("updated " if sync_first_cell(arg) else "unchanged ") + arg)
