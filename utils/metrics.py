"""Every number the book reports about denoisers, samples and weights (paper.md §5), each defined once.

Denoisers are evaluated through :func:`utils.denoisers.apply` (batched, under inference mode,
outputs checked) on the book's one convention for noisy inputs, :class:`utils.data.NoisyInputs`
(x_clean + sigma * eps, one eps per image shared by every sigma and every model).

=============================  ==================================================================
denoisers                      :func:`rmse`, :func:`nmse` (one sigma); :func:`rmse_curves` (paper
                               eq. 10 against sigma); :func:`explained_variance_curves` (Wang &
                               Vastola's EV against sigma); :func:`linearity_score`,
                               :func:`linearity_curves` (eq. 11 and eq. 12); :func:`jacobian`
                               (a denoiser's d x d Jacobian at one input)
samples                        :func:`sample_stats` (GL score eq. 14, nearest-neighbour ratio, one
                               search), :func:`generalization_score`, :func:`nn_ratio`,
                               :func:`memorized_fraction`, :func:`image_rmse`, :func:`r2`,
                               :func:`sample_similarity`, :func:`nearest_distances`
weights                        :func:`weight_nmse`, :func:`singular_vector_alignment`,
                               :func:`singular_alignment`
Jacobians                      :func:`jacobian` (dD/dx by autograd, paper App. H),
                               :func:`effective_rank` (singular values to a share of the energy)
statistics                     :func:`paired_difference`, :func:`loglog_fit`, :func:`rank_correlation`,
                               :func:`trend` (a stated trend over a whole ladder, :data:`TREND_MIN`)
=============================  ==================================================================
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .checks import as_images, as_sigma, flat64, positive_int, progress_bar, sigma_list
from .data import NoisyInputs
from .denoisers import apply

MEMORIZED_RATIO = 1 / 3          # NN ratio below which a sample counts as a copy (Gu et al., Yoon et al.)
# A model *memorizes* when more than this share of its samples are copies (``SampleStats.memorized``):
# the book's one split of a ladder into memorizing and generalizing models (chapters 2-4).
MEMORIZING_FRACTION = 0.5
# Two denoisers are "close" when the RMSE between their outputs (eq. 10) is below this: the paper's
# threshold (Fig. 2, App. F.2), used by every chapter that tests closeness.
PAPER_CLOSE = 0.05
# A trend the paper states ("grows with N", "rises with width") holds over a ladder when Spearman's
# rank correlation reaches this (:func:`trend`): rho = 0.8 lets one pair of neighbours of a 4-point
# sweep, or up to two of a 5-point ladder, be out of order (sampling noise), never a reversal; on a
# 3-point ladder it asks for a monotone sequence.
TREND_MIN = 0.8


# --------------------------------------------------------------------------- denoisers

def rmse(d1, d2, x: torch.Tensor, sigma) -> float:
    """Paper eq. (10) at one noise level: mean over the (already noisy) inputs ``x`` of
    sqrt(||D1(x) - D2(x)||^2 / d)."""
    diff = flat64(apply(d1, x, sigma)) - flat64(apply(d2, x, sigma))
    return float(diff.pow(2).mean(1).sqrt().mean())


def nmse(d1, d2, x: torch.Tensor, sigma) -> float:
    """Paper App. G.5 at one noise level: mean over inputs of ||D1(x) - D2(x)|| / ||D1(x)|| (a ratio
    of norms, not squared)."""
    a = flat64(apply(d1, x, sigma))
    b = flat64(apply(d2, x, sigma))
    return float(((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-30)).mean())


METRICS = ("rmse", "nmse")


def _pair_outputs(pairs: dict, x_clean: torch.Tensor, sigmas, seed: int, batch_size: int):
    """Yield ``(j, sigma, label, a, b)``: the flattened float64 outputs (on the CPU) of each pair
    ``{label: (D1, D2)}`` on ``NoisyInputs(x_clean, seed).at(sigma)``, for every sigma in turn; each
    distinct denoiser is evaluated once per sigma. The one loop behind every curve over sigma that
    compares two denoisers on the book's noisy inputs."""
    if not isinstance(pairs, dict) or not pairs:
        raise ValueError("pairs must be a non-empty {label: (D1, D2)} dict")
    noisy = NoisyInputs(x_clean, seed)
    for j, s in enumerate(sigma_list(sigmas)):
        x = noisy.at(s)
        cache = {}

        def outputs(D):
            if id(D) not in cache:
                cache[id(D)] = flat64(apply(D, x, s, batch_size)).cpu()
            return cache[id(D)]

        for label, (d1, d2) in pairs.items():
            yield j, s, label, outputs(d1), outputs(d2)


def rmse_curves(pairs: dict, x_clean: torch.Tensor, sigmas, seed: int = 0, per_input: bool = False,
                metric: str = "rmse", batch_size: int = 512) -> dict:
    """``{label: (D1, D2)}`` -> ``{label: values}``: the distance between two denoisers at every sigma
    (paper eq. 10, or the NMSE of App. G.5 with ``metric="nmse"``).

    Inputs are ``NoisyInputs(x_clean, seed).at(sigma)``: the same noisy images for every pair, every
    model and every call with this seed, so two curves can be compared input by input. Each distinct
    denoiser is evaluated once per sigma. Values are numpy arrays (n_sigmas,), or with
    ``per_input`` (n_inputs, n_sigmas) (for :func:`paired_difference` and band means per input).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    n_sig = len(sigma_list(sigmas))
    out = {}
    for j, _, label, a, b in _pair_outputs(pairs, x_clean, sigmas, seed, batch_size):
        if metric == "rmse":
            v = (a - b).pow(2).mean(1).sqrt()
        else:
            v = (a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-30)
        out.setdefault(label, np.zeros((len(v), n_sig)))[:, j] = v.numpy()
    return out if per_input else {label: v.mean(0) for label, v in out.items()}


def jacobian(denoiser, x: torch.Tensor, sigma, chunk_size: int | None = None, rows=None) -> torch.Tensor:
    """The Jacobian J[i, j] = dD(x; sigma)_i / dx_j of a denoiser (paper App. H), by reverse-mode
    autodiff: one vector-Jacobian product per output pixel, ``chunk_size`` of them at a time to bound
    memory (``None``: all at once). Row i is output pixel i's sensitivity field; for an affine denoiser
    W x + b it is W at every x. Returned in float64 on the CPU.

    ``x`` is one image (C, H, W) -> J (d, d), or a batch (B, C, H, W) -> (B, d, d), one Jacobian per
    input, all from one pass: the batch's outputs are summed before differentiating, which is exact
    because a denoiser treats its inputs independently (every denoiser of the book does: the networks
    use GroupNorm, never batch statistics). ``sigma``: a float or a (B,) tensor. ``rows`` (flat output
    indices) computes only those rows: (r, d) or (B, r, d). The denoiser runs in x's dtype: pass float64
    inputs to a closed form for float64-exact Jacobians (D_G gives its weight W_G(sigma), D_M its
    posterior covariance / sigma^2); a float32 network gives float32 precision. Runs outside inference
    mode (autodiff needs the graph)."""
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as D(x, sigma), got {type(denoiser).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
        raise ValueError(f"x must be one image (C, H, W) or a batch (B, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    single = x.ndim == 3
    xb = as_images((x[None] if single else x).detach(), "x")
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size")
    shape, b, d = tuple(xb.shape), xb.shape[0], xb[0].numel()
    as_sigma(sigma.detach() if isinstance(sigma, torch.Tensor) else sigma, b)      # checked: finite, > 0
    idx = torch.arange(d) if rows is None else torch.as_tensor(rows, dtype=torch.long).flatten()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= d:
        raise ValueError(f"rows must be flat output indices in [0, {d}), got {idx.tolist()[:8]}")

    def summed(v):                       # (B * d,) -> (d,): the batch's outputs summed
        out = denoiser(v.reshape(shape), sigma)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
            raise ValueError(f"denoiser returned {getattr(out, 'shape', type(out).__name__)} for an input of "
                             f"shape {shape}; a denoiser D(x, sigma) must return x's shape")
        return out.reshape(b, -1).sum(0)

    with torch.inference_mode(False), torch.enable_grad():
        out, vjp = torch.func.vjp(summed, xb.reshape(b, -1).clone())
        basis = torch.zeros(len(idx), d, dtype=out.dtype, device=out.device)
        basis[torch.arange(len(idx)), idx.to(out.device)] = 1
        J = torch.func.vmap(vjp, chunk_size=chunk_size)(basis)[0]          # (r, B, d)
    J = J.detach().to("cpu", torch.float64).transpose(0, 1).contiguous()
    if not bool(torch.isfinite(J).all()):
        raise ValueError("the Jacobian holds non-finite values (nan or inf)")
    return J[0] if single else J


def r2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image coefficient of determination of ``pred`` against ``target`` (float64, CPU):
    r^2 = 1 - ||t - p||^2 / ||t - mean(t)||^2 over the pixels of each image, mean(t) that image's pixel
    mean (Kamb & Ganguli's pixelwise r^2 between two images from the same noise; 1 for a perfect
    prediction, 0 for predicting t's mean grey, negative below). NaN for a constant target image."""
    as_images(pred, "pred")
    as_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = flat64(pred.detach().cpu()), flat64(target.detach().cpu())
    var = (t - t.mean(1, keepdim=True)).pow(2).sum(1)
    res = (t - p).pow(2).sum(1)
    return torch.where(var > 0, 1 - res / var.clamp_min(1e-300), torch.full_like(var, float("nan")))


def explained_variance_curves(pairs: dict, x_clean: torch.Tensor, sigmas, seed: int = 0, center=None,
                              batch_size: int = 512) -> dict:
    """``{label: (D, D_ref)}`` -> ``{label: EV}`` (numpy (n_sigmas,)): the fraction of D's output that
    D_ref explains at every sigma, Wang & Vastola's explained variance

        EV(D, D_ref)(sigma) = 1 - sum_i ||D(x_i) - D_ref(x_i)||^2 / sum_i ||D(x_i) - c||^2,

    a ratio of sums over the noisy inputs ``NoisyInputs(x_clean, seed).at(sigma)`` (the same inputs
    as :func:`rmse_curves`; each distinct denoiser is evaluated once per sigma, whatever the number of
    pairs it appears in). ``center`` c is 0 by default -- their definition, **not mean-centred**: D's
    output norm then includes the data mean, so EV is near 1 wherever D_ref gets the mean right. An
    image (C, H, W) (e.g. the training mean) gives the centred variant, which measures only the part of
    D's output that varies; a dict ``{label: image or None}`` gives each pair its own (a label it does
    not name: 0). EV = 1 when D_ref = D; it is negative when D_ref misses by more than D's own
    (centred) norm."""
    n_sig = len(sigma_list(sigmas))
    if not isinstance(pairs, dict) or not pairs:
        raise ValueError("pairs must be a non-empty {label: (D, D_ref)} dict")
    centers = center if isinstance(center, dict) else {label: center for label in pairs}
    unknown = sorted(set(centers) - set(pairs), key=str)
    if unknown:
        raise ValueError(f"center names labels that are not in pairs: {unknown}")
    flat = {}
    for label in pairs:
        c = centers.get(label)
        if c is not None:
            if not isinstance(c, torch.Tensor) or c.numel() != x_clean[0].numel():
                raise ValueError(f"center must be one image of x_clean's shape {tuple(x_clean.shape[1:])} (e.g. "
                                 f"the training mean), got {getattr(c, 'shape', type(c).__name__)} for {label!r}")
            c = c.detach().to(torch.float64).cpu().reshape(1, -1)
        flat[label] = c
    num = {label: np.zeros(n_sig) for label in pairs}
    den = {label: np.zeros(n_sig) for label in pairs}
    for j, _, label, a, b in _pair_outputs(pairs, x_clean, sigmas, seed, batch_size):
        c = flat[label]
        num[label][j] = float((a - b).pow(2).sum())
        den[label][j] = float((a if c is None else a - c).pow(2).sum())
    return {label: 1.0 - num[label] / np.maximum(den[label], 1e-300) for label in pairs}


def linearity_score(denoiser, x1: torch.Tensor, x2: torch.Tensor, sigma, alpha: float = 2 ** -0.5,
                    beta: float = 2 ** -0.5) -> float:
    """Paper eq. (11) at one noise level: mean over pairs of |cos(D(a x1 + b x2), a D(x1) + b D(x2))|
    for already-noisy inputs ``x1``, ``x2``. A linear map scores 1; an affine one with a bias scores
    below 1 when a + b != 1."""
    as_images(x1, "x1")
    as_images(x2, "x2")
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    for name, w in (("alpha", alpha), ("beta", beta)):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w):
            raise TypeError(f"{name} must be a finite number, got {type(w).__name__} {w!r}")
    return _linearity(denoiser, x1, x2, sigma, [(alpha, beta)], 512)[0][0]


def _linearity(denoiser, x1, x2, sigma, weights, batch_size):
    d1 = flat64(apply(denoiser, x1, sigma, batch_size))
    d2 = flat64(apply(denoiser, x2, sigma, batch_size))
    cos, err = [], []
    for a, b in weights:
        mixed = flat64(apply(denoiser, a * x1 + b * x2, sigma, batch_size))
        combo = a * d1 + b * d2
        cos.append(float(torch.nn.functional.cosine_similarity(mixed, combo, dim=1, eps=1e-30).abs().mean()))
        err.append(float(((mixed - combo).norm(dim=1) / mixed.norm(dim=1).clamp_min(1e-30)).mean()))
    return cos, err


def linearity_curves(denoiser, x_clean: torch.Tensor, sigmas, alphas=(2 ** -0.5,), seed: int = 0,
                     batch_size: int = 512, progress: bool = True) -> dict:
    """The linearity score over a grid of noise levels, for several mixing weights alpha
    (beta = sqrt(1 - alpha^2), so the mixed input has noise level sigma too).

    ``x_clean`` holds 2n clean images: pair i is (x_clean[i], x_clean[n + i]); the noisy inputs are
    ``NoisyInputs(x_clean, seed)``, fixed across sigma as in the paper's code (pass zeros for the
    code's pure-noise "choice 1"). Returns numpy arrays (len(alphas), len(sigmas)):
    ``"cosine"`` (eq. 11, mean |cos|) and ``"nmse"`` (eq. 12, mean ||D(mix) - combo|| / ||D(mix)||).
    D(x1) and D(x2) are computed once per sigma and shared by every alpha. ``progress``: a progress
    bar over the grid.
    """
    as_images(x_clean, "x_clean")
    if len(x_clean) < 2 or len(x_clean) % 2:
        raise ValueError(f"x_clean must hold an even number (2n >= 2) of images, got {len(x_clean)}")
    alphas = [float(a) for a in alphas]
    if not alphas or any(not 0 < a <= 1 for a in alphas):
        raise ValueError(f"alphas must lie in (0, 1], got {alphas}")
    weights = [(a, math.sqrt(max(0.0, 1.0 - a * a))) for a in alphas]
    noisy = NoisyInputs(x_clean, seed)
    n = len(x_clean) // 2
    sig = sigma_list(sigmas)
    cos = np.zeros((len(alphas), len(sig)))
    err = np.zeros_like(cos)
    for j, s in enumerate(progress_bar(sig, "linearity, per sigma", progress)):
        x = noisy.at(s)
        cos[:, j], err[:, j] = _linearity(denoiser, x[:n], x[n:], s, weights, batch_size)
    return {"cosine": cos, "nmse": err}


# --------------------------------------------------------------------------- samples

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


@dataclass
class SampleStats:
    """Nearest-neighbour statistics of a batch of samples against a training set (one search).

    ``gl``: the GL score, mean ||x - NN1(x)|| / ||x|| (paper eq. 14); ``memorized``: fraction of
    samples with ratio ||x - NN1|| / ||x - NN2|| < ``threshold``; per sample: ``ratio``,
    ``nn_index`` (index of NN1 in the training set), ``nn_dist`` (||x - NN1||), ``rel_dist``
    (||x - NN1|| / ||x||, whose mean is ``gl``) and ``nn_rmse`` (||x - NN1|| / sqrt(d), pixel RMSE).
    """

    gl: float
    memorized: float
    ratio: torch.Tensor
    nn_index: torch.Tensor
    nn_dist: torch.Tensor
    rel_dist: torch.Tensor
    nn_rmse: torch.Tensor
    threshold: float = MEMORIZED_RATIO

    def is_memorized(self) -> torch.Tensor:
        """Boolean mask of the samples that count as copies."""
        return self.ratio < self.threshold


def sample_stats(samples: torch.Tensor, train: torch.Tensor, threshold: float = MEMORIZED_RATIO) -> SampleStats:
    """GL score and nearest-neighbour-ratio memorization of ``samples`` against ``train`` from one
    exact k = 2 neighbour search on the CPU (with a single training image the ratio is NaN)."""
    as_images(samples, "samples")
    as_images(train, "train")
    if not (isinstance(threshold, (int, float)) and threshold > 0):
        raise ValueError(f"threshold must be a number > 0, got {threshold!r}")
    q, tr = samples.detach().cpu(), train.detach().cpu()
    dist, idx = nearest_distances(q, tr, k=min(2, len(tr)))
    norms = flat64(q).norm(dim=1).clamp_min(1e-30)
    ratio = dist[:, 0] / dist[:, 1].clamp_min(1e-30) if dist.shape[1] > 1 \
        else torch.full((len(q),), float("nan"), dtype=torch.float64)
    rel = dist[:, 0] / norms
    return SampleStats(gl=float(rel.mean()), memorized=float((ratio < threshold).double().mean()),
                       ratio=ratio, nn_index=idx[:, 0], nn_dist=dist[:, 0], rel_dist=rel,
                       nn_rmse=dist[:, 0] / math.sqrt(q[0].numel()), threshold=float(threshold))


def generalization_score(samples: torch.Tensor, train: torch.Tensor) -> float:
    """Paper eq. (14): GL = mean over samples of ||x - NN(x)|| / ||x|| (paper: > 0.6 generalizes, FFHQ)."""
    return sample_stats(samples, train).gl


def nn_ratio(samples: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Per sample ||x - NN1|| / ||x - NN2||; a sample with ratio < 1/3 counts as memorized."""
    return sample_stats(samples, train).ratio


def memorized_fraction(samples: torch.Tensor, train: torch.Tensor, threshold: float = MEMORIZED_RATIO) -> float:
    """Fraction of samples whose nearest-neighbour ratio is below ``threshold``."""
    return sample_stats(samples, train, threshold).memorized


def image_rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image pixel RMSE sqrt(||a_i - b_i||^2 / d) between two batches of one shape (float64, CPU)."""
    as_images(a, "a")
    as_images(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (flat64(a.detach().cpu()) - flat64(b.detach().cpu())).pow(2).mean(1).sqrt()


def sample_similarity(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Paired similarity of two sample batches from the same noises: mean cosine and mean pixel RMSE
    (:func:`image_rmse`)."""
    rm = image_rmse(a, b)
    cos = torch.nn.functional.cosine_similarity(flat64(a.detach().cpu()), flat64(b.detach().cpu()), dim=1, eps=1e-30)
    return {"cosine": float(cos.mean()), "rmse": float(rm.mean())}


# --------------------------------------------------------------------------- weights

def _matrix(W, name):
    if not isinstance(W, torch.Tensor) or W.ndim != 2:
        raise ValueError(f"{name} must be a matrix (2-d tensor), got {getattr(W, 'shape', type(W).__name__)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return W.to(torch.float64)


def weight_nmse(W: torch.Tensor, W_ref: torch.Tensor) -> float:
    """||W - W_ref||_F / ||W_ref||_F, a ratio of norms (not squared), the form of the paper's Fig. 4 left."""
    W, W_ref = _matrix(W, "W"), _matrix(W_ref, "W_ref")
    if W.shape != W_ref.shape:
        raise ValueError(f"W and W_ref must have one shape, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    ref = W_ref.norm()
    if not ref > 0:
        raise ValueError("W_ref is all zeros: an error relative to its norm is undefined")
    return float((W - W_ref).norm() / ref)


def singular_vector_alignment(W: torch.Tensor, W_ref: torch.Tensor, k: int) -> torch.Tensor:
    """The k x k matrix |U_W[:, :k]^T U_ref[:, :k]| of absolute cosines between the top-k left
    singular vectors of ``W`` and ``W_ref`` (paper Fig. 4 right; absolute value for sign ambiguity)."""
    positive_int(k, "k")
    W, W_ref = _matrix(W, "W"), _matrix(W_ref, "W_ref")
    if W.shape[0] != W_ref.shape[0]:
        raise ValueError(f"W and W_ref must have the same number of rows, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    if k > min(*W.shape, *W_ref.shape):
        raise ValueError(f"k = {k} exceeds the matrix size {min(*W.shape, *W_ref.shape)}")
    U = torch.linalg.svd(W)[0][:, :k]
    U_ref = torch.linalg.svd(W_ref)[0][:, :k]
    return (U.T @ U_ref).abs()


def singular_alignment(W: torch.Tensor, W_ref: torch.Tensor, k: int) -> dict:
    """How well the top-k left singular vectors of W match those of W_ref.

    ``matrix``: :func:`singular_vector_alignment`; ``diagonal``: mean over i <= k of |u_i . u_ref_i|
    (1 when the vectors match one by one); ``subspace``: ||U_k^T U_ref,k||_F^2 / k, the mean squared
    cosine of the principal angles between the two k-dimensional subspaces (1 when they span the same
    subspace, whatever the order inside it; the meaningful number where singular values are nearly
    equal and single vectors are not defined).
    """
    A = singular_vector_alignment(W, W_ref, k)
    return dict(matrix=A, diagonal=float(A.diagonal().mean()), subspace=float(A.pow(2).sum() / k))


# --------------------------------------------------------------------------- Jacobians

def effective_rank(M: torch.Tensor, energy: float = 0.99) -> float:
    """The number of leading singular values of a matrix that carry a share ``energy`` of its
    energy sum_i s_i^2 (the smallest r with s_1^2 + ... + s_r^2 >= energy * sum s_i^2): 1 for a
    rank-one map, about ``energy * d`` for the identity. ``M``: a (d, d) matrix, or a batch (B, d, d)
    (then the mean over the batch)."""
    if not isinstance(M, torch.Tensor) or M.ndim not in (2, 3):
        raise ValueError(f"M must be a matrix (d, d) or a batch of them (B, d, d), got "
                         f"{getattr(M, 'shape', type(M).__name__)}")
    if not 0 < energy <= 1:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    s2 = torch.linalg.svdvals(M.to(torch.float64)).pow(2)
    total = s2.sum(-1, keepdim=True)
    if not bool((total > 0).all()):
        raise ValueError("M is all zeros: its effective rank is undefined")
    share = s2.cumsum(-1) / total
    # 1e-12 absorbs the round-off of the cumulative sum at energy = 1
    r = (share < energy - 1e-12).sum(-1).to(torch.float64) + 1
    return float(r.mean())


# --------------------------------------------------------------------------- statistics

def paired_difference(a, b) -> tuple[float, float]:
    """Mean and standard error of a - b over paired items (two models on the same inputs or noises):
    ``a``, ``b`` are 1-d arrays or tensors of one length >= 2."""
    a = np.asarray(torch.as_tensor(a, dtype=torch.float64).cpu() if isinstance(a, torch.Tensor) else a, dtype=float)
    b = np.asarray(torch.as_tensor(b, dtype=torch.float64).cpu() if isinstance(b, torch.Tensor) else b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"a and b must be 1-d of one length >= 2, got shapes {a.shape} and {b.shape}")
    diff = a - b
    if not np.isfinite(diff).all():
        raise ValueError("a and b must be finite")
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff)))


def loglog_fit(x, y) -> dict:
    """Least-squares line log(y) = slope log(x) + intercept over the finite positive pairs, with the
    slope's standard error (NaN with fewer than three pairs) and the number of pairs ``n``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d of one length, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    n = int(ok.sum())
    out = dict(slope=math.nan, intercept=math.nan, stderr=math.nan, n=n)
    if n < 2 or np.ptp(np.log(x[ok])) == 0:
        return out
    lx, ly = np.log(x[ok]), np.log(y[ok])
    slope, intercept = np.polyfit(lx, ly, 1)
    out.update(slope=float(slope), intercept=float(intercept))
    if n > 2:
        resid = ly - (slope * lx + intercept)
        out["stderr"] = float(np.sqrt(resid @ resid / (n - 2) / ((lx - lx.mean()) @ (lx - lx.mean()))))
    return out


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties): +1 when y rises with
    x at every step, -1 when it falls at every step. The book's test of a stated trend over a whole
    ladder ("grows with N", "decreases with width")."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-d of one length >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")

    def ranks(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for val in np.unique(v):                  # average ranks over ties
            tie = v == val
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / den) if den > 0 else 0.0


def trend(x, y, rising: bool = True, minimum: float = TREND_MIN) -> tuple:
    """``(rho, holds)``: :func:`rank_correlation` of ``y`` with ``x`` and whether the stated trend
    holds over the whole sequence: rho >= ``minimum`` if ``rising``, rho <= -``minimum`` otherwise."""
    if not 0 < minimum <= 1:
        raise ValueError(f"minimum must lie in (0, 1], got {minimum}")
    rho = rank_correlation(x, y)
    return rho, bool(rho >= minimum if rising else rho <= -minimum)
