#!/usr/bin/env python
"""Train every model the book's chapters need, several at a time, before the notebooks run.

    python scripts/prepare_models.py                     # profile cpu, all chapters, one worker per core
    python scripts/prepare_models.py --only 05_strong_generalization --workers 2

Each chapter module (``utils.chapters.<name>``) lists its training runs in ``runs(P, seed)``; this
script collects them, trains every run that is not cached yet with ``utils.train.train_many`` (on the
CPU: one process per worker, one thread each; on CUDA: one after the other) and prints how long it
took. The notebooks then load the models from ``artifacts/`` (``utils.train.get_model``); a notebook
run without this step trains what it needs itself.
"""
from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args(argv)
    P = profiles.resolve(args.profile)
    stems = args.only or list(chapters.CHAPTERS)
    jobs = chapters.all_runs(P, args.seed, stems)
    pending = train.pending_runs(jobs)
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
