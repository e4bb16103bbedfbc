"""Chapter 3: how linear a trained denoiser is, and what its best affine approximation looks like.

* :class:`Pairs` and :func:`linearity_curves` -- the linearity score of paper eq. (11) over a grid of
  noise levels, with the clean images and unit noises held fixed across sigma (the paper's code), for
  several mixing weights alpha at the cost of one extra denoiser call per alpha.
* :func:`memorization` -- samples of a denoiser from fixed noises and their memorized fraction
  (nearest-neighbour ratio < 1/3), the measured criterion that splits the ladder into memorizing and
  generalizing models.
* :func:`distill_grid` -- the closed-form linear distillation (``utils.distill.fit_affine``) at every
  sigma of a grid, collected into a ``PerSigmaDenoiser``; optionally the paper's Adam recipe on the
  very same (input, teacher output) pairs (:func:`adam_on_pool`), for the "error vs epoch" curves.
* :func:`rmse_curves` -- RMSE (paper eq. 10) between pairs of denoisers over sigma on fixed noisy
  inputs, each denoiser evaluated once per sigma.
* :func:`alignment_summary`, :func:`aligned_singular_vectors` -- comparing W_L with W_G through their
  singular vectors (paper Fig. 4 right, Fig. 14).
* :func:`sample_all` and :func:`paired_rmse` -- sampling several denoisers from the same noises.
* :func:`training_draws_above` and :func:`trained_sigmas` -- how many training draws of the EDM
  noise distribution a network saw above each sigma, compared with the paper's networks at the
  sigma where the paper itself calls them under-trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import edm, metrics
from .checks import as_images, as_sigma, positive_int, flat64
from .denoisers import AffineDenoiser, PerSigmaDenoiser
from .distill import AdamDistillation, fit_affine, fit_affine_adam_pool

# A model whose samples are copies (NN ratio < 1/3) more often than this counts as memorizing.
MEMORIZED_THRESHOLD = 0.5
# The paper calls its EDM networks under-trained at sigma in {42.4, 80} (App. G.2); its FFHQ ladder
# networks saw 70,246,400 training images (paper.md §2.5).
PAPER_UNDERTRAINED_SIGMA = 42.4152
PAPER_IMAGES_SEEN = 70_246_400
# The paper's alpha^2 values for the alpha sweep (its code: linspace(0.99, 0.5, 5); Fig. 10).
PAPER_ALPHA2 = (0.99, 0.8675, 0.745, 0.6225, 0.5)


def _apply(denoiser, x: torch.Tensor, sigma: float, batch_size: int = 512) -> torch.Tensor:
    """D(x, sigma) in batches under inference mode."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out.append(denoiser(x[i:i + batch_size], sigma))
    return torch.cat(out)



# --------------------------------------------------------------------------- linearity

@dataclass
class Pairs:
    """Fixed pairs of inputs for the linearity score: x_i(s) = c_i + s e_i, with the clean images
    c_1, c_2 and the unit noises e_1, e_2 the same at every noise level s (paper.md §5.1).
    With ``pure_noise`` the clean parts are zero: x_i(s) = s e_i (the paper code's "choice 1")."""

    c1: torch.Tensor
    c2: torch.Tensor
    e1: torch.Tensor
    e2: torch.Tensor

    @classmethod
    def from_images(cls, x_clean: torch.Tensor, n_pairs: int, seed: int = 0,
                    pure_noise: bool = False) -> "Pairs":
        """Images 0..n-1 and n..2n-1 of a seeded permutation of ``x_clean`` and fixed noises."""
        as_images(x_clean, "x_clean")
        positive_int(n_pairs, "n_pairs")
        if 2 * n_pairs > len(x_clean):
            raise ValueError(f"{n_pairs} pairs need {2 * n_pairs} images, x_clean has {len(x_clean)}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x_clean), generator=g)[:2 * n_pairs]
        c = x_clean[idx.to(x_clean.device)]
        e = torch.randn(c.shape, generator=g, dtype=torch.float32).to(c.device, c.dtype)
        if pure_noise:
            c = torch.zeros_like(c)
        return cls(c[:n_pairs], c[n_pairs:], e[:n_pairs], e[n_pairs:])

    def at(self, sigma: float):
        return self.c1 + sigma * self.e1, self.c2 + sigma * self.e2


def linearity_curves(denoiser, pairs: Pairs, sigmas, alphas=(2 ** -0.5,), batch_size: int = 512) -> torch.Tensor:
    """Linearity score (paper eq. 11) of ``denoiser`` at each sigma, for each mixing weight alpha
    (beta = sqrt(1 - alpha^2), so the mixed input has noise level sigma too).

    Returns a float64 tensor (len(alphas), len(sigmas)) of mean |cos(D(a x1 + b x2), a D(x1) + b D(x2))|.
    D(x1) and D(x2) are computed once per sigma and shared by every alpha.
    """
    alphas = [float(a) for a in alphas]
    if not alphas or any(not 0 < a <= 1 for a in alphas):
        raise ValueError(f"alphas must lie in (0, 1], got {alphas}")
    sig = as_sigma(torch.as_tensor(sigmas, dtype=torch.float64).flatten(), len(sigmas))
    out = torch.zeros(len(alphas), len(sig), dtype=torch.float64)
    for j, s in enumerate(sig.tolist()):
        x1, x2 = pairs.at(s)
        d1 = flat64(_apply(denoiser, x1, s, batch_size))
        d2 = flat64(_apply(denoiser, x2, s, batch_size))
        for i, a in enumerate(alphas):
            b = math.sqrt(max(0.0, 1.0 - a * a))
            mixed = flat64(_apply(denoiser, a * x1 + b * x2, s, batch_size))
            cos = torch.nn.functional.cosine_similarity(mixed, a * d1 + b * d2, dim=1, eps=1e-30)
            out[i, j] = float(cos.abs().mean())
    return out


# --------------------------------------------------------------------------- training coverage

def training_draws_above(sigma: float, images_seen: int) -> float:
    """Expected number of training draws with noise level above ``sigma`` for a network that saw
    ``images_seen`` training images under EDM's ln s ~ N(P_mean, P_std^2) (paper.md §2.3)."""
    s = float(as_sigma(sigma, 1)[0])
    positive_int(images_seen, "images_seen")
    z = (math.log(s) - edm.P_MEAN) / edm.P_STD
    return images_seen * 0.5 * math.erfc(z / math.sqrt(2))


def trained_sigmas(sigmas, images_seen: int, reference_sigma: float = PAPER_UNDERTRAINED_SIGMA,
                   reference_images: int = PAPER_IMAGES_SEEN) -> list:
    """For each sigma: did the network see at least as many training draws above it as the paper's
    networks saw above ``reference_sigma``, where the paper reports them under-trained?"""
    need = training_draws_above(reference_sigma, reference_images)
    return [training_draws_above(float(s), images_seen) >= need
            for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]


# --------------------------------------------------------------------------- memorization

def memorization(denoiser, x_train: torch.Tensor, n_samples: int, seed: int = 0, steps: int = 10,
                 threshold: float = MEMORIZED_THRESHOLD) -> dict:
    """Sample ``denoiser`` from ``n_samples`` seeded noises (``steps``-step Euler, paper eq. 4) and
    measure how many samples are copies of ``x_train``.

    Returns dict(samples, x_T, fraction (NN ratio < 1/3), gl (paper eq. 14), memorizing (fraction >
    ``threshold``)).
    """
    as_images(x_train, "x_train")
    positive_int(n_samples, "n_samples")
    sigmas = edm.sigma_steps(steps)
    g = torch.Generator().manual_seed(seed)
    x_T = (sigmas[0] * torch.randn(n_samples, *x_train.shape[1:], generator=g, dtype=torch.float64))
    x_T = x_T.to(x_train.device, x_train.dtype)
    samples = edm.sample(denoiser, x_T, sigmas).cpu()
    train = x_train.cpu()
    fraction = metrics.memorized_fraction(samples, train)
    return dict(samples=samples, x_T=x_T, fraction=fraction, gl=metrics.generalization_score(samples, train),
                memorizing=bool(fraction > threshold))


# --------------------------------------------------------------------------- distillation

class TeacherRecorder:
    """Wraps a denoiser and keeps every (input, output) pair it is called with (flattened)."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.inputs, self.outputs = [], []

    def __call__(self, x, sigma):
        out = self.denoiser(x, sigma)
        self.inputs.append(x.reshape(len(x), -1).detach().to(torch.float32).clone())
        self.outputs.append(out.reshape(len(out), -1).detach().to(torch.float32).clone())
        return out

    def pool(self):
        """(inputs, outputs), each (n, d) float32, and forget them."""
        y, t = torch.cat(self.inputs), torch.cat(self.outputs)
        self.inputs, self.outputs = [], []
        return y, t


def adam_on_pool(y: torch.Tensor, t: torch.Tensor, sigma: float, epochs: int, batch_size: int = 256,
                 lr: float | None = None, seed: int = 0, W_ref: torch.Tensor | None = None,
                 shape=None) -> AdamDistillation:
    """The paper's Adam recipe (App. C) on a fixed pool of (noisy input ``y``, teacher output ``t``)
    pairs: :func:`utils.distill.fit_affine_adam_pool` (zero init, inputs / sqrt(d), MSE, Adam, a fresh
    permutation of the pool each epoch; ``lr`` defaults to the paper's per-sigma rate)."""
    return fit_affine_adam_pool(y, t, sigma, epochs, batch_size=batch_size, lr=lr, seed=seed,
                                W_ref=W_ref, shape=shape)


@dataclass
class Distillation:
    """The closed-form affine fits D_L at each sigma of a grid (and, optionally, Adam's record)."""

    sigmas: list
    fits: list                                    # AffineDenoiser per sigma
    n_inputs: int                                 # noisy inputs per fit
    adam: list = field(default_factory=list)      # AdamDistillation per sigma (when asked for)

    @property
    def denoiser(self) -> PerSigmaDenoiser:
        """The 10 (or so) maps as one denoiser that can drive ``utils.edm.sample`` on the same grid."""
        return PerSigmaDenoiser(self.sigmas, self.fits)

    @property
    def weights(self) -> list:
        return [f.W for f in self.fits]


def matched_n_noise(n_inputs: int, n_images: int) -> int:
    """Noise draws per image so that ``n_images`` images give at least ``n_inputs`` noisy inputs."""
    positive_int(n_inputs, "n_inputs")
    positive_int(n_images, "n_images")
    return -(-n_inputs // n_images)


def distill_grid(denoiser, x_clean: torch.Tensor, sigmas, n_noise: int, seed: int = 0,
                 adam_epochs: int | None = None, W_ref=None, adam_batch_size: int = 256) -> Distillation:
    """Closed-form linear distillation (``utils.distill.fit_affine``) of ``denoiser`` at each sigma,
    on ``x_clean`` with ``n_noise`` noise draws per image (the noise seed differs per sigma).

    With ``adam_epochs`` the paper's Adam recipe also runs at each sigma on the very pairs the closed
    form was fitted on (:func:`adam_on_pool`); ``W_ref(sigma)`` (e.g. ``D_G.weight``) gives the
    matrix its weight error is measured against. The pool is dropped after each sigma.
    """
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    if adam_epochs is not None and W_ref is None:
        raise ValueError("adam_epochs needs W_ref, a function sigma -> reference weight matrix")
    rec = TeacherRecorder(denoiser)
    fits, adam = [], []
    for i, s in enumerate(sig):
        fits.append(fit_affine(rec, x_clean, s, n_noise=n_noise, seed=seed + 1000 * i))
        y, t = rec.pool()
        if adam_epochs is not None:
            adam.append(adam_on_pool(y, t, s, adam_epochs, batch_size=adam_batch_size, seed=seed + i,
                                     W_ref=W_ref(s), shape=x_clean.shape[1:]))
        del y, t
    return Distillation(sig, fits, len(x_clean) * n_noise, adam)


def weight_errors(fits, reference_weight, sigmas) -> list:
    """NMSE(W_L, W_ref(sigma)) = ||W_L - W_ref||_F / ||W_ref||_F at each sigma."""
    return [metrics.weight_nmse(f.W, reference_weight(float(s))) for f, s in zip(fits, sigmas)]


# --------------------------------------------------------------------------- RMSE between denoisers

def rmse_curves(pairs: dict, x_clean: torch.Tensor, sigmas, seed: int = 0, batch_size: int = 512) -> dict:
    """``{label: (D1, D2)}`` -> ``{label: [RMSE(D1, D2) at each sigma]}`` (paper eq. 10).

    Inputs are x_clean + sigma * eps with one fixed eps per image (seeded), the same at every
    sigma; every distinct denoiser is evaluated once per sigma.
    """
    as_images(x_clean, "x_clean")
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x_clean.shape, generator=g, dtype=torch.float32).to(x_clean.device, x_clean.dtype)
    out = {label: [] for label in pairs}
    for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist():
        y = x_clean + s * eps
        cache = {}

        def outputs(D):
            if id(D) not in cache:
                cache[id(D)] = flat64(_apply(D, y, s, batch_size))
            return cache[id(D)]

        for label, (d1, d2) in pairs.items():
            diff = outputs(d1) - outputs(d2)
            out[label].append(float(diff.pow(2).mean(1).sqrt().mean()))
    return out


# --------------------------------------------------------------------------- singular vectors

def alignment_summary(W: torch.Tensor, W_ref: torch.Tensor, k: int) -> dict:
    """How well the top-k left singular vectors of W match those of W_ref.

    ``diagonal``: mean over i <= k of |u_i . u_ref_i| (1 when the vectors match one by one);
    ``subspace``: ||U_k^T U_ref,k||_F^2 / k, the mean squared cosine of the principal angles between
    the two k-dimensional subspaces (1 when they span the same subspace, whatever the order inside it;
    the meaningful number where singular values are nearly equal and single vectors are ambiguous).
    """
    A = metrics.singular_vector_alignment(W, W_ref, k)
    return dict(matrix=A, diagonal=float(A.diagonal().mean()), subspace=float(A.pow(2).sum() / k))


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


# --------------------------------------------------------------------------- sampling

def sample_all(denoisers: dict, x_T: torch.Tensor, sigmas) -> dict:
    """``{label: D}`` -> ``{label: (final samples, trajectory)}`` from the same initial noise ``x_T``
    (Euler, paper eq. 4); the trajectory is the list of denoiser outputs D(x_i; s_i), one per step."""
    return {label: edm.sample(D, x_T, sigmas, return_trajectory=True) for label, D in denoisers.items()}


def paired_rmse(finals: dict) -> dict:
    """Mean paired pixel RMSE between the final samples of every two denoisers (same noises)."""
    labels = list(finals)
    return {(a, b): metrics.sample_similarity(finals[a].cpu(), finals[b].cpu())["rmse"]
            for i, a in enumerate(labels) for b in labels[i + 1:]}
