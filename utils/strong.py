"""Strong generalization (paper §5, Fig. 9 and Fig. 26): two models trained on disjoint splits.

Two training sets S1 and S2 share no image. The same architecture, trained with the same settings
(seed, initialization, batch and noise draws) on each, is sampled from the *same* initial noises.
When the networks generalize their samples agree with each other and with the samples of the
Gaussian models of their splits; when they memorize each copies its own split and the pair
disagrees. This module holds what chapter 5 computes:

* :func:`split_model` / :func:`train_pair` -- the network of a training spec trained on a given
  split (a split that equals the ladder's seeded subset reuses the cached ladder model);
* :func:`shared_noise` and :func:`sample_pair` -- one set of initial noises for every model;
* :func:`nearest_report` and :func:`pair_report` -- the paired sample-similarity table and each
  sample's nearest training image in S1 ∪ S2;
* :func:`gaussian_phase_step` -- the early-stopping checkpoint of a pair, picked by a measured
  criterion (minimum RMSE to the Gaussian denoiser of its split at intermediate noise levels);
* :func:`covariance_distance` and :func:`gaussian_agreement` -- how fast the Gaussian structure of
  a split is estimated: agreement of Gaussian(S1) and Gaussian(S2) against the split size.
"""
from __future__ import annotations

import math

import torch

from . import data as data_mod
from . import edm, metrics, train
from .checks import as_images, positive_int
from .denoisers import GaussianDenoiser


# --------------------------------------------------------------------------- models on splits

def split_model(spec: dict, split: torch.Tensor, step: int | None = None, device: str | None = None,
                progress: bool = True):
    """The network of ``spec`` trained on the images ``split`` (``spec["n"]`` must be ``len(split)``).

    When ``split`` is exactly the seeded subset the ladder trains on
    (``utils.data.load(spec["dataset"], n=spec["n"], seed=spec["seed"])``) the ladder's cached
    model is returned (the same training run, bit for bit); otherwise the split is passed to
    ``utils.train.get_model`` explicitly (the cache key then includes a hash of the images).
    ``utils.data.disjoint_splits(x_train, n, seed)`` returns that subset as S1 when ``x_train`` is
    the whole training split, so S1's network is usually free.
    """
    as_images(split, "split")
    s = train.normalize_spec(spec)
    if s["n"] != len(split):
        raise ValueError(f"spec['n'] = {s['n']} but the split has {len(split)} images; build the spec "
                         f"with n=len(split) so the ladder's settings and the data agree")
    if is_ladder_subset(s, split):
        return train.get_model(s, step=step, device=device, progress=progress)
    return train.get_model(s, x_train=split.cpu(), step=step, device=device, progress=progress)


def is_ladder_subset(spec: dict, split: torch.Tensor) -> bool:
    """Whether ``split`` is exactly the training subset the spec selects without ``x_train``."""
    s = train.normalize_spec(spec)
    try:
        ladder = data_mod.load(s["dataset"], n=s["n"], seed=s["seed"])
    except ValueError:          # e.g. n larger than the dataset
        return False
    return ladder.shape == split.shape and torch.equal(ladder, split.detach().cpu().to(ladder.dtype))


def train_pair(spec: dict, s1: torch.Tensor, s2: torch.Tensor, step: int | None = None,
               device: str | None = None, progress: bool = True):
    """``(network on S1, network on S2)``: the same spec (seed, init, draws), only the data differs."""
    return (split_model(spec, s1, step=step, device=device, progress=progress),
            split_model(spec, s2, step=step, device=device, progress=progress))


# --------------------------------------------------------------------------- sampling

def shared_noise(n: int, shape, seed: int = 0, sigma_max: float = 80.0, device: str = "cpu") -> torch.Tensor:
    """``n`` initial noises x_T = sigma_max * eps (float32), drawn from a generator seeded by ``seed``."""
    positive_int(n, "n")
    g = torch.Generator().manual_seed(int(seed))
    return (float(sigma_max) * torch.randn((n, *tuple(shape)), generator=g)).to(device)


def sample_pair(d1, d2, x_T: torch.Tensor, sigmas, solver: str = "euler") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample two denoisers from the same initial noises ``x_T`` (returned on the CPU)."""
    return (edm.sample(d1, x_T, sigmas, solver=solver).cpu(),
            edm.sample(d2, x_T, sigmas, solver=solver).cpu())


# --------------------------------------------------------------------------- the similarity tables

def nearest_report(samples: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, own: int | None = None) -> dict:
    """Each sample's nearest training image in S1 ∪ S2.

    Returns means over samples: ``rmse_nn`` (pixel RMSE to the nearest image, ||x - NN|| / sqrt(d)),
    ``cosine_nn`` (cosine with it), ``memorized`` (fraction with nearest-neighbour ratio < 1/3 in
    S1 ∪ S2), ``in_s1`` (fraction whose nearest image lies in S1) and, when ``own`` is 1 or 2,
    ``in_own`` (fraction whose nearest image lies in that split); plus the per-sample tensors
    ``dist`` (pixel RMSE), ``index`` (into S1 ∪ S2) and ``nearest`` (the images themselves).
    """
    as_images(samples, "samples")
    union = torch.cat([s1.cpu(), s2.cpu()])
    q = samples.cpu()
    dist, idx = metrics.nearest_distances(q, union, k=2)
    d = q[0].numel()
    nearest = union[idx[:, 0]]
    cos = torch.nn.functional.cosine_similarity(q.reshape(len(q), -1).double(),
                                                nearest.reshape(len(q), -1).double(), dim=1, eps=1e-30)
    ratio = dist[:, 0] / dist[:, 1].clamp_min(1e-30)
    in_s1 = idx[:, 0] < len(s1)
    out = {"rmse_nn": float(dist[:, 0].mean() / math.sqrt(d)), "cosine_nn": float(cos.mean()),
           "memorized": float((ratio < 1 / 3).double().mean()), "in_s1": float(in_s1.double().mean()),
           "dist": dist[:, 0] / math.sqrt(d), "index": idx[:, 0], "nearest": nearest}
    if own is not None:
        if own not in (1, 2):
            raise ValueError(f"own must be 1 (S1) or 2 (S2), got {own!r}")
        out["in_own"] = out["in_s1"] if own == 1 else 1.0 - out["in_s1"]
    return out


def pair_report(net1: torch.Tensor, net2: torch.Tensor, gauss1: torch.Tensor, gauss2: torch.Tensor,
                s1: torch.Tensor, s2: torch.Tensor) -> dict:
    """The paired sample-similarity table of one pair of splits (all samples from the same noises).

    ``pairs``: ``utils.metrics.sample_similarity`` (mean cosine, mean pixel RMSE) of
    network(S1)~network(S2), Gaussian(S1)~Gaussian(S2), network(S1)~Gaussian(S1) and
    network(S2)~Gaussian(S2). ``nearest``: :func:`nearest_report` of each network's samples
    (with its own split). ``closer_to_partner``: fraction of noises where the two networks' samples
    are closer to each other than each is to its own nearest training image in S1 ∪ S2.
    ``partner_vs_nn``: mean pair RMSE divided by the mean nearest-image RMSE of the two networks
    (< 1: the networks agree more with each other than with any training image).
    """
    for name, t in (("net1", net1), ("net2", net2), ("gauss1", gauss1), ("gauss2", gauss2)):
        as_images(t, name)
        if t.shape != net1.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(net1.shape)} (same noises)")
    net1, net2, gauss1, gauss2 = (t.cpu() for t in (net1, net2, gauss1, gauss2))
    pairs = {"network S1 ~ network S2": metrics.sample_similarity(net1, net2),
             "Gaussian S1 ~ Gaussian S2": metrics.sample_similarity(gauss1, gauss2),
             "network S1 ~ Gaussian S1": metrics.sample_similarity(net1, gauss1),
             "network S2 ~ Gaussian S2": metrics.sample_similarity(net2, gauss2)}
    nearest = {"network S1": nearest_report(net1, s1, s2, own=1),
               "network S2": nearest_report(net2, s1, s2, own=2)}
    d = net1[0].numel()
    pair_dist = (net1 - net2).reshape(len(net1), -1).double().norm(dim=1) / math.sqrt(d)
    nn_min = torch.minimum(nearest["network S1"]["dist"], nearest["network S2"]["dist"])
    nn_mean = 0.5 * (nearest["network S1"]["rmse_nn"] + nearest["network S2"]["rmse_nn"])
    return {"pairs": pairs, "nearest": nearest, "pair_dist": pair_dist,
            "closer_to_partner": float((pair_dist < nn_min).double().mean()),
            "partner_vs_nn": float(pair_dist.mean() / max(nn_mean, 1e-30))}


FIGURE_ROWS = ("NN in S1", "Gaussian of S1", "network on S1", "network on S2", "Gaussian of S2", "NN in S2")


def figure_rows(net1: torch.Tensor, net2: torch.Tensor, gauss1: torch.Tensor, gauss2: torch.Tensor,
                s1: torch.Tensor, s2: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The rows of the paper's Fig. 9 for the first ``k`` noises (labels: :data:`FIGURE_ROWS`):
    the nearest image in S1 of network(S1)'s sample, Gaussian(S1), network(S1), network(S2),
    Gaussian(S2), and the nearest image in S2 of network(S2)'s sample."""
    positive_int(k, "k")
    a, b = net1[:k].cpu(), net2[:k].cpu()
    nn1 = s1.cpu()[metrics.nearest_distances(a, s1.cpu(), k=1)[1][:, 0]]
    nn2 = s2.cpu()[metrics.nearest_distances(b, s2.cpu(), k=1)[1][:, 0]]
    return [nn1, gauss1[:k].cpu(), a, b, gauss2[:k].cpu(), nn2]


def report_rows(reports: dict) -> list[dict]:
    """Flatten ``{setting: pair_report(...)}`` into table rows (one per setting) for display."""
    rows = []
    for setting, r in reports.items():
        p, nn = r["pairs"], r["nearest"]
        rows.append({"setting": setting,
                     "net1~net2 cos": p["network S1 ~ network S2"]["cosine"],
                     "net1~net2 RMSE": p["network S1 ~ network S2"]["rmse"],
                     "G1~G2 cos": p["Gaussian S1 ~ Gaussian S2"]["cosine"],
                     "G1~G2 RMSE": p["Gaussian S1 ~ Gaussian S2"]["rmse"],
                     "net~own G RMSE": 0.5 * (p["network S1 ~ Gaussian S1"]["rmse"]
                                              + p["network S2 ~ Gaussian S2"]["rmse"]),
                     "net~NN RMSE": 0.5 * (nn["network S1"]["rmse_nn"] + nn["network S2"]["rmse_nn"]),
                     "NN in own split": 0.5 * (nn["network S1"]["in_own"] + nn["network S2"]["in_own"]),
                     "memorized": 0.5 * (nn["network S1"]["memorized"] + nn["network S2"]["memorized"]),
                     "closer to partner": r["closer_to_partner"]})
    return rows


# --------------------------------------------------------------------------- early stopping

def gaussian_phase_step(spec: dict, s1: torch.Tensor, s2: torch.Tensor, x_eval: torch.Tensor, sigmas,
                        seed: int = 0, device: str | None = None, progress: bool = True):
    """The checkpoint of a pair closest to the Gaussian denoisers of their splits (the Gaussian phase).

    For every snapshot step of ``spec`` (and the final step), the criterion is the mean over both
    networks and over ``sigmas`` of RMSE(D_theta, D_G of its own split) on the held-out images
    ``x_eval`` noised once per sigma (noise seeded by ``seed``; the same noisy inputs for every
    step). Returns ``(best_step, {step: criterion})``; ties go to the earlier step.
    """
    as_images(x_eval, "x_eval")
    s = train.normalize_spec(spec)
    steps = sorted(set(s["snapshot_steps"]) | {s["steps"]})
    sigmas = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]
    if not sigmas:
        raise ValueError("sigmas must hold at least one noise level")
    g = torch.Generator().manual_seed(int(seed))
    noisy = [(sig, x_eval.cpu() + sig * torch.randn(x_eval.shape, generator=g)) for sig in sigmas]
    gauss = (GaussianDenoiser.fit(s1.cpu()), GaussianDenoiser.fit(s2.cpu()))
    crit = {}
    for k in steps:
        nets = train_pair(s, s1, s2, step=k, device=device, progress=progress)
        vals = []
        for net, dg in zip(nets, gauss):
            dev = next(net.parameters()).device
            for sig, xn in noisy:
                vals.append(metrics.rmse(net, dg, xn.to(dev), sig))
        crit[k] = sum(vals) / len(vals)
    best = min(steps, key=lambda k: (crit[k], k))
    return best, crit


def snapshot_agreement(spec: dict, s1: torch.Tensor, s2: torch.Tensor, x_T: torch.Tensor, sigmas,
                       device: str | None = None, progress: bool = True) -> dict:
    """Agreement of the pair at every snapshot step of ``spec`` (and the final step).

    Returns ``{step: {"cosine", "rmse", "memorized"}}``: the paired similarity of the two networks'
    samples from ``x_T`` and the mean memorized fraction of the two (nearest-neighbour ratio < 1/3
    in S1 ∪ S2). Used to show the agreement over training; the early-stopping step itself is picked
    by :func:`gaussian_phase_step`, which does not look at these numbers.
    """
    s = train.normalize_spec(spec)
    out = {}
    for k in sorted(set(s["snapshot_steps"]) | {s["steps"]}):
        d1, d2 = train_pair(s, s1, s2, step=k, device=device, progress=progress)
        a, b = sample_pair(d1, d2, x_T, sigmas)
        sim = metrics.sample_similarity(a, b)
        mem = 0.5 * (nearest_report(a, s1, s2)["memorized"] + nearest_report(b, s1, s2)["memorized"])
        out[k] = {"cosine": sim["cosine"], "rmse": sim["rmse"], "memorized": mem}
    return out


def paired_improvement(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error over noises of ``before - after`` (per-noise pair distances of two
    settings sampled from the same noises): a positive mean many standard errors above 0 means the
    second setting's pair agrees more."""
    if before.shape != after.shape or before.ndim != 1 or len(before) < 2:
        raise ValueError(f"need two 1-D tensors of one length >= 2, got {tuple(before.shape)} and {tuple(after.shape)}")
    diff = (before - after).double()
    return float(diff.mean()), float(diff.std() / math.sqrt(len(diff)))


# --------------------------------------------------------------------------- the Gaussian structure

def covariance_distance(s1: torch.Tensor, s2: torch.Tensor, reference: torch.Tensor) -> float:
    """||Sigma_1 - Sigma_2||_F / ||Sigma||_F: covariances of two splits against that of ``reference``."""
    c1, c2, c = (GaussianDenoiser.fit(t.cpu()).covariance for t in (s1, s2, reference))
    return float((c1 - c2).norm() / c.norm().clamp_min(1e-300))


def gaussian_agreement(x: torch.Tensor, sizes, x_T: torch.Tensor, sigmas, seeds=(0,),
                       reference: torch.Tensor | None = None, device: str = "cpu") -> list[dict]:
    """Agreement of the Gaussian models of two disjoint splits against the split size.

    For each size n and each seed, ``utils.data.disjoint_splits(x, n, seed)`` gives S1 and S2;
    their Gaussian denoisers are sampled from the shared noises ``x_T`` with ``sigmas``. Returns one
    row per size: ``n``, ``cosine`` / ``rmse`` (mean over seeds of ``sample_similarity``),
    ``rmse_std`` (std over seeds, 0 for one seed) and ``cov_dist`` (mean over seeds of
    :func:`covariance_distance` against the covariance of ``reference``, default ``x``).
    """
    as_images(x, "x")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    ref_cov = GaussianDenoiser.fit((x if reference is None else reference).cpu()).covariance
    ref_norm = ref_cov.norm().clamp_min(1e-300)
    rows = []
    for n in sizes:
        positive_int(int(n), "size")
        cos, rms, cov = [], [], []
        for sd in seeds:
            s1, s2 = data_mod.disjoint_splits(x, int(n), seed=int(sd))
            g1, g2 = GaussianDenoiser.fit(s1.cpu()), GaussianDenoiser.fit(s2.cpu())
            a, b = sample_pair(g1, g2, x_T.to(device), sigmas)
            sim = metrics.sample_similarity(a, b)
            cos.append(sim["cosine"])
            rms.append(sim["rmse"])
            cov.append(float((g1.covariance - g2.covariance).norm() / ref_norm))
        t = torch.tensor(rms, dtype=torch.float64)
        rows.append({"n": int(n), "cosine": sum(cos) / len(cos), "rmse": float(t.mean()),
                     "rmse_std": float(t.std()) if len(t) > 1 else 0.0, "cov_dist": sum(cov) / len(cov)})
    return rows
