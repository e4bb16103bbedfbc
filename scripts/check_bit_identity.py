"""Check that this tree trains bit-for-bit what a reference commit's code trains.

    python scripts/check_bit_identity.py                  # against the commit `main` names
    python scripts/check_bit_identity.py --ref d14620f --steps 30
    python scripts/check_bit_identity.py --only VE --lever HGB_TRAIN_ADAM=fused   # must FAIL: a lever

The reference commit's ``utils/`` is exported with ``git archive`` into a temporary folder; every
run below is then trained twice in each code base, each in a fresh process with one thread and its
own artifacts folder: straight through, and stopped at a checkpoint (``stop_at``) and resumed in a
new process. The checkpoint of the last step holds the weights, the EMA weights, Adam's state and the
loss history; all four runs of a spec must agree exactly (``torch.equal`` on every tensor, ``==`` on
every loss), so a change of the training code that moves a single bit of a trained model fails here.

The runs: short versions (``--steps``, the lr ramp-up and EMA half-life scaled down so that both
matter) of the cpu profile's training specs that every kind of run of the book uses: a ladder U-Net
(with the profile's log-uniform sigma share), chapter 2's U-Net with EDM's own p(sigma) only, chapter
6's Baseline-VE run (``precond="ve"``), its conv DAE (``arch="convdae"``, ``precond="dae"``) and its
U-Net DAE, plus a U-Net with dropout (the step's second random stream). The training
numerics are the default ones (no ``HGB_TRAIN_*`` lever is passed to the children); ``--lever
NAME=VALUE`` sets one for this tree's runs only, to see the check fail on a change of numerics.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Trains one spec in the code base on PYTHONPATH (run as `python -c CHILD spec.json stop_at|-1`): with
# stop_at, train up to it and exit (the resume happens in the next process); the final checkpoint is
# copied to $OUT_FILE.
CHILD = r"""
import json, os, shutil, sys
import torch
torch.set_num_threads(1)
from utils import train
spec = json.load(open(sys.argv[1]))
stop = int(sys.argv[2])
folder = train.train(spec, progress=False, stop_at=None if stop < 0 else stop)
if stop < 0:
    shutil.copy(folder / "checkpoint.pt", os.environ["OUT_FILE"])
"""


def specs(steps: int) -> dict:
    """``{name: spec}``: the cpu profile's kinds of training run, shortened to ``steps`` steps."""
    sys.path.insert(0, str(REPO))
    from utils import profiles
    from utils.chapters import architectures, memorization
    P = profiles.resolve("cpu")
    S = architectures.settings(P)
    grid = architectures.grid_levels(P.sampler_steps)
    short = dict(steps=steps, lr_rampup_steps=max(1, steps // 3), ema_halflife_steps=max(1.0, steps / 6),
                 snapshot_steps=[], checkpoint_every=max(1, steps // 3))
    out = {"ladder U-Net (sigma_uniform_share)": P.train_spec(64, seed=0),
           "U-Net, EDM's p(sigma) only (ch2)": memorization.lognormal_spec(P, 0),
           "Baseline-VE (precond='ve', ch6)": architectures.ve_spec(P, S, 0),
           "conv DAE (arch='convdae', precond='dae', ch6)": architectures.dae_spec(P, S.conv_dae, grid[len(grid) // 2], 0),
           "U-Net DAE (precond='dae', ch6)": architectures.dae_spec(P, S.unet_dae, grid[-1], 0),
           "U-Net with dropout 0.1": P.train_spec(16, seed=2, dropout=0.1)}
    return {k: {**v, **short} for k, v in out.items()}


def _run(code: Path, spec_file: Path, stop: int, artifacts: Path, out_file: Path | None = None,
         levers: dict | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HGB_TRAIN_", "HGB_EVAL_"))}
    env.update(levers or {})
    env.update(PYTHONPATH=str(code), HGB_ARTIFACTS=str(artifacts), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if out_file is not None:
        env["OUT_FILE"] = str(out_file)
    subprocess.run([sys.executable, "-c", CHILD, str(spec_file), str(stop)], env=env, cwd=str(code), check=True)


def _equal(a, b, where: str) -> list:
    """Every place where ``a`` and ``b`` (nested dicts / lists of tensors and numbers) differ."""
    import torch
    if isinstance(a, torch.Tensor):
        ok = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if ok else [where]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{where}: keys differ"]
        return [d for k in a for d in _equal(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{where}: lengths differ"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _equal(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="main", help="the reference commit (default: main)")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run (default 30)")
    ap.add_argument("--only", metavar="TEXT", help="only the runs whose name contains TEXT")
    ap.add_argument("--lever", action="append", default=[], metavar="HGB_TRAIN_X=VALUE",
                    help="an environment variable for this tree's runs only (repeatable)")
    args = ap.parse_args(argv)
    if args.steps < 3:
        ap.error(f"--steps must be >= 3 (a resume needs a step to stop at), got {args.steps}")
    if any("=" not in lever or not lever.startswith("HGB_") for lever in args.lever):
        ap.error(f"--lever must look like HGB_TRAIN_ADAM=fused, got {args.lever}")
    levers = dict(lever.split("=", 1) for lever in args.lever)
    import torch
    runs = {k: v for k, v in specs(args.steps).items() if not args.only or args.only in k}
    if not runs:
        ap.error(f"--only {args.only!r} matches no run; runs: {list(specs(args.steps))}")
    stop = args.steps // 2
    failures, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hgb-bitid-") as tmp:
        tmp = Path(tmp)
        ref = tmp / "ref"
        ref.mkdir()
        archive = subprocess.run(["git", "archive", args.ref, "utils"], cwd=REPO, check=True, capture_output=True).stdout
        (tmp / "ref.tar").write_bytes(archive)
        with tarfile.open(tmp / "ref.tar") as tar:
            tar.extractall(ref)
        commit = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout.strip()
        print(f"reference: {args.ref} ({commit}); this tree: {REPO}{' with ' + ' '.join(args.lever) if levers else ''}; "
              f"{args.steps} steps, resumed at {stop}; one thread")
        for i, (name, spec) in enumerate(runs.items()):
            spec_file = tmp / f"spec{i}.json"
            spec_file.write_text(json.dumps(spec))
            states = {}
            for label, code in (("ref", ref), ("new", REPO)):
                for mode in ("full", "resumed"):
                    art, out = tmp / f"art-{i}-{label}-{mode}", tmp / f"ckpt-{i}-{label}-{mode}.pt"
                    env = levers if label == "new" else None
                    if mode == "resumed":
                        _run(code, spec_file, stop, art, levers=env)
                    _run(code, spec_file, -1, art, out, levers=env)
                    states[f"{label} {mode}"] = torch.load(out, map_location="cpu", weights_only=False)
            base = states["ref full"]
            diffs = []
            for other in ("ref resumed", "new full", "new resumed"):
                s = states[other]
                diffs += [f"{other}: {d}" for part in ("model", "ema", "opt", "history", "step")
                          for d in _equal(base[part], s[part], part)]
            n_tensors = len(base["model"]) + len(base["ema"])
            last = base["history"]["loss"][-1]
            print(f"  {'FAIL' if diffs else 'ok  '} {name}: {n_tensors} weight + EMA tensors, Adam state and "
                  f"{len(base['history']['loss'])} losses equal in all 4 runs (last loss {last:.6f})")
            for d in diffs[:10]:
                print(f"       {d}")
            failures += [name] if diffs else []
    print(f"{len(runs) - len(failures)} of {len(runs)} specs bit-identical ({time.perf_counter() - t0:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
