"""Training a denoiser: loss, Adam, lr ramp-up, EMA, checkpoints that survive a disconnect.

``get_model(spec)`` is the one entry point the chapters use: it returns the EMA denoiser for a
training spec, loading it from ``artifacts/models/<key>/`` when an identical run finished before,
resuming an interrupted run from its last checkpoint, or training from scratch. ``snapshots(spec)``
gives the EMA weights kept at intermediate steps, and ``train_many(jobs)`` trains several runs at
once in worker processes (one thread each: two small trainings side by side use two cores better
than one training on two threads).

**The cache key** (:func:`spec_key`) covers everything that decides the weights: the normalized spec
(numbers in canonical types, so ``20`` and ``20.0`` hash alike), the training images' shape, dtype
and content (a SHA-256 of the tensor, for named, ``folder:`` and explicitly passed data alike) and
:data:`VERSION` of the training code. It leaves out what does not change the weights: how often a
checkpoint is written and which snapshots are kept. A snapshot asked for later that a finished run
did not keep is recovered by replaying the run (bit-for-bit) up to that step.

**Concurrency**: a run folder is locked (``fcntl.flock``) while a process trains in it, and every
file is written to a unique temporary name and renamed into place; a second process asking for the
same run waits for the first and then loads its result.

A spec is a plain dict (see :data:`DEFAULTS`); ``utils.profiles.Profile.train_spec`` builds the
ones of the model ladder. Every random draw of step k (batch indices, sigma, noise, dropout) comes
from a generator seeded by (seed, k), so a resumed run is bit-for-bit the uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import data as data_mod
from .checks import positive_int
from .edm import PRECONDS, Precond, dae_loss, edm_loss, ve_loss
from .nets import build_net, count_parameters, ARCHS
from .paths import artifacts_dir

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
# Bump when training semantics change (loss, optimizer, EMA, data order, architecture): old caches
# are then not reused. 2: foreach Adam / EMA, sigma mixture, preconditioning kinds, content-hashed keys.
VERSION = 2
# Keys that do not change the trained weights and are left out of the cache key.
_NOT_IN_KEY = ("checkpoint_every", "snapshot_steps")
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


def data_fingerprint(x: torch.Tensor) -> dict:
    """Shape, dtype and SHA-256 of a tensor's contents: what the cache key knows about the data."""
    t = x.detach().cpu().contiguous()
    return {"shape": list(t.shape), "dtype": str(t.dtype),
            "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest()}


@functools.lru_cache(maxsize=64)
def _named_fingerprint(dataset: str, n, seed: int) -> tuple:
    x = data_mod.load(dataset, n=n, seed=seed)
    return tuple(x.shape[1:]), json.dumps(data_fingerprint(x), sort_keys=True)


def _training_images(s: dict, x_train: torch.Tensor | None) -> torch.Tensor:
    if x_train is not None:
        if not isinstance(x_train, torch.Tensor) or x_train.ndim != 4:
            raise ValueError(f"x_train must be a (N, C, H, W) tensor of training images, got "
                             f"{getattr(x_train, 'shape', type(x_train).__name__)}")
        if not torch.is_floating_point(x_train) or not bool(torch.isfinite(x_train).all()):
            raise ValueError("x_train must hold finite floating-point values")
        return x_train.detach().to(torch.float32)
    return data_mod.load(s["dataset"], n=s["n"], seed=s["seed"])


def spec_key(spec: dict, x_train: torch.Tensor | None = None) -> str:
    """The cache key of a run: a short hash of the normalized spec (without the keys that do not
    change the weights), the training images' fingerprint and the code version."""
    s = normalize_spec(spec)
    return _key(s, x_train)


def _fingerprint(s: dict, x_train: torch.Tensor | None) -> str:
    if x_train is not None or s["dataset"].startswith("folder:"):     # a folder's files may change
        return json.dumps(data_fingerprint(_training_images(s, x_train)), sort_keys=True)
    return _named_fingerprint(s["dataset"], s["n"], s["seed"])[1]


def _key(s: dict, x_train: torch.Tensor | None) -> str:
    payload = {"spec": {k: v for k, v in s.items() if k not in _NOT_IN_KEY}, "version": VERSION,
               "data": _fingerprint(s, x_train)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_denoiser(spec: dict, image_shape) -> Precond:
    """The untrained denoiser of ``spec`` for images of ``image_shape`` (C, H, W)."""
    s = normalize_spec(spec)
    net = build_net(s["arch"], image_shape, s["model_channels"], tuple(s["channel_mult"]), s["num_blocks"],
                    s["dropout"])
    return Precond(net, s["precond"])


def learning_rate(spec: dict, step):
    """The learning rate of optimizer step ``step`` (1-based): lr * min(1, step / lr_rampup_steps).
    ``step`` may be an int or an array of steps."""
    s = normalize_spec(spec)
    ramp = max(1, s["lr_rampup_steps"])
    if isinstance(step, (int, float, np.integer, np.floating)):
        return s["lr"] * min(1.0, float(step) / ramp)
    return s["lr"] * np.minimum(1.0, np.asarray(step, dtype=float) / ramp)


def ema_halflife(spec: dict, step):
    """The EMA half-life (in steps) after ``step`` steps: min(half-life, ema_rampup_ratio * step),
    EDM's ramped half-life. ``step`` may be an int or an array of steps."""
    s = normalize_spec(spec)
    ratio = s["ema_rampup_ratio"]
    if isinstance(step, (int, float, np.integer, np.floating)):
        return s["ema_halflife_steps"] if ratio is None else min(s["ema_halflife_steps"], ratio * float(step))
    k = np.asarray(step, dtype=float)
    return np.full_like(k, s["ema_halflife_steps"]) if ratio is None else np.minimum(s["ema_halflife_steps"], ratio * k)


def _step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2 ** 63 - 1)


def _save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file unique to this process and call, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise RuntimeError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}). "
                           f"It was not overwritten; delete it to retrain from scratch.") from e


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive lock on ``folder`` for the duration of the block (POSIX flock; a no-op where
    fcntl does not exist), creating the folder. A second process waits, with a notice, until the
    first is done; if the first removed the folder meanwhile, the second creates it again."""
    try:
        import fcntl
    except ImportError:                       # pragma: no cover - Windows
        folder.mkdir(parents=True, exist_ok=True)
        yield
        return
    lock = folder / "lock"
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process that is training {folder.name} ...", flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                current = os.stat(lock).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if not current:            # the holder removed the folder (a failed fresh run): lock anew
                continue
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
            return


def run_dir(spec: dict, x_train: torch.Tensor | None = None) -> Path:
    """The folder of a run (it may not exist yet)."""
    return artifacts_dir() / "models" / spec_key(spec, x_train)


def _snapshot_path(folder: Path, step: int) -> Path:
    return folder / "snapshots" / f"ema-{int(step):08d}.pt"


class _Trainer:
    """The state of one training run: model, EMA copy, optimizer, step counter, loss history."""

    def __init__(self, s: dict, images: torch.Tensor, device: str):
        self.s, self.images, self.device = s, images, device
        torch.manual_seed(s["seed"])
        self.model = build_denoiser(s, images.shape[1:]).to(device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema.parameters())
        self.opt = torch.optim.Adam(self.params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=True)
        self.step, self.history = 0, {"step": [], "loss": []}

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "history": self.history, "spec": self.s}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.history = state["step"], state["history"]

    def loss(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = self.s
        if s["precond"] == "edm":
            return edm_loss(self.model, x, generator=g, uniform_share=s["sigma_uniform_share"])
        if s["precond"] == "ve":
            return ve_loss(self.model, x, generator=g)
        return dae_loss(self.model, x, s["dae_sigma"], generator=g)

    def one_step(self) -> float:
        s = self.s
        g = torch.Generator().manual_seed(_step_seed(s["seed"], self.step))
        idx = torch.randint(len(self.images), (s["batch_size"],), generator=g)
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(s, self.step + 1)
        with torch.random.fork_rng(devices=[] if self.device == "cpu" else None):
            torch.manual_seed(_step_seed(s["seed"], self.step) + 1)            # dropout
            loss = self.loss(self.images[idx], g)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        # EDM passes gradients through nan_to_num; it changes nothing unless a gradient is not finite
        if not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
            for gr in grads:
                torch.nan_to_num(gr, nan=0.0, posinf=1e5, neginf=-1e5, out=gr)
        self.opt.step()
        self.step += 1
        beta = 0.5 ** (1.0 / max(ema_halflife(s, self.step), 1e-8))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.params, 1.0 - beta)
        value = float(loss.detach())
        self.history["step"].append(self.step)
        self.history["loss"].append(value)
        return value


def train(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None,
          progress: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume, or complete the snapshots of) the run of ``spec`` and return its folder.

    ``stop_at`` stops after that many steps without finishing (used to test resume).
    """
    s = normalize_spec(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = artifacts_dir() / "models" / _key(s, x_train)
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
        text = json.dumps({"spec": s, "version": VERSION, "data": data_fingerprint(images)}, indent=1, sort_keys=True)
        tmp = spec_file.with_name(f".spec.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, spec_file)
    final, ckpt = folder / "final.pt", folder / "checkpoint.pt"
    (folder / "snapshots").mkdir(exist_ok=True)
    if final.exists():
        _replay_missing_snapshots(s, images, folder, device, progress)
        return
    tr = _Trainer(s, images.to(device), device)
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
                      "image_shape": tuple(images.shape[1:]), "version": VERSION}, final)
        if missing_before:
            _replay_missing_snapshots(s, images, folder, device, progress)


def _replay_missing_snapshots(s, images, folder, device, progress):
    """Re-run training from step 0 up to the last requested snapshot that is missing, saving the
    missing ones (every draw is seeded by (seed, step), so the replay is the original run)."""
    missing = [k for k in s["snapshot_steps"] if not _snapshot_path(folder, k).exists()]
    if not missing:
        return
    tr = _Trainer(s, images.to(device), device)
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
    ``n_params``, ``step``, ``run_dir`` and ``name``.
    """
    s = normalize_spec(spec)
    if step is not None:
        step = _as_int(step, "step", 1)
        if step not in s["snapshot_steps"] and step != s["steps"]:
            raise ValueError(f"step {step} is not a snapshot of this spec; snapshot_steps = {s['snapshot_steps']}")
    folder = train(s, x_train, device=device, progress=progress)
    state = _load(folder / "final.pt")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_denoiser(s, state["image_shape"])
    if step is None or step == s["steps"]:
        model.load_state_dict(state["ema"])
    else:
        model.load_state_dict(_load(_snapshot_path(folder, step))["ema"])
    return _finish(model.to(device), s, state["history"], step or s["steps"], folder)


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
    return Snapshots(spec, x_train, device, progress)


# --------------------------------------------------------------------------- several runs at once

def _worker_main(job_file: str) -> None:
    """Entry point of a worker process of :func:`train_many` (``python -c``): train one pickled job."""
    spec, x_train, threads = torch.load(job_file, weights_only=False)
    torch.set_num_threads(threads)
    train(spec, x_train, device="cpu", progress=False)


def _pending(jobs) -> tuple[list, dict]:
    """``(keys, todo)``: the cache key of every job in order, and ``{key: (normalized spec, x_train)}``
    of the runs not finished yet (a run asked for twice is trained once, with the union of the
    snapshots asked for)."""
    keys, todo = [], {}
    for job in jobs:
        spec, x = job if isinstance(job, tuple) else (job, None)
        s = normalize_spec(spec)
        key = _key(s, x)
        keys.append(key)
        if key in todo:                              # the same run asked for twice: union of snapshots
            prev = todo[key][0]
            prev["snapshot_steps"] = sorted(set(prev["snapshot_steps"]) | set(s["snapshot_steps"]))
            continue
        folder = artifacts_dir() / "models" / key
        if not ((folder / "final.pt").exists()
                and all(_snapshot_path(folder, k).exists() for k in s["snapshot_steps"])):
            todo[key] = (copy.deepcopy(s), x)
    return keys, todo


def worker_count(device, workers, n_runs: int) -> int:
    """How many runs :func:`train_many` trains at a time: one on CUDA, else up to the CPU count."""
    return 1 if str(device) != "cpu" else max(1, min(workers or usable_cores(), n_runs or 1))


def _cost(spec: dict) -> float:
    s = normalize_spec(spec)
    return s["steps"] * s["batch_size"] * (s["model_channels"] ** 2 + 64 * 64)   # rough: width^2 + overhead


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, e.g. a
    container limited to 2 of a host's 64 cores), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pending_runs(jobs) -> int:
    """How many distinct runs of ``jobs`` (as for :func:`train_many`) are not in the cache yet."""
    return len(_pending(jobs)[1])


def train_many(jobs, workers: int | None = None, threads_per_worker: int = 1, progress: bool = True,
               device: str | None = None) -> list:
    """Train every run of ``jobs`` (a list of specs or of ``(spec, x_train)`` pairs).

    On the CPU, ``workers`` runs at a time in separate processes with ``threads_per_worker`` threads
    each (two small trainings side by side use two cores better than one on two threads); on CUDA
    (``device``, default: CUDA when available) one after the other in this process. Duplicates are
    trained once (with the union of their snapshots); finished runs are skipped; the most expensive
    runs start first. ``workers`` defaults to the number of CPU cores; with one worker everything
    runs in this process. A worker that fails raises here with its error output. Returns the run
    folders in the order of ``jobs``.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if workers is not None:
        workers = positive_int(workers, "workers")
    threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
    import subprocess
    import sys
    import tempfile

    keys, todo = _pending(jobs)
    order = sorted(todo, key=lambda k: -_cost(todo[k][0]))
    workers = worker_count(device, workers, len(order))
    if progress and order:
        print(estimate(jobs, device=device, workers=workers, threads_per_worker=threads_per_worker)["text"],
              flush=True)
    bar = tqdm(total=len(order), disable=not progress or not order, ncols=100,
               desc=f"training {len(order)} runs, {workers} at a time")
    if workers == 1:
        for k in order:
            train(*todo[k], device=device, progress=progress and str(device) != "cpu")
            bar.update(1)
        bar.close()
        return [artifacts_dir() / "models" / k for k in keys]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads_per_worker), MKL_NUM_THREADS=str(threads_per_worker),
               HGB_ARTIFACTS=str(artifacts_dir()))
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="hgb-train-") as tmp:
        pending, running = list(order), []
        try:
            while pending or running:
                while pending and len(running) < workers:
                    k = pending.pop(0)
                    job_file = os.path.join(tmp, f"{k}.pt")
                    torch.save((*todo[k], threads_per_worker), job_file)
                    log = open(os.path.join(tmp, f"{k}.log"), "w+")
                    cmd = [sys.executable, "-c", f"from utils.train import _worker_main; _worker_main({job_file!r})"]
                    running.append((k, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
                time.sleep(0.2)
                for item in list(running):
                    k, proc, log = item
                    if proc.poll() is None:
                        continue
                    running.remove(item)
                    log.seek(0)
                    out = log.read()
                    log.close()
                    if proc.returncode != 0:
                        raise RuntimeError(f"training run {k} ({todo[k][0]}) failed in a worker process "
                                           f"(exit {proc.returncode}):\n{out[-3000:]}")
                    bar.update(1)
        finally:
            for _, proc, log in running:
                proc.kill()
                log.close()
    bar.close()
    return [artifacts_dir() / "models" / k for k in keys]


# --------------------------------------------------------------------------- time estimate

def _remaining_steps(s: dict, folder: Path) -> int:
    """Optimizer steps a run still needs: the rest of its training (from its last checkpoint) plus
    the replay that recovers snapshots it lacks."""
    missing = [k for k in s["snapshot_steps"] if not _snapshot_path(folder, k).exists()]
    if (folder / "final.pt").exists():
        return max(missing, default=0)
    done, ckpt = 0, folder / "checkpoint.pt"
    if ckpt.exists():
        try:
            done = int(torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)["step"])
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported when training resumes
            done = 0
    return s["steps"] - done + max([k for k in missing if k <= done], default=0)


def _timing_group(s: dict, image_shape) -> tuple:
    """What decides the time of one optimizer step: the network, the loss kind, the batch, the image."""
    return (s["arch"], s["model_channels"], tuple(s["channel_mult"]), s["num_blocks"], s["dropout"],
            s["precond"], s["batch_size"], tuple(int(v) for v in image_shape))


def _seconds_per_step(s: dict, images: torch.Tensor, device: str, steps: int, warmup: int) -> float:
    """Wall time of one optimizer step of ``s`` on ``device``, measured over ``steps`` steps after
    ``warmup`` (in memory only: nothing is written to the cache)."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tr = _Trainer(s, images.to(device), device)
    tr.model.train()
    for _ in range(warmup):
        tr.one_step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.one_step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    del tr
    if cuda:
        torch.cuda.empty_cache()
    return seconds


def _makespan(seconds: list, workers: int) -> float:
    """Wall time of runs of the given durations, longest first, ``workers`` at a time."""
    load = [0.0] * max(1, workers)
    for t in sorted(seconds, reverse=True):
        load[load.index(min(load))] += t
    return max(load)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(jobs, device: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
             steps: int | None = None) -> dict:
    """How long :func:`train_many` will take to train ``jobs``, **measured on** ``device``.

    For every run not trained yet, the optimizer steps it still needs (the rest of its training from
    its last checkpoint, plus any snapshot replay) are multiplied by the time of one step, timed
    here: ``steps`` steps (default 3 on CUDA, 2 on the CPU, after a warm-up) of one run of each kind
    of model (network, batch size, image shape), in memory, on the device, with
    ``threads_per_worker`` threads on the CPU. Runs
    that train ``workers`` at a time (the CPU) are scheduled longest first. Nothing is written to
    the cache, and the global random state is restored. Evaluation after training is not counted.

    Returns a dict: ``device``, ``workers``, ``runs`` (one dict per run to train: ``key``, ``n``,
    ``model_channels``, ``steps``, ``seconds_per_step``, ``seconds``), ``total_seconds`` and
    ``text`` (what :func:`train_many` prints before it trains).
    """
    device = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n_timed = positive_int(steps if steps is not None else (3 if torch.device(device).type == "cuda" else 2), "steps")
    keys, todo = _pending(jobs)
    workers = worker_count(device, workers, len(todo))
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        fork = torch.random.fork_rng(devices=[dev.index if dev.index is not None else torch.cuda.current_device()])
    else:
        name = f"{threads_per_worker} thread(s) per run, {workers} run(s) at a time"
        fork = torch.random.fork_rng(devices=[])
    per_step, runs, groups = {}, [], []
    threads = torch.get_num_threads()
    try:
        with fork:
            if dev.type == "cpu":
                torch.set_num_threads(threads_per_worker)
            for key, (s, x) in todo.items():
                images = _training_images(s, x)
                group = _timing_group(s, images.shape[1:])
                if group not in per_step:
                    per_step[group] = _seconds_per_step(s, images, device, n_timed,
                                                        warmup=2 if dev.type == "cuda" else 1)
                left = _remaining_steps(s, artifacts_dir() / "models" / key)
                runs.append(dict(key=key, n=len(images), model_channels=s["model_channels"], steps=left,
                                 seconds_per_step=per_step[group], seconds=left * per_step[group]))
                groups.append(group)
    finally:
        torch.set_num_threads(threads)
    total = _makespan([r["seconds"] for r in runs], workers)
    lines = [f"training {len(runs)} of {len(set(keys))} runs on {device} ({name}): about {_duration(total)} "
             f"(timed here: {n_timed} steps of each kind of model; the other runs are cached)"]
    for group, sec in per_step.items():
        arch, ch, _, _, _, precond, batch, shape = group
        n_steps = sum(r["steps"] for r, g in zip(runs, groups) if g == group)
        lines.append(f"  {arch} {ch:>3} ch ({precond}), batch {batch}, images {'x'.join(map(str, shape))}: "
                     f"{1000 * sec:7.1f} ms/step x {n_steps:,d} steps")
    lines.append("  (training only: the evaluation after it is not included)")
    return dict(device=device, workers=workers, runs=runs, total_seconds=total, text="\n".join(lines))
