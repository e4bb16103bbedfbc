#!/usr/bin/env python
"""The GPU check (``make gpu-check``): every chapter at the ``colab`` profile on this CUDA device,
with a short budget, and a projection of each chapter's full ``colab`` time.

    python scripts/gpu_check.py                          # every chapter of _toc.yml
    python scripts/gpu_check.py --only 03_linearity      # one chapter (repeatable)
    HGB_ALLOW_CPU=1 python scripts/gpu_check.py          # no GPU: the same report, marked as a CPU run

What it does, in a fresh temporary folder (nothing of the real model cache is read or written):

1. **Training, measured.** The training runs of every chapter at the full ``colab`` profile
   (``<module>.runs(P, seed)``) are timed on the device by ``utils.train.estimate``: ``--timing-steps``
   optimizer steps (after a warm-up) of one run of each kind of model (width, batch, image shape).
   A chapter's projected training is its runs' ``steps x measured time per step``, one run at a time
   (as ``train_many`` trains on a GPU), once from scratch (a fresh Colab session: nothing cached) and
   once in book order with the models of earlier chapters kept (``KEEP_ON_DRIVE``).
2. **The chapters, run.** Every notebook is executed by papermill at ``colab`` with the smoke budget
   (``HGB_BUDGET=smoke``: the colab data, channels and U-Net structure, the smoke profile's sizes and
   a few training steps) on the device, with one model cache shared by the chapters. This runs every
   chapter's CUDA code path, and its wall time is the chapter's *measured evaluation*: the analyses
   at the smoke sizes, plus kernel start and the budget's few training steps. The full ``colab``
   evaluation uses larger sizes, so this part of the projection is a lower bound.
3. **The report**: time per training step of each kind of model, per chapter the runs, steps,
   projected training, measured notebook time and projected total, and the whole check's duration.
   ``--json PATH`` also writes it as JSON.

The data are fake MNIST files at the real sizes (60,000 + 10,000 images; ``tests/fake_data.py``,
checksum-verified through ``HGB_DATA_CHECKSUMS``): the check measures time, not science, and needs
no network. ``--real-data`` uses ``$HGB_DATA`` instead (MNIST downloaded on first use).
Sized to finish within 8 minutes on one data-centre GPU; ``--deadline`` (default 450 s) skips the
notebooks that would start after it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import book_pages  # noqa: E402

PROFILE = "colab"
# Optimizer steps timed per kind of model (after estimate's warm-up): enough to average out a GPU's
# launch jitter, a few seconds per kind on a data-centre GPU; on the CPU (opt-in) a 32x32 batch-128
# step takes seconds, so only a couple are timed.
TIMING_STEPS = {"cuda": 100, "cpu": 2}
DEADLINE_S = 450.0           # no notebook starts after this (the whole check: <= 8 min on one GPU)
CELL_TIMEOUT_S = 300.0       # one cell of a notebook at the smoke budget: a hang, not a slow GPU
NOT_RUN = "not run (--no-notebooks)"


@dataclass
class ChapterTiming:
    """One chapter's numbers in the report (seconds; None: not measured)."""

    stem: str
    runs: int = 0                         # distinct training runs of the chapter at the full profile
    steps: int = 0                        # their optimizer steps
    train_s: float = 0.0                  # projected training, from scratch
    train_after_earlier_s: float = 0.0    # projected training with earlier chapters' models kept
    notebook_s: float | None = None       # measured: the notebook at the smoke budget
    status: str = "not run"               # ok / failed / skipped (deadline)
    error: str = ""
    device_seen: str = ""                 # the device line of the notebook's header

    @property
    def total_s(self) -> float | None:
        return None if self.notebook_s is None else self.train_s + self.notebook_s


@dataclass
class Report:
    device: str                           # "cuda" or "cpu"
    device_name: str
    timing_steps: int
    kinds: list = field(default_factory=list)       # [{model_channels, batch_size, image, ms_per_step, steps}]
    chapters: list = field(default_factory=list)    # [ChapterTiming]
    estimate_text: str = ""
    seconds: float = 0.0                  # the check's own wall time
    host: dict = field(default_factory=dict)

    @property
    def cpu_run(self) -> bool:
        return self.device != "cuda"


# --------------------------------------------------------------------------- projection (pure)

def _key(job) -> str:
    from utils import train
    spec, x = job if isinstance(job, tuple) else (job, None)
    return train.spec_key(spec, x)


def project(chapter_keys: dict, runs: list) -> dict:
    """Per chapter (``chapter_keys``: stem -> the cache keys of its training runs, in book order) the
    runs, steps and projected seconds of training, from ``runs`` (``utils.train.estimate(...)["runs"]``:
    key, steps, seconds): ``train_s`` from scratch, ``train_after_earlier_s`` counting only the runs no
    earlier chapter trained. One run at a time (a GPU): a chapter's time is the sum over its runs.
    A key missing from ``runs`` is a run already cached: it costs nothing."""
    by_key = {r["key"]: r for r in runs}
    out, earlier = {}, set()
    for stem, keys in chapter_keys.items():
        mine = [by_key[k] for k in sorted(set(keys)) if k in by_key]
        new = [r for r in mine if r["key"] not in earlier]
        out[stem] = dict(runs=len(mine), steps=int(sum(r["steps"] for r in mine)),
                         train_s=float(sum(r["seconds"] for r in mine)),
                         train_after_earlier_s=float(sum(r["seconds"] for r in new)))
        earlier |= set(keys)
    return out


def kinds_of(runs: list) -> list:
    """The distinct kinds of model of ``runs`` with their measured time per step (ms) and total steps."""
    kinds = {}
    for r in runs:
        k = (r.get("arch", "unet"), r.get("precond", "edm"), r["model_channels"], r["seconds_per_step"])
        entry = kinds.setdefault(k, dict(arch=k[0], precond=k[1], model_channels=r["model_channels"],
                                         ms_per_step=1000 * r["seconds_per_step"], steps=0, runs=0))
        entry["steps"] += int(r["steps"])
        entry["runs"] += 1
    return sorted(kinds.values(), key=lambda e: (e["arch"] != "unet", e["model_channels"], e["ms_per_step"]))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def format_report(rep: Report) -> str:
    """The text the check prints."""
    lines = []
    if rep.cpu_run:
        lines += ["*** CPU RUN (HGB_ALLOW_CPU=1, no CUDA device): every time below is this CPU's, not a GPU's; ***",
                  "*** it checks the script, not the colab budget. Run it on a CUDA machine for the real numbers. ***"]
    lines.append(f"GPU check: profile {PROFILE!r} on {rep.device} ({rep.device_name}); "
                 + ", ".join(f"{k} {v}" for k, v in rep.host.items()))
    lines.append("")
    lines.append(f"Training step times at the colab shapes (measured: {rep.timing_steps} steps per kind after a "
                 f"warm-up):")
    for k in rep.kinds:
        name = {"unet": "U-Net", "convdae": "conv DAE"}.get(k.get("arch", "unet"), k.get("arch", "unet"))
        lines.append(f"  {name:<8} {k['model_channels']:>3} ch ({k.get('precond', 'edm')}): {k['ms_per_step']:9.1f} ms/step "
                     f"({k['runs']} run(s), {k['steps']:,d} steps in all)")
    if not rep.kinds:
        lines.append("  (no training runs)")
    lines.append("")
    head = (f"{'chapter':<32} {'runs':>4} {'steps':>8} {'training':>10} {'(after earlier)':>15} "
            f"{'notebook':>9} {'total':>10}  status")
    lines += ["Per chapter at colab -- training projected (steps x measured ms/step, one run at a time), notebook "
              "measured at the smoke budget:", head, "-" * len(head)]
    for c in rep.chapters:
        status = c.status + (f": {c.error}" if c.error else "")
        lines.append(f"{c.stem:<32} {c.runs:>4} {c.steps:>8,d} {duration(c.train_s):>10} "
                     f"{duration(c.train_after_earlier_s):>15} {duration(c.notebook_s):>9} "
                     f"{duration(c.total_s):>10}  {status}")
    ran = [c for c in rep.chapters if c.notebook_s is not None]
    scratch = sum(c.total_s for c in ran) if ran else None
    in_order = sum(c.train_after_earlier_s + c.notebook_s for c in ran) if ran else None
    lines.append("-" * len(head))
    lines.append(f"{'chapters run, each from scratch':<32} {'':>4} {'':>8} {'':>10} {'':>15} {'':>9} "
                 f"{duration(scratch):>10}")
    lines.append(f"{'in order, models kept on Drive':<32} {'':>4} {'':>8} {'':>10} {'':>15} {'':>9} "
                 f"{duration(in_order):>10}")
    lines += ["",
              "Projected total = projected training + the notebook's measured time at the smoke budget. The colab",
              "evaluation uses larger sizes than the smoke budget's, so the totals are lower bounds: an estimate",
              "until a chapter has been run at colab on this device (exec_stats.json of `make book PROFILE=colab`)."]
    bad = [c for c in rep.chapters if c.status not in ("ok", NOT_RUN)]
    if bad:
        lines.append("Chapters that did not run: " + ", ".join(f"{c.stem} ({c.status})" for c in bad))
    wrong = [c for c in ran if c.device_seen and (("cuda" in c.device_seen) != (rep.device == "cuda"))]
    if wrong:
        lines.append("WARNING: a notebook ran on another device than the check: "
                     + ", ".join(f"{c.stem} ({c.device_seen})" for c in wrong))
    lines.append(f"The check took {duration(rep.seconds)}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- measuring (device work)

def prepare_environment(workdir: Path, real_data: bool) -> None:
    """Point the caches, the ledger and (unless ``real_data``) the data at ``workdir``; fake MNIST at
    the real sizes. The notebooks' kernels inherit this environment."""
    os.environ["HGB_ARTIFACTS"] = str(workdir / "artifacts-estimate")
    os.environ["HGB_RESULTS_DIR"] = str(workdir / "results")
    os.environ.setdefault("JUPYTER_PATH", "")
    if not real_data:
        sys.path.insert(0, str(REPO / "tests"))
        import fake_data
        manifest = fake_data.write_full_mnist(workdir / "data")
        os.environ["HGB_DATA"] = str(workdir / "data")
        os.environ["HGB_DATA_CHECKSUMS"] = str(manifest)


def measure_training(stems, timing_steps: int, seed: int = 0):
    """``(chapter_keys, estimate)``: the cache keys of every chapter's training runs at the full colab
    profile and ``utils.train.estimate`` of all of them on the profile's device (nothing is cached)."""
    from utils import chapters, profiles, train
    P = profiles.resolve(PROFILE, budget="full")
    chapter_keys = {}
    jobs = []
    for stem in stems:
        mine = chapters.all_runs(P, seed, stems=[stem]) if stem in chapters.CHAPTERS else []
        chapter_keys[stem] = [_key(j) for j in mine]
        jobs += mine
    est = train.estimate(jobs, device=P.device, steps=timing_steps) if jobs else \
        dict(runs=[], text="no training runs", device=P.device)
    return chapter_keys, est


def run_chapter(path: Path, out: Path, cell_timeout: float) -> dict:
    """Execute one notebook at colab with the smoke budget; its exec record (status, seconds, error)."""
    import run_notebooks
    os.environ["HGB_BUDGET"] = "smoke"
    os.environ["HGB_ARTIFACTS"] = str(out.parent.parent / "artifacts-smoke")     # shared by the chapters
    try:
        return run_notebooks.execute(path, out, PROFILE, cell_timeout=cell_timeout, log_output=False)
    finally:
        os.environ.pop("HGB_BUDGET", None)


def device_line(executed: Path) -> str:
    """The ``device`` line of utils.book.setup's header in an executed notebook ('' if absent)."""
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            text = "".join(o.get("text", "")) if isinstance(o.get("text", ""), (list, str)) else ""
            for line in text.splitlines():
                if line.startswith("device "):
                    return line[len("device "):].strip()
    return ""


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="STEM", help="check only this chapter (repeatable)")
    ap.add_argument("--timing-steps", type=int, default=None,
                    help=f"optimizer steps timed per kind of model (default {TIMING_STEPS['cuda']} on CUDA, "
                         f"{TIMING_STEPS['cpu']} on the CPU)")
    ap.add_argument("--deadline", type=float, default=DEADLINE_S,
                    help="seconds after which no further notebook starts (0: none)")
    ap.add_argument("--cell-timeout", type=float, default=CELL_TIMEOUT_S, help="seconds per notebook cell")
    ap.add_argument("--no-notebooks", action="store_true", help="only time the training steps")
    ap.add_argument("--real-data", action="store_true", help="use $HGB_DATA (MNIST downloaded) instead of fakes")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the check's files here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch

    from utils import profiles
    try:
        P = profiles.resolve(PROFILE)
    except RuntimeError as e:
        raise SystemExit(f"gpu_check: {e}") from None
    notebooks = book_pages.toc_notebooks(REPO)
    if args.only:
        wanted = {s.removesuffix(".ipynb").split("/")[-1] for s in args.only}
        unknown = wanted - {nb.stem for nb in notebooks}
        if unknown:
            raise SystemExit(f"gpu_check: --only {', '.join(sorted(unknown))}: not a notebook of _toc.yml")
        notebooks = [nb for nb in notebooks if nb.stem in wanted]
    device = P.device
    steps = args.timing_steps if args.timing_steps is not None else TIMING_STEPS["cuda" if device == "cuda" else "cpu"]
    if steps < 1:
        raise SystemExit(f"gpu_check: --timing-steps must be >= 1, got {steps}")
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"{torch.get_num_threads()} CPU threads"

    holder = tempfile.TemporaryDirectory(prefix="hgb-gpu-check-") if args.workdir is None else None
    workdir = Path(holder.name) if holder else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    try:
        prepare_environment(workdir, args.real_data)
        print(f"gpu_check: timing the training steps of {len(notebooks)} chapter(s) at {PROFILE} on {device} "
              f"({name})...", flush=True)
        chapter_keys, est = measure_training([nb.stem for nb in notebooks], steps)
        print(est["text"], flush=True)
        projected = project(chapter_keys, est["runs"])
        rep = Report(device=device, device_name=name, timing_steps=steps, kinds=kinds_of(est["runs"]),
                     estimate_text=est["text"],
                     host={"torch": torch.__version__, "python": platform.python_version()})
        if not args.no_notebooks:
            import run_notebooks
            run_notebooks.use_this_python_for_kernel()
        for nb in notebooks:
            c = ChapterTiming(nb.stem, **projected[nb.stem])
            rep.chapters.append(c)
            if args.no_notebooks:
                c.status = NOT_RUN
                continue
            if args.deadline and time.perf_counter() - t0 > args.deadline:
                c.status = "skipped (deadline)"
                continue
            print(f"gpu_check: running {nb.stem} at {PROFILE} with the smoke budget...", flush=True)
            out = workdir / "executed" / nb.name
            rec = run_chapter(nb, out, args.cell_timeout)
            c.notebook_s, c.status = float(rec["seconds"]), rec["status"]
            c.device_seen = device_line(out)
            if rec["status"] != "ok":
                err = rec.get("error") or {}
                c.error = f"{err.get('ename', '?')}: {(err.get('evalue') or '').strip()[:160]}"
            print(f"gpu_check: {nb.stem}: {c.status} in {c.notebook_s:.1f} s", flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if holder:
            holder.cleanup()
    rep.seconds = time.perf_counter() - t0
    text = format_report(rep)
    print("\n" + text, flush=True)
    if args.json:
        data = asdict(rep)
        data["cpu_run"] = rep.cpu_run
        for c, obj in zip(data["chapters"], rep.chapters):
            c["total_s"] = obj.total_s
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if all(c.status == "ok" for c in rep.chapters) or args.no_notebooks else 1


if __name__ == "__main__":
    sys.exit(main())
