"""The package's layering, read from the source with ``ast`` (nothing is imported):

* the core (``utils/*.py`` and the training package ``utils/training/*.py``) never imports a chapter
  module (``utils.chapters``);
* no science module imports ``utils.plotting`` (only ``book``, the notebook glue, may);
* a chapter module imports only the core: never another chapter module;
* each chapter notebook imports its own chapter module and no other one.
"""
import ast
import json
from pathlib import Path

import pytest

from utils import chapters

REPO = Path(__file__).resolve().parent.parent
UTILS = REPO / "utils"
CORE = sorted(p for p in [*UTILS.glob("*.py"), *(UTILS / "training").glob("*.py")] if p.name != "__init__.py")
CHAPTER_FILES = sorted(p for p in (UTILS / "chapters").glob("*.py") if p.name != "__init__.py")
NOT_SCIENCE = {"plotting", "book"}          # may import plotting (book sets the theme)


def _imports(path: Path, package: str) -> set[str]:
    """Absolute dotted names of every ``utils`` module imported by ``path`` (any depth, any place)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:                                   # relative: resolve against the package
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m == "utils" or m.startswith("utils.")}


def _module_names(names: set[str]) -> set[str]:
    """The utils submodules named (``utils.metrics.rmse`` -> ``metrics``; chapters -> ``chapters.x``)."""
    out = set()
    for n in names:
        parts = n.split(".")[1:]
        if not parts:
            continue
        if parts[0] == "chapters" and len(parts) > 1:
            out.add("chapters." + parts[1])
        else:
            out.add(parts[0])
    return out


def _package(path: Path) -> str:
    """The dotted package a core file's relative imports resolve against."""
    return "utils.training" if path.parent.name == "training" else "utils"


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(UTILS).with_suffix("")))
def test_core_module_imports_no_chapter_and_science_no_plotting(path):
    used = _module_names(_imports(path, _package(path)))
    assert not {m for m in used if m.startswith("chapters")}, f"{path.name} imports chapter code: {used}"
    if path.stem not in NOT_SCIENCE:
        assert "plotting" not in used, f"{path.name} imports utils.plotting"


@pytest.mark.parametrize("path", CHAPTER_FILES, ids=lambda p: p.stem)
def test_chapter_module_imports_only_the_core(path):
    used = _module_names(_imports(path, "utils.chapters"))
    others = {m for m in used if m.startswith("chapters.") and m != f"chapters.{path.stem}"}
    assert not others, f"{path.name} imports other chapter modules: {others}"
    assert "plotting" not in used, f"{path.name} imports utils.plotting"
    assert "chapters" not in used, f"{path.name} imports the chapters package itself"


def test_every_chapter_module_is_registered_and_has_runs():
    assert sorted(chapters.CHAPTERS.values()) == sorted(p.stem for p in CHAPTER_FILES)
    for stem in chapters.CHAPTERS:
        assert callable(getattr(chapters.module(stem), "runs", None)), f"{stem}: no runs(P, seed)"


@pytest.mark.parametrize("stem", list(chapters.CHAPTERS))
def test_notebook_imports_its_own_chapter_module_only(stem):
    nb = json.loads((REPO / "book" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("!", "%")))
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    used = {m for m in _module_names({n for n in names if n.startswith("utils")}) if m.startswith("chapters.")}
    assert used == {f"chapters.{chapters.CHAPTERS[stem]}"}, f"{stem} imports chapter modules {used}"
