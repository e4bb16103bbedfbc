"""Training an EDM denoiser: EDM loss, Adam, lr ramp-up, EMA, checkpoints that survive a disconnect.

``get_model(spec)`` is the one entry point the chapters use: it returns the EMA denoiser for a
training spec, loading it from ``artifacts/models/<hash of the spec>/`` when an identical run
finished before, resuming an interrupted run from its last checkpoint, or training from scratch.

A spec is a plain dict (see :data:`DEFAULTS`); ``utils.profiles.Profile.train_spec`` builds the
ones of the model ladder. Every random draw of step k (batch indices, sigma, noise, dropout) comes
from a generator seeded by (seed, k), so a resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import data as data_mod
from .edm import EDMPrecond, edm_loss
from .nets import UNet, count_parameters
from .paths import artifacts_dir

DEFAULTS = dict(
    dataset="digits",          # utils.data.load name (ignored when x_train is passed)
    n=None,                    # training-set size (seeded subset), None = whole train split
    seed=0,                    # data subset, initialization and every noise draw
    model_channels=32,         # the paper's "model scale"
    channel_mult=[1, 2, 2],
    num_blocks=1,
    dropout=0.0,
    steps=2000,
    batch_size=64,
    lr=2e-3,
    lr_rampup_steps=200,       # linear warm-up of the learning rate (EDM: 10 Mimg)
    ema_halflife_steps=100.0,  # EMA half-life (EDM: 500 kimg) ...
    ema_rampup_ratio=0.05,     # ... capped at this fraction of the steps taken so far (EDM: 0.05)
    checkpoint_every=500,
    snapshot_steps=[],         # steps at which to keep a copy of the EMA weights (chapter 4)
)
VERSION = 1                    # bump when training semantics change: old caches are not reused


def normalize_spec(spec: dict) -> dict:
    """Fill defaults and check every key, so equal runs hash equally and typos fail loudly."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec must be a dict of training settings, got {type(spec).__name__}")
    unknown = set(spec) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown training spec keys {sorted(unknown)}; known keys: {sorted(DEFAULTS)}")
    s = copy.deepcopy(DEFAULTS)
    s.update(copy.deepcopy(spec))
    s["channel_mult"] = [int(m) for m in s["channel_mult"]]
    s["snapshot_steps"] = sorted({int(k) for k in s["snapshot_steps"]})
    for key in ("steps", "batch_size", "model_channels", "num_blocks", "checkpoint_every"):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] <= 0:
            raise ValueError(f"spec[{key!r}] must be a positive int, got {s[key]!r}")
    if s["n"] is not None and (not isinstance(s["n"], int) or s["n"] <= 0):
        raise ValueError(f"spec['n'] must be a positive int or None, got {s['n']!r}")
    if not s["lr"] > 0:
        raise ValueError(f"spec['lr'] must be > 0, got {s['lr']}")
    if any(k <= 0 or k > s["steps"] for k in s["snapshot_steps"]):
        raise ValueError(f"spec['snapshot_steps'] must lie in [1, steps={s['steps']}], got {s['snapshot_steps']}")
    return s


def spec_key(spec: dict, x_train: torch.Tensor | None = None) -> str:
    """A short hash of the normalized spec (and of the training images when passed explicitly)."""
    s = normalize_spec(spec)
    payload = json.dumps({"spec": s, "version": VERSION}, sort_keys=True)
    if x_train is not None:
        payload += hashlib.sha256(x_train.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_denoiser(spec: dict, image_shape) -> EDMPrecond:
    s = normalize_spec(spec)
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"the U-Net needs square images, got H={h}, W={w}")
    net = UNet(h, c, s["model_channels"], tuple(s["channel_mult"]), s["num_blocks"], s["dropout"])
    return EDMPrecond(net)


def learning_rate(spec: dict, step):
    """The learning rate of optimizer step ``step`` (1-based): lr * min(1, step / lr_rampup_steps).
    ``step`` may be an int or an array of steps."""
    s = normalize_spec(spec)
    ramp = max(1, s["lr_rampup_steps"])
    if isinstance(step, (int, float)):
        return s["lr"] * min(1.0, step / ramp)
    return s["lr"] * np.minimum(1.0, np.asarray(step, dtype=float) / ramp)


def ema_halflife(spec: dict, step):
    """The EMA half-life (in steps) after ``step`` steps: min(half-life, ema_rampup_ratio * step),
    EDM's ramped half-life. ``step`` may be an int or an array of steps."""
    s = normalize_spec(spec)
    if isinstance(step, (int, float)):
        return min(s["ema_halflife_steps"], s["ema_rampup_ratio"] * step)
    return np.minimum(s["ema_halflife_steps"], s["ema_rampup_ratio"] * np.asarray(step, dtype=float))


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2 ** 63 - 1)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise RuntimeError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}). "
                           f"It was not overwritten; delete it to retrain from scratch.") from e


def _training_images(s: dict, x_train: torch.Tensor | None) -> torch.Tensor:
    if x_train is not None:
        if not isinstance(x_train, torch.Tensor) or x_train.ndim != 4:
            raise ValueError("x_train must be a (N, C, H, W) tensor of training images")
        return x_train.to(torch.float32)
    return data_mod.load(s["dataset"], n=s["n"], seed=s["seed"])


def run_dir(spec: dict, x_train: torch.Tensor | None = None) -> Path:
    return artifacts_dir() / "models" / spec_key(spec, x_train)


def train(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None,
          progress: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume) the run of ``spec`` and return its folder.

    ``stop_at`` stops after that many steps without finishing (used to test resume).
    """
    s = normalize_spec(spec)
    folder = run_dir(s, x_train)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(s, indent=1, sort_keys=True))
    final, ckpt = folder / "final.pt", folder / "checkpoint.pt"
    if final.exists():
        return folder
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    images = _training_images(s, x_train).to(device)

    torch.manual_seed(s["seed"])
    model = build_denoiser(s, images.shape[1:]).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=(0.9, 0.999), eps=1e-8)
    step, history = 0, {"step": [], "loss": []}
    if ckpt.exists():
        state = _load(ckpt)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]

    def checkpoint():
        _save_atomic({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                      "step": step, "history": history, "spec": s}, ckpt)

    snapshots = folder / "snapshots"
    snapshots.mkdir(exist_ok=True)
    end = s["steps"] if stop_at is None else min(stop_at, s["steps"])
    model.train()
    bar = tqdm(total=s["steps"], initial=step, disable=not progress, mininterval=15,
               desc=f"train n={len(images)} ch={s['model_channels']}", dynamic_ncols=False, ncols=100)
    while step < end:
        g = torch.Generator().manual_seed(_step_seed(s["seed"], step))
        idx = torch.randint(len(images), (s["batch_size"],), generator=g)
        for group in opt.param_groups:
            group["lr"] = learning_rate(s, step + 1)
        with torch.random.fork_rng(devices=[] if device == "cpu" else None):
            torch.manual_seed(_step_seed(s["seed"], step) + 1)            # dropout
            loss = edm_loss(model, images[idx], generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        step += 1
        halflife = ema_halflife(s, step)
        beta = 0.5 ** (1.0 / max(halflife, 1e-8))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm.detach(), 1.0 - beta)
        history["step"].append(step)
        history["loss"].append(float(loss.detach()))
        if step in s["snapshot_steps"]:
            _save_atomic({"ema": ema.state_dict(), "step": step}, snapshots / f"ema-{step:08d}.pt")
        if step % s["checkpoint_every"] == 0 or step == end:
            checkpoint()
        bar.update(1)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{sum(history['loss'][-100:]) / 100:.3f}", refresh=False)
    bar.close()
    if step >= s["steps"]:
        _save_atomic({"ema": ema.state_dict(), "history": history, "spec": s,
                      "image_shape": tuple(images.shape[1:])}, final)
    return folder


def get_model(spec: dict, x_train: torch.Tensor | None = None, step: int | None = None,
              device: str | None = None, progress: bool = True) -> EDMPrecond:
    """The EMA denoiser of ``spec`` (cached in artifacts/, trained or resumed when needed).

    ``step`` picks a snapshot listed in ``spec["snapshot_steps"]`` instead of the final weights.
    The returned module is in eval mode, with attributes ``spec``, ``history`` (loss per step),
    ``n_params`` and ``step``.
    """
    s = normalize_spec(spec)
    if step is not None and step not in s["snapshot_steps"] and step != s["steps"]:
        raise ValueError(f"step {step} is not a snapshot of this spec; snapshot_steps = {s['snapshot_steps']}")
    folder = train(s, x_train, device=device, progress=progress)
    state = _load(folder / "final.pt")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_denoiser(s, state["image_shape"])
    if step is None or step == s["steps"]:
        model.load_state_dict(state["ema"])
    else:
        model.load_state_dict(_load(folder / "snapshots" / f"ema-{step:08d}.pt")["ema"])
    model = model.to(device).eval().requires_grad_(False)
    model.spec, model.history, model.step = s, state["history"], step or s["steps"]
    model.n_params = count_parameters(model.net)
    return model
