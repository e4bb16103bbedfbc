"""Claims: what each chapter asserts, with a stable id, a kind and a verdict that comes from a measurement.

Every chapter module defines ``claims(results, settings) -> list[Claim]`` (``results``: a dataclass of
the chapter's computed numbers; ``settings``: its ``Settings``) and lists the ids it can return in
``CLAIM_IDS``. A claim has

* ``id`` -- stable, ``"ch<N>.<snake_case>"`` (e.g. ``"ch3.min_linearity_rises"``);
* ``kind`` -- ``"paper"`` (a statement a paper makes: Li, Dai & Qu unless ``source`` names another,
  with the figure(s) or section it reproduces), ``"check"`` (an identity of the math or of the code)
  or ``"control"`` (the book's own control, transfer or ablation);
* ``figures`` -- for ``paper`` claims of the paper (source ``li2024understanding``): the numbers of its
  figures (1-30, arXiv v5) that the claim reproduces; ``where`` -- the section, table or figure in
  words (required when there is no figure number, e.g. "App. D" or an anchor paper's "Table 1");
* ``claim``, ``paper``, ``ours`` -- the statement, the source's number or statement, our measurement;
* ``passed`` -- whether our measurement satisfies the claim, computed by the chapter's ``claims``;
* ``margin`` -- how far the deciding number lies from its threshold, relative to the threshold
  (positive when it passes; :func:`compare`); a pass with ``margin < MARGINAL`` is shown as
  *pass (marginal)* and counted separately;
* ``expected_to_fail`` -- the reason, written in the profile's settings block *before* the run, why
  the claim is not expected to hold at this scale; the run still decides: *not reproduced* if it
  fails, *pass* if it holds anyway. Never computed from the run's own numbers.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

KINDS = ("paper", "check", "control")
PAPER = "li2024understanding"          # bib key of the paper the book reproduces
PAPER_FIGURES = range(1, 31)           # its figures (arXiv v5)
# A pass whose deciding number lies within this fraction of its threshold is "pass (marginal)".
MARGINAL = 0.05
STATUSES = ("pass", "pass (marginal)", "not reproduced", "FAIL")
ID_PATTERN = re.compile(r"^ch(\d+)\.[a-z][a-z0-9_]*$")
LEDGER_KEYS = ("id", "kind", "figures", "where", "source", "claim", "paper", "ours", "profile", "budget",
               "status", "passed", "margin", "expected_to_fail")


def as_bool(value, name: str) -> bool:
    """Accept a python, numpy or one-element torch boolean; reject anything merely truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.numel() == 1:
        return bool(value.item())
    raise TypeError(f"{name} must be a bool (e.g. the result of a comparison such as "
                    f"`rmse < 0.05`), got {type(value).__name__}: {value!r}")


# --------------------------------------------------------------------------- verdicts with a margin

@dataclass(frozen=True)
class Test:
    """The verdict of one comparison: ``passed`` and the relative ``margin`` (see :func:`compare`)."""

    passed: bool
    margin: float | None


OPS = ("<", "<=", ">", ">=")


def compare(value, op: str, threshold) -> Test:
    """``value op threshold`` with its relative margin: ``(threshold - value) / |threshold|`` for
    ``<``/``<=``, ``(value - threshold) / |threshold|`` for ``>``/``>=`` (positive when it passes; the
    absolute difference when the threshold is 0). A NaN on either side fails, with margin NaN."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    v, t = float(value), float(threshold)
    if math.isnan(v) or math.isnan(t):
        return Test(False, float("nan"))
    passed = {"<": v < t, "<=": v <= t, ">": v > t, ">=": v >= t}[op]
    diff = (t - v) if op in ("<", "<=") else (v - t)
    margin = diff / abs(t) if t != 0 and math.isfinite(t) else diff
    return Test(bool(passed), float(margin))


def all_of(*tests: Test) -> Test:
    """Every test passes; the margin is the smallest of theirs (the closest call decides)."""
    if not tests:
        raise ValueError("all_of needs at least one Test")
    margins = [t.margin for t in tests if t.margin is not None]
    return Test(all(t.passed for t in tests), min(margins) if margins else None)


# --------------------------------------------------------------------------- the claim

@dataclass(kw_only=True)
class Claim:
    """One claim, checked at this profile (see the module docstring for every field)."""

    id: str
    kind: str
    claim: str
    paper: str
    ours: str
    passed: bool
    figures: tuple = ()
    where: str = ""
    source: str = PAPER
    margin: float | None = None
    expected_to_fail: str = ""

    def __post_init__(self):
        if not isinstance(self.id, str) or not ID_PATTERN.match(self.id):
            raise ValueError(f"Claim.id must look like 'ch3.min_linearity_rises' (ch<N>.<snake_case>), got {self.id!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("claim", "paper", "ours"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Claim {self.id}: {name} must be a str, got {type(value).__name__}: {value!r}"
                                + (" (format numbers yourself, e.g. f'{x:.3f}')" if name != "claim" else ""))
            if not value.strip():
                raise ValueError(f"Claim {self.id}: {name} must not be empty")
        self.passed = as_bool(self.passed, f"Claim {self.id}: passed")
        figs = tuple(self.figures) if isinstance(self.figures, (list, tuple)) else (self.figures,)
        if any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or int(f) not in PAPER_FIGURES
               for f in figs):
            raise ValueError(f"Claim {self.id}: figures must be the paper's figure numbers "
                             f"({PAPER_FIGURES.start}-{PAPER_FIGURES.stop - 1}), got {self.figures!r}")
        self.figures = tuple(int(f) for f in figs)
        if not isinstance(self.where, str) or not isinstance(self.source, str) or not self.source:
            raise TypeError(f"Claim {self.id}: where and source must be strings (source a bib key)")
        if self.kind == "paper":
            if self.source == PAPER and not (self.figures or self.where.strip()):
                raise ValueError(f"Claim {self.id}: a paper claim names the figure(s) (figures=(4,)) or the "
                                 f"section (where='App. D') it reproduces")
            if self.source != PAPER and not self.where.strip():
                raise ValueError(f"Claim {self.id}: a claim of {self.source} names where that paper states it")
        if self.margin is not None:
            if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float, np.floating)):
                raise TypeError(f"Claim {self.id}: margin must be a number or None, got {self.margin!r}")
            self.margin = float(self.margin)
        if not isinstance(self.expected_to_fail, str):
            raise TypeError(f"Claim {self.id}: expected_to_fail must be a str (the reason), "
                            f"got {type(self.expected_to_fail).__name__}")

    @property
    def marginal(self) -> bool:
        """A pass whose deciding number lies within :data:`MARGINAL` of its threshold."""
        return bool(self.passed and self.margin is not None and math.isfinite(self.margin)
                    and self.margin < MARGINAL)

    @property
    def status(self) -> str:
        """``pass``, ``pass (marginal)``, ``not reproduced`` (expected to fail, and failed) or ``FAIL``."""
        if self.passed:
            return "pass (marginal)" if self.marginal else "pass"
        return "not reproduced" if self.expected_to_fail.strip() else "FAIL"

    @property
    def ours_text(self) -> str:
        """``ours``, with the recorded expectation and how the run turned out."""
        if not self.expected_to_fail.strip():
            return self.ours
        return (f"{self.ours} [expected not to hold at this scale: {self.expected_to_fail.strip()}; "
                + ("it held nonetheless]" if self.passed else "it did not]"))

    def row(self, profile: str, budget: str = "full") -> dict:
        """The claim's row of the results ledger (JSON)."""
        d = asdict(self)
        d.update(figures=list(self.figures), ours=self.ours_text, profile=profile, budget=budget,
                 status=self.status)
        if d["margin"] is not None and not math.isfinite(d["margin"]):
            d["margin"] = None
        return {k: d[k] for k in LEDGER_KEYS}


def expected(settings, claim_id: str) -> str:
    """The reason the profile's settings record, before the run, for ``claim_id`` (full id or its part
    after the chapter prefix) not to hold; ``""`` if none."""
    reasons = getattr(settings, "expected_to_fail", None) or {}
    short = claim_id.split(".", 1)[-1]
    return reasons.get(claim_id, reasons.get(short, ""))


def check_claims(claims, stem: str | None = None) -> list[Claim]:
    """``claims`` as a list, checked: every item a :class:`Claim`, ids unique, and (given the notebook
    ``stem``, e.g. ``"03_linearity"``) every id in that chapter's namespace ``ch3.``."""
    if not isinstance(claims, (list, tuple)) or not claims:
        raise ValueError(f"claims must be a non-empty list of utils.claims.Claim, got {claims!r}")
    bad = [i for i, c in enumerate(claims) if not isinstance(c, Claim)]
    if bad:
        raise TypeError(f"claims[{bad[0]}] is a {type(claims[bad[0]]).__name__}, expected utils.claims.Claim")
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"claim ids must be unique, repeated: {dup}")
    if stem is not None:
        m = re.match(r"(\d+)_", stem)
        if m:
            prefix = f"ch{int(m.group(1))}."
            wrong = [i for i in ids if not i.startswith(prefix)]
            if wrong:
                raise ValueError(f"claims of {stem} must have ids starting with {prefix!r}, got {wrong}")
    return list(claims)


def counts(rows) -> dict:
    """``{status: count}`` over ledger rows or claims."""
    status = [r["status"] if isinstance(r, dict) else r.status for r in rows]
    return {s: status.count(s) for s in STATUSES}


def is_reproduced(status: str) -> bool:
    return status in ("pass", "pass (marginal)")
