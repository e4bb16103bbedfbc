"""Shared code of the book "The hidden Gaussian structure of diffusion models".

One module per concern (submodules are imported on first use, so ``import utils`` is cheap):

profiles    scale presets smoke / cpu / gpu and ``resolve("auto")``
data        dataset registry -> float32 (N, C, H, W) in [-1, 1]; held-out splits; noisy inputs
regimes     the low / intermediate / high noise regimes, from the data's covariance spectrum
edm         sigma grids, preconditioning and losses, initial noise, Euler / Heun samplers
denoisers   the protocol D(x, sigma), its batched call, and D_G, D_M, D_L
local_denoisers  closed-form local denoisers: patch Wiener, LS / ELS machines, data-derived locality
nets        a small EDM-style U-Net ("model scale" = model_channels)
train       training with EMA, lr ramp-up, checkpoint + resume, cached get_model, snapshots, train_many
            (the front door of the package training/: spec, step, store, runs, pool, estimate)
distill     closed-form and Adam linear distillation; Theorem 1's affine DSM trainer
metrics     RMSE curves, linearity, GL score / NN ratio, similarity, weight errors, statistics
checks      argument checks with clear errors
plotting    seaborn theme, image grids, log-sigma curves
book        notebook helpers: setup, claims ledger
colab       Colab install logic
paths       where artifacts and results go
chapters    what only one chapter computes (utils.chapters.<name>), importing only the core
"""
import importlib

__version__ = "0.1.0"
_SUBMODULES = ("profiles", "data", "regimes", "edm", "denoisers", "local_denoisers", "nets", "train", "training", "distill", "metrics",
               "plotting", "book", "colab", "paths", "checks", "chapters")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
