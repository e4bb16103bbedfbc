"""Shared pieces of the book pipeline: the table of contents, and the two generated pages.

* :func:`toc_files` reads ``_toc.yml`` and returns every page in reading order, failing on an
  entry whose file does not exist.
* :func:`results_page` renders the results ledger (``<results>/<stem>.json``, written by
  ``utils.book.record_claims``) as one table; :func:`exec_stats_page` renders
  ``<results>/exec_stats.json`` (written by ``scripts/run_notebooks.py``).

The committed ``book/results.md`` and ``book/exec_stats.md`` are placeholders; the generated pages
are written to ``_build/generated/`` and replace them in the staging copy the HTML is built from,
so stale numbers are never committed.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GENERATED = ("book/results", "book/exec_stats")       # toc entries whose content is generated
SUFFIXES = (".ipynb", ".md")


# --------------------------------------------------------------------------- table of contents

def toc_entries(root: Path = REPO) -> list[str]:
    """Every ``root`` / ``file`` entry of ``root/_toc.yml``, in reading order (no extension)."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{root}/_toc.yml must be a jb-book table of contents with a 'root' entry")
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))

    walk(toc)
    return [re.sub(r"\.(ipynb|md)$", "", e) for e in out]


def toc_files(root: Path = REPO) -> list[Path]:
    """The file of every toc entry, in reading order. Raises FileNotFoundError naming each
    entry that has no ``.ipynb`` or ``.md`` file."""
    root = Path(root)
    files, missing = [], []
    for entry in toc_entries(root):
        found = [root / (entry + s) for s in SUFFIXES if (root / (entry + s)).is_file()]
        if not found:
            missing.append(entry)
        elif len(found) > 1:
            raise ValueError(f"_toc.yml entry {entry!r} matches both {found[0].name} and {found[1].name}")
        else:
            files.append(found[0])
    if missing:
        raise FileNotFoundError("_toc.yml lists pages that do not exist: "
                                + ", ".join(f"{m}(.ipynb|.md)" for m in missing))
    return files


def toc_notebooks(root: Path = REPO) -> list[Path]:
    """The notebooks of the toc, in reading order."""
    return [f for f in toc_files(root) if f.suffix == ".ipynb"]


def unlisted_notebooks(root: Path = REPO) -> list[Path]:
    """Notebooks under ``book/`` that the toc does not list (a chapter that landed but was not
    added to ``_toc.yml``)."""
    listed = {f.resolve() for f in toc_notebooks(root)}
    return sorted(p for p in (Path(root) / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and p.resolve() not in listed)


def notebook_title(path: Path) -> str:
    """The first ``# Title`` of a notebook's markdown cells (the file stem if none)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            m = re.search(r"^#\s+(.+?)\s*$", src, flags=re.M)
            if m:
                return m.group(1)
    return Path(path).stem


# --------------------------------------------------------------------------- generated pages

def _cell(text) -> str:
    """Make ``text`` safe inside one cell of a markdown table."""
    return str(text).replace("\\|", "|").replace("|", "\\|").replace("\n", " ").strip()


def _chapter_ref(stem: str) -> str:
    m = re.match(r"(\d+)_", stem)
    return f"{{doc}}`Ch. {int(m.group(1))} <{stem}>`" if m else f"{{doc}}`{stem}`"


def load_ledger(results_dir: Path, stem: str) -> list[dict] | None:
    """The claims ``record_claims`` wrote for ``stem`` (None if there is no ledger)."""
    path = Path(results_dir) / f"{stem}.json"
    if not path.is_file():
        return None
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} is not a results ledger (a JSON list of claim objects)")
    return rows


def claim_status(row: dict) -> str:
    """The status ``utils.claims.Claim`` wrote into the ledger row."""
    status = row.get("status")
    if status not in STATUS_CELL:
        raise ValueError(f"ledger row {row.get('id', '?')} has no valid status ({status!r}); "
                         f"expected one of {sorted(STATUS_CELL)}")
    return status


STATUS_CELL = {"pass": "{bdg-success}`pass`", "pass (marginal)": "{bdg-warning}`pass (marginal)`",
               "FAIL": "{bdg-danger}`FAIL`", "not reproduced": "{bdg-secondary}`not reproduced`"}


def results_page(stems: list[str], results_dir: Path) -> str:
    """The results page: a summary line, then one table row per claim of every chapter in
    ``stems`` (toc order). Chapters without a ledger are listed as such."""
    rows, missing, profiles = [], [], []
    for stem in stems:
        ledger = load_ledger(results_dir, stem)
        if ledger is None:
            missing.append(stem)
            continue
        for r in ledger:
            rows.append((stem, r))
            profiles.append(r.get("profile", "?"))
    counts = {k: sum(claim_status(r) == k for _, r in rows) for k in STATUS_CELL}
    prof = sorted(set(profiles))
    prof_text = (f"profile `{prof[0]}`" if len(prof) == 1 else
                 "profiles " + ", ".join(f"`{p}`" for p in prof) if prof else "no profile")

    out = ["# Results", ""]
    headline = f"{counts['pass']} / {len(rows)} claims reproduced at {prof_text}"
    kind = "tip" if rows and not counts["FAIL"] and not missing else "warning"
    detail = [f"{{bdg-success}}`{counts['pass']} pass`",
              f"{{bdg-secondary}}`{counts['not reproduced']} not reproduced`",
              f"{{bdg-danger}}`{counts['FAIL']} failed`"]
    if missing:
        detail.append(f"{{bdg-warning}}`{len(missing)} chapters without results`")
    out += [f":::{{admonition}} {headline}", f":class: {kind}", " ".join(detail), ":::", ""]
    out += ["Every chapter ends with a claims cell that compares our number with the paper's and "
            "writes the result here. Outside `smoke` a claim that fails stops the build. Where the "
            "profile records, with its reason, that a claim is not expected to hold at its scale, "
            "the claim is still measured: it is *not reproduced* if it fails (the reason is in the "
            "*ours* column and in its chapter) and *pass* if it holds anyway. No status depends on "
            "the profile's name.", ""]
    if rows:
        out += ["| chapter | claim | paper | ours | result |", "|---|---|---|---|---|"]
        out += [f"| {_chapter_ref(stem)} | {_cell(r.get('claim', ''))} | {_cell(r.get('paper', ''))} | "
                f"{_cell(r.get('ours', ''))} | {STATUS_CELL[claim_status(r)]} |" for stem, r in rows]
        out.append("")
    if missing:
        out += ["Chapters without results (not run, or they failed before their claims cell): "
                + ", ".join(_chapter_ref(s) for s in missing) + ".", ""]
    if not stems:
        out += ["No chapter is in the table of contents yet.", ""]
    return "\n".join(out)


def exec_stats_page(stats: dict, stems: list[str], prepare: dict | None = None) -> str:
    """The execution-statistics page from ``exec_stats.json`` for the chapters in ``stems``, and the
    up-front training stage from ``prepare_stats.json`` (``scripts/prepare_models.py``) if given."""
    runs = stats.get("notebooks", {})
    host = stats.get("host", {})
    out = ["# Execution statistics", ""]
    when = stats.get("updated", "")
    out += [f"Every chapter was executed with papermill before this book was built"
            + (f" (last run {when}, commit `{stats.get('commit') or 'unknown'}`)" if when else "") + ". "
            f"Host: {host.get('cpus', '?')} CPU cores, Python {host.get('python', '?')}, "
            f"torch {host.get('torch', '?')}, {host.get('platform', '?')}.", ""]
    out += ["| chapter | profile | status | run time (s) |", "|---|---|---|---:|"]
    total = 0.0
    for stem in stems:
        run = runs.get(stem)
        if run is None:
            out.append(f"| {_chapter_ref(stem)} | | not run | |")
            continue
        status = run.get("status", "?")
        err = run.get("error")
        if err:
            status += f" (cell {err.get('cell_index', '?')}: {err.get('ename', '')})"
        seconds = float(run.get("seconds", 0.0))
        total += seconds
        out.append(f"| {_chapter_ref(stem)} | `{run.get('profile', '?')}` | {_cell(status)} | {seconds:.1f} |")
    out += [f"| **total** | | | **{total:.1f}** |", ""]
    if prepare:
        out += [f"Before the chapters ran, `scripts/prepare_models.py` made sure every model they load was "
                f"trained (profile `{prepare.get('profile', '?')}`): {prepare.get('trained', '?')} of "
                f"{prepare.get('runs', '?')} runs trained, {prepare.get('workers', '?')} at a time, in "
                f"{float(prepare.get('seconds', 0.0)):.1f} s (the other runs came from the model cache). "
                f"With it, the whole execution took {total + float(prepare.get('seconds', 0.0)):.1f} s.", ""]
    return "\n".join(out)


def write_pages(out_dir: Path, results_dir: Path, root: Path = REPO) -> list[Path]:
    """Render both generated pages into ``out_dir`` (``results.md``, ``exec_stats.md``)."""
    stems = [nb.stem for nb in toc_notebooks(root)]
    stats_path = Path(results_dir) / "exec_stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
    prep_path = Path(results_dir) / "prepare_stats.json"
    prepare = json.loads(prep_path.read_text(encoding="utf-8")) if prep_path.is_file() else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = {"results.md": results_page(stems, results_dir),
             "exec_stats.md": exec_stats_page(stats, stems, prepare)}
    for name, text in pages.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / n for n in pages]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
