"""The model cache: keys that cannot go stale, atomic files, and a lock per run folder.

**The key** (:func:`spec_key`) of a run is a short SHA-256 of everything that decides its weights:

* the normalized spec (numbers in canonical types, so ``20`` and ``20.0`` hash alike), without the
  keys that do not change the weights (how often a checkpoint is written, which snapshots are kept);
* the training images' shape, dtype and content (a SHA-256 of the tensor, for named, ``folder:`` and
  explicitly passed data alike): what the data loading produced, whatever code produced it;
* the **source code** of every module that shapes the weights (:func:`code_fingerprint`: the network
  of the spec's architecture, the preconditioning and losses, the validators on the step's path,
  the spec's schedules, the training step and the loop around it: resume, checkpoints, snapshots),
  hashed as syntax trees without docstrings (so prose and comments do not count, code does): an edit
  of any of them retrains instead of serving stale models -- no hand-bumped version number;
* the torch version and the **numerics** of the step on this device (precision, compilation, Adam's
  kernel: ``utils.training.numerics.numerics``; the default fp32 / eager / foreach unless a lever is
  switched on), because each of them changes the float rounding.

A snapshot asked for later that a finished run did not keep is recovered by replaying the run
(bit-for-bit) up to that step (``utils.training.runs``).

**Concurrency**: a run folder is locked (``fcntl.flock``) while a process trains in it, and every file
is written to a unique temporary name and renamed into place; a second process asking for the same
run waits for the first and then loads its result.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import functools
import hashlib
import importlib
import inspect
import json
import os
import uuid
from pathlib import Path

import torch

from .. import data as data_mod
from ..nets import ARCHS
from ..paths import artifacts_dir
from .numerics import numerics
from .spec import normalize_spec

# Keys that do not change the trained weights and are left out of the cache key.
_NOT_IN_KEY = ("checkpoint_every", "snapshot_steps")

# The modules whose source shapes the weights of every run (the architecture's own module is added
# per spec, see _arch_sources). tests/test_train.py checks that every utils module these import is
# listed here or in NOT_SHAPING with its reason, so a new dependency of the step cannot be forgotten.
SHAPING_MODULES = ("utils.nets", "utils.edm", "utils.checks", "utils.training.spec", "utils.training.step",
                   "utils.training.runs")
NOT_SHAPING = {
    "utils.data": "the training images are hashed by content (data_fingerprint), whatever code loaded them",
    "utils.paths": "where files are written, not what they hold",
    "utils.training.store": "where runs and compiled code are cached, and their keys: not the arithmetic",
    "utils.training.numerics": "which levers a run uses: its answer (precision, compile, Adam kernel) is in the key itself",
}


def source_sha(text: str) -> str:
    """SHA-256 of Python source as code: its syntax tree without docstrings, so that comments,
    docstrings and formatting do not change it, and every change of code does."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=True, include_attributes=False).encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _module_sha(name: str) -> str:
    path = inspect.getsourcefile(importlib.import_module(name))
    return source_sha(Path(path).read_text(encoding="utf-8"))


def _arch_sources(arch: str) -> dict:
    """The module of the builder that ``ARCHS[arch]`` names (an architecture registered from outside
    ``utils.nets`` brings its own source into the key)."""
    module = getattr(ARCHS.get(arch), "__module__", None)
    return {module: _module_sha(module)} if module and module not in SHAPING_MODULES else {}


def code_fingerprint(arch: str = "unet") -> dict:
    """``{module: SHA-256 of its source file}`` for every module that shapes a run's weights."""
    return {**{m: _module_sha(m) for m in SHAPING_MODULES}, **_arch_sources(arch)}


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


def _fingerprint(s: dict, x_train: torch.Tensor | None) -> str:
    if x_train is not None or s["dataset"].startswith("folder:"):     # a folder's files may change
        return json.dumps(data_fingerprint(_training_images(s, x_train)), sort_keys=True)
    return _named_fingerprint(s["dataset"], s["n"], s["seed"])[1]


def use_compile_cache() -> Path:
    """Point torch.compile's on-disk cache at ``artifacts/torch_compile`` (unless
    ``$TORCHINDUCTOR_CACHE_DIR`` is set): every process of the book, the worker processes of
    ``train_many`` included, then reuses a compiled step instead of compiling it again, and a cached
    ``artifacts/`` (CI) keeps it. Returns the folder."""
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(artifacts_dir() / "torch_compile")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def default_device() -> str:
    """The device a run trains on when none is given: CUDA when available, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def key_payload(s: dict, x_train: torch.Tensor | None = None, device: str | None = None) -> dict:
    """Everything the key of the normalized spec ``s`` hashes (also written to the run's spec.json)."""
    return {"spec": {k: v for k, v in s.items() if k not in _NOT_IN_KEY},
            "data": json.loads(_fingerprint(s, x_train)),
            "code": code_fingerprint(s["arch"]),
            "torch": torch.__version__.split("+")[0],
            "numerics": numerics(s, device or default_device())}


def _key(s: dict, x_train: torch.Tensor | None, device: str | None = None) -> str:
    payload = key_payload(s, x_train, device)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def spec_key(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None) -> str:
    """The cache key of a run on ``device`` (default: CUDA when available, else the CPU): a short hash
    of the normalized spec (without the keys that do not change the weights), the training images'
    fingerprint, the source of the code that shapes the weights, the torch version and the numerics."""
    return _key(normalize_spec(spec), x_train, device)


def run_dir(spec: dict, x_train: torch.Tensor | None = None, device: str | None = None) -> Path:
    """The folder of a run (it may not exist yet)."""
    return artifacts_dir() / "models" / spec_key(spec, x_train, device)


def _snapshot_path(folder: Path, step: int) -> Path:
    return folder / "snapshots" / f"ema-{int(step):08d}.pt"


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


def _pending(jobs, device: str | None = None) -> tuple[list, dict]:
    """``(keys, todo)``: the cache key of every job in order, and ``{key: (normalized spec, x_train)}``
    of the runs not finished yet (a run asked for twice is trained once, with the union of the
    snapshots asked for)."""
    keys, todo = [], {}
    for job in jobs:
        spec, x = job if isinstance(job, tuple) else (job, None)
        s = normalize_spec(spec)
        key = _key(s, x, device)
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


def pending_runs(jobs, device: str | None = None) -> int:
    """How many distinct runs of ``jobs`` (as for :func:`train_many`) are not in the cache yet."""
    return len(_pending(jobs, device)[1])
