"""The EDM setup (Karras et al. 2022) as the paper uses it (paper.md §2).

* ``sigma_steps``: the rho-schedule of noise levels (paper.md §2.1).
* ``coefficients`` / ``Precond``: D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s)) (paper
  eq. 13) for three parameterizations: ``"edm"`` (EDMPrecond, every model of the book), ``"ve"``
  (the paper's Baseline-VE, App. A) and ``"dae"`` (no preconditioning: the network predicts x,
  App. G.2). ``EDMPrecond(net)`` is ``Precond(net, "edm")``.
* ``edm_loss`` (ln s ~ N(-1.2, 1.2^2), optionally mixed with a log-uniform share), ``ve_loss`` and
  ``dae_loss``: the matching training losses (paper.md §2.3), each = ``training_draws`` (sigma, then
  the noise) + ``denoising_loss`` (the arithmetic); ``training_draws_above``: how many training draws
  a run spends above a noise level.
* ``initial_noise``: the starting states x_T = sigma_max * eps of a sampling run (one convention).
* ``sample`` / ``sample_many``: the deterministic probability-flow ODE with Euler (paper eq. 4) or Heun;
  ``nfe``: how many denoiser calls a run on a grid costs.
* ``sample_teleported``: "teleport, then finish" (Wang & Vastola): the closed-form Gaussian flow from
  sigma_max to a handover level of the grid, then ``sample`` on the rest of the grid.

Sigma is always the noise *standard deviation*, x_s = x_0 + s * eps.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .checks import as_images, as_sigma, checked_output, positive_int, sigma_list

P_MEAN, P_STD = -1.2, 1.2            # EDM's log-normal training distribution of sigma
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0   # the sampler's range (paper.md §2.1)
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.02, 100.0   # VELoss's log-uniform range (paper.md §2.3)
SIGMA_DATA = 0.5
PRECONDS = ("edm", "ve", "dae")


def sigma_steps(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0) -> torch.Tensor:
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


# The one grid of every band summary the book reports (a curve's mean over a noise regime, e.g. the
# intermediate-regime RMSE to D_G that chapters 2 and 3 both quote): the 40-step EDM grid. The 10-step
# sampler grid holds only two levels of the 8x8 digits' intermediate regime, too few for a mean.
BAND_GRID_STEPS = 40


def band_grid() -> torch.Tensor:
    """The noise levels of every band mean (:data:`BAND_GRID_STEPS`-step EDM grid, float64, descending)."""
    return sigma_steps(BAND_GRID_STEPS)


def coefficients(sigma: torch.Tensor, kind: str = "edm", sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) of preconditioning ``kind`` for a tensor of sigmas.

    * ``"edm"``: s_d^2/(s^2+s_d^2), s s_d/sqrt(s^2+s_d^2), 1/sqrt(s^2+s_d^2), ln(s)/4;
    * ``"ve"``: 1, s, 1, ln(s/2) (EDM's VEPrecond, the paper's Baseline-VE);
    * ``"dae"``: 0, 1, 1, s (the network predicts x from the raw input and the raw sigma label).
    """
    if kind not in PRECONDS:
        raise ValueError(f"preconditioning must be one of {PRECONDS}, got {kind!r}")
    s = torch.as_tensor(sigma)
    if kind == "edm":
        sd = sigma_data
        return (sd ** 2 / (s ** 2 + sd ** 2), s * sd / (s ** 2 + sd ** 2).sqrt(),
                1 / (sd ** 2 + s ** 2).sqrt(), s.log() / 4)
    if kind == "ve":
        return torch.ones_like(s), s, torch.ones_like(s), (0.5 * s).log()
    return torch.zeros_like(s), torch.ones_like(s), torch.ones_like(s), s


class Precond(nn.Module):
    """A denoiser ``D(x, sigma) -> x_hat`` around a raw network ``net(x_in, c_noise) -> F``:
    D = c_skip x + c_out F(c_in x; c_noise) with the coefficients of :func:`coefficients`.

    The combination is formed in float64; the result has x's shape and dtype. A wrong input shape
    fails here with the shape the network expects, not deep inside a convolution.
    """

    # Evaluate through one compiled graph (see _compiled_denoise) when called without gradients in
    # eval mode on the CPU. Off by default (the book evaluates eagerly); utils.training.runs.get_model
    # turns it on for the models it loads only when HGB_EVAL_COMPILE=1 (opt-in).
    compile_eval = False

    def __init__(self, net: nn.Module, kind: str = "edm", sigma_data: float = SIGMA_DATA):
        super().__init__()
        if kind not in PRECONDS:
            raise ValueError(f"preconditioning must be one of {PRECONDS}, got {kind!r}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net = net
        self.kind = kind
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor):
        return coefficients(sigma, self.kind, self.sigma_data)

    def _check_shape(self, x: torch.Tensor) -> None:
        res, ch = getattr(self.net, "img_resolution", None), getattr(self.net, "img_channels", None)
        if res is not None and tuple(x.shape[1:]) != (ch, res, res):
            raise ValueError(f"x has image shape {tuple(x.shape[1:])} but this network was built for "
                             f"({ch}, {res}, {res})")

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        as_images(x)
        self._check_shape(x)
        s = as_sigma(sigma, x.shape[0], dtype=torch.float64, device=x.device)
        if self.compile_eval and not self.training and not torch.is_grad_enabled() and x.device.type == "cpu":
            return _compiled_denoise()(self, x, s)
        return self.denoise(x, s)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without its checks (no host synchronisation, so it compiles into one
        graph): ``sigma`` must already be a (B,) tensor of noise levels > 0 on x's device."""
        param = next(self.net.parameters())
        s = sigma.to(torch.float64)
        c_skip, c_out, c_in, c_noise = (c.view(-1, 1, 1, 1) for c in self.coefficients(s))
        x64 = x.to(torch.float64)
        f = self.net((c_in * x64).to(param.dtype), c_noise.flatten().to(param.dtype))
        return (c_skip * x64 + c_out * f.to(torch.float64)).to(x.dtype)


def _denoise(model: Precond, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return model.denoise(x, sigma)


_COMPILED = []


def _compiled_denoise():
    """:meth:`Precond.denoise` compiled by ``torch.compile`` once per process, the batch size dynamic.
    The model is an argument, so every model of one architecture shares the graph (and the on-disk
    compile cache, ``utils.training.store.use_compile_cache``); its GroupNorm, SiLU and preconditioning
    are fused around the convolutions, which stay oneDNN's. The results equal the eager ones in
    float32 to ~1e-6 (scripts/bench.py measures the gain and the largest difference)."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(_denoise, dynamic=True))
    return _COMPILED[0]


class EDMPrecond(Precond):
    """EDM preconditioning (``Precond(net, "edm")``), the parameterization of every trained model."""

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__(net, "edm", sigma_data)


# --------------------------------------------------------------------------- training losses
# Each loss is split in two: the random draws of a batch (sigma, then the noise, from one generator,
# in that order) and :func:`denoising_loss`, the arithmetic on them. The training step draws first
# and may compile the arithmetic (utils.training.step); both routes give the same draws.

def _noise(x, generator, gen_device):
    return torch.randn(x.shape, generator=generator, device=gen_device).to(x.device, x.dtype)


def denoising_loss(denoiser, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, kind: str = "edm") -> torch.Tensor:
    """The loss of preconditioning ``kind`` on a batch, given its draws: ``sigma`` (B,) and ``noise``
    (x's shape), averaged over the batch. With y = x + s eps and the per-image squared error
    e = ||D(y; s) - x||^2 (paper eq. 3): ``"edm"`` weights e by lambda(s) = (s^2 + s_d^2)/(s s_d)^2,
    ``"ve"`` divides it by s^2, ``"dae"`` takes it as is. A denoiser with a ``denoise(x, sigma)``
    method (:class:`Precond`) is called through it, without input checks (the training step's inputs
    are made here), so the whole loss compiles into one graph."""
    if kind not in PRECONDS:
        raise ValueError(f"kind must be one of {PRECONDS}, got {kind!r}")
    y = x + sigma.view(-1, 1, 1, 1) * noise
    d = denoiser.denoise(y, sigma) if hasattr(denoiser, "denoise") else denoiser(y, sigma)
    err = ((d - x) ** 2).flatten(1).sum(1)
    if kind == "edm":
        sd = getattr(denoiser, "sigma_data", SIGMA_DATA)
        return (((sigma ** 2 + sd ** 2) / (sigma * sd) ** 2) * err).mean()
    if kind == "ve":
        return (err / sigma ** 2).mean()
    return err.mean()


def edm_training_sigmas(batch: int, generator: torch.Generator | None = None, uniform_share: float = 0.0,
                        device="cpu") -> torch.Tensor:
    """Noise levels for one training batch: ln s ~ N(P_mean, P_std^2) (EDM), except that a share
    ``uniform_share`` of the draws is log-uniform on [SIGMA_MIN, SIGMA_MAX] instead.

    The mixture changes how often each sigma is trained, not what the optimum at that sigma is
    (the DSM optimum at every sigma is the posterior mean whatever p(sigma) is): it gives the
    high noise levels, which EDM's log-normal almost never draws, enough training."""
    if not 0.0 <= uniform_share < 1.0:
        raise ValueError(f"uniform_share must lie in [0, 1), got {uniform_share}")
    gen_device = generator.device if generator is not None else device
    rnd = torch.randn(batch, generator=generator, device=gen_device)
    log_s = rnd * P_STD + P_MEAN
    if uniform_share > 0:
        u = torch.rand(batch, generator=generator, device=gen_device)
        pick = torch.rand(batch, generator=generator, device=gen_device) < uniform_share
        log_uniform = math.log(SIGMA_MIN) + u * (math.log(SIGMA_MAX) - math.log(SIGMA_MIN))
        log_s = torch.where(pick, log_uniform, log_s)
    return log_s.exp().to(device)


def ve_training_sigmas(batch: int, generator: torch.Generator | None = None, device="cpu",
                       dtype=torch.float32) -> torch.Tensor:
    """Noise levels of EDM's VELoss: s = s_min (s_max/s_min)^u, u ~ U(0, 1), on [0.02, 100]."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch, generator=generator, device=gen_device).to(device, dtype)
    return VE_SIGMA_MIN * (VE_SIGMA_MAX / VE_SIGMA_MIN) ** u


def training_draws(kind: str, x: torch.Tensor, generator: torch.Generator | None = None,
                   uniform_share: float = 0.0, dae_sigma: float | None = None):
    """``(sigma, noise)`` of one training batch ``x`` for preconditioning ``kind``, in the order every
    loss draws them: sigma (:func:`edm_training_sigmas`, :func:`ve_training_sigmas`, or ``dae_sigma``
    for every image), then the noise, both from ``generator`` and in x's dtype on x's device."""
    gen_device = generator.device if generator is not None else x.device
    if kind == "edm":
        sigma = edm_training_sigmas(x.shape[0], generator, uniform_share, device=x.device).to(x.dtype)
    elif kind == "ve":
        sigma = ve_training_sigmas(x.shape[0], generator, device=x.device, dtype=x.dtype)
    elif kind == "dae":
        if dae_sigma is None:
            raise ValueError("dae_sigma (the fixed noise level) is required for kind 'dae'")
        sigma = as_sigma(dae_sigma, x.shape[0], dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"kind must be one of {PRECONDS}, got {kind!r}")
    return sigma, _noise(x, generator, gen_device)


def training_draws_above(sigma: float, images_seen: int, uniform_share: float = 0.0) -> float:
    """Expected number of training draws with noise level above ``sigma`` for a network that saw
    ``images_seen`` training images, with sigma drawn by :func:`edm_training_sigmas` (EDM's log-normal,
    a share ``uniform_share`` of it replaced by log-uniform draws on [SIGMA_MIN, SIGMA_MAX])."""
    s = float(as_sigma(sigma, 1)[0])
    positive_int(images_seen, "images_seen")
    if not 0.0 <= uniform_share < 1.0:
        raise ValueError(f"uniform_share must lie in [0, 1), got {uniform_share}")
    z = (math.log(s) - P_MEAN) / P_STD
    p_lognormal = 0.5 * math.erfc(z / math.sqrt(2))
    lo, hi = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    p_uniform = min(1.0, max(0.0, (hi - math.log(s)) / (hi - lo)))
    return images_seen * ((1 - uniform_share) * p_lognormal + uniform_share * p_uniform)


def edm_loss(denoiser, x: torch.Tensor, generator: torch.Generator | None = None,
             uniform_share: float = 0.0) -> torch.Tensor:
    """The EDM training loss, averaged over the batch: lambda(s) ||D(x + s eps; s) - x||^2 with
    lambda(s) = (s^2 + s_d^2)/(s s_d)^2 and s from :func:`edm_training_sigmas` (paper.md §2.3).
    ``generator`` makes the draws reproducible."""
    as_images(x)
    sigma, noise = training_draws("edm", x, generator, uniform_share)
    return denoising_loss(denoiser, x, sigma, noise, "edm")


def ve_loss(denoiser, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's VELoss (the paper's Baseline-VE): s = s_min (s_max/s_min)^u, u ~ U(0, 1), on
    [0.02, 100], weight 1/s^2."""
    as_images(x)
    sigma, noise = training_draws("ve", x, generator)
    return denoising_loss(denoiser, x, sigma, noise, "ve")


def dae_loss(denoiser, x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The plain DSM loss (paper eq. 3) at one fixed noise level: ||D(x + s eps; s) - x||^2 per image,
    averaged over the batch (a denoising auto-encoder, paper App. G.2)."""
    as_images(x)
    s, noise = training_draws("dae", x, generator, dae_sigma=sigma)
    return denoising_loss(denoiser, x, s, noise, "dae")


# --------------------------------------------------------------------------- sampling

def initial_noise(n: int, shape, seed: int = 0, sigma_max: float = SIGMA_MAX, device="cpu",
                  dtype=torch.float32) -> torch.Tensor:
    """``n`` starting states x_T = sigma_max * eps of image ``shape`` (C, H, W).

    The book's one convention: eps is drawn in float64 on the CPU from a generator seeded by
    ``seed`` alone (``utils.data.seeded_normal``, stream "initial_noise"), then cast to ``dtype``
    (float32 by default, the dtype of the networks) and moved to ``device``; so every model of a
    sweep, on any device, starts from the same noises."""
    from .data import seeded_normal
    positive_int(n, "n")
    if not (math.isfinite(float(sigma_max)) and float(sigma_max) > 0):
        raise ValueError(f"sigma_max must be a finite number > 0, got {sigma_max!r}")
    if (isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in shape)):
        raise TypeError(f"shape must be the image shape (C, H, W) as three positive ints, got {shape!r}")
    eps = seeded_normal((n, *tuple(shape)), seed, "initial_noise")
    return (float(sigma_max) * eps).to(device=device, dtype=dtype)


SOLVERS = ("euler", "heun")


def sample(denoiser, x_T: torch.Tensor, sigmas, solver: str = "euler", return_trajectory: bool | str = False):
    """Integrate the probability-flow ODE dx/ds = (x - D(x; s))/s from ``x_T`` down to s = 0.

    ``x_T`` is already at noise level ``sigmas[0]`` (e.g. :func:`initial_noise`). ``sigmas`` is
    descending and positive; a final 0 is appended. The state is kept in float64.

    * ``"euler"``: paper eq. (4), x_{i+1} = x_i + (s_{i+1} - s_i)(x_i - D(x_i; s_i))/s_i; the last step
      (to s = 0) returns D(x; s_min) exactly. NFE = len(sigmas).
    * ``"heun"``: EDM's 2nd-order solver (Euler predictor, trapezoidal corrector except on the last
      step to 0). NFE = 2 len(sigmas) - 1.

    Returns the final sample in x_T's dtype, and with ``return_trajectory`` also the list of
    denoiser outputs D(x_i; s_i), one per step (what the paper's trajectory figures show); with
    ``return_trajectory="states"`` the list of the states x_i themselves, at noise level s_i, one per
    step (x_0 = x_T; where a Jacobian or a perturbation along the trajectory is taken, paper App. H).
    A denoiser output that is not finite raises a ``ValueError`` naming the denoiser and sigma.
    """
    as_images(x_T, "x_T")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if return_trajectory not in (False, True, "states"):
        raise ValueError(f"return_trajectory must be False, True (denoiser outputs) or 'states', "
                         f"got {return_trajectory!r}")
    keep_states = return_trajectory == "states"
    try:
        s = torch.tensor(sigma_list(sigmas), dtype=torch.float64)
    except ValueError as e:
        raise ValueError(f"{e} (give no trailing 0: the sampler appends it)") from None
    if (s[1:] >= s[:-1]).any():
        raise ValueError("sigmas must be strictly descending")
    s = torch.cat([s, s.new_zeros(1)]).tolist()
    dtype = x_T.dtype

    def D(x, sigma):
        xin = x.to(dtype)
        return checked_output(denoiser(xin, sigma), xin, denoiser, sigma).to(torch.float64)

    x = x_T.to(torch.float64)
    trajectory = []
    with torch.inference_mode():
        for i in range(len(s) - 1):
            s_cur, s_next = s[i], s[i + 1]
            den = D(x, s_cur)
            trajectory.append((x if keep_states else den).to(dtype))
            d_cur = (x - den) / s_cur
            x_next = x + (s_next - s_cur) * d_cur
            if solver == "heun" and s_next > 0:
                d_next = (x_next - D(x_next, s_next)) / s_next
                x_next = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
            x = x_next
    out = x.to(dtype)
    return (out, trajectory) if return_trajectory is not False else out


def nfe(n_levels: int, solver: str = "euler") -> int:
    """Denoiser evaluations of :func:`sample` on a grid of ``n_levels`` noise levels (no trailing 0):
    ``n_levels`` for Euler, ``2 n_levels - 1`` for Heun (no corrector on the last step to 0)."""
    positive_int(n_levels, "n_levels")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return n_levels if solver == "euler" else 2 * n_levels - 1


def sample_teleported(denoiser, gaussian, x_T: torch.Tensor, sigmas, handover: int, solver: str = "euler",
                      return_trajectory: bool = False):
    """Teleport, then finish: jump from ``sigmas[0]`` to ``sigmas[handover]`` along the closed-form
    probability-flow ODE of a Gaussian (paper eq. 7; Wang & Vastola's "analytical teleportation"),
    then integrate the rest of the grid, ``sigmas[handover:]``, with ``denoiser`` by :func:`sample`.

    ``gaussian`` is anything with ``flow(x_T, sigma_T, sigma)`` (``utils.denoisers.GaussianDenoiser``,
    usually the Gaussian of the denoiser's own training set). ``handover`` is an index into
    ``sigmas``: 0 is the plain :func:`sample` from ``x_T``; ``k`` skips the first ``k`` levels, so the
    run costs ``nfe(len(sigmas) - k, solver)`` denoiser calls instead of ``nfe(len(sigmas), solver)``.
    The state handed over is formed from ``x_T`` in float64 by ``gaussian.flow`` and cast to x_T's dtype.
    Returns what :func:`sample` returns (the trajectory covers the levels the denoiser integrates).
    """
    as_images(x_T, "x_T")
    if not callable(getattr(gaussian, "flow", None)):
        raise TypeError(f"gaussian must have a closed-form flow(x_T, sigma_T, sigma) (e.g. "
                        f"utils.denoisers.GaussianDenoiser), got {type(gaussian).__name__}")
    s = sigma_list(sigmas)
    if isinstance(handover, bool) or not isinstance(handover, (int, np.integer)) or not 0 <= handover < len(s):
        raise ValueError(f"handover must be an index into sigmas, 0 <= handover < {len(s)}, got {handover!r}")
    handover = int(handover)
    if handover == 0:
        return sample(denoiser, x_T, s, solver=solver, return_trajectory=return_trajectory)
    with torch.inference_mode():
        x_h = gaussian.flow(x_T.to(torch.float64), s[0], s[handover]).to(x_T.dtype)
    return sample(denoiser, x_h, s[handover:], solver=solver, return_trajectory=return_trajectory)


def sample_many(denoisers: dict, x_T: torch.Tensor, sigmas, solver: str = "euler",
                return_trajectory: bool | str = False) -> dict:
    """``{label: D}`` -> ``{label: samples}`` (on the CPU), every denoiser started from the same
    ``x_T``; with ``return_trajectory`` each value is ``(samples, trajectory)`` as in :func:`sample`."""
    if not isinstance(denoisers, dict) or not denoisers:
        raise ValueError("denoisers must be a non-empty {label: denoiser} dict")
    out = {}
    for label, D in denoisers.items():
        res = sample(D, x_T, sigmas, solver=solver, return_trajectory=return_trajectory)
        out[label] = (res[0].cpu(), [t.cpu() for t in res[1]]) if return_trajectory is not False else res.cpu()
    return out
