"""Every number the book reports about denoisers, samples and weights (paper.md §5).

Denoiser metrics take inputs ``x`` that are already noisy (the denoiser's inputs) and evaluate
under ``torch.inference_mode()`` in batches.
"""
from __future__ import annotations

import torch

from .checks import as_images, as_sigma, positive_int, flat64


def _apply(denoiser, x: torch.Tensor, sigma, batch_size: int = 256) -> torch.Tensor:
    """D(x, sigma) in batches under inference mode (sigma: float or (B,) tensor)."""
    s = as_sigma(sigma, x.shape[0])
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            out.append(denoiser(x[i:i + batch_size], s[i:i + batch_size].to(x.dtype)))
    return torch.cat(out)



def linearity_score(denoiser, x1: torch.Tensor, x2: torch.Tensor, sigma, alpha: float = 2 ** -0.5,
                    beta: float = 2 ** -0.5) -> float:
    """Paper eq. (11): mean over pairs of |cos(D(a x1 + b x2), a D(x1) + b D(x2))|.

    A linear map scores exactly 1; an affine map with a bias scores below 1 when a + b != 1.
    """
    as_images(x1, "x1")
    as_images(x2, "x2")
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    mixed = flat64(_apply(denoiser, alpha * x1 + beta * x2, sigma))
    combo = alpha * flat64(_apply(denoiser, x1, sigma)) + beta * flat64(_apply(denoiser, x2, sigma))
    cos = torch.nn.functional.cosine_similarity(mixed, combo, dim=1, eps=1e-30)
    return float(cos.abs().mean())


def rmse(d1, d2, x: torch.Tensor, sigma) -> float:
    """Paper eq. (10): mean over inputs of sqrt(||D1(x) - D2(x)||^2 / d)."""
    as_images(x)
    diff = flat64(_apply(d1, x, sigma)) - flat64(_apply(d2, x, sigma))
    return float(diff.pow(2).mean(1).sqrt().mean())


def nmse(d1, d2, x: torch.Tensor, sigma) -> float:
    """Paper App. G.5: mean over inputs of ||D1(x) - D2(x)|| / ||D1(x)|| (a ratio of norms)."""
    as_images(x)
    a = flat64(_apply(d1, x, sigma))
    b = flat64(_apply(d2, x, sigma))
    return float(((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-30)).mean())


def nearest_distances(queries: torch.Tensor, train: torch.Tensor, k: int = 2, chunk_size: int = 4096):
    """Euclidean distances (float64) from each query to its ``k`` nearest training images and their
    indices, streamed over chunks of the training set. Returns (dist (Q, k), index (Q, k))."""
    as_images(queries, "queries")
    as_images(train, "train")
    positive_int(k, "k")
    if queries[0].numel() != train[0].numel():
        raise ValueError(f"queries have d = {queries[0].numel()} but train has d = {train[0].numel()}")
    if k > len(train):
        raise ValueError(f"k = {k} is larger than the {len(train)} training images")
    q = flat64(queries)
    dev = q.device
    best_d = torch.zeros((len(q), 0), dtype=torch.float64, device=dev)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=dev)
    flat = train.reshape(len(train), -1)
    for start in range(0, len(flat), chunk_size):
        y = flat[start:start + chunk_size].to(dev, torch.float64)
        d = torch.cdist(q, y)          # float64 matmul path: candidates only, see the exact recompute below
        cand_d = torch.cat([best_d, d], 1)
        cand_i = torch.cat([best_i, torch.arange(start, start + len(y), device=dev).expand(len(q), -1)], 1)
        top = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False)
        best_d, best_i = top.values, cand_i.gather(1, top.indices)
    # recompute the winners' distances from explicit differences: exact 0 for copies of training images
    exact = (q[:, None, :] - flat[best_i.to(flat.device)].to(dev, torch.float64)).norm(dim=2)
    order = exact.argsort(dim=1)
    return exact.gather(1, order), best_i.gather(1, order)


def generalization_score(samples: torch.Tensor, train: torch.Tensor) -> float:
    """Paper eq. (14): GL = mean over samples of ||x - NN(x)|| / ||x|| (paper: > 0.6 generalizes)."""
    dist, _ = nearest_distances(samples, train, k=1)
    norms = flat64(samples).norm(dim=1).clamp_min(1e-30).to(dist.device)
    return float((dist[:, 0] / norms).mean())


def nn_ratio(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Per sample ||x - NN1|| / ||x - NN2||; a sample with ratio < 1/3 counts as memorized."""
    dist, _ = nearest_distances(samples, train, k=2)
    return dist[:, 0] / dist[:, 1].clamp_min(1e-30)


def memorized_fraction(samples: torch.Tensor, train: torch.Tensor, threshold: float = 1 / 3) -> float:
    """Fraction of samples whose nearest-neighbour ratio is below ``threshold``."""
    return float((nn_ratio(samples, train) < threshold).double().mean())


def weight_nmse(W: torch.Tensor, W_ref: torch.Tensor) -> float:
    """||W - W_ref||_F / ||W_ref||_F (paper Fig. 4 left)."""
    if W.shape != W_ref.shape or W.ndim != 2:
        raise ValueError(f"W and W_ref must be matrices of one shape, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    W, W_ref = W.to(torch.float64), W_ref.to(torch.float64)
    return float((W - W_ref).norm() / W_ref.norm().clamp_min(1e-300))


def singular_vector_alignment(W: torch.Tensor, W_ref: torch.Tensor, k: int) -> torch.Tensor:
    """The k x k matrix |U_W[:, :k]^T U_ref[:, :k]| of absolute cosines between the top-k left
    singular vectors of ``W`` and ``W_ref`` (paper Fig. 4 right; absolute value for sign ambiguity)."""
    positive_int(k, "k")
    if W.shape != W_ref.shape or W.ndim != 2:
        raise ValueError(f"W and W_ref must be matrices of one shape, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    if k > min(W.shape):
        raise ValueError(f"k = {k} exceeds the matrix size {min(W.shape)}")
    U = torch.linalg.svd(W.to(torch.float64))[0][:, :k]
    U_ref = torch.linalg.svd(W_ref.to(torch.float64))[0][:, :k]
    return (U.T @ U_ref).abs()


def sample_similarity(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Paired similarity of two sample batches from the same noises: mean cosine and pixel RMSE."""
    as_images(a, "a")
    as_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa, fb = flat64(a), flat64(b)
    cos = torch.nn.functional.cosine_similarity(fa, fb, dim=1, eps=1e-30)
    return {"cosine": float(cos.mean()), "rmse": float((fa - fb).pow(2).mean(1).sqrt().mean())}
