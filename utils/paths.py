"""Where generated files go. Nothing here is committed (see .gitignore).

* ``artifacts_dir()``: model checkpoints and caches, ``$HGB_ARTIFACTS`` or ``<repo>/artifacts``.
* ``results_dir()``: the results ledger (one JSON per chapter), ``$HGB_RESULTS_DIR`` or
  ``<repo>/_build/results``.

``<repo>`` is the folder holding this package, which is the repository root for an editable
install (``pip install -e .``) and for a Colab clone.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def artifacts_dir() -> Path:
    path = Path(os.environ.get("HGB_ARTIFACTS", REPO_ROOT / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    path = Path(os.environ.get("HGB_RESULTS_DIR", REPO_ROOT / "_build" / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path
