"""The book pipeline without executing anything: toc, chapter conventions, generated pages, HTML checks."""
import ast
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402
import build_book  # noqa: E402
import check_html  # noqa: E402

from utils.colab import FIRST_CELL  # noqa: E402

FIXTURE = REPO / "tests" / "fixtures" / "demo_chapter.ipynb"
CHAPTERS = book_pages.toc_notebooks(REPO)


# --------------------------------------------------------------------------- toc and config

def test_every_toc_entry_exists_and_results_pages_are_listed():
    files = book_pages.toc_files(REPO)                   # raises on a missing entry
    rel = [str(f.relative_to(REPO)) for f in files]
    assert rel[0] == "book/intro.md"
    assert rel[-2:] == ["book/results.md", "book/exec_stats.md"]


def test_every_notebook_under_book_is_in_the_toc():
    unlisted = book_pages.unlisted_notebooks(REPO)
    assert not unlisted, f"add these to _toc.yml: {[str(p.relative_to(REPO)) for p in unlisted]}"


def test_toc_parsing_and_missing_entries(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({
        "format": "jb-book", "root": "book/intro",
        "parts": [{"caption": "A", "chapters": [{"file": "book/a.ipynb", "sections": [{"file": "book/b"}]}]},
                  {"caption": "B", "chapters": [{"file": "book/c"}]}]}))
    assert book_pages.toc_entries(tmp_path) == ["book/intro", "book/a", "book/b", "book/c"]
    for name in ("intro.md", "a.ipynb", "c.md"):
        (tmp_path / "book" / name).write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"book/b\(\.ipynb\|\.md\)"):
        book_pages.toc_files(tmp_path)
    (tmp_path / "book" / "b.md").write_text("# B")
    assert [f.name for f in book_pages.toc_files(tmp_path)] == ["intro.md", "a.ipynb", "b.md", "c.md"]
    (tmp_path / "book" / "stray.ipynb").write_text("{}")
    assert [p.name for p in book_pages.unlisted_notebooks(tmp_path)] == ["stray.ipynb"]


def test_config():
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert {".venv", "_build", "tests", "artifacts"} <= set(cfg["exclude_patterns"])
    assert cfg["copyright"] == "2026"
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["repository"]["branch"] == "main"
    for bib in cfg["bibtex_bibfiles"]:
        assert (REPO / bib).is_file()


def test_every_citation_is_in_the_bibliography():
    bib = (REPO / "book" / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", bib, flags=re.M))
    used = set()
    for f in book_pages.toc_files(REPO) + [FIXTURE]:
        for refs in re.findall(r"\{cite:\w+\}`([^`]+)`", f.read_text()):
            used |= {k.strip() for k in refs.split(",")}
    assert used and not used - keys, f"unknown citation keys: {sorted(used - keys)}"


def test_placeholder_pages_hold_no_results():
    """The generated pages must not be committed with (stale) numbers."""
    for name in ("results.md", "exec_stats.md"):
        text = (REPO / "book" / name).read_text()
        assert "This page is generated" in text and "|---" not in text


# --------------------------------------------------------------------------- chapter conventions

@pytest.mark.parametrize("path", CHAPTERS + [FIXTURE], ids=lambda p: p.stem)
def test_chapter_conventions(path):
    nb = nbformat.read(path, as_version=4)
    md = [c for c in nb.cells if c.cell_type == "markdown"]
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert md and re.match(r"#\s+\S", md[0].source), "the first markdown cell must start with '# Title'"
    assert code and code[0].source.strip() == FIRST_CELL.strip(), \
        "the first code cell must be exactly utils.colab.FIRST_CELL (python -m utils.colab sync <notebook>)"

    params = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one code cell must be tagged 'parameters'"
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(code[params[0]].source).body
              if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}
    assert values.get("profile") == "auto" and values.get("seed") == 0, \
        "the parameters cell must set profile = \"auto\" and seed = 0"
    assert "utils.book.setup(profile, seed)" in code[params[0] + 1].source, \
        "the cell after the parameters must call P = utils.book.setup(profile, seed)"
    stem = "demo_chapter" if path == FIXTURE else path.stem
    assert re.search(rf"record_claims\(\s*['\"]{stem}['\"]", code[-1].source), \
        f"the last code cell must call utils.book.record_claims('{stem}', claims, P)"

    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} have outputs: commit notebooks without outputs"


# --------------------------------------------------------------------------- generated pages

def _ledger(d, stem, rows):
    (d / f"{stem}.json").write_text(json.dumps(rows))


def test_results_page(tmp_path):
    row = dict(paper="> 0.96", ours="0.97", profile="cpu", passed=True, status="pass")
    _ledger(tmp_path, "01_gaussian_theory", [dict(row, claim="D_G is the | Wiener filter")])
    _ledger(tmp_path, "03_linearity", [dict(row, claim="linearity"),
                                       dict(row, claim="broken", passed=False, status="FAIL"),
                                       dict(row, claim="too small", passed=False, status="not reproduced")])
    page = book_pages.results_page(["01_gaussian_theory", "02_memorization_generalization", "03_linearity"],
                                   tmp_path)
    assert page.startswith("# Results")
    assert "2 / 4 claims reproduced at profile `cpu`" in page
    assert ":class: warning" in page and "{bdg-danger}`1 failed`" in page
    assert "{bdg-secondary}`1 not reproduced`" in page
    assert "| {doc}`Ch. 1 <01_gaussian_theory>` | D_G is the \\| Wiener filter | > 0.96 | 0.97 |" in page
    assert "| broken | > 0.96 | 0.97 | {bdg-danger}`FAIL` |" in page
    assert "| too small | > 0.96 | 0.97 | {bdg-secondary}`not reproduced` |" in page
    assert "without results" in page and "{doc}`Ch. 2 <02_memorization_generalization>`" in page
    assert page.count("\n| {doc}") == 4


def test_results_page_all_pass_and_empty(tmp_path):
    _ledger(tmp_path, "x", [dict(claim="c", paper="p", ours="o", profile="gpu", passed=True, status="pass")])
    page = book_pages.results_page(["x"], tmp_path)
    assert "1 / 1 claims reproduced at profile `gpu`" in page and ":class: tip" in page
    assert "No chapter" in book_pages.results_page([], tmp_path)


def test_exec_stats_page():
    stats = {"updated": "2026-01-01 00:00 UTC", "commit": "abc1234",
             "host": {"cpus": 2, "python": "3.11.7", "torch": "2.13.0+cpu", "platform": "Linux x86_64"},
             "notebooks": {"01_a": {"profile": "cpu", "status": "ok", "seconds": 12.34},
                           "02_b": {"profile": "cpu", "status": "failed", "seconds": 3.0,
                                    "error": {"cell_index": 7, "ename": "AssertionError"}}}}
    page = book_pages.exec_stats_page(stats, ["01_a", "02_b", "03_c"])
    assert "| {doc}`Ch. 1 <01_a>` | `cpu` | ok | 12.3 |" in page
    assert "failed (cell 7: AssertionError)" in page
    assert "| {doc}`Ch. 3 <03_c>` | | not run | |" in page
    assert "**15.3**" in page and "abc1234" in page
    assert "prepare_models" not in page
    page = book_pages.exec_stats_page(stats, ["01_a", "02_b"], prepare={"profile": "cpu", "runs": 17, "trained": 3,
                                                                        "workers": 2, "seconds": 100.0})
    assert "3 of 17 runs trained, 2 at a time, in 100.0 s" in page and "took 115.3 s" in page


def test_write_pages(tmp_path):
    out = book_pages.write_pages(tmp_path / "gen", tmp_path, REPO)
    assert [p.name for p in out] == ["results.md", "exec_stats.md"]
    assert all(p.read_text().startswith("# ") for p in out)


def test_staged_notebook_folds_the_colab_cell_and_pins_the_commit(tmp_path):
    from utils.colab import first_cell
    src = tmp_path / "in.ipynb"
    src.write_text(FIXTURE.read_text())
    build_book._stage_notebook(src, tmp_path / "out.ipynb")
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "hide-input" in code[0].metadata["tags"] and "hide-input" not in code[1].metadata.get("tags", [])
    assert code[0].source == FIRST_CELL
    sha = "0123456789abcdef0123456789abcdef01234567"
    build_book._stage_notebook(src, tmp_path / "out.ipynb", ref=sha)      # a built notebook: its commit
    code = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells if c.cell_type == "code"]
    assert code[0].source == first_cell(ref=sha) and f'"{sha}"' in code[0].source
    assert "hide-input" in code[0].metadata["tags"]


def test_build_ref_is_the_full_head_commit():
    from utils.book import repo_commit
    ref = build_book.build_ref()
    short = repo_commit()
    if ref is None:
        pytest.skip("not a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}", ref) and ref.startswith(short.removesuffix("+dirty"))


# --------------------------------------------------------------------------- HTML checks

def test_broken_images_and_error_outputs(tmp_path):
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "ok.png").write_bytes(b"png")
    page = tmp_path / "book" / "p.html"
    page.parent.mkdir()
    page.write_text('<img src="../_images/ok.png"><img src="../_images/missing.png">'
                    '<img src="data:image/png;base64,AAAA"><img src="https://x.org/a.png">')
    assert check_html.broken_images(page, tmp_path) == ["../_images/missing.png"]
    assert check_html.error_outputs(page) == []
    page.write_text('<div class="output traceback highlight-ipythontb notranslate">x</div>')
    assert check_html.error_outputs(page)
    page.write_text("<pre>AssertionError    Traceback (most recent call last)</pre>")
    assert check_html.error_outputs(page)
    page.write_text('<div class="output stderr">warning</div>')
    assert check_html.error_outputs(page) == []


def test_bench_prints_the_last_book_times(tmp_path, monkeypatch, capsys):
    import bench
    monkeypatch.setenv("HGB_RESULTS_DIR", str(tmp_path))
    bench.print_book_times()
    assert "no execution-statistics ledger" in capsys.readouterr().out
    (tmp_path / "exec_stats.json").write_text(json.dumps(
        {"notebooks": {"01_a": {"path": "book/01_a.ipynb", "profile": "cpu", "status": "ok", "seconds": 10.0}}}))
    (tmp_path / "prepare_stats.json").write_text(json.dumps(
        {"profile": "cpu", "runs": 3, "trained": 2, "workers": 2, "seconds": 90.0}))
    bench.print_book_times()
    out = capsys.readouterr().out
    assert "notebooks: 10 s" in out and "2 of 3 runs, 2 at a time, 90 s; with the notebooks 100 s" in out
