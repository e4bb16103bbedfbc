"""Chapter 2: memorization vs generalization of trained denoisers, across N and model width.

A trained network is compared with the two closed-form denoisers of its own training set, the
memorizing D_M and the Gaussian D_G (``utils.denoisers``), in two ways:

* **samples**: every model integrates the probability-flow ODE from the *same* initial noises
  (``utils.edm.initial_noise``); ``utils.metrics.sample_stats`` gives the GL score (paper eq. 14)
  and the nearest-neighbour ratio test from one neighbour search; :func:`comparison_rows` lays out
  "network sample | its nearest training image | D_G sample".
* **denoisers**: ``utils.metrics.rmse_curves`` gives RMSE(D_theta, D_ref) (paper eq. 10) on the
  book's held-out noisy inputs, one value per sigma and per input; ``utils.regimes`` summarises a
  curve over the intermediate regime.

:func:`evaluate_model` runs both for one model and returns a :class:`ModelReport`;
:func:`runs` lists the training runs of the chapter (the model ladder and the width sweep).
The constants below are the chapter's analysis choices, fixed before any result was looked at;
:func:`relative_spread` and :func:`gl_standard_error` help turn a measurement into a verdict (trends over a
ladder: ``utils.metrics.trend``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import edm, metrics
from ..checks import as_images, positive_int
from ..denoisers import EmpiricalDenoiser, GaussianDenoiser, apply
from ..metrics import MEMORIZING_FRACTION, SampleStats, sample_stats
from ..regimes import Regimes, scaled_sigma
from ..settings import ChapterSettings

PAPER_GL_THRESHOLD = 0.6                   # "GL > 0.6 indicates generalization" (paper App. B.1, FFHQ)

# --------------------------------------------------------------------------- analysis choices
# Memorized fraction (NN ratio < 1/3) above which a model memorizes (utils.metrics), and at most which
# it generalizes: "copies are the exception" -- 10 of the 100 samples at the cpu profile.
MEMORIZING = MEMORIZING_FRACTION
GENERALIZING = 0.1
# The paper's GL > 0.6 is an FFHQ number; what transfers is the comparison with real held-out images
# of the dataset, new by definition. A generalizing model's GL must be at least (1 - GL_TOLERANCE)
# times theirs: the GL of 100 samples carries a standard error of a few per cent (printed with the
# claim), and a tenth is far from the gap to a copier, whose GL is ~0.
GL_TOLERANCE = 0.1
# ... and a memorizing model's GL "far below" theirs: at most GL_FAR times it (half the distance to
# the training set that unseen real images keep).
GL_FAR = 0.5
# Paper Fig. 16 right: at sigma_min the residual RMSE(D_theta, D_G) does not depend on the model's
# width. At sigma_min = 0.002 an EDM network is the identity up to c_out |F| ~ 0.002 |F|, so the
# residual is the held-out inputs' distance to the training span, which only N sets; "nearly equal"
# = the widths' values within LOWSIGMA_SPREAD of their mean ((max - min) / mean).
LOWSIGMA_SPREAD = 0.1


def relative_spread(values) -> float:
    """(max - min) / mean of positive ``values``: how far a set of numbers is from being equal."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or len(v) < 2 or not np.isfinite(v).all() or v.mean() <= 0:
        raise ValueError(f"values must be >= 2 finite numbers with a positive mean, got {v.tolist()}")
    return float((v.max() - v.min()) / v.mean())


def gl_standard_error(stats: SampleStats) -> float:
    """Standard error of a GL score: std of the per-sample ||x - NN(x)|| / ||x|| over sqrt(k)."""
    r = np.asarray(stats.rel_dist, dtype=float)
    return float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else float("nan")



# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 2's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences.
    Which N and widths are compared, thresholds and trend minima are the constants above."""

    CHAPTER = "ch2"
    n_show: int = 10              # samples shown per model
    n_denoise: int = 3            # images in the denoising figure
    loss_window: int = 50         # moving-average window of the loss curves
    # The RMSE curves use the 40-step EDM grid, not the sampler's 10 levels: the intermediate regime of
    # 8x8 digits spans one decade of sigma, which holds only two levels of the 10-step grid (0.47, 1.5)
    # and eight of the 40-step one.
    curve_steps: int = 40
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(n_show=4, n_denoise=2, loss_window=5, curve_steps=10),
        "cpu": {},
        "colab": dict(loss_window=200),
        "gpu": dict(n_show=8, loss_window=1000),
    }


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def lognormal_spec(P, seed: int = 0) -> dict:
    """The p(sigma) control (paper Figs. 7a, 17b-c): the largest ladder N, trained exactly like the
    ladder except with EDM's own log-normal p(sigma) (``sigma_uniform_share=0``: no log-uniform share),
    and without snapshots."""
    return P.train_spec(max(P.train_sizes), seed=seed, sigma_uniform_share=0.0, snapshot_steps=[])


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: the model ladder (every N of ``P.train_sizes`` at the
    profile's width), the width sweep at ``P.scale_n`` and the log-normal p(sigma) control
    (:func:`lognormal_spec`)."""
    return ([P.train_spec(n, seed=seed) for n in P.train_sizes]
            + [P.train_spec(P.scale_n, model_channels=c, seed=seed) for c in P.scales]
            + [lognormal_spec(P, seed)])


# --------------------------------------------------------------------------- samples

def comparison_rows(samples: torch.Tensor, train: torch.Tensor, reference: torch.Tensor,
                    nn_index: torch.Tensor, n_show: int) -> list:
    """The three rows of paper Figs. 6b / 12 for the first ``n_show`` noises: the samples, the
    nearest training image of each (``nn_index`` from :func:`sample_stats`) and ``reference``
    (e.g. D_G's samples from the same noises). Returns a list of three (n_show, C, H, W) tensors."""
    positive_int(n_show, "n_show")
    k = min(n_show, len(samples))
    if len(reference) < k or len(nn_index) < k:
        raise ValueError(f"need {k} reference samples and NN indices, got {len(reference)} and {len(nn_index)}")
    if reference.shape[1:] != samples.shape[1:]:
        raise ValueError(f"reference images have shape {tuple(reference.shape[1:])}, samples {tuple(samples.shape[1:])}")
    return [samples[:k].cpu(), train.cpu()[nn_index[:k].cpu()], reference[:k].cpu()]


# --------------------------------------------------------------------------- denoiser distances

def comparable_sigma(sigma_ref: float, d_ref: int, d: int, grid) -> float:
    """The noise level of ``grid`` nearest (in log sigma) to ``utils.regimes.scaled_sigma(sigma_ref,
    d_ref, d)``: the paper's sigma on d_ref pixels carried to our d pixels, snapped to the grid."""
    target = scaled_sigma(sigma_ref, d_ref, d)
    g = torch.as_tensor(grid, dtype=torch.float64).flatten()
    return float(g[torch.argmin((g.log() - math.log(target)).abs())])


def effective_components(D_G: GaussianDenoiser, sigma: float) -> float:
    """sum_k lambda_k / (lambda_k + sigma^2): how many principal components D_G keeps at sigma."""
    return float(D_G.shrinkage(sigma).sum())


def denoise_rows(denoisers: dict, x: torch.Tensor, sigma: float) -> list:
    """[x, D_1(x), D_2(x), ...] at one ``sigma`` for ``{label: D}`` (rows of paper Fig. 5b / 18),
    all on the CPU."""
    as_images(x, "x")
    return [x.cpu()] + [apply(D, x, float(sigma)).cpu() for D in denoisers.values()]


# --------------------------------------------------------------------------- training curves

def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start): a loss curve that
    can be read. Same length as ``values``."""
    positive_int(window, "window")
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not len(v):
        raise ValueError("values must be a non-empty 1-d sequence")
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, len(v) + 1)
    start = np.maximum(0, idx - window)
    return (c[idx] - c[start]) / (idx - start)


# --------------------------------------------------------------------------- one model, all numbers

@dataclass
class ModelReport:
    """Everything chapter 2 measures about one trained model (see :func:`evaluate_model`)."""

    label: str
    n_train: int
    n_params: int | None
    samples: torch.Tensor               # the model's samples from the shared noises
    gaussian_samples: torch.Tensor      # D_G's samples from the same noises
    stats: SampleStats                  # GL / NN ratio of the samples
    gaussian_stats: SampleStats         # the same for D_G's samples
    sigmas: np.ndarray
    rmse_G_inputs: np.ndarray           # (n_inputs, n_sigmas): per-input RMSE(D_theta, D_G), held-out inputs
    rmse_M_inputs: np.ndarray           # ... and to D_M (the same noisy inputs for every model)
    regimes: Regimes
    similarity: dict = field(default_factory=dict)   # paired cosine / RMSE to D_G's samples

    @property
    def rmse_G(self) -> np.ndarray:
        return self.rmse_G_inputs.mean(0)

    @property
    def rmse_M(self) -> np.ndarray:
        return self.rmse_M_inputs.mean(0)

    @property
    def rmse_G_lowest(self) -> float:
        """RMSE(D_theta, D_G) at the smallest sigma of the curve (the sigma -> 0 residual, paper Fig. 16)."""
        return float(self.rmse_G[int(np.argmin(self.sigmas))])

    def rmse_G_band(self, band: str) -> float:
        """RMSE(D_theta, D_G) averaged over the regime ``band`` (``low``, ``intermediate``, ``high``)."""
        return float(self.regimes.mean(self.sigmas, self.rmse_G, band))

    @property
    def rmse_G_intermediate(self) -> float:
        return float(self.regimes.mean(self.sigmas, self.rmse_G))

    @property
    def rmse_M_intermediate(self) -> float:
        return float(self.regimes.mean(self.sigmas, self.rmse_M))

    def summary(self) -> str:
        params = f"{self.n_params:>9,d} params  " if self.n_params is not None else ""
        return (f"{self.label:<14} {params}GL {self.stats.gl:.3f} (D_G samples {self.gaussian_stats.gl:.3f})  "
                f"memorized {self.stats.memorized:.2f}  intermediate-sigma RMSE to D_G "
                f"{self.rmse_G_intermediate:.3f}, to D_M {self.rmse_M_intermediate:.3f}  "
                f"cosine to D_G sample {self.similarity.get('cosine', float('nan')):.3f}")


def evaluate_model(model, x_train: torch.Tensor, x_T: torch.Tensor, x_eval: torch.Tensor,
                   sample_sigmas, regimes: Regimes, curve_sigmas=None, seed: int = 0, label: str | None = None,
                   D_G: GaussianDenoiser | None = None, D_M: EmpiricalDenoiser | None = None,
                   gaussian_samples: torch.Tensor | None = None) -> ModelReport:
    """Sample ``model`` from ``x_T`` and compare it with D_G and D_M of ``x_train``.

    ``x_eval``: clean held-out images (noised by ``utils.data.NoisyInputs`` with ``seed``);
    ``curve_sigmas``: where to evaluate the RMSE curves (default: ``sample_sigmas``); ``regimes``:
    the bands the summaries average over. ``D_G``, ``D_M`` and ``gaussian_samples`` may be passed
    to reuse them across models that share a training set. Everything in the report is on the CPU.
    """
    as_images(x_train, "x_train")
    D_G = D_G if D_G is not None else GaussianDenoiser.fit(x_train)
    D_M = D_M if D_M is not None else EmpiricalDenoiser(x_train)
    curve_sigmas = sample_sigmas if curve_sigmas is None else curve_sigmas
    samples = edm.sample(model, x_T, sample_sigmas).cpu()
    if gaussian_samples is None:
        gaussian_samples = edm.sample(D_G, x_T, sample_sigmas).cpu()
    per_input = metrics.rmse_curves({"G": (model, D_G), "M": (model, D_M)}, x_eval, curve_sigmas, seed=seed,
                                    per_input=True)
    return ModelReport(
        label=label or f"N={len(x_train)}", n_train=len(x_train), n_params=getattr(model, "n_params", None),
        samples=samples, gaussian_samples=gaussian_samples.cpu(),
        stats=sample_stats(samples, x_train), gaussian_stats=sample_stats(gaussian_samples.cpu(), x_train),
        sigmas=np.asarray(torch.as_tensor(curve_sigmas, dtype=torch.float64).flatten()),
        rmse_G_inputs=per_input["G"], rmse_M_inputs=per_input["M"], regimes=regimes,
        similarity=metrics.sample_similarity(samples, gaussian_samples.cpu()))
