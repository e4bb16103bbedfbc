"""Chapter 4: the Gaussian structure emerging, then giving way to memorization, during training.

Everything the chapter measures on a sequence of training checkpoints (EMA snapshots):

* :func:`evaluate_snapshots` -- per checkpoint: RMSE(D_theta, D_G) against sigma on held-out noisy
  inputs (paper Fig. 8a), samples from fixed noises (Fig. 8b), the memorized fraction (NN ratio
  < 1/3), the GL score and the paired cosine to the Gaussian samples from the same noises.
* :func:`rise_and_fall`, :func:`early_stopping_index` -- the minimum of the summary distance to
  D_G over the intermediate regime (``utils.regimes``) and how much it fell before / rose after it.
* :func:`crossing_step` -- the step at which a curve first crosses a level, interpolated
  linearly in log(step) (the memorization onset: memorized fraction crossing 1/2).
* :func:`pc_shrinkage`, :func:`shrinkage_trajectory`, :func:`learning_times`,
  :func:`linear_theory_times`, :func:`linear_control` -- the order in which principal components are learned: the
  diagonal u_k^T W u_k of the network's affine fit in the data's PC basis, the step at which it
  has closed most of the gap from its initial value to D_G's factor lambda_k/(lambda_k+sigma^2),
  and the linear theory (Wang & Pehlevan 2025) in which that time is proportional to
  1/(lambda_k + sigma^2), i.e. to 1/lambda_k for lambda_k >> sigma^2.
* :func:`initial_denoiser` -- the network at step 0. The U-Net's output convolution is
  zero-initialized, so F = 0 and D(x; sigma) = c_skip(sigma) x: every principal component starts
  with the same factor c_skip = sigma_data^2 / (sigma^2 + sigma_data^2).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

from .. import edm, metrics, train
from ..checks import as_images, as_sigma, positive_int, progress_bar, sigma_list
from ..distill import fit_affine, noise_draws, train_affine_dsm
from ..settings import ChapterSettings



# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 4's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences."""

    CHAPTER = "ch4"
    main_n: int = 64              # the memorizing run whose checkpoints are followed
    ref_n: int = 1500             # the generalizing reference run
    onset_sizes: list[int] = field(default_factory=lambda: [16, 64, 256, 750, 1500])
    n_show: int = 10
    pc_sigma: float = 0.47        # noise level of the order-of-learning measurement
    pc_noise: int = 16
    pc_tol: float = 0.2
    pc_min_gap: float = 0.1
    # the main_n run again with another lr ramp-up, to see what the Gaussian-phase minimum tracks
    rampup_controls: list[dict] = field(default_factory=lambda: [dict(lr_rampup_steps=600)])
    # the ref_n run replayed with a constant, smaller learning rate and dense snapshots (order of learning)
    pc_run: dict = field(default_factory=lambda: dict(
        steps=500, lr=5e-4, lr_rampup_steps=0,
        snapshot_steps=[5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 125, 150, 175, 200, 250, 300, 400]))
    pc_ablation: dict | None = None
    lin_steps: int = 1000         # steps of the linear (affine) control
    lin_points: int = 30
    lin_dtype: str = "float64"
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(main_n=8, ref_n=64, onset_sizes=[8, 64], n_show=4, rampup_controls=[dict(lr_rampup_steps=10)],
                      pc_run=dict(steps=20, lr=5e-4, lr_rampup_steps=0, snapshot_steps=[2, 5, 10, 15]),
                      pc_ablation=dict(lr_rampup_steps=1), lin_steps=20, lin_points=5),
        # Measured at cpu with the constant-lr replay (2026-12-01): slope 0.08 +- 0.16 over the 11
        # components above sigma^2; the claim stays evaluated and would pass if it held.
        "cpu": dict(expected_to_fail=dict(
            pc_order="8x8 digits have few components above sigma^2 at sigma = 0.47, spanning about "
                     "one decade of variance, and a network with a million parameters moves all of "
                     "them at once (the linear denoiser on the same data follows the theory); this "
                     "is the linear theory's claim (Wang & Pehlevan), not the paper's")),
        # main_n = 256 < d memorizes (the Gaussian phase then the rise); pc_run: the N = 16,384 run replayed
        # with a constant, smaller learning rate and dense snapshots, as at the cpu profile.
        "colab": dict(main_n=256, ref_n=16384, onset_sizes=[64, 256, 1024, 4096, 16384], pc_noise=8,
                      rampup_controls=[dict(lr_rampup_steps=1500)],
                      pc_run=dict(steps=1500, lr=5e-4, lr_rampup_steps=0,
                                  snapshot_steps=[10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1250]),
                      lin_steps=1500, lin_points=20, lin_dtype="float32"),
        "gpu": dict(main_n=782, ref_n=50000, onset_sizes=[782, 12500, 50000], pc_noise=8,
                    rampup_controls=[dict(lr_rampup_steps=15000)],
                    pc_run=dict(steps=6000, snapshot_steps=[100, 200, 300, 500, 750, 1000, 1500, 2000, 2500,
                                                            3000, 4000, 5000]),
                    pc_ablation=dict(lr_rampup_steps=1), lin_steps=3000, lin_points=12, lin_dtype="float32"),
    }

    def validate(self):
        if self.lin_dtype not in ("float32", "float64"):
            raise ValueError(f"lin_dtype must be 'float32' or 'float64', got {self.lin_dtype!r}")
        if "steps" not in self.pc_run:
            raise ValueError(f"pc_run must give 'steps' (and may give other training-spec keys), got {self.pc_run}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: the ladder runs (with their snapshots) and the variants
    of the chapter's own settings (:func:`settings`)."""
    S = settings(P)
    sizes = sorted(set(S.onset_sizes) | {S.main_n, S.ref_n})
    out = [P.train_spec(n, seed=seed) for n in sizes]
    out += [P.train_spec(S.main_n, seed=seed, **ov) for ov in S.rampup_controls]
    pc = [{}] + ([S.pc_ablation] if S.pc_ablation else [])
    out += [P.train_spec(S.ref_n, seed=seed, **{**S.pc_run, **ov}) for ov in pc]
    return out


# --------------------------------------------------------------------------- step 0

class _InitialDenoiser:
    """D(x; s) = c_skip(s) x, the EDM-preconditioned network before its first update."""

    def __init__(self, sigma_data: float = edm.SIGMA_DATA):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        as_images(x)
        s = as_sigma(sigma, x.shape[0], device=x.device).view(-1, *([1] * (x.ndim - 1)))
        c_skip = edm.coefficients(s, "edm", self.sigma_data)[0]
        return (c_skip * x.to(torch.float64)).to(x.dtype)


def initial_denoiser(sigma_data: float = edm.SIGMA_DATA) -> _InitialDenoiser:
    """The trained model at step 0: ``utils.nets.UNet`` zero-initializes its output layer, so the
    EDM-preconditioned denoiser is exactly c_skip(sigma) x (tested against a freshly built model)."""
    return _InitialDenoiser(sigma_data)


# --------------------------------------------------------------------------- checkpoint evaluation

@dataclass
class SnapshotEval:
    """What :func:`evaluate_snapshots` measured; arrays are indexed [checkpoint] or [checkpoint, sigma]."""

    steps: np.ndarray                 # (T,) training step of each checkpoint
    sigmas: np.ndarray                # (S,) noise levels of the RMSE curves
    rmse: np.ndarray                  # (T, S) RMSE(D_theta, D_G) on held-out noisy inputs (NaN: not measured)
    memorized: np.ndarray             # (T,) fraction of samples with NN ratio < 1/3
    gl: np.ndarray                    # (T,) GL score of the samples (paper eq. 14)
    cosine: np.ndarray                # (T,) mean paired cosine of samples vs Gaussian samples
    samples: list = field(default_factory=list)   # (T,) tensors (n_samples, C, H, W)
    gaussian_samples: torch.Tensor | None = None   # D_G's samples from the same noises

    def row(self, step: int) -> int:
        """Index of the checkpoint at ``step``."""
        hits = np.flatnonzero(self.steps == step)
        if not len(hits):
            raise KeyError(f"no checkpoint at step {step}; steps = {self.steps.tolist()}")
        return int(hits[0])


def evaluate_snapshots(load: Callable[[int], Callable] | Mapping[int, Callable], steps: Iterable[int],
                       D_G, x_train: torch.Tensor, x_heldout: torch.Tensor, sigmas, x_T: torch.Tensor,
                       sampler_sigmas, *, noise_seed: int = 0, rmse: bool = True,
                       progress: Callable | None = None, bar: bool = True) -> SnapshotEval:
    """Evaluate every checkpoint ``load(step)`` (or ``load[step]``, e.g. ``utils.train.snapshots``).

    * RMSE(D, D_G) at each of ``sigmas`` on ``utils.data.NoisyInputs(x_heldout, noise_seed)``
      (skipped if ``rmse=False``: NaN), paper eq. (10);
    * samples ``edm.sample(D, x_T, sampler_sigmas)`` (Euler) and, against ``x_train``, the
      memorized fraction and GL score (one ``utils.metrics.sample_stats``); their paired cosine to
      D_G's samples from the same ``x_T``.

    ``progress(step)`` is called after each checkpoint; ``bar`` shows a progress bar.
    """
    as_images(x_train, "x_train")
    as_images(x_heldout, "x_heldout")
    as_images(x_T, "x_T")
    steps = [int(k) for k in steps]
    if not steps:
        raise ValueError("steps must list at least one checkpoint")
    get = load.__getitem__ if isinstance(load, Mapping) else load
    sig = sigma_list(sigmas)
    gauss = edm.sample(D_G, x_T, sampler_sigmas).cpu()
    out = SnapshotEval(steps=np.array(steps), sigmas=np.array(sig), rmse=np.full((len(steps), len(sig)), np.nan),
                       memorized=np.zeros(len(steps)), gl=np.zeros(len(steps)), cosine=np.zeros(len(steps)),
                       gaussian_samples=gauss)
    for t, step in enumerate(progress_bar(steps, "evaluating checkpoints", bar)):
        D = get(step)
        if rmse:
            out.rmse[t] = metrics.rmse_curves({"G": (D, D_G)}, x_heldout, sig, seed=noise_seed)["G"]
        x0 = edm.sample(D, x_T, sampler_sigmas).cpu()
        out.samples.append(x0)
        st = metrics.sample_stats(x0, x_train)
        out.memorized[t], out.gl[t] = st.memorized, st.gl
        out.cosine[t] = metrics.sample_similarity(x0, gauss)["cosine"]
        if progress is not None:
            progress(step)
    return out


# --------------------------------------------------------------------------- the Gaussian phase

def early_stopping_index(values) -> int:
    """Index of the checkpoint with the smallest distance to D_G (the early-stopping checkpoint)."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not len(v) or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty 1-d array of finite numbers, got {v!r}")
    return int(np.argmin(v))


@dataclass
class Arc:
    """The fall-minimum-rise shape of a curve over checkpoints."""

    i_min: int          # index of the minimum
    start: float        # value at the first checkpoint
    minimum: float
    end: float          # value at the last checkpoint
    interior: bool      # the minimum is strictly inside (neither the first nor the last checkpoint)
    fall: float         # start / minimum
    rise: float         # end / minimum


def rise_and_fall(values) -> Arc:
    """Where the curve is lowest, how far it fell before and how far it rose after."""
    v = np.asarray(values, dtype=float)
    i = early_stopping_index(v)
    m = max(v[i], 1e-300)
    return Arc(i_min=i, start=float(v[0]), minimum=float(v[i]), end=float(v[-1]),
               interior=bool(0 < i < len(v) - 1), fall=float(v[0] / m), rise=float(v[-1] / m))


def crossing_step(steps, values, level: float = 0.5) -> float:
    """The first step at which ``values`` reaches ``level`` from below, interpolated linearly in
    log(step) between the two checkpoints around the crossing; ``inf`` if it never does, and the
    first step if it starts at or above ``level``. Steps must be positive and increasing."""
    k = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if k.shape != v.shape or k.ndim != 1 or not len(k):
        raise ValueError(f"steps and values must be 1-d arrays of one length, got {k.shape} and {v.shape}")
    if (k <= 0).any() or (np.diff(k) <= 0).any():
        raise ValueError(f"steps must be positive and strictly increasing, got {k.tolist()}")
    above = np.flatnonzero(v >= level)
    if not len(above):
        return math.inf
    j = int(above[0])
    if j == 0:
        return float(k[0])
    a, b = v[j - 1], v[j]
    frac = (level - a) / (b - a)
    return float(np.exp(np.log(k[j - 1]) + frac * (np.log(k[j]) - np.log(k[j - 1]))))


def settle_step(steps, values, rel: float = 0.1) -> float:
    """The first step at which ``values`` comes within a factor (1 + rel) of its minimum: when a
    distance that falls and then plateaus (or rises again) has essentially arrived."""
    k = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if k.shape != v.shape or k.ndim != 1 or not len(k) or not np.isfinite(v).all():
        raise ValueError(f"steps and values must be 1-d, finite and of one length, got {k.shape} and {v.shape}")
    if not rel >= 0:
        raise ValueError(f"rel must be >= 0, got {rel}")
    return float(k[np.flatnonzero(v <= (1 + rel) * v.min())[0]])


# --------------------------------------------------------------------------- order of learning

def pc_shrinkage(W: torch.Tensor, eigvecs: torch.Tensor) -> torch.Tensor:
    """diag(U^T W U): the factor an affine map W applies along each principal component u_k
    (for D_G itself this is exactly lambda_k / (lambda_k + sigma^2))."""
    if W.ndim != 2 or W.shape[0] != W.shape[1] or eigvecs.shape != W.shape:
        raise ValueError(f"W and eigvecs must be square matrices of one shape, got {tuple(W.shape)}, "
                         f"{tuple(eigvecs.shape)}")
    U = eigvecs.to(torch.float64)
    return ((W.to(torch.float64) @ U) * U).sum(0)


def learning_times(steps, shrinkage, target, initial, tol: float = 0.2, min_gap: float = 0.0) -> np.ndarray:
    """Per component, the first step at which the factor has closed (1 - tol) of its gap to D_G:
    |s_k(t) - g_k| <= tol * |s_k(0) - g_k|, interpolated in log(step) like :func:`crossing_step`.

    ``shrinkage`` (T, K) at ``steps`` (T,), ``target`` g_k (K,), ``initial`` s_k(0) (K,) or a scalar.
    Components with |s_k(0) - g_k| < ``min_gap`` are NaN (nothing to learn), never-reached ones inf.
    In the linear theory the gap decays as exp(-t/tau_k), so this time is tau_k ln(1/tol).
    """
    S = np.asarray(shrinkage, dtype=float)
    g = np.asarray(target, dtype=float)
    s0 = np.broadcast_to(np.asarray(initial, dtype=float), g.shape)
    if S.ndim != 2 or S.shape[1] != g.shape[0] or S.shape[0] != len(steps):
        raise ValueError(f"shrinkage must be (T={len(steps)}, K={g.shape[0]}), got {S.shape}")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    gap0 = np.abs(s0 - g)
    out = np.full(g.shape, np.nan)
    for k in range(g.shape[0]):
        if gap0[k] < max(min_gap, 1e-12):
            continue
        closed = 1.0 - np.abs(S[:, k] - g[k]) / gap0[k]          # fraction of the gap closed
        out[k] = crossing_step(steps, closed, 1.0 - tol)
    return out


def linear_theory_times(eigvals, sigma: float, t_ref: float, lam_ref: float) -> np.ndarray:
    """The linear theory's learning times tau_k proportional to 1/(lambda_k + sigma^2), scaled to
    equal ``t_ref`` at ``lam_ref`` (for lambda >> sigma^2 this is the 1/lambda law)."""
    lam = np.asarray(eigvals, dtype=float)
    return t_ref * (lam_ref + sigma ** 2) / (lam + sigma ** 2)


def theory_scale(eigvals, times, sigma: float) -> float:
    """The constant c of the linear theory's t_k = c / (lambda_k + sigma^2) that best fits the
    measured ``times`` (least squares in log t over the finite ones; NaN if there are none)."""
    lam = np.asarray(eigvals, dtype=float)
    t = np.asarray(times, dtype=float)
    ok = np.isfinite(t) & (t > 0)
    if not ok.any():
        return math.nan
    return float(np.exp(np.mean(np.log(t[ok] * (lam[ok] + sigma ** 2)))))


def linear_control(x_train: torch.Tensor, sigma: float, steps, D_G, lr: float, optimizer: str = "adam",
                   dtype: torch.dtype = torch.float64) -> np.ndarray:
    """(T, d) PC factors diag(U^T W U) of an affine denoiser D(x) = W x + b trained from W = 0 on the
    denoising loss at one ``sigma`` (full batch, constant ``lr``; ``utils.distill.train_affine_dsm``),
    after each number of ``steps``: the linear model the linear theory is about, on the same data."""
    rows = [pc_shrinkage(train_affine_dsm(x_train, sigma, int(k), optimizer=optimizer, lr=lr, n_record=2,
                                          dtype=dtype).W, D_G.eigvecs) for k in steps]
    return torch.stack(rows).numpy()


def shrinkage_trajectory(load: Callable[[int], Callable] | Mapping[int, Callable], steps: Iterable[int], D_G,
                         x_heldout: torch.Tensor, sigma: float, n_noise: int = 16, seed: int = 0) -> np.ndarray:
    """(T, d): for each checkpoint, diag(U^T W U) of its closed-form affine fit at ``sigma`` on
    ``x_heldout`` (at least ``n_noise`` noises per image, more where the fit needs them to exceed d
    inputs: ``utils.distill.noise_draws``), U = D_G's principal components."""
    as_images(x_heldout, "x_heldout")
    draws = noise_draws(len(x_heldout), x_heldout[0].numel(), n_noise)
    get = load.__getitem__ if isinstance(load, Mapping) else load
    rows = [pc_shrinkage(fit_affine(get(int(k)), x_heldout, sigma, n_noise=draws, seed=seed).W, D_G.eigvecs)
            for k in steps]
    return torch.stack(rows).numpy()


# --------------------------------------------------------------------------- summaries and claims

def increases_with(sizes, onsets) -> bool:
    """True when the onsets grow with the sizes: at least one finite onset, and for every pair of
    sizes N_i < N_j either t_i < t_j or both are censored (inf: no onset within training)."""
    n = np.asarray(sizes, dtype=float)
    t = np.asarray(onsets, dtype=float)
    if n.shape != t.shape or n.ndim != 1:
        raise ValueError(f"sizes and onsets must be 1-d of one length, got {n.shape} and {t.shape}")
    if np.isnan(t).any():
        raise ValueError("onsets must not be NaN (use inf for 'not within training')")
    if not np.isfinite(t).any():
        return False
    order = np.argsort(n)
    n, t = n[order], t[order]
    for i in range(len(n)):
        for j in range(i + 1, len(n)):
            if n[j] > n[i] and not (t[i] < t[j] or (np.isinf(t[i]) and np.isinf(t[j]))):
                return False
    return True


# --------------------------------------------------------------------------- what the minimum follows

def cumulative_lr(spec: dict, steps) -> np.ndarray:
    """The summed learning rate over steps 1..t, in units of the peak rate, for each t of ``steps``
    (``utils.train.learning_rate``): the number of full-rate steps the run has taken by step t
    (t - R/2 after a linear ramp-up of R steps, t^2 / 2R inside it)."""
    k = np.asarray(steps, dtype=float)
    if k.ndim != 1 or (k < 0).any():
        raise ValueError(f"steps must be a 1-d array of steps >= 0, got {k!r}")
    top = int(k.max()) if len(k) else 0
    peak = float(train.learning_rate(spec, 10 ** 12))
    c = np.concatenate([[0.0], np.cumsum(train.learning_rate(spec, np.arange(1, top + 1)))]) / peak
    return c[k.astype(int)]


HYPOTHESES = ("the end of the lr ramp-up", "an amount of training (summed learning rate)",
              "a number of steps")


def minimum_tracks(step_a: float, spec_a: dict, step_b: float, spec_b: dict) -> dict:
    """Which quantity the step of a minimum follows when only the lr ramp-up changes between two runs.

    Run a (ramp-up R_a) has its minimum at ``step_a``, run b (R_b) at ``step_b``. Each hypothesis of
    :data:`HYPOTHESES` predicts where b's minimum should be: at ``step_a * R_b / R_a`` (it sits at the
    same point of the ramp-up), at the step where b's summed learning rate (:func:`cumulative_lr`)
    equals a's at ``step_a`` (the same amount of training), or at ``step_a`` (a fixed number of steps,
    e.g. set by the data). Returns ``{"predicted": {hypothesis: step}, "log_error": {hypothesis:
    |log(step_b / predicted)|}, "best": the hypothesis with the smallest error}``."""
    ra, rb = train.normalize_spec(spec_a)["lr_rampup_steps"], train.normalize_spec(spec_b)["lr_rampup_steps"]
    if ra < 1 or rb < 1:
        raise ValueError(f"both runs need an lr ramp-up, got {ra} and {rb} steps")
    if not (step_a > 0 and step_b > 0):
        raise ValueError(f"steps must be > 0, got {step_a} and {step_b}")
    target = float(cumulative_lr(spec_a, [int(round(step_a))])[0])
    horizon = int(max(step_a, step_b) * (rb / ra + 2)) + rb + 1
    cb = cumulative_lr(spec_b, np.arange(horizon + 1))
    same_training = float(np.searchsorted(cb, target))
    pred = dict(zip(HYPOTHESES, (step_a * rb / ra, same_training, float(step_a))))
    err = {h: abs(math.log(step_b / max(p, 1e-12))) for h, p in pred.items()}
    return {"predicted": pred, "log_error": err, "best": min(err, key=err.get)}


# --------------------------------------------------------------------------- claims

# Analysis choices of the claims, fixed before the run (reasons beside each).
RISE = 1.2               # "a clear margin": the band distance falls and rises by at least 20 % around its minimum
MIN_FINITE_ONSETS = 2    # an ordering of onsets needs at least two measured (not censored) onsets
RAMP_SHIFT_MIN = 1.25    # one snapshot spacing (the cpu snapshots are 1.14-1.33x apart around the minimum)
PC_T_MIN = 2.0           # the order-of-learning slope must be positive by two standard errors


def onset_margin(sizes, onsets, last_step: float) -> float:
    """The smallest factor by which the onset grows from one size to the next larger one, minus one
    (the relative margin of "the onset increases with N"). A censored onset (inf: none within
    training) counts as its lower bound ``last_step``; two censored neighbours are skipped (both
    unknown). NaN when no pair of neighbours can be compared."""
    n = np.asarray(sizes, dtype=float)
    t = np.asarray(onsets, dtype=float)
    if n.shape != t.shape or n.ndim != 1:
        raise ValueError(f"sizes and onsets must be 1-d of one length, got {n.shape} and {t.shape}")
    if not last_step > 0:
        raise ValueError(f"last_step must be > 0, got {last_step}")
    order = np.argsort(n)
    t = t[order]
    ratios = []
    for a, b in zip(t[:-1], t[1:]):
        if np.isinf(a) and np.isinf(b):
            continue
        lo = a if np.isfinite(a) else float(last_step)
        hi = b if np.isfinite(b) else float(last_step)     # a censored onset below a measured one: < 1
        ratios.append(hi / lo)
    return float(min(ratios) - 1.0) if ratios else math.nan


@dataclass
class Results:
    """Chapter 4's measured numbers that its claims need (plain numbers and lists, no tensors).

    Per checkpoint of the main (memorizing) network: ``band_rmse`` (mean RMSE to D_G over the
    intermediate regime, held-out inputs), ``memorized`` (fraction of samples with NN ratio < 1/3),
    ``cosine`` (paired cosine to D_G's samples from the same noises). Per size of ``onset_sizes``:
    ``onsets`` (step at which the memorized fraction crosses 1/2; inf: not within training) and
    ``t_gauss`` (first step within 10 % of the closest approach to D_G). The order of learning:
    the network's slope of log(learning time) against log(1/lambda) with its standard error over
    ``pc_n`` components, and the linear control's slope. The ramp-up control: the ramp-ups
    ``ramps`` = [R_a, R_b] and the steps ``ramp_minima`` of the band-distance minimum under each."""

    main_n: int
    ref_n: int
    band: list[float]
    steps: list[int]
    band_rmse: list[float]
    memorized: list[float]
    cosine: list[float]
    onset_sizes: list[int]
    onsets: list[float]
    t_gauss: list[float]
    pc_sigma: float
    pc_slope: float
    pc_stderr: float
    pc_n: int
    pc_lr: float
    lin_slope: float
    ramps: list[int]
    ramp_minima: list[int]


CLAIM_IDS = ("ch4.gaussian_phase", "ch4.early_stop_fewer_copies", "ch4.early_stop_gaussian_like",
             "ch4.onset_grows_with_n", "ch4.pc_order", "ch4.minimum_moves_with_rampup")


def claims(results: Results, settings: Settings) -> list:
    """Chapter 4's claims (ids :data:`CLAIM_IDS`) from ``results``, with the reasons of
    ``settings.expected_to_fail``."""
    from ..claims import Claim, Test, all_of, compare, expected

    r = results
    steps = list(r.steps)
    if not (len(steps) == len(r.band_rmse) == len(r.memorized) == len(r.cosine)) or not steps:
        raise ValueError("steps, band_rmse, memorized and cosine must have one entry per checkpoint")
    arc = rise_and_fall(r.band_rmse)
    i, end = arc.i_min, len(steps) - 1
    lo, hi = r.band
    out = []

    t = all_of(Test(arc.interior, None), compare(arc.fall, ">=", RISE), compare(arc.rise, ">=", RISE))
    out.append(Claim(
        id="ch4.gaussian_phase", kind="paper", figures=(8, 21),
        claim=f"Training a memorizing network: the intermediate-sigma RMSE to D_G falls, reaches a minimum strictly "
              f"inside training, then rises again, each by at least {RISE - 1:.0%}",
        paper="FFHQ N = 1,094: converges to D_G over epochs 0-841, then diverges (Fig. 8a); CIFAR-10 N = 782: up to "
              "epoch ~921 (Fig. 21a)",
        ours=f"N = {r.main_n:,d}, sigma in [{lo:.2g}, {hi:.2g}]: {arc.start:.3f} (step {steps[0]:,d}) -> "
             f"{arc.minimum:.3f} (step {steps[i]:,d}) -> {arc.end:.3f} (step {steps[-1]:,d}); fell x{arc.fall:.2f}, "
             f"rose x{arc.rise:.2f}",
        passed=t.passed, margin=t.margin, expected_to_fail=expected(settings, "ch4.gaussian_phase")))

    t = compare(r.memorized[i], "<", r.memorized[end])
    out.append(Claim(
        id="ch4.early_stop_fewer_copies", kind="paper", figures=(8, 21),
        claim="The memorized fraction at the minimum (the early-stopping checkpoint) is lower than at the end of "
              "training",
        paper="epoch 841 samples resemble the Gaussian ones, later ones are training replicas (Fig. 8b; CIFAR-10 "
              "Fig. 21b)",
        ours=f"{r.memorized[i]:.2f} at step {steps[i]:,d} vs {r.memorized[end]:.2f} at step {steps[-1]:,d}",
        passed=t.passed, margin=t.margin, expected_to_fail=expected(settings, "ch4.early_stop_fewer_copies")))

    t = compare(r.cosine[i], ">", r.cosine[end])
    out.append(Claim(
        id="ch4.early_stop_gaussian_like", kind="paper", figures=(8, 21),
        claim="Early-stopped samples are closer to the Gaussian samples from the same noise than the final ones "
              "(paired cosine)",
        paper="early-stopped samples strongly resemble D_G's (Fig. 8b; CIFAR-10 Fig. 21b)",
        ours=f"paired cosine {r.cosine[i]:.3f} at step {steps[i]:,d} vs {r.cosine[end]:.3f} at step {steps[-1]:,d}",
        passed=t.passed, margin=t.margin, expected_to_fail=expected(settings, "ch4.early_stop_gaussian_like")))

    Ns, onsets = list(r.onset_sizes), [float(v) for v in r.onsets]
    finite = [n for n, v in zip(Ns, onsets) if math.isfinite(v)]
    fit = metrics.loglog_fit(finite, [v for v in onsets if math.isfinite(v)])
    order_ok = increases_with(Ns, onsets) if len(Ns) else False
    m = onset_margin(Ns, onsets, steps[-1]) if len(Ns) > 1 else math.nan
    # the margin is the closer of two calls: the number of measured onsets against its minimum (two
    # measured onsets, the least an ordering can rest on, give margin 0: "pass (marginal)") and the
    # smallest growth factor between neighbouring sizes
    t = all_of(compare(len(finite), ">=", MIN_FINITE_ONSETS), Test(order_ok, m if math.isfinite(m) else None))
    onset_txt = " / ".join(f"{v:,.0f}" if math.isfinite(v) else f"> {steps[-1]:,d}" for v in onsets)
    out.append(Claim(
        id="ch4.onset_grows_with_n", kind="paper", source="bonnaire2025why", where="abstract",
        claim=f"The onset of memorization (memorized fraction crossing 1/2) increases with N, measured on at least "
              f"{MIN_FINITE_ONSETS} sizes whose onset falls within training (a size without onset counts as later)",
        paper="Bonnaire et al. 2025: the memorization time grows linearly with N (log-log slope 1); the time to "
              "generalize does not grow with N",
        ours=(f"onset {onset_txt} steps at N = {' / '.join(f'{n:,d}' for n in Ns)}: {len(finite)} measured "
              f"onset(s)" + (f", smallest growth to the next size x{1 + m:.2f}" if math.isfinite(m) else "")
              + (f"; log-log slope {fit['slope']:.2f} from {len(finite)} points (indicative only)"
                 if math.isfinite(fit["slope"]) else "")
              + f"; time to reach D_G {' / '.join(f'{v:,.0f}' for v in r.t_gauss)} steps"),
        passed=t.passed, margin=t.margin, expected_to_fail=expected(settings, "ch4.onset_grows_with_n")))

    tstat = r.pc_slope / r.pc_stderr if r.pc_stderr and math.isfinite(r.pc_stderr) and r.pc_stderr > 0 else math.nan
    t = compare(tstat, ">", PC_T_MIN)
    out.append(Claim(
        id="ch4.pc_order", kind="paper", source="wang2025analytical", where="abstract",
        claim="Principal components are learned in order of variance: the log-log slope of the learning time "
              f"against 1/lambda is positive by {PC_T_MIN:g} standard errors",
        paper="linear theory (Wang & Pehlevan 2025): time ~ 1/lambda, log-log slope 1",
        ours=f"network (N = {r.ref_n:,d}, sigma = {r.pc_sigma:g}, constant lr {r.pc_lr:g}, no ramp-up): slope "
             f"{r.pc_slope:.2f} +- {r.pc_stderr:.2f} over {r.pc_n} components with lambda > sigma^2 "
             f"({tstat:.1f} standard errors); linear denoiser with Adam {r.lin_slope:.2f}",
        passed=t.passed, margin=t.margin, expected_to_fail=expected(settings, "ch4.pc_order")))

    if len(r.ramps) >= 2 and len(r.ramp_minima) >= 2:
        (ra, sa), (rb, sb) = sorted(zip(r.ramps, r.ramp_minima))[:2]
        t = compare(sb / sa, ">=", RAMP_SHIFT_MIN)
        ours = (f"N = {r.main_n:,d}: minimum at step {sa:,d} with a {ra:,d}-step ramp-up, at step {sb:,d} with "
                f"{rb:,d} steps (x{sb / sa:.2f})")
    else:
        t, ours = Test(False, None), "no ramp-up control at this profile"
    out.append(Claim(
        id="ch4.minimum_moves_with_rampup", kind="control",
        claim=f"Where the Gaussian phase falls depends on the training schedule: a longer lr ramp-up moves the "
              f"band-distance minimum later by at least one snapshot spacing (x{RAMP_SHIFT_MIN:g})",
        paper="the paper's Gaussian phase (epoch 841, FFHQ) lies inside EDM's 10M-image lr ramp-up; "
              "the paper does not vary the schedule",
        ours=ours, passed=t.passed, margin=t.margin,
        expected_to_fail=expected(settings, "ch4.minimum_moves_with_rampup")))
    return out


def show_checkpoints(n_checkpoints: int, k: int, keep=()) -> list[int]:
    """Indices of about ``k`` of ``n_checkpoints`` checkpoints to show as image rows: log-spaced from
    the first to the last, plus the indices ``keep`` (e.g. the early-stopping checkpoint), sorted."""
    positive_int(n_checkpoints, "n_checkpoints")
    positive_int(k, "k")
    keep = [int(i) for i in keep]
    if any(not 0 <= i < n_checkpoints for i in keep):
        raise ValueError(f"keep must hold indices in [0, {n_checkpoints}), got {keep}")
    picks = np.unique(np.round(np.geomspace(1, n_checkpoints, min(k, n_checkpoints))).astype(int) - 1)
    return sorted(set(picks.tolist()) | set(keep) | {n_checkpoints - 1})
