"""Execute every chapter of _toc.yml with papermill at profile="smoke" (and the runner itself on
tiny notebooks). Results and artifacts go to temporary folders, never to _build/ or artifacts/."""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402
import run_notebooks  # noqa: E402
from notebook_selection import selected_params  # noqa: E402

pytestmark = pytest.mark.notebooks
FIXTURE = REPO / "tests" / "fixtures" / "demo_chapter.ipynb"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Temporary results / artifacts folders (the kernel inherits the environment)."""
    monkeypatch.setenv("HGB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("JUPYTER_PATH", "")
    run_notebooks.use_this_python_for_kernel()
    return tmp_path


def _run(src, sandbox, profile="smoke"):
    out = sandbox / "executed" / Path(src).name
    rec = run_notebooks.execute(Path(src), out, profile, cell_timeout=600, log_output=False)
    return rec, out


@pytest.fixture(scope="module")
def smoke_book(request, tmp_path_factory):
    """Every selected chapter executed at profile=smoke, ``run_notebooks.default_jobs`` at a time (as
    ``make book`` does), with one results folder and one model cache shared by the chapters (runs are
    locked in the cache: a chapter that needs a model another is training waits for it)."""
    root = tmp_path_factory.mktemp("smoke-book")
    saved = dict(os.environ)
    os.environ.update(HGB_RESULTS_DIR=str(root / "results"), HGB_ARTIFACTS=str(root / "artifacts"), JUPYTER_PATH="")
    try:
        run_notebooks.use_this_python_for_kernel()
        paths = selected_params(request.session, "test_chapter_runs_at_smoke")
        records = run_notebooks.execute_many([(p, root / "executed" / p.name, "smoke") for p in paths],
                                             cell_timeout=600, jobs=run_notebooks.default_jobs("smoke"))
        yield root, {p.stem: r for p, r in zip(paths, records)}
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("path", book_pages.toc_notebooks(REPO), ids=lambda p: p.stem)
def test_chapter_runs_at_smoke(path, smoke_book):
    root, records = smoke_book
    rec, out = records[path.stem], root / "executed" / path.name
    assert rec["status"] == "ok", run_notebooks.describe_failure(path.stem, rec, out)
    ledger = json.loads((root / "results" / f"{path.stem}.json").read_text())
    assert ledger and {r["profile"] for r in ledger} == {"smoke"}


def test_runner_on_the_fixture_chapter(sandbox):
    for profile in ("smoke", "cpu"):
        rec, out = _run(FIXTURE, sandbox, profile)
        assert rec["status"] == "ok" and rec["error"] is None and rec["seconds"] > 0
        ledger = json.loads((sandbox / "results" / "demo_chapter.json").read_text())
        assert [r["profile"] for r in ledger] == [profile] * 3
        nb = nbformat.read(out, as_version=4)
        text = json.dumps(nb)
        assert "injected-parameters" in text and f'profile = \\"{profile}\\"' in text
        assert "image/png" in text                                    # the figure was rendered
        assert f"kernel python: {sys.executable}" in text             # kernel python3 = this venv


def _notebook(*sources):
    cells = [new_markdown_cell("# T"), new_code_cell('profile = "auto"\nseed = 0', metadata={"tags": ["parameters"]})]
    return new_notebook(cells=cells + [new_code_cell(s) for s in sources],
                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def test_runner_reports_the_failing_cell(sandbox):
    src = sandbox / "broken.ipynb"
    nbformat.write(_notebook("x = 1", "raise ValueError('boom')", "y = 2"), src)
    rec, out = _run(src, sandbox)
    assert rec["status"] == "failed"
    # index 4 of the executed copy: title, parameters, papermill's injected parameters, x = 1, raise
    assert rec["error"]["cell_index"] == 4 and rec["error"]["ename"] == "ValueError" and "boom" in rec["error"]["evalue"]
    msg = run_notebooks.describe_failure("broken", rec, out)
    assert "cell 4 (In [4]) `raise ValueError('boom')` raised ValueError: boom" in msg and str(out) in msg


def test_a_failing_claim_fails_the_notebook_at_cpu_not_at_smoke(sandbox):
    src = sandbox / "claims.ipynb"
    nbformat.write(_notebook("import utils.book\nP = utils.book.setup(profile, seed)",
                             "from utils.book import Claim\n"
                             "utils.book.record_claims('claims', [Claim(id='ch9.c', kind='check', claim='c', paper='< 0.05', "
                             "ours='0.3', passed=False)], P)"), src)
    assert _run(src, sandbox, "smoke")[0]["status"] == "ok"
    rec, _ = _run(src, sandbox, "cpu")
    assert rec["status"] == "failed" and rec["error"]["ename"] == "AssertionError"
