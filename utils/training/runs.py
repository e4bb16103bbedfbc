"""A run from start to finish: train, resume or complete it in its cache folder, and load its models.

``get_model(spec)`` is the one entry point the chapters use: it returns the EMA denoiser for a
training spec, loading it from ``artifacts/models/<key>/`` when an identical run finished before,
resuming an interrupted run from its last checkpoint, or training from scratch. ``snapshots(spec)``
gives the EMA weights kept at intermediate steps. A snapshot asked for later that a finished run did
not keep is recovered by replaying the run (bit-for-bit) up to that step.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from tqdm import tqdm

from ..edm import Precond
from ..nets import count_parameters
from .spec import _as_int, build_denoiser, normalize_spec
from .step import Trainer
from .store import (_key, _load, _locked, _save_atomic, _snapshot_path, _training_images, artifacts_dir,
                    default_device, key_payload, use_compile_cache)

def train(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None,
          progress: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume, or complete the snapshots of) the run of ``spec`` and return its folder.

    ``stop_at`` stops after that many steps without finishing (used to test resume).
    """
    s = normalize_spec(spec)
    device = device or default_device()
    folder = artifacts_dir() / "models" / _key(s, x_train, device)
    if (folder / "final.pt").exists() and all(_snapshot_path(folder, k).exists() for k in s["snapshot_steps"]):
        return folder                                   # finished: nothing to lock or load
    images = _training_images(s, x_train)
    with _locked(folder):
        try:
            _train_locked(s, images, folder, device, progress, stop_at)
        except BaseException:
            # a run that failed before writing any weights leaves nothing behind; removed under the
            # lock, and a process waiting for it notices (see _locked) and starts in a new folder
            if not any(folder.rglob("*.pt")):
                shutil.rmtree(folder, ignore_errors=True)
            raise
    return folder


def _train_locked(s, images, folder, device, progress, stop_at):
    # every writer holds the lock, so a temporary file found now was left by a process killed mid-write
    for stale in [*folder.glob(".*.tmp"), *folder.glob("snapshots/.*.tmp")]:
        stale.unlink(missing_ok=True)
    spec_file = folder / "spec.json"
    if not spec_file.exists():
        text = json.dumps(key_payload(s, images, device), indent=1, sort_keys=True)
        tmp = spec_file.with_name(f".spec.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, spec_file)
    final, ckpt = folder / "final.pt", folder / "checkpoint.pt"
    (folder / "snapshots").mkdir(exist_ok=True)
    if final.exists():
        _replay_missing_snapshots(s, images, folder, device, progress)
        return
    tr = Trainer(s, images.to(device), device)
    if ckpt.exists():
        tr.load(_load(ckpt))
    end = s["steps"] if stop_at is None else min(stop_at, s["steps"])
    missing_before = [k for k in s["snapshot_steps"] if k <= tr.step and not _snapshot_path(folder, k).exists()]
    tr.model.train()
    bar = tqdm(total=s["steps"], initial=tr.step, disable=not progress, mininterval=15,
               desc=f"train {s['arch']} n={len(images)} ch={s['model_channels']}", dynamic_ncols=False, ncols=100)
    while tr.step < end:
        tr.one_step()
        if tr.step in s["snapshot_steps"]:
            _save_atomic({"ema": tr.ema.state_dict(), "step": tr.step}, _snapshot_path(folder, tr.step))
        if tr.step % s["checkpoint_every"] == 0 or tr.step == end:
            _save_atomic(tr.state(), ckpt)
        bar.update(1)
        if tr.step % 100 == 0:
            bar.set_postfix(loss=f"{sum(tr.history['loss'][-100:]) / 100:.3f}", refresh=False)
    bar.close()
    if tr.step >= s["steps"]:
        _save_atomic({"ema": tr.ema.state_dict(), "history": tr.history, "spec": s,
                      "image_shape": tuple(images.shape[1:]), "numerics": tr.numerics}, final)
        if missing_before:
            _replay_missing_snapshots(s, images, folder, device, progress)


def _replay_missing_snapshots(s, images, folder, device, progress):
    """Re-run training from step 0 up to the last requested snapshot that is missing, saving the
    missing ones (every draw is seeded by (seed, step), so the replay is the original run)."""
    missing = [k for k in s["snapshot_steps"] if not _snapshot_path(folder, k).exists()]
    if not missing:
        return
    tr = Trainer(s, images.to(device), device)
    tr.model.train()
    for _ in tqdm(range(max(missing)), disable=not progress, mininterval=15, ncols=100,
                  desc=f"replay for {len(missing)} snapshot(s) n={len(images)} ch={s['model_channels']}"):
        tr.one_step()
        if tr.step in missing:
            _save_atomic({"ema": tr.ema.state_dict(), "step": tr.step}, _snapshot_path(folder, tr.step))


def _finish(model, s, history, step, folder):
    model.spec, model.history, model.step, model.run_dir = s, history, step, folder
    model.n_params = count_parameters(model.net)
    model.name = f"{s['arch']} ({s['precond']}) n={s['n']} ch={s['model_channels']} step={step}"
    return model.eval().requires_grad_(False)


def get_model(spec: dict, x_train: torch.Tensor | None = None, step: int | None = None,
              device: str | None = None, progress: bool = True) -> Precond:
    """The EMA denoiser of ``spec`` (cached in artifacts/, trained or resumed when needed).

    ``step`` picks a snapshot listed in ``spec["snapshot_steps"]`` instead of the final weights.
    The returned module is in eval mode, with attributes ``spec``, ``history`` (loss per step),
    ``n_params``, ``step``, ``run_dir`` and ``name``; with ``HGB_EVAL_COMPILE=1`` it evaluates on the
    CPU through a compiled graph when called without gradients (:func:`compile_eval`).
    """
    s = normalize_spec(spec)
    if step is not None:
        step = _as_int(step, "step", 1)
        if step not in s["snapshot_steps"] and step != s["steps"]:
            raise ValueError(f"step {step} is not a snapshot of this spec; snapshot_steps = {s['snapshot_steps']}")
    if compile_eval(device or default_device()):
        use_compile_cache()
    folder = train(s, x_train, device=device, progress=progress)
    state = _load(folder / "final.pt")
    device = device or default_device()
    model = build_denoiser(s, state["image_shape"])
    if step is None or step == s["steps"]:
        model.load_state_dict(state["ema"])
    else:
        model.load_state_dict(_load(_snapshot_path(folder, step))["ema"])
    model.compile_eval = compile_eval(device)
    return _finish(model.to(device), s, state["history"], step or s["steps"], folder)


def compile_eval(device) -> bool:
    """Whether a loaded model evaluates through the compiled graph (``utils.edm.Precond.compile_eval``):
    opt-in, with ``HGB_EVAL_COMPILE=1``, on the CPU (where scripts/bench.py measures its gain and its
    largest float32 difference from the eager forward pass, ~1e-6). Off by default: the book's
    evaluations are the eager ones."""
    value = os.environ.get("HGB_EVAL_COMPILE", "").strip().lower() or "0"
    if value not in ("0", "1"):
        raise ValueError(f"$HGB_EVAL_COMPILE must be '0' or '1' (unset: '0'), got {value!r}")
    return value == "1" and torch.device(device).type == "cpu"


class Snapshots(Mapping):
    """``{step: EMA denoiser}`` over the snapshot steps of one run and its final step, each loaded on
    first access (the run is trained, resumed or completed once, when the object is made)."""

    def __init__(self, spec: dict, x_train: torch.Tensor | None = None, device: str | None = None,
                 progress: bool = True):
        self.spec = normalize_spec(spec)
        self.x_train, self.device = x_train, device
        self.steps = sorted(set(self.spec["snapshot_steps"]) | {self.spec["steps"]})
        train(self.spec, x_train, device=device, progress=progress)

    def __getitem__(self, step):
        if step not in self.steps:
            raise KeyError(f"no snapshot at step {step}; steps = {self.steps}")
        return get_model(self.spec, self.x_train, step=step, device=self.device, progress=False)

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)


def snapshots(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None,
              progress: bool = True) -> Snapshots:
    """The snapshot loader of a run: ``snapshots(spec)[step]`` is its EMA denoiser at ``step``."""
    return Snapshots(spec, x_train, device=device, progress=progress)
