"""Several runs at once: :func:`train_many` and its worker processes.

On the CPU, ``workers`` runs train at a time in separate processes with one thread each (two small
trainings side by side use two cores better than one training on two threads); on CUDA one after
the other in this process. A worker is ``python -c`` running :func:`_worker_main` on a pickled job.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..checks import positive_int
from ..paths import artifacts_dir
from .estimate import estimate, usable_cores, worker_count
from .runs import train
from .spec import normalize_spec
from .store import _pending, default_device


def _worker_main(job_file: str) -> None:
    """Entry point of a worker process of :func:`train_many` (``python -c``): train one pickled job."""
    spec, x_train, threads = torch.load(job_file, weights_only=False)
    torch.set_num_threads(threads)
    train(spec, x_train, device="cpu", progress=False)


def _cost(spec: dict) -> float:
    s = normalize_spec(spec)
    return s["steps"] * s["batch_size"] * (s["model_channels"] ** 2 + 64 * 64)   # rough: width^2 + overhead


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
    device = device or default_device()
    if workers is not None:
        workers = positive_int(workers, "workers")
    threads_per_worker = positive_int(threads_per_worker, "threads_per_worker")
    import subprocess
    import sys
    import tempfile


    keys, todo = _pending(jobs, device)
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
                    cmd = [sys.executable, "-c", f"from utils.training.pool import _worker_main; _worker_main({job_file!r})"]
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

