"""Chapter 3: how linear a trained denoiser is, and what its best affine approximation looks like.

The measurements themselves are core: ``utils.metrics.linearity_curves`` (paper eq. 11 / 12),
``utils.distill.distill_grid`` (closed-form linear distillation at every sigma, optionally the
paper's Adam recipe on the same pairs), ``utils.metrics.rmse_curves`` (eq. 10) and
``utils.metrics.singular_alignment`` (Fig. 4 right). This module holds what only this chapter needs:

* :func:`memorization` -- samples of a denoiser from the book's initial noises and their
  memorized fraction, the measured criterion that splits the ladder into memorizing and
  generalizing models;
* :func:`training_draws_above` and :func:`trained_sigmas` -- how many training draws a network saw
  above each sigma under the training p(sigma), compared with the paper's networks at the sigma where
  the paper itself calls them under-trained;
* :func:`aligned_singular_vectors` -- singular vectors of W_L and W_G as images, signs matched;
* :func:`weight_errors`, :func:`matched_n_noise`, :func:`paired_rmse` -- small bookkeeping.
"""
from __future__ import annotations

import math

import torch

from .. import edm, metrics
from ..checks import as_images, as_sigma, positive_int

# A model whose samples are copies (NN ratio < 1/3) more often than this counts as memorizing.
MEMORIZED_THRESHOLD = 0.5
# The paper calls its EDM networks under-trained at sigma in {42.4, 80} (App. G.2); its FFHQ ladder
# networks saw 70,246,400 training images (paper.md §2.5), all with EDM's log-normal p(sigma).
PAPER_UNDERTRAINED_SIGMA = 42.4152
PAPER_IMAGES_SEEN = 70_246_400
# The paper's alpha^2 values for the alpha sweep (its code: linspace(0.99, 0.5, 5); Fig. 10).
PAPER_ALPHA2 = (0.99, 0.8675, 0.745, 0.6225, 0.5)


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: the model ladder of chapter 2 (shared, not retrained)."""
    return [P.train_spec(n, seed=seed) for n in P.train_sizes]


# --------------------------------------------------------------------------- training coverage

def training_draws_above(sigma: float, images_seen: int, uniform_share: float = 0.0) -> float:
    """Expected number of training draws with noise level above ``sigma`` for a network that saw
    ``images_seen`` training images, under EDM's ln s ~ N(P_mean, P_std^2) mixed with a share
    ``uniform_share`` of log-uniform draws on [SIGMA_MIN, SIGMA_MAX] (``utils.edm.edm_training_sigmas``)."""
    s = float(as_sigma(sigma, 1)[0])
    positive_int(images_seen, "images_seen")
    z = (math.log(s) - edm.P_MEAN) / edm.P_STD
    p_lognormal = 0.5 * math.erfc(z / math.sqrt(2))
    lo, hi = math.log(edm.SIGMA_MIN), math.log(edm.SIGMA_MAX)
    p_uniform = min(1.0, max(0.0, (hi - math.log(s)) / (hi - lo)))
    return images_seen * ((1 - uniform_share) * p_lognormal + uniform_share * p_uniform)


def trained_sigmas(sigmas, images_seen: int, uniform_share: float = 0.0,
                   reference_sigma: float = PAPER_UNDERTRAINED_SIGMA,
                   reference_images: int = PAPER_IMAGES_SEEN) -> list:
    """For each sigma: did the network see at least as many training draws above it as the paper's
    networks saw above ``reference_sigma``, where the paper reports them under-trained?"""
    need = training_draws_above(reference_sigma, reference_images)
    return [training_draws_above(float(s), images_seen, uniform_share) >= need
            for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]


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


def paired_rmse(finals: dict) -> dict:
    """Mean paired pixel RMSE between the final samples of every two denoisers (same noises)."""
    labels = list(finals)
    return {(a, b): metrics.sample_similarity(finals[a], finals[b])["rmse"]
            for i, a in enumerate(labels) for b in labels[i + 1:]}
