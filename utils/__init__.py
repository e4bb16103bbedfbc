"""Shared code of the book "The hidden Gaussian structure of diffusion models".

One module per concern (submodules are imported on first use, so ``import utils`` is cheap):

profiles    scale presets smoke / cpu / gpu and ``resolve("auto")``
data        dataset registry -> float32 (N, C, H, W) in [-1, 1]; held-out splits
edm         sigma grids, EDM preconditioning and loss, Euler / Heun samplers
denoisers   the protocol D(x, sigma) and D_G, D_M, D_L
nets        a small EDM-style U-Net ("model scale" = model_channels)
train       training with EMA, lr ramp-up, checkpoint + resume, cached get_model
distill     closed-form and Adam linear distillation
metrics     linearity, RMSE/NMSE, GL score, NN ratio, weight NMSE, alignment, similarity
plotting    seaborn theme, image grids, log-sigma curves
book        notebook helpers: setup, claims ledger
colab       Colab install logic
paths       where artifacts and results go
"""
import importlib

__version__ = "0.1.0"
_SUBMODULES = ("profiles", "data", "edm", "denoisers", "nets", "train", "distill", "metrics",
               "plotting", "book", "colab", "paths", "checks",
               # chapter-specific experiment code
               "theory", "generalization", "linearity", "emergence", "strong")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
