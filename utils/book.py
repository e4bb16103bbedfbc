"""What every chapter notebook calls: :func:`setup` at the top, :func:`record_claims` at the end.

Notebook conventions (tests/test_pipeline.py checks 1-3 and 6 for every chapter in ``_toc.yml``):

1. A markdown cell ``# Title``, then a short intro: prerequisites and time to run per profile.
2. The first code cell is exactly :data:`utils.colab.FIRST_CELL` (it installs the repo on Colab
   and does nothing elsewhere).
3. A code cell tagged ``parameters`` holding ``profile = "auto"`` and ``seed = 0``
   (papermill injects ``profile = "cpu"`` / ``"smoke"`` after it).
4. The next cell: ``import utils`` and ``P = utils.book.setup(profile, seed)``.
5. Theory -> code -> claim, in thin cells that call ``utils``; no helper code pasted between
   notebooks.
6. The last code cell builds a list of :class:`Claim` and calls
   ``utils.book.record_claims("<notebook stem>", claims, P)``.

At the ``cpu``, ``colab`` and ``gpu`` profiles :func:`record_claims` raises if a claim marked as
reproduced did not pass, so ``make book`` fails on broken science (not under the smoke budget of
``utils.profiles``, which cuts a profile's sizes and steps to test its code paths). A claim that honest effort cannot
reproduce at a scale is recorded with ``reproduced=False``, explained in the text, and left out of
the asserts; a threshold is never moved to make the build green. At ``smoke`` nothing is asserted.
"""
from __future__ import annotations

import html
import json
import os
import platform
import random
import subprocess
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import paths, plotting, profiles

ASSERTED_PROFILES = ("cpu", "colab", "gpu")
LEDGER_KEYS = ("claim", "paper", "ours", "profile", "passed", "reproduced")


# --------------------------------------------------------------------------- setup

def setup(profile: str = "auto", seed: int = 0) -> profiles.Profile:
    """Resolve ``profile``, seed every RNG with ``seed``, set the plot theme, print a header.

    Returns the :class:`utils.profiles.Profile` the chapter reads its sizes from.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    prof = profiles.resolve(profile)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)              # also seeds every CUDA device
    plotting.set_theme()
    print(header(prof, seed))
    return prof


def header(prof: profiles.Profile, seed: int) -> str:
    """The block :func:`setup` prints: profile, seed, device and the versions that made the run."""
    device = prof.device
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif device == "cpu":
        device = f"cpu ({torch.get_num_threads()} threads)"
        if prof.name in profiles.CUDA_PROFILES:
            device += " -- a GPU profile on the CPU by opt-in (allow_cpu / HGB_ALLOW_CPU)"
    name = prof.name
    if prof.budget != "full":
        name += (f" at the {prof.budget} budget (HGB_BUDGET: its data and model, the smoke profile's sizes "
                 f"and steps; no claim is asserted)")
    rows = [("profile", name), ("seed", str(seed)), ("device", device),
            ("python", platform.python_version()), ("torch", torch.__version__),
            ("numpy", np.__version__), ("commit", repo_commit() or "unknown")]
    return "\n".join(f"{k:<8} {v}" for k, v in rows)


def repo_commit(short: bool = True) -> str | None:
    """Hash of the repository's HEAD (short, or the full one with ``short=False``), with ``+dirty``
    appended when tracked files have local changes; None outside a git checkout."""
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(paths.REPO_ROOT), *args],  # noqa: E731
                                           capture_output=True, text=True, timeout=5)
        head = run("rev-parse", *(["--short"] if short else []), "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- numbers in prose

def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for the page's prose (MyST-NB's glue): the markdown writes
    ``{glue:text}`name:.3f``` and the built page shows the number this run measured. numpy and
    one-element torch values become python numbers (so a format spec applies); strings are stored as
    they are. Returns None (so that a cell ending in ``glue(...)`` shows nothing). Where ``myst_nb``
    is not installed (Colab), nothing is stored."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue name must be an identifier-like string, got {name!r}")
    v = value
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"glue {name!r}: a tensor must hold one value, got shape {tuple(v.shape)}")
        v = v.item()
    if isinstance(v, np.generic):
        v = v.item()
    if not isinstance(v, (bool, int, float, str)):
        raise TypeError(f"glue {name!r}: value must be a number or a string, got {type(value).__name__}")
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return None
    _glue(name, v, display=display)


# --------------------------------------------------------------------------- claims

def _as_bool(value, name: str) -> bool:
    """Accept a python, numpy or one-element torch boolean; reject anything merely truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value.item())
    raise TypeError(f"{name} must be a bool (e.g. the result of a comparison such as "
                    f"`rmse < 0.05`), got {type(value).__name__}: {value!r}")


@dataclass
class Claim:
    """One claim of the paper, checked at this profile.

    ``claim``: what is claimed, in words; ``paper``: the paper's number or statement;
    ``ours``: our measured value, formatted; ``passed``: whether ours reproduces it;
    ``reproduced=False``: recorded as not reproduced at this scale (explained on the page) and
    left out of the asserts. ``expected_to_fail``: why the claim is not expected to hold at this
    scale (a reason recorded before or beside the run, e.g. a profile knob); the run then decides
    the status: ``not reproduced`` if it fails, ``pass`` if it holds anyway, and ``ours`` says so.
    """

    claim: str
    paper: str
    ours: str
    passed: bool
    reproduced: bool = True
    expected_to_fail: str = ""

    def __post_init__(self):
        for name in ("claim", "paper", "ours"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Claim.{name} must be a str, got {type(value).__name__}: {value!r}"
                                + (" (format numbers yourself, e.g. f'{x:.3f}')" if name != "claim" else ""))
            if not value.strip():
                raise ValueError(f"Claim.{name} must not be empty")
        self.passed = _as_bool(self.passed, "Claim.passed")
        self.reproduced = _as_bool(self.reproduced, "Claim.reproduced")
        if not isinstance(self.expected_to_fail, str):
            raise TypeError(f"Claim.expected_to_fail must be a str (the reason), got {type(self.expected_to_fail).__name__}")
        if self.expected_to_fail.strip():
            if not self.reproduced:
                raise ValueError("give either reproduced=False or expected_to_fail (the reason), not both")
            self.ours += (f" [expected not to hold at this scale: {self.expected_to_fail.strip()}; "
                          + ("it held nonetheless]" if self.passed else "it did not]"))
            self.reproduced = self.passed

    @property
    def status(self) -> str:
        """``pass``, ``FAIL`` or ``not reproduced``."""
        if not self.reproduced:
            return "not reproduced"
        return "pass" if self.passed else "FAIL"


def _validate(stem, claims, profile) -> str:
    if not isinstance(stem, str) or not stem.strip():
        raise ValueError(f"stem must be the notebook's file name without extension "
                         f"(e.g. '03_linearity'), got {stem!r}")
    if "/" in stem or "\\" in stem or stem.endswith(".ipynb"):
        raise ValueError(f"stem must be a bare notebook name such as '03_linearity', got {stem!r}")
    if not isinstance(claims, (list, tuple)) or not claims:
        raise ValueError(f"claims must be a non-empty list of utils.book.Claim, got {claims!r}")
    bad = [i for i, c in enumerate(claims) if not isinstance(c, Claim)]
    if bad:
        raise TypeError(f"claims[{bad[0]}] is a {type(claims[bad[0]]).__name__}, expected "
                        f"utils.book.Claim(claim, paper, ours, passed, reproduced=True)")
    name = getattr(profile, "name", profile)
    if name not in profiles.NAMES:
        raise ValueError(f"profile must be the Profile returned by utils.book.setup (or one of "
                         f"{profiles.NAMES}), got {profile!r}")
    return name


def record_claims(stem: str, claims: list[Claim], profile) -> None:
    """Write ``results_dir()/<stem>.json``, show the claims as a table, assert them at cpu/colab/gpu.

    ``profile`` is the :class:`~utils.profiles.Profile` returned by :func:`setup` (a profile name
    is accepted too). Raises ``AssertionError`` naming every claim that is marked as reproduced
    but did not pass, at the profiles of :data:`ASSERTED_PROFILES` at their full budget only.
    """
    name = _validate(stem, claims, profile)
    asserted = name in ASSERTED_PROFILES and getattr(profile, "budget", "full") == "full"
    rows = [dict(asdict(c), profile=name) for c in claims]
    rows = [{k: r[k] for k in LEDGER_KEYS} for r in rows]
    path = paths.results_dir() / f"{stem}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

    _display(ClaimsTable(claims, name, asserted))

    if asserted:
        failed = [c for c in claims if c.reproduced and not c.passed]
        if failed:
            lines = "\n".join(f"  - {c.claim}: paper {c.paper}, ours {c.ours}" for c in failed)
            raise AssertionError(f"{len(failed)} of {len(claims)} claims of {stem} failed at profile "
                                 f"{name!r} (ledger written to {path}):\n{lines}")


class ClaimsTable:
    """Rich display of a list of claims (HTML in notebooks and the book, text elsewhere)."""

    COLOUR = {"pass": "#1a7f37", "FAIL": "#cf222e", "not reproduced": "#6e7781"}

    def __init__(self, claims: list[Claim], profile_name: str, asserted: bool | None = None):
        self.claims, self.profile = list(claims), profile_name
        self.asserted = profile_name in ASSERTED_PROFILES if asserted is None else asserted

    def summary(self) -> str:
        ok = sum(c.status == "pass" for c in self.claims)
        text = f"{ok} / {len(self.claims)} claims reproduced at profile {self.profile}"
        if not self.asserted:
            text += " (not asserted at this profile)"
        return text

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("claim", "paper", "ours", "result"))
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{esc(v)}</td>" for v in (c.claim, c.paper, c.ours))
            + f"<td style='text-align:left;white-space:nowrap;font-weight:bold;color:{self.COLOUR[c.status]}'>"
            f"{c.status}</td></tr>"
            for c in self.claims)
        return (f"<p><strong>{esc(self.summary())}</strong></p>"
                f"<table class='claims-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        lines = [self.summary()]
        lines += [f"- [{c.status}] {c.claim} | paper: {c.paper} | ours: {c.ours}" for c in self.claims]
        return "\n".join(lines)


def _display(obj) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
        if get_ipython() is not None:
            display(obj)
            return
    except ImportError:
        pass
    print(repr(obj))
