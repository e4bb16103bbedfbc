"""The three noise regimes (low / intermediate / high), defined once from the data's covariance spectrum.

The paper splits sigma into a low regime [0.002, 0.1], an intermediate one [0.1, 20] and a high one
[20, 80] for FFHQ 64x64 (paper §3.1, Fig. 2). Those numbers are in pixel units of one dataset; the
book needs a definition that transfers to 8x8 digits, 16x16 patches and CIFAR-10. It reads the
boundaries off what the Gaussian denoiser D_G does to each principal component: D_G multiplies
component k by lambda_k / (lambda_k + sigma^2), which is above one half ("kept") exactly when
lambda_k > sigma^2. So:

* **high** (sigma > sigma_high = sqrt(lambda_1)): D_G halves even the top component; its output is
  essentially the mean plus a small linear correction (paper: D_theta ~ D_G ~ D_M there);
* **low** (sigma < sigma_low = sqrt(lambda_k*), with k* the fewest top components that carry
  :data:`VARIANCE_KEPT` = 99 % of the data's variance): every component that matters is kept, so
  D_G is the identity on the data up to 1 % of its variance (paper: D_theta ~ identity, App. D);
* **intermediate**: in between, D_G keeps some components and suppresses others -- the regime in
  which a trajectory decides which image it ends in.

For 16x16 natural-image patches this gives sigma_low ~ 0.1, the paper's value; for 8x8 digits
[0.17, 1.67]. The rule is fixed here, before any claim is measured, and every chapter uses it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

VARIANCE_KEPT = 0.99          # the low regime keeps the components carrying 99 % of the variance
NAMES = ("low", "intermediate", "high")


@dataclass(frozen=True)
class Regimes:
    """Boundaries sigma_low < sigma_high; ``bands`` maps each regime name to its closed interval."""

    sigma_low: float
    sigma_high: float
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    source: str = ""

    def __post_init__(self):
        if not (0 < self.sigma_low < self.sigma_high):
            raise ValueError(f"need 0 < sigma_low < sigma_high, got {self.sigma_low}, {self.sigma_high}")

    @property
    def bands(self) -> dict:
        """``{"low": (sigma_min, sigma_low), "intermediate": (...), "high": (sigma_high, sigma_max)}``."""
        return {"low": (self.sigma_min, self.sigma_low),
                "intermediate": (self.sigma_low, self.sigma_high),
                "high": (self.sigma_high, self.sigma_max)}

    @property
    def intermediate(self) -> tuple:
        return self.bands["intermediate"]

    def name(self, sigma: float) -> str:
        """The regime of one noise level (a boundary belongs to the intermediate regime)."""
        s = float(sigma)
        if s < self.sigma_low:
            return "low"
        return "high" if s > self.sigma_high else "intermediate"

    def mask(self, sigmas, band: str = "intermediate") -> np.ndarray:
        """Boolean mask of the ``sigmas`` that lie in regime ``band``."""
        if band not in NAMES:
            raise ValueError(f"band must be one of {NAMES}, got {band!r}")
        s = np.asarray(torch.as_tensor(sigmas, dtype=torch.float64).flatten())
        return np.array([self.name(v) == band for v in s], dtype=bool)

    def mean(self, sigmas, values, band: str = "intermediate") -> np.ndarray:
        """Mean of ``values[..., j]`` over the sigmas of regime ``band`` (the band summary of a curve).

        ``values`` may be one curve (n_sigmas,) or a stack (..., n_sigmas), e.g. per input or per
        checkpoint; the result drops the last axis."""
        m = self.mask(sigmas, band)
        v = np.asarray(values, dtype=float)
        if v.shape[-1] != m.shape[0]:
            raise ValueError(f"values has {v.shape[-1]} columns but there are {m.shape[0]} sigmas")
        if not m.any():
            raise ValueError(f"no sigma of {np.round(np.asarray(sigmas, dtype=float), 4).tolist()} lies in the "
                             f"{band} regime {self.bands[band]}")
        return v[..., m].mean(-1)

    def describe(self) -> str:
        lo, hi = self.sigma_low, self.sigma_high
        return (f"low sigma < {lo:.3g} <= intermediate <= {hi:.3g} < high"
                + (f"  ({self.source})" if self.source else ""))


def from_eigvals(eigvals, variance_kept: float = VARIANCE_KEPT, source: str = "") -> Regimes:
    """The regimes of a covariance spectrum ``eigvals`` (any order, >= 0): see the module docstring."""
    lam = torch.as_tensor(eigvals, dtype=torch.float64).flatten()
    if not torch.isfinite(lam).all():
        raise ValueError("eigvals must be finite (a covariance spectrum), got nan or inf")
    lam = lam.clamp_min(0).sort(descending=True).values
    if lam.numel() == 0 or not float(lam[0]) > 0:
        raise ValueError("eigvals must hold at least one positive eigenvalue")
    if not 0 < variance_kept < 1:
        raise ValueError(f"variance_kept must lie in (0, 1), got {variance_kept}")
    frac = lam.cumsum(0) / lam.sum()
    k = int((frac < variance_kept).sum())          # index of the component where the fraction is reached
    return Regimes(sigma_low=math.sqrt(float(lam[k])), sigma_high=math.sqrt(float(lam[0])), source=source)


@lru_cache(maxsize=None)
def of_dataset(name: str) -> Regimes:
    """The regimes of dataset ``name``, from the covariance of its whole training split (so every
    model of a ladder, whatever its N, is summarised over the same band)."""
    from .data import load
    from .denoisers import GaussianDenoiser

    return from_eigvals(GaussianDenoiser.fit(load(name)).eigvals, source=f"{name}, whole training split")


def scaled_sigma(sigma: float, d_from: int, d_to: int) -> float:
    """``sigma * sqrt(d_to / d_from)``: a noise level carried from images of d_from pixels to images of
    d_to pixels at the same pixel range. The variance of a smooth, image-wide pattern along its
    unit-norm direction grows with the number of pixels it covers, so the leading eigenvalues of
    Sigma scale like d; keeping lambda_k / sigma^2 (what D_G's shrinkage depends on) fixed scales
    sigma by sqrt(d_to / d_from). Only meaningful for the image-wide (top) components."""
    if not (sigma > 0 and d_from > 0 and d_to > 0):
        raise ValueError(f"sigma, d_from and d_to must be > 0, got {sigma}, {d_from}, {d_to}")
    return float(sigma) * math.sqrt(d_to / d_from)


FFHQ_D = 64 * 64 * 3          # the paper's FFHQ images, on which its bands were read off

# The paper's own bands on FFHQ 64x64 (shown beside ours; never used for a claim).
PAPER_FFHQ = Regimes(sigma_low=0.1, sigma_high=20.0, source="paper, FFHQ 64x64")
