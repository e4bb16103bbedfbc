"""Chapter 6: the Gaussian structure is not a property of one network.

Four experiments on the training set of the ladder's largest N (chapter 2's generalizing model):

* **per-sigma denoising auto-encoders** (paper App. G.2, Figs. 24, 27): plain DSM loss (paper eq. 3),
  no preconditioning (``precond="dae"``: the network predicts x), one network per noise level --
  a small convolutional DAE (``utils.nets.ConvDAE``) at every level of the sampler's grid, so that
  it can also sample; the book's U-Net at a few levels spanning the three regimes; and DAE-Linear,
  the affine map that minimizes the DSM loss on as many noisy pairs as each conv DAE saw
  (``utils.distill.train_affine_dsm(optimizer="lstsq")``; Theorem 1 says it is D_G);
* **preconditioning** (App. A, Fig. 11): the same U-Net as the ladder, trained with EDM's Baseline-VE
  parameterization and loss (``precond="ve"``), against the EDM-preconditioned network
  (``utils.metrics.linearity_curves``);
* **samples across architectures** (Figs. 22-24b): every model from the same initial noises, the
  median image distance between them, to the Gaussian samples and to the nearest training image;
* **Jacobians** (App. H, Figs. 15, 28-30): ``utils.metrics.jacobian`` along sampling trajectories
  (``utils.edm.sample(..., return_trajectory="states")``): the alignment of the leading singular
  vectors with the principal components, the distance to W_G, the effective rank
  (``utils.metrics.effective_rank``), and a perturbation along the leading singular vector.

:func:`runs` lists the chapter's training runs; :class:`Settings` its knobs per profile;
:class:`Results` and :func:`claims` its claims. The constants below are the chapter's analysis
choices, fixed before any result of the chapter was looked at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import edm, metrics, train
from ..checks import as_images, positive_int, sigma_list
from ..claims import Claim, all_of, compare, expected
from ..denoisers import AffineDenoiser, GaussianDenoiser, PerSigmaDenoiser
from ..distill import train_affine_dsm
from ..settings import ChapterSettings

# --------------------------------------------------------------------------- analysis choices
# Paper App. G.2 / Fig. 24a: DAE-Linear is within this RMSE of D_G at every one of the ten sigma.
PAPER_DAE_LINEAR_RMSE = 0.04
# "As close to D_G as the EDM network" (the paper: the nonlinear DAEs and EDM have "similar" RMSE to
# D_G): at each sigma where a DAE is trained, RMSE(DAE, D_G) <= max(AS_CLOSE_FACTOR * RMSE(EDM, D_G),
# RMSE(EDM, D_G) + AS_CLOSE_FLOOR). The factor allows the two curves of the paper's log-scale figure
# to sit side by side; the floor is a difference no one can see in an image (1 % of the [-1, 1]
# range), which matters where both RMSEs are tiny (low sigma, where the EDM network is the identity
# by its preconditioning and a DAE must learn it).
AS_CLOSE_FACTOR = 1.5
AS_CLOSE_FLOOR = 0.01
# Paper Fig. 11: Baseline-VE's linearity score at sigma = 80 is ~0.65, EDM-VE's ~0.98 (a gap of
# ~0.33). "Clearly less linear": EDM's score minus Baseline-VE's at the grid's largest sigma is at
# least CLEAR_GAP (a third of the paper's gap); EDM's own score stays above EDM_LS_MIN there (the
# paper's 0.96 for generalizing models, §3.1).
CLEAR_GAP = 0.1
EDM_LS_MIN = 0.96
# App. H: the high-noise range in which the Jacobian's leading singular vectors align with the
# principal components is sigma in [10, 80].
HIGH_SIGMA = 10.0
# "Align": the top-k left singular subspace of the Jacobian and that of W_G (the top-k principal
# components) overlap by at least ALIGN_MIN (utils.metrics.singular_alignment's subspace overlap,
# the threshold of chapter 3's Fig. 4 claim; two random k-dimensional subspaces of R^d overlap k/d).
ALIGN_MIN = 0.8
# "Close to W_G": ||J - W_G||_F / ||W_G||_F below the paper's 0.2 for distilled weights (Fig. 4 left).
JACOBIAN_WG_MAX = 0.2
# Effective rank: singular values carrying 99 % of the energy sum s_i^2.
RANK_ENERGY = 0.99
# Paper Fig. 15 / App. D: D(x; sigma) ~ x at low noise. "~": the mean ||D(x) - x|| / ||x|| on held-out
# noisy inputs at sigma_min is below IDENTITY_MAX (1 % of the image's norm: a change no one can see).
IDENTITY_MAX = 0.01

# Labels of the chapter's models (figures, results, claims).
EDM = "EDM U-Net"
VE = "Baseline-VE U-Net"
CONV = "conv DAE"
UNET_DAE = "U-Net DAE"
LINEAR = "DAE-Linear"
GAUSS = "Gaussian"
# The models whose samples the paper says match the Gaussian's (Figs. 23, 24b): the EDM-preconditioned
# network and the per-sigma DAE that can sample (the U-Net DAE is trained at a few levels only).
AGREEING = (EDM, CONV)

_NET_KEYS = ("arch", "model_channels", "channel_mult", "num_blocks", "steps", "batch_size", "lr",
             "lr_rampup_steps", "ema_halflife_steps")


# --------------------------------------------------------------------------- settings

# The reason the cpu profile records for the high-noise Jacobian claims (written before the final run).
_HIGH_SIGMA_JACOBIAN = ("at sigma >= 10 the linear part of the ideal denoiser, W_G ~ Sigma / sigma^2, is of order 1e-4 "
                        "on 8x8 digits: the DSM loss sees an error d in a network's Jacobian only as an output error "
                        "of about d * sigma, about 1e5 noisy pairs per level do not resolve it, and EDM's "
                        "parameterization adds c_skip I ~ 4e-5 I that the network does not cancel")


def _conv(**kw):
    d = dict(arch="convdae", model_channels=16, channel_mult=[1, 2], num_blocks=1, steps=1200, batch_size=64,
             lr=2e-3, lr_rampup_steps=100, ema_halflife_steps=50.0)
    d.update(kw)
    return d


def _unet(**kw):
    d = dict(arch="unet", model_channels=16, channel_mult=[1, 2, 2], num_blocks=1, steps=600, batch_size=64,
             lr=2e-3, lr_rampup_steps=100, ema_halflife_steps=50.0)
    d.update(kw)
    return d


def grid_levels(n: int = 10) -> list[float]:
    """The noise levels of the paper's ``n``-step EDM grid (descending), the levels DAEs are trained at."""
    return edm.sigma_steps(n).tolist()


def on_grid(sigmas, grid, name: str = "sigmas") -> list[float]:
    """Each of ``sigmas`` replaced by the level of ``grid`` it names (within 0.1 %, e.g. 1.5017 for
    1.501742); a value that is no level of the grid is an error naming it."""
    g = sigma_list(grid, "grid")
    out = []
    for s in sigma_list(sigmas, name):
        best = min(g, key=lambda v: abs(math.log(v / s)))
        if abs(math.log(best / s)) > 1e-3:
            raise ValueError(f"{name}: {s:g} is not a level of the grid {[round(v, 4) for v in g]}")
        out.append(best)
    return out


def grid_index(grid, sigma: float) -> int:
    """The index of the level of ``grid`` nearest to ``sigma`` in log scale."""
    g = sigma_list(grid, "grid")
    s = sigma_list([sigma], "sigma")[0]
    return min(range(len(g)), key=lambda i: abs(math.log(g[i] / s)))


def every(n: int, k: int) -> list[int]:
    """Indices 0, k, 2k, ... of a grid of ``n`` levels, always with the last one."""
    positive_int(n, "n")
    positive_int(k, "k")
    idx = list(range(0, n, k))
    return idx if idx[-1] == n - 1 else idx + [n - 1]


def unit_images(vectors: torch.Tensor, shape) -> torch.Tensor:
    """Vectors (k, d) as images (k, *shape) for display, each divided by its largest absolute entry
    (so 0 shows mid-grey and the extremes -1 / +1), float32 on the CPU."""
    V = torch.as_tensor(vectors).detach().to(torch.float64).cpu()
    if V.ndim != 2:
        raise ValueError(f"vectors must be (k, d), got shape {tuple(V.shape)}")
    V = V / V.abs().amax(1, keepdim=True).clamp_min(1e-300)
    return V.reshape(len(V), *shape).to(torch.float32)


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 6's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences.
    Thresholds are the constants above. ``conv_dae``, ``unet_dae`` and ``ve`` are training-spec
    overrides (``utils.train.DEFAULTS`` keys) on top of ``P.train_spec(max(P.train_sizes))``."""

    CHAPTER = "ch6"
    # the convolutional DAE, one per level of the sampler's grid (1,200 steps of 64: converged at every
    # level of the 8x8 digits to within the chapter's resolution, measured before the claims were run)
    conv_dae: dict = field(default_factory=_conv)
    # the book's U-Net as a DAE, at a few levels spanning the three regimes (high, intermediate, low)
    unet_dae: dict = field(default_factory=_unet)
    unet_dae_sigmas: list[float] = field(default_factory=lambda: [21.1087, 1.5017, 0.1166])
    # the Baseline-VE run: the ladder's spec with precond="ve" and these overrides (none: the same
    # network, steps, batch and learning rate as the EDM network it is compared with)
    ve: dict = field(default_factory=dict)
    n_pairs: int = 100            # pairs of held-out images of the linearity score
    lin_steps: int = 40           # EDM grid of the linearity curves
    n_rmse: int = 297             # held-out images of the RMSE / identity curves
    n_jac: int = 8                # trajectories along which Jacobians are taken
    jac_chunk: int | None = None  # vector-Jacobian products run at once (memory; None: all d)
    jac_every: int = 1            # Jacobians at every jac_every-th level of the sampler's grid (and the last)
    jac_k: int = 8                # leading singular vectors compared with the principal components
    n_vec: int = 3                # singular vectors shown as images
    n_align_fig: int = 16         # size of the alignment matrices shown
    perturb_sigmas: list[float] = field(default_factory=lambda: [21.1087, 1.5017, 0.002])
    perturb_scale: float = 2.0    # x_t +- perturb_scale * sigma_t * u_1(x_t)
    n_show: int = 8
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        # (jac_every=9: Jacobians at the first and last level only -- at the colab shapes, which `make test`
        # runs at this budget, each is 1,024 vector-Jacobian products of the network)
        "smoke": dict(conv_dae=_conv(model_channels=4, steps=10, batch_size=8, lr_rampup_steps=2,
                                     ema_halflife_steps=2.0),
                      unet_dae=_unet(model_channels=4, channel_mult=[1, 2], steps=10, batch_size=8,
                                     lr_rampup_steps=2, ema_halflife_steps=2.0),
                      unet_dae_sigmas=[21.1087, 0.1166], n_pairs=4, lin_steps=10, n_rmse=16, n_jac=1,
                      jac_every=9, jac_k=4, n_vec=2, n_align_fig=8, n_show=4),
        # Claims the cpu build measured not to hold, with the reason (the chapter's §6.5 shows the measurements);
        # each is still evaluated, and reported as passing if it holds.
        "cpu": dict(expected_to_fail=dict(
            jacobian_aligns_with_pcs=_HIGH_SIGMA_JACOBIAN + "; on 8x8 digits the overlap peaks near the low end of "
                                     "the high-noise range and falls above it",
            dae_jacobian_aligns_with_pcs=_HIGH_SIGMA_JACOBIAN + " (for a DAE without preconditioning the input itself "
                                         "has standard deviation sigma)",
            jacobian_close_to_wiener=_HIGH_SIGMA_JACOBIAN + "; even DAE-Linear, the exact least-squares map on the "
                                     "conv DAEs' number of noisy pairs, is further than 0.2 from W_G there",
            effective_rank_grows="at sigma >= 10 the networks' Jacobians carry an almost isotropic error part (EDM's "
                                 "uncancelled c_skip I and the estimation noise of a linear part of order 1e-4) that "
                                 "counts towards 99 % of the energy, so the effective rank rises again at the highest "
                                 "sigma; it grows as sigma falls from the intermediate regime down, as W_G's does")),
        # MNIST 32x32 (d = 1,024): wider networks, longer runs (estimated on a T4: ~10 ms per conv-DAE
        # step, ~40 ms per U-Net step at batch 128)
        "colab": dict(conv_dae=_conv(model_channels=32, channel_mult=[1, 2, 2], steps=4000, batch_size=128, lr=1e-3,
                                     lr_rampup_steps=200, ema_halflife_steps=100.0),
                      unet_dae=_unet(model_channels=32, steps=3000, batch_size=128, lr=1e-3, lr_rampup_steps=200,
                                     ema_halflife_steps=100.0),
                      n_rmse=500, n_jac=4, jac_chunk=128, jac_k=32, n_align_fig=32),
        # CIFAR-10 (d = 3,072): the profile's U-Net as the U-Net DAE
        "gpu": dict(conv_dae=_conv(model_channels=64, channel_mult=[1, 2, 2], steps=20000, batch_size=256, lr=1e-3,
                                   lr_rampup_steps=1000, ema_halflife_steps=500.0),
                    unet_dae=_unet(model_channels=128, channel_mult=[2, 2, 2], num_blocks=2, steps=20000,
                                   batch_size=256, lr=1e-3, lr_rampup_steps=1000, ema_halflife_steps=500.0),
                    n_rmse=1000, n_jac=2, jac_chunk=32, jac_k=100, n_align_fig=50, n_show=6),
    }

    def validate(self) -> None:
        for name in ("conv_dae", "unet_dae"):
            spec = getattr(self, name)
            missing = sorted(set(_NET_KEYS) - set(spec))
            unknown = sorted(set(spec) - set(_NET_KEYS))
            if missing or unknown:
                raise ValueError(f"{name} must give exactly the keys {list(_NET_KEYS)}; missing {missing}, "
                                 f"unknown {unknown}")
        unknown = sorted(set(self.ve) - set(train.DEFAULTS))
        if unknown or {"precond", "n", "dataset"} & set(self.ve):
            raise ValueError(f"ve: training-spec overrides other than precond, n and dataset; got {sorted(self.ve)}")
        on_grid(self.unet_dae_sigmas, grid_levels(), "unet_dae_sigmas")
        on_grid(self.perturb_sigmas, grid_levels(), "perturb_sigmas")
        if min(self.n_jac, self.jac_k, self.n_vec, self.jac_every) < 1:
            raise ValueError("n_jac, jac_k, n_vec and jac_every must be >= 1")
        if not self.perturb_scale > 0:
            raise ValueError(f"perturb_scale must be > 0, got {self.perturb_scale}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


# --------------------------------------------------------------------------- training runs

def n_big(P) -> int:
    """The training-set size of every new run of the chapter: the ladder's largest N (it generalizes)."""
    return max(P.train_sizes)


def dae_spec(P, net: dict, sigma: float, seed: int = 0) -> dict:
    """The training spec of one per-sigma DAE: network ``net`` (a ``conv_dae`` / ``unet_dae`` settings
    dict), no preconditioning, the plain DSM loss at the fixed noise level ``sigma`` (paper eq. 3)."""
    return P.train_spec(n_big(P), seed=seed, precond="dae", dae_sigma=float(sigma), sigma_uniform_share=0.0,
                        snapshot_steps=[], **net)


def ve_spec(P, S: Settings, seed: int = 0) -> dict:
    """The Baseline-VE run: the ladder's largest-N spec with EDM's VEPrecond and VELoss (its own
    log-uniform p(sigma) on [0.02, 100]; the EDM runs' log-uniform share does not apply)."""
    return P.train_spec(n_big(P), seed=seed, **{"snapshot_steps": [], **S.ve, "precond": "ve",
                                                 "sigma_uniform_share": 0.0})


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: the model ladder of chapter 2 (shared, not retrained: the
    Jacobians use every N), the Baseline-VE run, a conv DAE at every level of the sampler's grid and
    a U-Net DAE at each of ``unet_dae_sigmas``."""
    S = settings(P)
    grid = grid_levels(P.sampler_steps)
    return ([P.train_spec(n, seed=seed) for n in P.train_sizes] + [ve_spec(P, S, seed)]
            + [dae_spec(P, S.conv_dae, s, seed) for s in grid]
            + [dae_spec(P, S.unet_dae, s, seed) for s in on_grid(S.unet_dae_sigmas, grid_levels())])


def dae_family(P, net: dict, sigmas, seed: int = 0, device=None, name: str = "DAE") -> PerSigmaDenoiser:
    """The trained per-sigma DAEs of ``net`` at ``sigmas``, as one denoiser that calls the member of
    the noise level it is given (``utils.denoisers.PerSigmaDenoiser``: it can drive the sampler on
    the grid it was trained on)."""
    s = sigma_list(sigmas)
    family = PerSigmaDenoiser(s, [train.get_model(dae_spec(P, net, v, seed), device=device) for v in s])
    family.name = name
    return family


def dae_linear(x_train: torch.Tensor, sigmas, pairs_per_sigma: tuple, seed: int = 0) -> PerSigmaDenoiser:
    """DAE-Linear at each of ``sigmas``: the affine map minimizing the DSM loss over ``steps * batch``
    noisy training pairs (``pairs_per_sigma = (steps, batch)``, the pairs one conv DAE saw), solved
    exactly (``utils.distill.train_affine_dsm(optimizer="lstsq")``)."""
    as_images(x_train, "x_train")
    steps, batch = (positive_int(v, "pairs_per_sigma") for v in pairs_per_sigma)
    members = []
    for i, s in enumerate(sigma_list(sigmas)):
        run = train_affine_dsm(x_train, s, steps, optimizer="lstsq", batch_size=batch, seed=seed + i, n_record=2)
        members.append(AffineDenoiser(run.W, run.b, x_train.shape[1:]))
    family = PerSigmaDenoiser(sigmas, members)
    family.name = LINEAR
    return family


# --------------------------------------------------------------------------- samples

def sample_distances(finals: dict, x_train: torch.Tensor, reference: str = GAUSS) -> dict:
    """For final samples ``{label: (n, C, H, W)}`` from the same noises: per label, the median over
    noises of ``utils.metrics.image_rmse`` to the ``reference`` model's sample (``to_ref``) and to the
    sample's nearest training image (``to_nn``, ``utils.metrics.sample_stats``); and for every pair of
    labels the median paired distance (``pairs``)."""
    if reference not in finals:
        raise KeyError(f"reference {reference!r} is not among the samples {list(finals)}")
    labels = list(finals)
    med = lambda v: float(torch.as_tensor(v).median())        # noqa: E731
    to_ref = {k: med(metrics.image_rmse(finals[k], finals[reference])) for k in labels if k != reference}
    to_nn = {k: med(metrics.sample_stats(finals[k], x_train).nn_rmse) for k in labels}
    pairs = {(a, b): med(metrics.image_rmse(finals[a], finals[b])) for i, a in enumerate(labels) for b in labels[i + 1:]}
    return dict(to_ref=to_ref, to_nn=to_nn, pairs=pairs)


# --------------------------------------------------------------------------- Jacobians

@dataclass
class JacobianProfile:
    """The Jacobians of one denoiser along sampling trajectories (see :func:`jacobian_profile`)."""

    sigmas: list                 # noise level of each step
    align: list                  # mean over inputs of the top-k subspace overlap with W_G's (the PCs)
    wg_distance: list            # median over inputs of ||J - W_G||_F / ||W_G||_F
    rank: list                   # mean over inputs of the effective rank
    rank_wg: list                # the effective rank of W_G itself (the Gaussian reference)
    vectors: list = field(default_factory=list)    # per step: (n_inputs, n_vec, d) leading left singular vectors
    matrices: list = field(default_factory=list)   # per step: (m, m) |U_J^T U_PC| of the first input


def jacobian_profile(denoiser, states, sigmas, D_G: GaussianDenoiser, k: int, n_vec: int = 3,
                     n_matrix: int = 16, chunk_size: int | None = None) -> JacobianProfile:
    """Jacobians ``utils.metrics.jacobian(denoiser, x_i, sigma_i)`` at the states ``states[i]`` (a batch
    of inputs at noise level ``sigmas[i]``, e.g. ``edm.sample(..., return_trajectory="states")``),
    compared with the Wiener matrix W_G(sigma_i) of ``D_G``: top-``k`` subspace alignment
    (``metrics.singular_alignment``), relative Frobenius distance (``metrics.weight_nmse``) and
    effective rank (``metrics.effective_rank``, :data:`RANK_ENERGY`); plus the leading ``n_vec`` left
    singular vectors of every input and the ``n_matrix`` x ``n_matrix`` alignment matrix with the
    principal components of the first input (paper Figs. 28, 29). ``chunk_size``: see
    ``utils.metrics.jacobian`` (memory)."""
    sig = sigma_list(sigmas)
    if len(states) != len(sig):
        raise ValueError(f"need one batch of states per sigma: {len(states)} batches, {len(sig)} sigmas")
    positive_int(k, "k")
    out = JacobianProfile(sigmas=sig, align=[], wg_distance=[], rank=[], rank_wg=[])
    for x, s in zip(states, sig):
        # float64 inputs: a closed form's Jacobian is then exact; a network computes in its own dtype
        J = metrics.jacobian(denoiser, x.to(torch.float64), s, chunk_size)       # (B, d, d) float64
        W = D_G.weight(s)
        out.align.append(float(np.mean([metrics.singular_alignment(j, W, k)["subspace"] for j in J])))
        out.wg_distance.append(float(np.median([metrics.weight_nmse(j, W) for j in J])))
        out.rank.append(metrics.effective_rank(J, RANK_ENERGY))
        out.rank_wg.append(metrics.effective_rank(W, RANK_ENERGY))
        U = torch.linalg.svd(J)[0]                             # (B, d, d), columns: left singular vectors
        out.vectors.append(U[:, :, :n_vec].transpose(1, 2).cpu())
        m = min(n_matrix, J.shape[-1])
        out.matrices.append((U[0, :, :m].T @ D_G.eigvecs[:, :m].to(U)).abs().cpu())
    return out


def perturbed_samples(denoiser, state: torch.Tensor, sigmas, step: int, direction: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """Final samples from the state ``state`` (one image (C, H, W)) at step ``step`` of the grid
    ``sigmas``, moved by -scale, 0 and +scale times sigma_step along the unit vector ``direction``
    (d,) and integrated from there to sigma = 0 (paper Fig. 30). Returns (3, C, H, W)."""
    sig = sigma_list(sigmas)
    if not 0 <= step < len(sig):
        raise ValueError(f"step must index the grid of {len(sig)} levels, got {step}")
    if state.ndim != 3 or direction.numel() != state.numel():
        raise ValueError(f"state must be one image (C, H, W) and direction a vector of its size, got "
                         f"{tuple(state.shape)} and {tuple(direction.shape)}")
    u = (direction.to(torch.float64) / direction.to(torch.float64).norm()).reshape(state.shape)
    x = torch.stack([state.to(torch.float64) + c * scale * sig[step] * u for c in (-1.0, 0.0, 1.0)])
    return edm.sample(denoiser, x.to(state.dtype), sig[step:]).cpu()


# --------------------------------------------------------------------------- results and claims

@dataclass
class Results:
    """The chapter's computed numbers that its claims need (plain floats, lists and dicts)."""

    grid: list                    # the sampler's noise levels, descending
    rmse_edm: list                # RMSE(EDM network, D_G) at each grid level (paper eq. 10)
    rmse_dae: dict                # nonlinear DAE label -> {trained sigma: RMSE(DAE, D_G)}
    rmse_linear: dict             # {sigma: RMSE(DAE-Linear, D_G)}
    sigma_max: float              # largest sigma of the linearity grid
    ls_edm: float                 # linearity score (paper eq. 11) at sigma_max: EDM network ...
    ls_ve: float                  # ... and the Baseline-VE network
    d_gauss: dict                 # label -> median image RMSE of its samples to the Gaussian samples
    d_nn: dict                    # label -> median image RMSE of its samples to their nearest training image
    d_pair: float                 # median image RMSE between the samples of the two AGREEING models
    jac_sigmas: list              # noise levels of the Jacobian profiles
    align_edm: list               # top-k alignment with the PCs, EDM network (generalizing N)
    align_dae: list               # ... conv DAE
    wg_edm: list                  # ||J - W_G||_F / ||W_G||_F, EDM network
    rank_edm: list                # effective rank of the EDM network's Jacobian
    identity: dict                # network -> mean ||D(x) - x|| / ||x|| at sigma_min (held-out inputs)
    sigma_min: float              # the grid's smallest sigma
    d: int                        # pixels per image (random k-subspaces overlap k / d)


CLAIM_IDS = (
    "ch6.dae_linear_is_gaussian",
    "ch6.daes_as_close_as_edm",
    "ch6.baseline_ve_less_linear",
    "ch6.edm_linear_at_high_sigma",
    "ch6.samples_agree_across_architectures",
    "ch6.baseline_ve_samples_differ",
    "ch6.jacobian_aligns_with_pcs",
    "ch6.dae_jacobian_aligns_with_pcs",
    "ch6.jacobian_close_to_wiener",
    "ch6.effective_rank_grows",
    "ch6.identity_at_low_sigma",
)


def _high(sigmas, values):
    return [(s, v) for s, v in zip(sigmas, values) if s >= HIGH_SIGMA]


def claims(results: Results, settings: Settings) -> list[Claim]:
    """The chapter's claims, each decided by its measurement in ``results`` (ids: :data:`CLAIM_IDS`)."""
    R, S = results, settings
    exp = lambda cid: expected(S, cid)        # noqa: E731
    out = []

    # --- DAEs (paper App. G.2, Fig. 24a)
    worst_lin = max(R.rmse_linear.items(), key=lambda kv: kv[1])
    t = compare(worst_lin[1], "<", PAPER_DAE_LINEAR_RMSE)
    out.append(Claim(
        id="ch6.dae_linear_is_gaussian", kind="paper", figures=(24,),
        claim="DAE-Linear, an affine denoiser trained on the DSM loss alone, is D_G: RMSE to D_G below 0.04 at "
              "every noise level it is trained at",
        paper="< 0.04 at all ten sigma",
        ours=f"max {worst_lin[1]:.4f} (at sigma = {worst_lin[0]:.3g}) over {len(R.rmse_linear)} levels",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.dae_linear_is_gaussian")))

    tests, worst, worst_key = [], None, None
    for label, per_sigma in R.rmse_dae.items():
        for s, v in per_sigma.items():
            e = R.rmse_edm[grid_index(R.grid, s)]
            allowed = max(AS_CLOSE_FACTOR * e, e + AS_CLOSE_FLOOR)
            tt = compare(v, "<=", allowed)
            tests.append(tt)
            if worst is None or tt.margin < worst.margin:
                worst, worst_key = tt, (label, s, v, e, allowed)
    t = all_of(*tests) if tests else compare(float("nan"), "<=", 0.0)
    label, s, v, e, allowed = worst_key if worst_key else ("-", float("nan"), float("nan"), float("nan"), float("nan"))
    out.append(Claim(
        id="ch6.daes_as_close_as_edm", kind="paper", figures=(24,),
        claim=f"the nonlinear DAEs are as close to D_G as the EDM network at every level they are trained at "
              f"(RMSE at most {AS_CLOSE_FACTOR:g} x the EDM network's, or {AS_CLOSE_FLOOR:g} above it)",
        paper="similar RMSE to D_G as EDM, except at sigma in {42.4, 80} where EDM is under-trained",
        ours=f"{len(tests)} (DAE, sigma) pairs; closest call {label} at sigma = {s:.3g}: {v:.4f} vs EDM {e:.4f} "
             f"(allowed {allowed:.4f})",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.daes_as_close_as_edm")))

    # --- preconditioning (App. A, Fig. 11)
    gap = R.ls_edm - R.ls_ve
    t = compare(gap, ">=", CLEAR_GAP)
    out.append(Claim(
        id="ch6.baseline_ve_less_linear", kind="paper", figures=(11,),
        claim=f"with Baseline-VE preconditioning the same network is clearly less linear at the largest sigma "
              f"(EDM's linearity score minus Baseline-VE's >= {CLEAR_GAP:g})",
        paper="~0.98 (EDM-VE) vs ~0.65 (Baseline-VE) at sigma = 80: gap ~0.33",
        ours=f"{R.ls_edm:.3f} vs {R.ls_ve:.3f} at sigma = {R.sigma_max:.3g}: gap {gap:.3f}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.baseline_ve_less_linear")))
    # decided on the shortfall from perfect linearity, 1 - score <= 1 - EDM_LS_MIN (the same statement, with a
    # margin measured on the scale of the shortfall rather than of the score)
    t = compare(1.0 - R.ls_edm, "<=", 1.0 - EDM_LS_MIN)
    out.append(Claim(
        id="ch6.edm_linear_at_high_sigma", kind="paper", figures=(11,),
        claim=f"the EDM-preconditioned network stays linear at the largest sigma (score >= {EDM_LS_MIN:g})",
        paper="~0.98-0.99 at sigma = 80", ours=f"{R.ls_edm:.4f} at sigma = {R.sigma_max:.3g}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.edm_linear_at_high_sigma")))

    # --- samples (Figs. 23, 24b, 11 right)
    tests = [compare(R.d_gauss[k], "<", R.d_nn[k]) for k in AGREEING]
    tests.append(compare(R.d_pair, "<", min(R.d_nn[k] for k in AGREEING)))
    t = all_of(*tests)
    out.append(Claim(
        id="ch6.samples_agree_across_architectures", kind="paper", figures=(23, 24),
        claim=f"from the same noises, the {EDM} and the {CONV} land nearer the Gaussian samples and each other "
              f"than their samples lie from the nearest training image (medians over noises)",
        paper="samples of different architectures and DAEs match each other and the Gaussian ones",
        ours="; ".join(f"{k}: {R.d_gauss[k]:.3f} to Gaussian vs {R.d_nn[k]:.3f} to NN" for k in AGREEING)
             + f"; between them {R.d_pair:.3f}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.samples_agree_across_architectures")))
    t = compare(R.d_gauss[VE], ">", R.d_gauss[EDM])
    out.append(Claim(
        id="ch6.baseline_ve_samples_differ", kind="paper", figures=(11,),
        claim="the Baseline-VE network's samples lie further from the Gaussian samples than the EDM network's",
        paper="Baseline-VE trajectories differ from EDM-VE's and the Gaussian's",
        ours=f"median {R.d_gauss[VE]:.3f} vs {R.d_gauss[EDM]:.3f}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.baseline_ve_samples_differ")))

    # --- Jacobians (App. H, Figs. 28-29, 15)
    for cid, values, who, fig in (("ch6.jacobian_aligns_with_pcs", R.align_edm, "EDM network", 28),
                                  ("ch6.dae_jacobian_aligns_with_pcs", R.align_dae, "conv DAE", 29)):
        high = _high(R.jac_sigmas, values)
        s_w, v_w = min(high, key=lambda sv: sv[1]) if high else (float("nan"), float("nan"))
        t = compare(v_w, ">=", ALIGN_MIN)
        out.append(Claim(
            id=cid, kind="paper", figures=(fig,),
            claim=f"at sigma >= {HIGH_SIGMA:g} the {who}'s Jacobian has its top-{S.jac_k} singular subspace aligned "
                  f"with the data's top principal components (overlap >= {ALIGN_MIN:g})",
            paper="high noise [10, 80]: leading singular vectors align with the PCs" + (" (better for DAEs)" if fig == 29 else ""),
            ours=f"min {v_w:.3f} (at sigma = {s_w:.3g}) over {len(high)} levels (random subspaces: "
                 f"{S.jac_k / R.d:.2f})",
            passed=t.passed, margin=t.margin, expected_to_fail=exp(cid)))
    high = _high(R.jac_sigmas, R.wg_edm)
    s_w, v_w = max(high, key=lambda sv: sv[1]) if high else (float("nan"), float("nan"))
    t = compare(v_w, "<", JACOBIAN_WG_MAX)
    out.append(Claim(
        id="ch6.jacobian_close_to_wiener", kind="control",
        claim=f"at sigma >= {HIGH_SIGMA:g} the generalizing EDM network's Jacobian is W_G "
              f"(||J - W_G||_F / ||W_G||_F < {JACOBIAN_WG_MAX:g}): the local linearization is the global one",
        paper="(the book's test; the paper's 0.2 is for distilled weights, Fig. 4)",
        ours=f"max {v_w:.3f} (at sigma = {s_w:.3g}) over {len(high)} levels",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.jacobian_close_to_wiener")))
    rho, _ = metrics.trend(R.jac_sigmas, R.rank_edm, rising=False)
    t = compare(-rho, ">=", metrics.TREND_MIN)
    out.append(Claim(
        id="ch6.effective_rank_grows", kind="paper", figures=(28,), where="App. H",
        claim=f"the effective rank of the EDM network's Jacobian grows as sigma falls (rank correlation with sigma "
              f"<= -{metrics.TREND_MIN:g})",
        paper="low-dimensional, PC-aligned at high noise; adaptive bases at intermediate; ~identity at low noise",
        ours=f"rho = {rho:+.2f}; rank {R.rank_edm[0]:.1f} at sigma = {R.jac_sigmas[0]:.3g} -> {R.rank_edm[-1]:.1f} at "
             f"sigma = {R.jac_sigmas[-1]:.3g}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.effective_rank_grows")))
    worst = max(R.identity.items(), key=lambda kv: kv[1])
    t = compare(worst[1], "<", IDENTITY_MAX)
    out.append(Claim(
        id="ch6.identity_at_low_sigma", kind="paper", figures=(15,), where="App. D",
        claim=f"every network of the chapter is the identity at sigma_min (mean ||D(x) - x|| / ||x|| < {IDENTITY_MAX:g})",
        paper="D(x; sigma) - x -> 0 for sigma below ~0.1, across architectures",
        ours=f"largest {worst[1]:.4f} ({worst[0]}) over {len(R.identity)} networks at sigma = {R.sigma_min:g}",
        passed=t.passed, margin=t.margin, expected_to_fail=exp("ch6.identity_at_low_sigma")))
    return out
