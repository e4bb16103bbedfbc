"""Chapter 5: strong generalization (paper §5, Fig. 9 and Fig. 26): two models trained on disjoint splits.

Two training sets S1 and S2 share no image. The same architecture, trained with the same settings
(seed, initialization, batch and noise draws) on each, is sampled from the *same* initial noises
(``utils.edm.initial_noise``). When the networks generalize their samples agree with each other and
with the samples of the Gaussian models of their splits; when they memorize each copies its own
split and the pair disagrees. This module holds what chapter 5 computes:

* :func:`train_pair` -- the networks of a training spec on S1 and S2 (``utils.train.get_model``
  with the split as ``x_train``; the cache key hashes the images, so a split that equals a ladder
  subset reuses the ladder's run);
* :func:`nearest_report` and :func:`pair_report` -- the paired sample-similarity table and each
  sample's nearest training image in S1 ∪ S2 (``utils.metrics.sample_stats``);
* :func:`gaussian_phase_step` -- the early-stopping checkpoint of a pair, picked by a measured
  criterion (minimum RMSE to the Gaussian denoiser of its split over the intermediate regime);
* :func:`covariance_distance` and :func:`gaussian_agreement` -- how fast the Gaussian structure of
  a split is estimated: agreement of Gaussian(S1) and Gaussian(S2) against the split size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import numpy as np
import torch

from .. import data as data_mod
from .. import edm, metrics, train
from ..checks import as_images, positive_int, progress_bar
from ..denoisers import GaussianDenoiser
from ..regimes import Regimes
from ..settings import ChapterSettings



# --------------------------------------------------------------------------- settings

PAIR_KEYS = frozenset({"n", "overrides", "seed_control"})


@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 5's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences."""

    CHAPTER = "ch5"
    # Pairs of disjoint splits: the two halves of the 1,500 digits (as the paper halves FFHQ and CIFAR-10;
    # S1 is the ladder's N = 750 run), and N = 2d = 128, the smallest split whose Gaussian models agree
    # (this chapter's sweep), trained twice as long as the ladder because memorization sets in later with
    # more images; the narrow pair is the same at 4 channels. seed_control adds S2's network with another
    # seed (other initial weights and draws) for the pairs whose agreement is claimed.
    pairs: dict = field(default_factory=lambda: {
        "large": dict(n=750, seed_control=True),
        "small": dict(n=128, overrides=dict(steps=4000, snapshot_steps=[
            25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 750, 1000, 1250,
            1500, 1750, 2000, 2500, 3000, 3500])),
        "narrow": dict(n=128, overrides=dict(steps=4000, model_channels=4, snapshot_steps=[]), seed_control=True)})
    n_noise: int = 200            # initial noises shared by every model of a pair
    n_show: int = 10
    gauss_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256, 512, 750])
    gauss_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(pairs={"large": dict(n=64, seed_control=True),
                             "small": dict(n=8, overrides=dict(steps=30, snapshot_steps=[5, 10, 20])),
                             "narrow": dict(n=8, overrides=dict(steps=30, model_channels=4, snapshot_steps=[]),
                                            seed_control=True)},
                      n_noise=16, n_show=6, gauss_sizes=[4, 8, 16, 32], gauss_seeds=[0]),
        # Measured at cpu (2026-12-01): about a third of the small-split samples are copies after 4,000
        # steps; the claim stays evaluated and would pass if it held.
        "cpu": dict(expected_to_fail=dict(
            small_copy="at N = 2d = 128 the onset of memorization lies beyond the 4,000 steps the cpu "
                       "budget allows (the onset grows about linearly with N, chapter 4); the pair "
                       "disagrees all the same (previous claim)")),
        # the two halves of 60,000 (as the paper halves CIFAR-10); N = 2d = 2,048 trained twice as long as
        # the ladder (as at the cpu profile), and the same at 4 channels.
        "colab": dict(pairs={"large": dict(n=30000, seed_control=True),
                             "small": dict(n=2048, overrides=dict(steps=12000, snapshot_steps=[
                                 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000])),
                             "narrow": dict(n=2048, overrides=dict(steps=12000, model_channels=4, snapshot_steps=[]),
                                            seed_control=True)},
                      gauss_sizes=[64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 30000], gauss_seeds=[0, 1]),
        "gpu": dict(pairs={"large": dict(n=25000, overrides=dict(model_channels=64), seed_control=True),
                           "small": dict(n=782),
                           "narrow": dict(n=782, overrides=dict(model_channels=4, snapshot_steps=[]), seed_control=True)},
                    gauss_sizes=[50, 100, 200, 400, 782, 1600, 3200, 6400, 12500, 25000], gauss_seeds=[0]),
    }

    def validate(self):
        if set(self.pairs) != {"large", "small", "narrow"}:
            raise ValueError(f"pairs must have the keys 'large', 'small' and 'narrow', got {sorted(self.pairs)}")
        for name, pair in self.pairs.items():
            if not isinstance(pair, dict) or "n" not in pair or set(pair) - PAIR_KEYS:
                raise ValueError(f"pairs[{name!r}] must be a dict with 'n' and optionally 'overrides' and "
                                 f"'seed_control', got {pair!r}")
            if isinstance(pair["n"], bool) or not isinstance(pair["n"], int) or pair["n"] < 1:
                raise ValueError(f"pairs[{name!r}]['n'] must be a positive int, got {pair['n']!r}")
            if not isinstance(pair.get("overrides", {}), dict):
                raise ValueError(f"pairs[{name!r}]['overrides'] must be a dict of training-spec keys")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: every pair of ``settings(P).pairs`` on its splits."""
    x = data_mod.load(P.dataset)
    out = []
    for pair in settings(P).pairs.values():
        s1, s2 = data_mod.disjoint_splits(x, pair["n"], seed=seed)
        spec = P.train_spec(pair["n"], seed=seed, **pair.get("overrides", {}))
        out += [(spec, s1), (spec, s2)]
        if pair.get("seed_control"):
            out.append((P.train_spec(pair["n"], seed=seed + 1, **pair.get("overrides", {})), s2))
    return out


# --------------------------------------------------------------------------- models on splits

def train_pair(spec: dict, s1: torch.Tensor, s2: torch.Tensor, step: int | None = None,
               device: str | None = None, progress: bool = True, seed2: int | None = None):
    """``(network on S1, network on S2)``: the same spec (seed, init, draws), only the data differs.
    ``seed2`` gives S2's network another seed (the seed control: other initial weights and draws)."""
    as_images(s1, "s1")
    as_images(s2, "s2")
    s = train.normalize_spec(spec)
    for name, split in (("s1", s1), ("s2", s2)):
        if s["n"] != len(split):
            raise ValueError(f"spec['n'] = {s['n']} but {name} has {len(split)} images; build the spec "
                             f"with n=len(split) so the ladder's settings and the data agree")
    s2_spec = s if seed2 is None else dict(s, seed=int(seed2))
    return (train.get_model(s, x_train=s1.cpu(), step=step, device=device, progress=progress),
            train.get_model(s2_spec, x_train=s2.cpu(), step=step, device=device, progress=progress))


# --------------------------------------------------------------------------- the similarity tables

def nearest_report(samples: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, own: int | None = None) -> dict:
    """Each sample's nearest training image in S1 ∪ S2 (one ``utils.metrics.sample_stats`` search).

    Returns means over samples: ``rmse_nn`` (pixel RMSE to the nearest image), ``cosine_nn`` (cosine
    with it), ``memorized`` (fraction with nearest-neighbour ratio < 1/3 in S1 ∪ S2), ``in_s1``
    (fraction whose nearest image lies in S1) and, when ``own`` is 1 or 2, ``in_own`` (fraction
    whose nearest image lies in that split); plus the per-sample tensors ``dist`` (pixel RMSE),
    ``index`` (into S1 ∪ S2) and ``nearest`` (the images themselves).
    """
    as_images(samples, "samples")
    union = torch.cat([s1.cpu(), s2.cpu()])
    q = samples.cpu()
    st = metrics.sample_stats(q, union)
    nearest = union[st.nn_index]
    cos = torch.nn.functional.cosine_similarity(q.reshape(len(q), -1).double(),
                                                nearest.reshape(len(q), -1).double(), dim=1, eps=1e-30)
    in_s1 = st.nn_index < len(s1)
    out = {"rmse_nn": float(st.nn_rmse.mean()), "cosine_nn": float(cos.mean()), "memorized": st.memorized,
           "in_s1": float(in_s1.double().mean()), "dist": st.nn_rmse, "index": st.nn_index, "nearest": nearest}
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
    pair_dist = metrics.image_rmse(net1, net2)
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
    nn1 = s1.cpu()[metrics.sample_stats(a, s1).nn_index]
    nn2 = s2.cpu()[metrics.sample_stats(b, s2).nn_index]
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
                        regimes: Regimes, seed: int = 0, device: str | None = None, progress: bool = True,
                        seed2: int | None = None):
    """The checkpoint of a pair closest to the Gaussian denoisers of their splits (the Gaussian phase).

    For every snapshot step of ``spec`` (and the final step), the criterion is the mean over both
    networks of RMSE(D_theta, D_G of its own split) (``utils.metrics.rmse_curves`` on ``x_eval``
    with ``seed``), averaged over the ``sigmas`` of the intermediate regime of ``regimes``.
    Returns ``(best_step, {step: criterion})``; ties go to the earlier step.
    """
    as_images(x_eval, "x_eval")
    s = train.normalize_spec(spec)
    steps = sorted(set(s["snapshot_steps"]) | {s["steps"]})
    sig = np.asarray(torch.as_tensor(sigmas, dtype=torch.float64).flatten())
    gauss = (GaussianDenoiser.fit(s1.cpu()), GaussianDenoiser.fit(s2.cpu()))
    crit = {}
    for k in progress_bar(steps, "Gaussian phase, per checkpoint", progress):
        nets = train_pair(s, s1, s2, step=k, device=device, progress=progress, seed2=seed2)
        x = x_eval.to(next(nets[0].parameters()).device)
        curves = metrics.rmse_curves({i: (net, dg) for i, (net, dg) in enumerate(zip(nets, gauss))}, x, sig, seed=seed)
        crit[k] = float(np.mean([regimes.mean(sig, c) for c in curves.values()]))
    best = min(steps, key=lambda k: (crit[k], k))
    return best, crit


def snapshot_agreement(spec: dict, s1: torch.Tensor, s2: torch.Tensor, x_T: torch.Tensor, sigmas,
                       device: str | None = None, progress: bool = True, seed2: int | None = None) -> dict:
    """Agreement of the pair at every snapshot step of ``spec`` (and the final step).

    Returns ``{step: {"cosine", "rmse", "memorized"}}``: the paired similarity of the two networks'
    samples from ``x_T`` and the mean memorized fraction of the two (nearest-neighbour ratio < 1/3
    in S1 ∪ S2). Used to show the agreement over training; the early-stopping step itself is picked
    by :func:`gaussian_phase_step`, which does not look at these numbers.
    """
    s = train.normalize_spec(spec)
    out = {}
    for k in progress_bar(sorted(set(s["snapshot_steps"]) | {s["steps"]}), "pair agreement, per checkpoint", progress):
        d1, d2 = train_pair(s, s1, s2, step=k, device=device, progress=progress, seed2=seed2)
        a, b = edm.sample(d1, x_T, sigmas).cpu(), edm.sample(d2, x_T, sigmas).cpu()
        sim = metrics.sample_similarity(a, b)
        mem = 0.5 * (nearest_report(a, s1, s2)["memorized"] + nearest_report(b, s1, s2)["memorized"])
        out[k] = {"cosine": sim["cosine"], "rmse": sim["rmse"], "memorized": mem}
    return out


# --------------------------------------------------------------------------- the Gaussian structure

def covariance_distance(s1: torch.Tensor, s2: torch.Tensor, reference: torch.Tensor) -> float:
    """||Sigma_1 - Sigma_2||_F / ||Sigma||_F: covariances of two splits against that of ``reference``."""
    c1, c2, c = (GaussianDenoiser.fit(t.cpu()).covariance for t in (s1, s2, reference))
    return float((c1 - c2).norm() / c.norm().clamp_min(1e-300))


def gaussian_agreement(x: torch.Tensor, sizes, x_T: torch.Tensor, sigmas, seeds=(0,),
                       reference: torch.Tensor | None = None, device: str = "cpu", progress: bool = True) -> list[dict]:
    """Agreement of the Gaussian models of two disjoint splits against the split size.

    For each size n and each seed, ``utils.data.disjoint_splits(x, n, seed)`` gives S1 and S2;
    their Gaussian denoisers are sampled from the shared noises ``x_T`` with ``sigmas``. Returns one
    row per size: ``n``, ``cosine`` / ``rmse`` (mean over seeds of ``sample_similarity``),
    ``rmse_std`` (std over seeds, 0 for one seed) and ``cov_dist`` (mean over seeds of
    :func:`covariance_distance` against the covariance of ``reference``, default ``x``). ``progress``: a
    progress bar over the sizes.
    """
    as_images(x, "x")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    ref_cov = GaussianDenoiser.fit((x if reference is None else reference).cpu()).covariance
    ref_norm = ref_cov.norm().clamp_min(1e-300)
    rows = []
    for n in progress_bar(sizes, "Gaussian agreement, per size", progress):
        positive_int(int(n), "size")
        cos, rms, cov = [], [], []
        for sd in seeds:
            s1, s2 = data_mod.disjoint_splits(x, int(n), seed=int(sd))
            g1, g2 = GaussianDenoiser.fit(s1.cpu()), GaussianDenoiser.fit(s2.cpu())
            a, b = edm.sample(g1, x_T.to(device), sigmas).cpu(), edm.sample(g2, x_T.to(device), sigmas).cpu()
            sim = metrics.sample_similarity(a, b)
            cos.append(sim["cosine"])
            rms.append(sim["rmse"])
            cov.append(float((g1.covariance - g2.covariance).norm() / ref_norm))
        t = torch.tensor(rms, dtype=torch.float64)
        rows.append({"n": int(n), "cosine": sum(cos) / len(cos), "rmse": float(t.mean()),
                     "rmse_std": float(t.std()) if len(t) > 1 else 0.0, "cov_dist": sum(cov) / len(cov)})
    return rows


def beyond_copies(report: dict) -> tuple[float, float, bool]:
    """The chapter's criterion of strong generalization for one pair (claim 1): ``(pair RMSE,
    nearest-image RMSE of the closer network, pair RMSE < nearest-image RMSE)``. The two networks'
    samples from the same noises are closer to each other than either network's samples are to their
    nearest training images in S1 ∪ S2, so the pair agrees on something that is not a training image."""
    pair = float(report["pairs"]["network S1 ~ network S2"]["rmse"])
    nn = min(float(report["nearest"]["network S1"]["rmse_nn"]), float(report["nearest"]["network S2"]["rmse_nn"]))
    return pair, nn, pair < nn
