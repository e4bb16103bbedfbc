"""The numerics of a training step: the choices that change a run's float rounding, all part of its
cache key (:mod:`utils.training.store`). The reference, used unless a lever is switched on, is
:data:`DEFAULT_NUMERICS`: fp32, eager, foreach Adam. The levers (``scripts/bench.py`` measures what
each pays; none is on by default, so the book's models do not depend on the machine):

* ``HGB_TRAIN_PRECISION=bf16``: the network under ``torch.autocast`` to bfloat16 (fp32 master weights)
  where bf16 is native -- a CPU with AMX-BF16 or AVX512-BF16 (:func:`native_bf16`), or CUDA; elsewhere
  the run stays fp32 (emulated bf16 is slower), and its key says so;
* ``HGB_TRAIN_COMPILE=1``: the loss compiled by ``torch.compile``;
* ``HGB_TRAIN_ADAM=fused``: one kernel for every parameter's Adam update.
"""
from __future__ import annotations

import functools
import os

import torch

PRECISIONS = ("fp32", "bf16")
ADAMS = ("foreach", "fused")
# The reference numerics: what every run uses unless a lever is switched on (see the module docstring).
DEFAULT_NUMERICS = {"precision": "fp32", "compile": False, "adam": "foreach"}



@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX-BF16 or AVX512-BF16) and oneDNN uses it."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:                                  # not Linux: no detection, no bf16
        return False
    has_isa = any(f" {flag}" in flags for flag in ("amx_bf16", "avx512_bf16"))
    try:
        return bool(has_isa and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _env_choice(name: str, allowed: tuple, default: str) -> str:
    value = os.environ.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ValueError(f"${name} must be one of {allowed} (unset: {default!r}), got {value!r}")
    return value


def numerics(s: dict, device) -> dict:
    """The numerics of a run of the normalized spec ``s`` on ``device`` (see the module docstring):
    ``{"precision": "fp32"|"bf16", "compile": bool, "adam": "foreach"|"fused"}``;
    :data:`DEFAULT_NUMERICS` unless ``HGB_TRAIN_PRECISION``, ``HGB_TRAIN_COMPILE`` or
    ``HGB_TRAIN_ADAM`` switch a lever on."""
    dev = torch.device(device).type
    precision = _env_choice("HGB_TRAIN_PRECISION", PRECISIONS, "fp32")
    if precision == "bf16" and not (dev == "cuda" or (dev == "cpu" and native_bf16())):
        precision = "fp32"                       # bf16 only where it is native (emulated it is slower)
    compiled = _env_choice("HGB_TRAIN_COMPILE", ("0", "1"), "0") == "1"
    adam = _env_choice("HGB_TRAIN_ADAM", ADAMS, "foreach")
    return {"precision": precision, "compile": compiled, "adam": adam}
