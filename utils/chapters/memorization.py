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
The paper's headline -- a generalizing network's samples are the Gaussian's samples from the same
initial noise -- is measured by :meth:`ModelReport.sample_distances` (the pixel RMSE,
``utils.metrics.image_rmse``, between the network's sample and D_G's and D_M's samples from the same
noise, and to its nearest training image) and summarised per model by :func:`quartiles`.
:func:`lognormal_spec` is the p(sigma) control (paper Figs. 7a, 17b-c).

The constants below are the chapter's analysis choices, fixed before any result was looked at;
:func:`relative_spread` and :func:`gl_standard_error` help turn a measurement into a verdict (trends over a
ladder: ``utils.metrics.trend``). :class:`Results`, :data:`CLAIM_IDS` and :func:`claims` turn the
chapter's numbers into its claims. Every band mean uses ``utils.edm.band_grid()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import edm, metrics
from ..checks import as_images, positive_int
from ..claims import Claim, all_of, compare, expected
from ..denoisers import EmpiricalDenoiser, GaussianDenoiser, apply
from ..metrics import MEMORIZING_FRACTION, SampleStats, sample_stats
from ..regimes import Regimes, scaled_sigma
from ..settings import ChapterSettings

PAPER_GL_THRESHOLD = 0.6                   # "GL > 0.6 indicates generalization" (paper App. B.1, FFHQ)
# Why the FFHQ threshold is not expected to transfer (written before the run; §2.2 shows the measurement):
# GL divides the distance to the nearest training image by the sample's norm, and for images of strokes
# on a constant background in [-1, 1] that norm is mostly background.
GL_DIGITS = ("8x8 digits are strokes on a constant background: the norm GL divides by is mostly "
             "background, so even real held-out digits, new by definition, score well below 0.6 against "
             "the training split (§2.2 measures it); the FFHQ threshold does not transfer")
GL_MNIST = ("MNIST zero-padded to 32x32 is strokes on a constant background: the norm GL divides by is "
            "mostly background, so even real held-out digits are expected to score below 0.6 against the "
            "training set (§2.2 measures it); the FFHQ threshold does not transfer")

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
# The paper's headline (Figs. 2, 3, 6b): the samples of a generalizing network are the samples of D_G
# from the same initial noise, those of a memorizing one are training images (D_M's samples). One image
# distance: the per-image pixel RMSE (utils.metrics.image_rmse) between two samples from the same noise.
# Statistic: its median over the noises (robust to the few noises where a trajectory switches basin).
# "Closer to D_G than to D_M": median distance to D_G's sample < median distance to D_M's sample.
# A model memorizes when more than MEMORIZING of its samples are copies (measured), and generalizes
# otherwise.
HEADLINE_QUANTILES = (25, 50, 75)          # the per-N spread shown: interquartile range around the median
# Paper Fig. 2 / App. F.2: denoisers "close" at RMSE < 0.05. The p(sigma) control (paper Figs. 7a, 17b-c):
# a network trained with EDM's log-normal p(sigma) is under-trained at high sigma and departs from D_G
# there: its mean RMSE(D_theta, D_G) over the high regime exceeds PAPER_CLOSE and the mixed run's.
PAPER_CLOSE = metrics.PAPER_CLOSE


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
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(n_show=4, n_denoise=2, loss_window=5, expected_to_fail=dict(gl_above_paper_threshold=GL_DIGITS)),
        "cpu": dict(expected_to_fail=dict(gl_above_paper_threshold=GL_DIGITS)),
        "colab": dict(loss_window=200, expected_to_fail=dict(gl_above_paper_threshold=GL_MNIST)),
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
    memorizer_samples: torch.Tensor | None = None     # D_M's samples from the same noises

    def sample_distances(self) -> dict:
        """Per initial noise, the pixel RMSE (``utils.metrics.image_rmse``) of the model's sample to
        ``D_G``'s sample and to ``D_M``'s sample from the same noise, and to its ``nearest`` training
        image: numpy arrays of one length (the paper's headline, Figs. 2, 3, 6b)."""
        if self.memorizer_samples is None:
            raise ValueError(f"{self.label}: the report has no D_M samples (pass D_M_samples to evaluate_model)")
        return {"D_G": metrics.image_rmse(self.samples, self.gaussian_samples).numpy(),
                "D_M": metrics.image_rmse(self.samples, self.memorizer_samples).numpy(),
                "nearest": self.stats.nn_rmse.detach().cpu().numpy()}

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
                   gaussian_samples: torch.Tensor | None = None,
                   memorizer_samples: torch.Tensor | None = None) -> ModelReport:
    """Sample ``model`` from ``x_T`` and compare it with D_G and D_M of ``x_train``.

    ``x_eval``: clean held-out images (noised by ``utils.data.NoisyInputs`` with ``seed``);
    ``curve_sigmas``: where to evaluate the RMSE curves (default: ``utils.edm.band_grid()``, the grid
    of every band mean); ``regimes``: the bands the summaries average over. ``D_G``, ``D_M``,
    ``gaussian_samples`` and ``memorizer_samples`` (D_M's samples from ``x_T``) may be passed to reuse
    them across models that share a training set. Everything in the report is on the CPU.
    """
    as_images(x_train, "x_train")
    D_G = D_G if D_G is not None else GaussianDenoiser.fit(x_train)
    D_M = D_M if D_M is not None else EmpiricalDenoiser(x_train)
    curve_sigmas = edm.band_grid() if curve_sigmas is None else curve_sigmas
    samples = edm.sample(model, x_T, sample_sigmas).cpu()
    if gaussian_samples is None:
        gaussian_samples = edm.sample(D_G, x_T, sample_sigmas).cpu()
    if memorizer_samples is None:
        memorizer_samples = edm.sample(D_M, x_T, sample_sigmas).cpu()
    for name, ref in (("gaussian_samples", gaussian_samples), ("memorizer_samples", memorizer_samples)):
        if ref.shape != samples.shape:
            raise ValueError(f"{name} must have the samples' shape {tuple(samples.shape)}, got {tuple(ref.shape)}")
    per_input = metrics.rmse_curves({"G": (model, D_G), "M": (model, D_M)}, x_eval, curve_sigmas, seed=seed,
                                    per_input=True)
    return ModelReport(
        label=label or f"N={len(x_train)}", n_train=len(x_train), n_params=getattr(model, "n_params", None),
        samples=samples, gaussian_samples=gaussian_samples.cpu(),
        stats=sample_stats(samples, x_train), gaussian_stats=sample_stats(gaussian_samples.cpu(), x_train),
        sigmas=np.asarray(torch.as_tensor(curve_sigmas, dtype=torch.float64).flatten()),
        rmse_G_inputs=per_input["G"], rmse_M_inputs=per_input["M"], regimes=regimes,
        similarity=metrics.sample_similarity(samples, gaussian_samples.cpu()),
        memorizer_samples=memorizer_samples.cpu())


def quartiles(values, q=HEADLINE_QUANTILES) -> list[float]:
    """The percentiles ``q`` (default: the 25th, the median and the 75th) of finite ``values``."""
    v = np.asarray(values, dtype=float).ravel()
    if not len(v) or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty array of finite numbers, got {v.tolist()[:8]}")
    return [float(x) for x in np.percentile(v, q)]


# --------------------------------------------------------------------------- claims

@dataclass
class Results:
    """The numbers chapter 2's claims are decided on (plain floats, lists and strings). Lists follow
    the ladder ``ns`` (ascending) or the widths ``widths`` (ascending)."""

    ns: list                          # the dataset-size ladder
    memorized: list                   # memorized fraction of each N's samples (NN ratio < 1/3)
    gl: list                          # GL score of each N's samples (paper eq. 14) ...
    gl_se: list                       # ... and its standard error
    gl_heldout: list                  # GL of real held-out images against each N's training set ...
    gl_heldout_se: list               # ... and its standard error
    rmse_G_inter: list                # mean RMSE(D_theta, D_G) over the intermediate regime, per N
    rmse_G_inter_diff: list           # [mean, standard error] of that band mean, largest minus smallest N, paired
    regimes: str                      # the regimes' description
    widths: list                      # the width sweep (channels) at N = scale_n
    scale_n: int
    width_rmse_G_inter: list          # intermediate-regime RMSE to D_G per width
    width_rmse_G_inter_diff: list     # [mean, se] smallest minus largest width, paired
    width_memorized: list             # memorized fraction per width
    s_min: float                      # the smallest sigma of the band grid
    lowsigma_ladder: list             # RMSE(D_theta, D_G) at s_min per N
    lowsigma_width: list              # ... per width
    n_noises: int                     # initial noises of the headline comparison
    to_G: list                        # per N: median pixel RMSE of the network's sample to D_G's sample
    to_M: list                        # ... to D_M's sample from the same noise
    to_nearest: list                  # ... to its nearest training image
    high_mixed: float                 # mean RMSE(D_theta, D_G) over the high regime, largest N, book's p(sigma)
    high_lognormal: float             # ... the same N trained with EDM's log-normal p(sigma)


CLAIM_IDS = (
    "ch2.memorizes_then_generalizes",
    "ch2.copies_fall_with_n",
    "ch2.gl_rises_with_n",
    "ch2.rmse_to_dg_falls_with_n",
    "ch2.width_raises_rmse_to_dg",
    "ch2.copies_rise_with_width",
    "ch2.lowsigma_falls_with_n",
    "ch2.lowsigma_same_for_widths",
    "ch2.gl_above_paper_threshold",
    "ch2.gl_large_n_near_heldout",
    "ch2.gl_small_n_below_heldout",
    "ch2.gen_samples_near_dg",
    "ch2.mem_samples_near_dm",
    "ch2.sample_gap_to_dg_falls",
    "ch2.lognormal_high_sigma_gap",
)


def memorizing(memorized_fraction: float) -> bool:
    """Whether a model memorizes: more than :data:`MEMORIZING` of its samples are copies (measured)."""
    return bool(memorized_fraction > MEMORIZING)


def _trend_test(x, y, rising: bool):
    rho, _ = metrics.trend(x, y, rising=rising)
    return rho, (compare(rho, ">=", metrics.TREND_MIN) if rising else compare(rho, "<=", -metrics.TREND_MIN))


def claims(results: Results, settings: Settings) -> list[Claim]:
    """Chapter 2's claims, in the order of :data:`CLAIM_IDS`."""
    R, S = results, settings
    n = len(R.ns)
    for name in ("memorized", "gl", "gl_se", "gl_heldout", "gl_heldout_se", "rmse_G_inter", "lowsigma_ladder",
                 "to_G", "to_M", "to_nearest"):
        if len(getattr(R, name)) != n:
            raise ValueError(f"results.{name} has {len(getattr(R, name))} values for {n} ladder sizes")
    for name in ("width_rmse_G_inter", "width_memorized", "lowsigma_width"):
        if len(getattr(R, name)) != len(R.widths):
            raise ValueError(f"results.{name} has {len(getattr(R, name))} values for {len(R.widths)} widths")
    fmt = lambda xs, f="{:.3f}": " / ".join(f.format(x) for x in xs)   # noqa: E731
    Ns = " / ".join(f"{v:,d}" for v in R.ns)
    Cs = " / ".join(str(c) for c in R.widths)
    tmin = metrics.TREND_MIN
    ex = lambda cid: expected(S, cid)                 # noqa: E731
    out = []

    def add(cid, kind, test, **kw):
        out.append(Claim(id=cid, kind=kind, passed=test.passed, margin=test.margin, expected_to_fail=ex(cid), **kw))

    add("ch2.memorizes_then_generalizes", "paper",
        all_of(compare(R.memorized[0], ">", MEMORIZING), compare(R.memorized[-1], "<=", GENERALIZING)),
        figures=(6, 12), claim=f"The smallest N memorizes (more than {MEMORIZING:.0%} of its samples have NN ratio < 1/3), "
                               f"the largest generalizes (at most {GENERALIZING:.0%} do)",
        paper="FFHQ N = 68-1,094 / CIFAR N = 782 reproduce training images; N >= 4,375 / 12,500 generate new ones "
              "(paper Figs. 6b, 12)",
        ours=f"memorized fraction {fmt(R.memorized, '{:.2f}')} at N = {Ns}")

    rho, t = _trend_test(R.ns, R.memorized, rising=False)
    add("ch2.copies_fall_with_n", "paper", t, figures=(6, 12),
        claim="The memorized fraction falls as N grows (whole ladder)",
        paper="memorized replicas at small N become new images at large N (paper Figs. 6b, 12)",
        ours=f"{fmt(R.memorized, '{:.2f}')} at N = {Ns}; rank correlation with N {rho:+.2f} (needs <= -{tmin})")

    rho, t = _trend_test(R.ns, R.gl, rising=True)
    add("ch2.gl_rises_with_n", "paper", t, figures=(13,),
        claim="The GL score grows with N (whole ladder)", paper="GL rises with N on FFHQ and CIFAR-10 (paper Fig. 13a, d)",
        ours=f"GL {fmt(R.gl)} at N = {Ns}; rank correlation with N {rho:+.2f} (needs >= {tmin})")

    rho, t = _trend_test(R.ns, R.rmse_G_inter, rising=False)
    m, se = R.rmse_G_inter_diff
    add("ch2.rmse_to_dg_falls_with_n", "paper", t, figures=(6, 19),
        claim="The intermediate-regime RMSE(D_theta, D_G) falls as N grows (whole ladder)",
        paper="decreases with N, especially in the intermediate regime (FFHQ sigma in [0.116, 20], paper Fig. 6a; "
              "paper Fig. 19, CIFAR-10)",
        ours=f"mean over the intermediate regime ({R.regimes}): {fmt(R.rmse_G_inter)} at N = {Ns}; rank correlation "
             f"with N {rho:+.2f} (needs <= -{tmin}); largest - smallest N: difference {m:+.4f} +- {se:.4f}")

    rho, t = _trend_test(R.widths, R.width_rmse_G_inter, rising=True)
    m, se = R.width_rmse_G_inter_diff
    add("ch2.width_raises_rmse_to_dg", "paper", t, figures=(7, 20),
        claim=f"At N = {R.scale_n:,d}, the intermediate-regime RMSE(D_theta, D_G) rises with the width (all widths)",
        paper="decreases as scale decreases, intermediate regime (paper Fig. 7a; paper Fig. 20, CIFAR-10)",
        ours=f"{fmt(R.width_rmse_G_inter, '{:.4f}')} at {Cs} channels; rank correlation with width {rho:+.2f} "
             f"(needs >= {tmin}); smallest - largest width: difference {m:+.4f} +- {se:.4f}")

    rho, t = _trend_test(R.widths, R.width_memorized, rising=True)
    add("ch2.copies_rise_with_width", "paper", t, figures=(7,),
        claim=f"At N = {R.scale_n:,d}, the memorized fraction rises with the width (all widths)",
        paper="samples move from memorized to Gaussian-like as the model shrinks (paper Fig. 7b)",
        ours=f"{fmt(R.width_memorized, '{:.2f}')} at {Cs} channels; rank correlation with width {rho:+.2f} "
             f"(needs >= {tmin})")

    rho, t = _trend_test(R.ns, R.lowsigma_ladder, rising=False)
    add("ch2.lowsigma_falls_with_n", "paper", t, figures=(16,),
        claim=f"At sigma = {R.s_min:g} the residual RMSE(D_theta, D_G) falls with N",
        paper="the sigma -> 0 error is non-zero when N < d and falls with N (paper Fig. 16 left)",
        ours=f"{fmt(R.lowsigma_ladder, '{:.4f}')} at N = {Ns}; rank correlation {rho:+.2f} (needs <= -{tmin})")

    spread = relative_spread(R.lowsigma_width)
    add("ch2.lowsigma_same_for_widths", "paper", compare(spread, "<=", LOWSIGMA_SPREAD), figures=(16,),
        claim=f"At sigma = {R.s_min:g} the residual RMSE(D_theta, D_G) does not depend on the width (N = {R.scale_n:,d})",
        paper="it depends on N, not on model scale (paper Fig. 16 right)",
        ours=f"{fmt(R.lowsigma_width, '{:.4f}')} at {Cs} channels; relative spread (max - min) / mean {spread:.3f} "
             f"(needs <= {LOWSIGMA_SPREAD})")

    add("ch2.gl_above_paper_threshold", "paper", compare(R.gl[-1], ">", PAPER_GL_THRESHOLD), figures=(13,),
        where="App. B.1", claim="A generalizing model (largest N) has GL > 0.6",
        paper="GL > 0.6 indicates generalization (paper App. B.1, FFHQ)",
        ours=f"GL {R.gl[-1]:.3f} at N = {R.ns[-1]:,d}; real held-out images {R.gl_heldout[-1]:.3f}")

    ratio_full = R.gl[-1] / R.gl_heldout[-1] if R.gl_heldout[-1] > 0 else math.nan
    add("ch2.gl_large_n_near_heldout", "control", compare(ratio_full, ">=", 1 - GL_TOLERANCE),
        claim=f"(transferred) The generalizing model's GL is at least that of real held-out images, within "
              f"{GL_TOLERANCE:.0%}",
        paper="GL > 0.6 indicates generalization on FFHQ (paper App. B.1); the book compares with real held-out images instead",
        ours=f"N = {R.ns[-1]:,d}: network {R.gl[-1]:.3f} +- {R.gl_se[-1]:.3f}, held-out images {R.gl_heldout[-1]:.3f} "
             f"+- {R.gl_heldout_se[-1]:.3f}; ratio {ratio_full:.2f} (needs >= {1 - GL_TOLERANCE:.2f})")

    ratio_small = R.gl[0] / R.gl_heldout[0] if R.gl_heldout[0] > 0 else math.nan
    add("ch2.gl_small_n_below_heldout", "control", compare(ratio_small, "<=", GL_FAR),
        claim=f"(transferred) The memorizing model's GL is far below that of real held-out images (at most "
              f"{GL_FAR:g} times it)",
        paper="memorizing models score far below the generalizing level (paper App. B.1, paper Fig. 13a)",
        ours=f"N = {R.ns[0]:,d}: network {R.gl[0]:.3f} +- {R.gl_se[0]:.3f}, held-out images {R.gl_heldout[0]:.3f}; "
             f"ratio {ratio_small:.2f} (needs <= {GL_FAR:g})")

    mem = [memorizing(f) for f in R.memorized]
    gen_i = [i for i, m_ in enumerate(mem) if not m_]
    mem_i = [i for i, m_ in enumerate(mem) if m_]
    dist = lambda idx: "; ".join(f"N = {R.ns[i]:,d}: to D_G {R.to_G[i]:.3f}, to D_M {R.to_M[i]:.3f}, "    # noqa: E731
                                 f"nearest training image {R.to_nearest[i]:.3f}" for i in idx) or "no such N"
    how = (f"median over {R.n_noises} initial noises of the per-image pixel RMSE between the network's final sample "
           f"and D_G's / D_M's sample from the same noise")
    t = all_of(*[compare(R.to_G[i], "<", R.to_M[i]) for i in gen_i]) if gen_i else compare(math.nan, "<", 0)
    add("ch2.gen_samples_near_dg", "paper", t, figures=(2, 3, 6),
        claim=f"At every generalizing N (memorized fraction <= {MEMORIZING:g}, measured), the network's samples are "
              f"closer to D_G's samples from the same noises than to D_M's",
        paper="a generalizing network's samples share their structure with the Gaussian model's from the same noise; "
              "the memorizing (Multi-Delta) model's are training images (paper Figs. 2 right, 3, 6b)",
        ours=f"{how}: {dist(gen_i)}")
    t = all_of(*[compare(R.to_M[i], "<", R.to_G[i]) for i in mem_i]) if mem_i else compare(math.nan, "<", 0)
    add("ch2.mem_samples_near_dm", "paper", t, figures=(2, 3, 6),
        claim=f"At every memorizing N (memorized fraction > {MEMORIZING:g}, measured), the network's samples are closer "
              f"to D_M's samples from the same noises than to D_G's",
        paper="memorizing networks reproduce training images (paper Fig. 6b); the Gaussian samples do not",
        ours=f"{how}: {dist(mem_i)}")

    rho, t = _trend_test(R.ns, R.to_G, rising=False)
    add("ch2.sample_gap_to_dg_falls", "paper", t, figures=(6,),
        claim="The distance between the network's samples and D_G's from the same noises falls as N grows (whole ladder)",
        paper="with growing N the samples turn from replicas into images with the Gaussian structure (paper Fig. 6b)",
        ours=f"median pixel RMSE to D_G's sample {fmt(R.to_G)} at N = {Ns}; rank correlation with N {rho:+.2f} "
             f"(needs <= -{tmin})")

    t = all_of(compare(R.high_lognormal, ">", PAPER_CLOSE), compare(R.high_lognormal, ">", R.high_mixed))
    add("ch2.lognormal_high_sigma_gap", "paper", t, figures=(7, 17),
        claim=f"Trained with EDM's log-normal p(sigma), the N = {R.ns[-1]:,d} network departs from D_G at high sigma: "
              f"its mean RMSE to D_G over the high regime exceeds {PAPER_CLOSE} and that of the book's mixed p(sigma)",
        paper="networks under-trained at high sigma (bell-shaped p_train) have a larger error to D_G there "
              "(paper App. F.2, paper Figs. 7a, 17b-c)",
        ours=f"high-regime mean RMSE(D_theta, D_G): log-normal {R.high_lognormal:.3f}, mixed {R.high_mixed:.3f} "
             f"(needs log-normal > {PAPER_CLOSE} and > mixed)")
    return out
