"""Chapter 1's executable theory: Tweedie, Theorem 1 and its gradient-descent dynamics, the N < d
projection, sampler convergence to the closed-form Gaussian flow, and the tower-property control.

Everything here works on any denoiser of the protocol ``D(x, sigma) -> x_hat`` (paper.md §2-4).

* :func:`empirical_log_density`, :func:`gaussian_log_density`, :func:`tweedie_error` --
  grad log p(x; s) = (D(x; s) - x) / s^2 for D_M and D_G, checked by autograd.
* :func:`train_affine_dsm` -- an affine denoiser D(x) = W x + b trained on the DSM loss
  (paper eq. 3) by gradient descent on the exact loss or by minibatch Adam with fresh noise
  (Theorem 1). :func:`gd_predicted_error` is the theory's error curve for the former,
  :func:`gd_steps_needed` inverts it.
* :func:`lowsigma_residual` -- RMSE(D_G(x; s_min), x) on held-out and training inputs against the
  training-set size N (paper App. F.1, Fig. 16: non-zero iff N < d).
* :func:`gaussian_ode_reference`, :func:`solver_errors`, :func:`convergence_order` -- the closed-form
  probability-flow solution under D_G (paper eq. 7) as the reference for Euler and Heun.
* :func:`affine_fit_errors` -- the tower-property control (paper.md §4.4): distil a teacher with
  :func:`utils.distill.fit_affine` and measure the weight error to W_G and its Monte-Carlo error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .checks import as_images, as_sigma, positive_int, flat64
from .denoisers import GaussianDenoiser
from .distill import fit_affine
from .edm import sample, sigma_steps
from .metrics import sample_similarity



# --------------------------------------------------------------------------- Tweedie

def empirical_log_density(x: torch.Tensor, train: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p(x; s) of the noised empirical distribution (1/N) sum_i N(y_i, s^2 I), per row of x.

    Differentiable in x (float64); the additive constant -d/2 log(2 pi s^2) is included.
    """
    as_images(train, "train")
    s = float(as_sigma(sigma, 1)[0])
    q = x.reshape(x.shape[0], -1).to(torch.float64)
    y = flat64(train)
    sq = torch.cdist(q, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d = q.shape[1]
    return torch.logsumexp(-sq / (2 * s * s), dim=1) - math.log(len(y)) - 0.5 * d * math.log(2 * math.pi * s * s)


def gaussian_log_density(x: torch.Tensor, gauss: GaussianDenoiser, sigma: float) -> torch.Tensor:
    """log N(x; mu, Sigma + s^2 I): the noised Gaussian model, per row of x (differentiable)."""
    s = float(as_sigma(sigma, 1)[0])
    q = x.reshape(x.shape[0], -1).to(torch.float64)
    var = gauss.eigvals.to(q.device) + s * s
    coeff = (q - gauss.mean.to(q.device)) @ gauss.eigvecs.to(q.device)
    return -0.5 * ((coeff ** 2 / var).sum(1) + var.log().sum() + q.shape[1] * math.log(2 * math.pi))


def score_autograd(log_density, x: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x) by autograd (float64), shaped like x. ``log_density(x) -> (B,)``."""
    with torch.enable_grad():
        q = x.detach().to(torch.float64).requires_grad_(True)
        (grad,) = torch.autograd.grad(log_density(q).sum(), q)
    return grad


def tweedie_error(denoiser, log_density, x: torch.Tensor, sigma: float) -> float:
    """max_i ||grad log p(x_i) - (D(x_i) - x_i)/s^2|| / ||grad log p(x_i)||  (Tweedie's relation)."""
    as_images(x)
    s = float(as_sigma(sigma, 1)[0])
    score = flat64(score_autograd(log_density, x))
    with torch.inference_mode():
        tweedie = (flat64(denoiser(x.to(torch.float64), s)) - flat64(x)) / s ** 2
    return float(((score - tweedie).norm(dim=1) / score.norm(dim=1).clamp_min(1e-300)).max())


# --------------------------------------------------------------------------- Theorem 1

def wiener_weight(x_train: torch.Tensor, sigma: float) -> torch.Tensor:
    """W_G = Sigma (Sigma + s^2 I)^-1 of the training set (1/N covariance), float64, by a solve."""
    as_images(x_train, "x_train")
    s = float(as_sigma(sigma, 1)[0])
    X = flat64(x_train)
    Z = X - X.mean(0)
    cov = Z.T @ Z / len(X)
    A = cov + s * s * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(A, cov).T            # A, cov symmetric: (A^-1 cov)^T = cov A^-1


def augmented_hessian_eigvals(x_train: torch.Tensor, sigma: float) -> torch.Tensor:
    """Eigenvalues (ascending, float64) of M = E[[x; 1][x; 1]^T] + s^2 diag(I, 0), half the Hessian of
    the DSM loss in (W, b) for *uncentred* inputs (the paper's proof of Theorem 1): GD on D = W x + b
    contracts eigen-direction j of M by 1 - 2 lr m_j. Its top eigenvalue grows with ||mu||^2.
    """
    as_images(x_train, "x_train")
    s = float(as_sigma(sigma, 1)[0])
    X = flat64(x_train)
    n, d = X.shape
    zt = torch.cat([X, torch.ones(n, 1, dtype=torch.float64, device=X.device)], 1)
    M = zt.T @ zt / n
    M[:d, :d] += s * s * torch.eye(d, dtype=torch.float64, device=X.device)
    return torch.linalg.eigvalsh(M)


def optimal_gd_lr(eigvals: torch.Tensor, sigma: float) -> float:
    """The best constant step for GD on the (centred) DSM loss, 1 / (lambda_max + lambda_min + 2 s^2).

    The Hessian of the loss in W is 2 (Sigma + s^2 I) (acting on the right), so this step equalises
    the contraction of the fastest and slowest directions.
    """
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    return float(1.0 / (lam.max() + lam.min() + 2 * s * s))


def contraction_factors(eigvals: torch.Tensor, sigma: float, lr: float) -> torch.Tensor:
    """|1 - 2 lr (lambda_k + s^2)|: the per-step contraction of GD's error along principal direction k."""
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    return (1 - 2 * lr * (lam + s * s)).abs()


def gd_predicted_error(eigvals: torch.Tensor, sigma: float, lr: float, steps) -> torch.Tensor:
    """Theory's ||W_t - W_G||_F / ||W_G||_F for GD from W_0 = 0 on the exact centred DSM loss.

    The error evolves as E_t = E_0 (I - 2 lr (Sigma + s^2 I))^t with E_0 = -W_G, so in the
    eigenbasis of Sigma direction k keeps the fraction r_k^t, r_k = 1 - 2 lr (lambda_k + s^2), of its
    initial error s_k = lambda_k / (lambda_k + s^2):
    error(t)^2 = sum_k s_k^2 r_k^(2t) / sum_k s_k^2.
    """
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    shrink = lam / (lam + s * s)
    r = 1 - 2 * lr * (lam + s * s)
    t = torch.as_tensor(steps, dtype=torch.float64).reshape(-1, 1)
    num = (shrink ** 2 * r.abs() ** (2 * t)).sum(1)
    return (num / (shrink ** 2).sum()).sqrt()


def gd_steps_needed(eigvals: torch.Tensor, sigma: float, lr: float, tol: float = 1e-3,
                    max_steps: int = 10 ** 7) -> int:
    """The first step count at which :func:`gd_predicted_error` drops below ``tol`` (bisection)."""
    if gd_predicted_error(eigvals, sigma, lr, [max_steps])[0] >= tol:
        raise ValueError(f"GD needs more than {max_steps} steps to reach {tol:g} at sigma={sigma:g}")
    lo, hi = 0, max_steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if gd_predicted_error(eigvals, sigma, lr, [mid])[0] < tol:
            hi = mid
        else:
            lo = mid
    return hi


def record_steps(steps: int, n: int = 40) -> list[int]:
    """About ``n`` log-spaced step counts in [0, steps], always including 0 and ``steps``."""
    positive_int(steps, "steps")
    pts = torch.logspace(0, math.log10(steps), n, dtype=torch.float64).round().long().tolist()
    return sorted({0, steps, *pts})


@dataclass
class AffineDSMRun:
    """One training run of :func:`train_affine_dsm`."""

    sigma: float
    optimizer: str
    lr: float
    batch_size: int | None
    steps: list = field(default_factory=list)          # step counts at which errors were recorded
    weight_errors: list = field(default_factory=list)  # ||W_t - W_ref||_F / ||W_ref||_F
    W: torch.Tensor | None = None                      # final weight (float64, d x d)
    b: torch.Tensor | None = None                      # final bias of D(x) = W x + b (float64, d)


OPTIMIZERS = ("gd", "adam")


def train_affine_dsm(x_train: torch.Tensor, sigma: float, steps: int, optimizer: str = "gd",
                     lr: float | None = None, batch_size: int | None = None, W_ref: torch.Tensor | None = None,
                     center: bool = True, schedule: str = "constant", n_record: int = 40, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> AffineDSMRun:
    """Train D(x) = W x + b on the DSM loss E_x E_eps ||D(x + s eps) - x||^2 from W = 0, b = 0.

    * ``batch_size=None``: the exact loss, averaged over every training image and over the noise in
      closed form, so its gradient is 2 (W (C + s^2 I) + b m^T - K), 2 (W m + b - mean(x)) with the
      second moments C, m, K of the (centred) inputs -- deterministic gradient descent, Theorem 1.
    * ``batch_size=B``: minibatches of B training images with fresh noise every step, the way
      networks are trained (the gradient is an unbiased estimate of the one above).

    ``center=True`` feeds the network x - mean(x_train) (D = W (x - mu) + c, the same function class
    with b = c - W mu): the bias then decouples and GD contracts principal direction k by
    1 - 2 lr (lambda_k + s^2) per step (:func:`gd_predicted_error`). ``lr`` defaults to
    :func:`optimal_gd_lr` for GD (centred) and 1e-2 for Adam. ``schedule="cosine"`` decays the
    learning rate to 0 over ``steps``. ``W_ref`` defaults to :func:`wiener_weight`. Runs on
    x_train's device in ``dtype``.
    """
    as_images(x_train, "x_train")
    positive_int(steps, "steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    s = float(as_sigma(sigma, 1)[0])
    dev = x_train.device
    X = x_train.reshape(len(x_train), -1).to(dev, dtype)
    n, d = X.shape
    mu = X.to(torch.float64).mean(0).to(dtype)
    Z = X - mu if center else X
    if W_ref is None:
        W_ref = wiener_weight(x_train, s)
    W_ref = W_ref.to(dev, torch.float64)
    if lr is None:
        if optimizer == "adam":
            lr = 1e-2
        else:
            zc = (X - mu).to(torch.float64)
            lam = torch.linalg.eigvalsh(zc.T @ zc / n)
            if not center:       # the bias couples in: the Hessian is the augmented second moment
                m = augmented_hessian_eigvals(x_train, s)
                lr = float(1.0 / (m.max() + m.min()))
            else:
                lr = optimal_gd_lr(lam, s)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")

    eye = torch.eye(d, dtype=dtype, device=dev)
    if batch_size is None:                      # exact second moments of the (shifted) inputs
        m_z = Z.mean(0)
        A = Z.T @ Z / n + s * s * eye            # E[(z + eps)(z + eps)^T]
        K = X.T @ Z / n                          # E[x z^T]
        m_x = X.mean(0)
    W = torch.zeros(d, d, dtype=dtype, device=dev)
    b = torch.zeros(d, dtype=dtype, device=dev)
    run = AffineDSMRun(sigma=s, optimizer=optimizer, lr=float(lr), batch_size=batch_size)
    wanted = set(record_steps(steps, n_record))
    ref_norm = W_ref.norm()

    def record(t):
        run.steps.append(t)
        run.weight_errors.append(float((W.to(torch.float64) - W_ref).norm() / ref_norm))

    if optimizer == "adam":
        adam_m = [torch.zeros_like(W), torch.zeros_like(b)]
        adam_v = [torch.zeros_like(W), torch.zeros_like(b)]
        beta1, beta2, eps_adam = 0.9, 0.999, 1e-8
    g = torch.Generator(device=dev).manual_seed(seed)
    record(0)
    for t in range(1, steps + 1):
        if batch_size is None:
            gW = 2 * (W @ A + torch.outer(b, m_z) - K)
            gb = 2 * (W @ m_z + b - m_x)
        else:
            idx = torch.randint(0, n, (batch_size,), generator=g, device=dev)
            y = Z[idx] + s * torch.randn(batch_size, d, generator=g, device=dev, dtype=dtype)
            r = y @ W.T + b - X[idx]
            gW = 2 * r.T @ y / batch_size
            gb = 2 * r.mean(0)
        step_lr = lr if schedule == "constant" else lr * 0.5 * (1 + math.cos(math.pi * (t - 1) / steps))
        if optimizer == "gd":
            W = W - step_lr * gW
            b = b - step_lr * gb
        else:
            new = []
            for i, (p, grad) in enumerate(((W, gW), (b, gb))):
                adam_m[i] = beta1 * adam_m[i] + (1 - beta1) * grad
                adam_v[i] = beta2 * adam_v[i] + (1 - beta2) * grad * grad
                m_hat = adam_m[i] / (1 - beta1 ** t)
                v_hat = adam_v[i] / (1 - beta2 ** t)
                new.append(p - step_lr * m_hat / (v_hat.sqrt() + eps_adam))
            W, b = new
        if t in wanted:
            record(t)
    W64, b64 = W.to(torch.float64), b.to(torch.float64)
    if center:
        b64 = b64 - W64 @ mu.to(torch.float64)      # back to D(x) = W x + b
    run.W, run.b = W64.cpu(), b64.cpu()
    return run


# --------------------------------------------------------------------------- N versus d

def lowsigma_sizes(n_total: int, d: int, ratios) -> list[int]:
    """Training-set sizes N = round(r d) for r in ``ratios`` (at least 2, at most ``n_total``), plus
    ``n_total`` itself: sorted and without duplicates."""
    positive_int(n_total, "n_total")
    positive_int(d, "d")
    return sorted({min(n_total, max(2, round(float(r) * d))) for r in ratios} | {n_total})


def lowsigma_residual(x_train: torch.Tensor, x_eval: torch.Tensor, sizes, sigma: float = 0.002,
                      seed: int = 0, n_train_eval: int | None = None) -> dict:
    """RMSE(D_G(x; s), x) = mean_x sqrt(||D_G(x; s) - x||^2 / d) against the training-set size N.

    For each N in ``sizes`` D_G is fitted on the first N images of one seeded permutation of
    ``x_train`` (nested subsets) and applied at noise level ``sigma`` (default: the smallest EDM
    sigma) to the clean held-out images ``x_eval`` and to (up to ``n_train_eval``) of the N training
    images themselves. As s -> 0, D_G -> mu + P_range(Sigma)(x - mu) and rank(Sigma) <= N - 1, so the
    held-out residual is the part of x - mu outside the span of the centred training set: non-zero
    iff N - 1 < d (paper App. F.1), while training images lie in the span (residual ~ 0).

    Returns a dict of lists: ``n``, ``rank`` (eigenvalues > 1e-10 lambda_max), ``heldout``, ``train``.
    """
    as_images(x_train, "x_train")
    as_images(x_eval, "x_eval")
    s = float(as_sigma(sigma, 1)[0])
    sizes = [positive_int(int(n), "sizes[i]") for n in sizes]
    if max(sizes) > len(x_train):
        raise ValueError(f"sizes go up to {max(sizes)} but x_train has {len(x_train)} images")
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    out = {"n": [], "rank": [], "heldout": [], "train": []}

    def resid(G, x):
        with torch.inference_mode():
            return float((flat64(G(x, s)) - flat64(x)).pow(2).mean(1).sqrt().mean())

    for n in sizes:
        sub = x_train[perm[:n].to(x_train.device)]
        G = GaussianDenoiser.fit(sub)
        lam = G.eigvals
        out["n"].append(n)
        out["rank"].append(int((lam > 1e-10 * lam.max().clamp_min(1e-300)).sum()))
        out["heldout"].append(resid(G, x_eval))
        out["train"].append(resid(G, sub[:n_train_eval] if n_train_eval else sub))
    return out


# --------------------------------------------------------------------------- samplers

def gaussian_ode_reference(gauss: GaussianDenoiser, x_T: torch.Tensor, sigmas) -> torch.Tensor:
    """What an exact ODE solver on ``sigmas`` would return under D_G: the closed-form flow (paper
    eq. 7) from sigmas[0] to sigmas[-1], followed by the samplers' own last step D_G(x; sigmas[-1]).

    (The flow all the way to s = 0 differs from this by a shrinkage lambda/(lambda + s_min^2) that
    only matters in directions with lambda <~ s_min^2.)
    """
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    with torch.inference_mode():
        x_min = gauss.flow(x_T, float(s[0]), float(s[-1]))
        return gauss(x_min, float(s[-1]))


def pixel_rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of sqrt(||a_i - b_i||^2 / d) (``utils.metrics.sample_similarity``'s RMSE)."""
    return sample_similarity(a, b)["rmse"]


def solver_errors(gauss: GaussianDenoiser, x_T: torch.Tensor, n_steps, solvers=("euler", "heun"),
                  sigma_min: float = 0.002, sigma_max: float = 80.0) -> dict:
    """RMSE between ``utils.edm.sample`` under D_G with n EDM steps and :func:`gaussian_ode_reference`.

    ``x_T`` is the initial state at ``sigma_max``. Returns ``{solver: {"n": [...], "nfe": [...],
    "rmse": [...]}}`` (NFE = n for Euler, 2n - 1 for Heun).
    """
    as_images(x_T, "x_T")
    ref = gaussian_ode_reference(gauss, x_T, [sigma_max, sigma_min])
    out = {}
    for solver in solvers:
        rec = {"n": [], "nfe": [], "rmse": []}
        for n in n_steps:
            x = sample(gauss, x_T, sigma_steps(int(n), sigma_min, sigma_max), solver=solver)
            rec["n"].append(int(n))
            rec["nfe"].append(int(n) if solver == "euler" else 2 * int(n) - 1)
            rec["rmse"].append(pixel_rmse(x, ref))
        out[solver] = rec
    return out


def convergence_order(n_steps, errors, last: int = 3) -> float:
    """The slope -d log(error) / d log(n) fitted over the ``last`` points (1 for Euler, 2 for Heun)."""
    n = torch.as_tensor(list(n_steps), dtype=torch.float64)[-last:].log()
    e = torch.as_tensor(list(errors), dtype=torch.float64)[-last:].log()
    n, e = n - n.mean(), e - e.mean()
    return float(-(n * e).sum() / (n * n).sum())


# --------------------------------------------------------------------------- tower property

def affine_fit_errors(teacher, x_clean: torch.Tensor, W_ref: torch.Tensor, sigma: float,
                      n_noise: int, seeds=(0, 1), batch_size: int = 512) -> dict:
    """Distil ``teacher`` on ``x_clean`` + noise (:func:`utils.distill.fit_affine`) once per seed.

    Returns ``error`` (mean over seeds of ||W_fit - W_ref||_F / ||W_ref||_F), ``errors`` (per seed),
    and ``mc_error`` = ||W_seed0 - W_seed1||_F / (sqrt(2) ||W_ref||_F): the Monte-Carlo standard error of
    one fit, estimated from the spread between independent noise draws (needs two or more seeds).
    An unbiased fit has error ~ mc_error; a biased one has error >> mc_error.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    ref = W_ref.to(torch.float64).cpu()
    Ws = [fit_affine(teacher, x_clean, sigma, n_noise=n_noise, seed=sd, batch_size=batch_size).W
          for sd in seeds]
    errs = [float((W - ref).norm() / ref.norm()) for W in Ws]
    out = {"error": sum(errs) / len(errs), "errors": errs, "mc_error": float("nan")}
    if len(Ws) >= 2:
        diffs = [float((Ws[i] - Ws[j]).norm()) for i in range(len(Ws)) for j in range(i + 1, len(Ws))]
        out["mc_error"] = sum(diffs) / len(diffs) / math.sqrt(2) / float(ref.norm())
    return out
