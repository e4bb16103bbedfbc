"""Input validation shared by every module, and the one flattening helper.

Each helper raises a ``ValueError`` or ``TypeError`` whose message names the argument and
the form that was expected, so a wrong call fails loudly instead of returning a wrong answer.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm


def as_images(x, name: str = "x", ndim: int = 4) -> torch.Tensor:
    """Check that ``x`` is a finite floating tensor of rank ``ndim`` (default (B, C, H, W))."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != ndim:
        form = "(B, C, H, W)" if ndim == 4 else f"rank {ndim}"
        raise ValueError(f"{name} must have shape {form}, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    # checked in slices so a large training set does not need a same-sized boolean temporary
    if not all(bool(torch.isfinite(part).all()) for part in x.reshape(x.shape[0], -1).split(4096)):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return x


def as_sigma(sigma, batch: int, *, name: str = "sigma", allow_zero: bool = False,
             dtype=torch.float64, device=None) -> torch.Tensor:
    """Return ``sigma`` as a (batch,) tensor after checking it is finite and positive.

    ``sigma`` may be a python number, a 0-d tensor or a (batch,) tensor.
    """
    if isinstance(sigma, (np.integer, np.floating)):
        sigma = float(sigma)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, torch.Tensor)):
        raise TypeError(f"{name} must be a float or a ({batch},) tensor, got {type(sigma).__name__}")
    s = torch.as_tensor(sigma, dtype=dtype, device=device)
    if s.ndim == 0:
        s = s.expand(batch)
    elif s.shape != (batch,):
        raise ValueError(f"{name} must be a float or a ({batch},) tensor, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError(f"{name} must be finite, got {s.tolist()[:4]}")
    if allow_zero:
        if (s < 0).any():
            raise ValueError(f"{name} must be >= 0, got min {s.min().item():.3g}")
    elif (s <= 0).any():
        raise ValueError(f"{name} must be > 0 (the noise standard deviation), got min {s.min().item():.3g}")
    return s


def sigma_list(sigmas, name: str = "sigmas") -> list[float]:
    """``sigmas`` (a number, sequence, array or tensor) as a non-empty list of python floats, each
    finite and > 0."""
    try:
        if isinstance(sigmas, (str, bytes)):
            raise TypeError("a string")
        s = torch.as_tensor(np.asarray(sigmas, dtype=np.float64) if not isinstance(sigmas, torch.Tensor) else sigmas,
                            dtype=torch.float64).flatten()
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a sequence of noise levels (floats > 0), got {type(sigmas).__name__} "
                        f"{sigmas!r:.60}") from e
    if s.numel() == 0:
        raise ValueError(f"{name} must hold at least one noise level, got none")
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"{name} must be finite values > 0 (noise standard deviations), got {s.tolist()[:6]}")
    return s.tolist()


def positive_int(n, name: str) -> int:
    """Check that ``n`` is a positive integer (a python or numpy int) and return it as an int."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(n).__name__} {n!r}")
    if n <= 0:
        raise ValueError(f"{name} must be a positive int, got {n}")
    return int(n)


def as_seed(seed, name: str = "seed") -> int:
    """Check that ``seed`` is an int >= 0 (a python or numpy int) and return it as an int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 0 (e.g. 0), got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be an int >= 0, got {seed}")
    return int(seed)


def same_dim(x: torch.Tensor, d: int, name: str = "x", what: str = "the denoiser") -> None:
    """Check that ``x`` flattens to dimension ``d`` (C*H*W of ``what``)."""
    got = x[0].numel()
    if got != d:
        raise ValueError(f"{name} has C*H*W = {got} (shape {tuple(x.shape[1:])}) but {what} expects d = {d}")


def flat64(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, d) float64: images as vectors for the linear algebra done in float64."""
    return x.reshape(x.shape[0], -1).to(torch.float64)


def denoiser_name(denoiser) -> str:
    """A short name for error messages: ``denoiser.name`` if set, else its class name."""
    return str(getattr(denoiser, "name", None) or type(denoiser).__name__)


def checked_output(out, x: torch.Tensor, denoiser, sigma) -> torch.Tensor:
    """Check a denoiser's output against its input: a tensor of x's shape with finite values.

    Raises a ``ValueError`` that names the denoiser and the noise level, instead of letting a
    NaN travel silently into a sample, a metric or a distilled weight."""
    who = denoiser_name(denoiser)
    if isinstance(sigma, torch.Tensor):
        sig = f"{float(sigma.min()):.4g}" if sigma.numel() and bool((sigma == sigma.flatten()[0]).all()) \
            else f"{float(sigma.min()):.4g}..{float(sigma.max()):.4g}"
    else:
        sig = f"{float(sigma):.4g}"
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"denoiser {who} returned {type(out).__name__}, expected a tensor of shape {tuple(x.shape)}")
    if out.shape != x.shape:
        raise ValueError(f"denoiser {who} returned shape {tuple(out.shape)} for an input of shape "
                         f"{tuple(x.shape)} at sigma = {sig}; a denoiser D(x, sigma) must return x's shape")
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).reshape(len(out), -1).any(1).sum())
        raise ValueError(f"denoiser {who} returned non-finite values (nan or inf) for {bad} of {len(out)} "
                         f"inputs at sigma = {sig}")
    return out


def progress_bar(iterable, desc: str, enabled: bool = True, total: int | None = None):
    """The book's progress bar for a loop of seconds (checkpoints, noise levels, models): a plain
    tqdm bar on stderr (the built pages drop stderr, so it shows only while a notebook runs), shown
    only once the loop has run for 2 s and removed when it ends. ``enabled=False`` turns it off."""
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False, delay=2,
                mininterval=2, ncols=100)
