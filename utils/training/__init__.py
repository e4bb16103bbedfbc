"""Training a denoiser, by concern (as EDM keeps its training loop, loss and networks apart):

==============  ====================================================================================
module          concern
==============  ====================================================================================
``spec``        the training spec: defaults, validation, canonical form, its schedules (lr, EMA)
``step``        one optimizer step: the random draws, loss, gradient, Adam, EMA
``numerics``    the step's precision, compilation and Adam kernel (fp32 / eager / foreach unless a
                lever is switched on)
``store``       the model cache: keys from the spec, the data, the code's source, torch, numerics;
                atomic files and a lock per run folder
``runs``        a run from start to finish (train, resume, replay snapshots) and loading its models
``pool``        several runs at once in worker processes (``train_many``)
``estimate``    how long training will take, measured on the device first
==============  ====================================================================================

The losses and the preconditioning live in ``utils.edm``, the networks in ``utils.nets``.
``utils.train`` re-exports every public name (``get_model``, ``snapshots``, ``train_many``,
``estimate``, ``spec_key``, ``normalize_spec``, ``learning_rate``, ...): chapters import it from there.
"""
from .estimate import estimate, usable_cores, worker_count
from .pool import train_many
from .runs import Snapshots, compile_eval, get_model, snapshots, train
from .spec import DEFAULTS, build_denoiser, ema_halflife, learning_rate, normalize_spec
from .numerics import ADAMS, DEFAULT_NUMERICS, PRECISIONS, native_bf16, numerics
from .step import Trainer
from .store import code_fingerprint, data_fingerprint, pending_runs, run_dir, spec_key

__all__ = ["ADAMS", "DEFAULTS", "DEFAULT_NUMERICS", "PRECISIONS", "Snapshots", "Trainer", "build_denoiser", "compile_eval",
           "code_fingerprint", "data_fingerprint", "ema_halflife", "estimate", "get_model", "learning_rate",
           "native_bf16", "normalize_spec", "numerics", "pending_runs", "run_dir", "snapshots", "spec_key",
           "train", "train_many", "usable_cores", "worker_count"]
