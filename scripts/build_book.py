#!/usr/bin/env python
"""Build the HTML book: execute the notebooks, stage the sources, run ``jupyter-book build``.

    python scripts/build_book.py                 # run every notebook at profile cpu, then build
    python scripts/build_book.py --no-run        # build from the executed copies already there

0. ``scripts/prepare_models.py`` trains every model the chapters need, one process per core (two
   small trainings side by side use two cores better than one on two threads); the notebooks then
   load them from the cache (``--no-prepare`` skips this: each notebook trains what it needs).
1. ``scripts/run_notebooks.py`` executes every toc notebook into ``_build/executed/`` and renders
   the results and execution-statistics pages into ``_build/generated/``.
2. The staging folder ``_build/src/`` gets ``_config.yml`` (its ``repository.branch`` pinned to the
   commit built, for the Colab button), ``_toc.yml`` and ``book/`` with every notebook replaced by
   its executed copy as readers see it (:func:`_stage_notebook`: no injected parameters cell, so a
   downloaded notebook keeps ``profile = "auto"``; the Colab cell checks out the commit built; setup
   folded; the toc numbers the chapters, so their hand-written section numbers are dropped; a result
   box after the title: key figure and paper claims from the chapter's ledger) and the two
   placeholder pages by the generated ones (rendered again from the ledgers).
3. ``jupyter-book build _build/src -W`` (warnings are errors) writes ``_build/html``.
4. Guards: every toc entry has its page; every chapter page shows a figure and its result box; every
   chapter has its ledger, key figure, claims label and a folded claims cell; ``book/paper_figures.yml``
   and the ledgers agree on which claim reproduces which figure of the paper. A guard that fails
   still leaves the HTML for inspection, and the build exits 1.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_pages  # noqa: E402
import prepare_models  # noqa: E402
import run_notebooks  # noqa: E402

REPO = book_pages.REPO
BUILD = REPO / "_build"
STAGE = BUILD / "src"
HTML = BUILD / "html"


def stage(root: Path = REPO, build: Path = BUILD, results_dir: Path | None = None) -> list[str]:
    """Fill ``<build>/src`` from ``root``, the executed notebooks and the generated pages (rendered again
    here from the ledgers in ``results_dir``, default ``utils.paths.results_dir()``). Returns the
    problems found: missing, stale or failed executed copies, and what a chapter lacks for its reader
    layout (ledger, key figure, claims label, folded claims cell, section numbers that disagree with
    the toc's), and disagreements between ``book/paper_figures.yml`` and the ledgers."""
    from utils import paths

    root, build = Path(root), Path(build)
    results = Path(results_dir) if results_dir is not None else paths.results_dir()
    staging = build / "src"
    problems = []
    ref = build_ref()
    files = book_pages.toc_files(root)
    numbers = book_pages.toc_numbers(root)
    stats_path = results / "exec_stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")).get("notebooks", {}) if stats_path.is_file() else {}
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    stage_config(root / "_config.yml", staging / "_config.yml", ref)
    shutil.copy2(root / "_toc.yml", staging / "_toc.yml")
    shutil.copytree(root / "book", staging / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.ipynb", "__pycache__"))
    if (root / "_static").is_dir():                         # the book's CSS (Jupyter Book includes it)
        shutil.copytree(root / "_static", staging / "_static")
    ledgers = {}
    for src in files:
        rel = src.relative_to(root)
        if src.suffix != ".ipynb":
            continue
        executed = build / "executed" / rel
        run = stats.get(src.stem, {})
        if not executed.is_file():
            problems.append(f"{rel}: no executed copy in {executed.parent} (run scripts/run_notebooks.py)")
            continue
        if executed.stat().st_mtime < src.stat().st_mtime:
            problems.append(f"{rel}: the executed copy is older than the notebook; run it again")
        if run.get("status") != "ok":
            problems.append(f"{rel}: its last run did not succeed ({run.get('status', 'no record')})")
        ledgers[src.stem] = book_pages.load_ledger(results, src.stem)
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        problems += _stage_notebook(executed, staging / rel, ref, number=numbers.get(str(rel.with_suffix(""))),
                                    ledger=ledgers[src.stem], name=str(rel))
    generated_dir = build / "generated"
    book_pages.write_pages(generated_dir, results, root)
    for entry in book_pages.GENERATED:
        generated = generated_dir / (Path(entry).name + ".md")
        if not generated.is_file():
            problems.append(f"{entry}: {generated} is missing (run scripts/run_notebooks.py)")
        else:
            shutil.copy2(generated, staging / (entry + ".md"))
    figures_path = root / book_pages.FIGURES_FILE
    if figures_path.is_file():
        figures = book_pages.load_figures(figures_path)
        problems += [f"{book_pages.FIGURES_FILE}: {p}" for p in book_pages.figure_problems(figures, complete=False)]
        problems += book_pages.coverage_problems(figures, ledgers)
    else:
        problems.append(f"{book_pages.FIGURES_FILE} is missing: the results page's coverage table is made from it")
    return problems


def stage_config(src: Path, dest: Path, ref: str | None) -> None:
    """Copy ``_config.yml``, pinning ``repository.branch`` to the commit ``ref`` built: the launch
    buttons (Colab) then open the notebook of that commit, as the downloaded notebook checks it out."""
    cfg = yaml.safe_load(Path(src).read_text(encoding="utf-8"))
    if ref:
        cfg.setdefault("repository", {})["branch"] = ref
    Path(dest).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")


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


# --------------------------------------------------------------------------- one chapter's page

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*$")
SECNUM = re.compile(r"^(\d+(?:\.\d+)*)\.?[ \t]+(?=\S)")      # "3. ", "3.2 ", "3.2. " at a heading's start
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


def _tag(cell: dict, tag: str, drop=()) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    tags[:] = [t for t in tags if t not in drop]
    if tag not in tags:
        tags.append(tag)


def _number_headings(cells: list, number: int | None, name: str) -> list[str]:
    """Drop the hand-written numbers of the chapter's headings (``# 3. Title``, ``## 3.2 The score``):
    the toc numbers the chapters, so Sphinx writes them (and numbers figures and equations per chapter,
    Fig. 3.4, (3.1)). Each written number must be the one Sphinx gives the heading, else a problem."""
    if number is None:
        return []
    problems, counts = [], []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        lines = book_pages._source(cell).splitlines(keepends=True)
        fence = None
        for j, line in enumerate(lines):
            f = FENCE.match(line)
            if f:
                tok = f.group(1)
                if fence is None:
                    fence = tok
                elif tok[0] == fence[0] and len(tok) >= len(fence) and line.strip() == tok:
                    fence = None
                continue
            m = HEADING.match(line) if fence is None else None
            if not m:
                continue
            level = len(m.group(1))
            counts = (counts + [0] * level)[:level]
            counts[level - 1] += 1
            expected = (number, *counts[1:]) if counts[0] == 1 else None
            s = SECNUM.match(m.group(2))
            if not s:
                continue
            written = tuple(int(x) for x in s.group(1).split("."))
            if written != expected:
                want = ".".join(map(str, expected)) if expected else "nothing (a second top-level heading)"
                problems.append(f"{name}: the heading {line.strip()!r} says {s.group(1)}, but the book numbers it "
                                f"{want} (_toc.yml order): fix the number or drop it (the build numbers sections)")
                continue
            lines[j] = f"{m.group(1)} {m.group(2)[s.end():]}" + ("\n" if line.endswith("\n") else "")
        cell["source"] = "".join(lines)
    return problems


def _stage_notebook(executed: Path, dest: Path, ref: str | None = None, *, number: int | None = None,
                    ledger: list | None = None, name: str | None = None) -> list[str]:
    """Copy an executed notebook into the staging folder as readers see it; return what it lacks.

    * papermill's injected parameters cell is removed, so the notebook a reader downloads (and runs on
      Colab) keeps ``profile = "auto"``; the parameters cell and the Colab bootstrap cell are folded
      (``hide-cell``), and the bootstrap cell checks out ``ref`` (the commit built) when given; the setup
      cell's environment printout is folded (``hide-output``);
    * the hand-written section numbers are dropped (see :func:`_number_headings`; ``number``: the
      chapter's number in the toc, None when the toc does not number it);
    * after the first markdown cell (title and two-line summary) comes the result box
      (:func:`book_pages.result_box`) made from the chapter's ``ledger`` rows.

    Problems: no ledger, no key figure, no ``(chN-claims)=`` label, a claims cell that is not folded, a
    section number that disagrees with the toc."""
    from utils.colab import FIRST_CELL, first_cell

    executed = Path(executed)
    name = name or executed.name
    nb = json.loads(executed.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if "injected-parameters" not in book_pages._tags(c)]
    nb["cells"] = cells
    problems = []
    code = [c for c in cells if c.get("cell_type") == "code"]
    for i, cell in enumerate(code):
        src = book_pages._source(cell)
        if src.strip() == FIRST_CELL.strip():
            if ref:
                cell["source"] = first_cell(ref=ref).splitlines(keepends=True)
            _tag(cell, "hide-cell", drop=("hide-input", "hide-output"))
        elif "parameters" in book_pages._tags(cell):
            _tag(cell, "hide-cell", drop=("hide-input", "hide-output"))
            setup = next((c for c in code[i + 1:] if "utils.book.setup(" in book_pages._source(c)), None)
            if setup is not None:
                _tag(setup, "hide-output")
    claims = book_pages.claims_cell(nb)
    if claims is None:
        problems.append(f"{name}: no claims cell (a code cell calling utils.book.record_claims)")
    elif not book_pages.is_folded(claims):
        problems.append(f"{name}: its claims cell is not folded: tag it hide-input")
    problems += _number_headings(cells, number, name)

    n = book_pages.ledger_number(ledger)
    for fallback in (book_pages.chapter_number(executed.stem), number):
        n = fallback if n is None else n
    label = book_pages.claims_label(n) if n is not None else None
    if label is None or label not in book_pages.claims_labels(nb):
        problems.append(f"{name}: no claims label: its claims section must start with a markdown cell whose first "
                        f"line is ({label or 'chN-claims'})=")
        label = None
    has_key, key_name = book_pages.key_figure(nb)
    if not has_key:
        problems.append(f"{name}: no key figure: call utils.book.key_figure(fig) in the cell that draws it")
    if ledger is None:
        problems.append(f"{name}: no results ledger (its claims cell did not run), so its result box is a placeholder")
    box = {"cell_type": "markdown", "metadata": {"tags": ["result-box"]},
           "source": book_pages.result_box(ledger, label=label, has_key_figure=has_key,
                                           key_figure_name=key_name).splitlines(keepends=True)}
    if nb.get("nbformat", 4) >= 4 and nb.get("nbformat_minor", 0) >= 5:
        box["id"] = "result-box"
    first_md = next((i for i, c in enumerate(cells) if c.get("cell_type") == "markdown"), -1)
    cells.insert(first_md + 1, box)
    Path(dest).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return problems


def build_html(staging: Path = STAGE, out: Path = REPO) -> int:
    """``jupyter-book build`` of ``staging`` into ``<out>/_build/html`` (warnings are errors)."""
    out = Path(out)
    for old in (out / "_build" / "html", out / "_build" / ".doctrees"):   # a full build: no stale page survives
        if old.exists():
            shutil.rmtree(old)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(staging), "--path-output", str(out),
           "--builder", "html", "-W", "--keep-going"]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=out).returncode


def check_built(root: Path = REPO, html: Path = HTML) -> list[str]:
    """Every toc entry has an HTML page; every chapter (notebook) page has a figure and opens with its
    result box."""
    problems = []
    for src in book_pages.toc_files(root):
        rel = src.relative_to(root).with_suffix(".html")
        page = Path(html) / rel
        if not page.is_file():
            problems.append(f"{rel}: page missing from {html}")
            continue
        text = page.read_text(encoding="utf-8")
        if src.suffix == ".ipynb" and "<img" not in text:
            problems.append(f"{rel}: chapter page has no figure (<img>)")
        if src.suffix == ".ipynb" and "result-box" not in text:
            problems.append(f"{rel}: chapter page has no result box")
    if not (Path(html) / "index.html").is_file():
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
        print(f"build_book: cannot build:\n  {e}", file=sys.stderr)
        return 1
    if build_html() != 0:
        print("build_book: jupyter-book build failed (warnings count as errors)", file=sys.stderr)
        return 1
    problems += check_built()
    if problems:
        print(f"build_book: the HTML is in {HTML} for inspection, but the book is not right:\n  "
              + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"build_book: HTML in {HTML} (open {HTML / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
