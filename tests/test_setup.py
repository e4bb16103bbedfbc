"""A fresh machine: the Makefile's Python check and .venv repair, declared imports, the browser check."""
import ast
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402
import check_html  # noqa: E402


def _make(*args, **env):
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, **env))


@pytest.fixture
def python310(tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Python 3.10.12"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    return fake


def test_make_stops_with_a_clear_message_on_an_old_python(python310):
    for target in ("check-python", "test", "book"):
        run = _make(target, f"PY={python310}", "VENV=/nonexistent/venv")
        assert run.returncode != 0
        assert "needs Python >= 3.11" in run.stdout and "Python 3.10.12" in run.stdout, run.stdout + run.stderr
    assert _make("check-python", f"PY={sys.executable}").returncode == 0


def test_make_rebuilds_a_half_made_venv(tmp_path):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")        # an interrupted `python -m venv`
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".installed").touch()                                       # a stale install stamp
    run = _make("venv", f"VENV={venv}", f"PY={sys.executable}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "rebuilding" in run.stdout and not (venv / ".installed").exists()
    ok = subprocess.run([str(venv / "bin" / "python"), "-c", "import pip, sys; print(sys.version_info >= (3, 11))"],
                        capture_output=True, text=True)
    assert ok.stdout.strip() == "True"
    again = _make("venv", f"VENV={venv}", f"PY={sys.executable}")    # a sound .venv is left alone
    assert again.returncode == 0 and "creating" not in again.stdout


def _third_party_imports() -> set:
    sources = [p.read_text() for d in ("utils", "scripts", "tests") for p in (REPO / d).rglob("*.py")]
    for nb in list((REPO / "book").glob("*.ipynb")) + list((REPO / "tests").rglob("*.ipynb")):
        sources += ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    names = set()
    for src in sources:
        src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {"utils", "conftest"} | {p.stem for d in ("scripts", "tests") for p in (REPO / d).rglob("*.py")}
    return {n for n in names - local - set(sys.stdlib_module_names) if n != "google"}   # google.colab: Colab's


def test_every_imported_package_is_declared():
    declared = {re.split(r"[=<>!~\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
                for line in (REPO / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    dists = metadata.packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not in requirements.txt: {missing}"
    assert "torch==2.13.0" in (REPO / "requirements.txt").read_text().splitlines()


@pytest.fixture
def built_html(tmp_path):
    html = tmp_path / "html"
    for name, page in check_html.pages_to_check(html):
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<html><body><p>page</p></body></html>")
    return html


def test_browser_check_is_skipped_outside_ci_and_required_in_ci(built_html, monkeypatch, capsys):
    monkeypatch.setattr(check_html, "find_browser", lambda: None)
    args = ["--html", str(built_html), "--out", str(built_html.parent / "shots")]
    assert check_html.main(args, env={}) == 0
    assert "notice: no Chromium/Chrome found" in capsys.readouterr().out
    assert check_html.main(args, env={"CI": "false"}) == 0
    installs = []
    assert check_html.main(args, env={"CI": "true"}, install=lambda: installs.append(1)) == 1
    assert installs == [1] and "CI requires" in capsys.readouterr().err
    (built_html / "book").mkdir(exist_ok=True)
    broken = check_html.pages_to_check(built_html)[1][1]
    broken.write_text('<img src="missing.png">')                        # the HTML checks still run
    assert check_html.main(args, env={}) == 1


def test_ci_script_runs_the_readme_commands_and_requires_the_browser():
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test\n" in ci and "make book" in ci
    assert ci.index("make test\n") < ci.index("make book")
    assert 'export CI="${CI:-true}"' in ci


def test_workflow_permissions_concurrency_and_timeout():
    import yaml
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    assert wf["permissions"] == {"contents": "read"}
    assert "cancel-in-progress" in wf["concurrency"] and "pull_request" in str(wf["concurrency"]["cancel-in-progress"])
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert "permissions" not in build
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    import run_notebooks
    run_budget_min = 2 * run_notebooks.TARGET_S["cpu"] / 60              # run_notebooks.py's guard at cpu
    assert build["timeout-minutes"] > run_budget_min + 5 + 5              # + install + make test
    steps = [s.get("run", "") for s in build["steps"]]
    assert any("make test " in s for s in steps) and any("make book" in s for s in steps)
