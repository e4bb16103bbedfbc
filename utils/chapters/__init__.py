"""Chapter code: what only one chapter computes, one module per chapter notebook.

Each module imports only the core (``utils.*``), never another chapter, and never ``utils.plotting``
(``tests/test_layering.py`` enforces both). Each defines ``runs(P, seed)``: the training runs its
notebook needs at profile ``P``, so that ``scripts/prepare_models.py`` can train every model of the
book once, several at a time, before the notebooks run.

=================================  ===================================================
notebook                           module
=================================  ===================================================
``01_gaussian_theory``             :mod:`utils.chapters.gaussian_theory`
``02_memorization_generalization`` :mod:`utils.chapters.memorization`
``03_linearity``                   :mod:`utils.chapters.linearity`
``04_emergence``                   :mod:`utils.chapters.emergence`
``05_strong_generalization``       :mod:`utils.chapters.strong_generalization`
``06_architectures_and_jacobians`` :mod:`utils.chapters.architectures`
``07_locality``                    :mod:`utils.chapters.locality`
``08_gaussian_teleportation``      :mod:`utils.chapters.teleportation`
=================================  ===================================================
"""
import importlib

# notebook stem -> chapter module name, in reading order
CHAPTERS = {
    "01_gaussian_theory": "gaussian_theory",
    "02_memorization_generalization": "memorization",
    "03_linearity": "linearity",
    "04_emergence": "emergence",
    "05_strong_generalization": "strong_generalization",
    "06_architectures_and_jacobians": "architectures",
    "07_locality": "locality",
    "08_gaussian_teleportation": "teleportation",
}


def module(stem: str):
    """The chapter module of notebook ``stem``."""
    if stem not in CHAPTERS:
        raise KeyError(f"no chapter module for notebook {stem!r}; known: {sorted(CHAPTERS)}")
    return importlib.import_module(f".{CHAPTERS[stem]}", __name__)


def all_runs(P, seed: int = 0, stems=None) -> list:
    """Every training run the chapters ``stems`` (default: all) need at profile ``P``: a list of specs
    and ``(spec, x_train)`` pairs for ``utils.train.train_many`` (duplicates are trained once)."""
    jobs = []
    all_settings(P)                          # every chapter's block checked before anything trains
    for stem in (stems or CHAPTERS):
        fn = getattr(module(stem), "runs", None)
        if fn is not None:
            jobs += fn(P, seed)
    return jobs


def settings(P, stem: str):
    """The validated settings of chapter ``stem`` at profile ``P`` (raises ``SettingsError`` naming the
    profile, chapter and key of anything missing, unknown or ill-typed)."""
    return module(stem).settings(P)


def all_settings(P) -> dict:
    """``{stem: settings}`` of every chapter at profile ``P``: resolving them all checks every block
    of the profile before anything trains."""
    return {stem: settings(P, stem) for stem in CHAPTERS}
