"""Scale presets: one papermill parameter, ``profile``, picks the size of every experiment.

=========  ==========================  ===================================================
profile    runs on                     data and budget
=========  ==========================  ===================================================
``smoke``  ``make test``               tiny subsets, a few training steps; asserts no science
``cpu``    ``make book``, CI, laptop   data shipped inside pip packages; every claim asserted
``colab``  ``auto`` on a GPU (Colab)   MNIST 32x32; each chapter within one free T4 session
``gpu``    chosen explicitly, CUDA     the paper's CIFAR-10 settings; hours per chapter
=========  ==========================  ===================================================

``resolve("auto")`` picks ``colab`` when CUDA is available and ``cpu`` otherwise; ``gpu`` (the
paper's scale) is only ever chosen by name. ``colab`` and ``gpu`` need CUDA: without it
``resolve`` raises, unless the caller opts in to a (slow) CPU run with ``allow_cpu=True`` or the
environment variable ``HGB_ALLOW_CPU=1`` (papermill kernels inherit it).

**Budgets.** ``resolve(name, budget="smoke")`` (or ``HGB_BUDGET=smoke``) keeps the profile's data and
model (dataset, image shape, channel counts, U-Net structure, sampler, learning rate, every float,
string and switch) and cuts its *sizes, step counts and counts* to the smoke profile's values, by
one rule (:func:`_smoke_budget`). It is how the GPU profiles' code paths are tested on a CPU
(tests/test_gpu_paths.py); a budgeted profile asserts no claim.

A chapter reads the shared fields (dataset, model ladder, training length) from the returned
:class:`Profile`, and its own knobs from its chapter module: ``<module>.settings(P)``, a typed,
validated dataclass (``utils.settings.ChapterSettings``) whose per-profile blocks live next to it, in
``utils/chapters/<name>.py``; the smoke budget reaches them through :func:`budget_value`.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field, replace

import torch

NAMES = ("smoke", "cpu", "colab", "gpu")
CUDA_PROFILES = ("colab", "gpu")      # these need a CUDA device unless the caller opts in to the CPU
BUDGETS = ("full", "smoke")


@dataclass(frozen=True)
class Profile:
    """A scale preset. Every field is plain data so it prints predictably; a Profile hashes by its
    name, device, shared fields and budget. Chapter knobs are not here: ``<chapter module>.settings(P)``."""

    name: str
    device: str
    dataset: str                 # a name accepted by utils.data.load
    train_sizes: tuple           # the N ladder, from N << d to the whole training set
    model_channels: int          # the default "model scale" (paper: 128 on FFHQ)
    scales: tuple                # the model-scale sweep (model_channels values) ...
    scale_n: int                 # ... at this small training-set size
    channel_mult: tuple          # U-Net channel multipliers per resolution
    num_blocks: int              # residual blocks per resolution
    train_steps: int             # optimizer steps per model
    batch_size: int
    lr: float
    lr_rampup_steps: int
    ema_halflife_steps: float
    n_samples: int               # generated samples per model (paper: 100 for the GL score)
    n_eval: int                  # held-out inputs per sigma for RMSE / linearity curves
    snapshot_steps: tuple = ()   # steps at which every ladder model keeps its EMA weights (chapter 4)
    sampler_steps: int = 10      # paper: 10-step Euler
    # share of log-uniform sigma in [0.002, 80] mixed into EDM's log-normal training p(sigma): a declared
    # deviation from EDM, so that the high noise levels are trained at all (see utils.edm.edm_training_sigmas)
    sigma_uniform_share: float = 0.0
    budget: str = "full"         # "smoke": sizes and steps cut to the smoke profile's (see resolve)

    @property
    def regimes(self):
        """The low / intermediate / high noise regimes of this profile's dataset (``utils.regimes``)."""
        from . import regimes
        return regimes.of_dataset(self.dataset)

    def chapter(self, key: str):
        """Removed: a chapter's knobs are typed settings owned by its chapter module."""
        raise AttributeError(f"Profile.chapter({key!r}) is gone: a chapter's settings are typed and validated "
                             f"by its chapter module -- use `<module>.settings(P)`, e.g. "
                             f"`utils.chapters.linearity.settings(P)`")

    def train_spec(self, n: int, model_channels: int | None = None, seed: int = 0, **overrides) -> dict:
        """The training spec (a dict for ``utils.train.get_model``) of one model of the ladder:
        ``n`` training images (a subset picked by ``seed``), ``model_channels`` (default: the
        profile's scale); ``overrides`` replace any other key (e.g. ``steps``)."""
        spec = dict(dataset=self.dataset, n=n, seed=seed,
                    model_channels=model_channels or self.model_channels,
                    channel_mult=list(self.channel_mult), num_blocks=self.num_blocks,
                    steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
                    lr_rampup_steps=self.lr_rampup_steps,
                    ema_halflife_steps=self.ema_halflife_steps,
                    sigma_uniform_share=self.sigma_uniform_share,
                    snapshot_steps=list(self.snapshot_steps))
        spec.update(overrides)
        return spec


_BASE = {
    "smoke": dict(dataset="digits", train_sizes=(8, 64), model_channels=8, scales=(4, 8), scale_n=8,
                  channel_mult=(1, 2), num_blocks=1, train_steps=20, batch_size=16, lr=2e-3,
                  lr_rampup_steps=5, ema_halflife_steps=5.0, snapshot_steps=(5, 10), sigma_uniform_share=0.2,
                n_samples=8, n_eval=8),
    # digits: d = 64, so N = 16 is far below d and N = 1,500 far above it. At 32 channels and 2,000
    # steps N = 16 memorizes (most samples are copies) and N >= 256 generalizes (no copies); 750 is
    # one half of the training split (chapter 5's S1, so that run is shared). The scale sweep runs
    # at N = 64 = d, where the 32-channel model copies most of its samples. A fifth of the training
    # draws of sigma are log-uniform on [0.002, 80] (a declared deviation from EDM's log-normal,
    # which almost never draws sigma > 20). Snapshots every 25-250 steps serve chapters 4 and 5.
    "cpu": dict(dataset="digits", train_sizes=(16, 64, 256, 750, 1500), model_channels=32,
                scales=(4, 8, 16, 32), scale_n=64, channel_mult=(1, 2, 2), num_blocks=1,
                train_steps=2000, batch_size=64, lr=2e-3, lr_rampup_steps=200, ema_halflife_steps=100.0,
                snapshot_steps=(25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 750, 1000,
                                1250, 1500, 1750),
                sigma_uniform_share=0.2, n_samples=100, n_eval=200),
    # CIFAR-10 as in the paper's App. F.4 (sizes 782 / 12,500 / 50,000; scales 4 ... 128 at N = 782).
    "gpu": dict(dataset="cifar10", train_sizes=(782, 12500, 50000), model_channels=128,
                scales=(4, 8, 16, 32, 64, 128), scale_n=782, channel_mult=(2, 2, 2), num_blocks=2,
                train_steps=100_000, batch_size=256, lr=1e-3, lr_rampup_steps=5000,
                ema_halflife_steps=2000.0,
                snapshot_steps=(1000, 2000, 4000, 8000, 15000, 25000, 40000, 60000, 80000),
                sigma_uniform_share=0.2, n_samples=100, n_eval=500),
}

# --------------------------------------------------------------------------- the colab profile
# What profile="auto" runs on a GPU: each chapter should finish within one free Colab T4 session
# (about an hour) from scratch, i.e. without the models of earlier chapters (a fresh runtime has
# none unless they are kept on Google Drive). MNIST zero-padded to 32 x 32 (d = 1,024): paper-like
# data at a size a T4 trains quickly, with a ladder from N = 64 << d (memorizes: thousands of
# epochs) to N = 16,384 >> d (about 50 epochs: generalizes). 32-channel U-Nets at three resolutions
# (1.05 M parameters, ~1.2 GFLOP per image per training step); the width sweep 4 ... 32 at
# N = 256 < d, where the 32-channel model is expected to copy training images.
# Estimated (not measured) T4 cost: ~40 ms per step at batch 128 for 32 channels, 10-20 ms for the
# narrow ones (launch-bound), so 6,000 steps ~ 4 min per ladder model; chapters 2-5 train about
# 24 / 20 / 25 / 34 min from scratch (0 for chapter 3 when chapter 2's models are on Drive).
# Every chapter prints the estimate measured on its own device before it trains (utils.train).
_BASE["colab"] = dict(
    dataset="mnist", train_sizes=(64, 256, 1024, 4096, 16384), model_channels=32, scales=(4, 8, 16, 32),
    scale_n=256, channel_mult=(1, 2, 2), num_blocks=1, train_steps=6000, batch_size=128, lr=1e-3,
    lr_rampup_steps=500, ema_halflife_steps=250.0,
    snapshot_steps=(50, 100, 150, 200, 300, 400, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 3500, 4000,
                    4500, 5000, 5500),
    sigma_uniform_share=0.2, n_samples=100, n_eval=500)

# --------------------------------------------------------------------------- the smoke budget
# Shared fields that are sizes, step counts or counts: under budget="smoke" they take the smoke
# profile's values. Every other shared field (dataset, channel counts, U-Net structure, sampler,
# learning rate, sigma mixture) stays the profile's.
BUDGET_FIELDS = ("train_sizes", "scale_n", "train_steps", "batch_size", "lr_rampup_steps", "ema_halflife_steps",
                 "snapshot_steps", "n_samples", "n_eval")
# Chapter-knob keys that describe the model or the data even where they are integers: never budgeted.
STRUCTURAL_KEYS = frozenset({"model_channels", "channel_mult", "num_blocks", "scales", "sampler_steps"})
# Training is cut further than the smoke profile's: a 128-channel CIFAR-10 U-Net costs ~1.6 s per
# image per optimizer step on one CPU thread. Every *training* step count -- the shared train_steps,
# snapshot_steps, lr_rampup_steps, ema_halflife_steps and, inside chapter knobs, the training-spec
# keys steps / snapshot_steps / lr_rampup_steps / ema_halflife_steps (overrides passed to
# Profile.train_spec) -- is the smoke value divided by TRAIN_STEP_DIVISOR (rounded up; duplicate
# snapshots dropped), and every training batch (batch_size) is BUDGET_BATCH. One function maps all of
# them, so a chapter's snapshot lists and step counts stay consistent with each other.
TRAIN_STEP_DIVISOR = 5
BUDGET_BATCH = 2
_TRAIN_STEP_KEYS = frozenset({"train_steps", "steps", "snapshot_steps", "lr_rampup_steps", "ema_halflife_steps"})


def _fewer_steps(value):
    """A training step count (or a list of them) divided by TRAIN_STEP_DIVISOR, rounded up."""
    if isinstance(value, (list, tuple)):
        return type(value)(sorted({_fewer_steps(v) for v in value}))
    if isinstance(value, float):
        return max(1.0, float(math.ceil(value / TRAIN_STEP_DIVISOR)))
    return max(1, -(-int(value) // TRAIN_STEP_DIVISOR)) if value else value   # 0 (no ramp-up) stays 0


def _cheaper_training(key, value):
    if key == "batch_size" and _is_count(value):
        return min(value, BUDGET_BATCH)
    if key in _TRAIN_STEP_KEYS and (_is_count(value) or isinstance(value, float)):
        return _fewer_steps(value)
    return value


def _is_count(v) -> bool:
    """An integer or a non-empty list / tuple of integers (never a bool): a size, a step count or a count."""
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_is_count(x) and not isinstance(x, (list, tuple)) for x in v)
    return isinstance(v, int) and not isinstance(v, bool)


def _budgeted(value, small, key=None):
    """The one rule of the smoke budget, applied recursively to a chapter knob: an integer (or list of
    integers) takes the smoke profile's value at the same place, unless its key is structural; dicts
    keep *this* profile's keys and recurse; a list of dicts recurses element by element; floats,
    strings, booleans and None (noise levels, ratios, dtypes, dataset names, switches) stay. Training
    step counts and batches are then cut further (:func:`_cheaper_training`)."""
    if key in STRUCTURAL_KEYS:
        return copy.deepcopy(value)
    if isinstance(value, dict) and isinstance(small, dict):
        return {k: _budgeted(v, small[k], k) if k in small else _cheaper_training(k, copy.deepcopy(v))
                for k, v in value.items()}
    if (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
            and isinstance(small, list) and small and all(isinstance(v, dict) for v in small)):
        return [_budgeted(v, small[min(i, len(small) - 1)]) for i, v in enumerate(value)]
    if _is_count(value) and _is_count(small):
        return _cheaper_training(key, copy.deepcopy(small))
    if key == "ema_halflife_steps" and isinstance(small, (int, float)) and not isinstance(small, bool):
        return _cheaper_training(key, float(small))
    return copy.deepcopy(value)


def budget_value(value, small, key: str | None = None):
    """The smoke budget's rule for one value of a chapter's settings (``key``: its field name), given
    the smoke profile's value ``small`` of the same field: see :func:`_budgeted`."""
    return _budgeted(value, small, key)


def _smoke_budget(base: dict) -> dict:
    """The shared fields of a profile cut to the smoke budget (see the module docstring)."""
    return dict(base, **{k: _cheaper_training("steps" if k == "train_steps" else k, _BASE["smoke"][k])
                         for k in BUDGET_FIELDS})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def resolve(profile: str = "auto", *, allow_cpu: bool | None = None, budget: str | None = None) -> Profile:
    """Return the preset named ``profile``; ``"auto"`` is ``"colab"`` with CUDA, else ``"cpu"``.

    ``colab`` and ``gpu`` run on CUDA; without a CUDA device they raise unless ``allow_cpu`` is true
    (default: the environment variable ``HGB_ALLOW_CPU=1``), in which case they run on the CPU.
    ``budget`` (default: ``$HGB_BUDGET`` or ``"full"``) is ``"full"`` or ``"smoke"``: the profile's
    data and model with the smoke profile's sizes and step counts (see the module docstring).
    """
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a string, one of {('auto',) + NAMES}, got {type(profile).__name__}")
    cuda = torch.cuda.is_available()
    if profile == "auto":
        profile = "colab" if cuda else "cpu"
    if profile not in _BASE:
        raise ValueError(f"unknown profile {profile!r}; expected one of {('auto',) + NAMES}")
    if allow_cpu is None:
        allow_cpu = _env_flag("HGB_ALLOW_CPU")
    if budget is None:
        budget = os.environ.get("HGB_BUDGET", "").strip() or "full"
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS} (argument or $HGB_BUDGET), got {budget!r}")
    if profile in CUDA_PROFILES and not cuda and not allow_cpu:
        raise RuntimeError(
            f"profile {profile!r} needs a CUDA GPU, and torch.cuda.is_available() is False here. On Colab: "
            f"Runtime > Change runtime type > T4 GPU, then run the notebook again (profile='auto' picks "
            f"'colab' there). Without a GPU use profile='cpu' (or 'auto'). To run {profile!r} on the CPU "
            f"anyway (very slow; for tests), pass allow_cpu=True or set HGB_ALLOW_CPU=1.")
    device = "cuda" if (profile in CUDA_PROFILES and cuda) else "cpu"
    base = _BASE[profile]
    if budget == "smoke":
        base = _smoke_budget(base)
    return Profile(name=profile, device=device, budget=budget, **base)
