"""Linear distillation: the best affine map D_L(x) = W x + b to a denoiser at one noise level.

Objective (paper eq. 9): min_{W,b} E_{x, eps} ||W(x + s eps) + b - D(x + s eps; s)||^2 over clean
images x from ``x_clean`` (held-out images in the paper's code, paper.md §4.4).

* :func:`fit_affine` solves it in closed form: W = C_{Dy} C_{yy}^{-1}, b = mean(D) - W mean(y), with
  the covariances accumulated in float64 over the noisy inputs y = x + s eps (one Cholesky solve).
* :func:`fit_affine_adam` is the paper's recipe (App. C, Algorithm 1): zero-initialised
  ``nn.Linear(d, d)`` on inputs scaled by 1/sqrt(d), mean-squared error, Adam, batch 256, fresh noise
  every batch. It is only needed for the "error vs epoch" curves (paper Fig. 4 left).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .checks import as_images, as_sigma, positive_int
from .denoisers import AffineDenoiser

# The paper's per-sigma Adam learning rates (FFHQ EDM-VP, paper.md §6.2).
PAPER_ADAM_LR = {80.0: 5e-5, 42.4152: 5e-5, 21.1087: 5e-5, 9.7232: 5e-5, 4.0661: 5e-5,
                 1.5017: 5e-4, 0.47: 5e-4, 0.1166: 5e-3, 0.0204: 5e-2, 0.002: 5e-2}


def paper_lr(sigma: float) -> float:
    """The paper's learning rate for the grid sigma nearest to ``sigma`` in log scale."""
    s = float(as_sigma(sigma, 1)[0])
    return min(PAPER_ADAM_LR.items(), key=lambda kv: abs(math.log(kv[0]) - math.log(s)))[1]


def _noisy_batches(x_clean, sigma, n_noise, seed, batch_size):
    """Yield batches of noisy inputs y = x + s eps covering every clean image n_noise times
    (batches run across the repetitions, so a small x_clean still gives full batches)."""
    g = torch.Generator().manual_seed(seed)
    total = len(x_clean) * n_noise
    for start in range(0, total, batch_size):
        x = x_clean[torch.arange(start, min(start + batch_size, total)) % len(x_clean)]
        eps = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
        yield x + sigma * eps


def fit_affine(denoiser, x_clean: torch.Tensor, sigma: float, n_noise: int = 16, seed: int = 0,
               batch_size: int = 512, ridge: float = 0.0) -> AffineDenoiser:
    """Closed-form least-squares affine fit of ``denoiser`` at noise level ``sigma``.

    The fit uses N * n_noise noisy inputs, which must exceed d. It is exact (up to round-off) when
    the teacher is itself affine. ``ridge`` adds ridge * I to C_yy (0 by default).
    """
    as_images(x_clean, "x_clean")
    positive_int(n_noise, "n_noise")
    positive_int(batch_size, "batch_size")
    sigma = float(as_sigma(sigma, 1)[0])
    n, d = len(x_clean), x_clean[0].numel()
    if n * n_noise <= d:
        raise ValueError(f"fit_affine needs more noisy inputs than dimensions: len(x_clean) * n_noise = "
                         f"{n * n_noise} <= d = {d}; raise n_noise to at least {d // n + 1}")
    shift = x_clean.reshape(n, -1).to(torch.float64).mean(0).to(x_clean.device)   # centring for accuracy
    s_y = torch.zeros(d, dtype=torch.float64, device=x_clean.device)
    s_t = torch.zeros_like(s_y)
    s_yy = torch.zeros(d, d, dtype=torch.float64, device=x_clean.device)
    s_ty = torch.zeros_like(s_yy)
    count = 0
    with torch.inference_mode():
        for y in _noisy_batches(x_clean, sigma, n_noise, seed, batch_size):
            t = denoiser(y, sigma).reshape(len(y), -1).to(torch.float64) - shift
            yf = y.reshape(len(y), -1).to(torch.float64) - shift
            s_y += yf.sum(0)
            s_t += t.sum(0)
            s_yy += yf.T @ yf
            s_ty += t.T @ yf
            count += len(y)
    m_y, m_t = s_y / count, s_t / count
    c_yy = s_yy / count - torch.outer(m_y, m_y)
    c_ty = s_ty / count - torch.outer(m_t, m_y)
    if ridge:
        c_yy = c_yy + ridge * torch.eye(d, dtype=torch.float64, device=c_yy.device)
    chol, info = torch.linalg.cholesky_ex(c_yy)
    if info:
        raise ValueError(f"the noisy-input covariance is singular at sigma={sigma:g}; pass ridge > 0")
    W = torch.cholesky_solve(c_ty.T, chol).T                 # W C_yy = C_ty (C_yy symmetric)
    b = m_t - W @ m_y + shift - W @ shift
    return AffineDenoiser(W.cpu(), b.cpu(), x_clean.shape[1:])


@dataclass
class AdamDistillation:
    """Result of :func:`fit_affine_adam`: the final D_L and the per-epoch record."""

    denoiser: AffineDenoiser
    lr: float
    losses: list = field(default_factory=list)          # mean MSE per epoch
    weights: list = field(default_factory=list)         # effective W (float32) after each epoch, [0] = init
    weight_errors: list = field(default_factory=list)   # ||W - W_ref||_F/||W_ref||_F per epoch, [0] = 1


def _adam_affine(epoch_batches, d: int, sigma: float, epochs: int, lr: float, W_ref, keep_weights: bool,
                 shape, device, desc: str, progress: bool) -> AdamDistillation:
    """The paper's optimiser loop, shared by both Adam variants: zero-initialised W and b, inputs
    scaled by 1/sqrt(d), mean-squared error, Adam with default betas. ``epoch_batches()`` yields one
    epoch of (noisy inputs y, teacher outputs t), each (b, d) float32 on ``device``."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if W_ref is not None and W_ref.shape != (d, d):
        raise ValueError(f"W_ref must be ({d}, {d}), got {tuple(W_ref.shape)}")
    scale = 1.0 / math.sqrt(d)
    W = torch.zeros(d, d, requires_grad=True, device=device)
    b = torch.zeros(d, requires_grad=True, device=device)
    opt = torch.optim.Adam([W, b], lr=lr)
    result = AdamDistillation(denoiser=None, lr=lr)
    ref = None if W_ref is None else W_ref.to(device, torch.float64)

    def record():
        W_eff = W.detach().to(torch.float64) * scale
        if keep_weights:
            result.weights.append(W_eff.to(torch.float32).cpu().clone())
        if ref is not None:
            result.weight_errors.append(float((W_eff - ref).norm() / ref.norm().clamp_min(1e-300)))

    record()
    for _ in tqdm(range(epochs), disable=not progress, desc=desc, mininterval=10):
        total, batches = 0.0, 0
        for y, target in epoch_batches():
            loss = torch.nn.functional.mse_loss((y * scale) @ W.T + b, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
        result.losses.append(total / batches)
        record()
    result.denoiser = AffineDenoiser((W.detach() * scale).to(torch.float64).cpu(),
                                     b.detach().to(torch.float64).cpu(), shape)
    return result


def fit_affine_adam(denoiser, x_clean: torch.Tensor, sigma: float, epochs: int = 100, batch_size: int = 256,
                    lr: float | None = None, seed: int = 0, W_ref: torch.Tensor | None = None,
                    keep_weights: bool = True, progress: bool = False) -> AdamDistillation:
    """The paper's Adam distillation (zero init, inputs / sqrt(d), MSE, Adam, fresh noise per batch).

    ``lr`` defaults to the paper's per-sigma value (:data:`PAPER_ADAM_LR`). With ``W_ref`` the weight
    error is recorded every epoch ([0] = before training); ``keep_weights`` keeps a float32 copy of W
    per epoch (d^2 each). Every batch calls the teacher on fresh noise, as the paper does.
    """
    as_images(x_clean, "x_clean")
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    sigma = float(as_sigma(sigma, 1)[0])
    lr = paper_lr(sigma) if lr is None else float(lr)
    d = x_clean[0].numel()
    g = torch.Generator().manual_seed(seed)

    def epoch_batches():
        for i in range(0, len(x_clean), batch_size):
            x = x_clean[i:i + batch_size].to(torch.float32)
            y = x + sigma * torch.randn(x.shape, generator=g).to(x.device)
            with torch.inference_mode():
                target = denoiser(y, sigma).reshape(len(y), -1).to(torch.float32)
            yield y.reshape(len(y), -1), target.clone()     # clone: autograd refuses inference tensors

    return _adam_affine(epoch_batches, d, sigma, epochs, lr, W_ref, keep_weights, x_clean.shape[1:],
                        x_clean.device, f"Adam distillation sigma={sigma:.3g}", progress)


def fit_affine_adam_pool(y: torch.Tensor, t: torch.Tensor, sigma: float, epochs: int, batch_size: int = 256,
                         lr: float | None = None, seed: int = 0, W_ref: torch.Tensor | None = None,
                         shape=None, keep_weights: bool = False) -> AdamDistillation:
    """The paper's Adam recipe on a fixed pool of (noisy input ``y``, teacher output ``t``) pairs,
    each (n, d), instead of fresh teacher calls: an epoch is one pass over the pool in a fresh random
    order. Used where the teacher is too slow to call ~10^6 times (e.g. the same pairs a closed-form
    fit used)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 2 or not isinstance(t, torch.Tensor) or t.shape != y.shape:
        raise ValueError(f"y and t must be (n, d) tensors of one shape, got {tuple(getattr(y, 'shape', ()))} "
                         f"and {tuple(getattr(t, 'shape', ()))}")
    positive_int(epochs, "epochs")
    positive_int(batch_size, "batch_size")
    sigma = float(as_sigma(sigma, 1)[0])
    lr = paper_lr(sigma) if lr is None else float(lr)
    n, d = y.shape
    y32, t32 = y.to(torch.float32), t.to(torch.float32)
    g = torch.Generator().manual_seed(seed)

    def epoch_batches():
        perm = torch.randperm(n, generator=g).to(y.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            yield y32[idx], t32[idx]

    return _adam_affine(epoch_batches, d, sigma, epochs, lr, W_ref, keep_weights, shape or (1, 1, d),
                        y.device, f"Adam distillation (pool) sigma={sigma:.3g}", False)
