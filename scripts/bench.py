"""Benchmarks (``make bench``): speed and memory goals as ratios measured in one run.

1. Closed-form ``fit_affine`` vs the paper's Adam recipe (100 epochs, batch 256) on the same affine
   teacher (D_G of natural-image patches, so the exact W is known): time and weight error.
   Goal: >= 50x faster at equal or lower error.
2. ``EmpiricalDenoiser`` (streaming float64 log-sum-exp) vs a naive float32 ``cdist`` + softmax, with
   N = 50,000 training images of d = 3,072 (CIFAR-10's shape): time, peak memory (each in its own
   process) and error against a float64 reference. Goal: peak memory <= 1 GB, exact in float64.
3. ``GaussianDenoiser.flow`` (closed form, paper eq. 7) vs 10-step Euler sampling with D_G.

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


if __name__ == "__main__":
    main()
