import math

import numpy as np
import pytest
import torch

from utils import edm, metrics, profiles, regimes
from utils.chapters import teleportation as tp
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser


def _images(n, seed=0, side=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- the core additions

def test_nfe_counts_the_denoiser_calls_of_sample():
    calls = []

    def D(x, s):
        calls.append(s)
        return 0.5 * x

    x = _images(2)
    for solver in edm.SOLVERS:
        for n in (1, 2, 5):
            calls.clear()
            edm.sample(D, x, edm.sigma_steps(n), solver=solver)
            assert len(calls) == edm.nfe(n, solver)
    with pytest.raises(ValueError, match="solver"):
        edm.nfe(3, "rk4")
    with pytest.raises(ValueError):
        edm.nfe(0)


def test_teleporting_a_gaussian_to_its_own_flow_is_the_flow():
    """With D_G as the denoiser, teleporting to level k and finishing with Euler differs from D_G's plain
    Euler run only through Euler's error on the skipped steps: none when k = 0, and the handed-over
    state is exactly the closed-form flow."""
    train = _images(30, side=4)
    G = GaussianDenoiser.fit(train)
    grid = edm.sigma_steps(10)
    x_T = edm.initial_noise(6, (1, 4, 4), seed=1, dtype=torch.float64)
    assert torch.equal(edm.sample_teleported(G, G, x_T, grid, 0), edm.sample(G, x_T, grid))
    k = 4
    out, traj = edm.sample_teleported(G, G, x_T, grid, k, return_trajectory=True)
    assert len(traj) == len(grid) - k
    x_k = G.flow(x_T, float(grid[0]), float(grid[k]))
    assert torch.allclose(traj[0], G(x_k, float(grid[k])))
    assert torch.allclose(out, edm.sample(G, x_k, grid[k:]))
    # the last level: the Gaussian flow to sigma_min and one denoising step
    last = edm.sample_teleported(G, G, x_T, grid, len(grid) - 1)
    assert torch.allclose(last, G.flow(x_T, 80.0, 0.0), atol=1e-3)


def test_sample_teleported_rejects_bad_arguments():
    G = GaussianDenoiser.fit(_images(10))
    x = _images(2)
    grid = edm.sigma_steps(5)
    with pytest.raises(ValueError, match="handover"):
        edm.sample_teleported(G, G, x, grid, 5)
    with pytest.raises(ValueError, match="handover"):
        edm.sample_teleported(G, G, x, grid, -1)
    with pytest.raises(ValueError, match="handover"):
        edm.sample_teleported(G, G, x, grid, True)
    with pytest.raises(TypeError, match="flow"):
        edm.sample_teleported(G, lambda z, s: z, x, grid, 1)


def test_explained_variance_of_known_pairs():
    x = _images(40, side=4)
    G = GaussianDenoiser.fit(x)
    sig = [0.1, 1.0, 10.0]
    half = lambda z, s: 0.5 * G(z, s)                          # noqa: E731
    ev = metrics.explained_variance_curves({"same": (G, G), "half": (G, half)}, x, sig, seed=3)
    assert np.allclose(ev["same"], 1.0)
    assert np.allclose(ev["half"], 0.75)                       # 1 - ||G/2||^2 / ||G||^2
    # centred: against the mean image, a denoiser that returns the mean explains nothing
    mean = G.mean.reshape(1, 4, 4)
    mu = lambda z, s: mean.expand_as(z).to(z.dtype)            # noqa: E731
    ev_c = metrics.explained_variance_curves({"mu": (G, mu)}, x, sig, seed=3, center=mean)["mu"]
    assert np.allclose(ev_c, 0.0, atol=1e-12)
    ev_0 = metrics.explained_variance_curves({"mu": (G, mu)}, x, sig, seed=3)["mu"]
    assert (ev_0 > ev_c).all()                                 # the uncentred EV credits the mean
    # the numbers by hand at one sigma, on the book's noisy inputs
    from utils.data import NoisyInputs
    xs = NoisyInputs(x, 3).at(1.0)
    a, b = G(xs, 1.0).flatten(1), mu(xs, 1.0).flatten(1)
    assert ev_0[1] == pytest.approx(1 - float((a - b).pow(2).sum() / a.pow(2).sum()))
    with pytest.raises(ValueError, match="center"):
        metrics.explained_variance_curves({"mu": (G, mu)}, x, sig, center=torch.zeros(3))
    # one centre per pair: both variants from one evaluation of each denoiser per sigma
    calls = []

    def counted(z, s):
        calls.append(s)
        return G(z, s)
    both = metrics.explained_variance_curves({"0": (counted, mu), "c": (counted, mu)}, x, sig, seed=3,
                                             center={"c": mean})
    assert np.allclose(both["0"], ev_0) and np.allclose(both["c"], ev_c, atol=1e-12) and len(calls) == len(sig)
    with pytest.raises(ValueError, match="not in pairs"):
        metrics.explained_variance_curves({"0": (G, mu)}, x, sig, center={"x": mean})


def test_rmse_curves_unchanged_by_the_shared_loop():
    x = _images(12, side=4)
    G, M = GaussianDenoiser.fit(x), EmpiricalDenoiser(x)
    sig = [0.2, 2.0]
    per = metrics.rmse_curves({"GM": (G, M)}, x, sig, seed=1, per_input=True)["GM"]
    assert per.shape == (12, 2)
    from utils.data import NoisyInputs
    xs = NoisyInputs(x, 1).at(2.0)
    assert per[:, 1] == pytest.approx(metrics.image_rmse(G(xs, 2.0), M(xs, 2.0)).numpy())
    assert metrics.rmse_curves({"GM": (G, M)}, x, sig, seed=1)["GM"] == pytest.approx(per.mean(0))


# --------------------------------------------------------------------------- chapter helpers

def test_savings_safe_and_fixed_handovers():
    assert tp.savings(10) == pytest.approx([k / 10 for k in range(10)])
    heun = tp.savings(18, "heun")
    assert heun[0] == 0 and heun[1] == pytest.approx(2 / 35) and heun[-1] == pytest.approx(34 / 35)
    assert tp.safe_handover([0.0, 0.01, 0.05, 0.2, 0.05]) == 2      # the first unsafe level ends it
    assert tp.safe_handover([0.0, 0.5, 0.01]) == 0
    assert tp.safe_handover([0.0, 0.01, float("nan")]) == 1
    assert tp.safe_handover([0.0, 0.1]) == 1                          # at the threshold: safe
    R = regimes.Regimes(sigma_low=0.17, sigma_high=1.67)
    grid = edm.sigma_steps(10)                                        # 80, 42.4, 21.1, 9.72, 4.07, 1.50, ...
    assert tp.fixed_handover(grid, R) == 4
    with pytest.raises(ValueError, match="high regime"):
        tp.fixed_handover([1.0, 0.5], R)


def test_ev_inputs_and_dip():
    x = _images(3)
    e = tp.ev_inputs(x, 7)
    assert len(e) == 7 and torch.equal(e[3], x[0]) and torch.equal(e[6], x[0])
    R = regimes.Regimes(sigma_low=0.5, sigma_high=2.0)
    assert tp.ev_dip([10.0, 1.5, 1.0, 0.6, 0.1], [0.99, 0.97, 0.95, 0.96, 0.5], R) == pytest.approx(0.95)
    with pytest.raises(ValueError):
        tp.ev_dip([10.0, 0.1], [0.9, 0.9], R)
    with pytest.raises(ValueError):
        tp.ev_dip([10.0, 1.0], [0.9], R)


def test_evaluate_teleport_on_a_gaussian_model_and_a_memorizer():
    """D_G teleported with its own Gaussian deviates from its Euler run only by Euler's error, which
    vanishes for early handovers and grows with the handover depth; D_M's samples are training images
    whichever way they are reached, so a teleported D_M sample either lands on the same training image
    (deviation 0) or on another one (a flip, a whole image apart)."""
    train = _images(12, side=4, seed=2)
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    grid = edm.sigma_steps(10)
    x_T = edm.initial_noise(40, (1, 4, 4), seed=0, dtype=torch.float64)
    gau = tp.evaluate_teleport(G, G, x_T, grid, train, label="D_G", progress=False)
    mem = tp.evaluate_teleport(M, G, x_T, grid, train, label="D_M", progress=False)
    assert gau.deviation.shape == (10, 40) and gau.reference.shape == (40,) and len(gau.teleported) == 10
    assert gau.ratio[0] == 0 and gau.ratio[1] < 1e-3 and (np.diff(gau.ratio) >= 0).all()
    assert torch.equal(gau.teleported[0], gau.full) and gau.savings[3] == pytest.approx(0.3)
    assert gau.safe_k == tp.safe_handover(gau.ratio) and gau.safe_saving == pytest.approx(gau.savings[gau.safe_k])
    assert (mem.memorized == 1.0).all() and (mem.gl < 1e-6).all()          # D_M's samples are training images
    dev = mem.deviation[1:].ravel()
    nearest = float(metrics.nearest_distances(train, train, k=2)[0][:, 1].min()) / 4   # closest pair, pixel RMSE
    assert ((dev < 1e-6) | (dev >= nearest - 1e-9)).all() and (dev > 0).any()
    with pytest.raises(ValueError, match="two initial noises"):
        tp.evaluate_teleport(G, G, x_T[:1], grid, train)


def test_settings_every_profile_and_runs():
    for name in profiles.NAMES:
        S = tp.settings(name)
        assert S.solver in edm.SOLVERS
    assert tp.settings("gpu").solver == "heun" and tp.settings("gpu").levels == 18
    P = profiles.resolve("cpu")
    S = tp.settings(P)
    assert len(tp.grid(P, S)) == P.sampler_steps
    assert tp.runs(P) == [P.train_spec(n) for n in P.train_sizes]
    with pytest.raises(Exception, match="solver"):
        S.replace(solver="rk4")
    with pytest.raises(Exception, match="levels"):
        S.replace(levels=1)
    # the GPU shapes at the smoke budget keep the sampler and take the smoke sizes (and the smoke grid)
    Pg = profiles.resolve("gpu", allow_cpu=True, budget="smoke")
    Sg = tp.settings(Pg)
    assert Sg.n_ev_inputs == tp.settings("smoke").n_ev_inputs and Sg.solver == "heun" and Sg.levels == 4
    assert len(tp.grid(Pg, Sg)) == 4 and tp.fixed_handover(tp.grid(Pg, Sg), P.regimes) == 1


def test_analysis_constants():
    assert 0 < tp.SAFE_FRACTION < 1 and tp.MIN_SAVING == tp.PAPER_SAVING[0]
    assert 0 < tp.MEM_TOL < 1 and 0 < tp.GL_TOL < 1 and tp.EV_NEAR_ONE < 1


# --------------------------------------------------------------------------- claims

K = 10
SIG = [80.0, 42.4, 21.1, 9.72, 4.07, 1.50, 0.47, 0.117, 0.02, 0.002]
EV_SIG = edm.band_grid().tolist()


def _ev_curve(dip=0.95, low=0.999, high=0.999):
    """An EV curve on the band grid: `high` above sigma_high, `low` below sigma_low, `dip` inside."""
    return [high if s > 1.67 else (low if s < 0.17 else dip) for s in EV_SIG]


def _results(**changes):
    """Chapter 8's numbers as a consistent run gives them (every claim holds), with ``changes``."""
    gen_ratio = [0.0, 0.001, 0.003, 0.01, 0.03, 0.15, 0.3, 0.35, 0.35, 0.35]
    mem_ratio = [0.0, 0.002, 0.02, 0.2, 0.5, 0.6, 0.7, 0.7, 0.7, 0.7]
    r = dict(ns=[16, 64, 256, 750, 1500], sigma_low=0.17, sigma_high=1.67, ev_sigmas=EV_SIG, ev_gen=_ev_curve(),
             ev_dip=[0.7, 0.8, 0.9, 0.93, 0.95], handover_sigmas=SIG, savings=[k / K for k in range(K)],
             ratio=[mem_ratio, [0.0, 0.002, 0.01, 0.1, 0.3] + [0.5] * 5, [0.0, 0.001, 0.005, 0.02, 0.1] + [0.4] * 5,
                    [0.0, 0.001, 0.003, 0.01, 0.05] + [0.35] * 5, gen_ratio],
             floor_ratio=[0.0, 0.0, 0.001, 0.002, 0.013, 0.07, 0.17, 0.22, 0.23, 0.23], k_fixed=4,
             memorized_full=[0.9, 0.6, 0.05, 0.0, 0.0], gen_memorized=[0.0] * K, gen_gl=[0.3] * K)
    r.update(changes)
    return tp.Results(**r)


_CONTRADICT = {
    "ch8.ev_dips_at_intermediate_sigma": dict(ev_gen=_ev_curve(dip=0.999, low=0.995, high=0.998)),
    "ch8.ev_dip_rises_with_n": dict(ev_dip=[0.95, 0.93, 0.9, 0.8, 0.7]),
    "ch8.sampler_floor_below_threshold": dict(floor_ratio=[0.0, 0.0, 0.01, 0.05, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3]),
    "ch8.teleport_saves_steps_generalizing": dict(ratio=[[0.0] + [0.5] * 9] * 4 + [[0.0, 0.05, 0.2] + [0.4] * 7]),
    "ch8.teleport_keeps_sample_statistics": dict(gen_gl=[0.3] + [0.2] * (K - 1)),
    "ch8.memorizing_saves_less": dict(ratio=[[0.0, 0.001, 0.003, 0.01, 0.03] + [0.5] * 5] * 5),
    "ch8.teleport_deviation_falls_with_n": dict(ratio=[[0.0, 0.001, 0.003, 0.01, x] + [0.5] * 5
                                                       for x in (0.01, 0.02, 0.03, 0.04, 0.05)]),
}


def _by_id(cs):
    return {c.id: c for c in cs}


def test_claims_return_exactly_the_claim_ids_and_pass_on_consistent_results():
    S = tp.settings("gpu")
    cs = tp.claims(_results(), S)
    assert tuple(c.id for c in cs) == tp.CLAIM_IDS
    assert [c.status for c in cs] == ["pass"] * len(cs), [(c.id, c.status, c.ours) for c in cs]
    paper = [c for c in cs if c.kind == "paper"]
    assert {c.id for c in paper} == {"ch8.ev_dips_at_intermediate_sigma", "ch8.teleport_saves_steps_generalizing"}
    assert all(c.source == tp.WANG_GAUSSIAN and c.where and not c.figures for c in paper)
    assert _by_id(cs)["ch8.sampler_floor_below_threshold"].kind == "check"


@pytest.mark.parametrize("cid", tp.CLAIM_IDS)
def test_each_claim_fails_on_contradicting_results(cid):
    S = tp.settings("gpu")

    def status(settings):
        return _by_id(tp.claims(_results(**_CONTRADICT[cid]), settings))[cid].status
    assert status(S) == "FAIL"
    assert status(S.replace(expected_to_fail={cid.split(".", 1)[1]: "a reason"})) == "not reproduced"


def test_the_statistics_claim_falls_back_to_the_first_handover_when_none_is_safe():
    cs = _by_id(tp.claims(_results(ratio=[[0.0] + [0.5] * 9] * 5, gen_memorized=[0.0, 0.2] + [0.0] * 8),
                          tp.settings("gpu")))
    assert cs["ch8.teleport_keeps_sample_statistics"].status == "FAIL"
    assert "sigma = 42.4" in cs["ch8.teleport_keeps_sample_statistics"].ours
    assert cs["ch8.teleport_saves_steps_generalizing"].status == "FAIL"
    assert cs["ch8.memorizing_saves_less"].status == "FAIL"            # 0 % is not less than 0 %


def test_claims_reject_results_of_the_wrong_shape():
    S = tp.settings("gpu")
    with pytest.raises(ValueError, match="ev_dip"):
        tp.claims(_results(ev_dip=[0.9]), S)
    with pytest.raises(ValueError, match="floor_ratio"):
        tp.claims(_results(floor_ratio=[0.0]), S)
    with pytest.raises(ValueError, match="k_fixed"):
        tp.claims(_results(k_fixed=0), S)
    with pytest.raises(ValueError, match="ratio"):
        tp.claims(_results(ratio=[[0.0]] * 5), S)


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("08_gaussian_teleportation") == []
