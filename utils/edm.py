"""The EDM setup (Karras et al. 2022) as the paper uses it (paper.md §2).

* ``sigma_steps``: the rho-schedule of noise levels (paper.md §2.1).
* ``EDMPrecond``: D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s))  (paper eq. 13).
* ``edm_loss``: ln s ~ N(-1.2, 1.2^2), weight (s^2 + s_d^2) / (s s_d)^2  (paper.md §2.3).
* ``sample``: the deterministic probability-flow ODE with Euler (paper eq. 4) or Heun steps.

Sigma is always the noise *standard deviation*, x_s = x_0 + s * eps.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .checks import as_images, as_sigma, positive_int

P_MEAN, P_STD = -1.2, 1.2


def sigma_steps(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM noise levels s_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho.

    Returns float64 (n,), descending from ``sigma_max`` to ``sigma_min``, without a trailing 0.
    """
    positive_int(n, "n")
    if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + i / (n - 1) * (b - a)) ** rho


class EDMPrecond(nn.Module):
    """EDM preconditioning around a raw network ``net(x_in, c_noise) -> F``.

    c_skip = s_d^2/(s^2+s_d^2), c_out = s s_d/sqrt(s^2+s_d^2), c_in = 1/sqrt(s^2+s_d^2),
    c_noise = ln(s)/4. The result is a denoiser ``D(x, sigma) -> x_hat`` of x's shape and dtype.
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) for a tensor of sigmas."""
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        as_images(x)
        param = next(self.net.parameters())
        s = as_sigma(sigma, x.shape[0], dtype=torch.float64, device=x.device)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in self.coefficients(s))
        x64 = x.to(torch.float64)
        f = self.net((c_in * x64).to(param.dtype), c_noise.flatten().to(param.dtype))
        return (c_skip * x64 + c_out * f.to(torch.float64)).to(x.dtype)


def edm_loss(denoiser, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The EDM training loss, averaged over the batch: lambda(s) ||D(x + s eps; s) - x||^2.

    ln s ~ N(P_mean=-1.2, P_std=1.2) and lambda(s) = (s^2 + s_d^2)/(s s_d)^2 (paper.md §2.3).
    ``generator`` makes the noise draw reproducible.
    """
    as_images(x)
    sd = getattr(denoiser, "sigma_data", 0.5)
    gen_device = generator.device if generator is not None else x.device
    rnd = torch.randn(x.shape[0], generator=generator, device=gen_device).to(x.device, x.dtype)
    sigma = (rnd * P_STD + P_MEAN).exp()
    noise = torch.randn(x.shape, generator=generator, device=gen_device).to(x.device, x.dtype)
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    d = denoiser(x + sigma.view(-1, 1, 1, 1) * noise, sigma)
    per_image = ((d - x) ** 2).flatten(1).sum(1)
    return (weight * per_image).mean()


SOLVERS = ("euler", "heun")


def sample(denoiser, x_T: torch.Tensor, sigmas, solver: str = "euler", return_trajectory: bool = False):
    """Integrate the probability-flow ODE dx/ds = (x - D(x; s))/s from ``x_T`` down to s = 0.

    ``x_T`` is already at noise level ``sigmas[0]`` (e.g. ``sigmas[0] * randn``). ``sigmas`` is
    descending and positive; a final 0 is appended. The state is kept in float64.

    * ``"euler"``: paper eq. (4), x_{i+1} = x_i + (s_{i+1} - s_i)(x_i - D(x_i; s_i))/s_i; the last step
      (to s = 0) returns D(x; s_min) exactly. NFE = len(sigmas).
    * ``"heun"``: EDM's 2nd-order solver (Euler predictor, trapezoidal corrector except on the last
      step to 0). NFE = 2 len(sigmas) - 1.

    Returns the final sample in x_T's dtype, and with ``return_trajectory`` also the list of
    denoiser outputs D(x_i; s_i), one per step (what the paper's trajectory figures show).
    """
    as_images(x_T, "x_T")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    s = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if s.numel() == 0 or not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError("sigmas must be a non-empty sequence of finite values > 0 (no trailing 0)")
    if (s[1:] >= s[:-1]).any():
        raise ValueError("sigmas must be strictly descending")
    s = torch.cat([s, s.new_zeros(1)]).tolist()
    dtype = x_T.dtype

    def D(x, sigma):
        return denoiser(x.to(dtype), sigma).to(torch.float64)

    x = x_T.to(torch.float64)
    trajectory = []
    with torch.inference_mode():
        for i in range(len(s) - 1):
            s_cur, s_next = s[i], s[i + 1]
            den = D(x, s_cur)
            trajectory.append(den.to(dtype))
            d_cur = (x - den) / s_cur
            x_next = x + (s_next - s_cur) * d_cur
            if solver == "heun" and s_next > 0:
                d_next = (x_next - D(x_next, s_next)) / s_next
                x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
            x = x_next
    out = x.to(dtype)
    return (out, trajectory) if return_trajectory else out
