"""Memorization vs generalization of trained denoisers (chapter 2; reused by chapters 3-5).

A trained network is compared with the two closed-form denoisers of its own training set, the
memorizing D_M and the Gaussian D_G (``utils.denoisers``), in two ways:

* **samples**: every model integrates the probability-flow ODE from the *same* initial noises
  (:func:`initial_noise`, :func:`sample_all`); :func:`sample_stats` gives the GL score (paper
  eq. 14) and the nearest-neighbour ratio test (memorized: ratio < 1/3) from one neighbour search;
  :func:`comparison_rows` lays out "network sample | its nearest training image | D_G sample".
* **denoisers**: :func:`distance_curves` gives RMSE(D_theta, D_ref) (paper eq. 10) against any
  reference denoisers on held-out images plus noise, one value per sigma, with the same noise for
  every model; :func:`intermediate_mean` summarises a curve over the paper's intermediate regime
  and :func:`paired_difference` compares two models input by input (mean and standard error).

:func:`evaluate_model` runs both for one model and returns a :class:`ModelReport`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import edm, metrics
from .checks import as_images, positive_int
from .denoisers import EmpiricalDenoiser, GaussianDenoiser
from .plotting import REGIMES

INTERMEDIATE = REGIMES["intermediate"]     # the paper's intermediate noise regime, sigma in [0.1, 20]
MEMORIZED_RATIO = 1 / 3                    # NN-ratio threshold of Gu et al. / Yoon et al.
PAPER_GL_THRESHOLD = 0.6                   # "GL > 0.6 indicates generalization" (paper App. B.1, FFHQ)


# --------------------------------------------------------------------------- samples

def initial_noise(n: int, shape, sigma_max: float = 80.0, seed: int = 0, device="cpu",
                  dtype=torch.float32) -> torch.Tensor:
    """``n`` initial states x_T = sigma_max * eps of image ``shape`` (C, H, W), drawn from a
    generator seeded with ``seed`` (independent of the global RNG), so every model of a sweep
    starts from the same noises."""
    positive_int(n, "n")
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((n, *tuple(shape)), generator=g, dtype=torch.float64)
    return (float(sigma_max) * eps).to(device=device, dtype=dtype)


def sample_all(denoisers: dict, x_T: torch.Tensor, sigmas, solver: str = "euler") -> dict:
    """``{label: samples}``: each denoiser of ``{label: D}`` sampled from the same ``x_T`` with
    ``utils.edm.sample`` on ``sigmas``; samples are returned on the CPU."""
    return {label: edm.sample(D, x_T, sigmas, solver=solver).cpu() for label, D in denoisers.items()}


@dataclass
class SampleStats:
    """Nearest-neighbour statistics of a batch of samples against a training set.

    ``gl``: the GL score, mean ||x - NN1(x)|| / ||x|| (paper eq. 14); ``memorized``: fraction of
    samples with ratio ||x - NN1|| / ||x - NN2|| < ``threshold``; per sample: ``ratio``,
    ``nn_index`` (index of NN1 in the training set), ``nn_dist`` (||x - NN1||), ``rel_dist``
    (||x - NN1|| / ||x||, whose mean is ``gl``).
    """

    gl: float
    memorized: float
    ratio: torch.Tensor
    nn_index: torch.Tensor
    nn_dist: torch.Tensor
    rel_dist: torch.Tensor
    threshold: float = MEMORIZED_RATIO

    def is_memorized(self) -> torch.Tensor:
        """Boolean mask of the samples that count as copies."""
        return self.ratio < self.threshold


def sample_stats(samples: torch.Tensor, train: torch.Tensor, threshold: float = MEMORIZED_RATIO) -> SampleStats:
    """GL score and NN-ratio memorization of ``samples`` w.r.t. ``train`` from one exact k = 2
    neighbour search (same numbers as ``metrics.generalization_score`` / ``memorized_fraction``).
    Needs at least 2 training images."""
    as_images(samples, "samples")
    as_images(train, "train")
    if len(train) < 2:
        raise ValueError(f"the NN ratio needs at least 2 training images, got {len(train)}")
    if not 0 < threshold:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    dist, idx = metrics.nearest_distances(samples.cpu(), train.cpu(), k=2)
    norms = samples.cpu().reshape(len(samples), -1).to(torch.float64).norm(dim=1).clamp_min(1e-30)
    ratio = dist[:, 0] / dist[:, 1].clamp_min(1e-30)
    rel = dist[:, 0] / norms
    return SampleStats(gl=float(rel.mean()), memorized=float((ratio < threshold).double().mean()),
                       ratio=ratio, nn_index=idx[:, 0], nn_dist=dist[:, 0], rel_dist=rel,
                       threshold=float(threshold))


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

def noisy_inputs(x_clean: torch.Tensor, sigma: float, seed: int = 0, index: int = 0) -> torch.Tensor:
    """x_clean + sigma * eps with eps from a generator seeded by (``seed``, ``index``): the same
    noisy inputs for every model evaluated at the ``index``-th noise level."""
    as_images(x_clean, "x_clean")
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index) * 7_919 + 1)
    eps = torch.randn(x_clean.shape, generator=g, dtype=torch.float64)
    return (x_clean.cpu().to(torch.float64) + float(sigma) * eps).to(x_clean.device, x_clean.dtype)


def _outputs(D, x: torch.Tensor, sigma: float, batch_size: int) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(D(x[i:i + batch_size], float(sigma)).reshape(len(x[i:i + batch_size]), -1)
                       .to("cpu", torch.float64))
    return torch.cat(out)


def distance_per_input(D, references: dict, x_clean: torch.Tensor, sigmas, seed: int = 0,
                       batch_size: int = 256) -> dict:
    """``{name: (n_inputs, n_sigmas) array}`` of the per-input distance
    sqrt(||D(x) - D_ref(x)||^2 / d) for every ``{name: D_ref}`` of ``references``.

    The inputs at sigma_i are ``noisy_inputs(x_clean, sigma_i, seed, i)`` (held-out images plus
    noise, paper.md §4.4), so every model of a sweep sees the same inputs and two models can be
    compared input by input (:func:`paired_difference`). ``D`` is called once per sigma."""
    as_images(x_clean, "x_clean")
    if not references:
        raise ValueError("references must be a non-empty {name: denoiser} dict")
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    out_arrays = {name: np.zeros((len(x_clean), len(sig))) for name in references}
    for i, s in enumerate(sig):
        x = noisy_inputs(x_clean, s, seed, i)
        out = _outputs(D, x, s, batch_size)
        for name, ref in references.items():
            diff = out - _outputs(ref, x, s, batch_size)
            out_arrays[name][:, i] = diff.pow(2).mean(1).sqrt().numpy()
    return out_arrays


def distance_curves(D, references: dict, x_clean: torch.Tensor, sigmas, seed: int = 0,
                    batch_size: int = 256) -> dict:
    """``{name: array over sigmas}`` of RMSE(D, D_ref) (paper eq. 10: mean over inputs of
    sqrt(||D(x) - D_ref(x)||^2 / d)): the mean over inputs of :func:`distance_per_input`."""
    per_input = distance_per_input(D, references, x_clean, sigmas, seed, batch_size)
    return {name: a.mean(0) for name, a in per_input.items()}


def paired_difference(a: np.ndarray, b: np.ndarray, sigmas, regime=INTERMEDIATE) -> tuple:
    """Mean and standard error of a - b, where a and b are (n_inputs, n_sigmas) per-input
    distances of two models on the *same* inputs (:func:`distance_per_input`), each first
    averaged over the sigmas in ``regime``. Returns (mean, standard error)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (n_inputs, n_sigmas) arrays of one shape, got {a.shape} and {b.shape}")
    mask = regime_mask(sigmas, regime)
    if mask.shape[0] != a.shape[1] or not mask.any():
        raise ValueError(f"sigmas must match the {a.shape[1]} columns and contain a level in {regime}")
    diff = a[:, mask].mean(1) - b[:, mask].mean(1)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return float(diff.mean()), se


def regime_mask(sigmas, regime=INTERMEDIATE) -> np.ndarray:
    """Boolean mask of the ``sigmas`` inside the closed interval ``regime`` = (lo, hi)."""
    lo, hi = regime
    s = np.asarray(torch.as_tensor(sigmas, dtype=torch.float64).flatten())
    return (s >= lo) & (s <= hi)


def intermediate_mean(sigmas, values, regime=INTERMEDIATE) -> float:
    """Mean of a curve over the sigmas inside ``regime`` (default: the paper's intermediate
    regime [0.1, 20]; on the 10-step grid that is sigma = 0.117, 0.47, 1.50, 4.07, 9.72)."""
    mask = regime_mask(sigmas, regime)
    v = np.asarray(values, dtype=float)
    if v.shape != mask.shape:
        raise ValueError(f"values has shape {v.shape}, sigmas has {mask.shape[0]} entries")
    if not mask.any():
        raise ValueError(f"no sigma of {np.asarray(sigmas).tolist()} lies in the regime {regime}")
    return float(v[mask].mean())


def comparable_sigma(sigma_ref: float, d_ref: int, d: int, grid) -> float:
    """The noise level of ``grid`` nearest (in log sigma) to ``sigma_ref * sqrt(d / d_ref)``.

    The variance of a smooth, image-wide pattern along its unit-norm direction grows with the
    number of pixels it covers, so the leading eigenvalues of Sigma scale like d at a fixed pixel
    range; keeping the per-component signal-to-noise ratio lambda_k / sigma^2 (what D_G's
    shrinkage depends on) fixed when moving from d_ref to d pixels scales sigma by sqrt(d / d_ref).
    """
    if not (sigma_ref > 0 and d_ref > 0 and d > 0):
        raise ValueError("sigma_ref, d_ref and d must be > 0")
    target = sigma_ref * math.sqrt(d / d_ref)
    g = torch.as_tensor(grid, dtype=torch.float64).flatten()
    return float(g[torch.argmin((g.log() - math.log(target)).abs())])


def effective_components(D_G: GaussianDenoiser, sigma: float) -> float:
    """sum_k lambda_k / (lambda_k + sigma^2): how many principal components D_G keeps at sigma."""
    return float(D_G.shrinkage(sigma).sum())


def denoise_rows(denoisers: dict, x: torch.Tensor, sigma: float) -> list:
    """[x, D_1(x), D_2(x), ...] at one ``sigma`` for ``{label: D}`` (rows of paper Fig. 5b / 18),
    all on the CPU."""
    as_images(x, "x")
    rows = [x.cpu()]
    with torch.inference_mode():
        for D in denoisers.values():
            rows.append(D(x, float(sigma)).cpu())
    return rows


def image_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image pixel RMSE sqrt(||a_i - b_i||^2 / d) between two batches of one shape (float64)."""
    as_images(a, "a")
    as_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    diff = a.detach().cpu().to(torch.float64) - b.detach().cpu().to(torch.float64)
    return diff.reshape(len(a), -1).pow(2).mean(1).sqrt()


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
    rmse_G: np.ndarray                  # RMSE(D_theta, D_G) per sigma, held-out inputs
    rmse_M: np.ndarray                  # RMSE(D_theta, D_M) per sigma, held-out inputs
    similarity: dict = field(default_factory=dict)   # paired cosine / RMSE to D_G's samples
    rmse_G_inputs: np.ndarray | None = None          # (n_inputs, n_sigmas): per-input distance to D_G
    rmse_M_inputs: np.ndarray | None = None          # ... and to D_M (same noisy inputs for every model)

    @property
    def rmse_G_intermediate(self) -> float:
        return intermediate_mean(self.sigmas, self.rmse_G)

    @property
    def rmse_M_intermediate(self) -> float:
        return intermediate_mean(self.sigmas, self.rmse_M)

    def summary(self) -> str:
        params = f"{self.n_params:>9,d} params  " if self.n_params is not None else ""
        return (f"{self.label:<14} {params}GL {self.stats.gl:.3f} (D_G samples {self.gaussian_stats.gl:.3f})  "
                f"memorized {self.stats.memorized:.2f}  intermediate-sigma RMSE to D_G "
                f"{self.rmse_G_intermediate:.3f}, to D_M {self.rmse_M_intermediate:.3f}  "
                f"cosine to D_G sample {self.similarity.get('cosine', float('nan')):.3f}")


def evaluate_model(model, x_train: torch.Tensor, x_T: torch.Tensor, x_eval: torch.Tensor,
                   sample_sigmas, curve_sigmas=None, seed: int = 0, label: str | None = None,
                   D_G: GaussianDenoiser | None = None, D_M: EmpiricalDenoiser | None = None,
                   gaussian_samples: torch.Tensor | None = None) -> ModelReport:
    """Sample ``model`` from ``x_T`` and compare it with D_G and D_M of ``x_train``.

    ``x_eval``: clean held-out images (noised per sigma by :func:`noisy_inputs` with ``seed``);
    ``curve_sigmas``: where to evaluate the RMSE curves (default: ``sample_sigmas``). ``D_G``,
    ``D_M`` and ``gaussian_samples`` may be passed to reuse them across models that share a
    training set. Everything in the report is on the CPU.
    """
    as_images(x_train, "x_train")
    D_G = D_G if D_G is not None else GaussianDenoiser.fit(x_train)
    D_M = D_M if D_M is not None else EmpiricalDenoiser(x_train)
    curve_sigmas = sample_sigmas if curve_sigmas is None else curve_sigmas
    samples = edm.sample(model, x_T, sample_sigmas).cpu()
    if gaussian_samples is None:
        gaussian_samples = edm.sample(D_G, x_T, sample_sigmas).cpu()
    per_input = distance_per_input(model, {"G": D_G, "M": D_M}, x_eval, curve_sigmas, seed=seed)
    return ModelReport(
        label=label or f"N={len(x_train)}", n_train=len(x_train), n_params=getattr(model, "n_params", None),
        samples=samples, gaussian_samples=gaussian_samples.cpu(),
        stats=sample_stats(samples, x_train), gaussian_stats=sample_stats(gaussian_samples.cpu(), x_train),
        sigmas=np.asarray(torch.as_tensor(curve_sigmas, dtype=torch.float64).flatten()),
        rmse_G=per_input["G"].mean(0), rmse_M=per_input["M"].mean(0),
        similarity=metrics.sample_similarity(samples, gaussian_samples.cpu()),
        rmse_G_inputs=per_input["G"], rmse_M_inputs=per_input["M"])
