"""Chapter 8: using the hidden Gaussian -- skip the first sampling steps in closed form.

Wang & Vastola (arXiv 2311.10892; TMLR 2024, arXiv 2412.09726) turn the paper's finding into a tool:
where a trained denoiser is the Gaussian denoiser D_G of its training set, its probability-flow ODE is
D_G's, which has a closed form (paper eq. 7, ``utils.denoisers.GaussianDenoiser.flow``). They jump
("teleport") from sigma_max to an intermediate noise level in one closed-form step and let the network
finish, skipping 15-30 % of the steps on CIFAR-10 at unchanged quality, and they measure how much of
the network the Gaussian explains by the explained variance EV(D_theta, D_G)(sigma).

The measurements are core: ``utils.metrics.explained_variance_curves`` (EV against sigma, on the
book's noisy inputs), ``utils.edm.sample_teleported`` (teleport, then finish with the network's own
sampler) and ``utils.edm.nfe`` (what a run costs). This module holds what only this chapter needs:

* :func:`ev_inputs` -- the clean images EV is averaged over: the network's own training images;
* :func:`ev_dip` -- the smallest EV over the intermediate regime (the "dip" of Wang & Vastola's curve);
* :func:`savings` -- the fraction of network evaluations each handover level saves;
* :func:`evaluate_teleport` -> :class:`TeleportReport` -- for every handover level of the grid, the
  teleported samples against the full-trajectory samples from the same initial noises (per-image
  RMSE, memorized fraction, GL score);
* :func:`safe_handover`, :func:`fixed_handover` -- the verdicts' handover levels;
* :class:`Results`, :data:`CLAIM_IDS`, :func:`claims`.

The constants below are the chapter's analysis choices, fixed before any network was evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import edm, metrics
from ..checks import as_images, positive_int, progress_bar, sigma_list
from ..claims import Claim, all_of, compare, expected
from ..regimes import Regimes
from ..settings import ChapterSettings

WANG_HIDDEN = "wang2023hidden"               # arXiv 2311.10892
WANG_GAUSSIAN = "wang2024unreasonable"       # TMLR 2024, arXiv 2412.09726

# --------------------------------------------------------------------------- their numbers
# Both papers: the first 15-30 % of the sampling steps of EDM's CIFAR-10 model skipped by teleporting,
# at an unchanged FID (1.93, unconditional CIFAR-10).
PAPER_SAVING = (0.15, 0.30)
PAPER_FID = 1.93
# EV(D_theta, D_G)(sigma) of pretrained EDM on CIFAR-10: about 0.92 at its dip near sigma = 1-2, 0.89 at
# sigma = 80 (their network is under-trained there, as the paper's Fig. 17 shows for EDM's p(sigma)),
# and -> 1 as sigma -> 0.
PAPER_EV_DIP = 0.92
PAPER_EV_DIP_SIGMA = (1.0, 2.0)
PAPER_EV_SIGMA_MAX = 0.89

# --------------------------------------------------------------------------- analysis choices
# A handover is *safe* when the teleported samples are, on average over the initial noises, at most
# SAFE_FRACTION as far (per-image pixel RMSE) from their full-trajectory twins as two full-trajectory
# samples of different noises are from each other: "ten times closer than two different samples". The
# mean, not the median, so that a handover which sends a few trajectories to another image (a
# memorizing network's failure) counts. The comparison has a floor that is no network's fault: Euler's
# own error on the skipped steps (teleporting D_G itself against D_G's Euler run). On the 8x8 digits'
# Gaussian it stays below 0.03 of the inter-sample distance for every handover in the high regime and
# reaches 0.07-0.09 just below sigma_high (measured on D_G alone before any network was evaluated): the
# threshold can be met down to the top of the intermediate regime, not deeper.
SAFE_FRACTION = 0.1
# A handover must be safe at every shallower level too (the saving is the deepest such level's).
# The saving claimed for the generalizing network: at least Wang & Vastola's lower end.
MIN_SAVING = PAPER_SAVING[0]
# "Unchanged sample statistics" at the safe handover: the memorized fraction within MEM_TOL (5 of 100
# samples) and the GL score within GL_TOL of the full set's (relative).
MEM_TOL = 0.05
GL_TOL = 0.05
# EV -> 1 as sigma -> 0: at the smallest sigma of the grid EV is at least this.
EV_NEAR_ONE = 0.99


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings(ChapterSettings):
    """Chapter 8's knobs (defaults: the cpu profile); ``PROFILES`` gives each profile's differences.
    Which networks are compared (the ladder's smallest and largest N) and every threshold are the
    constants above."""

    CHAPTER = "ch8"
    n_ev_inputs: int = 128        # noisy training images EV is averaged over (training images cycled)
    solver: str = "euler"         # the network's own sampler (the paper's 10-step Euler) ...
    # ... on this many EDM levels (None: the profile's sampler_steps). Not a structural key: under the smoke
    # budget a GPU profile's 18 Heun levels (324 network calls per sample over all handovers) become the
    # smoke profile's 4.
    levels: int | None = None
    n_show: int = 8               # samples per row of the sample figure
    expected_to_fail: dict[str, str] = field(default_factory=dict)   # claim id -> reason, written before the run

    PROFILES = {
        "smoke": dict(n_ev_inputs=8, n_show=4, levels=4),
        "cpu": {},
        "colab": dict(n_ev_inputs=512),
        # CIFAR-10 as Wang & Vastola sample EDM's model: Heun on 18 levels (35 network evaluations).
        "gpu": dict(n_ev_inputs=1024, solver="heun", levels=18),
    }

    def validate(self):
        if self.solver not in edm.SOLVERS:
            raise ValueError(f"solver must be one of {edm.SOLVERS}, got {self.solver!r}")
        if self.levels is not None and self.levels < 2:
            raise ValueError(f"levels must be >= 2 (a handover needs a level to hand over to), got {self.levels}")


def settings(P) -> Settings:
    """This chapter's validated settings at profile ``P`` (``utils.settings.ChapterSettings``)."""
    return Settings.for_profile(P)


def runs(P, seed: int = 0) -> list:
    """The training runs this chapter reads: the model ladder of chapter 2 (no training of its own)."""
    return [P.train_spec(n, seed=seed) for n in P.train_sizes]


def grid(P, S: Settings) -> torch.Tensor:
    """The sampler's noise levels: the EDM grid of ``S.levels`` (or the profile's ``sampler_steps``) levels."""
    return edm.sigma_steps(S.levels or P.sampler_steps)


# --------------------------------------------------------------------------- explained variance

def ev_inputs(x_train: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` clean images for EV: the training images in order, cycled when there are fewer than ``n``
    (each copy gets its own noise from ``utils.data.NoisyInputs``). Wang & Vastola average over noisy
    *training* images; a network trained on 16 images is so evaluated on 16 images under many noises."""
    as_images(x_train, "x_train")
    positive_int(n, "n")
    return x_train[torch.arange(n) % len(x_train)]


def ev_dip(sigmas, ev, regimes: Regimes) -> float:
    """The smallest EV over the noise levels of the intermediate regime (the dip of the EV curve)."""
    s = sigma_list(sigmas)
    v = np.asarray(ev, dtype=float)
    if v.shape != (len(s),):
        raise ValueError(f"ev has shape {v.shape}, expected one value per sigma ({len(s)})")
    m = regimes.mask(s, "intermediate")
    if not m.any():
        raise ValueError(f"no sigma of the grid lies in the intermediate regime {regimes.intermediate}")
    return float(v[m].min())


# --------------------------------------------------------------------------- teleportation

def savings(n_levels: int, solver: str = "euler") -> list[float]:
    """For handover k = 0 ... n_levels - 1 (teleport to level k of the grid), the fraction of the full
    run's network evaluations that teleporting saves: 1 - nfe(n_levels - k) / nfe(n_levels)."""
    full = edm.nfe(n_levels, solver)
    return [1.0 - edm.nfe(n_levels - k, solver) / full for k in range(n_levels)]


def safe_handover(ratios, fraction: float = SAFE_FRACTION) -> int:
    """The deepest handover k whose deviation ratio, and that of every shallower handover, is at most
    ``fraction`` (``ratios[0]``, no teleport, is 0 by definition); 0 if even the first is not safe."""
    r = np.asarray(ratios, dtype=float)
    if r.ndim != 1 or len(r) < 1:
        raise ValueError(f"ratios must be a 1-d sequence (one per handover level), got shape {r.shape}")
    k = 0
    for j in range(1, len(r)):
        if not (np.isfinite(r[j]) and r[j] <= fraction):
            break
        k = j
    return k


def fixed_handover(sigmas, regimes: Regimes) -> int:
    """The deepest handover of the high regime: the largest k with sigmas[k] > sigma_high (the level
    where the ladder's deviations are compared; fixed by the data's spectrum, not by any result)."""
    s = sigma_list(sigmas)
    high = [k for k, v in enumerate(s) if regimes.name(v) == "high"]
    if not high:
        raise ValueError(f"no level of the grid lies in the high regime (> {regimes.sigma_high:.3g})")
    return max(high)


@dataclass
class TeleportReport:
    """One denoiser teleported from the same initial noises to every level of a grid
    (see :func:`evaluate_teleport`). Index k of every per-handover array is the handover level."""

    label: str
    handover_sigmas: np.ndarray         # (K,) sigma_k; k = 0 is no teleport
    savings: np.ndarray                 # (K,) fraction of network evaluations saved
    full: torch.Tensor                  # the full-trajectory samples
    teleported: list                    # K tensors: the samples after teleporting to sigma_k (k = 0: full)
    deviation: np.ndarray               # (K, n) per-image RMSE(teleported_k, full), per initial noise
    reference: np.ndarray               # (n,) per-image RMSE between full samples of two different noises
    memorized: np.ndarray               # (K,) memorized fraction of the teleported set (k = 0: full set)
    gl: np.ndarray                      # (K,) GL score of the teleported set

    @property
    def ratio(self) -> np.ndarray:
        """(K,) mean deviation over the mean distance between two different full samples."""
        return self.deviation.mean(1) / max(float(self.reference.mean()), 1e-30)

    @property
    def safe_k(self) -> int:
        return safe_handover(self.ratio)

    @property
    def safe_saving(self) -> float:
        return float(self.savings[self.safe_k])


def evaluate_teleport(denoiser, gaussian, x_T: torch.Tensor, sigmas, x_train: torch.Tensor,
                      solver: str = "euler", label: str = "", progress: bool = True) -> TeleportReport:
    """Sample ``denoiser`` from ``x_T`` on the grid ``sigmas`` (the full trajectory), and again after
    teleporting with ``gaussian`` to each level k = 1 ... K - 1 of the grid (``utils.edm.sample_teleported``);
    compare every teleported set with the full one from the same noises (``utils.metrics.image_rmse``)
    and with ``x_train`` (memorized fraction and GL score, ``utils.metrics.sample_stats``).

    The reference distance pairs each full sample with the full sample of the next noise (a cyclic
    shift of the batch): the distance between two samples of different noises."""
    as_images(x_T, "x_T")
    if len(x_T) < 2:
        raise ValueError(f"x_T must hold at least two initial noises (the reference pairs different noises), "
                         f"got {len(x_T)}")
    s = sigma_list(sigmas)
    full = edm.sample(denoiser, x_T, s, solver=solver).cpu()
    teleported = [full]
    for k in progress_bar(range(1, len(s)), f"teleport {label}".strip(), progress):
        teleported.append(edm.sample_teleported(denoiser, gaussian, x_T, s, k, solver=solver).cpu())
    stats = [metrics.sample_stats(t, x_train) for t in teleported]
    return TeleportReport(
        label=label, handover_sigmas=np.asarray(s), savings=np.asarray(savings(len(s), solver)), full=full,
        teleported=teleported, deviation=np.stack([metrics.image_rmse(t, full).numpy() for t in teleported]),
        reference=metrics.image_rmse(full, full.roll(1, 0)).numpy(),
        memorized=np.array([st.memorized for st in stats]), gl=np.array([st.gl for st in stats]))


# --------------------------------------------------------------------------- claims

@dataclass
class Results:
    """The numbers chapter 8's claims are decided on (plain floats and lists). Lists over the ladder
    follow ``ns`` (ascending); lists over handovers follow ``handover_sigmas`` (k = 0: no teleport)."""

    ns: list                      # the dataset-size ladder
    sigma_low: float              # the data's intermediate regime (utils.regimes)
    sigma_high: float
    ev_sigmas: list               # the band grid EV is evaluated on (descending)
    ev_gen: list                  # EV(D_theta, D_G) of the largest N at each of ev_sigmas (non-centred)
    ev_dip: list                  # per N: the smallest EV(D_theta, D_G) over the intermediate regime
    handover_sigmas: list         # the sampler's grid: the handover levels
    savings: list                 # per handover: fraction of network evaluations saved
    ratio: list                   # per N, per handover: mean deviation / mean distance of two full samples
    floor_ratio: list             # per handover: the same for D_G against its own Euler run (largest N)
    k_fixed: int                  # the handover where the ladder is compared (fixed_handover)
    memorized_full: list          # per N: memorized fraction of the full-trajectory samples
    gen_memorized: list           # largest N, per handover: memorized fraction of the teleported set
    gen_gl: list                  # largest N, per handover: GL score of the teleported set
    solver: str = "euler"


CLAIM_IDS = (
    "ch8.ev_dips_at_intermediate_sigma",
    "ch8.ev_dip_rises_with_n",
    "ch8.sampler_floor_below_threshold",
    "ch8.teleport_saves_steps_generalizing",
    "ch8.teleport_keeps_sample_statistics",
    "ch8.memorizing_saves_less",
    "ch8.teleport_deviation_falls_with_n",
)


def _trend(x, y, rising: bool):
    rho, _ = metrics.trend(x, y, rising=rising)
    return rho, (compare(rho, ">=", metrics.TREND_MIN) if rising else compare(rho, "<=", -metrics.TREND_MIN))


def claims(results: Results, settings: Settings) -> list[Claim]:
    """Chapter 8's claims, in the order of :data:`CLAIM_IDS`."""
    R, S = results, settings
    n, K = len(R.ns), len(R.handover_sigmas)
    if len(R.ev_dip) != n or len(R.ratio) != n or len(R.memorized_full) != n:
        raise ValueError(f"results.ev_dip, .ratio and .memorized_full need one entry per ladder size ({n})")
    if len(R.ev_gen) != len(R.ev_sigmas):
        raise ValueError(f"results.ev_gen has {len(R.ev_gen)} values for {len(R.ev_sigmas)} noise levels")
    for name in ("savings", "floor_ratio", "gen_memorized", "gen_gl"):
        if len(getattr(R, name)) != K:
            raise ValueError(f"results.{name} has {len(getattr(R, name))} values for {K} handover levels")
    if any(len(r) != K for r in R.ratio):
        raise ValueError(f"every results.ratio[i] needs one value per handover level ({K})")
    if not 0 < R.k_fixed < K:
        raise ValueError(f"results.k_fixed must be a handover level 1 ... {K - 1}, got {R.k_fixed}")
    fmt = lambda xs, f="{:.3f}": " / ".join(f.format(x) for x in xs)   # noqa: E731
    Ns = " / ".join(f"{v:,d}" for v in R.ns)
    N_gen, N_mem = f"{R.ns[-1]:,d}", f"{R.ns[0]:,d}"
    tmin = metrics.TREND_MIN
    band = f"[{R.sigma_low:.3g}, {R.sigma_high:.3g}]"
    out = []

    def add(cid, kind, test, **kw):
        out.append(Claim(id=cid, kind=kind, passed=test.passed, margin=test.margin,
                         expected_to_fail=expected(S, cid), **kw))

    # --- explained variance
    reg = Regimes(sigma_low=R.sigma_low, sigma_high=R.sigma_high)
    s_ev = np.asarray(R.ev_sigmas, dtype=float)
    ev = np.asarray(R.ev_gen, dtype=float)
    dip = ev_dip(s_ev, ev, reg)
    lowest = float(ev[int(np.argmin(s_ev))])
    low_mean = float(reg.mean(s_ev, ev, "low"))
    high_mean = float(reg.mean(s_ev, ev, "high"))
    # EV lives just below 1: every comparison is made on the unexplained fraction 1 - EV, so that a margin is
    # relative to what the Gaussian misses, not to 1
    add("ch8.ev_dips_at_intermediate_sigma", "paper",
        all_of(compare(1 - lowest, "<=", 1 - EV_NEAR_ONE), compare(1 - dip, ">", 1 - low_mean),
               compare(1 - dip, ">", 1 - high_mean)),
        source=WANG_GAUSSIAN, where="EV of the Gaussian approximation against noise scale, pretrained EDM on CIFAR-10",
        claim=f"The Gaussian explains the generalizing network (N = {N_gen}) least at intermediate sigma: EV(D_theta, "
              f"D_G) tends to 1 at the smallest sigma (>= {EV_NEAR_ONE}) and its minimum over the intermediate regime "
              f"lies below its mean over the low and over the high regime",
        paper=f"EV -> 1 as sigma -> 0, about {PAPER_EV_DIP} at its dip near sigma = {PAPER_EV_DIP_SIGMA[0]:g}-"
              f"{PAPER_EV_DIP_SIGMA[1]:g}, {PAPER_EV_SIGMA_MAX} at sigma = 80 (EDM, CIFAR-10)",
        ours=f"EV (non-centred, noisy training images): {lowest:.4f} at sigma = {s_ev.min():g}; dip {dip:.4f} in the "
             f"intermediate regime {band}; mean {low_mean:.4f} over the low and {high_mean:.4f} over the high regime")

    rho, t = _trend(R.ns, R.ev_dip, rising=True)
    add("ch8.ev_dip_rises_with_n", "control", t,
        claim="The dip of EV(D_theta, D_G) in the intermediate regime rises with N (whole ladder): the more "
              "images, the more of the network the Gaussian explains",
        paper="the paper's RMSE(D_theta, D_G) falls with N in the intermediate regime (paper Fig. 6a), "
              "seen through Wang & Vastola's EV",
        ours=f"dip {fmt(R.ev_dip, '{:.4f}')} at N = {Ns}; rank correlation with N {rho:+.2f} (needs >= {tmin})")

    # --- teleportation
    sv = np.asarray(R.savings, dtype=float)
    ratio = np.asarray(R.ratio, dtype=float)
    safe = [safe_handover(r) for r in ratio]
    safe_saving = [float(sv[k]) for k in safe]
    kf = R.k_fixed
    floor = float(R.floor_ratio[kf])
    add("ch8.sampler_floor_below_threshold", "check", compare(floor, "<=", SAFE_FRACTION),
        claim=f"Teleporting D_G itself to the deepest level of the high regime (sigma = {R.handover_sigmas[kf]:.3g}) "
              f"stays within the safe threshold of D_G's own {R.solver} run: the threshold does not ask for more than "
              f"the sampler's own discretization error",
        paper="the closed-form flow is the exact ODE solution (paper eq. 7); Euler's steps are not",
        ours=f"deviation ratio of D_G (N = {N_gen}) {floor:.4f} (needs <= {SAFE_FRACTION}); per handover "
             f"{fmt(R.floor_ratio, '{:.3f}')}")

    g = len(R.ns) - 1
    add("ch8.teleport_saves_steps_generalizing", "paper", compare(safe_saving[g], ">=", MIN_SAVING),
        source=WANG_GAUSSIAN, where="abstract and the teleportation experiment (also wang2023hidden): EDM on CIFAR-10",
        claim=f"For the generalizing network (N = {N_gen}) a handover saves at least {MIN_SAVING:.0%} of the network "
              f"evaluations while the teleported samples stay {1 / SAFE_FRACTION:.0f} times closer to their "
              f"full-trajectory twins than two full samples of different noises are to each other",
        paper=f"the first {PAPER_SAVING[0]:.0%}-{PAPER_SAVING[1]:.0%} of the sampling steps skipped at unchanged "
              f"quality (FID {PAPER_FID}, CIFAR-10)",
        ours=f"safe saving {safe_saving[g]:.0%} (handover at sigma = {R.handover_sigmas[safe[g]]:.3g}); deviation "
             f"ratio per handover {fmt(ratio[g], '{:.3f}')} for savings {fmt(sv, '{:.0%}')}")

    ks = max(safe[g], 1)
    dm = abs(R.gen_memorized[ks] - R.gen_memorized[0])
    dgl = abs(R.gen_gl[ks] - R.gen_gl[0]) / max(abs(R.gen_gl[0]), 1e-30)
    add("ch8.teleport_keeps_sample_statistics", "control",
        all_of(compare(dm, "<=", MEM_TOL), compare(dgl, "<=", GL_TOL)),
        claim=f"At the generalizing network's safe handover, the teleported set's memorized fraction is within "
              f"{MEM_TOL:g} and its GL score within {GL_TOL:.0%} of the full set's",
        paper=f"teleporting leaves the sample quality unchanged (FID {PAPER_FID}; Wang & Vastola)",
        ours=f"handover sigma = {R.handover_sigmas[ks]:.3g}: memorized {R.gen_memorized[ks]:.2f} vs "
             f"{R.gen_memorized[0]:.2f}, GL {R.gen_gl[ks]:.3f} vs {R.gen_gl[0]:.3f} (relative change {dgl:.1%})")

    add("ch8.memorizing_saves_less", "control", compare(safe_saving[0], "<", safe_saving[g]),
        claim=f"The memorizing network (N = {N_mem}) can skip fewer steps safely than the generalizing one "
              f"(N = {N_gen}): it is not Gaussian at intermediate sigma",
        paper="teleportation rests on the network being Gaussian where it is skipped (Wang & Vastola); a "
              "memorizing network is not (paper Figs. 5a, 6a)",
        ours=f"safe saving {safe_saving[0]:.0%} (N = {N_mem}, memorized fraction {R.memorized_full[0]:.2f}) vs "
             f"{safe_saving[g]:.0%} (N = {N_gen}, memorized fraction {R.memorized_full[g]:.2f}); all N: "
             f"{fmt(safe_saving, '{:.0%}')}")

    at_kf = [float(r[kf]) for r in ratio]
    rho, t = _trend(R.ns, at_kf, rising=False)
    add("ch8.teleport_deviation_falls_with_n", "control", t,
        claim=f"The deviation of the teleported samples at the deepest handover of the high regime (sigma = "
              f"{R.handover_sigmas[kf]:.3g}, saving {sv[kf]:.0%}) falls as N grows (whole ladder)",
        paper="networks approach D_G with N (paper Fig. 6a), so teleporting with D_G costs them less",
        ours=f"deviation ratio {fmt(at_kf)} at N = {Ns}; rank correlation with N {rho:+.2f} (needs <= -{tmin})")
    return out
