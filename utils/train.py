"""Training a denoiser: loss, Adam, lr ramp-up, EMA, checkpoints that survive a disconnect.

The code lives in the package :mod:`utils.training`, one module per concern (spec, step, store,
runs, pool, estimate); this module is its front door, the one the chapters, scripts and tests import.

``get_model(spec)`` is the one entry point the chapters use: it returns the EMA denoiser for a
training spec, loading it from ``artifacts/models/<key>/`` when an identical run finished before,
resuming an interrupted run from its last checkpoint, or training from scratch. ``snapshots(spec)``
gives the EMA weights kept at intermediate steps, and ``train_many(jobs)`` trains several runs at
once in worker processes (one thread each: two small trainings side by side use two cores better
than one training on two threads).

**The cache key** (:func:`spec_key`) covers everything that decides the weights: the normalized spec,
the training images' content, the source of the code that shapes the weights, the torch version and
the step's numerics (precision, compilation, Adam's kernel) -- see :mod:`utils.training.store`. The
numerics are fp32, eager and foreach Adam unless a lever is switched on (``HGB_TRAIN_PRECISION=bf16``,
``HGB_TRAIN_COMPILE=1``, ``HGB_TRAIN_ADAM=fused``: :mod:`utils.training.numerics`). It leaves out what
does not change the weights: how often a checkpoint is written and which snapshots are kept.

A spec is a plain dict (see :data:`DEFAULTS`); ``utils.profiles.Profile.train_spec`` builds the
ones of the model ladder. Every random draw of step k (batch indices, sigma, noise, dropout) comes
from a generator seeded by (seed, k), so a resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

from .training import *  # noqa: F401,F403 - the public names, re-exported
from .training import __all__  # noqa: F401
# private names the tests and the benchmark reach for
from .training.pool import _worker_main  # noqa: F401
from .training.step import Trainer as _Trainer, _step_seed  # noqa: F401
from .training.store import _key, _locked, _pending, _snapshot_path, _training_images  # noqa: F401
