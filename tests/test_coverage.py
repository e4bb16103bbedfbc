"""book/paper_figures.yml -- the paper's 30 figures and the claims that reproduce them -- against the
chapters' claim ids (statically here) and against the results ledgers (what the build checks)."""
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402

from utils import chapters  # noqa: E402

FIGURES = book_pages.load_figures(REPO / book_pages.FIGURES_FILE)


def chapter_claim_ids() -> tuple[dict, list]:
    """``{chapter number: set(CLAIM_IDS) or None}`` of every chapter module, and the stems whose module
    defines no ``CLAIM_IDS`` yet (their ids cannot be checked)."""
    ids, missing = {}, []
    for stem in chapters.CHAPTERS:
        found = getattr(chapters.module(stem), "CLAIM_IDS", None)
        ids[book_pages.chapter_number(stem)] = set(found) if found is not None else None
        if found is None:
            missing.append(stem)
    return ids, missing


def _figures(**entries):
    out = {k: {"title": f"figure {k}", "claims": [], "not_covered": "not here"} for k in range(1, 31)}
    for k, claims in entries.items():
        out[int(k.removeprefix("f"))] = {"title": "t", "claims": list(claims), "not_covered": ""}
    return out


def _row(cid, kind="paper", figures=(), source="li2024understanding"):
    return {"id": cid, "kind": kind, "figures": list(figures), "source": source, "status": "pass"}


# --------------------------------------------------------------------------- the file in the repository

def test_the_file_lists_the_papers_30_figures():
    assert sorted(FIGURES) == list(range(1, 31))
    assert all(e["title"].strip() for e in FIGURES.values())


def test_listed_ids_are_claims_of_their_chapter():
    ids, missing = chapter_claim_ids()
    assert book_pages.figure_problems(FIGURES, ids, complete=False) == []
    if missing:
        pytest.skip(f"the ids of {', '.join(missing)} are not checked: their chapter modules define no CLAIM_IDS yet "
                    f"(the check becomes strict as each one does)")


def test_every_figure_is_covered_or_says_why():
    ids, missing = chapter_claim_ids()
    if missing:
        pytest.skip(f"chapter modules without CLAIM_IDS yet: {', '.join(missing)}; once every chapter defines them, "
                    f"every figure must list its claims or a not_covered reason")
    assert book_pages.figure_problems(FIGURES, ids) == []


# --------------------------------------------------------------------------- the checks, on synthetic data

def test_load_figures_rejects_malformed_files(tmp_path):
    path = tmp_path / "f.yml"
    good = {k: {"title": "t", "claims": [], "not_covered": "x"} for k in range(1, 31)}
    path.write_text(yaml.safe_dump(good))
    assert len(book_pages.load_figures(path)) == 30
    path.write_text(yaml.safe_dump({k: v for k, v in good.items() if k != 7}))
    with pytest.raises(ValueError, match=r"exactly the paper's figures 1-30: missing \[7\]"):
        book_pages.load_figures(path)
    path.write_text(yaml.safe_dump({**good, 31: good[1]}))
    with pytest.raises(ValueError, match=r"unknown \[31\]"):
        book_pages.load_figures(path)
    path.write_text(yaml.safe_dump({**good, 3: {"title": "t", "claims": "ch3.x", "not_covered": ""}}))
    with pytest.raises(ValueError, match="figure 3: .*claims a list of claim ids"):
        book_pages.load_figures(path)
    path.write_text(yaml.safe_dump({**good, 3: {"title": "t", "claims": []}}))
    with pytest.raises(ValueError, match="figure 3 must have exactly the keys"):
        book_pages.load_figures(path)


def test_figure_problems():
    ids = {2: {"ch2.a", "ch2.b"}, 3: None}
    figs = _figures(f1=["ch2.a"], f2=["ch2.a", "ch2.a"], f4=["ch3.whatever"], f5=["ch9.x"], f6=["ch2.zzz"],
                    f8=["Ch2.a"])
    figs[7] = {"title": "t", "claims": [], "not_covered": ""}
    figs[9] = {"title": "t", "claims": ["ch2.b"], "not_covered": "and a reason"}
    problems = book_pages.figure_problems(figs, ids)
    assert "paper Fig. 7 has neither claims nor a not_covered reason" in problems
    assert "paper Fig. 9 lists claims (ch2.b) and a not_covered reason: keep one" in problems
    assert "paper Fig. 2 lists ch2.a twice" in problems
    assert "paper Fig. 5 lists ch9.x, but there is no chapter 9" in problems
    assert "paper Fig. 6 lists ch2.zzz, which is not in chapter 2's CLAIM_IDS" in problems
    assert "paper Fig. 8: 'Ch2.a' is not a claim id (ch<N>.<snake_case>)" in problems
    assert len(problems) == 6                                       # ch3.whatever: ch3 has no CLAIM_IDS yet
    assert book_pages.figure_problems(figs, ids, complete=False) == [p for p in problems if "neither" not in p]
    assert book_pages.figure_problems(_figures(f1=["ch2.a"]), ids) == []


def test_coverage_problems_on_synthetic_ledgers():
    figs = _figures(f2=["ch3.rmse"], f4=["ch3.weights", "ch3.tower"], f6=["ch3.gone", "ch5.split"])
    ledgers = {"03_linearity": [_row("ch3.rmse", figures=(2, 3)), _row("ch3.weights", figures=(14,)),
                                _row("ch3.tower", kind="control", figures=(4,)),
                                _row("ch3.anchor", figures=(5,), source="kamb2024analytic")],
               "05_strong_generalization": None}                     # chapter 5 did not run: not judged
    problems = book_pages.coverage_problems(figs, ledgers)
    src = str(book_pages.FIGURES_FILE)
    assert problems == [
        f"ch3.rmse (03_linearity) reproduces paper Fig. 3 (its `figures`), but {src} does not list it under figure 3",
        f"ch3.weights (03_linearity) reproduces paper Fig. 14 (its `figures`), but {src} does not list it under figure 14",
        f"{src} lists ch3.weights under paper Fig. 4, but its `figures` are (14,)",
        f"{src} lists ch3.tower under paper Fig. 4, but it is a control, not a paper claim",
        f"{src} lists ch3.gone under paper Fig. 6, but 03_linearity's ledger has no such claim",
    ]
    consistent = _figures(f2=["ch3.rmse"], f3=["ch3.rmse"], f14=["ch3.weights"])
    assert book_pages.coverage_problems(consistent, ledgers) == []
