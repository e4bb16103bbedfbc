"""What every chapter notebook calls: :func:`setup` at the top, :func:`record_claims` at the end.

Notebook conventions (tests/test_pipeline.py checks 1-3 and 6 for every chapter in ``_toc.yml``):

1. A markdown cell ``# Title``, then a short intro: prerequisites and time to run per profile.
2. The first code cell is exactly :data:`utils.colab.FIRST_CELL` (it installs the repo on Colab
   and does nothing elsewhere).
3. A code cell tagged ``parameters`` holding ``profile = "auto"`` and ``seed = 0``
   (papermill injects ``profile = "cpu"`` / ``"smoke"`` after it).
4. The next cell: ``import utils``, ``P = utils.book.setup(profile, seed)`` and
   ``S = <chapter module>.settings(P)`` (the chapter's typed, validated settings).
5. Theory -> code -> claim, in thin cells that call ``utils``; no helper code pasted between
   notebooks.
6. The last code cell builds the chapter's ``Results`` and calls
   ``utils.book.record_claims("<notebook stem>", <module>.claims(results, S), P)``.

At the ``cpu``, ``colab`` and ``gpu`` profiles :func:`record_claims` raises if a claim's status is
``FAIL`` (it failed and the profile recorded no reason to expect that), so ``make book`` fails on
broken science (not under the smoke budget of ``utils.profiles``, which cuts a profile's sizes and
steps to test its code paths). A claim that honest effort cannot reproduce at a scale carries the
reason in the settings' ``expected_to_fail``, written before the run: it is *not reproduced* if it
fails and *pass* if it holds; a threshold is never moved to make the build green. At ``smoke``
nothing is asserted. Claims themselves: :mod:`utils.claims`.
"""
from __future__ import annotations

import html
import json
import os
import platform
import random
import subprocess
import sys

import numpy as np
import torch

from . import paths, plotting, profiles
from .claims import Claim, all_of, check_claims, compare, expected  # noqa: F401  (re-exported for notebooks)

ASSERTED_PROFILES = ("cpu", "colab", "gpu")


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
    they are. Returns None (so that a cell ending in ``glue(...)`` shows nothing).

    Where ``myst_nb`` is not installed (Colab: the kernel gets no Sphinx stack), nothing can be stored
    and the ``{glue}`` roles of the markdown show raw, so the value is **printed** instead, as
    ``name = value`` (:func:`glue_text`): a Colab reader sees every number the prose quotes, measured by
    their own run."""
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
        print(glue_text(name, v), flush=True)
        return None
    _glue(name, v, display=display)


def glue_text(name: str, value) -> str:
    """The line :func:`glue` prints where ``myst_nb`` is missing: ``name = value``, a float with 6
    significant digits (the prose's format specs round further), an int with thousands separators."""
    if isinstance(value, float):
        shown = f"{value:.6g}"
    elif isinstance(value, int) and not isinstance(value, bool):
        shown = f"{value:,d}"
    else:
        shown = str(value)
    return f"{name} = {shown}"


def key_figure(fig) -> None:
    """Mark ``fig`` (a matplotlib figure) as the chapter's key figure: glued under the name
    ``key_figure`` so the result box the build puts at the top of the page (``scripts/build_book.py``)
    can show it. Call it in the cell that draws the figure, before ``plt.show()``. A no-op without
    myst_nb (Colab)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return None
    _glue("key_figure", fig, display=False)


# --------------------------------------------------------------------------- claims

def strict_claims() -> bool:
    """Whether a failing claim raises (headless runs: ``make book``, papermill, tests) or is reported
    in one clear message (an interactive Colab session, where a traceback after an hour of work helps
    nobody). ``HGB_STRICT_CLAIMS=1`` / ``0`` overrides."""
    flag = os.environ.get("HGB_STRICT_CLAIMS", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return "google.colab" not in sys.modules


def record_claims(stem: str, claims: list[Claim], profile) -> list[Claim]:
    """Write ``results_dir()/<stem>.json``, show the claims as a table, assert them at cpu/colab/gpu.

    On Colab with ``KEEP_ON_DRIVE`` the ledger goes to Google Drive (``utils.colab.use_drive`` points
    ``HGB_RESULTS_DIR`` there), and Drive is flushed after it is written (:func:`utils.colab.flush_drive`):
    this is the chapter's last cell.

    ``claims`` is what the chapter module's ``claims(results, settings)`` returned; ``profile`` the
    :class:`~utils.profiles.Profile` returned by :func:`setup` (a profile name is accepted too). At the
    profiles of :data:`ASSERTED_PROFILES` at their full budget a claim with status ``FAIL`` raises
    ``AssertionError`` naming it (headless), or is marked in the table and summed up in one message
    (interactive Colab, see :func:`strict_claims`). Returns the claims.
    """
    if not isinstance(stem, str) or not stem.strip():
        raise ValueError(f"stem must be the notebook's file name without extension "
                         f"(e.g. '03_linearity'), got {stem!r}")
    if "/" in stem or "\\" in stem or stem.endswith(".ipynb"):
        raise ValueError(f"stem must be a bare notebook name such as '03_linearity', got {stem!r}")
    claims = check_claims(claims, stem)
    name = getattr(profile, "name", profile)
    if name not in profiles.NAMES:
        raise ValueError(f"profile must be the Profile returned by utils.book.setup (or one of "
                         f"{profiles.NAMES}), got {profile!r}")
    budget = getattr(profile, "budget", "full")
    asserted = name in ASSERTED_PROFILES and budget == "full"
    rows = [c.row(name, budget) for c in claims]
    path = paths.results_dir() / f"{stem}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

    _display(ClaimsTable(claims, name, asserted))
    if os.environ.get("HGB_DRIVE_MOUNT"):       # Colab with KEEP_ON_DRIVE: the chapter ends here
        from .colab import flush_drive
        flush_drive()

    failed = [c for c in claims if c.status == "FAIL"]
    if asserted and failed:
        lines = "\n".join(f"  - {c.id}: {c.claim}: paper {c.paper}, ours {c.ours}" for c in failed)
        message = (f"{len(failed)} of {len(claims)} claims of {stem} failed at profile {name!r} "
                   f"(ledger written to {path}):\n{lines}")
        if strict_claims():
            raise AssertionError(message)
        print("\n" + message + "\nThe table above marks them FAIL. At this scale the chapter's numbers did "
              "not reproduce these claims: see the chapter's text for what each measures.")
    return claims


class ClaimsTable:
    """Rich display of a list of claims (HTML in notebooks and the book, text elsewhere)."""

    COLOUR = {"pass": "#1a7f37", "pass (marginal)": "#9a6700", "FAIL": "#cf222e", "not reproduced": "#6e7781"}

    def __init__(self, claims: list[Claim], profile_name: str, asserted: bool | None = None):
        self.claims, self.profile = list(claims), profile_name
        self.asserted = profile_name in ASSERTED_PROFILES if asserted is None else asserted

    def summary(self) -> str:
        paper = [c for c in self.claims if c.kind == "paper"]
        other = [c for c in self.claims if c.kind != "paper"]
        ok = lambda cs: sum(c.status in ("pass", "pass (marginal)") for c in cs)   # noqa: E731
        marginal = sum(c.status == "pass (marginal)" for c in self.claims)
        text = (f"paper claims reproduced: {ok(paper)} of {len(paper)}; checks and controls holding: "
                f"{ok(other)} of {len(other)}" + (f" ({marginal} marginal)" if marginal else "")
                + f" -- profile {self.profile}")
        if not self.asserted:
            text += " (not asserted at this profile)"
        return text

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("claim", "kind", "paper", "ours", "result"))

        def kind(c):
            ref = ", ".join(f"Fig. {f}" for f in c.figures) or c.where
            return esc(c.kind) + (f"<br><small>{esc(ref)}</small>" if c.kind == "paper" and ref else "")

        body = "".join(
            f"<tr id='claim-{esc(c.id.replace('.', '-'))}'>"
            f"<td style='text-align:left'>{esc(c.claim)}<br><small><code>{esc(c.id)}</code></small></td>"
            f"<td style='text-align:left'>{kind(c)}</td>"
            + "".join(f"<td style='text-align:left'>{esc(v)}</td>" for v in (c.paper, c.ours_text))
            + f"<td style='text-align:left;white-space:nowrap;font-weight:bold;color:{self.COLOUR[c.status]}'>"
            f"{c.status}</td></tr>"
            for c in self.claims)
        return (f"<p><strong>{esc(self.summary())}</strong></p>"
                f"<table class='claims-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        lines = [self.summary()]
        lines += [f"- [{c.status}] {c.id} ({c.kind}) {c.claim} | paper: {c.paper} | ours: {c.ours_text}"
                  for c in self.claims]
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
