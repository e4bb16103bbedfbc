"""The denoiser protocol and the closed-form denoisers.

Every denoiser is a callable ``D(x, sigma) -> x_hat``: x is (B, C, H, W), sigma a float or a (B,)
tensor, and the output has x's shape and dtype. Samplers, metrics and distillation accept any such
callable, so a trained network (``utils.edm.EDMPrecond``), D_G, D_M and D_L are interchangeable.

* :class:`GaussianDenoiser` -- D_G, the Wiener filter of N(mu, Sigma) (paper eq. 6).
* :class:`EmpiricalDenoiser` -- D_M, the optimal denoiser of the training set (paper eq. 5).
* :class:`AffineDenoiser` -- D_L(x) = W vec(x) + b (paper eq. 8).
* :class:`PerSigmaDenoiser` -- one denoiser per noise level (the distilled D_L of a grid).
* :func:`identity` -- D(x) = x, the sigma -> 0 limit of every EDM-preconditioned denoiser (paper App. D).
* :func:`apply` -- the one batched call of any denoiser, under ``torch.inference_mode()``.
"""
from __future__ import annotations

import torch

from .checks import as_images, as_sigma, checked_output, denoiser_name, positive_int, same_dim, flat64

# D_M divides by 2 sigma^2: below this floor sigma is clamped, so that 1/(2 sigma^2) stays finite in
# float64 (the output is then the nearest training image, the sigma -> 0 limit, not NaN).
SIGMA_FLOOR = 1e-100


def apply(denoiser, x: torch.Tensor, sigma, batch_size: int = 512) -> torch.Tensor:
    """``D(x, sigma)`` for a batch of any size, in chunks of ``batch_size`` under inference mode.

    ``sigma`` is a float (passed to every chunk as a python float) or a (B,) tensor (sliced per
    chunk). The output is checked: x's shape and finite values, or a ``ValueError`` naming the
    denoiser and sigma. This is the book's one way of evaluating a denoiser on many inputs.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as D(x, sigma), got {type(denoiser).__name__}")
    as_images(x)
    positive_int(batch_size, "batch_size")
    per_input = isinstance(sigma, torch.Tensor) and sigma.ndim > 0
    if per_input:
        as_sigma(sigma, x.shape[0])
    else:
        sigma = float(as_sigma(sigma, 1)[0])
    out = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            sb = sigma[i:i + batch_size] if per_input else sigma
            out.append(checked_output(denoiser(xb, sb), xb, denoiser, sb))
    return torch.cat(out)


def identity(x: torch.Tensor, sigma=None) -> torch.Tensor:
    """The identity denoiser D(x; sigma) = x: what every EDM-preconditioned denoiser tends to as
    sigma -> 0 (c_skip -> 1, c_out -> 0; paper App. D, Fig. 15), and the reference of "D ~ identity"
    (e.g. ``metrics.rmse_curves({"net": (net, identity)}, ...)``)."""
    as_images(x)
    return x


def _shrink(lam: torch.Tensor, var) -> torch.Tensor:
    """lambda / (lambda + s^2), with the sigma -> 0 limit (1 on the data span, 0 off it) when s^2
    underflows: a zero eigenvalue gives 0, never 0/0."""
    return torch.where(lam > 0, lam / (lam + var).clamp_min(1e-300), torch.zeros_like(lam + var))


class GaussianDenoiser:
    """D_G(x; s) = mu + U diag(lambda / (lambda + s^2)) U^T (x - mu)   (paper eq. 6).

    mu and Sigma = (1/N) sum (y_i - mu)(y_i - mu)^T are the training set's mean and covariance,
    accumulated in float64; Sigma = U diag(lambda) U^T by ``torch.linalg.eigh`` with eigenvalues
    sorted in descending order and clamped at 0 (values below eigh's round-off floor count as 0).
    """

    def __init__(self, mean: torch.Tensor, eigvals: torch.Tensor, eigvecs: torch.Tensor, shape):
        self.mean = mean.to(torch.float64)            # (d,)
        self.eigvals = eigvals.to(torch.float64)      # (d,) descending, >= 0
        self.eigvecs = eigvecs.to(torch.float64)      # (d, d), eigenvectors as columns
        self.shape = tuple(shape)                     # (C, H, W)
        self.d = self.mean.numel()
        self._on_device = {}                          # device -> (U, lambda, mu) copies, made once

    def _params(self, device):
        """(eigvecs, eigvals, mean) on ``device``, copied there once and then reused."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = tuple(t.to(device) for t in (self.eigvecs, self.eigvals, self.mean))
        return self._on_device[key]

    @classmethod
    def fit(cls, x: torch.Tensor, chunk_size: int = 4096) -> "GaussianDenoiser":
        """Fit mean and covariance (1/N normalisation) of images x (N, C, H, W)."""
        as_images(x)
        positive_int(chunk_size, "chunk_size")
        n, d = x.shape[0], x[0].numel()
        mean = torch.zeros(d, dtype=torch.float64)
        for chunk in x.split(chunk_size):
            mean += flat64(chunk.cpu()).sum(0)
        mean /= n
        cov = torch.zeros(d, d, dtype=torch.float64)
        for chunk in x.split(chunk_size):           # second pass on centred data: no cancellation
            c = flat64(chunk.cpu()) - mean
            cov += c.T @ c
        cov /= n
        eigvals, eigvecs = torch.linalg.eigh(cov)
        order = torch.argsort(eigvals, descending=True)
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        # eigenvalues below the round-off floor of eigh (d * eps * lambda_max) are zero: when N <= d the
        # null space of Sigma must stay exactly null, or D_G would not project onto the data span as s -> 0
        floor = d * torch.finfo(torch.float64).eps * eigvals[0].clamp_min(0.0)
        eigvals = torch.where(eigvals > floor, eigvals, torch.zeros_like(eigvals))
        return cls(mean, eigvals, eigvecs, x.shape[1:])

    @property
    def covariance(self) -> torch.Tensor:
        return (self.eigvecs * self.eigvals) @ self.eigvecs.T

    def shrinkage(self, sigma: float) -> torch.Tensor:
        """The factors lambda_k / (lambda_k + s^2) applied along each principal component."""
        s = as_sigma(sigma, 1)[0]
        return _shrink(self.eigvals, s ** 2)

    def weight(self, sigma: float) -> torch.Tensor:
        """W_G(s) = Sigma (Sigma + s^2 I)^-1 = U diag(shrinkage) U^T (float64, d x d)."""
        return (self.eigvecs * self.shrinkage(sigma)) @ self.eigvecs.T

    def bias(self, sigma: float) -> torch.Tensor:
        """b_G(s) = (I - W_G(s)) mu, so that D_G(x) = W_G x + b_G (Theorem 1)."""
        return self.mean - self.weight(sigma) @ self.mean

    def _check(self, x, name="x"):
        as_images(x, name)
        same_dim(x, self.d, name, "the Gaussian denoiser")

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        self._check(x)
        s = as_sigma(sigma, x.shape[0]).to(x.device)
        U, lam, mu = self._params(x.device)
        coeff = (flat64(x) - mu) @ U                                # (B, d) PC coordinates
        coeff = coeff * _shrink(lam, s[:, None] ** 2)
        return (coeff @ U.T + mu).reshape(x.shape).to(x.dtype)

    def flow(self, x_T: torch.Tensor, sigma_T, sigma) -> torch.Tensor:
        """Closed-form PF-ODE solution under D_G from noise level ``sigma_T`` to ``sigma`` (eq. 7):

        x_s = mu + sum_k sqrt((s^2 + lambda_k) / (s_T^2 + lambda_k)) u_k^T (x_T - mu) u_k.
        ``sigma`` may be 0 (the end of sampling).
        """
        self._check(x_T, "x_T")
        b = x_T.shape[0]
        s_T = as_sigma(sigma_T, b, name="sigma_T").to(x_T.device)
        s = as_sigma(sigma, b, allow_zero=True).to(x_T.device)
        U, lam, mu = self._params(x_T.device)
        coeff = (flat64(x_T) - mu) @ U
        factor = ((s[:, None] ** 2 + lam) / (s_T[:, None] ** 2 + lam).clamp_min(1e-300)).sqrt()
        return ((coeff * factor) @ U.T + mu).reshape(x_T.shape).to(x_T.dtype)

    def to_affine(self, sigma: float) -> "AffineDenoiser":
        """D_G at one sigma as an explicit affine map."""
        return AffineDenoiser(self.weight(sigma), self.bias(sigma), self.shape)


class EmpiricalDenoiser:
    """D_M(x; s) = sum_i softmax_i(-||x - y_i||^2 / (2 s^2)) y_i   (paper eq. 5).

    The posterior mean of the empirical distribution (1/N) sum_i delta(x - y_i) under Gaussian
    noise: the optimal, memorizing denoiser. Computed exactly in float64 by a streaming
    log-sum-exp over chunks of ``chunk_size`` training images, so memory grows with
    batch x chunk, not batch x N. The training set itself is kept in its own dtype.
    """

    def __init__(self, x_train: torch.Tensor, chunk_size: int = 2048):
        as_images(x_train, "x_train")
        positive_int(chunk_size, "chunk_size")
        self.train = x_train.reshape(x_train.shape[0], -1)
        self.shape = tuple(x_train.shape[1:])
        self.d = self.train.shape[1]
        self.chunk_size = chunk_size
        self.sq_norms = torch.cat([flat64(c).pow(2).sum(1) for c in self.train.split(chunk_size)])

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        as_images(x)
        same_dim(x, self.d, "x", "the empirical denoiser")
        s = as_sigma(sigma, x.shape[0]).to(x.device).clamp_min(SIGMA_FLOOR)
        q = flat64(x)
        q_sq = q.pow(2).sum(1, keepdim=True)
        inv_two_var = 1.0 / (2 * s[:, None] ** 2)
        run_max = torch.full((q.shape[0], 1), -torch.inf, dtype=torch.float64, device=x.device)
        run_sum = torch.zeros_like(run_max)
        run_acc = torch.zeros_like(q)
        start = 0
        for chunk in self.train.split(self.chunk_size):
            y = chunk.to(x.device, torch.float64)
            y_sq = self.sq_norms[start:start + len(chunk)].to(x.device)
            start += len(chunk)
            # squared distances in float64: the ||x||^2 + ||y||^2 - 2xy cancellation costs ~1e-13
            dist = (q_sq + y_sq[None] - 2 * q @ y.T).clamp_min(0.0)
            logits = -dist * inv_two_var
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            rescale = (run_max - new_max).exp()
            w = (logits - new_max).exp()
            run_sum = run_sum * rescale + w.sum(1, keepdim=True)
            run_acc = run_acc * rescale + w @ y
            run_max = new_max
        return (run_acc / run_sum).reshape(x.shape).to(x.dtype)


class AffineDenoiser:
    """D_L(x) = W vec(x) + b: one affine map at one noise level (paper eq. 8).

    ``sigma`` is accepted for the protocol and ignored: a distilled D_L belongs to one sigma.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, shape):
        if isinstance(shape, int) or not hasattr(shape, "__iter__"):
            raise TypeError(f"shape must be the image shape (C, H, W) as a tuple, got {shape!r}")
        shape = tuple(int(s) for s in shape)
        d = 1
        for s in shape:
            d *= s
        if not isinstance(W, torch.Tensor) or W.shape != (d, d):
            raise ValueError(f"W must be a ({d}, {d}) tensor for image shape {shape}, "
                             f"got {tuple(W.shape) if isinstance(W, torch.Tensor) else type(W).__name__}")
        if not isinstance(b, torch.Tensor) or b.shape != (d,):
            raise ValueError(f"b must be a ({d},) tensor for image shape {shape}, "
                             f"got {tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}")
        if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
            raise ValueError("W and b must contain only finite values")
        self.W = W.to(torch.float64)
        self.b = b.to(torch.float64)
        self.shape = shape
        self.d = d

    def __call__(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        as_images(x)
        same_dim(x, self.d, "x", "the affine denoiser")
        out = flat64(x) @ self.W.to(x.device).T + self.b.to(x.device)
        return out.reshape(x.shape).to(x.dtype)


class PerSigmaDenoiser:
    """A family of denoisers, one per noise level (e.g. the 10 distilled D_L of the 10-step grid).

    Calling it with a sigma dispatches to the member whose sigma is nearest in log-space, so it
    can drive ``utils.edm.sample`` on the same grid it was fitted on.
    """

    def __init__(self, sigmas, denoisers):
        self.sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
        self.denoisers = list(denoisers)
        if len(self.denoisers) != len(self.sigmas) or not len(self.denoisers):
            raise ValueError(f"need one denoiser per sigma: {len(self.sigmas)} sigmas, {len(self.denoisers)} denoisers")

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        s = as_sigma(sigma, x.shape[0])
        if not torch.all(s == s[0]):
            raise ValueError("PerSigmaDenoiser needs one sigma for the whole batch")
        i = int(torch.argmin((self.sigmas.log() - s[0].log()).abs()))
        return self.denoisers[i](x, s[0].item())
