"""Build a one-chapter book from the fixture chapter as `make book` does (papermill, staging, Jupyter
Book), and read the HTML as a reader would: the result box first, the code folded, the book's own
figure and equation numbers per chapter, a downloadable notebook at profile "auto", the results page
with the scale and the paper-claims count; in Chromium (when there is one), the layout probe finds the
one equation made too wide on purpose and nothing else. Results and artifacts go to temporary folders."""
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402
import build_book  # noqa: E402
import check_html  # noqa: E402
import run_notebooks  # noqa: E402

pytestmark = pytest.mark.notebooks
FIXTURE = REPO / "tests" / "fixtures" / "demo_chapter.ipynb"
TOC = """format: jb-book
root: book/intro
parts:
- caption: Chapters
  numbered: true
  chapters:
  - file: book/demo_chapter
- caption: Reference
  chapters:
  - file: book/references
  - file: book/results
  - file: book/exec_stats
"""
# An equation far wider than the text column: the layout probe must report it (and only it).
TOO_WIDE = (r"$$ \mathrm{RMSE}(D_\theta, D_{\text{ref}})(\sigma) = \mathbb E_{x}\Big[\sqrt{\tfrac1d\,"
            r"\lVert D_\theta(x;\sigma) - D_{\text{ref}}(x;\sigma)\rVert^2}\Big] + \mathbb E_{x}\Big[\sqrt{\tfrac1d\,"
            r"\lVert D_\theta(x;\sigma) - D_{\text{ref}}(x;\sigma)\rVert^2}\Big],\qquad x = x_0 + \sigma\varepsilon $$ "
            r"(eq-too-wide)")


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The built mini book: (root, html folder, results folder)."""
    root = tmp_path_factory.mktemp("book")
    mp = pytest.MonkeyPatch()
    results = root / "results"
    mp.setenv("HGB_RESULTS_DIR", str(results))
    mp.setenv("HGB_ARTIFACTS", str(root / "artifacts"))
    mp.setenv("JUPYTER_PATH", "")
    try:
        (root / "book").mkdir()
        shutil.copy2(REPO / "_config.yml", root / "_config.yml")
        shutil.copytree(REPO / "_static", root / "_static")
        (root / "_toc.yml").write_text(TOC)
        (root / "book" / "intro.md").write_text("# Intro\n\nA one-chapter book: {doc}`demo_chapter`.\n")
        for name in ("references.md", "references.bib", "paper_figures.yml", "results.md", "exec_stats.md"):
            shutil.copy2(REPO / "book" / name, root / "book" / name)
        shutil.copy2(FIXTURE, root / "book" / "demo_chapter.ipynb")
        executed = root / "_build" / "executed" / "book" / "demo_chapter.ipynb"
        run_notebooks.use_this_python_for_kernel()
        rec = run_notebooks.execute(root / "book" / "demo_chapter.ipynb", executed, "cpu", 600, log_output=False)
        assert rec["status"] == "ok", rec
        (results / "exec_stats.json").write_text(json.dumps({"notebooks": {"demo_chapter": rec}}))

        problems = build_book.stage(root, root / "_build", results)
        assert problems == [], problems
        staged = root / "_build" / "src" / "book" / "demo_chapter.ipynb"
        nb = json.loads(staged.read_text())
        at = next(i for i, c in enumerate(nb["cells"]) if "".join(c["source"]).startswith("(ch0-claims)="))
        nb["cells"].insert(at, {"cell_type": "markdown", "id": "too-wide", "metadata": {},
                                "source": "A deliberately wide equation:\n\n" + TOO_WIDE})
        staged.write_text(json.dumps(nb))
        assert build_book.build_html(root / "_build" / "src", root) == 0
        html = root / "_build" / "html"
        assert build_book.check_built(root, html) == []
        yield root, html, results
    finally:
        mp.undo()


def _text(page: Path) -> str:
    """The visible text of an HTML page, roughly (tags dropped, whitespace collapsed)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text()))


def test_the_chapter_opens_with_its_result_box(book):
    _, html, _ = book
    page = (html / "book" / "demo_chapter.html").read_text()
    h1 = page.index("<h1>")
    box = page.index("result-box")
    first_code = page.index('class="cell')
    assert h1 < box < first_code, "title, then the result box, then the first code cell"
    # the chapter is numbered by the toc, once; the summary follows the title
    assert re.search(r'<h1><span class="section-number">1\. </span>Demo chapter', page)
    text = _text(html / "book" / "demo_chapter.html")
    assert "At cpu : 1 of 1 paper claims reproduced" in text
    assert re.search(r"the Wiener filter keeps a large-variance component .* pass", text)
    assert "Besides, 1 check and 1 control: 1 of 2 (1 not reproduced) hold." in text
    assert 'href="#ch0-claims"' in page                          # the link to the claims section
    assert "_static/book.css" in page                             # the box's compact style
    # the key figure is drawn in the box (an image before the first code cell) and numbered below
    assert "<img" in page[box:first_code]
    assert "The chapter’s key figure, Fig. 1.1 below." in text or "The chapter's key figure, Fig. 1.1 below." in text


def test_book_numbers_are_per_chapter_and_paper_numbers_say_paper(book):
    _, html, _ = book
    text = _text(html / "book" / "demo_chapter.html")
    assert "Fig. 1.1 The Wiener shrinkage factor" in text       # the book's own figure, numbered per chapter
    assert "(1.1)" in text and "(1.2)" in text                   # its equations too
    assert "1.1. A figure" in text and "1.2. Claims" in text     # sections numbered by the toc
    assert "paper eq. (6)" in text                               # the paper's equation, marked as the paper's


def test_code_is_folded_and_the_download_runs_at_auto(book):
    root, html, _ = book
    page = (html / "book" / "demo_chapter.html").read_text()
    assert 'profile = "cpu"' not in page and "injected-parameters" not in page
    # the Colab and parameters cells are folded (a toggle), the claims cell's source too
    assert len(re.findall(r'class="cell [^"]*tag_hide-cell', page)) == 2 and "tag_hide-input" in page
    assert "tag_hide-output" in page                              # the setup's environment printout
    downloaded = json.loads((html / "_sources" / "book" / "demo_chapter.ipynb").read_text())
    params = [c for c in downloaded["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert [("".join(c["source"])) for c in params] == ['profile = "auto"\nseed = 0']
    assert not any("injected-parameters" in c["metadata"].get("tags", []) for c in downloaded["cells"])
    ref = build_book.build_ref()
    if ref:                                                       # the Colab button opens the commit built
        assert f"colab.research.google.com/github/hidden-gaussian/hidden-gaussian-book/blob/{ref}/book/demo_chapter.ipynb" in page


def test_results_page_states_scale_and_paper_claims(book):
    _, html, _ = book
    text = _text(html / "book" / "results.html")
    head = text[text.index("Results"):]
    assert head.index("Scale at cpu :") < head.index("Paper claims reproduced at cpu : 1 of 1")
    assert "dataset digits (1×8×8 images, d = 64)" in text
    assert "checks and controls holding: 1 of 2 (1 not reproduced)" in text
    page = (html / "book" / "results.html").read_text()
    assert 'href="demo_chapter.html#ch0-claims"' in page          # rows link to the claims section
    assert "Coverage of the paper’s figures" in text or "Coverage of the paper's figures" in text
    assert "not covered" in text


@pytest.mark.skipif(check_html.find_browser() is None, reason="no Chromium")
def test_the_layout_probe_finds_the_wide_equation_only(book):
    _, html, _ = book
    browser = check_html.find_browser()
    err, problems = check_html.render(browser, html / "book" / "demo_chapter.html", html.parent / "shots" / "ch.png")
    assert err is None
    assert [p for p in problems if not p.startswith("equation (1.2)")] == [], problems
    assert any(re.fullmatch(r"equation \(1\.2\) is \d+ px wide in a \d+ px column", p) for p in problems), problems
    err, problems = check_html.render(browser, html / "book" / "results.html", html.parent / "shots" / "results.png")
    assert err is None and problems == []
