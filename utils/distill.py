"""Linear distillation: the best affine map D_L(x) = W x + b to a denoiser at one noise level.

Objective (paper eq. 9): min_{W,b} E_{x, eps} ||W(x + s eps) + b - D(x + s eps; s)||^2 over clean
images x from ``x_clean`` (held-out images in the paper's code, paper.md §4.4).

* :func:`fit_affine` solves it in closed form: W = C_{Dy} C_{yy}^{-1}, b = mean(D) - W mean(y), with
  the covariances accumulated in float64 over the noisy inputs y = x + s eps (one Cholesky solve).
* :func:`fit_affine_adam` is the paper's recipe (App. C, Algorithm 1): zero-initialised
  ``nn.Linear(d, d)`` on inputs scaled by 1/sqrt(d), mean-squared error, Adam, batch 256, fresh noise
  every batch. It is only needed for the "error vs epoch" curves (paper Fig. 4 left);
  :func:`fit_affine_adam_pool` runs the same loop on a fixed pool of (input, teacher output) pairs.
* :func:`distill_grid` fits one D_L per noise level of a grid (optionally with Adam on the same pairs).
* :func:`train_affine_dsm` trains an affine *denoiser* on the DSM loss itself (paper eq. 3) by
  gradient descent or Adam: Theorem 1 says it converges to the Wiener filter W_G.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .checks import as_images, as_seed, as_sigma, checked_output, flat64, positive_int, progress_bar, sigma_list
from .denoisers import AffineDenoiser, PerSigmaDenoiser

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
    g = torch.Generator().manual_seed(as_seed(seed))
    total = len(x_clean) * n_noise
    for start in range(0, total, batch_size):
        x = x_clean[torch.arange(start, min(start + batch_size, total)) % len(x_clean)]
        eps = torch.randn(x.shape, generator=g, dtype=torch.float32).to(x.device, x.dtype)
        yield x + sigma * eps


def noise_draws(n_images: int, d: int, at_least: int = 1, inputs_per_dim: int = 1) -> int:
    """Noise draws per clean image for :func:`fit_affine` on ``n_images`` images of ``d`` pixels:
    ``at_least``, raised where needed so that the fit sees at least ``inputs_per_dim * (d + 1)`` noisy
    inputs (``fit_affine`` needs more inputs than dimensions, ``n_images * draws > d``). Derived from d,
    so a profile with few images and large images (the smoke budget at the colab / gpu shapes: 64
    images of d = 1,024 or 3,072) still gets a determined fit; the cpu profile's counts already
    satisfy it."""
    positive_int(n_images, "n_images")
    positive_int(d, "d")
    positive_int(at_least, "at_least")
    positive_int(inputs_per_dim, "inputs_per_dim")
    return max(int(at_least), -(-inputs_per_dim * (d + 1) // n_images))


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
            t = checked_output(denoiser(y, sigma), y, denoiser, sigma).reshape(len(y), -1).to(torch.float64) - shift
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
    monitored: list = field(default_factory=list)       # monitor(W) per epoch (float64 W), [0] = at init


def _adam_affine(epoch_batches, d: int, sigma: float, epochs: int, lr: float, W_ref, keep_weights: bool,
                 shape, device, desc: str, progress: bool, monitor=None) -> AdamDistillation:
    """The paper's optimiser loop, shared by both Adam variants: zero-initialised W and b, inputs
    scaled by 1/sqrt(d), mean-squared error, Adam with default betas. ``epoch_batches()`` yields one
    epoch of (noisy inputs y, teacher outputs t), each (b, d) float32 on ``device``. ``monitor``: an
    optional function of the effective W (float64, d x d) whose value is recorded after every epoch
    (e.g. the asymmetry of W over the distillation, paper Fig. 14a)."""
    if monitor is not None and not callable(monitor):
        raise TypeError(f"monitor must be a function W -> float, got {type(monitor).__name__}")
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
        if monitor is not None:
            result.monitored.append(float(monitor(W_eff)))

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
                    keep_weights: bool = True, progress: bool = False, monitor=None) -> AdamDistillation:
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
    g = torch.Generator().manual_seed(as_seed(seed))

    def epoch_batches():
        for i in range(0, len(x_clean), batch_size):
            x = x_clean[i:i + batch_size].to(torch.float32)
            y = x + sigma * torch.randn(x.shape, generator=g).to(x.device)
            with torch.inference_mode():
                target = checked_output(denoiser(y, sigma), y, denoiser, sigma).reshape(len(y), -1).to(torch.float32)
            yield y.reshape(len(y), -1), target.clone()     # clone: autograd refuses inference tensors

    return _adam_affine(epoch_batches, d, sigma, epochs, lr, W_ref, keep_weights, x_clean.shape[1:],
                        x_clean.device, f"Adam distillation sigma={sigma:.3g}", progress, monitor)


def fit_affine_adam_pool(y: torch.Tensor, t: torch.Tensor, sigma: float, epochs: int, batch_size: int = 256,
                         lr: float | None = None, seed: int = 0, W_ref: torch.Tensor | None = None,
                         shape=None, keep_weights: bool = False, monitor=None) -> AdamDistillation:
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
    g = torch.Generator().manual_seed(as_seed(seed))

    def epoch_batches():
        perm = torch.randperm(n, generator=g).to(y.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            yield y32[idx], t32[idx]

    return _adam_affine(epoch_batches, d, sigma, epochs, lr, W_ref, keep_weights, shape or (1, 1, d),
                        y.device, f"Adam distillation (pool) sigma={sigma:.3g}", False, monitor)


# --------------------------------------------------------------------------- a grid of noise levels

class TeacherRecorder:
    """Wraps a denoiser and keeps every (input, output) pair it is called with (flattened float32),
    so that a second fit (the paper's Adam recipe) can reuse exactly the pairs of the first."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.name = getattr(denoiser, "name", None) or type(denoiser).__name__
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


@dataclass
class Distillation:
    """The closed-form affine fits D_L at each sigma of a grid (and, optionally, Adam's record)."""

    sigmas: list
    fits: list                                    # AffineDenoiser per sigma
    n_inputs: int                                 # noisy inputs per fit
    adam: list = field(default_factory=list)      # AdamDistillation per sigma (when asked for)

    @property
    def denoiser(self) -> PerSigmaDenoiser:
        """The maps as one denoiser that can drive ``utils.edm.sample`` on the same grid."""
        return PerSigmaDenoiser(self.sigmas, self.fits)

    @property
    def weights(self) -> list:
        return [f.W for f in self.fits]


def distill_grid(denoiser, x_clean: torch.Tensor, sigmas, n_noise: int, seed: int = 0,
                 adam_epochs: int | None = None, W_ref=None, adam_batch_size: int = 256,
                 progress: bool = True, adam_monitor=None) -> Distillation:
    """:func:`fit_affine` of ``denoiser`` at each sigma of ``sigmas`` on ``x_clean`` with ``n_noise``
    noise draws per image (the noise seed differs per sigma).

    With ``adam_epochs`` the paper's Adam recipe also runs at each sigma on the very pairs the closed
    form was fitted on (:func:`fit_affine_adam_pool`); ``W_ref(sigma)`` (e.g. ``D_G.weight``) gives
    the matrix its weight error is measured against, and ``adam_monitor(W)`` any other number recorded
    per epoch (``AdamDistillation.monitored``). The pool is dropped after each sigma.
    ``progress`` shows a progress bar over the grid.
    """
    sig = sigma_list(sigmas)
    if adam_epochs is not None and W_ref is None:
        raise ValueError("adam_epochs needs W_ref, a function sigma -> reference weight matrix")
    rec = TeacherRecorder(denoiser)
    fits, adam = [], []
    for i, s in enumerate(progress_bar(sig, "distilling, per sigma", progress)):
        fits.append(fit_affine(rec, x_clean, s, n_noise=n_noise, seed=seed + 1000 * i))
        y, t = rec.pool()
        if adam_epochs is not None:
            adam.append(fit_affine_adam_pool(y, t, s, adam_epochs, batch_size=adam_batch_size, seed=seed + i,
                                             W_ref=W_ref(s), shape=x_clean.shape[1:], monitor=adam_monitor))
        del y, t
    return Distillation(sig, fits, len(x_clean) * n_noise, adam)


# --------------------------------------------------------------------------- Theorem 1: DSM training

def optimal_gd_lr(eigvals: torch.Tensor, sigma: float) -> float:
    """The best constant step for GD on the (centred) DSM loss, 1 / (lambda_max + lambda_min + 2 s^2).

    The Hessian of the loss in W is 2 (Sigma + s^2 I) (acting on the right), so this step equalises
    the contraction of the fastest and slowest directions.
    """
    lam = torch.as_tensor(eigvals, dtype=torch.float64)
    if lam.numel() == 0 or not torch.isfinite(lam).all():
        raise ValueError("eigvals must be a non-empty set of finite eigenvalues")
    lam = lam.clamp_min(0)
    s = float(as_sigma(sigma, 1)[0])
    return float(1.0 / (lam.max() + lam.min() + 2 * s * s))


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


OPTIMIZERS = ("gd", "adam", "lstsq")
SCHEDULES = ("constant", "cosine")


def train_affine_dsm(x_train: torch.Tensor, sigma: float, steps: int, optimizer: str = "gd",
                     lr: float | None = None, batch_size: int | None = None, W_ref: torch.Tensor | None = None,
                     center: bool = True, schedule: str = "constant", n_record: int = 40, seed: int = 0,
                     dtype: torch.dtype = torch.float64) -> AffineDSMRun:
    """Train D(x) = W x + b on the DSM loss E_x E_eps ||D(x + s eps) - x||^2 (paper eq. 3) from
    W = 0, b = 0 (Theorem 1: the minimizer is the Wiener filter W_G = Sigma (Sigma + s^2 I)^-1).
    ``optimizer``: ``"gd"`` (gradient descent), ``"adam"``, or ``"lstsq"`` (minibatches only): the
    exact minimizer of the loss over every noisy pair drawn so far, ``steps * batch_size`` pairs
    (x_i, x_i + s eps), by least squares -- what SGD on those pairs converges to with perfect
    iterate averaging, free of learning-rate and noise-floor effects (an affine DAE "trained to
    convergence" on a finite sample, paper App. G.2's DAE-Linear).

    * ``batch_size=None``: the exact loss, averaged over every training image and over the noise in
      closed form, so its gradient is 2 (W (C + s^2 I) + b m^T - K), 2 (W m + b - mean(x)) with the
      second moments C, m, K of the (centred) inputs -- deterministic gradient descent.
    * ``batch_size=B``: minibatches of B training images with fresh noise every step, the way
      networks are trained (the gradient is an unbiased estimate of the one above).

    ``center=True`` feeds the map x - mean(x_train) (D = W (x - mu) + c, the same function class
    with b = c - W mu): the bias then decouples and GD contracts principal direction k by
    1 - 2 lr (lambda_k + s^2) per step. ``lr`` defaults to :func:`optimal_gd_lr` for GD (centred)
    and 1e-2 for Adam. ``schedule="cosine"`` decays the learning rate to 0 over ``steps``.
    ``W_ref`` (default: W_G of x_train) is what the recorded weight error is measured against.
    Runs on x_train's device in ``dtype``.
    """
    from .denoisers import GaussianDenoiser

    as_images(x_train, "x_train")
    positive_int(steps, "steps")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "lstsq" and batch_size is None:
        raise ValueError("optimizer='lstsq' minimizes the loss over sampled pairs: give batch_size (the exact "
                         "loss's minimizer is W_G itself, GaussianDenoiser.weight)")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    s = float(as_sigma(sigma, 1)[0])
    dev = x_train.device
    X = x_train.reshape(len(x_train), -1).to(dev, dtype)
    n, d = X.shape
    mu = X.to(torch.float64).mean(0).to(dtype)
    Z = X - mu if center else X
    if W_ref is None:
        W_ref = GaussianDenoiser.fit(x_train).weight(s)
    W_ref = W_ref.to(dev, torch.float64)
    if optimizer == "lstsq":
        lr = lr if lr is not None else float("nan")          # no learning rate: recorded as NaN
    elif lr is None:
        if optimizer == "adam":
            lr = 1e-2
        elif not center:       # the bias couples in: the Hessian is the augmented second moment
            m = augmented_hessian_eigvals(x_train, s)
            lr = float(1.0 / (m.max() + m.min()))
        else:
            zc = (X - mu).to(torch.float64)
            lr = optimal_gd_lr(torch.linalg.eigvalsh(zc.T @ zc / n), s)
    if optimizer != "lstsq" and not lr > 0:
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

    if optimizer == "lstsq":               # running sums of the pairs (y = z + s eps, x): normal equations
        acc = dict(n=0, y=torch.zeros(d, dtype=dtype, device=dev), x=torch.zeros(d, dtype=dtype, device=dev),
                   yy=torch.zeros(d, d, dtype=dtype, device=dev), xy=torch.zeros(d, d, dtype=dtype, device=dev))

        def solve():
            n_ = acc["n"]
            m_y, m_x = acc["y"] / n_, acc["x"] / n_
            c_yy = acc["yy"] / n_ - torch.outer(m_y, m_y)
            c_xy = acc["xy"] / n_ - torch.outer(m_x, m_y)
            W_ = torch.linalg.lstsq(c_yy, c_xy.T).solution.T          # C_yy symmetric: W C_yy = C_xy
            return W_, m_x - W_ @ m_y
    if optimizer == "adam":
        adam_m = [torch.zeros_like(W), torch.zeros_like(b)]
        adam_v = [torch.zeros_like(W), torch.zeros_like(b)]
        beta1, beta2, eps_adam = 0.9, 0.999, 1e-8
    g = torch.Generator(device=dev).manual_seed(as_seed(seed))
    record(0)
    for t in range(1, steps + 1):
        if batch_size is None:
            gW = 2 * (W @ A + torch.outer(b, m_z) - K)
            gb = 2 * (W @ m_z + b - m_x)
        else:
            idx = torch.randint(0, n, (batch_size,), generator=g, device=dev)
            y = Z[idx] + s * torch.randn(batch_size, d, generator=g, device=dev, dtype=dtype)
            if optimizer == "lstsq":
                xb = X[idx]
                acc["n"] += batch_size
                acc["y"] += y.sum(0)
                acc["x"] += xb.sum(0)
                acc["yy"] += y.T @ y
                acc["xy"] += xb.T @ y
                if t in wanted or t == steps:
                    W, b = solve()
                    if t in wanted:
                        record(t)
                continue
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
    if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
        raise ValueError(f"train_affine_dsm diverged at sigma={s:g} (lr={lr:g}): lower lr")
    W64, b64 = W.to(torch.float64), b.to(torch.float64)
    if center:
        b64 = b64 - W64 @ mu.to(torch.float64)      # back to D(x) = W x + b
    run.W, run.b = W64.cpu(), b64.cpu()
    return run
