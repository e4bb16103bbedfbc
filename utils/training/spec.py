"""Training specs: the defaults, their validation and canonical form, and the schedules they imply.

A spec is a plain dict (see :data:`DEFAULTS`); ``utils.profiles.Profile.train_spec`` builds the ones
of the model ladder. :func:`normalize_spec` fills the defaults, checks every key and value (naming
the key of a wrong one) and puts numbers in canonical types, so that equal runs hash alike.
:func:`learning_rate` and :func:`ema_halflife` are the spec's schedules (what a training step reads),
:func:`build_denoiser` its untrained denoiser.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from ..edm import PRECONDS, Precond
from ..nets import ARCHS, build_net

DEFAULTS = dict(
    dataset="digits",          # utils.data.load name (ignored when x_train is passed)
    n=None,                    # training-set size (seeded subset), None = whole train split
    seed=0,                    # data subset, initialization and every noise draw
    arch="unet",               # utils.nets.ARCHS
    model_channels=32,         # the paper's "model scale"
    channel_mult=[1, 2, 2],
    num_blocks=1,
    dropout=0.0,
    precond="edm",             # "edm" (EDMPrecond + EDMLoss), "ve" (Baseline-VE), "dae" (one fixed sigma)
    dae_sigma=None,            # the noise level of a "dae" run (required there, None otherwise)
    sigma_uniform_share=0.0,   # share of log-uniform sigma mixed into EDM's log-normal p(sigma)
    steps=2000,
    batch_size=64,
    lr=2e-3,
    lr_rampup_steps=200,       # linear warm-up of the learning rate (EDM: 10 Mimg); 0 = none
    ema_halflife_steps=100.0,  # EMA half-life (EDM: 500 kimg) ...
    ema_rampup_ratio=0.05,     # ... capped at this fraction of the steps taken so far (EDM: 0.05); None = no cap
    checkpoint_every=500,
    snapshot_steps=[],         # steps at which to keep a copy of the EMA weights
)
_INT = ("seed", "model_channels", "num_blocks", "steps", "batch_size", "lr_rampup_steps", "checkpoint_every")
_FLOAT = ("dropout", "sigma_uniform_share", "lr", "ema_halflife_steps")


def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise TypeError(f"spec[{name!r}] must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"spec[{name!r}] must be an int >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"spec[{name!r}] must be an int >= {minimum}, got {value!r}")
    return int(value)


def _as_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"spec[{name!r}] must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"spec[{name!r}] must be finite, got {value!r}")
    return float(value)


def normalize_spec(spec: dict) -> dict:
    """Fill defaults, check every key and value, and put numbers in canonical types, so that equal
    runs hash equally and a typo or a wrong value fails here with the key's name."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict of training settings, got {type(spec).__name__}")
    unknown = set(spec) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training spec keys {sorted(unknown)}; known keys: {sorted(DEFAULTS)}")
    s = copy.deepcopy(DEFAULTS)
    s.update(copy.deepcopy(spec))
    if not isinstance(s["dataset"], str) or not s["dataset"]:
        raise TypeError(f"spec['dataset'] must be a dataset name (see utils.data.NAMES), got {s['dataset']!r}")
    for key in _INT:
        s[key] = _as_int(s[key], key, 0 if key in ("seed", "lr_rampup_steps") else 1)
    for key in _FLOAT:
        s[key] = _as_float(s[key], key)
    if s["n"] is not None:
        s["n"] = _as_int(s["n"], "n", 1)
    if not 0.0 <= s["dropout"] < 1.0:
        raise ValueError(f"spec['dropout'] must lie in [0, 1), got {s['dropout']}")
    if not 0.0 <= s["sigma_uniform_share"] < 1.0:
        raise ValueError(f"spec['sigma_uniform_share'] must lie in [0, 1), got {s['sigma_uniform_share']}")
    if not s["lr"] > 0:
        raise ValueError(f"spec['lr'] must be > 0, got {s['lr']}")
    if not s["ema_halflife_steps"] > 0:
        raise ValueError(f"spec['ema_halflife_steps'] must be > 0 (the EMA half-life in steps), got {s['ema_halflife_steps']}")
    if s["ema_rampup_ratio"] is not None:
        s["ema_rampup_ratio"] = _as_float(s["ema_rampup_ratio"], "ema_rampup_ratio")
        if not s["ema_rampup_ratio"] > 0:
            raise ValueError(f"spec['ema_rampup_ratio'] must be > 0 or None, got {s['ema_rampup_ratio']}")
    if s["arch"] not in ARCHS:
        raise ValueError(f"spec['arch'] must be one of {sorted(ARCHS)}, got {s['arch']!r}")
    if s["precond"] not in PRECONDS:
        raise ValueError(f"spec['precond'] must be one of {PRECONDS}, got {s['precond']!r}")
    if s["precond"] == "dae":
        if s["dae_sigma"] is None:
            raise ValueError("spec['dae_sigma'] (the fixed noise level) is required when precond is 'dae'")
        s["dae_sigma"] = _as_float(s["dae_sigma"], "dae_sigma")
        if not s["dae_sigma"] > 0:
            raise ValueError(f"spec['dae_sigma'] must be > 0, got {s['dae_sigma']}")
    elif s["dae_sigma"] is not None:
        raise ValueError(f"spec['dae_sigma'] is only used with precond 'dae', got precond {s['precond']!r}")
    if not isinstance(s["channel_mult"], (list, tuple)) or not s["channel_mult"]:
        raise TypeError(f"spec['channel_mult'] must be a non-empty list of ints, got {s['channel_mult']!r}")
    s["channel_mult"] = [_as_int(m, "channel_mult", 1) for m in s["channel_mult"]]
    if not isinstance(s["snapshot_steps"], (list, tuple, set)):
        raise TypeError(f"spec['snapshot_steps'] must be a list of steps, got {s['snapshot_steps']!r}")
    s["snapshot_steps"] = sorted({_as_int(k, "snapshot_steps", 1) for k in s["snapshot_steps"]})
    if any(k > s["steps"] for k in s["snapshot_steps"]):
        raise ValueError(f"spec['snapshot_steps'] must lie in [1, steps={s['steps']}], got {s['snapshot_steps']}")
    return s



def build_denoiser(spec: dict, image_shape) -> Precond:
    """The untrained denoiser of ``spec`` for images of ``image_shape`` (C, H, W)."""
    s = normalize_spec(spec)
    net = build_net(s["arch"], image_shape, s["model_channels"], tuple(s["channel_mult"]), s["num_blocks"],
                    s["dropout"])
    return Precond(net, s["precond"])


def learning_rate(spec: dict, step):
    """The learning rate of optimizer step ``step`` (1-based): lr * min(1, step / lr_rampup_steps).
    ``step`` may be an int or an array of steps."""
    return learning_rate_of(normalize_spec(spec), step)


def learning_rate_of(s: dict, step):
    """:func:`learning_rate` of an already normalized spec ``s`` (what the training step calls)."""
    ramp = max(1, s["lr_rampup_steps"])
    if isinstance(step, (int, float, np.integer, np.floating)):
        return s["lr"] * min(1.0, float(step) / ramp)
    return s["lr"] * np.minimum(1.0, np.asarray(step, dtype=float) / ramp)


def ema_halflife(spec: dict, step):
    """The EMA half-life (in steps) after ``step`` steps: min(half-life, ema_rampup_ratio * step),
    EDM's ramped half-life. ``step`` may be an int or an array of steps."""
    return ema_halflife_of(normalize_spec(spec), step)


def ema_halflife_of(s: dict, step):
    """:func:`ema_halflife` of an already normalized spec ``s`` (what the training step calls)."""
    ratio = s["ema_rampup_ratio"]
    if isinstance(step, (int, float, np.integer, np.floating)):
        return s["ema_halflife_steps"] if ratio is None else min(s["ema_halflife_steps"], ratio * float(step))
    k = np.asarray(step, dtype=float)
    return np.full_like(k, s["ema_halflife_steps"]) if ratio is None else np.minimum(s["ema_halflife_steps"], ratio * k)
