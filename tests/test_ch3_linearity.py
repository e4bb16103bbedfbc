import math

import pytest
import torch

from utils import edm, metrics
from utils.chapters import linearity as L
from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser

SHAPE = (1, 2, 3)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(99), dtype=torch.float64) / 2
    mu = torch.linspace(-0.5, 0.5, 6, dtype=torch.float64)
    return (torch.randn(n, 6, generator=g, dtype=torch.float64) @ A.T + mu).reshape(n, *SHAPE).float()


def _affine(bias: bool, seed=3):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(6, 6, generator=g, dtype=torch.float64) / 3
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else torch.zeros(6, dtype=torch.float64)
    return AffineDenoiser(W, b, SHAPE)


def test_aligned_singular_vectors_match_signs():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    W = Q @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)) @ Q.T
    U, U_ref = L.aligned_singular_vectors(-W, W, 4, SHAPE)
    assert U.shape == (4, *SHAPE) and U.abs().amax() == pytest.approx(1.0)
    assert ((U * U_ref).flatten(1).sum(1) > 0).all()


def test_memorization_and_matched_noise():
    x = _images(12)
    mem = L.memorization(EmpiricalDenoiser(x), x, 6, seed=0)
    assert mem["fraction"] == 1.0 and mem["memorizing"] and mem["samples"].shape == (6, *SHAPE)
    gen = L.memorization(GaussianDenoiser.fit(_images(400, seed=9)), x, 6, seed=0)
    assert gen["fraction"] < 0.5 and not gen["memorizing"] and gen["gl"] > mem["gl"]
    assert torch.equal(gen["x_T"], mem["x_T"])
    assert L.matched_n_noise(297 * 8, 16) == 149 and L.matched_n_noise(10, 5) == 2


def test_sample_many_and_paired_rmse():
    x = _images(50)
    G = GaussianDenoiser.fit(x)
    x_T = edm.initial_noise(3, SHAPE, seed=0)
    grid = [80.0, 1.0, 0.002]
    res = edm.sample_many({"G": G, "G again": G, "M": EmpiricalDenoiser(x)}, x_T, grid, return_trajectory=True)
    assert len(res["G"][1]) == 3 and res["G"][0].shape == x_T.shape
    d = L.paired_rmse({k: v[0] for k, v in res.items()})
    assert d[("G", "G again")] == 0.0 and d[("G", "M")] > 0


def test_trained_sigmas():
    grid = [80.0, 42.4152, 21.1087, 9.7232, 4.0661, 1.5017, 0.47, 0.1166, 0.0204, 0.002]
    assert L.trained_sigmas(grid, 2000 * 64) == [False] * 4 + [True] * 6          # pure EDM p(sigma)
    assert L.trained_sigmas(grid, 100_000 * 256) == [False] * 2 + [True] * 8      # the gpu ladder
    assert L.trained_sigmas(grid, L.PAPER_IMAGES_SEEN)[1]                         # the reference itself
    # a fifth of the draws log-uniform on [0.002, 80]: every level but sigma_max is trained
    assert L.trained_sigmas(grid, 2000 * 64, uniform_share=0.2) == [False] + [True] * 9


def test_asymmetry():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(50, 50, generator=g, dtype=torch.float64)
    assert L.asymmetry(A + A.T) == 0.0
    assert L.asymmetry(A) == pytest.approx(math.sqrt(2), rel=0.1)
    assert L.asymmetry(GaussianDenoiser.fit(_images(40)).weight(1.0)) < 1e-12
    with pytest.raises(ValueError, match="square"):
        L.asymmetry(torch.zeros(2, 3))
    B = torch.eye(50, dtype=torch.float64)[:, :3]                       # restriction to 3 coordinates
    S = A + A.T
    S[:3, 3:] += 1.0                                                     # asymmetric only outside the block
    assert L.asymmetry(S, B) == 0.0 and L.asymmetry(S) > 0
    with pytest.raises(ValueError, match="basis"):
        L.asymmetry(A, torch.zeros(4, 2))


def test_largest_drop():
    rising = [[0.9, 0.5, 1.0], [0.95, 0.7, 1.0], [0.99, 0.9, 1.0]]         # rows: alpha^2 = 0.5, 0.75, 0.99
    assert L.largest_drop(rising, [0.5, 0.75, 0.99]) == 0.0
    assert L.largest_drop(rising[::-1], [0.99, 0.75, 0.5]) == 0.0          # order of the rows does not matter
    assert L.largest_drop(rising, [0.99, 0.75, 0.5]) == pytest.approx(0.4)  # falls by 0.4 at sigma #2
    with pytest.raises(ValueError):
        L.largest_drop([[1.0]], [0.5])


def test_off_distribution_inputs():
    x = L.off_distribution_inputs("patches", (1, 8, 8), 6, seed=0)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, L.off_distribution_inputs("patches", (1, 8, 8), 6, seed=0))
    y = L.off_distribution_inputs("digits", (3, 16, 16), 2, seed=1)
    assert y.shape == (2, 3, 16, 16) and torch.equal(y[:, 0], y[:, 2])
    with pytest.raises(ValueError, match="integer factor"):
        L.off_distribution_inputs("patches", (1, 6, 6), 2)


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("03_linearity") == []


# --------------------------------------------------------------------------- bookkeeping of the fits

def test_noise_draws_give_more_inputs_than_pixels():
    from utils import distill
    nd = distill.noise_draws
    assert nd(297, 64, 16) == 16                                      # the cpu profile's own count suffices
    assert nd(64, 1024, 2) == 17 and 64 * 17 > 1024                   # colab shapes under the smoke budget
    assert nd(5000, 1024, 2) == 2
    assert nd(1025, 1024, 1) == 1 and nd(1024, 1024, 1) == 2
    with pytest.raises(ValueError, match="n_images"):
        nd(0, 64, 2)


def test_symmetry_steps():
    cpu = (25, 50, 75, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 750, 1000, 1250, 1500, 1750)
    assert L.symmetry_steps(cpu, 2000) == [125, 250, 500, 1000, 2000]
    assert L.symmetry_steps((5, 10), 20) == [5, 10, 20]
    assert L.symmetry_steps((1, 2), 4) == [1, 2, 4]
    assert L.symmetry_steps((), 7) == [7]
    assert L.symmetry_steps((3, 50), 10) == [3, 10]                # snapshots past the end are not kept


def test_intermediate_levels():
    from utils import edm
    from utils.regimes import Regimes
    R = Regimes(sigma_low=0.17, sigma_high=1.67)
    band = edm.band_grid()
    every = L.intermediate_levels(band, R)
    assert len(every) == 8 and all(0.17 <= s <= 1.67 for s in every.tolist())
    assert torch.equal(L.intermediate_levels(band, R, 0), every) and torch.equal(L.intermediate_levels(band, R, 9), every)
    two = L.intermediate_levels(band, R, 2)
    assert two.tolist() == [every[0].item(), every[-1].item()]
    assert len(L.intermediate_levels(band, R, 3)) == 3 and L.intermediate_levels(band, R, 1).tolist() == [every[0].item()]
    with pytest.raises(ValueError, match="count"):
        L.intermediate_levels(band, R, -1)
    with pytest.raises(ValueError, match="no level"):
        L.intermediate_levels([80.0, 40.0], R)


def test_settings_resolve_and_reject_unknown_claims():
    from utils import profiles
    from utils.settings import SettingsError
    for name in profiles.NAMES:
        S = L.settings(name)
        assert set(S.expected_to_fail) <= {i.split(".", 1)[1] for i in L.CLAIM_IDS}
    with pytest.raises(SettingsError, match="unknown claim"):
        L.settings("cpu").replace(expected_to_fail={"no_such_claim": "x"})
    with pytest.raises(SettingsError, match="alpha2"):
        L.settings("cpu").replace(alpha2=[0.5])


# --------------------------------------------------------------------------- claims

def _results(**changes):
    """A Results that agrees with every claim of the chapter (numbers of the paper's kind)."""
    values = dict(
        ladder=[16, 64, 256, 750, 1500], memorizing=[16, 64],
        lin_min=[0.80, 0.85, 0.90, 0.95, 0.97], lin_err_max=[0.6, 0.5, 0.4, 0.3, 0.2],
        alpha2=[0.99, 0.8675, 0.745, 0.6225, 0.5], alpha_mins=[0.999, 0.99, 0.985, 0.98, 0.97], alpha_drop=0.0,
        fit_sigmas=[80.0, 20.0, 4.0, 1.5, 0.5, 0.1, 0.002],
        fit_regimes=["high", "high", "high", "intermediate", "intermediate", "low", "low"],
        fit_trained=[False, True, True, True, True, True, True],
        L_theta=[0.01, 0.01, 0.02, 0.1, 0.1, 0.01, 0.005], L_G=[0.04, 0.03, 0.03, 0.04, 0.04, 0.02, 0.01],
        G_theta_low=[0.02, 0.01], inter_L=0.10, inter_G=0.12, inter_M=0.30,
        low_id=[0.2, 0.1, 0.02, 0.02, 0.02], high_MG=[0.01] * 5, high_sigma=60.1,
        lg_inter=[0.15, 0.12, 0.05, 0.04, 0.03],
        w_sigmas=[80.0, 20.0, 4.0, 1.5, 0.5, 0.1, 0.002],
        w_regimes=["high", "high", "high", "intermediate", "intermediate", "low", "low"],
        w_closed=[0.5, 0.15, 0.1, 0.1, 0.1, 0.1, 0.3], w_adam=[0.6, 0.3, 0.2, 0.2, 0.2, 0.2, 0.5],
        align_k=20, d=64, align_diag=[0.9] * 7, align_subspace=[0.95] * 7,
        asym_inter=[0.9, 0.6, 0.2, 0.1, 0.05], asym_top=0.01,
        sym_sigma=1.5, sym_steps=[125, 250, 500, 1000, 2000], asym_steps=[0.5, 0.4, 0.3, 0.2, 0.1],
        n_noises=100, d_LG=0.05, d_LM=0.3, d_GM=0.3, d_thG=0.15, d_thM=0.3,
        ctrl_train=0.02, ctrl_held=0.15, off_N=[16, 64, 1500], off_inter=[0.3, 0.25, 0.1])
    values.update(changes)
    return L.Results(**values)


# For every claim: a change of the results that contradicts it.
CONTRADICTIONS = {
    "ch3.min_linearity_rises": dict(lin_min=[0.97, 0.96, 0.90, 0.85, 0.975]),
    "ch3.linearity_above_096": dict(lin_min=[0.80, 0.85, 0.90, 0.93, 0.95]),
    "ch3.error_form_falls": dict(lin_err_max=[0.2, 0.3, 0.4, 0.5, 0.6]),
    "ch3.alpha_every_sigma": dict(alpha_drop=1e-3),
    "ch3.alpha_min_rises": dict(alpha_mins=[0.97, 0.98, 0.985, 0.99, 0.999]),
    "ch3.high_dl_matches_net": dict(L_theta=[0.08, 0.01, 0.02, 0.1, 0.1, 0.01, 0.005]),
    "ch3.low_dl_dg_match_net": dict(G_theta_low=[0.07, 0.01]),
    "ch3.intermediate_dm_furthest": dict(inter_M=0.11),
    "ch3.low_identity": dict(low_id=[0.2, 0.1, 0.02, 0.06, 0.02]),
    "ch3.high_dm_dg_coincide": dict(high_MG=[0.2, 0.01, 0.01, 0.01, 0.01]),
    "ch3.dl_dg_close_every_sigma": dict(L_G=[0.09, 0.03, 0.03, 0.04, 0.04, 0.02, 0.01]),
    "ch3.dl_dg_close_trained": dict(L_G=[0.04, 0.03, 0.03, 0.07, 0.04, 0.02, 0.01]),
    "ch3.dl_dg_smaller_than_memorizing": dict(lg_inter=[0.15, 0.05, 0.05, 0.04, 0.03]),
    "ch3.weight_nmse_most_sigma": dict(w_closed=[0.5, 0.25, 0.25, 0.25, 0.1, 0.1, 0.3],
                                   w_adam=[0.6, 0.3, 0.3, 0.3, 0.2, 0.2, 0.5]),
    "ch3.weight_nmse_worst_at_80": dict(w_closed=[0.5, 0.15, 0.1, 0.1, 0.1, 0.1, 0.6]),
    "ch3.closed_form_beats_adam": dict(w_adam=[0.6, 0.3, 0.05, 0.2, 0.2, 0.2, 0.5]),
    "ch3.singular_vectors_correlate": dict(align_diag=[0.9, 0.9, 0.5, 0.9, 0.9, 0.9, 0.9]),
    "ch3.singular_subspaces_align": dict(align_subspace=[0.95, 0.95, 0.95, 0.95, 0.6, 0.95, 0.95]),
    "ch3.symmetric_large_n": dict(asym_inter=[0.9, 0.6, 0.2, 0.15, 0.12]),
    "ch3.symmetry_rises_with_n": dict(asym_inter=[0.05, 0.9, 0.6, 0.2, 0.08]),
    "ch3.symmetry_rises_over_training": dict(asym_steps=[0.1, 0.2, 0.3, 0.4, 0.05]),
    "ch3.samples_dl_dg_closest": dict(d_LG=0.35),
    "ch3.net_samples_nearer_dg": dict(d_thG=0.35),
    "ch3.training_input_control": dict(ctrl_train=0.10),
    "ch3.off_distribution_transfer": dict(off_inter=[0.3, 0.09, 0.1]),
}
# A contradiction that necessarily contradicts another claim too (a level that is trained is a level).
ALSO_FAILS = {"ch3.dl_dg_close_trained": {"ch3.dl_dg_close_every_sigma"}}


def _by_id(claims):
    return {c.id: c for c in claims}


def test_claims_return_exactly_the_listed_ids_and_hold_on_consistent_results():
    assert set(CONTRADICTIONS) == set(L.CLAIM_IDS) and len(set(L.CLAIM_IDS)) == len(L.CLAIM_IDS)
    cs = L.claims(_results(), L.settings("smoke"))
    assert tuple(c.id for c in cs) == L.CLAIM_IDS
    assert {c.id: c.status for c in cs if not c.passed} == {}
    for c in cs:
        assert c.kind in ("paper", "check", "control") and (c.kind != "paper" or c.figures)
        assert c.margin is not None and c.margin >= 0, c.id


@pytest.mark.parametrize("cid", sorted(CONTRADICTIONS))
def test_each_claim_fails_on_results_that_contradict_it(cid):
    R = _results(**CONTRADICTIONS[cid])
    smoke = _by_id(L.claims(R, L.settings("smoke")))
    assert smoke[cid].status == "FAIL", (cid, smoke[cid].ours)
    assert {i for i, c in smoke.items() if not c.passed} == {cid} | ALSO_FAILS.get(cid, set())   # only this one
    cpu = L.settings("cpu")
    expected = cpu.expected_to_fail.get(cid.split(".", 1)[1], "")
    assert _by_id(L.claims(R, cpu))[cid].status == ("not reproduced" if expected else "FAIL")


def test_claims_fail_rather_than_crash_on_degenerate_results():
    R = _results(memorizing=[], ladder=[1500], lin_min=[0.97], lin_err_max=[0.2], low_id=[0.02], high_MG=[0.01],
                 lg_inter=[0.03], asym_inter=[0.05], off_N=[1500], off_inter=[0.1], sym_steps=[2000], asym_steps=[0.1])
    st = _by_id(L.claims(R, L.settings("smoke")))
    for cid in ("ch3.min_linearity_rises", "ch3.dl_dg_smaller_than_memorizing", "ch3.off_distribution_transfer",
                "ch3.symmetry_rises_over_training"):
        assert st[cid].status == "FAIL", cid
    nan = float("nan")
    st = _by_id(L.claims(_results(inter_M=nan, d_thG=nan), L.settings("smoke")))
    assert st["ch3.intermediate_dm_furthest"].status == "FAIL" and st["ch3.net_samples_nearer_dg"].status == "FAIL"


def test_a_marginal_pass_is_shown_as_such():
    st = _by_id(L.claims(_results(inter_M=0.121), L.settings("smoke")))["ch3.intermediate_dm_furthest"]
    assert st.status == "pass (marginal)" and 0 < st.margin < 0.05


def test_affine_fit_at_the_colab_shapes_under_the_smoke_budget():
    """The colab profile's d = 1,024 with the smoke budget's 64 distillation images: noise_draws gives the
    fit more inputs than pixels, and the fit recovers an affine teacher (D_G) exactly."""
    from utils import distill, profiles
    S = L.settings(profiles.resolve("colab", allow_cpu=True, budget="smoke"))
    g = torch.Generator().manual_seed(0)
    x_train = torch.rand(300, 1, 32, 32, generator=g) * 2 - 1
    G = GaussianDenoiser.fit(x_train)
    x = x_train[:S.n_distill]
    n_noise = distill.noise_draws(len(x), G.d, S.n_noise)
    assert S.n_distill * S.n_noise <= G.d < len(x) * n_noise
    fit = distill.distill_grid(G, x, [1.5], n_noise, seed=0, progress=False)
    assert fit.n_inputs == len(x) * n_noise
    assert metrics.weight_nmse(fit.weights[0], G.weight(1.5)) < 1e-4
