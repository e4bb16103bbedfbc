"""Chapter 5: strong generalization (paper §5, Fig. 9 and Fig. 26): two models trained on disjoint splits.

Two training sets S1 and S2 share no image. The same architecture, trained with the same settings
(seed, initialization, batch and noise draws) on each, is sampled from the *same* initial noises
(``utils.edm.initial_noise``). When the networks generalize their samples agree with each other and
with the samples of the Gaussian models of their splits; when they memorize each copies its own
split and the pair disagrees. This module holds what chapter 5 computes:

* :func:`train_pair` -- the networks of a training spec on S1 and S2 (``utils.train.get_model``
  with the split as ``x_train``; the cache key hashes the images, so a split that equals a ladder
  subset reuses the ladder's run);
* :func:`nearest_report` and :func:`pair_report` -- the paired distances of one pair of splits and
  each sample's nearest training image in S1 ∪ S2 (``utils.metrics.sample_stats``). Every distance
  between images is ``utils.metrics.image_rmse`` (pixel RMSE, pixels in [-1, 1]), summarized over the
  shared noises by its median (:func:`median_distance`): one definition for the tables, figures
  and claims;
* :func:`gaussian_phase_step` -- the early-stopping checkpoint of a pair, picked by a measured
  criterion (minimum RMSE to the Gaussian denoiser of its split over the intermediate regime);
* :func:`covariance_distance` and :func:`gaussian_agreement` -- how fast the Gaussian structure of
  a split is estimated: agreement of Gaussian(S1) and Gaussian(S2) against the split size;
* :func:`ladder_memorization` and :func:`contrast_window` -- paper Fig. 9b's contrast against N:
  where networks copy while the Gaussian models of two splits already agree;
* :class:`Results`, :data:`CLAIM_IDS`, :func:`claims` -- the chapter's claims.
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
        # Measured at cpu (2026-12-05, a preliminary run of this chapter's code on the cached models): the
        # networks copy (memorized fraction > 1/2) only up to N = 64 (52 % at N = 64 after 2,000 steps, 0 % at
        # N = 256), and the Gaussian models of two splits first agree as closely as the large-split networks
        # (median RMSE 0.149 <= 0.150) at N = 128, where the small pair copies 37 % after 4,000 steps.
        "cpu": dict(expected_to_fail=dict(
            small_copy="at N = 2d = 128 the onset of memorization lies beyond the 4,000 steps the cpu "
                       "budget allows (the onset grows about linearly with N, chapter 4); the pair "
                       "disagrees all the same (previous claim)",
            copy_while_gauss_agree="on 8x8 digits the window is empty at the cpu budget: the networks copy "
                                   "(memorized fraction > 1/2) only up to N = 64, while two splits' Gaussian "
                                   "models first agree as closely as the large-split networks at N = 128, "
                                   "where the small pair copies about a third of its samples after 4,000 "
                                   "steps (measured in a preliminary run; the digits' covariance needs a "
                                   "larger share of d than faces, section 5.4)")),
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


def contrast_sizes(P, n_total: int) -> list[int]:
    """The ladder sizes N of profile ``P`` at which two disjoint splits exist (2N <= ``n_total``): the
    N axis of paper Fig. 9b's contrast (:func:`ladder_memorization`)."""
    return [int(n) for n in P.train_sizes if 2 * int(n) <= int(n_total)]


def runs(P, seed: int = 0) -> list:
    """The training runs of this chapter: every pair of ``settings(P).pairs`` on its splits, and the
    ladder networks of :func:`contrast_sizes` (chapter 2 trains the same runs: no new training)."""
    x = data_mod.load(P.dataset)
    out = [(P.train_spec(n, seed=seed), data_mod.disjoint_splits(x, n, seed=seed)[0])
           for n in contrast_sizes(P, len(x))]
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

def median_distance(dist) -> float:
    """The chapter's one summary of per-sample distances (``utils.metrics.image_rmse`` over the shared
    noises, or nearest-image distances): their median (numpy's, the mean of the two middle values for
    an even count). NaN for an empty set."""
    v = np.asarray(torch.as_tensor(dist, dtype=torch.float64).detach().cpu().flatten())
    return float(np.median(v)) if v.size else math.nan


def nearest_report(samples: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, own: int | None = None) -> dict:
    """Each sample's nearest training image in S1 ∪ S2 (one ``utils.metrics.sample_stats`` search).

    Returns ``rmse_nn`` (median over samples of the pixel RMSE to the nearest image,
    :func:`median_distance`), ``memorized`` (fraction with nearest-neighbour ratio < 1/3 in S1 ∪ S2),
    ``in_s1`` (fraction whose nearest image lies in S1) and, when ``own`` is 1 or 2, ``in_own``
    (fraction whose nearest image lies in that split); plus the per-sample tensors ``dist`` (pixel
    RMSE), ``index`` (into S1 ∪ S2) and ``nearest`` (the images themselves).
    """
    as_images(samples, "samples")
    union = torch.cat([s1.cpu(), s2.cpu()])
    q = samples.cpu()
    st = metrics.sample_stats(q, union)
    in_s1 = st.nn_index < len(s1)
    out = {"rmse_nn": median_distance(st.nn_rmse), "memorized": st.memorized,
           "in_s1": float(in_s1.double().mean()), "dist": st.nn_rmse, "index": st.nn_index,
           "nearest": union[st.nn_index]}
    if own is not None:
        if own not in (1, 2):
            raise ValueError(f"own must be 1 (S1) or 2 (S2), got {own!r}")
        out["in_own"] = out["in_s1"] if own == 1 else 1.0 - out["in_s1"]
    return out


def pair_report(net1: torch.Tensor, net2: torch.Tensor, gauss1: torch.Tensor, gauss2: torch.Tensor,
                s1: torch.Tensor, s2: torch.Tensor) -> dict:
    """The paired distances of one pair of splits (all samples from the same noises).

    ``dist``: per-noise ``utils.metrics.image_rmse`` of network(S1)~network(S2) (``pair``),
    Gaussian(S1)~Gaussian(S2) (``gauss_pair``), network(S1)~Gaussian(S1) (``own_gauss1``),
    network(S2)~Gaussian(S2) (``own_gauss2``), and each network sample's distance to its nearest
    training image in S1 ∪ S2 (``nn1``, ``nn2``). ``median``: :func:`median_distance` of each, plus
    ``own_gauss`` and ``nn`` pooled over the samples of both networks. ``nearest``:
    :func:`nearest_report` of each network's samples (with its own split). ``closer_to_partner``:
    fraction of noises where the two networks' samples are closer to each other than each is to its
    own nearest training image.
    """
    for name, t in (("net1", net1), ("net2", net2), ("gauss1", gauss1), ("gauss2", gauss2)):
        as_images(t, name)
        if t.shape != net1.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(net1.shape)} (same noises)")
    net1, net2, gauss1, gauss2 = (t.cpu() for t in (net1, net2, gauss1, gauss2))
    nearest = {"network S1": nearest_report(net1, s1, s2, own=1),
               "network S2": nearest_report(net2, s1, s2, own=2)}
    dist = {"pair": metrics.image_rmse(net1, net2), "gauss_pair": metrics.image_rmse(gauss1, gauss2),
            "own_gauss1": metrics.image_rmse(net1, gauss1), "own_gauss2": metrics.image_rmse(net2, gauss2),
            "nn1": nearest["network S1"]["dist"], "nn2": nearest["network S2"]["dist"]}
    median = {k: median_distance(v) for k, v in dist.items()}
    median["own_gauss"] = median_distance(torch.cat([dist["own_gauss1"], dist["own_gauss2"]]))
    median["nn"] = median_distance(torch.cat([dist["nn1"], dist["nn2"]]))
    nn_min = torch.minimum(dist["nn1"], dist["nn2"])
    return {"dist": dist, "median": median, "nearest": nearest,
            "closer_to_partner": float((dist["pair"] < nn_min).double().mean())}


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


COLUMNS = {"net1~net2": "pair", "G1~G2": "gauss_pair", "net~own G": "own_gauss", "net~NN": "nn"}


def report_rows(reports: dict) -> list[dict]:
    """Flatten ``{setting: pair_report(...)}`` into table rows (one per setting): the median pixel
    RMSE of each comparison (:data:`COLUMNS`; ``net~own G`` and ``net~NN`` pooled over both networks),
    the fraction of samples whose nearest image lies in the network's own split and of copies
    (mean of the two networks), and ``closer to partner``."""
    rows = []
    for setting, r in reports.items():
        nn = r["nearest"]
        row = {"setting": setting}
        row.update({col: r["median"][key] for col, key in COLUMNS.items()})
        row.update({"NN in own split": 0.5 * (nn["network S1"]["in_own"] + nn["network S2"]["in_own"]),
                    "memorized": 0.5 * (nn["network S1"]["memorized"] + nn["network S2"]["memorized"]),
                    "closer to partner": r["closer_to_partner"]})
        rows.append(row)
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

    Returns ``{step: {"rmse", "memorized"}}``: the median paired pixel RMSE of the two networks'
    samples from ``x_T`` (:func:`median_distance`) and the mean memorized fraction of the two
    (nearest-neighbour ratio < 1/3 in S1 ∪ S2). Used to show the agreement over training; the early-stopping step itself is picked
    by :func:`gaussian_phase_step`, which does not look at these numbers.
    """
    s = train.normalize_spec(spec)
    out = {}
    for k in progress_bar(sorted(set(s["snapshot_steps"]) | {s["steps"]}), "pair agreement, per checkpoint", progress):
        d1, d2 = train_pair(s, s1, s2, step=k, device=device, progress=progress, seed2=seed2)
        a, b = edm.sample(d1, x_T, sigmas).cpu(), edm.sample(d2, x_T, sigmas).cpu()
        mem = 0.5 * (nearest_report(a, s1, s2)["memorized"] + nearest_report(b, s1, s2)["memorized"])
        out[k] = {"rmse": median_distance(metrics.image_rmse(a, b)), "memorized": mem}
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
    row per size: ``n``, ``rmse`` (mean over seeds of the median paired pixel RMSE,
    :func:`median_distance`), ``rmse_std`` (std over seeds, 0 for one seed) and ``cov_dist`` (mean over seeds of
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
        rms, cov = [], []
        for sd in seeds:
            s1, s2 = data_mod.disjoint_splits(x, int(n), seed=int(sd))
            g1, g2 = GaussianDenoiser.fit(s1.cpu()), GaussianDenoiser.fit(s2.cpu())
            a, b = edm.sample(g1, x_T.to(device), sigmas).cpu(), edm.sample(g2, x_T.to(device), sigmas).cpu()
            rms.append(median_distance(metrics.image_rmse(a, b)))
            cov.append(float((g1.covariance - g2.covariance).norm() / ref_norm))
        t = torch.tensor(rms, dtype=torch.float64)
        rows.append({"n": int(n), "rmse": float(t.mean()),
                     "rmse_std": float(t.std()) if len(t) > 1 else 0.0, "cov_dist": sum(cov) / len(cov)})
    return rows


def beyond_copies(report: dict) -> tuple[float, float, bool]:
    """The chapter's criterion of strong generalization for one pair (paper Fig. 9a read as a number):
    ``(pair distance, nearest-image distance, pair < nearest)``, both medians over the shared noises
    (:func:`median_distance` of ``utils.metrics.image_rmse``; the nearest-image distance pooled over
    the samples of both networks). The two networks' samples from the same noises are closer to each
    other than the networks' samples are to their nearest training images in S1 ∪ S2, so the pair
    agrees on something that is not a training image."""
    pair, nn = float(report["median"]["pair"]), float(report["median"]["nn"])
    return pair, nn, pair < nn


# --------------------------------------------------------------------------- paper Fig. 9b: copies against N

def ladder_memorization(P, x: torch.Tensor, sizes, x_T: torch.Tensor, sigmas, seed: int = 0,
                        device: str | None = None, progress: bool = True) -> dict:
    """``{N: memorized fraction}`` of the ladder network at each N of ``sizes``: the model of
    ``P.train_spec(N, seed)`` on S1 of ``utils.data.disjoint_splits(x, N, seed)`` (the ladder's own
    subset, so chapter 2's cached run), sampled from ``x_T`` with ``sigmas``; a sample is a copy when
    its nearest-neighbour ratio in S1 ∪ S2 is below 1/3 (:func:`nearest_report`)."""
    as_images(x, "x")
    out = {}
    for n in progress_bar(list(sizes), "ladder networks, copies per N", progress):
        s1, s2 = data_mod.disjoint_splits(x, int(n), seed=seed)
        net = train.get_model(P.train_spec(int(n), seed=seed), x_train=s1.cpu(), device=device, progress=progress)
        out[int(n)] = nearest_report(edm.sample(net, x_T, sigmas).cpu(), s1, s2)["memorized"]
    return out


def contrast_window(sizes, memorized, gauss_rmse, agree_level: float,
                    copy_level: float = metrics.MEMORIZING_FRACTION) -> tuple[list[int], float]:
    """Paper Fig. 9b's contrast against N: the sizes at which the networks copy (memorized fraction
    > ``copy_level``) while the Gaussian models of two disjoint splits agree (median paired RMSE of
    their samples <= ``agree_level``), and the margin of the best size: the smaller of its two
    relative margins, maximized over the sizes (negative when no size qualifies)."""
    n = [int(v) for v in sizes]
    m = np.asarray(memorized, dtype=float)
    g = np.asarray(gauss_rmse, dtype=float)
    if not (len(n) == m.shape[0] == g.shape[0]) or not n:
        raise ValueError(f"sizes, memorized and gauss_rmse must be non-empty and of one length, got "
                         f"{len(n)}, {m.shape}, {g.shape}")
    if not (agree_level > 0 and copy_level > 0):
        raise ValueError(f"agree_level and copy_level must be > 0, got {agree_level}, {copy_level}")
    window = [k for k, a, b in zip(n, m, g) if a > copy_level and b <= agree_level]
    margins = np.minimum((m - copy_level) / copy_level, (agree_level - g) / agree_level)
    return window, float(np.nanmax(margins)) if np.isfinite(margins).any() else math.nan


def first_agreeing_size(rows: list[dict], level: float):
    """The smallest split size of :func:`gaussian_agreement`'s ``rows`` whose Gaussian pair agrees at
    least as closely as ``level`` (median paired RMSE <= level); None if none does."""
    hits = [int(r["n"]) for r in rows if r["rmse"] <= level]
    return min(hits) if hits else None


def effective_rank(eigvals) -> float:
    """(sum lambda)^2 / sum lambda^2: the number of components that carry the variance of a
    covariance spectrum (d for a flat one, 1 for a single component)."""
    lam = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
    if not float(lam.sum()) > 0:
        raise ValueError("eigvals must hold at least one positive eigenvalue")
    return float(lam.sum() ** 2 / (lam ** 2).sum())


# --------------------------------------------------------------------------- claims

CLEARLY = 1.5          # "clearly" larger: a factor 1.5 (claims small_disagree and small_gauss_closer)
OWN_SPLIT = 0.9        # "copies its own split": at least 90 % of nearest images in the network's own split
SE_MIN = 2.0           # a fix "raises the agreement": the paired difference exceeds two standard errors


@dataclass
class Results:
    """Chapter 5's measured numbers that its claims need. Every distance is a median over the shared
    noises of ``utils.metrics.image_rmse`` (pixel RMSE, pixels in [-1, 1]; :func:`median_distance`);
    ``*_nn`` is the distance of the networks' samples to their nearest training images in S1 ∪ S2,
    pooled over both networks. ``*_diff`` = (mean, standard error) of the per-noise decrease of the
    pair distance against the final small pair (``utils.metrics.paired_difference``). A seed control
    that the profile does not run is None. ``contrast_*``: per size of the ladder, the memorized
    fraction of its network and the median RMSE of two splits' Gaussian samples (paper Fig. 9b)."""

    d: int
    n_noise: int
    n_large: int
    large_pair: float
    large_nn: float
    large_closer: float
    large_own_gauss: list[float]          # network(S1) ~ Gaussian(S1), network(S2) ~ Gaussian(S2)
    large_nn_each: list[float]            # each network's nearest-image distance
    large_ctl_pair: float | None
    large_ctl_nn: float | None
    n_small: int
    small_steps: int
    small_pair: float
    small_nn: float
    small_gauss_pair: float
    small_memorized: float                # mean over the two networks
    small_own_split: float                # the smaller of the two networks' fractions
    n_reach: int | None
    es_step: int
    early_pair: float
    early_nn: float
    early_diff: list[float]
    tiny_channels: int
    tiny_pair: float
    tiny_nn: float
    tiny_diff: list[float]
    tiny_ctl_pair: float | None
    tiny_ctl_nn: float | None
    contrast_sizes: list[int]
    contrast_memorized: list[float]
    contrast_gauss: list[float]


CLAIM_IDS = ("ch5.large_beyond_copies", "ch5.large_seed_control", "ch5.large_near_gaussian",
             "ch5.small_disagree", "ch5.small_copy", "ch5.small_gauss_closer", "ch5.gauss_small",
             "ch5.copy_while_gauss_agree", "ch5.early_raises", "ch5.early_criterion",
             "ch5.small_model_raises", "ch5.small_model_criterion", "ch5.small_model_seed_control")

_FIG9 = (9, 26)        # FFHQ (paper Fig. 9) and its CIFAR-10 version (paper Fig. 26)


def claims(results: Results, settings: Settings) -> list:
    """Chapter 5's claims (ids :data:`CLAIM_IDS`) from ``results``, with the reasons of
    ``settings.expected_to_fail``."""
    from ..claims import Claim, Test, all_of, compare, expected

    r = results
    ex = lambda cid: expected(settings, cid)       # noqa: E731
    out = []

    def criterion(pair, nn):
        if pair is None or nn is None:
            return Test(False, None), "not run at this profile"
        return compare(pair, "<", nn), f"pair {pair:.3f} vs nearest image {nn:.3f}"

    t, txt = criterion(r.large_pair, r.large_nn)
    out.append(Claim(
        id="ch5.large_beyond_copies", kind="paper", figures=_FIG9,
        claim="Large disjoint splits: network(S1) and network(S2) agree more with each other than with their "
              "nearest training images (median pixel RMSE over the shared noises)",
        paper="EDM(S1) ≈ EDM(S2), unlike their nearest neighbours (Fig. 9a / 26a, visual; FFHQ 35,000, CIFAR-10 "
              "25,000 per split)",
        ours=f"|S| = {r.n_large:,d}, {r.n_noise} noises: {txt}; closer to partner for {r.large_closer:.0%} of the noises",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.large_beyond_copies")))

    t, txt = criterion(r.large_ctl_pair, r.large_ctl_nn)
    out.append(Claim(
        id="ch5.large_seed_control", kind="control",
        claim="The large-split agreement is not an artifact of the shared initialization: with S2's network "
              "trained on another seed (other initial weights, batches and noise draws) the pair still agrees more "
              "than with the nearest training images",
        paper="the paper trains its two models with the same settings; the seed is not reported",
        ours=f"|S| = {r.n_large:,d}, other seed for S2: {txt}",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.large_seed_control")))

    (g1, g2), (n1, n2) = r.large_own_gauss, r.large_nn_each
    t = all_of(compare(g1, "<", n1), compare(g2, "<", n2))
    out.append(Claim(
        id="ch5.large_near_gaussian", kind="paper", figures=_FIG9,
        claim="Large disjoint splits: each network's samples are closer to the samples of its own split's Gaussian "
              "model D_G (same noises) than to their nearest training images (medians over the noises)",
        paper="EDM(S1) ≈ EDM(S2) ≈ the Gaussian samples of their splits in coarse structure (Fig. 9a / 26a, visual)",
        ours=f"|S| = {r.n_large:,d}: network(S1) to Gaussian(S1) {g1:.3f} vs nearest image {n1:.3f}; network(S2) to "
             f"Gaussian(S2) {g2:.3f} vs {n2:.3f}; the two networks {r.large_pair:.3f} apart",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.large_near_gaussian")))

    t = all_of(compare(r.small_pair, ">=", CLEARLY * r.large_pair), compare(r.small_pair, ">", r.small_nn))
    out.append(Claim(
        id="ch5.small_disagree", kind="paper", figures=_FIG9,
        claim=f"Small disjoint splits: the pair agrees clearly less (>= {CLEARLY:g} x the large-split pair distance, "
              f"and farther apart than from their nearest training images)",
        paper="EDMs on 1,094 (FFHQ) / 782 (CIFAR-10) images output their own nearest neighbours (Fig. 9b / 26b, visual)",
        ours=f"|S| = {r.n_small:,d}: pair {r.small_pair:.3f} = {r.small_pair / r.large_pair:.1f} x the large-split "
             f"pair; nearest image {r.small_nn:.3f}",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.small_disagree")))

    t = all_of(compare(r.small_memorized, ">", metrics.MEMORIZING_FRACTION), compare(r.small_own_split, ">=", OWN_SPLIT))
    out.append(Claim(
        id="ch5.small_copy", kind="paper", figures=_FIG9,
        claim=f"Small disjoint splits: the networks copy their own split (most samples memorized, >= {OWN_SPLIT:.0%} "
              f"nearest in own split)",
        paper="EDMs on 1,094 (FFHQ) / 782 (CIFAR-10) images output their own nearest neighbours (Fig. 9b / 26b, visual)",
        ours=f"|S| = {r.n_small:,d}, {r.small_steps:,d} steps: {r.small_memorized:.0%} memorized, nearest image in "
             f"own split >= {r.small_own_split:.0%}",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.small_copy")))

    t = compare(r.small_pair, ">=", CLEARLY * r.small_gauss_pair)
    out.append(Claim(
        id="ch5.small_gauss_closer", kind="paper", figures=_FIG9,
        claim=f"Small disjoint splits: Gaussian(S1) ≈ Gaussian(S2), far closer than the network pair "
              f"(network pair >= {CLEARLY:g} x the Gaussian pair)",
        paper="Gaussians of 1,094-image splits agree while the EDMs copy (Fig. 9b, visual)",
        ours=f"|S| = {r.n_small:,d}: Gaussian pair {r.small_gauss_pair:.3f}, network pair {r.small_pair:.3f} "
             f"({r.small_pair / r.small_gauss_pair:.1f} x)",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.small_gauss_closer")))

    t = compare(r.small_gauss_pair, "<=", r.large_pair)
    out.append(Claim(
        id="ch5.gauss_small", kind="paper", figures=(9,),
        claim="Small disjoint splits: the Gaussian pair agrees at least as closely as the large-split networks do",
        paper="Gaussians of 1,094-image splits ≈ each other ≈ those of 35,000; a few hundred FFHQ images suffice "
              "(Fig. 9b, §5)",
        ours=f"|S| = {r.n_small:,d}: Gaussian pair {r.small_gauss_pair:.3f} vs large-split network pair "
             f"{r.large_pair:.3f}; first reached at N = {r.n_reach if r.n_reach is not None else 'none of the sweep'} "
             f"(d = {r.d})",
        passed=t.passed, margin=t.margin, expected_to_fail=ex("ch5.gauss_small")))

    window, m = contrast_window(r.contrast_sizes, r.contrast_memorized, r.contrast_gauss, r.large_pair)
    per_n = "; ".join(f"N = {n:,d}: {a:.0%} copies, Gaussian pair {b:.3f}"
                      for n, a, b in zip(r.contrast_sizes, r.contrast_memorized, r.contrast_gauss))
    out.append(Claim(
        id="ch5.copy_while_gauss_agree", kind="paper", figures=(9,),
        claim="There is a split size N at which the networks copy (memorized fraction > 1/2) while the Gaussian "
              "models of two disjoint splits already agree (as closely as the large-split networks)",
        paper="at 1,094 images per split the EDMs memorize while Gaussian(S1) ≈ Gaussian(S2) (Fig. 9b)",
        ours=f"{per_n}; agreement level {r.large_pair:.3f}; window: "
             + (", ".join(f"N = {n:,d}" for n in window) if window else "empty"),
        passed=bool(window), margin=m, expected_to_fail=ex("ch5.copy_while_gauss_agree")))

    # the two fixes of paper Fig. 9c, each held to two claims: it lowers the pair distance (beyond noise)
    # and it meets the criterion of ch5.large_beyond_copies
    fixes = (("early", "Early stopping in the Gaussian phase", f"step {r.es_step:,d} (min RMSE to D_G)",
              "early stopping (epoch 921) restores strong generalization at 1,094 / 782 images",
              r.early_pair, r.early_nn, r.early_diff),
             ("small_model", "A smaller model", f"{r.tiny_channels} channels",
              "reducing the scale to 8 (FFHQ) / 4 (CIFAR-10) restores strong generalization",
              r.tiny_pair, r.tiny_nn, r.tiny_diff))
    for key, what, setting, paper, pair, nn, (mean, se) in fixes:
        t = compare(mean / se if se > 0 else (math.inf if mean > 0 else -math.inf), ">", SE_MIN)
        out.append(Claim(
            id=f"ch5.{key}_raises", kind="paper", figures=_FIG9,
            claim=f"{what} raises the small-split agreement (the pair distance falls by more than {SE_MIN:g} "
                  f"standard errors of the per-noise difference)",
            paper=f"{paper} (Fig. 9c / 26c, visual)",
            ours=f"{setting}: pair {pair:.3f} vs {r.small_pair:.3f} for the final small pair (mean decrease "
                 f"{mean:.3f} ± {se:.3f} s.e.)",
            passed=t.passed, margin=t.margin, expected_to_fail=ex(f"ch5.{key}_raises")))
        t, txt = criterion(pair, nn)
        out.append(Claim(
            id=f"ch5.{key}_criterion", kind="paper", figures=_FIG9,
            claim=f"{what} restores strong generalization by the criterion of ch5.large_beyond_copies",
            paper=f"{paper} (Fig. 9c / 26c, visual)", ours=f"{setting}: {txt}", passed=t.passed, margin=t.margin,
            expected_to_fail=ex(f"ch5.{key}_criterion")))

    t, txt = criterion(r.tiny_ctl_pair, r.tiny_ctl_nn)
    out.append(Claim(
        id="ch5.small_model_seed_control", kind="control",
        claim="The smaller model's agreement survives the seed control (S2's network on another seed)",
        paper="the paper trains its two models with the same settings; the seed is not reported",
        ours=f"{r.tiny_channels} channels, other seed for S2: {txt}", passed=t.passed, margin=t.margin,
        expected_to_fail=ex("ch5.small_model_seed_control")))
    return out
