#!/usr/bin/env python
"""Build the HTML book: execute the notebooks, stage the sources, run ``jupyter-book build``.

    python scripts/build_book.py                 # run every notebook at profile cpu, then build
    python scripts/build_book.py --no-run        # build from the executed copies already there

0. ``scripts/prepare_models.py`` trains every model the chapters need, one process per core (two
   small trainings side by side use two cores better than one on two threads); the notebooks then
   load them from the cache (``--no-prepare`` skips this: each notebook trains what it needs).
1. ``scripts/run_notebooks.py`` executes every toc notebook into ``_build/executed/`` and renders
   the results and execution-statistics pages into ``_build/generated/``.
2. The staging folder ``_build/src/`` gets ``_config.yml``, ``_toc.yml`` and ``book/`` with every
   notebook replaced by its executed copy (whose Colab cell checks out the commit built) and the
   two placeholder pages by the generated ones.
3. ``jupyter-book build _build/src -W`` (warnings are errors) writes ``_build/html``.
4. Guards: every toc entry has its page, and every chapter page shows at least one figure.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_pages  # noqa: E402
import prepare_models  # noqa: E402
import run_notebooks  # noqa: E402

REPO = book_pages.REPO
BUILD = REPO / "_build"
STAGE = BUILD / "src"
HTML = BUILD / "html"


def stage() -> list[str]:
    """Fill ``_build/src`` from the repo, the executed notebooks and the generated pages.
    Returns the problems found (missing, stale or failed executed copies, missing pages)."""
    problems = []
    ref = build_ref()
    files = book_pages.toc_files(REPO)
    from utils import paths
    stats_path = paths.results_dir() / "exec_stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")).get("notebooks", {}) if stats_path.is_file() else {}
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, STAGE / name)
    shutil.copytree(REPO / "book", STAGE / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.ipynb", "__pycache__"))
    for src in files:
        rel = src.relative_to(REPO)
        if src.suffix != ".ipynb":
            continue
        executed = BUILD / "executed" / rel
        run = stats.get(src.stem, {})
        if not executed.is_file():
            problems.append(f"{rel}: no executed copy in {executed.parent} (run scripts/run_notebooks.py)")
            continue
        if executed.stat().st_mtime < src.stat().st_mtime:
            problems.append(f"{rel}: the executed copy is older than the notebook; run it again")
        if run.get("status") != "ok":
            problems.append(f"{rel}: its last run did not succeed ({run.get('status', 'no record')})")
        (STAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        _stage_notebook(executed, STAGE / rel, ref)
    for entry in book_pages.GENERATED:
        generated = BUILD / "generated" / (Path(entry).name + ".md")
        if not generated.is_file():
            problems.append(f"{entry}: {generated} is missing (run scripts/run_notebooks.py)")
        else:
            shutil.copy2(generated, STAGE / (entry + ".md"))
    return problems


def build_ref() -> str | None:
    """The commit the book is built from (full hash), or None outside a git checkout. With local
    changes it is still HEAD's commit (a warning says the staged notebooks may differ from it)."""
    from utils.book import repo_commit

    commit = repo_commit(short=False)
    if commit and commit.endswith("+dirty"):
        commit = commit.removesuffix("+dirty")
        print(f"build_book: warning: local changes are not committed; the notebooks' Colab cell checks out "
              f"{commit[:12]}, which does not contain them", file=sys.stderr)
    return commit


def _stage_notebook(executed: Path, dest: Path, ref: str | None = None) -> None:
    """Copy an executed notebook, folding away the Colab bootstrap cell (it does nothing here) and,
    given ``ref`` (a commit), making that cell check out ``ref``: a notebook downloaded from the
    built book then runs the code it was built with."""
    from utils.colab import FIRST_CELL, first_cell

    nb = json.loads(executed.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "".join(cell.get("source", "")).strip() == FIRST_CELL.strip():
            if ref:
                cell["source"] = first_cell(ref=ref).splitlines(keepends=True)
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build_html() -> int:
    for old in (HTML, BUILD / ".doctrees"):           # a full build: no page of a removed entry survives
        if old.exists():
            shutil.rmtree(old)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(STAGE), "--path-output", str(REPO),
           "--builder", "html", "-W", "--keep-going"]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO).returncode


def check_built() -> list[str]:
    """Every toc entry has an HTML page; every chapter (notebook) page has a figure."""
    problems = []
    for src in book_pages.toc_files(REPO):
        rel = src.relative_to(REPO).with_suffix(".html")
        page = HTML / rel
        if not page.is_file():
            problems.append(f"{rel}: page missing from {HTML}")
        elif src.suffix == ".ipynb" and "<img" not in page.read_text(encoding="utf-8"):
            problems.append(f"{rel}: chapter page has no figure (<img>)")
    if not (HTML / "index.html").is_file():
        problems.append("index.html missing")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-run", action="store_true", help="do not execute the notebooks first")
    ap.add_argument("--profile", default="cpu", help="profile to execute the notebooks at (default cpu)")
    ap.add_argument("--no-prepare", action="store_true",
                    help="do not train the chapters' models up front (each notebook trains what it needs)")
    args, run_args = ap.parse_known_args(argv)

    if not args.no_run and not args.no_prepare:
        rc = prepare_models.main(["--profile", args.profile])
        if rc:
            print("build_book: training the models failed; the notebooks were not run", file=sys.stderr)
            return rc
    if not args.no_run:
        rc = run_notebooks.main(["--profile", args.profile, *run_args])
        if rc:
            print("build_book: notebook execution failed; the HTML was not built", file=sys.stderr)
            return rc
    try:
        problems = stage()
    except (FileNotFoundError, ValueError) as e:
        problems = [str(e)]
    if problems:
        print("build_book: cannot build:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if build_html() != 0:
        print("build_book: jupyter-book build failed (warnings count as errors)", file=sys.stderr)
        return 1
    problems = check_built()
    if problems:
        print("build_book: the built HTML is incomplete:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"build_book: HTML in {HTML} (open {HTML / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
