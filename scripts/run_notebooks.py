#!/usr/bin/env python
"""Execute every notebook of ``_toc.yml``, in toc order, with papermill.

    python scripts/run_notebooks.py                      # profile cpu, every chapter
    python scripts/run_notebooks.py --only 03_linearity  # one chapter (repeatable)
    python scripts/run_notebooks.py --profile smoke

* executed copies go to ``_build/executed/<same path>.ipynb`` (e.g. ``_build/executed/book/01_x.ipynb``);
* the kernel's output (tqdm bars included) streams into this log as it runs;
* per-notebook wall time and status go to ``<results>/exec_stats.json`` (``<results>`` is
  ``utils.paths.results_dir()``: ``_build/results`` or ``$HGB_RESULTS_DIR``);
* the results and execution-statistics pages are rendered into ``_build/generated/``;
* ``--jobs N`` runs N notebooks at a time, each kernel on ``cores // N`` threads (default at smoke and
  cpu: 2 on a machine with 2 or more cores -- two one-thread runs side by side beat one two-thread run;
  1 at colab and gpu, which share one GPU); the per-notebook times are then wall times of notebooks
  that shared the machine. The chapters load the models ``scripts/prepare_models.py`` trained up
  front; a run a notebook trains itself is locked in the model cache, so concurrent chapters are safe;
* exit status 1 if any notebook failed (the message names the notebook and the failing cell), if a
  notebook wrote no results ledger, or if the whole run exceeded ``--budget`` seconds.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_pages  # noqa: E402

REPO = book_pages.REPO
BUILD = REPO / "_build"
KERNEL = "python3"
# Target wall time of a whole-book run per profile (a run over it warns); --budget, which fails
# the run, defaults to 2x this: a guard against a runaway chapter, with room for a slower machine.
# Measured 2026-11-26 on the 2-core CI machine: 1,616 s at cpu from scratch (no cached models).
# colab: about an hour per chapter on a free T4 (estimated). gpu: the paper's scale, days: no guard.
TARGET_S = {"smoke": 300, "cpu": 1500, "colab": 5 * 3600, "gpu": 6 * 3600}
NO_BUDGET = ("gpu",)
# Seconds per cell at the CPU profiles; the GPU profiles train for hours in one cell: no timeout.
CELL_TIMEOUT_S = {"smoke": 1800.0, "cpu": 1800.0, "colab": None, "gpu": None}


def use_this_python_for_kernel() -> str:
    """Make kernel ``python3`` resolve to this interpreter, and check that it does.

    The venv ships ``share/jupyter/kernels/python3`` whose argv ``python`` jupyter_client replaces
    by ``sys.executable``; putting that folder first on JUPYTER_PATH keeps a user-wide ``python3``
    kernelspec (pointing at another Python) from shadowing it.
    """
    venv_share = str(Path(sys.prefix) / "share" / "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join([venv_share] + [p for p in paths if p != venv_share])
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    exe = spec.argv[0]
    if exe not in ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}") \
            and Path(exe).resolve() != Path(sys.executable).resolve():
        raise SystemExit(f"kernel {KERNEL!r} ({spec.resource_dir}) runs {exe}, not this Python "
                         f"({sys.executable}); remove that kernelspec or run "
                         f"`{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}`")
    return exe


def host_info() -> dict:
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": f"{platform.system()} {platform.machine()}", "cpus": os.cpu_count()}


def execute(src: Path, dst: Path, profile: str, cell_timeout: float | None, log_output: bool = True) -> dict:
    """Run one notebook with papermill; return its exec-stats record (never raises on a cell error)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    dst.parent.mkdir(parents=True, exist_ok=True)
    record = {"path": str(src.relative_to(REPO)) if src.is_relative_to(REPO) else str(src),
              "profile": profile, "started": book_pages.now(), "status": "ok", "error": None}
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(dst), parameters={"profile": profile}, kernel_name=KERNEL,
                            cwd=str(src.parent), log_output=log_output, progress_bar=False,
                            execution_timeout=cell_timeout, start_timeout=120)
    except PapermillExecutionError as e:
        first_line = next((ln for ln in (e.source or "").splitlines() if ln.strip()), "")
        record.update(status="failed", error={"cell_index": e.cell_index, "exec_count": e.exec_count,
                                              "source": first_line[:200],
                                              "ename": e.ename, "evalue": str(e.evalue)[:2000]})
    except Exception as e:  # kernel death, cell timeout, unreadable notebook...
        record.update(status="failed", error={"cell_index": _running_cell(dst), "exec_count": None,
                                              "ename": type(e).__name__, "evalue": str(e)[:2000]})
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def default_jobs(profile: str) -> int:
    """Notebooks run at a time by default: ``$HGB_NOTEBOOK_JOBS`` if set, else 2 at the CPU profiles on
    a machine with 2+ usable cores, 1 at colab / gpu (one GPU)."""
    env = os.environ.get("HGB_NOTEBOOK_JOBS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise SystemExit(f"run_notebooks: $HGB_NOTEBOOK_JOBS must be a positive integer, got {env!r}")
        return int(env)
    if profile not in ("smoke", "cpu"):
        return 1
    from utils.train import usable_cores
    return 2 if usable_cores() >= 2 else 1


def _init_worker(threads: int) -> None:
    # the kernels this worker starts inherit its environment: one BLAS / OpenMP pool of `threads` each
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


def execute_many(runs: list, cell_timeout: float | None, jobs: int, on_done=None) -> list[dict]:
    """Run ``runs`` = [(src, dst, profile), ...] with papermill, ``jobs`` at a time (worker processes,
    each kernel on ``cores // jobs`` threads); ``on_done(i, record)`` is called as each finishes, in
    completion order. Returns the records in the order of ``runs``. ``jobs == 1`` runs them one after
    the other in this process, streaming nothing (see :func:`execute` for a streamed single run)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    records: list = [None] * len(runs)
    if jobs == 1 or len(runs) <= 1:
        for i, (src, dst, profile) in enumerate(runs):
            records[i] = execute(Path(src), Path(dst), profile, cell_timeout, log_output=False)
            if on_done:
                on_done(i, records[i])
        return records
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from utils.train import usable_cores
    threads = max(1, usable_cores() // jobs)
    with ProcessPoolExecutor(max_workers=min(jobs, len(runs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(execute, Path(src), Path(dst), profile, cell_timeout, False): i
                   for i, (src, dst, profile) in enumerate(runs)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                records[i] = fut.result()
            except Exception as e:                      # the worker itself died (not a cell error)
                src, _, profile = runs[i]
                records[i] = {"path": str(src), "profile": profile, "status": "failed", "seconds": 0.0,
                              "error": {"cell_index": None, "exec_count": None, "ename": type(e).__name__,
                                        "evalue": str(e)[:2000]}}
            if on_done:
                on_done(i, records[i])
    return records


def _running_cell(executed: Path):
    """Index of the cell papermill marked as running when execution died, if known."""
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return i
    return None


def describe_failure(stem: str, rec: dict, executed: Path) -> str:
    err = rec.get("error") or {}
    cell = err.get("cell_index")
    where = "unknown cell" if cell is None else \
        f"cell {cell}" + (f" (In [{err['exec_count']}])" if err.get("exec_count") else "") \
        + (f" `{err['source']}`" if err.get("source") else "")
    return (f"FAILED {rec['path']}: {where} raised {err.get('ename', '?')}: "
            f"{(err.get('evalue') or '').strip()}\n"
            f"       (cells counted in the executed copy, which holds the traceback: {executed})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "colab", "gpu", "auto"))
    ap.add_argument("--only", action="append", metavar="STEM",
                    help="run only this notebook (file name without .ipynb); repeatable")
    ap.add_argument("--cell-timeout", type=float, default=None,
                    help="seconds per cell (default 1800 at smoke / cpu, where a cell may train several "
                         "models; none at colab / gpu; 0: none)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole run (default 2 x the profile's target, none at gpu; 0: none)")
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failing notebook")
    ap.add_argument("--jobs", type=int, default=None,
                    help="notebooks run at a time (default: $HGB_NOTEBOOK_JOBS, else 2 at smoke / cpu on 2+ "
                         "cores, 1 at colab / gpu); more than 1 does not stream the notebooks' output")
    ap.add_argument("--quiet", action="store_true", help="do not stream the notebooks' output")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout, force=True)
    from utils import paths, profiles

    profile = profiles.resolve(args.profile).name if args.profile == "auto" else args.profile
    if profile in profiles.CUDA_PROFILES:
        try:                         # fail here, not in every notebook, when there is no GPU
            profiles.resolve(profile)
        except RuntimeError as e:
            raise SystemExit(f"run_notebooks: {e}") from None
    budget = args.budget if args.budget is not None else (0 if profile in NO_BUDGET else 2.0 * TARGET_S[profile])
    cell_timeout = args.cell_timeout if args.cell_timeout is not None else CELL_TIMEOUT_S[profile]
    cell_timeout = cell_timeout or None                          # 0: no timeout

    try:
        notebooks = book_pages.toc_notebooks(REPO)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"run_notebooks: {e}") from None
    for nb in book_pages.unlisted_notebooks(REPO):
        print(f"warning: {nb.relative_to(REPO)} is not listed in _toc.yml and will not be run")
    if args.only:
        by_stem = {nb.stem: nb for nb in notebooks}
        unknown = [s for s in args.only if s.removesuffix(".ipynb").split("/")[-1] not in by_stem]
        if unknown:
            raise SystemExit(f"--only {', '.join(unknown)}: not a notebook of _toc.yml "
                             f"(known: {', '.join(by_stem) or 'none'})")
        wanted = {s.removesuffix(".ipynb").split("/")[-1] for s in args.only}
        notebooks = [nb for nb in notebooks if nb.stem in wanted]

    exe = use_this_python_for_kernel()
    results = paths.results_dir()
    stats_path = results / "exec_stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if (args.only and stats_path.is_file()) else {}
    stats.setdefault("notebooks", {})
    stats.update(host=host_info(), kernel=f"{KERNEL} -> {exe} ({sys.executable})")
    try:
        from utils.book import repo_commit
        stats["commit"] = repo_commit()
    except ImportError:
        stats["commit"] = None

    jobs = args.jobs if args.jobs is not None else default_jobs(profile)
    if jobs < 1:
        raise SystemExit(f"run_notebooks: --jobs must be >= 1, got {jobs}")
    jobs = min(jobs, max(1, len(notebooks)))
    stats["jobs"] = jobs
    print(f"running {len(notebooks)} notebook(s) at profile {profile!r}, {jobs} at a time; budget "
          f"{f'{budget:.0f} s' if budget else 'none'}; cell timeout "
          f"{f'{cell_timeout:.0f} s' if cell_timeout else 'none'}; results -> {results}", flush=True)
    failures, t_start = [], time.perf_counter()

    def finish(nb: Path, rec: dict) -> None:
        dst = BUILD / "executed" / nb.relative_to(REPO)
        if rec["status"] == "ok" and not (results / f"{nb.stem}.json").is_file():
            rec.update(status="failed", error={"cell_index": None, "exec_count": None, "ename": "NoLedger",
                                               "evalue": "the notebook wrote no results ledger: its last "
                                                         "cell must call utils.book.record_claims(...)"})
        stats["notebooks"][nb.stem] = rec
        stats["updated"] = book_pages.now()
        stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
        print(f"=== {nb.stem}: {rec['status']} in {rec['seconds']:.1f} s ===", flush=True)
        if rec["status"] != "ok":
            failures.append(describe_failure(nb.stem, rec, dst))

    if jobs > 1:                     # side by side; the budget is checked at the end
        for nb in notebooks:
            (results / f"{nb.stem}.json").unlink(missing_ok=True)     # never show a stale ledger
        print("(the notebooks' output is not streamed when several run at a time; each executed copy "
              "holds its own)", flush=True)
        execute_many([(nb, BUILD / "executed" / nb.relative_to(REPO), profile) for nb in notebooks],
                     cell_timeout, jobs, on_done=lambda i, rec: finish(notebooks[i], rec))
    else:
        for i, nb in enumerate(notebooks):
            elapsed = time.perf_counter() - t_start
            if budget and elapsed > budget:
                for rest in notebooks[i:]:
                    stats["notebooks"][rest.stem] = {"path": str(rest.relative_to(REPO)), "profile": profile,
                                                     "status": "skipped (over budget)", "seconds": 0.0,
                                                     "error": None}
                    failures.append(f"SKIPPED {rest.relative_to(REPO)}: the run had used {elapsed:.0f} s "
                                    f"of its {budget:.0f} s budget")
                break
            print(f"\n=== [{i + 1}/{len(notebooks)}] {nb.relative_to(REPO)} (profile {profile}) ===", flush=True)
            (results / f"{nb.stem}.json").unlink(missing_ok=True)     # never show a stale ledger
            finish(nb, execute(nb, BUILD / "executed" / nb.relative_to(REPO), profile, cell_timeout,
                               log_output=not args.quiet))
            if failures and args.fail_fast:
                break

    total = time.perf_counter() - t_start
    stats["updated"] = book_pages.now()
    stats["wall_seconds"] = round(total, 1)
    stats_path.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    pages = book_pages.write_pages(BUILD / "generated", results, REPO)

    print("\n" + "-" * 72)
    for nb in notebooks:
        rec = stats["notebooks"].get(nb.stem, {})
        print(f"{nb.stem:<40} {rec.get('status', 'not run'):<22} {rec.get('seconds', 0):>8.1f} s")
    print(f"{'total':<40} {'':<22} {total:>8.1f} s   (target at {profile}: {TARGET_S[profile]} s)")
    print("pages: " + ", ".join(str(p.relative_to(REPO)) for p in pages))
    if budget and total > budget:
        failures.append(f"OVER BUDGET: the run took {total:.0f} s, more than --budget {budget:.0f} s")
    elif total > TARGET_S[profile]:
        print(f"warning: the run took {total:.0f} s, more than the {TARGET_S[profile]} s target at {profile}")
    if failures:
        print("\n" + "\n".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
