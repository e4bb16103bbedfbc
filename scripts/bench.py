"""Benchmarks (``make bench``): speed and memory goals as ratios measured in one run.

1. Closed-form ``fit_affine`` vs the paper's Adam recipe (100 epochs, batch 256) on the same affine
   teacher (D_G of natural-image patches, so the exact W is known): time and weight error.
   Goal: >= 50x faster at equal or lower error.
2. ``EmpiricalDenoiser`` (streaming float64 log-sum-exp) vs a naive float32 ``cdist`` + softmax, with
   N = 50,000 training images of d = 3,072 (CIFAR-10's shape): time, peak memory (each in its own
   process) and error against a float64 reference. Goal: peak memory <= 1 GB, exact in float64.
3. ``GaussianDenoiser.flow`` (closed form, paper eq. 7) vs 10-step Euler sampling with D_G.
4. The training step of the cpu ladder's models (8x8 digits, batch 64, 32 and 4 channels), one thread:
   the plain fp32 loop (per-parameter Adam, EMA and nan_to_num, eager) against the book's step
   (``utils.training.step``) at its default numerics (fp32, eager, foreach Adam: the reference every
   claim was verified under) and with each opt-in lever (``HGB_TRAIN_ADAM=fused``,
   ``HGB_TRAIN_PRECISION=bf16`` where bf16 is native, and with ``--levers`` ``HGB_TRAIN_COMPILE=1``,
   a compile each), all in one process, timed round robin by CPU time per step (robust to a busy
   machine) and printed as ratios against the plain loop; the FLOPs of one step
   (``torch.utils.flop_counter``) give the achieved GFLOP/s beside the core's fp32 peak.
   Goals (issue 24): >= 2x at 32 channels, >= 3x at 4 channels.
5. Evaluation: the forward passes chapters 3 and 4 spend their time on (``denoisers.apply`` at batch
   512 of a 32-channel model), eager (the book's default) vs the opt-in compiled graph
   (``HGB_EVAL_COMPILE=1``). Goal: >= 1.5x, float32 results within 1e-5.
6. The per-chapter times of the last ``make book`` (from the execution-statistics ledger).

Every number is measured here; nothing is hard-coded. Run: ``python scripts/bench.py [--quick] [--levers] [--only PART]``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from utils import data, distill, edm, metrics
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def bench_distillation(quick: bool) -> dict:
    x = data.load("patches", n=1000 if quick else 2000, seed=0)
    G = GaussianDenoiser.fit(data.load("patches"))
    sigma = 1.5017
    W_ref = G.weight(sigma)
    # an affine teacher is fitted exactly once N * n_noise > d, so one noise draw per image suffices;
    # the fit takes well under a second, so take the best of three timings
    runs = [timed(distill.fit_affine, G, x, sigma, n_noise=1, seed=0) for _ in range(3)]
    closed, t_closed = runs[0][0], min(t for _, t in runs)
    epochs = 20 if quick else 100
    adam, t_adam = timed(distill.fit_affine_adam, G, x, sigma, epochs=epochs, batch_size=256,
                         seed=0, keep_weights=False, W_ref=W_ref)
    return {"d": x[0].numel(), "N": len(x), "sigma": sigma, "adam_epochs": epochs, "adam_lr": adam.lr,
            "closed_form_s": t_closed, "adam_s": t_adam, "speedup": t_adam / t_closed,
            "closed_form_W_error": metrics.weight_nmse(closed.W, W_ref),
            "adam_W_error": adam.weight_errors[-1]}


_EMPIRICAL_CHILD = r"""
import json, resource, sys, time, torch
from utils.denoisers import EmpiricalDenoiser
n, d, b, sigma, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
g = torch.Generator().manual_seed(0)
# images on a 16-dimensional subspace (pixel std ~0.3): many training points lie at comparable
# distances from a query, so the softmax weights are spread out and round-off matters
basis = torch.randn(16, d, generator=g) * 0.3 / 4
train = torch.randn(n, 16, generator=g) @ basis
q = torch.randn(b, 16, generator=g) @ basis + sigma * torch.randn(b, d, generator=g)
with open("/proc/self/statm") as f:                  # resident memory before the call (data included)
    before_mb = int(f.read().split()[1]) * resource.getpagesize() / 2**20
t = time.perf_counter()
if mode == "streaming":
    out = EmpiricalDenoiser(train.reshape(n, 1, 1, d))(q.reshape(b, 1, 1, d), sigma).reshape(b, d)
elif mode == "naive":            # the common float32 implementation: cdist, softmax, matmul
    w = torch.softmax(-torch.cdist(q, train) ** 2 / (2 * sigma ** 2), dim=1)
    out = w @ train
else:                            # float64 reference, materialising everything
    t64 = train.double()
    w = torch.softmax(-torch.cdist(q.double(), t64, compute_mode="donot_use_mm_for_euclid_dist") ** 2
                      / (2 * sigma ** 2), dim=1)
    out = w @ t64
elapsed = time.perf_counter() - t
torch.save(out.double(), sys.argv[6])
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": elapsed, "peak_mb": peak_mb, "before_mb": before_mb, "working_mb": peak_mb - before_mb}))
"""


def bench_empirical(quick: bool, tmpdir: str) -> dict:
    n, d, b = (10_000 if quick else 50_000), 3072, 64
    result = {"N": n, "d": d, "batch": b}
    for sigma in (0.02, 0.5):
        runs = {}
        for mode in ("streaming", "naive", "reference"):
            path = f"{tmpdir}/{mode}-{sigma}.pt"
            out = subprocess.run([sys.executable, "-c", _EMPIRICAL_CHILD, str(n), str(d), str(b), str(sigma),
                                  mode, path], capture_output=True, text=True, check=True)
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            runs[mode]["out"] = torch.load(path)
        ref = runs["reference"]["out"]
        for mode in ("streaming", "naive"):
            err = (runs[mode]["out"] - ref).abs().max().item()
            result[f"sigma={sigma}"] = result.get(f"sigma={sigma}", {})
            result[f"sigma={sigma}"][mode] = {k: runs[mode][k] for k in ("s", "peak_mb", "working_mb")}
            result[f"sigma={sigma}"][mode]["max_abs_error"] = err
    return result


def bench_flow() -> dict:
    x = data.load("patches", n=4000, seed=0)
    G = GaussianDenoiser.fit(x)
    z = torch.randn(256, *x.shape[1:], generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80
    exact, t_flow = timed(G.flow, z, 80.0, 0.0)
    euler, t_euler = timed(edm.sample, G, z, edm.sigma_steps(10), "euler")
    heun, t_heun = timed(edm.sample, G, z, edm.sigma_steps(40), "heun")
    rms = lambda a: float((a - exact).pow(2).mean().sqrt())          # noqa: E731
    return {"flow_s": t_flow, "euler10_s": t_euler, "heun40_s": t_heun, "euler10_over_flow": t_euler / t_flow,
            "euler10_rmse_to_flow": rms(euler), "heun40_rmse_to_flow": rms(heun)}


_TRAIN_CHILD = r"""
import copy, json, os, resource, sys, time, torch
torch.set_num_threads(1)
from torch.utils.flop_counter import FlopCounterMode
from utils import profiles, train
from utils.edm import edm_loss
from utils.training import step as step_mod
ch, rounds, variants = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
s = train.normalize_spec(profiles.resolve("cpu").train_spec(1500, model_channels=ch))
x = train._training_images(s, None)


def baseline():
    # the plain fp32 loop: per-parameter Adam, nan_to_num and EMA, eager, the loss with its checks
    torch.manual_seed(s["seed"])
    model = train.build_denoiser(s, x.shape[1:])
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    k = [0]
    def one():
        g = torch.Generator().manual_seed(train._step_seed(s["seed"], k[0]))
        idx = torch.randint(len(x), (s["batch_size"],), generator=g)
        for group in opt.param_groups:
            group["lr"] = train.learning_rate(s, k[0] + 1)
        loss = edm_loss(model, x[idx], generator=g, uniform_share=s["sigma_uniform_share"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        opt.step()
        k[0] += 1
        beta = 0.5 ** (1.0 / max(train.ema_halflife(s, k[0]), 1e-8))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm.detach(), 1.0 - beta)
        return float(loss)
    return one, model, {"precision": "fp32", "compile": False, "adam": "per-parameter"}


def book(**levers):
    # the book's step (utils.training.step.Trainer): its default numerics (fp32, eager, foreach Adam),
    # or with levers switched on by their variables (e.g. HGB_TRAIN_ADAM="fused")
    for name in ("HGB_TRAIN_PRECISION", "HGB_TRAIN_COMPILE", "HGB_TRAIN_ADAM"):
        os.environ.pop(name, None)
    os.environ.update(levers)
    tr = step_mod.Trainer(s, x, "cpu")
    tr.model.train()
    return tr.one_step, tr.model, tr.numerics


BF16, FUSED, COMPILE = {"HGB_TRAIN_PRECISION": "bf16"}, {"HGB_TRAIN_ADAM": "fused"}, {"HGB_TRAIN_COMPILE": "1"}
makers = {"baseline": baseline, "book": book, "fused Adam": lambda: book(**FUSED), "bf16": lambda: book(**BF16),
          "bf16+fused": lambda: book(**BF16, **FUSED), "compile": lambda: book(**COMPILE),
          "compile+bf16+fused": lambda: book(**COMPILE, **BF16, **FUSED)}
steps, info = {}, {}
for v in variants:
    one, model, numerics = makers[v]()
    c0, w0, ch0 = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    one()                                       # the first step (a compile, where there is one)
    info[v] = {"numerics": numerics, "first_step_cpu_s": time.process_time() - c0 +
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - ch0, "first_step_wall_s": time.perf_counter() - w0}
    for _ in range(3):
        one()
    steps[v] = one
    if v == "baseline":                         # FLOPs of one step (forward + backward) of the fp32 model
        m = train.build_denoiser(s, x.shape[1:])
        with FlopCounterMode(display=False) as fc:
            edm_loss(m, x[:s["batch_size"]], generator=torch.Generator().manual_seed(0),
                     uniform_share=s["sigma_uniform_share"]).backward()
        flops = fc.get_total_flops()
cpu = {v: [] for v in variants}
wall = {v: [] for v in variants}
for _ in range(rounds):                          # round robin: every variant sees the same machine load
    for v in variants:
        c, w = time.process_time(), time.perf_counter()
        steps[v]()
        cpu[v].append(time.process_time() - c)
        wall[v].append(time.perf_counter() - w)
med = lambda a: sorted(a)[len(a) // 2]
print(json.dumps({"model_channels": ch, "gflop_per_step": flops / 1e9, "params": sum(p.numel() for p in m.parameters()),
                  "variants": {v: dict(info[v], cpu_ms=1000 * med(cpu[v]), wall_ms=1000 * med(wall[v])) for v in variants}}))
"""


def cpu_peak() -> dict:
    """The fp32 FMA peak of one core from /proc/cpuinfo: MHz x lanes (16 with AVX-512, 8 with AVX2)
    x 2 FMA units (assumed: server cores with AVX-512 have two) x 2 FLOP per FMA; and whether the
    CPU has native bf16 (AMX-BF16 / AVX512-BF16)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {"mhz": None, "fp32_peak_gflops": None, "isa": "unknown", "native_bf16": False}
    mhz = max(float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz"))
    flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())
    lanes, isa = (16, "AVX-512") if "avx512f" in flags else (8, "AVX2") if "avx2" in flags else (4, "SSE")
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return {"mhz": mhz, "fp32_peak_gflops": mhz / 1000 * lanes * 2 * 2, "isa": isa,
            "native_bf16": ", ".join(bf16) if bf16 else False}


def _child_json(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_training(quick: bool, levers: bool) -> dict:
    """Part 4: one optimizer step, one thread, the baseline loop and the book's step (and with
    ``levers`` each lever on its own) in one process, timed round robin by CPU time per step."""
    rounds = 10 if quick else 30
    # the eager levers cost no compile: always; the compiled ones (a compile each): with --levers
    variants = ["baseline", "book", "fused Adam", "bf16", "bf16+fused"] + (["compile", "compile+bf16+fused"] if levers else [])
    res = {"rounds": rounds, "peak": cpu_peak(), "models": {}}
    for ch in (32, 4):
        r = _child_json(_TRAIN_CHILD, ch, rounds, ",".join(variants))
        base = r["variants"]["baseline"]["cpu_ms"]
        for v in r["variants"].values():
            v["speedup"] = base / v["cpu_ms"]
            v["gflops"] = r["gflop_per_step"] / (v["cpu_ms"] / 1000)
        res["models"][ch] = r
    return res


_EVAL_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from utils import denoisers, profiles, train
n, rounds = int(sys.argv[1]), int(sys.argv[2])
s = train.normalize_spec(profiles.resolve("cpu").train_spec(1500))
model = train.build_denoiser(s, (1, 8, 8)).eval().requires_grad_(False)
g = torch.Generator().manual_seed(0)
with torch.no_grad():                       # weights of a trained model's scale (the zero-initialised layers too)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
x = torch.randn(n, 1, 8, 8, generator=g)
sigmas = [0.02, 0.5, 5.0]
def run(compiled):
    model.compile_eval = compiled
    return [denoisers.apply(model, x, sg) for sg in sigmas]
eager = run(False)
c0, ch0, w0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, time.perf_counter()
fast = run(True)
compile_cpu = time.process_time() - c0 + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - ch0
diff = max((a - b).abs().max().item() for a, b in zip(fast, eager))
t = {False: [], True: []}
for _ in range(rounds):
    for compiled in (False, True):
        c = time.process_time(); run(compiled); t[compiled].append(time.process_time() - c)
best = {k: min(v) for k, v in t.items()}
print(json.dumps({"inputs": n * len(sigmas), "eager_cpu_s": best[False], "compiled_cpu_s": best[True],
                  "speedup": best[False] / best[True], "max_abs_diff": diff, "compile_cpu_s": compile_cpu,
                  "compile_wall_s": time.perf_counter() - w0}))
"""


def bench_evaluation(quick: bool) -> dict:
    """Part 5: the forward passes chapters 3 and 4 spend their time on (``denoisers.apply`` of a
    32-channel ladder model at batch 512, the teacher calls of ``distill.fit_affine``, the
    ``metrics`` curves and ``edm.sample``): eager (the default) vs the opt-in compiled graph
    (``HGB_EVAL_COMPILE=1``, ``utils.edm.Precond.compile_eval``), one thread, CPU time, and the largest
    float32 difference."""
    return _child_json(_EVAL_CHILD, 1024 if quick else 4096, 2 if quick else 3)


def last_book_times() -> dict | None:
    from utils.paths import results_dir
    path = results_dir() / "exec_stats.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a fast check)")
    parser.add_argument("--levers", action="store_true",
                        help="part 4 also times HGB_TRAIN_COMPILE=1, alone and with bf16 + fused Adam (a compile each)")
    parser.add_argument("--only", type=int, action="append", metavar="PART", help="run only this part (repeatable)")
    args = parser.parse_args()
    import tempfile
    want = (lambda k: not args.only or k in args.only)
    with tempfile.TemporaryDirectory() as tmp:
        if want(1):
            print("1. linear distillation: closed form vs the paper's Adam recipe ...", flush=True)
            dist = bench_distillation(args.quick)
            print(json.dumps(dist, indent=1))
            print(f"   -> closed form is {dist['speedup']:.0f}x faster; W error {dist['closed_form_W_error']:.2e} "
                  f"(closed form) vs {dist['adam_W_error']:.2e} (Adam, {dist['adam_epochs']} epochs)"
                  f"  [goal: >= 50x at equal or lower error: "
                  f"{'met' if dist['speedup'] >= 50 and dist['closed_form_W_error'] <= dist['adam_W_error'] else 'NOT met'}]")
        if want(2):
            print("2. memorizing denoiser D_M: streaming float64 vs naive float32 cdist+softmax ...", flush=True)
            emp = bench_empirical(args.quick, tmp)
            print(json.dumps(emp, indent=1))
            for key in (k for k in emp if k.startswith("sigma")):
                s, n = emp[key]["streaming"], emp[key]["naive"]
                print(f"   -> {key}: time ratio streaming/naive {s['s'] / n['s']:.2f}; working memory above the "
                      f"data {s['working_mb']:.0f} MB vs {n['working_mb']:.0f} MB (process peak {s['peak_mb']:.0f} vs "
                      f"{n['peak_mb']:.0f} MB, of which the float32 training set is {emp['N'] * emp['d'] * 4 / 2**20:.0f} MB); "
                      f"max error vs float64 reference {s['max_abs_error']:.1e} vs {n['max_abs_error']:.1e}"
                      f"  [goal: working memory <= 1 GB: {'met' if s['working_mb'] <= 1024 else 'NOT met'}]")
        if want(3):
            print("3. Gaussian sampling: closed-form flow vs 10-step Euler ...", flush=True)
            flow = bench_flow()
            print(json.dumps(flow, indent=1))
            print(f"   -> 10-step Euler takes {flow['euler10_over_flow']:.1f}x the closed-form flow's time; its RMSE to "
                  f"the exact flow is {flow['euler10_rmse_to_flow']:.3f} (Heun-40: {flow['heun40_rmse_to_flow']:.4f})")
        if want(4):
            print("4. the training step, one thread: the plain fp32 loop vs the book's step ...", flush=True)
            tr = bench_training(args.quick, args.levers)
            print(json.dumps(tr, indent=1))
            peak = tr["peak"]
            print(f"   CPU: {peak['isa']}, {peak['mhz']:.0f} MHz, fp32 FMA peak of one core ~{peak['fp32_peak_gflops']:.0f} "
                  f"GFLOP/s (MHz x {16 if peak['isa'] == 'AVX-512' else 8} lanes x 2 FMA units x 2); native bf16: "
                  f"{peak['native_bf16'] or 'no'}")
            for ch, goal in ((32, 2.0), (4, 3.0)):
                r = tr["models"][ch]
                base = r["variants"]["baseline"]
                print(f"   -> {ch:2d} channels ({r['gflop_per_step']:.3f} GFLOP/step): plain fp32 loop "
                      f"{base['cpu_ms']:.1f} ms/step = {base['gflops']:.1f} GFLOP/s "
                      f"({100 * base['gflops'] / peak['fp32_peak_gflops']:.0f} % of the core's fp32 peak)")
                for v, rec in r["variants"].items():
                    if v == "baseline":
                        continue
                    n = rec["numerics"]
                    what = f"{n['precision']}{', compiled' if n['compile'] else ''}, {n['adam']} Adam"
                    label = "book (default)" if v == "book" else f"lever {v}"
                    print(f"      {label:26s} {rec['cpu_ms']:7.1f} ms/step  {rec['speedup']:.2f}x  "
                          f"{rec['gflops']:6.1f} GFLOP/s  ({what}; first step {rec['first_step_cpu_s']:.1f} s CPU)")
                best = max((v for v in r["variants"] if v != "baseline"), key=lambda v: r["variants"][v]["speedup"])
                print(f"      fastest: {best} at {r['variants'][best]['speedup']:.2f}x  [issue 24's goal >= {goal:.0f}x: "
                      f"{'met' if r['variants'][best]['speedup'] >= goal else 'NOT met'}; the default is "
                      f"{r['variants']['book']['speedup']:.2f}x]")
        if want(5):
            print("5. evaluation: the forward passes of chapters 3 and 4, eager vs compiled (opt-in) ...", flush=True)
            ev = bench_evaluation(args.quick)
            print(json.dumps(ev, indent=1))
            print(f"   -> {ev['speedup']:.2f}x the eager throughput ({ev['inputs'] / ev['eager_cpu_s']:.0f} -> "
                  f"{ev['inputs'] / ev['compiled_cpu_s']:.0f} inputs/s, one thread), largest float32 difference "
                  f"{ev['max_abs_diff']:.1e}, compile {ev['compile_cpu_s']:.0f} s CPU once per process"
                  f"  [goal: >= 1.5x, results within 1e-5: "
                  f"{'met' if ev['speedup'] >= 1.5 and ev['max_abs_diff'] <= 1e-5 else 'NOT met'}]")
        if want(6):
            print("6. per-chapter times of the last make book ...", flush=True)
            print_book_times()


def print_book_times() -> None:
    """Part 6: the per-chapter times of the last make book and its up-front training stage."""
    from utils.paths import results_dir
    stats = last_book_times()
    if stats is None:
        print("   (no execution-statistics ledger yet: run make book first)")
        return
    for rec in stats.get("notebooks", {}).values():
        print(f"   {rec.get('path', '?'):<45} {rec.get('profile', '?'):<6} {rec.get('status', '?'):<7} "
              f"{rec.get('seconds', float('nan')):8.1f} s")
    total = sum(float(r.get("seconds", 0.0)) for r in stats.get("notebooks", {}).values())
    print(f"   notebooks: {total:.0f} s")
    prep = results_dir() / "prepare_stats.json"
    if prep.exists():
        p = json.loads(prep.read_text())
        print(f"   models trained up front (prepare_models, profile {p.get('profile')}): {p.get('trained')} of "
              f"{p.get('runs')} runs, {p.get('workers')} at a time, {float(p.get('seconds', 0)):.0f} s; "
              f"with the notebooks {total + float(p.get('seconds', 0)):.0f} s")


if __name__ == "__main__":
    main()
