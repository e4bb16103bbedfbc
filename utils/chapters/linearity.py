"""Chapter 3: how linear a trained denoiser is, and what its best affine approximation looks like.

The measurements themselves are core: ``utils.metrics.linearity_curves`` (paper eq. 11 / 12),
``utils.distill.distill_grid`` (closed-form linear distillation at every sigma, optionally the
paper's Adam recipe on the same pairs), ``utils.metrics.rmse_curves`` (eq. 10) and
``utils.metrics.singular_alignment`` (Fig. 4 right); every band mean is taken on ``utils.edm.band_grid()``.
This module holds what only this chapter needs:

* :class:`Settings` / :func:`settings` -- the chapter's knobs per profile, with the claims each profile
  does not expect to hold (``expected_to_fail``, written before the run);
* :class:`Results`, :data:`CLAIM_IDS`, :func:`claims` -- the chapter's numbers and the claims decided
  from them against the thresholds below;
* :func:`memorization` -- samples of a denoiser from the book's initial noises and their
  memorized fraction, the measured criterion that splits the ladder into memorizing and
  generalizing models;
* :func:`trained_sigmas` -- whether a network saw, above each sigma, as many training draws
  (``utils.edm.training_draws_above``) as the paper's networks saw above the sigma where the paper
  itself calls them under-trained (a property of the training recipe, not of the outcome);
* :func:`intermediate_levels`, :func:`symmetry_steps` -- where and on how many
  noisy inputs the networks are distilled, and which snapshots the symmetry-over-training test uses;
* :func:`aligned_singular_vectors` -- singular vectors of W_L and W_G as images, signs matched;
* :func:`asymmetry` -- ||W - W^T||_F / ||W||_F (paper Fig. 14a);
* :func:`largest_drop` -- how far a score falls, at the worst sigma, as alpha^2 grows (paper Fig. 10);
* :func:`off_distribution_inputs` -- clean images of another dataset at the data's shape (the
  paper distils its FFHQ networks on CelebA-HQ);
* :func:`weight_errors`, :func:`matched_n_noise`, :func:`paired_rmse` -- small bookkeeping.

The constants below are the chapter's analysis choices, fixed before any result was looked at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import data, edm, metrics
from ..checks import as_images, positive_int, sigma_list
from ..claims import Claim, all_of, compare, expected
from ..settings import ChapterSettings

# A model whose samples are copies (NN ratio < 1/3) more often than this counts as memorizing.
MEMORIZED_THRESHOLD = metrics.MEMORIZING_FRACTION
# The paper calls its EDM networks under-trained at sigma in {42.4, 80} (App. G.2); its FFHQ ladder
# networks saw 70,246,400 training images (paper.md §2.5), all with EDM's log-normal p(sigma).
PAPER_UNDERTRAINED_SIGMA = 42.4152
PAPER_IMAGES_SEEN = 70_246_400
# The paper's alpha^2 values for the alpha sweep (its code: linspace(0.99, 0.5, 5); Fig. 10).
PAPER_ALPHA2 = (0.99, 0.8675, 0.745, 0.6225, 0.5)

# --------------------------------------------------------------------------- analysis choices
# The paper's own numbers, kept as its claims state them.
PAPER_LS_MIN = 0.96          # minimum linearity score of its largest (generalizing) models (§3.1, Fig. 1)
PAPER_LS_SMALL = 0.77        # ... and of its smallest (N = 68, memorizing) one (official notebook, paper.md §7 E1)
PAPER_CLOSE = metrics.PAPER_CLOSE   # RMSE "close" between denoisers (Fig. 2: D_L vs D_G at every sigma, and the regimes)
PAPER_WEIGHT_NMSE = 0.2      # ||W_L - W_G||_F / ||W_G||_F below this "for most sigma" (Fig. 4 left)
PAPER_HIGH_SIGMA = 60.0      # Fig. 17a: D_M ~ D_G ~ a well-trained D_theta at sigma = 60, for every N
# "Most sigma": more than this share of the noise levels of the grid.
MOST = 0.5
# Fig. 4 right: the top-k singular vectors of W_L and W_G "align". Two readings, both asked of every
# level of the sampler grid in the intermediate and high regimes (the paper: "good alignment for
# sigma in [0.116, 80]", its intermediate and high regimes; "ambiguous" below, where W ~ I):
# * per vector (the paper's correlation matrix read along its diagonal): the mean over i <= k of
#   |u_L,i . u_G,i| (absolute cosine: singular vectors have no sign; paper.md §10);
# * per subspace: ||U_L,k^T U_G,k||_F^2 / k, the mean squared cosine of the principal angles, which
#   forgives vectors mixing inside a block of nearly equal singular values.
# Either reaches ALIGN_MIN; two random k-dimensional subspaces of R^d overlap by k/d (0.31 at cpu) and
# two random unit vectors have |cos| ~ sqrt(2 / (pi d)) (0.10 at cpu).
ALIGN_MIN = 0.8
# Fig. 14a: W_L is "nearly symmetric" when ||W - W^T||_F / ||W||_F (averaged over the intermediate
# regime) is below SYMMETRY_MAX; a matrix of independent entries scores about sqrt(2) = 1.41, W_G 0.
SYMMETRY_MAX = 0.1
# Symmetry over the network's training: the snapshots of the largest ladder run nearest to these
# fractions of its training steps, and its final weights (symmetry_steps).
SYMMETRY_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
# Fig. 10: "the score rises as alpha^2 -> 1 at every sigma", up to the resolution of a cosine of
# float32 network outputs (~1e-7 relative each): a fall smaller than this is round-off, not a trend.
COSINE_RESOLUTION = 1e-6
# "Clearly smaller" (RMSE(D_L, D_G) of the generalizing network against the memorizing ones, and the
# tower-property control): at most this factor of the other.
CLEARLY = 0.5


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 3's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences.
    Thresholds are the constants above. The RMSE curves use the profile's shared ``n_eval`` held-out
    images (as chapter 2 does, so that the two chapters report the same distances)."""

    CHAPTER = "ch3"
    n_pairs: int = 100            # pairs of held-out images of the linearity score
    lin_steps: int = 40           # EDM grid of the linearity curves
    alpha2: list[float] = field(default_factory=lambda: list(PAPER_ALPHA2))
    n_distill: int = 297          # held-out images of the distillation
    n_noise: int = 16             # noises per image of the distillation (raised where d needs more: utils.distill.noise_draws)
    adam_epochs: int = 100
    align_k: int = 20             # singular vectors compared (Fig. 4 right)
    sv_sigma: float = 1.5017      # intermediate noise level of the singular-vector figure and of the
    #                               symmetry-over-training test (the sampler-grid level nearest to it)
    n_sv: int = 16
    n_show: int = 10
    # intermediate levels of the band grid at which the networks are distilled: 0 = every one (cpu: 8);
    # a positive count keeps that many, evenly spaced (the smoke budget, where a fit at d = 1,024 costs
    # over a thousand network calls on a CPU)
    inter_fits: int = 0
    # inputs from another distribution for distillation (paper: CelebA-HQ for its FFHQ networks):
    # natural-image patches average-pooled to the data's shape
    off_dataset: str = "patches"
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(n_pairs=4, lin_steps=10, alpha2=[0.99, 0.5], n_distill=64, n_noise=2, adam_epochs=3,
                      align_k=8, n_sv=8, n_show=6, inter_fits=1),
        # Claims not expected to hold at cpu, each with its reason, written down before the run (from
        # the training recipe, the data, or an earlier cpu build's measurements shown on the page);
        # each is still evaluated, and reported as passing if it holds.
        "cpu": dict(expected_to_fail={
            "alpha_every_sigma":
                "in the low regime, where the five scores are all close to 1, the curves of the two most "
                "even mixes cross; the minimum over sigma orders with alpha^2 (next claim)",
            "dl_dg_close_every_sigma":
                "sigma = 80 is not trained at cpu: the networks saw fewer training draws above it than the "
                "paper's networks saw above 42.4, where the paper reports its own under-training (the count "
                "of section 3.3, a property of the training recipe); the next claim leaves it out",
            "dl_dg_smaller_than_memorizing":
                "the second memorizing network, N = 64 = d, copies only part of its samples and its "
                "distilled map is already close to D_G",
            "weight_nmse_most_sigma":
                "5 of the 10 levels of the sampler grid lie in the digits' high regime (sigma > 1.67), where "
                "W_G ~ Sigma / sigma^2 is so small that a deviation small in RMSE is large relative to it "
                "(paper App. G.5); the paper's FFHQ grid has 3 of its 10 levels there",
            "symmetric_large_n":
                "the asymmetric part of W_L lies mostly outside the leading principal components (see the "
                "restricted value), in low-variance directions that training constrains least; W_L grows "
                "more symmetric with N (the next claim)",
            # The four below were measured not to hold by the first cpu build of their per-sigma form
            # (issue 22: "at every sigma" where the paper says so; 2026-12-05); thresholds unchanged.
            "high_dl_matches_net":
                "the digits' high regime starts at sigma ~ 1.7 (read off their spectrum), far below the paper's "
                "20: from sigma = 9.7 up the distilled map is within 0.024 of the network, but at the regime's "
                "lowest fitted level, sigma = 4.07, it misses by 0.054",
            "low_dl_dg_match_net":
                "in the digits' low regime the short-trained 8x8 networks stay within 0.03 of the identity "
                "(ch3.low_identity) but not within 0.05 of D_L and D_G at every level: the largest gaps "
                "measured are 0.059 (D_L) and 0.069 (D_G)",
            "singular_vectors_correlate":
                "at sigma >= 21 the networks are barely trained at cpu (section 3.3's count of training draws) "
                "and W_L is far from W_G there (weight NMSE 0.7-3.0); below, at d = 64 the leading singular "
                "values of W_G come in near-equal pairs, where single vectors are not defined (per vector "
                "0.47-0.78 at sigma <= 9.7, while the subspaces overlap 0.82-0.93: next claim)",
            "singular_subspaces_align":
                "at sigma >= 21, where the networks are barely trained at cpu and W_L is far from W_G (weight "
                "NMSE 0.7-3.0), the top-20 subspaces overlap 0.71-0.77; from sigma = 9.7 down they overlap "
                "0.82-0.93"}),
        # n_distill x n_noise = 10,000 noisy inputs per sigma > d = 1,024 (the closed-form fit needs > d)
        "colab": dict(n_distill=5000, n_noise=2, align_k=50, sv_sigma=4.0661, n_sv=25),
        # off_dataset for CIFAR-10 (3x32x32): grey 16x16 patches, pixel-doubled and repeated over RGB.
        "gpu": dict(n_distill=10000, n_noise=4, align_k=100, sv_sigma=4.0661, n_sv=25),
    }

    def validate(self) -> None:
        if len(self.alpha2) < 2 or any(not 0 < a <= 1 for a in self.alpha2):
            raise ValueError(f"alpha2 must hold at least two values in (0, 1], got {self.alpha2}")
        if not self.sv_sigma > 0:
            raise ValueError(f"sv_sigma must be > 0, got {self.sv_sigma}")
        for name in ("n_pairs", "lin_steps", "n_distill", "n_noise", "adam_epochs", "align_k", "n_sv", "n_show"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inter_fits < 0:
            raise ValueError(f"inter_fits must be >= 0 (0: every intermediate level), got {self.inter_fits}")
        unknown = sorted(set(self.expected_to_fail) - {i.split(".", 1)[1] for i in CLAIM_IDS}
                         - set(CLAIM_IDS))
        if unknown:
            raise ValueError(f"expected_to_fail names unknown claim(s) {unknown}; known: {list(CLAIM_IDS)}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: the model ladder of chapter 2 (shared, not retrained)."""
    return [P.train_spec(n, seed=seed) for n in P.train_sizes]


# --------------------------------------------------------------------------- training coverage

def trained_sigmas(sigmas, images_seen: int, uniform_share: float = 0.0,
                   reference_sigma: float = PAPER_UNDERTRAINED_SIGMA,
                   reference_images: int = PAPER_IMAGES_SEEN) -> list:
    """For each sigma: did the network see at least as many training draws above it as the paper's
    networks saw above ``reference_sigma``, where the paper reports them under-trained?"""
    need = edm.training_draws_above(reference_sigma, reference_images)
    return [edm.training_draws_above(float(s), images_seen, uniform_share) >= need
            for s in sigma_list(sigmas)]


# --------------------------------------------------------------------------- memorization

def memorization(denoiser, x_train: torch.Tensor, n_samples: int, seed: int = 0, steps: int = 10,
                 threshold: float = MEMORIZED_THRESHOLD) -> dict:
    """Sample ``denoiser`` from ``utils.edm.initial_noise(n_samples, ..., seed)`` (``steps``-step
    Euler, paper eq. 4) and measure how many samples are copies of ``x_train``.

    Returns dict(samples, x_T, stats (``utils.metrics.SampleStats``), fraction (NN ratio < 1/3),
    gl (paper eq. 14), memorizing (fraction > ``threshold``)).
    """
    as_images(x_train, "x_train")
    positive_int(n_samples, "n_samples")
    sigmas = edm.sigma_steps(steps)
    x_T = edm.initial_noise(n_samples, x_train.shape[1:], seed=seed, sigma_max=float(sigmas[0]),
                            device=x_train.device, dtype=x_train.dtype)
    samples = edm.sample(denoiser, x_T, sigmas).cpu()
    stats = metrics.sample_stats(samples, x_train)
    return dict(samples=samples, x_T=x_T, stats=stats, fraction=stats.memorized, gl=stats.gl,
                memorizing=bool(stats.memorized > threshold))


# --------------------------------------------------------------------------- distillation bookkeeping

def matched_n_noise(n_inputs: int, n_images: int) -> int:
    """Noise draws per image so that ``n_images`` images give at least ``n_inputs`` noisy inputs."""
    positive_int(n_inputs, "n_inputs")
    positive_int(n_images, "n_images")
    return -(-n_inputs // n_images)


def weight_errors(fits, reference_weight, sigmas) -> list:
    """``utils.metrics.weight_nmse(W_L, W_ref(sigma))`` at each sigma of a distillation grid."""
    return [metrics.weight_nmse(f.W, reference_weight(float(s))) for f, s in zip(fits, sigmas)]


def aligned_singular_vectors(W: torch.Tensor, W_ref: torch.Tensor, k: int, shape):
    """The top-k left singular vectors of W and of W_ref as images (k, *shape), each scaled to
    [-1, 1] and the signs of W's vectors flipped to agree with W_ref's (for display)."""
    positive_int(k, "k")
    U = torch.linalg.svd(W.to(torch.float64))[0][:, :k]
    U_ref = torch.linalg.svd(W_ref.to(torch.float64))[0][:, :k]
    sign = torch.sign((U * U_ref).sum(0))
    sign[sign == 0] = 1.0
    U = U * sign

    def images(M):
        M = M.T / M.abs().amax(0)[:, None].clamp_min(1e-300)
        return M.reshape(k, *shape).to(torch.float32)

    return images(U), images(U_ref)


def asymmetry(W: torch.Tensor, basis: torch.Tensor | None = None) -> float:
    """||W - W^T||_F / ||W||_F of a square matrix (paper Fig. 14a): 0 for a symmetric matrix such as
    W_G = U diag(lambda / (lambda + s^2)) U^T, about sqrt(2) for a matrix of independent entries.
    With ``basis`` (d, k orthonormal columns, e.g. the top principal components) the same for the
    restriction B^T W B of W to that subspace."""
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square matrix, got {getattr(W, 'shape', type(W).__name__)}")
    W = W.to(torch.float64)
    if basis is not None:
        if not isinstance(basis, torch.Tensor) or basis.ndim != 2 or basis.shape[0] != W.shape[0]:
            raise ValueError(f"basis must be a ({W.shape[0]}, k) matrix, got {getattr(basis, 'shape', type(basis).__name__)}")
        B = basis.to(W.device, torch.float64)
        W = B.T @ W @ B
    return float((W - W.T).norm() / W.norm().clamp_min(1e-300))


def largest_drop(scores, alpha2) -> float:
    """How far a score falls as alpha^2 grows, at the worst sigma: the largest s(a_i) - s(a_j) over
    alpha^2 values a_i < a_j and every column (sigma) of ``scores`` (len(alpha2), n_sigmas). <= 0 when
    the score never falls (paper Fig. 10: it rises as alpha^2 -> 1 at every sigma)."""
    v = torch.as_tensor(scores, dtype=torch.float64)
    a = torch.as_tensor(alpha2, dtype=torch.float64).flatten()
    if v.ndim != 2 or v.shape[0] != len(a) or len(a) < 2:
        raise ValueError(f"scores must be (len(alpha2) >= 2, n_sigmas), got {tuple(v.shape)} for {len(a)} alphas")
    v = v[torch.argsort(a)]
    running_max = torch.cummax(v, 0).values            # best score at any smaller alpha^2
    return float((running_max[:-1] - v[1:]).max())


def off_distribution_inputs(name: str, shape, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` held-out images of dataset ``name`` (all of them if it has fewer; a seeded subset) brought
    to image ``shape`` (C, H, W): average-pooled
    (``utils.data.downsample``) or pixel-repeated by an integer factor, grey repeated over C channels.
    Inputs from another distribution than the training data, for distillation (paper: CelebA-HQ
    inputs for its FFHQ networks)."""
    positive_int(n, "n")
    C, H, W = (int(v) for v in shape)
    x = data.load(name, split="heldout", n=min(n, len(data.load(name, split="heldout"))), seed=seed)
    h, w = x.shape[-2:]
    if h != w or H != W or max(h, H) % min(h, H):
        raise ValueError(f"cannot bring {name!r} images of size {h}x{w} to {H}x{W} by an integer factor")
    if h > H:
        x = data.downsample(x, h // H)
    elif h < H:
        x = x.repeat_interleave(H // h, -2).repeat_interleave(W // w, -1)
    if x.shape[1] != C:
        if x.shape[1] != 1:
            raise ValueError(f"cannot bring {x.shape[1]}-channel {name!r} images to {C} channels")
        x = x.expand(-1, C, -1, -1).clone()
    return x


def paired_rmse(finals: dict) -> dict:
    """Mean paired pixel RMSE between the final samples of every two denoisers (same noises)."""
    labels = list(finals)
    return {(a, b): metrics.sample_similarity(finals[a], finals[b])["rmse"]
            for i, a in enumerate(labels) for b in labels[i + 1:]}


def intermediate_levels(sigmas, regimes, count: int = 0) -> torch.Tensor:
    """The levels of ``sigmas`` (e.g. ``utils.edm.band_grid()``) in the intermediate regime of
    ``regimes``, in the grid's order; with ``count`` > 0, at most that many of them, evenly spaced
    along the grid (the first and the last kept)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    levels = s[torch.as_tensor(regimes.mask(s, "intermediate"))]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0 (0: every level), got {count!r}")
    if not len(levels):
        raise ValueError(f"no level of the grid lies in the intermediate regime {regimes.intermediate}")
    if 0 < count < len(levels):
        idx = sorted({round(i * (len(levels) - 1) / max(count - 1, 1)) for i in range(count)})
        levels = levels[idx]
    return levels


def symmetry_steps(snapshot_steps, train_steps: int) -> list:
    """The training steps at which the symmetry of W_L is followed over one run's training: the kept
    snapshot nearest (in log scale) to each of :data:`SYMMETRY_FRACTIONS` of ``train_steps``, and
    ``train_steps`` itself (the final weights), ascending and without repeats."""
    positive_int(train_steps, "train_steps")
    steps = sorted({int(s) for s in snapshot_steps if 0 < int(s) < train_steps} | {train_steps})
    picks = {min(steps, key=lambda s: abs(math.log(s) - math.log(f * train_steps))) for f in SYMMETRY_FRACTIONS}
    return sorted(picks | {train_steps})


# --------------------------------------------------------------------------- claims

@dataclass
class Results:
    """The chapter's computed numbers that its claims need (plain numbers and lists, JSON-ready).

    Per-N lists follow ``ladder`` (ascending N). "Fitted levels" are the noise levels at which the
    largest network is distilled: the sampler's grid and the band grid's intermediate levels."""

    # the ladder and its linearity (paper Figs. 1, 13)
    ladder: list                  # N, ascending
    memorizing: list              # the N whose networks memorize (measured in section 3.1)
    lin_min: list                 # min over sigma of the linearity score, cosine form (eq. 11)
    lin_err_max: list             # max over sigma of its error form (eq. 12)
    # the alpha sweep of the largest network (Fig. 10)
    alpha2: list
    alpha_mins: list              # min over sigma of the score, per alpha^2
    alpha_drop: float             # largest_drop over every sigma
    # the largest network against D_L, D_G, D_M (Fig. 2 left)
    fit_sigmas: list              # the fitted levels, descending
    fit_regimes: list             # "low" / "intermediate" / "high" for each
    fit_trained: list             # trained_sigmas of each (a property of the training recipe)
    L_theta: list                 # RMSE(D_L, D_theta) at the fitted levels
    L_G: list                     # RMSE(D_L, D_G) at the fitted levels
    G_theta_low: list             # RMSE(D_G, D_theta) at the band grid's levels of the low regime
    inter_L: float                # intermediate-regime band means (band grid) of RMSE to D_theta
    inter_G: float
    inter_M: float
    # the regimes across the ladder (Figs. 15, 17a)
    low_id: list                  # low-regime band mean of RMSE(D_theta, identity)
    high_MG: list                 # RMSE(D_M, D_G) at high_sigma
    high_sigma: float             # the band-grid level nearest PAPER_HIGH_SIGMA
    # the ladder distilled on held-out inputs (Fig. 5a): intermediate-regime band mean of RMSE(D_L, D_G)
    lg_inter: list
    # weights of the largest network on the sampler grid (Fig. 4)
    w_sigmas: list
    w_regimes: list
    w_closed: list                # ||W_L - W_G||_F / ||W_G||_F of the closed-form fit
    w_adam: list                  # ... of the paper's Adam recipe after adam_epochs
    align_k: int
    d: int
    align_diag: list              # mean |u_L,i . u_G,i| over i <= align_k, per w_sigma
    align_subspace: list          # subspace overlap, per w_sigma
    # symmetry (Fig. 14a)
    asym_inter: list              # intermediate-regime band mean of asymmetry(W_L), per N
    asym_top: float               # the largest N's, restricted to its training set's top align_k components
    sym_sigma: float              # the level of the symmetry-over-training test
    sym_steps: list               # training steps of the largest network's snapshots
    asym_steps: list              # asymmetry(W_L) of each snapshot at sym_sigma
    # samples from the same initial noises (Figs. 2 right, 3): mean paired pixel RMSE
    n_noises: int
    d_LG: float
    d_LM: float
    d_GM: float
    d_thG: float
    d_thM: float
    # the book's controls (intermediate-regime band means of RMSE(D_L, D_G))
    ctrl_train: float             # smallest N, distilled on its own training images
    ctrl_held: float              # smallest N, distilled on held-out images
    off_N: list                   # networks distilled on off_dataset inputs
    off_inter: list               # ... their RMSE(D_L, D_G) on those inputs

    @property
    def n_small(self) -> int:
        return min(self.ladder)

    @property
    def n_big(self) -> int:
        return max(self.ladder)

    @property
    def generalizing(self) -> list:
        return [n for n in self.ladder if n not in self.memorizing]

    def per_n(self, values) -> dict:
        return dict(zip(self.ladder, values))


CLAIM_IDS = (
    "ch3.min_linearity_rises", "ch3.linearity_above_096", "ch3.error_form_falls", "ch3.alpha_every_sigma",
    "ch3.alpha_min_rises", "ch3.high_dl_matches_net", "ch3.low_dl_dg_match_net", "ch3.intermediate_dm_furthest",
    "ch3.low_identity", "ch3.high_dm_dg_coincide", "ch3.dl_dg_close_every_sigma", "ch3.dl_dg_close_trained",
    "ch3.dl_dg_smaller_than_memorizing", "ch3.weight_nmse_most_sigma", "ch3.weight_nmse_worst_at_80",
    "ch3.closed_form_beats_adam", "ch3.singular_vectors_correlate", "ch3.singular_subspaces_align",
    "ch3.symmetric_large_n", "ch3.symmetry_rises_with_n",
    "ch3.symmetry_rises_over_training", "ch3.samples_dl_dg_closest", "ch3.net_samples_nearer_dg",
    "ch3.training_input_control", "ch3.off_distribution_transfer",
)

NAN = float("nan")


def _fmt(xs, f="{:.3f}") -> str:
    return ", ".join(f.format(x) for x in xs)


def _max(xs) -> float:
    xs = [float(x) for x in xs]
    return max(xs) if xs else NAN


def _trend(x, y, rising: bool = True):
    """(rho, Test) of a stated trend over a whole sequence (``utils.metrics.trend``); a sequence too
    short or not finite fails, with rho NaN."""
    try:
        rho = metrics.rank_correlation(x, y)
    except ValueError:
        return NAN, compare(NAN, ">=", metrics.TREND_MIN)
    return rho, (compare(rho, ">=", metrics.TREND_MIN) if rising else compare(rho, "<=", -metrics.TREND_MIN))


def claims(results: Results, settings: Settings) -> list:
    """Chapter 3's claims (ids :data:`CLAIM_IDS`), each decided from ``results`` against the thresholds
    above; ``expected_to_fail`` only from ``settings.expected_to_fail`` (written before the run)."""
    R, S = results, settings
    tmin = metrics.TREND_MIN
    big, small = R.n_big, R.n_small
    Ns = list(R.ladder)
    out = []

    def add(cid, kind, claim, paper, ours, test, figures=(), where=""):
        out.append(Claim(id=cid, kind=kind, figures=figures, where=where, claim=claim, paper=paper, ours=ours,
                         passed=test.passed, margin=test.margin, expected_to_fail=expected(S, cid)))

    # ---------------------------------------------------------------- linearity (Figs. 1, 10, 13)
    rho, t = _trend(Ns, R.lin_min)
    add("ch3.min_linearity_rises", "paper",
        "The minimum over sigma of the linearity score (alpha = beta = 1/sqrt 2) rises with N (whole ladder)",
        f"FFHQ 68 -> 70,000 images: ~{PAPER_LS_SMALL} -> ~0.97; linearity increases with N (Fig. 1, Fig. 13b)",
        f"{_fmt(R.lin_min)} at N = {Ns}; rank correlation with N {rho:+.2f} (needs >= {tmin})", t, figures=(1, 13))
    lmin_big = R.per_n(R.lin_min).get(big, NAN)
    add("ch3.linearity_above_096", "paper", f"The largest training set gives a minimum linearity score above {PAPER_LS_MIN}",
        f"> {PAPER_LS_MIN} (official notebook: 70,000: 0.973; 35,000: 0.966; 8,750: 0.944)",
        f"N = {big}: {lmin_big:.3f}", compare(lmin_big, ">", PAPER_LS_MIN), figures=(1,))
    rho, t = _trend(Ns, R.lin_err_max, rising=False)
    add("ch3.error_form_falls", "paper",
        "The error form of the linearity score (eq. 12) falls with N (maximum over sigma, whole ladder)",
        "the error form shows the same trend as the cosine form (Fig. 13c, f)",
        f"{_fmt(R.lin_err_max)} at N = {Ns}; rank correlation {rho:+.2f} (needs <= -{tmin})", t, figures=(13,))
    add("ch3.alpha_every_sigma", "paper", "The linearity score rises as alpha^2 -> 1, at every sigma (largest N)",
        "alpha^2 = 0.99 ... 0.5: the more even the mix, the lower the score (Fig. 10)",
        f"largest fall of the score from a smaller to a larger alpha^2, over every sigma: {R.alpha_drop:.1e} "
        f"(needs <= {COSINE_RESOLUTION:.0e})", compare(R.alpha_drop, "<=", COSINE_RESOLUTION), figures=(10,))
    rho, t = _trend(R.alpha2, R.alpha_mins)
    add("ch3.alpha_min_rises", "paper",
        "The minimum over sigma of the linearity score rises as alpha^2 -> 1 (largest N, every alpha)",
        "the even mix alpha^2 = 0.5 is the hardest test: 70,000 images ~0.972 vs ~0.9985 at 0.99 (Fig. 10)",
        f"{_fmt(R.alpha_mins, '{:.4f}')} at alpha^2 = {list(R.alpha2)}; rank correlation {rho:+.2f} (needs >= {tmin})",
        t, figures=(10,))

    # ---------------------------------------------------------------- the regimes (Figs. 2, 15, 17a)
    def at(values, regime):
        return [(s, v) for s, r, v in zip(R.fit_sigmas, R.fit_regimes, values) if r == regime]

    high = at(R.L_theta, "high")
    add("ch3.high_dl_matches_net", "paper",
        "High noise: the distilled D_L matches the generalizing network at every fitted sigma of the high regime",
        "RMSE(D_L, D_theta) < 0.05 for sigma in [20, 80] (Fig. 2)",
        f"N = {big}: " + (", ".join(f"{v:.4f} at {s:.3g}" for s, v in high) or "no fitted level in the regime")
        + f" (needs < {PAPER_CLOSE})", compare(_max(v for _, v in high), "<", PAPER_CLOSE), figures=(2,))
    low_L = at(R.L_theta, "low")
    t = all_of(compare(_max(v for _, v in low_L), "<", PAPER_CLOSE), compare(_max(R.G_theta_low), "<", PAPER_CLOSE))
    add("ch3.low_dl_dg_match_net", "paper",
        "Low noise: D_L and D_G match the generalizing network at every sigma of the low regime",
        "RMSE(D_L, D_theta) and RMSE(D_G, D_theta) < 0.05 for sigma in [0.002, 0.1] (Fig. 2)",
        f"N = {big}, largest over the regime: D_L {_max(v for _, v in low_L):.4f} ({len(low_L)} fitted levels), "
        f"D_G {_max(R.G_theta_low):.4f} ({len(R.G_theta_low)} levels of the band grid)", t, figures=(2,))
    add("ch3.intermediate_dm_furthest", "paper",
        "Intermediate noise: D_M is further from the generalizing network than D_L and D_G are (band means)",
        "D_M has high error there, D_L and D_G lower (Fig. 2)",
        f"N = {big}, mean over the intermediate regime of the band grid: D_M {R.inter_M:.3f}, D_L {R.inter_L:.3f}, "
        f"D_G {R.inter_G:.3f}", compare(R.inter_M, ">", max(R.inter_L, R.inter_G)), figures=(2,))
    gen_id = [v for n, v in R.per_n(R.low_id).items() if n in R.generalizing]
    add("ch3.low_identity", "paper", "Low noise: every generalizing network is close to the identity (mean over the low regime)",
        "||D_theta(x) - x|| -> 0 for sigma <~ 0.1, across architectures (Fig. 15, App. D)",
        "RMSE(D_theta, identity): " + (", ".join(f"N = {n}: {v:.4f}" for n, v in R.per_n(R.low_id).items()
                                               if n in R.generalizing) or "no generalizing network")
        + f" (needs < {PAPER_CLOSE})", compare(_max(gen_id), "<", PAPER_CLOSE), figures=(15,))
    add("ch3.high_dm_dg_coincide", "paper",
        f"High noise: D_M and D_G nearly coincide at sigma = {PAPER_HIGH_SIGMA:g}, for every N",
        "D_M ~ D_G ~ well-trained D_theta at sigma = 60 for every N (Fig. 17a); comparable for sigma in [20, 80] (Fig. 2)",
        f"RMSE(D_M, D_G) at sigma = {R.high_sigma:.3g}: " + ", ".join(f"N = {n}: {v:.4f}" for n, v in R.per_n(R.high_MG).items())
        + f" (needs < {PAPER_CLOSE})", compare(_max(R.high_MG), "<", PAPER_CLOSE), figures=(2, 17))

    # ---------------------------------------------------------------- D_L against D_G (Figs. 2, 5a)
    add("ch3.dl_dg_close_every_sigma", "paper",
        "For the generalizing network RMSE(D_L, D_G) < 0.05 at every fitted sigma",
        "< 0.05 at every sigma (Fig. 2)",
        f"N = {big}: largest {_max(R.L_G):.3f}, at sigma = "
        + (f"{R.fit_sigmas[max(range(len(R.L_G)), key=lambda i: R.L_G[i])]:.3g}" if R.L_G else "-")
        + f" ({len(R.L_G)} fitted levels, sigma = {_fmt(R.fit_sigmas, '{:.3g}')})",
        compare(_max(R.L_G), "<", PAPER_CLOSE), figures=(2,))
    trained = [v for v, tr in zip(R.L_G, R.fit_trained) if tr]
    untrained = [s for s, tr in zip(R.fit_sigmas, R.fit_trained) if not tr]
    add("ch3.dl_dg_close_trained", "paper",
        "... and at every trained fitted sigma (the networks saw at least as many training draws above it as the "
        "paper's saw above 42.4, where it reports under-training)",
        "< 0.05 at every sigma (Fig. 2)",
        f"N = {big}: largest {_max(trained):.3f} over {len(trained)} trained levels; untrained: "
        + (_fmt(untrained, "{:.3g}") or "none"), compare(_max(trained), "<", PAPER_CLOSE), figures=(2,))
    lg = R.per_n(R.lg_inter)
    ratio = _max(lg[big] / lg[n] for n in R.memorizing if n != big) if big in lg else NAN
    add("ch3.dl_dg_smaller_than_memorizing", "paper",
        "RMSE(D_L, D_G) of the generalizing network is clearly smaller than of every memorizing one "
        "(at most half; intermediate-regime means)",
        "memorization ~0.10-0.17 vs generalization ~0.02-0.06 (Fig. 5a)",
        "RMSE(D_L, D_G): " + ", ".join(f"N = {n}: {v:.3f}" for n, v in lg.items())
        + f"; generalizing / memorizing <= {ratio:.2f} (needs <= {CLEARLY})", compare(ratio, "<=", CLEARLY),
        figures=(5,))

    # ---------------------------------------------------------------- weights (Fig. 4)
    n_w = len(R.w_closed)
    n_under = sum(e < PAPER_WEIGHT_NMSE for e in R.w_closed)
    add("ch3.weight_nmse_most_sigma", "paper",
        f"Weight NMSE ||W_L - W_G||_F / ||W_G||_F (not squared) < {PAPER_WEIGHT_NMSE} for most sigma (more than half of "
        "the sampler grid)", "< 0.2 for most sigma after 100 epochs (Fig. 4 left)",
        f"closed form at sigma = {_fmt(R.w_sigmas, '{:.3g}')}: {_fmt(R.w_closed, '{:.2f}')}; below "
        f"{PAPER_WEIGHT_NMSE} at {n_under} of {n_w}", compare(n_under, ">", MOST * n_w), figures=(4,))
    others = _max(R.w_closed[1:])
    add("ch3.weight_nmse_worst_at_80", "paper", "... and worst at the top of the grid, sigma = 80",
        "sigma = 80 converges worst (under-trained teacher; Fig. 4 left, Fig. 22)",
        (f"at sigma = {R.w_sigmas[0]:.3g}: {R.w_closed[0]:.2f}; largest elsewhere {others:.2f}" if R.w_closed
         else "no weights"), compare(R.w_closed[0] if R.w_closed else NAN, ">=", others), figures=(4,))
    not_low = [i for i, r in enumerate(R.w_regimes) if r != "low"]
    t = (all_of(*(compare(R.w_closed[i], "<=", R.w_adam[i]) for i in not_low)) if not_low
         else compare(NAN, "<", 0))
    add("ch3.closed_form_beats_adam", "check",
        "The closed-form fit reaches at least the Adam recipe's final weight error (intermediate and high sigma)",
        "the closed form is the exact minimiser of the loss Adam descends; the paper runs Adam for 100 epochs "
        "at per-sigma learning rates (Fig. 4 left)",
        f"closed form {_fmt([R.w_closed[i] for i in not_low])}; Adam {_fmt([R.w_adam[i] for i in not_low])}", t)
    k = R.align_k
    t = (all_of(*(compare(R.align_diag[i], ">=", ALIGN_MIN) for i in not_low)) if not_low else compare(NAN, ">=", 0))
    add("ch3.singular_vectors_correlate", "paper",
        f"The top-{k} singular vectors of W_L and W_G correlate one by one at every sigma of the intermediate and "
        f"high regimes (mean |cos| of the i-th pair)",
        "good alignment of the top-100 singular vectors for sigma in [0.116, 80] (Fig. 4 right)",
        f"N = {big}, d = {R.d}: {_fmt([R.align_diag[i] for i in not_low])} at sigma = "
        f"{_fmt([R.w_sigmas[i] for i in not_low], '{:.3g}')} (needs >= {ALIGN_MIN}; random vectors "
        f"~{math.sqrt(2 / (math.pi * R.d)):.2f})", t, figures=(4,))
    t = (all_of(*(compare(R.align_subspace[i], ">=", ALIGN_MIN) for i in not_low)) if not_low
         else compare(NAN, ">=", 0))
    add("ch3.singular_subspaces_align", "paper",
        f"... and their top-{k} singular subspaces overlap at every sigma of those regimes",
        "good alignment of the top-100 singular vectors for sigma in [0.116, 80] (Fig. 4 right)",
        f"subspace overlap {_fmt([R.align_subspace[i] for i in not_low])} (needs >= {ALIGN_MIN}; random subspaces "
        f"{k / R.d:.2f})", t, figures=(4,))

    # ---------------------------------------------------------------- symmetry (Fig. 14a)
    asym = R.per_n(R.asym_inter)
    add("ch3.symmetric_large_n", "paper",
        f"The generalizing network's distilled W_L is nearly symmetric (below {SYMMETRY_MAX}, intermediate regime)",
        "W becomes progressively symmetric during distillation (Fig. 14a); W_G is symmetric. Our Adam runs stop "
        "far from convergence, so the end point of the distillation, the closed form, is tested",
        f"N = {big}: {asym.get(big, NAN):.3f}; restricted to the top {k} principal components {R.asym_top:.3f} "
        f"(a matrix of independent entries: 1.41)", compare(asym.get(big, NAN), "<", SYMMETRY_MAX), figures=(14,))
    rho, t = _trend(Ns, R.asym_inter, rising=False)
    add("ch3.symmetry_rises_with_n", "control",
        "The distilled W_L grows more symmetric with N, from the memorizing networks' to the generalizing ones' "
        "(whole ladder, intermediate regime)",
        "not in the paper (its Fig. 14a follows one network's distillation); W_G is symmetric",
        "||W_L - W_L^T||_F / ||W_L||_F: " + ", ".join(f"N = {n}: {v:.3f}" for n, v in asym.items())
        + f"; rank correlation with N {rho:+.2f} (needs <= -{tmin})", t)
    rho, t = _trend(R.sym_steps, R.asym_steps, rising=False)
    add("ch3.symmetry_rises_over_training", "control",
        f"The largest network's distilled W_L grows more symmetric over its training (its snapshots, sigma = "
        f"{R.sym_sigma:.3g})",
        "not in the paper (its Fig. 14a follows the distillation, not the network's training)",
        "asymmetry " + ", ".join(f"step {s}: {v:.3f}" for s, v in zip(R.sym_steps, R.asym_steps))
        + f"; rank correlation with the step {rho:+.2f} (needs <= -{tmin})", t)

    # ---------------------------------------------------------------- samples (Figs. 2 right, 3)
    add("ch3.samples_dl_dg_closest", "paper",
        "Final samples of D_L and D_G from the same noise are closer to each other than to D_M's",
        "Linear ~ Gaussian; Multi-Delta returns training images (Figs. 2-3, visual)",
        f"mean paired pixel RMSE over {R.n_noises} noises: D_L-D_G {R.d_LG:.3f}; D_L-D_M {R.d_LM:.3f}; "
        f"D_G-D_M {R.d_GM:.3f}", compare(R.d_LG, "<", min(R.d_LM, R.d_GM)), figures=(2, 3))
    add("ch3.net_samples_nearer_dg", "paper",
        "The generalizing network's samples are closer to D_G's samples from the same noise than to D_M's",
        "EDM samples share the Gaussian samples' structure; Multi-Delta gives training images (Figs. 2-3, visual)",
        f"N = {big}, mean paired pixel RMSE over {R.n_noises} noises: to D_G {R.d_thG:.3f}, to D_M {R.d_thM:.3f}",
        compare(R.d_thG, "<", R.d_thM), figures=(2, 3))

    # ---------------------------------------------------------------- the book's controls
    add("ch3.training_input_control", "control",
        "Distilled on its own training images, the memorizing network lands on D_G (tower property); on held-out "
        "images it does not (at most half; intermediate regime)",
        "not in the paper (its code distils on held-out images); chapter 1's tower property predicts it",
        f"N = {small}, RMSE(D_L, D_G): training inputs {R.ctrl_train:.3f}, held-out inputs {R.ctrl_held:.3f}",
        compare(R.ctrl_train, "<=", CLEARLY * R.ctrl_held))
    off = dict(zip(R.off_N, R.off_inter))
    mem = [n for n in R.memorizing if n != big]
    t = (all_of(*(compare(off.get(big, NAN), "<", off.get(n, NAN)) for n in mem)) if mem
         else compare(NAN, "<", 0))
    add("ch3.off_distribution_transfer", "control",
        f"Distilled on inputs from another distribution ({S.off_dataset}), the generalizing network's D_L stays "
        "closer to D_G than every memorizing network's (intermediate regime)",
        "not in the paper as a test; the paper distils its FFHQ networks on CelebA-HQ",
        f"RMSE(D_L, D_G) on {S.off_dataset} inputs: " + ", ".join(f"N = {n}: {v:.3f}" for n, v in off.items()), t)
    got = tuple(c.id for c in out)
    if got != CLAIM_IDS:
        raise AssertionError(f"claims() returned {got}, CLAIM_IDS lists {CLAIM_IDS}")
    return out
