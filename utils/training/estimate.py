"""How long training will take, measured on the device before it starts (:func:`estimate`)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..checks import positive_int
from ..paths import artifacts_dir
from .numerics import numerics
from .step import Trainer
from .store import _pending, _snapshot_path, _training_images, default_device

def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, e.g. a
    container limited to 2 of a host's 64 cores), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(device, workers, n_runs: int) -> int:
    """How many runs :func:`train_many` trains at a time: one on CUDA, else up to the CPU count."""
    return 1 if str(device) != "cpu" else max(1, min(workers or usable_cores(), n_runs or 1))


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


def _timing_group(s: dict, image_shape, device: str = "cpu") -> tuple:
    """What decides the time of one optimizer step: the network, the loss kind, the batch, the image
    and the step's numerics (precision, compilation, Adam's kernel)."""
    n = numerics(s, device)
    return (s["arch"], s["model_channels"], tuple(s["channel_mult"]), s["num_blocks"], s["dropout"],
            s["precond"], s["batch_size"], tuple(int(v) for v in image_shape),
            n["precision"] + (" compiled" if n["compile"] else "") + (" fused-Adam" if n["adam"] == "fused" else ""))


def _seconds_per_step(s: dict, images: torch.Tensor, device: str, steps: int, warmup: int) -> tuple:
    """``(seconds, first)``: wall time of one optimizer step of ``s`` on ``device``, measured over
    ``steps`` steps after ``warmup``, and the time of the warm-up (a compiled step's compile, which
    fills the on-disk cache the training processes then load from). In memory only: nothing is
    written to the run cache."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t_first = time.perf_counter()
    tr = Trainer(s, images.to(device), device)
    tr.model.train()
    for _ in range(warmup):
        tr.one_step()
    sync()
    first = time.perf_counter() - t_first
    t0 = time.perf_counter()
    for _ in range(steps):
        tr.one_step()
    sync()
    seconds = (time.perf_counter() - t0) / steps
    del tr
    if cuda:
        torch.cuda.empty_cache()
    return seconds, first


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
    device = str(device or default_device())
    n_timed = positive_int(steps if steps is not None else (3 if torch.device(device).type == "cuda" else 2), "steps")
    keys, todo = _pending(jobs, device)
    workers = worker_count(device, workers, len(todo))
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        fork = torch.random.fork_rng(devices=[dev.index if dev.index is not None else torch.cuda.current_device()])
    else:
        name = f"{threads_per_worker} thread(s) per run, {workers} run(s) at a time"
        fork = torch.random.fork_rng(devices=[])
    per_step, first, runs, groups = {}, {}, [], []
    threads = torch.get_num_threads()
    try:
        with fork:
            if dev.type == "cpu":
                torch.set_num_threads(threads_per_worker)
            for key, (s, x) in todo.items():
                images = _training_images(s, x)
                group = _timing_group(s, images.shape[1:], device)
                if group not in per_step:
                    per_step[group], first[group] = _seconds_per_step(s, images, device, n_timed,
                                                                      warmup=2 if dev.type == "cuda" else 1)
                left = _remaining_steps(s, artifacts_dir() / "models" / key)
                runs.append(dict(key=key, n=len(images), model_channels=s["model_channels"], arch=s["arch"],
                                 precond=s["precond"], steps=left,
                                 seconds_per_step=per_step[group], seconds=left * per_step[group]))
                groups.append(group)
    finally:
        torch.set_num_threads(threads)
    total = _makespan([r["seconds"] for r in runs], workers)
    lines = [f"training {len(runs)} of {len(set(keys))} runs on {device} ({name}): about {_duration(total)} "
             f"(timed here: {n_timed} steps of each kind of model; the other runs are cached)"]
    for group, sec in per_step.items():
        arch, ch, _, _, _, precond, batch, shape, num = group
        n_steps = sum(r["steps"] for r, g in zip(runs, groups) if g == group)
        lines.append(f"  {arch} {ch:>3} ch ({precond}, {num}), batch {batch}, images {'x'.join(map(str, shape))}: "
                     f"{1000 * sec:7.1f} ms/step x {n_steps:,d} steps"
                     + (f" (compiled here in {first[group]:.0f} s, then loaded from the cache)" if "compiled" in num else ""))
    lines.append("  (training only: the evaluation after it is not included)")
    return dict(device=device, workers=workers, runs=runs, total_seconds=total, text="\n".join(lines))
