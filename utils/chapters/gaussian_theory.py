"""Chapter 1's executable theory: Tweedie, Theorem 1 and its gradient-descent dynamics, the N < d
projection, sampler convergence to the closed-form Gaussian flow, and the tower-property control.

Everything here works on any denoiser of the protocol ``D(x, sigma) -> x_hat`` (paper.md §2-4).

* :func:`empirical_log_density`, :func:`gaussian_log_density`, :func:`tweedie_error` --
  grad log p(x; s) = (D(x; s) - x) / s^2 for D_M and D_G, checked by autograd.
* :func:`gd_predicted_error` -- the theory's error curve of gradient descent on the DSM loss of an
  affine denoiser (``utils.distill.train_affine_dsm``, Theorem 1); :func:`gd_steps_needed` inverts it.
* :func:`regime_scale` -- the noise regimes of ``utils.regimes`` for a dataset, beside the paper's
  FFHQ band mapped to the same scale.
* :func:`lowsigma_residual` -- RMSE(D_G(x; s_min), x) on held-out and training inputs against the
  training-set size N (paper App. F.1, Fig. 16: non-zero iff N < d).
* :func:`gaussian_ode_reference`, :func:`solver_errors`, :func:`convergence_order` -- the closed-form
  probability-flow solution under D_G (paper eq. 7) as the reference for Euler and Heun.
* :func:`affine_fit_errors` -- the tower-property control (paper.md §4.4): distil a teacher with
  :func:`utils.distill.fit_affine` and measure the weight error to W_G and its Monte-Carlo error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import as_images, as_sigma, positive_int, flat64
from ..denoisers import GaussianDenoiser
from ..distill import fit_affine
from ..edm import sample, sigma_steps
from ..metrics import loglog_fit, sample_similarity
from ..regimes import FFHQ_D, PAPER_FFHQ, from_eigvals, scaled_sigma
from ..settings import ChapterSettings



# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 1's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences."""

    CHAPTER = "ch1"
    n_train: int = 1500                       # training images of the closed-form experiments
    gd_sigmas: list[float] = field(default_factory=lambda: [0.1166, 0.47, 1.5017, 4.0661, 21.1087])
    gd_steps: int = 2000                      # gradient-descent steps of Theorem 1's affine DSM run
    adam_steps: int = 2000
    adam_batch: int = 256
    adam_lr: float = 1e-2
    train_dtype: str = "float64"              # dtype of the affine DSM runs
    solver_steps: list[int] = field(default_factory=lambda: [5, 10, 18, 40, 80, 160, 320])
    lowsigma_datasets: list[str] = field(default_factory=lambda: ["digits", "patches"])
    lowsigma_ratios: list[float] = field(default_factory=lambda: [1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1, 1.5, 2, 4, 16])
    tower_n_train: int = 1500
    tower_sigmas: list[float] = field(default_factory=lambda: [0.0204, 0.1166, 0.47, 1.5017, 4.0661, 9.7232])
    tower_claim_sigma: float = 0.1166
    tower_n_noise: int = 32
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(n_train=300, gd_sigmas=[0.47, 4.0661], gd_steps=50, adam_steps=50, adam_batch=64,
                      solver_steps=[5, 10, 20], lowsigma_datasets=["digits"], lowsigma_ratios=[0.25, 1.0, 4.0],
                      tower_n_train=200, tower_sigmas=[0.1166, 4.0661], tower_n_noise=2),
        "cpu": {},
        "colab": dict(n_train=10000, gd_sigmas=[0.47, 1.5017, 4.0661, 21.1087], gd_steps=8000, adam_steps=4000,
                      adam_lr=1e-3, train_dtype="float32", lowsigma_datasets=["mnist"],
                      lowsigma_ratios=[1 / 16, 1 / 4, 1 / 2, 3 / 4, 1, 1.5, 2, 4], tower_n_train=1000,
                      tower_sigmas=[0.1166, 1.5017], tower_n_noise=1000),
        "gpu": dict(n_train=50000, gd_sigmas=[0.47, 1.5017, 4.0661, 21.1087], gd_steps=8000, adam_steps=4000,
                    adam_lr=1e-3, train_dtype="float32", lowsigma_datasets=["cifar10"],
                    lowsigma_ratios=[1 / 16, 1 / 4, 1 / 2, 3 / 4, 1, 1.5, 2, 4], tower_n_train=1000,
                    tower_sigmas=[0.1166, 1.5017], tower_n_noise=1000),
    }

    def validate(self):
        if self.train_dtype not in ("float32", "float64"):
            raise ValueError(f"train_dtype must be 'float32' or 'float64', got {self.train_dtype!r}")
        if self.tower_claim_sigma not in self.tower_sigmas:
            raise ValueError(f"tower_claim_sigma {self.tower_claim_sigma} must be one of tower_sigmas {self.tower_sigmas}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def runs(P, seed: int = 0) -> list:
    """Chapter 1 trains no network: everything here is closed form."""
    return []


# --------------------------------------------------------------------------- Tweedie

def empirical_log_density(x: torch.Tensor, train: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p(x; s) of the noised empirical distribution (1/N) sum_i N(y_i, s^2 I), per row of x.

    Differentiable in x (float64); the additive constant -d/2 log(2 pi s^2) is included.
    """
    as_images(train, "train")
    s = float(as_sigma(sigma, 1)[0])
    q = x.reshape(x.shape[0], -1).to(torch.float64)
    y = flat64(train)
    sq = torch.cdist(q, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d = q.shape[1]
    return torch.logsumexp(-sq / (2 * s * s), dim=1) - math.log(len(y)) - 0.5 * d * math.log(2 * math.pi * s * s)


def gaussian_log_density(x: torch.Tensor, gauss: GaussianDenoiser, sigma: float) -> torch.Tensor:
    """log N(x; mu, Sigma + s^2 I): the noised Gaussian model, per row of x (differentiable)."""
    s = float(as_sigma(sigma, 1)[0])
    q = x.reshape(x.shape[0], -1).to(torch.float64)
    var = gauss.eigvals.to(q.device) + s * s
    coeff = (q - gauss.mean.to(q.device)) @ gauss.eigvecs.to(q.device)
    return -0.5 * ((coeff ** 2 / var).sum(1) + var.log().sum() + q.shape[1] * math.log(2 * math.pi))


def score_autograd(log_density, x: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x) by autograd (float64), shaped like x. ``log_density(x) -> (B,)``."""
    with torch.enable_grad():
        q = x.detach().to(torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(q).sum(), q)
    return grad


def tweedie_error(denoiser, log_density, x: torch.Tensor, sigma: float) -> float:
    """max_i ||grad log p(x_i) - (D(x_i) - x_i)/s^2|| / ||grad log p(x_i)||  (Tweedie's relation)."""
    as_images(x)
    s = float(as_sigma(sigma, 1)[0])
    score = flat64(score_autograd(log_density, x))
    with torch.inference_mode():
        tweedie = (flat64(denoiser(x.to(torch.float64), s)) - flat64(x)) / s ** 2
    return float(((score - tweedie).norm(dim=1) / score.norm(dim=1).clamp_min(1e-300)).max())


# --------------------------------------------------------------------------- Theorem 1

def contraction_factors(eigvals: torch.Tensor, sigma: float, lr: float) -> torch.Tensor:
    """|1 - 2 lr (lambda_k + s^2)|: the per-step contraction of GD's error along principal direction k."""
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    return (1 - 2 * lr * (lam + s * s)).abs()


def gd_predicted_error(eigvals: torch.Tensor, sigma: float, lr: float, steps) -> torch.Tensor:
    """Theory's ||W_t - W_G||_F / ||W_G||_F for GD from W_0 = 0 on the exact centred DSM loss.

    The error evolves as E_t = E_0 (I - 2 lr (Sigma + s^2 I))^t with E_0 = -W_G, so in the
    eigenbasis of Sigma direction k keeps the fraction r_k^t, r_k = 1 - 2 lr (lambda_k + s^2), of its
    initial error s_k = lambda_k / (lambda_k + s^2):
    error(t)^2 = sum_k s_k^2 r_k^(2t) / sum_k s_k^2.
    """
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    shrink = lam / (lam + s * s)
    r = 1 - 2 * lr * (lam + s * s)
    t = torch.as_tensor(steps, dtype=torch.float64).reshape(-1, 1)
    num = (shrink ** 2 * r.abs() ** (2 * t)).sum(1)
    return (num / (shrink ** 2).sum()).sqrt()


def gd_steps_needed(eigvals: torch.Tensor, sigma: float, lr: float, tol: float = 1e-3,
                    max_steps: int = 10 ** 7) -> int:
    """The first step count at which :func:`gd_predicted_error` drops below ``tol`` (bisection)."""
    if gd_predicted_error(eigvals, sigma, lr, [max_steps])[0] >= tol:
        raise ValueError(f"GD needs more than {max_steps} steps to reach {tol:g} at sigma={sigma:g}")
    lo, hi = 0, max_steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gd_predicted_error(eigvals, sigma, lr, [mid])[0] < tol:
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- noise regimes

def kept_variance(eigvals, sigmas) -> torch.Tensor:
    """For each sigma, the fraction of the data's variance carried by the principal components that
    D_G keeps (lambda_k > sigma^2, shrinkage above one half): the scale ``utils.regimes`` reads the
    regime boundaries from (99 % kept: low/intermediate boundary; none kept: high)."""
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    return ((lam[None] > s[:, None] ** 2) * lam[None]).sum(1) / lam.sum()


def paper_band_mapped(d: int) -> tuple[float, float]:
    """The paper's FFHQ intermediate band carried over to images of d pixels: the lower end is a
    per-pixel noise level and stays; the upper end is where D_G drops the top (image-wide)
    component, so it moves with ``utils.regimes.scaled_sigma``."""
    positive_int(d, "d")
    band = PAPER_FFHQ.intermediate
    return float(band[0]), scaled_sigma(band[1], FFHQ_D, d)


def regime_scale(eigvals, d: int, source: str = "") -> dict:
    """The regimes of a spectrum (``utils.regimes.from_eigvals``) beside the paper's band mapped to
    the same d: ``{"ours": Regimes, "paper_mapped": (lo, hi), "kept_at": {sigma: kept variance}}``."""
    ours = from_eigvals(eigvals, source=source)
    mapped = paper_band_mapped(d)
    pts = [ours.sigma_low, ours.sigma_high, *mapped]
    return {"ours": ours, "paper_mapped": mapped,
            "kept_at": dict(zip(pts, kept_variance(eigvals, pts).tolist()))}


# --------------------------------------------------------------------------- N versus d

def lowsigma_sizes(n_total: int, d: int, ratios) -> list[int]:
    """Training-set sizes N = round(r d) for r in ``ratios`` (at least 2, at most ``n_total``), plus
    ``n_total`` itself: sorted and without duplicates."""
    positive_int(n_total, "n_total")
    positive_int(d, "d")
    return sorted({min(n_total, max(2, round(float(r) * d))) for r in ratios} | {n_total})


def lowsigma_residual(x_train: torch.Tensor, x_eval: torch.Tensor, sizes, sigma: float = 0.002,
                      seed: int = 0, n_train_eval: int | None = None) -> dict:
    """RMSE(D_G(x; s), x) = mean_x sqrt(||D_G(x; s) - x||^2 / d) against the training-set size N.

    For each N in ``sizes`` D_G is fitted on the first N images of one seeded permutation of
    ``x_train`` (nested subsets) and applied at noise level ``sigma`` (default: the smallest EDM
    sigma) to the clean held-out images ``x_eval`` and to (up to ``n_train_eval``) of the N training
    images themselves. As s -> 0, D_G -> mu + P_range(Sigma)(x - mu) and rank(Sigma) <= N - 1, so the
    held-out residual is the part of x - mu outside the span of the centred training set: non-zero
    iff N - 1 < d (paper App. F.1), while training images lie in the span (residual ~ 0).

    Returns a dict of lists: ``n``, ``rank`` (eigenvalues > 1e-10 lambda_max), ``heldout``, ``train``.
    """
    as_images(x_train, "x_train")
    as_images(x_eval, "x_eval")
    s = float(as_sigma(sigma, 1)[0])
    sizes = [positive_int(int(n), "sizes[i]") for n in sizes]
    if max(sizes) > len(x_train):
        raise ValueError(f"sizes go up to {max(sizes)} but x_train has {len(x_train)} images")
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    out = {"n": [], "rank": [], "heldout": [], "train": []}

    def resid(G, x):
        with torch.inference_mode():
            return float((flat64(G(x, s)) - flat64(x)).pow(2).mean(1).sqrt().mean())

    for n in sizes:
        sub = x_train[perm[:n].to(x_train.device)]
        G = GaussianDenoiser.fit(sub)
        lam = G.eigvals
        out["n"].append(n)
        out["rank"].append(int((lam > 1e-10 * lam.max().clamp_min(1e-300)).sum()))
        out["heldout"].append(resid(G, x_eval))
        out["train"].append(resid(G, sub[:n_train_eval] if n_train_eval else sub))
    return out


# --------------------------------------------------------------------------- samplers

def gaussian_ode_reference(gauss: GaussianDenoiser, x_T: torch.Tensor, sigmas) -> torch.Tensor:
    """What an exact ODE solver on ``sigmas`` would return under D_G: the closed-form flow (paper
    eq. 7) from sigmas[0] to sigmas[-1], followed by the samplers' own last step D_G(x; sigmas[-1]).

    (The flow all the way to s = 0 differs from this by a shrinkage lambda/(lambda + s_min^2) that
    only matters in directions with lambda <~ s_min^2.)
    """
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    with torch.inference_mode():
        x_min = gauss.flow(x_T, float(s[0]), float(s[-1]))
        return gauss(x_min, float(s[-1]))


def solver_errors(gauss: GaussianDenoiser, x_T: torch.Tensor, n_steps, solvers=("euler", "heun"),
                  sigma_min: float = 0.002, sigma_max: float = 80.0) -> dict:
    """RMSE between ``utils.edm.sample`` under D_G with n EDM steps and :func:`gaussian_ode_reference`.

    ``x_T`` is the initial state at ``sigma_max``. Returns ``{solver: {"n": [...], "nfe": [...],
    "rmse": [...]}}`` (NFE = n for Euler, 2n - 1 for Heun).
    """
    as_images(x_T, "x_T")
    ref = gaussian_ode_reference(gauss, x_T, [sigma_max, sigma_min])
    out = {}
    for solver in solvers:
        rec = {"n": [], "nfe": [], "rmse": []}
        for n in n_steps:
            x = sample(gauss, x_T, sigma_steps(int(n), sigma_min, sigma_max), solver=solver)
            rec["n"].append(int(n))
            rec["nfe"].append(int(n) if solver == "euler" else 2 * int(n) - 1)
            rec["rmse"].append(sample_similarity(x, ref)["rmse"])
        out[solver] = rec
    return out


def convergence_order(n_steps, errors, last: int = 3) -> float:
    """The order -d log(error) / d log(n) fitted over the ``last`` points (1 for Euler, 2 for Heun)."""
    return -loglog_fit(list(n_steps)[-last:], list(errors)[-last:])["slope"]


# --------------------------------------------------------------------------- tower property

def affine_fit_errors(teacher, x_clean: torch.Tensor, W_ref: torch.Tensor, sigma: float,
                      n_noise: int, seeds=(0, 1), batch_size: int = 512) -> dict:
    """Distil ``teacher`` on ``x_clean`` + noise (:func:`utils.distill.fit_affine`) once per seed.

    Returns ``error`` (mean over seeds of ||W_fit - W_ref||_F / ||W_ref||_F), ``errors`` (per seed),
    and ``mc_error`` = ||W_seed0 - W_seed1||_F / (sqrt(2) ||W_ref||_F): the Monte-Carlo standard error of
    one fit, estimated from the spread between independent noise draws (needs two or more seeds).
    An unbiased fit has error ~ mc_error; a biased one has error >> mc_error.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    ref = W_ref.to(torch.float64).cpu()
    Ws = [fit_affine(teacher, x_clean, sigma, n_noise=n_noise, seed=sd, batch_size=batch_size).W
          for sd in seeds]
    errs = [float((W - ref).norm() / ref.norm()) for W in Ws]
    out = {"error": sum(errs) / len(errs), "errors": errs, "mc_error": float("nan")}
    if len(Ws) >= 2:
        diffs = [float((Ws[i] - Ws[j]).norm()) for i in range(len(Ws)) for j in range(i + 1, len(Ws))]
        out["mc_error"] = sum(diffs) / len(diffs) / math.sqrt(2) / float(ref.norm())
    return out
