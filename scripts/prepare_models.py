#!/usr/bin/env python
"""Train every model the book's chapters need, several at a time, before the notebooks run.

    python scripts/prepare_models.py                     # profile cpu, all chapters, one worker per core
    python scripts/prepare_models.py --only 05_strong_generalization --workers 2
    python scripts/prepare_models.py --cache-key         # prints the key of the whole model set (CI)
    python scripts/prepare_models.py --prune             # removes run folders no chapter needs (CI)

Each chapter module (``utils.chapters.<name>``) lists its training runs in ``runs(P, seed)``; this
script collects them, trains every run that is not cached yet with ``utils.train.train_many`` (on the
CPU: one process per worker, one thread each; on CUDA: one after the other) and prints how long it
took. The notebooks then load the models from ``artifacts/`` (``utils.train.get_model``); a notebook
run without this step trains what it needs itself.

``--cache-key`` prints one hash of the cache keys of every run (``utils.train.spec_key``: spec, data,
the source of the code that shapes the weights, torch version, numerics): the GitHub workflow caches
``artifacts/`` under it, so a push that changes none of them restores every model and trains nothing.
``--prune`` deletes the run folders under ``artifacts/models`` that no chapter of the profile needs
(stale ones, whose keys no longer match), so that cache does not grow without end.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import chapters, profiles, train  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help="a profile name of utils.profiles (default cpu)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", action="append", metavar="STEM", help="only this chapter (repeatable)")
    ap.add_argument("--workers", type=int, default=None, help="parallel training processes (default: the CPU cores this process may use)")
    ap.add_argument("--cache-key", action="store_true", help="print the key of the whole model set and exit")
    ap.add_argument("--prune", action="store_true", help="delete run folders no chapter needs and exit")
    args = ap.parse_args(argv)
    P = profiles.resolve(args.profile)
    stems = args.only or list(chapters.CHAPTERS)
    jobs = chapters.all_runs(P, args.seed, stems)
    if args.cache_key or args.prune:
        keys = sorted({train.spec_key(*(j if isinstance(j, tuple) else (j,)), device=P.device) for j in jobs})
        if args.cache_key:
            print(hashlib.sha256(" ".join(keys).encode()).hexdigest()[:20])
        if args.prune:
            from utils import paths
            models = paths.artifacts_dir() / "models"
            stale = [d for d in models.iterdir() if d.is_dir() and d.name not in keys] if models.exists() else []
            for d in stale:
                shutil.rmtree(d)
            print(f"prepare_models: removed {len(stale)} run folder(s) that no chapter of profile {P.name} needs; "
                  f"kept {len(keys)}", file=sys.stderr)
        return 0
    pending = train.pending_runs(jobs, device=P.device)
    workers = train.worker_count(P.device, args.workers, pending)
    t0 = time.perf_counter()
    folders = train.train_many(jobs, workers=args.workers, device=P.device)
    seconds = time.perf_counter() - t0
    print(f"prepare_models: {len(set(folders))} distinct runs for {len(stems)} chapters at profile "
          f"{P.name} ready in {seconds:.0f} s ({pending} trained, {workers} at a time)")
    from utils import paths
    out = paths.results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare_stats.json").write_text(json.dumps(
        {"profile": P.name, "runs": len(set(folders)), "trained": pending,
         "workers": workers, "seconds": round(seconds, 1)},
        indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
