"""Chapter 7: beyond the global Gaussian -- locality, and which closed form predicts the network.

The closed-form local denoisers are core (``utils.local_denoisers``: patch Wiener, the LS and ELS
machines of Kamb & Ganguli, the data-derived-locality denoiser after Lukoianov et al.), as are the
Jacobian (``utils.metrics.jacobian``), the per-image r^2 (``utils.metrics.r2``) and the noisy inputs
(``utils.data.NoisyInputs``). This module holds what only this chapter computes:

* :func:`sensitivity_fields` -- the Jacobian rows of a network, of D_G (its weight W_G) and of D_M at
  held-out noisy inputs over a grid of noise levels, summarized by :func:`row_correlation` (how alike
  two maps are) and :func:`effective_radius` (how far a map reaches);
* :func:`machines` -- every closed form of the comparison, the local ones in one instance per
  hyperparameter value (patch size or threshold);
* :func:`calibrate` -- per noise level, the hyperparameter value of each local family that best
  matches the network (least mean squared error) on calibration inputs, and the per-noise-level
  denoiser it makes (``utils.denoisers.PerSigmaDenoiser``);
* :func:`compare` -- median r^2 and mean RMSE of every machine against the network's output per
  noise level, on evaluation inputs disjoint from the calibration ones;
* :func:`sample_r2` -- the median r^2 between each machine's final sample and the network's from the
  same initial noises (Kamb & Ganguli's measure);
* :class:`Settings`, :class:`Results`, :data:`CLAIM_IDS` and :func:`claims`.

The constants below are the chapter's analysis choices, fixed before any result was looked at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import edm, metrics
from ..checks import as_images, positive_int, progress_bar, sigma_list
from ..claims import Claim, all_of, compare as test, expected
from ..data import NoisyInputs
from ..denoisers import EmpiricalDenoiser, GaussianDenoiser, PerSigmaDenoiser, apply
from ..local_denoisers import DataLocalDenoiser, EquivariantLocalScore, LocalScore, PatchWiener, full_window
from ..settings import ChapterSettings

# --------------------------------------------------------------------------- the anchors' numbers
# Kamb & Ganguli (ICML 2025), Table 1: median pixelwise r^2 between the final samples of their ELS machine
# and of a trained network from the same noise, MNIST: U-Net 0.89, ResNet 0.94; Table 2: 0.84 for the
# U-Net with a 20-step sampler.
KG_ELS_UNET_MNIST = 0.89
KG_ELS_RESNET_MNIST = 0.94
KG_ELS_UNET_20STEP = 0.84

# --------------------------------------------------------------------------- analysis choices
# "The network's sensitivity field matches W_G's": the median (over pixels and inputs) Pearson correlation
# between a network's Jacobian row and the same row of W_G, the pixel's own entry left out (every field
# peaks there), averaged over the field grid's levels in the intermediate regime, reaches FIELD_CORR_MIN --
# a correlation of 0.7 means one map explains about half of the other's variance (r^2 ~ 0.5); two
# unrelated maps of the 63 other pixels of an 8 x 8 image correlate by ~ +-0.13.
FIELD_CORR_MIN = 0.7
# The anchor's r^2 is reproduced when ours reaches it up to R2_TOLERANCE: Kamb & Ganguli's own number
# moves by 0.05 with the sampler alone (0.89 -> 0.84, their Tables 1 and 2), and our sampler (10-step
# Euler) is not theirs.
R2_TOLERANCE = 0.05
# The local machines contain the global ones (patch Wiener with a window covering the image is D_G; LS is
# D_M): equal up to float64 round-off of the different summation orders, far below any image difference.
LIMIT_TOL = 1e-6
# The machines, in the order of every table and figure; LOCAL are the families calibrated per sigma.
MACHINES = ("D_G", "D_M", "patch-Wiener", "LS", "ELS", "data-derived")
LOCAL = ("patch-Wiener", "LS", "ELS", "data-derived")


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 7's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences.
    Thresholds are the constants above."""

    CHAPTER = "ch7"
    memorizing_index: int = 0      # which ladder network is the memorizing one (P.train_sizes[i]) ...
    generalizing_index: int = -1   # ... and the generalizing one
    n_calib: int = 64              # held-out images (one noise each) that calibrate the local machines
    n_eval: int = 128              # further held-out images, disjoint from those, for the reported numbers
    n_samples: int = 100           # initial noises of the sample comparison
    n_field: int = 8               # held-out inputs of the sensitivity fields
    n_rows: int = 64               # output pixels whose fields are computed (64: every pixel of an 8 x 8 image)
    field_steps: int = 16          # EDM grid of the sensitivity fields
    # The hyperparameter values each local family is calibrated over, per sigma (3 each: the same freedom).
    # Patch sizes: every odd window an 8 x 8 image leaves room for below the whole image (9 and more reach
    # every pixel from the centre). Thresholds on |W_G[p, q]| / W_G[p, p]: at the intermediate sigma of the
    # 1,500 training digits they give neighbourhoods of ~35 / ~20 / ~12 pixels, the range of the windows
    # (read off the training data alone, before any network was compared).
    patch_sizes: list[int] = field(default_factory=lambda: [3, 5, 7])
    thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    n_show: int = 10               # samples per row of the image grids
    # Precision of the softmax machines' distances (utils.local_denoisers): float64 on the CPU; float32 on a
    # GPU at 32 x 32, where the ELS machine compares every interior patch of every training image with every
    # pixel (float64 runs at a thirty-second of the speed on Colab's T4).
    compute_dtype: str = "float64"
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        # The smoke budget also runs this chapter at the colab shapes (32 x 32) in every `make test`, where the
        # softmax machines cost most: one window size, few inputs.
        "smoke": dict(n_calib=2, n_eval=4, n_samples=4, n_field=1, n_rows=8, field_steps=4, patch_sizes=[3],
                      n_show=4),
        # Written before the first cpu run (the chapter's brief, issue 26): Kamb & Ganguli's number is for MNIST.
        # The two field claims: measured not to hold by the first cpu run (the chapter's section 7.2 shows why).
        "cpu": dict(expected_to_fail=dict(
            els_r2_anchor="8x8 digits, not MNIST at 28x28: windows of 3, 5 and 7 pixels leave an interior of 36, "
                          "16 and 4 of the 64 positions, so the ELS machine is nearly LS and draws from few patches; "
                          "the anchor's setting is the colab profile's",
            field_matches_wiener="on 8x8 digits the network's fields have W_G's shape where both reach a few pixels "
                                 "(sigma of a few units, above the intermediate regime); inside the intermediate "
                                 "regime both are mostly the pixel itself and the network's reaches further than "
                                 "W_G's, so their small remainders correlate only loosely",
            field_grows_with_sigma="the field narrows as sigma falls below a few units, but also narrows again at the "
                                   "highest noise levels, which the ladder's networks saw least in training "
                                   "(chapter 3), so over the whole grid the radius does not rise with sigma")),
        # MNIST 32 x 32 (Kamb & Ganguli's setting): windows up to 11 x 11, the range of their calibrated scales.
        # The ELS machine's cost is N x (interior positions)^2 logits per input (~3e9 for N = 4,096 at 32 x 32):
        # fewer inputs, three window sizes, float32, and the ladder's N = 4,096 network (> d = 1,024) as the
        # generalizing one. Estimated, not measured (no GPU run yet).
        "colab": dict(generalizing_index=3, n_calib=16, n_eval=32, n_samples=32, n_field=4, field_steps=12,
                      patch_sizes=[3, 7, 11], thresholds=[0.02, 0.05, 0.1], compute_dtype="float32"),
        "gpu": dict(generalizing_index=1, n_calib=16, n_eval=32, n_samples=32, n_field=4, field_steps=12,
                    patch_sizes=[3, 7, 11], thresholds=[0.02, 0.05, 0.1], compute_dtype="float32"),
    }

    def validate(self) -> None:
        for name in ("patch_sizes", "thresholds"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if any(p < 1 or p % 2 == 0 for p in self.patch_sizes):
            raise ValueError(f"patch_sizes must be odd positive ints, got {self.patch_sizes}")
        if any(not 0.0 <= t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in [0, 1], got {self.thresholds}")
        if self.compute_dtype not in ("float64", "float32"):
            raise ValueError(f"compute_dtype must be 'float64' or 'float32', got {self.compute_dtype!r}")
        for name in ("n_calib", "n_eval", "n_samples", "n_field", "n_rows", "field_steps", "n_show"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def ladder_pair(P, S: Settings) -> tuple[int, int]:
    """(N of the memorizing network, N of the generalizing network) from the profile's ladder."""
    sizes = list(P.train_sizes)
    try:
        return sizes[S.memorizing_index], sizes[S.generalizing_index]
    except IndexError:
        raise ValueError(f"memorizing_index {S.memorizing_index} / generalizing_index {S.generalizing_index} "
                         f"outside the ladder {sizes}") from None


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: two networks of chapter 2's ladder (shared, not retrained)."""
    return [P.train_spec(n, seed=seed) for n in dict.fromkeys(ladder_pair(P, settings(P)))]


def split_heldout(x_held: torch.Tensor, n_calib: int, n_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of held-out images: the first ``n_calib`` calibrate the local machines, the next
    ``n_eval`` give every reported number (a clear error if the held-out split is too small)."""
    as_images(x_held, "x_held")
    positive_int(n_calib, "n_calib")
    positive_int(n_eval, "n_eval")
    if n_calib + n_eval > len(x_held):
        raise ValueError(f"n_calib + n_eval = {n_calib + n_eval} held-out images are needed, the split has "
                         f"{len(x_held)}: lower n_calib or n_eval in the chapter's settings")
    return x_held[:n_calib], x_held[n_calib:n_calib + n_eval]


# --------------------------------------------------------------------------- sensitivity fields

def pixel_distances(shape) -> torch.Tensor:
    """(d, d) float64: the distance in pixels between the spatial positions of two flat indices
    (channels at one position are 0 apart)."""
    C, H, W = (int(v) for v in shape)
    i = torch.arange(H).repeat_interleave(W).repeat(C).to(torch.float64)
    j = torch.arange(W).repeat(H).repeat(C).to(torch.float64)
    return ((i[:, None] - i[None]) ** 2 + (j[:, None] - j[None]) ** 2).sqrt()


def _rows(J: torch.Tensor, rows):
    """The flat pixel index of each row of J (..., r, d): ``rows``, or 0 ... d - 1 for a square J."""
    d = J.shape[-1]
    if rows is None:
        if J.shape[-2] != d:
            raise ValueError(f"a map of {J.shape[-2]} rows of {d} needs the rows' pixel indices (rows=...)")
        return torch.arange(d)
    idx = torch.as_tensor(rows, dtype=torch.long).flatten()
    if len(idx) != J.shape[-2]:
        raise ValueError(f"rows names {len(idx)} pixels for a map of {J.shape[-2]} rows")
    return idx


def effective_radius(J: torch.Tensor, shape, rows=None) -> torch.Tensor:
    """Per row of a Jacobian J (d, d), a stack (B, d, d), or selected rows (..., r, d) of pixels ``rows``:
    the energy-weighted RMS distance of the field from its pixel p, sqrt(sum_q J_pq^2 |q - p|^2 /
    sum_q J_pq^2), in pixels (0 for the identity; NaN for an all-zero row)."""
    J = torch.as_tensor(J, dtype=torch.float64)
    dist2 = pixel_distances(shape)[_rows(J, rows)] ** 2
    e = J ** 2
    tot = e.sum(-1)
    return torch.where(tot > 0, ((e * dist2).sum(-1) / tot.clamp_min(1e-300)).sqrt(),
                       torch.full_like(tot, float("nan")))


def row_correlation(A: torch.Tensor, B: torch.Tensor, skip_self: bool = True, rows=None) -> torch.Tensor:
    """Pearson correlation between matching rows of two maps (..., r, d) -> (..., r): how alike two
    sensitivity fields of the same pixel are, whatever their scale (square maps, or the rows of pixels
    ``rows``). With ``skip_self`` (the default) the pixel's own entry is left out: every denoiser's field
    peaks at the pixel itself (the identity-like part of an EDM denoiser), which would make any two fields
    look alike; what is compared is where *else* the pixel looks. NaN where a row is constant."""
    A = torch.as_tensor(A, dtype=torch.float64)
    B = torch.as_tensor(B, dtype=torch.float64)
    if A.shape != B.shape or A.ndim < 2:
        raise ValueError(f"the two maps must be of one shape (..., rows, d), got {tuple(A.shape)} and {tuple(B.shape)}")
    a = A - A.mean(-1, keepdim=True)
    b = B - B.mean(-1, keepdim=True)
    if skip_self:
        keep = torch.ones(A.shape[-2:], dtype=torch.bool)
        keep[torch.arange(A.shape[-2]), _rows(A, rows)] = False
        A, B = A.masked_select(keep).reshape(*A.shape[:-1], -1), B.masked_select(keep).reshape(*B.shape[:-1], -1)
        a = A - A.mean(-1, keepdim=True)
        b = B - B.mean(-1, keepdim=True)
    den = (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def field_rows(shape, n_rows: int) -> torch.Tensor:
    """The output pixels (flat indices, channel 0) whose sensitivity fields are computed: a square grid of
    about ``n_rows`` pixels through the centre pixel (every pixel when the image has at most ``n_rows``)."""
    positive_int(n_rows, "n_rows")
    _, H, W = (int(v) for v in shape)
    step = max(1, math.ceil(math.sqrt(H * W / n_rows)))
    ii = torch.arange(H // 2 % step, H, step)
    jj = torch.arange(W // 2 % step, W, step)
    return (ii[:, None] * W + jj[None, :]).flatten()


def _nanmedian(t: torch.Tensor) -> float:
    v = t[~torch.isnan(t)]
    return float(v.median()) if v.numel() else float("nan")


def centre_pixel(shape) -> int:
    """The flat index of the pixel whose fields the figures show: row H // 2, column W // 2, channel 0."""
    _, H, W = (int(v) for v in shape)
    return (H // 2) * W + W // 2


@dataclass
class Fields:
    """Sensitivity fields of one network at ``sigmas`` (descending). Per sigma, over every pixel of every
    input: ``corr_wg`` / ``corr_dm`` -- median row correlation of the network's field with W_G's / with
    D_M's Jacobian; ``radius_net`` / ``radius_wg`` / ``radius_dm`` -- median effective radius (pixels).
    ``rows``: ``{"net" | "dm" | "wg": (n_sigmas, d)}`` the fields of :func:`centre_pixel` at the first
    input, for the figure (the full Jacobians are not kept: d x d per input and sigma)."""

    sigmas: list
    corr_wg: list
    corr_dm: list
    radius_net: list
    radius_wg: list
    radius_dm: list
    rows: dict


# Rows of the Jacobian computed at once by reverse-mode autodiff (memory: this many backward passes).
JACOBIAN_CHUNK = 64


def sensitivity_fields(net, D_G: GaussianDenoiser, D_M: EmpiricalDenoiser, x_clean: torch.Tensor, sigmas,
                       seed: int = 0, n_rows: int = 64, progress: bool = True) -> Fields:
    """The fields of ``net``, D_G (its weight W_G) and D_M (float64) at the inputs
    ``NoisyInputs(x_clean, seed).at(sigma)``, for every sigma (``utils.metrics.jacobian``), over the output
    pixels :func:`field_rows` (``n_rows``: all of an 8 x 8 image; a grid of them on larger images)."""
    as_images(x_clean, "x_clean")
    sig = sigma_list(sigmas)
    noisy = NoisyInputs(x_clean, seed)
    shape = tuple(x_clean.shape[1:])
    rows = field_rows(shape, n_rows)
    k = int((rows == centre_pixel(shape)).nonzero()[0, 0])
    keys = ("corr_wg", "corr_dm", "radius_net", "radius_wg", "radius_dm")
    out = {key: [] for key in keys}
    maps = {key: [] for key in ("net", "dm", "wg")}
    for s in progress_bar(sig, "sensitivity fields, per sigma", progress):
        x = noisy.at(s)
        J = metrics.jacobian(net, x, s, chunk_size=JACOBIAN_CHUNK, rows=rows)            # (B, r, d)
        JM = metrics.jacobian(D_M, x.to(torch.float64), s, chunk_size=JACOBIAN_CHUNK, rows=rows)
        WG = D_G.weight(s).cpu()[rows].expand_as(J)
        out["corr_wg"].append(_nanmedian(row_correlation(J, WG, rows=rows)))
        out["corr_dm"].append(_nanmedian(row_correlation(J, JM, rows=rows)))
        for key, M in (("radius_net", J), ("radius_wg", WG[:1]), ("radius_dm", JM)):
            out[key].append(_nanmedian(effective_radius(M, shape, rows)))
        for key, M in (("net", J), ("dm", JM), ("wg", WG)):
            maps[key].append(M[0, k])
    return Fields(sigmas=sig, rows={key: torch.stack(v) for key, v in maps.items()}, **out)


# --------------------------------------------------------------------------- the machines

def machines(x_train: torch.Tensor, patch_sizes, thresholds, D_G: GaussianDenoiser | None = None,
             D_M: EmpiricalDenoiser | None = None, dtype: str = "float64") -> dict:
    """Every closed form of the comparison for one training set: ``{"D_G": D, "D_M": D, family:
    {option: D}}`` with one instance per patch size (patch Wiener, LS, ELS) or threshold (data-derived);
    ``dtype`` ("float64" or "float32") is the precision of the softmax machines' distances."""
    as_images(x_train, "x_train")
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    dt = getattr(torch, dtype)
    D_G = D_G if D_G is not None else GaussianDenoiser.fit(x_train)
    D_M = D_M if D_M is not None else EmpiricalDenoiser(x_train)
    return {"D_G": D_G, "D_M": D_M,
            "patch-Wiener": {p: PatchWiener(x_train, p) for p in patch_sizes},
            "LS": {p: LocalScore(x_train, p, dtype=dt) for p in patch_sizes},
            "ELS": {p: EquivariantLocalScore(x_train, p, dtype=dt) for p in patch_sizes},
            "data-derived": {t: DataLocalDenoiser(x_train, t, gaussian=D_G, dtype=dt) for t in thresholds}}


def neighbourhood_size(machine, sigma: float) -> float:
    """Mean number of pixels (spatial positions) a local machine reads per output pixel at ``sigma``: the
    window's in-image part for patch Wiener / LS / ELS, the mask M_p(sigma) for the data-derived one."""
    if isinstance(machine, DataLocalDenoiser):
        return float(machine.masks(sigma)[1].to(torch.float64).mean()) / machine.shape[0]
    if not hasattr(machine, "idx"):
        raise TypeError(f"machine must be a local denoiser (utils.local_denoisers), got {type(machine).__name__}")
    return float((machine.idx != machine.d).sum(1).to(torch.float64).mean()) / machine.shape[0]


def chosen_sizes(calibration: "Calibration", families: dict) -> dict:
    """``{family: [neighbourhood size (pixels) of the option chosen at each sigma]}``."""
    return {f: [neighbourhood_size(families[f][o], s) for o, s in zip(calibration.choice[f], calibration.sigmas)]
            for f in calibration.choice}


@dataclass
class Calibration:
    """Per family and sigma: the chosen option (``choice[family][j]``), the mean squared error of every
    option against the network (``mse[family][option][j]``), and the per-sigma denoisers
    (``denoisers[family]``, a ``utils.denoisers.PerSigmaDenoiser`` on ``sigmas``)."""

    sigmas: list
    choice: dict
    mse: dict
    denoisers: dict


def calibrate(net, families: dict, x_clean: torch.Tensor, sigmas, seed: int = 0, progress: bool = True) -> Calibration:
    """For every sigma and family ``{name: {option: D}}``: the option whose output on
    ``NoisyInputs(x_clean, seed).at(sigma)`` is closest to the network's in mean squared error
    (ties: the first option)."""
    as_images(x_clean, "x_clean")
    sig = sigma_list(sigmas)
    noisy = NoisyInputs(x_clean, seed)
    mse = {f: {o: [] for o in opts} for f, opts in families.items()}
    for s in progress_bar(sig, "calibration, per sigma", progress):
        x = noisy.at(s)
        ref = apply(net, x, s).cpu().to(torch.float64)
        for f, opts in families.items():
            for o, D in opts.items():
                mse[f][o].append(float((apply(D, x, s).cpu().to(torch.float64) - ref).pow(2).mean()))
    choice, dens = {}, {}
    for f, opts in families.items():
        keys = list(opts)
        choice[f] = [keys[int(np.argmin([mse[f][o][j] for o in keys]))] for j in range(len(sig))]
        dens[f] = PerSigmaDenoiser(sig, [opts[c] for c in choice[f]])
    return Calibration(sigmas=sig, choice=choice, mse=mse, denoisers=dens)


def compare(net, denoisers: dict, x_clean: torch.Tensor, sigmas, seed: int = 0, progress: bool = True) -> dict:
    """Per machine of ``{label: D}`` and sigma: ``{"r2": {label: [median per-image r^2 against the
    network's output]}, "rmse": {label: [mean per-image RMSE]}}`` on ``NoisyInputs(x_clean, seed)``
    (``utils.metrics.r2``, ``utils.metrics.image_rmse``)."""
    as_images(x_clean, "x_clean")
    sig = sigma_list(sigmas)
    noisy = NoisyInputs(x_clean, seed)
    out = {"r2": {k: [] for k in denoisers}, "rmse": {k: [] for k in denoisers}}
    for s in progress_bar(sig, "comparison, per sigma", progress):
        x = noisy.at(s)
        ref = apply(net, x, s).cpu()
        for k, D in denoisers.items():
            y = apply(D, x, s).cpu()
            out["r2"][k].append(_nanmedian(metrics.r2(y, ref)))
            out["rmse"][k].append(float(metrics.image_rmse(y, ref).mean()))
    return out


def sample_r2(net_samples: torch.Tensor, samples: dict) -> dict:
    """``{label: median over noises of r^2(machine sample, network sample)}`` (Kamb & Ganguli's measure)."""
    return {k: _nanmedian(metrics.r2(v, net_samples)) for k, v in samples.items()}


# The limits check runs on images of at most this side (a central crop of larger ones): a window covering
# a 32 x 32 image has 63^2 entries per pixel, and the patch Wiener filter's covariances would not fit.
LIMIT_SIDE = 8


def limits_error(x_train: torch.Tensor, x: torch.Tensor, sigma: float, D_G=None, D_M=None) -> dict:
    """Largest absolute difference, over the inputs ``x``, between the patch Wiener filter with a window
    covering the image and D_G, and between LS with that window and D_M (both 0 up to round-off).
    Images larger than :data:`LIMIT_SIDE` are cut to their central crop of that side first (D_G and D_M
    are then those of the cropped training set; the passed ones are used only when nothing is cut)."""
    as_images(x_train, "x_train")
    as_images(x, "x")
    H, W = x_train.shape[-2:]
    if max(H, W) > LIMIT_SIDE:
        h, w = min(H, LIMIT_SIDE), min(W, LIMIT_SIDE)
        i, j = (H - h) // 2, (W - w) // 2
        x_train, x = x_train[..., i:i + h, j:j + w], x[..., i:i + h, j:j + w]
        D_G = D_M = None
    P = full_window(tuple(x_train.shape[1:]))
    D_G = D_G if D_G is not None else GaussianDenoiser.fit(x_train)
    D_M = D_M if D_M is not None else EmpiricalDenoiser(x_train)
    x64 = x.to(torch.float64)
    return {"D_G": float((PatchWiener(x_train, P)(x64, sigma) - D_G(x64, sigma)).abs().max()),
            "D_M": float((LocalScore(x_train, P)(x64, sigma) - D_M(x64, sigma)).abs().max())}


# --------------------------------------------------------------------------- claims

@dataclass
class Results:
    """The chapter's numbers that its claims need (plain python values)."""

    n_memorizing: int
    n_generalizing: int
    # sensitivity fields of the generalizing network, over the field grid's intermediate levels
    field_sigmas: list                     # the field grid (descending)
    field_intermediate: list               # bool per level: in the intermediate regime
    corr_wg_generalizing: list             # per level: median row correlation with W_G
    corr_dm_generalizing: list             # ... with D_M's Jacobian
    radius_generalizing: list              # per level: median effective radius of the network's field (pixels)
    # per-sigma prediction: mean over the intermediate levels of the comparison grid of the median r^2
    r2_band: dict                          # {"memorizing" | "generalizing": {machine: value}}
    # whole samples from the same noises: median r^2 against the network's samples
    r2_samples: dict                       # {"memorizing" | "generalizing": {machine: value}}
    limit_errors: dict                     # {"D_G": max |patch-Wiener(full) - D_G|, "D_M": max |LS(full) - D_M|}


CLAIM_IDS = ("ch7.field_matches_wiener", "ch7.field_wiener_not_memory", "ch7.field_grows_with_sigma",
             "ch7.memorizing_dm_best", "ch7.memorizing_dm_samples", "ch7.local_beats_dg",
             "ch7.local_beats_dg_samples", "ch7.dg_beats_dm_samples", "ch7.els_r2_anchor",
             "ch7.local_contains_global")


def _band(values, mask) -> float:
    v = [x for x, m in zip(values, mask) if m]
    return float(np.mean(v)) if v else float("nan")


def best_local(scores: dict) -> tuple[str, float]:
    """(name, value) of the local family with the highest score (NaN-safe)."""
    vals = {k: scores[k] for k in LOCAL if k in scores and not math.isnan(scores[k])}
    if not vals:
        return "none", float("nan")
    k = max(vals, key=vals.get)
    return k, vals[k]


def claims(results: Results, settings: Settings) -> list[Claim]:
    """The chapter's claims from its measurements (see :data:`CLAIM_IDS`)."""
    R, S = results, settings
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)                     # noqa: E731
    corr_wg = _band(R.corr_wg_generalizing, R.field_intermediate)
    corr_dm = _band(R.corr_dm_generalizing, R.field_intermediate)
    radius_ok = len(R.field_sigmas) > 1 and all(math.isfinite(v) for v in R.radius_generalizing)
    rho = metrics.trend(R.field_sigmas, R.radius_generalizing)[0] if radius_ok else float("nan")
    mem_band, gen_band = R.r2_band["memorizing"], R.r2_band["generalizing"]
    mem_s, gen_s = R.r2_samples["memorizing"], R.r2_samples["generalizing"]

    def best_other(scores, than):
        others = [v for k, v in scores.items() if k != than and not math.isnan(v)]
        return max(others) if others else float("nan")

    def table(scores):
        return "; ".join(f"{k} {scores[k]:.3f}" for k in MACHINES if k in scores)

    finite = {k: v for k, v in gen_s.items() if not math.isnan(v)}
    top = max(finite, key=finite.get) if finite else "none"
    top_v = finite.get(top, float("nan"))
    loc_b, loc_b_v = best_local(gen_band)
    loc_s, loc_s_v = best_local(gen_s)
    t_field = test(corr_wg, ">=", FIELD_CORR_MIN)
    t_not_mem = test(corr_wg, ">", corr_dm)
    t_radius = test(rho, ">=", metrics.TREND_MIN)
    t_mem = test(mem_band["D_M"], ">", best_other(mem_band, "D_M"))
    t_mem_s = test(mem_s["D_M"], ">", best_other(mem_s, "D_M"))
    t_loc = test(loc_b_v, ">", gen_band["D_G"])
    t_loc_s = test(loc_s_v, ">", gen_s["D_G"])
    t_gm = test(gen_s["D_G"], ">", gen_s["D_M"])
    t_els = test(gen_s["ELS"], ">=", KG_ELS_UNET_MNIST - R2_TOLERANCE)
    t_lim = all_of(test(R.limit_errors["D_G"], "<=", LIMIT_TOL), test(R.limit_errors["D_M"], "<=", LIMIT_TOL))
    gen, mem = f"N = {R.n_generalizing}", f"N = {R.n_memorizing}"
    KG, LU, NI = "kamb2025analytic", "lukoianov2025locality", "niedoba2025mechanistic"

    def claim(cid, kind, t, text, paper, ours, **kw):
        return Claim(id=cid, kind=kind, claim=text, paper=paper, ours=ours, passed=t.passed, margin=t.margin,
                     expected_to_fail=expected(S, cid), **kw)

    return [
        claim("ch7.field_matches_wiener", "paper", t_field,
              "The generalizing network's sensitivity field (its Jacobian row of a pixel) matches that row of the "
              "Wiener filter W_G (median row correlation, intermediate regime)",
              "the locality of trained denoisers is that of the optimal linear (Wiener) denoiser of the data",
              f"{gen}: {corr_wg:.3f} (needs >= {FIELD_CORR_MIN}); per level {fmt(R.corr_wg_generalizing)}",
              source=LU, where="main text: network sensitivity fields beside the Wiener filter's rows"),
        claim("ch7.field_wiener_not_memory", "control", t_not_mem,
              "... and it is closer to W_G's row than to the memorizing D_M's Jacobian row (intermediate regime)",
              "locality comes from the data's pixel correlations (Lukoianov et al.), not from memorized images",
              f"{gen}: correlation with W_G {corr_wg:.3f}, with D_M's Jacobian {corr_dm:.3f}"),
        claim("ch7.field_grows_with_sigma", "paper", t_radius,
              "The generalizing network's sensitivity field widens with sigma (effective radius, whole field grid)",
              "local patches shrink as the noise level falls (patch size calibrated per noise level)",
              f"{gen}: radius {fmt(R.radius_generalizing)} px at sigma = "
              f"{', '.join(f'{s:.3g}' for s in R.field_sigmas)}; rank correlation with sigma {rho:+.2f} "
              f"(needs >= {metrics.TREND_MIN})", source=NI, where="patch-size schedule over the noise levels"),
        claim("ch7.memorizing_dm_best", "control", t_mem,
              "For the memorizing network D_M predicts its denoiser best of all machines (median r^2, "
              "intermediate regime)", "a memorizing network is the empirical optimum D_M (Li et al. Figs. 5a, 6a)",
              f"{mem}: {table(mem_band)}"),
        claim("ch7.memorizing_dm_samples", "control", t_mem_s,
              "... and D_M's samples predict the memorizing network's samples best (median r^2, same noises)",
              "memorizing networks return training images, as D_M does (Li et al. Fig. 3)",
              f"{mem}: {table(mem_s)}"),
        claim("ch7.local_beats_dg", "control", t_loc,
              "For the generalizing network a local machine predicts its denoiser better than D_G "
              "(median r^2, intermediate regime, patch size / threshold calibrated on other inputs)",
              "local patch machines explain what the global Gaussian misses (Kamb & Ganguli, Niedoba et al.)",
              f"{gen}: best local {loc_b} {loc_b_v:.3f} vs D_G {gen_band['D_G']:.3f}; {table(gen_band)}"),
        claim("ch7.local_beats_dg_samples", "control", t_loc_s,
              "... and a local machine predicts its samples better than D_G (median r^2, same noises)",
              "ELS and the data-derived denoiser reproduce network samples (Kamb & Ganguli Table 1; Lukoianov et al.)",
              f"{gen}: best local {loc_s} {loc_s_v:.3f} vs D_G {gen_s['D_G']:.3f}; {table(gen_s)}"),
        claim("ch7.dg_beats_dm_samples", "control", t_gm,
              "... and D_G predicts its samples better than D_M does (median r^2, same noises)",
              "a generalizing network's samples are close to the Gaussian model's from the same noise, "
              "not to training images (Li et al. Figs. 2-3)",
              f"{gen}: D_G {gen_s['D_G']:.3f} vs D_M {gen_s['D_M']:.3f}"),
        claim("ch7.els_r2_anchor", "paper", t_els,
              f"The ELS machine predicts the generalizing network's samples as well as on Kamb & Ganguli's MNIST "
              f"U-Net (median r^2 >= {KG_ELS_UNET_MNIST} - {R2_TOLERANCE})",
              f"ELS vs U-Net {KG_ELS_UNET_MNIST}, vs ResNet {KG_ELS_RESNET_MNIST} (MNIST, Table 1); "
              f"{KG_ELS_UNET_20STEP} with a 20-step sampler (Table 2)",
              f"{gen}: ELS {gen_s['ELS']:.3f}; best machine {top} {top_v:.3f}",
              source=KG, where="Table 1"),
        claim("ch7.local_contains_global", "check", t_lim,
              "The local machines contain the global ones: with a window covering the image, patch Wiener = D_G and "
              "LS = D_M", "identity of the equations (a window that sees every pixel is the whole image)",
              f"largest difference {R.limit_errors['D_G']:.1e} (D_G), {R.limit_errors['D_M']:.1e} (D_M); "
              f"needs <= {LIMIT_TOL:.0e}"),
    ]
