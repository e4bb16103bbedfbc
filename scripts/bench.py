"""Benchmarks (``make bench``): speed and memory goals as ratios measured in one run.

1. Closed-form ``fit_affine`` vs the paper's Adam recipe (100 epochs, batch 256) on the same affine
   teacher (D_G of natural-image patches, so the exact W is known): time and weight error.
   Goal: >= 50x faster at equal or lower error.
2. ``EmpiricalDenoiser`` (streaming float64 log-sum-exp) vs a naive float32 ``cdist`` + softmax, with
   N = 50,000 training images of d = 3,072 (CIFAR-10's shape): time, peak memory (each in its own
   process) and error against a float64 reference. Goal: peak memory <= 1 GB, exact in float64.
3. ``GaussianDenoiser.flow`` (closed form, paper eq. 7) vs 10-step Euler sampling with D_G.
4. Training throughput of the cpu ladder's model (8x8 digits, 32 channels, batch 64): the book's training
   step (``utils.train``: foreach Adam, one fused EMA update, gradients cleaned only when not finite)
   against the loop as it was before (kept here as the baseline: per-parameter Adam, EMA and
   nan_to_num), both on two threads; and two one-thread trainings side by side (what
   ``utils.train.train_many`` does) against one two-thread training. Goal: the two-at-once throughput
   >= 1.3x one two-thread run.
5. The per-chapter times of the last ``make book`` (from the execution-statistics ledger).

Every number is measured here; nothing is hard-coded. Run: ``python scripts/bench.py [--quick]``.
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
import copy, json, sys, time, torch
threads, mode, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
from utils import profiles, train
from utils.edm import edm_loss
s = train.normalize_spec(profiles.resolve("cpu").train_spec(1500))
x = train._training_images(s, None)
if mode == "book":
    tr = train._Trainer(s, x, "cpu")
    step = tr.one_step
else:                                   # the loop as it was before (the baseline)
    torch.manual_seed(s["seed"])
    model = train.build_denoiser(s, x.shape[1:])
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=(0.9, 0.999), eps=1e-8)
    k = [0]
    def step():
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
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t)}))
"""


def _train_child(threads: int, mode: str, steps: int):
    return subprocess.Popen([sys.executable, "-c", _TRAIN_CHILD, str(threads), mode, str(steps)],
                            stdout=subprocess.PIPE, text=True)


def _rate(proc) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError("training benchmark child failed")
    return json.loads(out.strip().splitlines()[-1])["steps_per_s"]


def bench_training(quick: bool) -> dict:
    steps = 30 if quick else 100
    res = {"steps": steps}
    for mode in ("baseline", "book"):                     # one run on two threads, alone on the machine
        res[f"{mode}_2threads_steps_per_s"] = _rate(_train_child(2, mode, steps))
    pair = [_train_child(1, "book", steps) for _ in range(2)]          # two one-thread runs side by side
    res["book_two_1thread_runs_steps_per_s"] = sum(_rate(p) for p in pair)
    res["loop_speedup"] = res["book_2threads_steps_per_s"] / res["baseline_2threads_steps_per_s"]
    res["parallel_speedup"] = res["book_two_1thread_runs_steps_per_s"] / res["book_2threads_steps_per_s"]
    return res


def last_book_times() -> dict | None:
    from utils.paths import results_dir
    path = results_dir() / "exec_stats.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (for a fast check)")
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        print("1. linear distillation: closed form vs the paper's Adam recipe ...", flush=True)
        dist = bench_distillation(args.quick)
        print(json.dumps(dist, indent=1))
        print(f"   -> closed form is {dist['speedup']:.0f}x faster; W error {dist['closed_form_W_error']:.2e} "
              f"(closed form) vs {dist['adam_W_error']:.2e} (Adam, {dist['adam_epochs']} epochs)"
              f"  [goal: >= 50x at equal or lower error: "
              f"{'met' if dist['speedup'] >= 50 and dist['closed_form_W_error'] <= dist['adam_W_error'] else 'NOT met'}]")
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
        print("3. Gaussian sampling: closed-form flow vs 10-step Euler ...", flush=True)
        flow = bench_flow()
        print(json.dumps(flow, indent=1))
        print(f"   -> 10-step Euler takes {flow['euler10_over_flow']:.1f}x the closed-form flow's time; its RMSE to "
              f"the exact flow is {flow['euler10_rmse_to_flow']:.3f} (Heun-40: {flow['heun40_rmse_to_flow']:.4f})")
        print("4. training throughput of the cpu ladder's model ...", flush=True)
        tr = bench_training(args.quick)
        print(json.dumps(tr, indent=1))
        print(f"   -> the book's training step is {tr['loop_speedup']:.2f}x the baseline loop's throughput (2 threads); "
              f"two one-thread runs side by side give {tr['parallel_speedup']:.2f}x one two-thread run"
              f"  [goal: >= 1.3x: {'met' if tr['parallel_speedup'] >= 1.3 else 'NOT met'}]")
        print("5. per-chapter times of the last make book ...", flush=True)
        print_book_times()


def print_book_times() -> None:
    """Part 5: the per-chapter times of the last make book and its up-front training stage."""
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
