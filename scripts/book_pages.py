"""Shared pieces of the book pipeline: the table of contents, the chapters' reader layout, and the
generated pages.

* :func:`toc_files` reads ``_toc.yml`` and returns every page in reading order, failing on an
  entry whose file does not exist; :func:`toc_numbers` gives the chapter numbers Sphinx assigns.
* :func:`result_box` renders the box the build puts at the top of every chapter (its key figure and
  its paper claims, from the chapter's ledger); :func:`key_figure`, :func:`claims_labels` and
  :func:`claims_cell` read what a notebook provides for it.
* :func:`results_page` renders the results ledger (``<results>/<stem>.json``, written by
  ``utils.book.record_claims``): the scale, the paper claims reproduced per chapter and profile,
  every claim, and the coverage of the paper's 30 figures (``book/paper_figures.yml``, checked by
  :func:`figure_problems` and, against the ledgers, :func:`coverage_problems`);
  :func:`exec_stats_page` renders ``<results>/exec_stats.json`` (written by ``scripts/run_notebooks.py``).

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

from utils.claims import ID_PATTERN as CLAIM_ID, MARGINAL, PAPER, PAPER_FIGURES, is_reproduced

REPO = Path(__file__).resolve().parent.parent
GENERATED = ("book/results", "book/exec_stats")       # toc entries whose content is generated
SUFFIXES = (".ipynb", ".md")
FIGURES_FILE = Path("book") / "paper_figures.yml"     # the paper's 30 figures -> claim ids (coverage)
# Cell tags that fold (or hide) a cell's source on the page; a chapter's claims cell carries one.
FOLD_TAGS = ("hide-input", "remove-input", "hide-cell", "remove-cell")
KEY_FIGURE = "key_figure"                             # the glue name utils.book.key_figure uses
CLAIMS_LABEL = re.compile(r"^\((ch(\d+)-claims)\)=[ \t]*$", flags=re.M)
EQ_LABEL = re.compile(r"\$\$[ \t]*\(([A-Za-z][\w-]*)\)")   # dollarmath: $$ ... $$ (eq-name)


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


def toc_numbers(root: Path = REPO) -> dict[str, int]:
    """``{entry: number}`` for the top-level entries of the toc's numbered subtrees (a part, or the
    top-level ``chapters``, with ``numbered: true`` or a depth; ``defaults``/``options`` apply to all),
    counted 1, 2, ... across them as Sphinx numbers them (sphinx-multitoc-numbering continues the
    count from one numbered part to the next). Entries without extension."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text(encoding="utf-8"))
    default = (toc.get("defaults") or {}).get("numbered", (toc.get("options") or {}).get("numbered", False))
    subtrees = toc.get("parts") or ([dict(toc.get("options") or {}, chapters=toc["chapters"])]
                                    if toc.get("chapters") else [])
    numbers, n = {}, 0
    for part in subtrees:
        if not part.get("numbered", default):
            continue
        for item in part.get("chapters") or []:
            if isinstance(item, dict) and "file" in item:
                n += 1
                numbers[re.sub(r"\.(ipynb|md)$", "", item["file"])] = n
    return numbers


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


# --------------------------------------------------------------------------- what a chapter notebook provides

def chapter_number(stem: str) -> int | None:
    """The chapter number in a notebook stem (``"03_linearity"`` -> 3), None if it has none."""
    m = re.match(r"(\d+)_", stem)
    return int(m.group(1)) if m else None


def claims_label(number: int) -> str:
    """The MyST label of chapter ``number``'s claims section (``(ch3-claims)=`` in the notebook)."""
    return f"ch{int(number)}-claims"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


def _read_nb(nb) -> dict:
    return nb if isinstance(nb, dict) else json.loads(Path(nb).read_text(encoding="utf-8"))


def markdown_text(nb) -> str:
    """Every markdown cell of ``nb`` (a notebook dict or path), joined."""
    return "\n\n".join(_source(c) for c in _read_nb(nb).get("cells", []) if c.get("cell_type") == "markdown")


def claims_labels(nb) -> set[str]:
    """The ``(chN-claims)=`` labels a notebook defines in its markdown."""
    return {m.group(1) for m in CLAIMS_LABEL.finditer(markdown_text(nb))}


def equation_labels(nb) -> list[str]:
    """The labels of a notebook's numbered equations (dollarmath ``$$ ... $$ (label)``), in order."""
    return EQ_LABEL.findall(markdown_text(nb))


def key_figure(nb) -> tuple[bool, str | None]:
    """Whether the executed notebook glued a key figure (``utils.book.key_figure``), and the figure
    name (``mystnb.figure.name``) of the cell that drew it, if that cell has one."""
    for cell in _read_nb(nb).get("cells", []):
        for out in cell.get("outputs", []) or []:
            if (out.get("metadata") or {}).get("scrapbook", {}).get("name") == KEY_FIGURE:
                fig = (cell.get("metadata", {}).get("mystnb") or {}).get("figure") or {}
                return True, fig.get("name")
    return False, None


def claims_cell(nb) -> dict | None:
    """The chapter's claims cell: the last code cell that calls ``record_claims``."""
    cells = [c for c in _read_nb(nb).get("cells", []) if c.get("cell_type") == "code"
             and "record_claims(" in _source(c)]
    return cells[-1] if cells else None


def is_folded(cell: dict) -> bool:
    """Whether a cell's source is folded or hidden on the page (one of :data:`FOLD_TAGS`)."""
    return any(t in FOLD_TAGS for t in _tags(cell))


# --------------------------------------------------------------------------- the results ledger

STATUS_CELL = {"pass": "{bdg-success}`pass`", "pass (marginal)": "{bdg-warning}`pass (marginal)`",
               "FAIL": "{bdg-danger}`FAIL`", "not reproduced": "{bdg-muted}`not reproduced`"}


def _cell(text) -> str:
    """Make ``text`` safe inside one cell of a markdown table."""
    return str(text).replace("\\|", "|").replace("|", "\\|").replace("\n", " ").strip()


def _chapter_ref(stem: str, labels=frozenset(), number: int | None = None) -> str:
    """A link to chapter ``stem``: to its claims section when its label exists, else to its top."""
    n = chapter_number(stem) if number is None else number
    if n is not None and claims_label(n) in labels:
        return f"{{ref}}`Ch. {n} <{claims_label(n)}>`"
    return f"{{doc}}`Ch. {n} <{stem}>`" if n is not None else f"{{doc}}`{stem}`"


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


def reproduced(row: dict) -> bool:
    """``pass`` or ``pass (marginal)``."""
    return is_reproduced(claim_status(row))


def ledger_number(rows) -> int | None:
    """The chapter number of a ledger's claim ids (``ch3.x`` -> 3), None if it has no such id."""
    for r in rows or []:
        m = CLAIM_ID.match(str(r.get("id", "")))
        if m:
            return int(m.group(1))
    return None


def is_paper(row: dict) -> bool:
    return row.get("kind") == "paper"


def paper_ref(row: dict) -> str:
    """Where the source states a claim: ``paper Fig. 2``, ``paper Figs. 2, 3``, ``paper App. D`` or, for
    another paper, a citation and its place."""
    figs, where, source = row.get("figures") or [], str(row.get("where") or "").strip(), row.get("source") or PAPER
    if source != PAPER:
        return f"{{cite:t}}`{source}`" + (f", {where}" if where else "")
    if figs:
        return ("paper Fig. " if len(figs) == 1 else "paper Figs. ") + ", ".join(str(f) for f in figs)
    if where and not where.lower().startswith("paper"):
        return f"paper {where}"
    return where


def _profile_of(rows) -> str:
    """``cpu`` (or ``cpu at the smoke budget``; several profiles joined) of a chapter's ledger rows."""
    seen = []
    for r in rows:
        p = f"`{r.get('profile', '?')}`" + (f" at the {r['budget']} budget" if r.get("budget", "full") != "full" else "")
        if p not in seen:
            seen.append(p)
    return ", ".join(seen) or "`?`"


def _tally(rows) -> dict:
    """Counts of a list of ledger rows: total, reproduced (pass or marginal), and per status."""
    status = [claim_status(r) for r in rows]
    out = {s: status.count(s) for s in STATUS_CELL}
    out.update(total=len(rows), ok=out["pass"] + out["pass (marginal)"], marginal=out["pass (marginal)"])
    return out


def _tally_text(t: dict) -> str:
    """``3 of 4 hold (1 marginal), 1 not reproduced``: the counts of :func:`_tally` in words."""
    text = f"{t['ok']} of {t['total']}"
    extra = [f"{t['marginal']} marginal"] if t["marginal"] else []
    extra += [f"{t['not reproduced']} not reproduced"] if t["not reproduced"] else []
    extra += [f"{t['FAIL']} failed"] if t["FAIL"] else []
    return text + (f" ({', '.join(extra)})" if extra else "")


def _admonition_class(rows) -> str:
    """``error`` if any claim failed, ``warning`` if a paper claim is marginal or not reproduced, else ``tip``."""
    if any(claim_status(r) == "FAIL" for r in rows):
        return "error"
    return "warning" if any(claim_status(r) != "pass" for r in rows if is_paper(r)) else "tip"


# --------------------------------------------------------------------------- the result box of a chapter

def result_box(rows: list[dict] | None, *, label: str | None = None, has_key_figure: bool = False,
               key_figure_name: str | None = None) -> str:
    """The admonition the build puts after a chapter's title and summary: its key figure (glued as
    ``key_figure``), its paper claims as a table (claim, paper, ours, status) from its ledger ``rows``,
    the count of its checks and controls, and a link to its claims section ``label``. A placeholder
    says what is missing (no ledger, no key figure)."""
    if rows is None:
        return "\n".join([
            ":::{admonition} No results: this chapter wrote no claims ledger",
            ":class: error result-box",
            "It did not run to its claims cell (`utils.book.record_claims`), so its claims and their status "
            "are not known. The build's log names the cell that failed.",
            ":::"])
    paper = [r for r in rows if is_paper(r)]
    other = [r for r in rows if not is_paper(r)]
    at = f"At {_profile_of(rows)}"
    if paper:
        tp = _tally(paper)
        title = f"{at}: {tp['ok']} of {tp['total']} paper claims reproduced" + \
            (f" ({tp['marginal']} marginal)" if tp["marginal"] else "")
    else:
        title = f"{at}: no paper claim in this chapter"
    out = ["::::{admonition} " + title, f":class: {_admonition_class(rows)} result-box", ""]
    if has_key_figure:
        out += ["```{glue:figure} " + KEY_FIGURE, ":figwidth: 100%", "```", ""]
        if key_figure_name:
            out += [f"The chapter's key figure, {{numref}}`{key_figure_name}` below.", ""]
    else:
        out += ["*No key figure: the chapter does not mark one with `utils.book.key_figure(fig)`.*", ""]
    if paper:
        out += ["| paper claim | paper | ours | status |", "|---|---|---|---|"]
        for r in paper:
            ref = paper_ref(r)
            out.append(f"| {_cell(r.get('claim', ''))}" + (f" ({_cell(ref)})" if ref else "")
                       + f" | {_cell(r.get('paper', ''))} | {_cell(r.get('ours', ''))} | {STATUS_CELL[claim_status(r)]} |")
        out.append("")
    kinds = [f"{n} {k}{'s' if n != 1 else ''}" for k in ("check", "control")
             if (n := sum(r.get("kind") == k for r in other))]
    tail = (f"{'Besides' if paper else 'Its claims'}, {' and '.join(kinds)}: {_tally_text(_tally(other))} hold."
            if other else "")
    link = (f"Every claim, with what it measures: {{ref}}`the claims section <{label}>`." if label else
            "*(The chapter has no claims label `(chN-claims)=` to link to.)*")
    out += [" ".join(t for t in (tail, link) if t), "::::"]
    return "\n".join(out)


# --------------------------------------------------------------------------- the paper's figures (coverage)

def load_figures(path: Path) -> dict[int, dict]:
    """``book/paper_figures.yml``: ``{figure: {"title", "claims", "not_covered"}}`` for figures 1-30.
    Raises ValueError naming the file and the entry that is malformed."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must map the paper's figure numbers 1-30 to entries")
    keys = set(data)
    if keys != set(PAPER_FIGURES):
        raise ValueError(f"{path} must list exactly the paper's figures 1-30: missing "
                         f"{sorted(set(PAPER_FIGURES) - keys, key=str)}, unknown {sorted(keys - set(PAPER_FIGURES), key=str)}")
    out = {}
    for k in sorted(data):
        entry = data[k]
        if not isinstance(entry, dict) or set(entry) != {"title", "claims", "not_covered"}:
            raise ValueError(f"{path}: figure {k} must have exactly the keys title, claims, not_covered; got {entry!r}")
        claims, reason = entry["claims"] or [], entry["not_covered"] or ""
        if not isinstance(entry["title"], str) or not isinstance(reason, str) or not isinstance(claims, list) \
                or not all(isinstance(c, str) for c in claims):
            raise ValueError(f"{path}: figure {k}: title and not_covered are strings, claims a list of claim ids")
        out[k] = {"title": entry["title"], "claims": list(claims), "not_covered": reason.strip()}
    return out


def figure_problems(figures: dict[int, dict], claim_ids: dict[int, set] | None = None,
                    complete: bool = True) -> list[str]:
    """What is wrong with the figure file by itself: an id that is not a claim id, listed twice, or (given
    ``claim_ids``, ``{chapter number: its CLAIM_IDS}``) not among its chapter's ids; with ``complete``, a
    figure with neither claims nor a ``not_covered`` reason, or with both."""
    problems = []
    for k, entry in figures.items():
        ids, reason = entry["claims"], entry["not_covered"]
        if complete and not ids and not reason:
            problems.append(f"paper Fig. {k} has neither claims nor a not_covered reason")
        if ids and reason:
            problems.append(f"paper Fig. {k} lists claims ({', '.join(ids)}) and a not_covered reason: keep one")
        for cid in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append(f"paper Fig. {k} lists {cid} twice")
        for cid in ids:
            m = CLAIM_ID.match(cid)
            if not m:
                problems.append(f"paper Fig. {k}: {cid!r} is not a claim id (ch<N>.<snake_case>)")
            elif claim_ids is not None:
                n = int(m.group(1))
                if n not in claim_ids:
                    problems.append(f"paper Fig. {k} lists {cid}, but there is no chapter {n}")
                elif claim_ids[n] is not None and cid not in claim_ids[n]:
                    problems.append(f"paper Fig. {k} lists {cid}, which is not in chapter {n}'s CLAIM_IDS")
    return problems


def _ledger_rows(ledgers: dict) -> dict[str, tuple[str, dict]]:
    """``{claim id: (stem, row)}`` over every chapter's ledger."""
    return {r["id"]: (stem, r) for stem, rows in ledgers.items() for r in rows or [] if r.get("id")}


def _ledger_chapters(ledgers: dict) -> dict[int, str]:
    """``{chapter number: stem}`` of the chapters that wrote a ledger."""
    out = {}
    for stem, rows in ledgers.items():
        if rows is None:
            continue
        n = ledger_number(rows)
        n = chapter_number(stem) if n is None else n
        if n is not None:
            out[n] = stem
    return out


def coverage_problems(figures: dict[int, dict], ledgers: dict[str, list | None]) -> list[str]:
    """Where the figure file and the ledgers disagree: a paper claim of the paper whose ``figures``
    include k must be listed under figure k, and a claim listed under k must, when its chapter wrote a
    ledger, be in it, be a paper claim and include k in its ``figures``."""
    problems = []
    rows = _ledger_rows(ledgers)
    ran = _ledger_chapters(ledgers)
    src = str(FIGURES_FILE)
    for cid, (stem, r) in rows.items():
        if not is_paper(r) or (r.get("source") or PAPER) != PAPER:
            continue
        for k in r.get("figures") or []:
            if k in figures and cid not in figures[k]["claims"]:
                problems.append(f"{cid} ({stem}) reproduces paper Fig. {k} (its `figures`), but {src} does "
                                f"not list it under figure {k}")
    for k, entry in figures.items():
        for cid in entry["claims"]:
            m = CLAIM_ID.match(cid)
            if not m or int(m.group(1)) not in ran:
                continue                                 # malformed, or its chapter did not run
            if cid not in rows:
                problems.append(f"{src} lists {cid} under paper Fig. {k}, but {ran[int(m.group(1))]}'s "
                                f"ledger has no such claim")
                continue
            stem, r = rows[cid]
            if not is_paper(r):
                problems.append(f"{src} lists {cid} under paper Fig. {k}, but it is a {r.get('kind')}, not a "
                                f"paper claim")
            elif k not in (r.get("figures") or []):
                problems.append(f"{src} lists {cid} under paper Fig. {k}, but its `figures` are "
                                f"{tuple(r.get('figures') or ())}")
    return problems


def coverage_table(figures: dict[int, dict], ledgers: dict, labels=frozenset()) -> list[str]:
    """The coverage section of the results page: every figure of the paper -> chapters, claims and
    their status, or "not covered" and why."""
    rows = _ledger_rows(ledgers)
    out = ["| paper figure | what it shows | chapter | claims (status) |", "|---|---|---|---|"]
    covered = full = 0
    for k, entry in figures.items():
        ids = entry["claims"]
        if not ids:
            why = entry["not_covered"] or "no reason given yet"
            out.append(f"| {k} | {_cell(entry['title'])} | not covered | {_cell(why)} |")
            continue
        covered += 1
        stems, cells, statuses = [], [], []
        for cid in ids:
            if cid in rows:
                stem, r = rows[cid]
                if stem not in stems:
                    stems.append(stem)
                statuses.append(reproduced(r))
                cells.append(f"`{cid}` {STATUS_CELL[claim_status(r)]}")
            else:
                statuses.append(False)
                cells.append(f"`{cid}` (not run)")
        full += all(statuses)
        chapters = ", ".join(_chapter_ref(s, labels, ledger_number(ledgers.get(s))) for s in stems) or "—"
        out.append(f"| {k} | {_cell(entry['title'])} | {chapters} | {_cell('; '.join(cells))} |")
    head = (f"{covered} of {len(figures)} figures of the paper are covered by at least one claim; every claim "
            f"of {full} of them is reproduced.")
    return [head, ""] + out + [""]


# --------------------------------------------------------------------------- the results page

def scale_text(profile: str, budget: str = "full") -> str:
    """The scale of a profile in one sentence, from ``utils.profiles`` (dataset, d, N range, steps)."""
    from utils import data, profiles

    P = profiles.resolve(profile, allow_cpu=True, budget=budget)
    shape = ""
    try:                         # never download a dataset for this sentence: only offline or cached data
        if P.dataset in ("digits", "patches") or P.dataset.startswith("folder:") or \
                (data.cache_dir() / P.dataset).is_dir():
            c, h, w = data.image_shape(P.dataset)
            shape = f"{c}×{h}×{w} images, d = {c * h * w:,}"
    except Exception:            # noqa: BLE001 (a missing dataset only shortens the sentence)
        shape = ""
    sizes = ", ".join(f"{n:,}" for n in P.train_sizes)
    return (f"dataset `{P.dataset}`" + (f" ({shape})" if shape else "") +
            f"; training sets N = {sizes}; U-Nets of {P.model_channels} base channels trained "
            f"{P.train_steps:,} steps (batch {P.batch_size}); {P.n_samples} samples per model")


def results_page(stems: list[str], results_dir: Path, labels=frozenset(),
                 figures: dict[int, dict] | None = None) -> str:
    """The results page: the scale of every profile run, "paper claims reproduced: X of Y" per chapter
    and profile, the paper claims, the checks and controls (each row linking to its chapter's claims
    section when ``labels`` holds its label), then the coverage of the paper's ``figures``."""
    ledgers = {stem: load_ledger(results_dir, stem) for stem in stems}
    missing = [s for s, rows in ledgers.items() if rows is None]
    rows = [(stem, r) for stem in stems for r in ledgers[stem] or []]
    paper = [(s, r) for s, r in rows if is_paper(r)]
    other = [(s, r) for s, r in rows if not is_paper(r)]
    runs = []
    for _, r in rows:
        key = (r.get("profile", "?"), r.get("budget", "full"))
        if key not in runs:
            runs.append(key)

    out = ["# Results", ""]
    for profile, budget in runs:
        try:
            scale = scale_text(profile, budget)
        except (ValueError, TypeError, RuntimeError) as e:
            scale = f"(unknown profile: {e})"
        at = f"`{profile}`" + (f" at the {budget} budget (no claim asserted)" if budget != "full" else "")
        out += [f"**Scale at {at}:** {scale}.", ""]
    for profile, budget in runs or [("?", "full")]:
        sel = [r for _, r in paper if (r.get("profile", "?"), r.get("budget", "full")) == (profile, budget)]
        sel_other = [r for _, r in other if (r.get("profile", "?"), r.get("budget", "full")) == (profile, budget)]
        tp, to = _tally(sel), _tally(sel_other)
        head = f"Paper claims reproduced at `{profile}`: {tp['ok']} of {tp['total']}" + \
            (f" ({tp['marginal']} of them marginal)" if tp["marginal"] else "")
        kind = "tip" if rows and not tp["FAIL"] and not to["FAIL"] and not missing else "warning"
        detail = [f"{{bdg-success}}`{tp['pass']} pass`", f"{{bdg-warning}}`{tp['pass (marginal)']} marginal`",
                  f"{{bdg-muted}}`{tp['not reproduced']} not reproduced`", f"{{bdg-danger}}`{tp['FAIL']} failed`"]
        if missing:
            detail.append(f"{{bdg-warning}}`{len(missing)} chapter{'s' if len(missing) != 1 else ''} without results`")
        out += [f":::{{admonition}} {head}", f":class: {kind}",
                " ".join(detail) + f" — checks and controls holding: {_tally_text(to)}.", ":::", ""]
    out += ["Every chapter ends with a claims cell that compares our number with the paper's and writes the "
            "result here. A claim is a *paper* claim (a statement of the paper, with its figure), a *check* (an "
            "identity of the math or the code) or a *control* (the book's own control, transfer or ablation); "
            "only paper claims count as reproductions. A pass whose deciding number lies within "
            f"{MARGINAL:.0%} of its threshold (`utils.claims.MARGINAL`) is shown as *pass (marginal)* and counted "
            "apart. Outside `smoke` a claim that fails stops the build. "
            "Where the profile records, before the run and with its reason, that a claim is not expected to "
            "hold at its scale, the claim is still measured: it is *not reproduced* if it fails (the reason is "
            "in the *ours* column and in its chapter) and *pass* if it holds anyway.", ""]
    if not stems:
        out += ["No chapter is in the table of contents yet.", ""]

    out += ["## By chapter", "",
            "| chapter | paper claims reproduced | checks holding | controls holding |", "|---|---|---|---|"]
    for stem in stems:
        led = ledgers[stem]
        ref = _chapter_ref(stem, labels, ledger_number(led))
        if led is None:
            out.append(f"| {ref} | no results | | |")
            continue
        tallies = [_tally([r for r in led if r.get("kind") == k]) for k in ("paper", "check", "control")]
        out.append(f"| {ref} ({_profile_of(led)}) | " + " | ".join(_tally_text(t) for t in tallies) + " |")
    out.append("")
    if missing:
        out += ["Chapters without results (not run, or they failed before their claims cell): "
                + ", ".join(_chapter_ref(s) for s in missing) + ".", ""]

    def table(items, other_kinds: bool):
        lines = [":::{container} book-claims",      # _static/book.css: the compact style of the result box
                 "| claim | " + ("expected" if other_kinds else "paper") + " | ours | result |", "|---|---|---|---|"]
        for stem, r in items:
            where = f"*{r.get('kind', '?')}*" if other_kinds else paper_ref(r)
            # no claim id here: a 40-character id cannot wrap and would push the table past the column
            claim = (f"{_chapter_ref(stem, labels, ledger_number(ledgers[stem]))} · {_cell(r.get('claim', ''))}"
                     + (f" ({_cell(where)})" if where else ""))
            lines.append(f"| {claim} | {_cell(r.get('paper', ''))} | {_cell(r.get('ours', ''))} | "
                         f"{STATUS_CELL[claim_status(r)]} |")
        return lines + [":::", ""]

    out += ["## Paper claims", ""]
    out += table(paper, False) if paper else ["No paper claim was recorded.", ""]
    out += ["## Checks and controls", "",
            "Identities of the math or the code (*check*) and the book's own controls, transfers and "
            "ablations (*control*): they make the reproductions above trustworthy, but are not the paper's "
            "claims.", ""]
    out += table(other, True) if other else ["No check or control was recorded.", ""]

    if figures is not None:
        out += ["## Coverage of the paper's figures", "",
                "Every figure of the paper (arXiv v5), the chapter and the claims that reproduce it, or why the "
                f"book does not (kept in `{FIGURES_FILE}`).", ""]
        problems = coverage_problems(figures, ledgers)
        if problems:
            out += [":::{admonition} The figure list and the claims disagree", ":class: error",
                    "\n".join(f"- {_cell(p)}" for p in problems), ":::", ""]
        out += coverage_table(figures, ledgers, labels)
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
    jobs, wall = int(stats.get("jobs", 1) or 1), stats.get("wall_seconds")
    if jobs > 1 and wall is not None:
        out += [f"| **sum** | | | **{total:.1f}** |", ""]
        out += [f"The chapters ran {jobs} at a time (`scripts/run_notebooks.py --jobs`, each kernel on its share of "
                f"the cores), so each time above is that chapter's wall time while it shared the machine; all "
                f"of them together took {float(wall):.1f} s of wall time.", ""]
        total = float(wall)
    else:
        out += [f"| **total** | | | **{total:.1f}** |", ""]
    if prepare:
        out += [f"Before the chapters ran, `scripts/prepare_models.py` made sure every model they load was "
                f"trained (profile `{prepare.get('profile', '?')}`): {prepare.get('trained', '?')} of "
                f"{prepare.get('runs', '?')} runs trained, {prepare.get('workers', '?')} at a time, in "
                f"{float(prepare.get('seconds', 0.0)):.1f} s (the other runs came from the model cache). "
                f"With it, the whole execution took {total + float(prepare.get('seconds', 0.0)):.1f} s.", ""]
    return "\n".join(out)


def book_labels(root: Path = REPO) -> set[str]:
    """The claims labels ``(chN-claims)=`` that the toc's notebooks define."""
    out = set()
    for nb in toc_notebooks(root):
        out |= claims_labels(nb)
    return out


def write_pages(out_dir: Path, results_dir: Path, root: Path = REPO) -> list[Path]:
    """Render both generated pages into ``out_dir`` (``results.md``, ``exec_stats.md``)."""
    stems = [nb.stem for nb in toc_notebooks(root)]
    stats_path = Path(results_dir) / "exec_stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.is_file() else {}
    prep_path = Path(results_dir) / "prepare_stats.json"
    prepare = json.loads(prep_path.read_text(encoding="utf-8")) if prep_path.is_file() else None
    figures_path = Path(root) / FIGURES_FILE
    figures = load_figures(figures_path) if figures_path.is_file() else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = {"results.md": results_page(stems, results_dir, book_labels(root), figures),
             "exec_stats.md": exec_stats_page(stats, stems, prepare)}
    for name, text in pages.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return [out_dir / n for n in pages]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
