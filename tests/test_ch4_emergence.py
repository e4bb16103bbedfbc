import math

import numpy as np
import pytest
import torch

from utils import data, edm, metrics, profiles, train
from utils.chapters import emergence
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser


def test_initial_denoiser_is_the_untrained_network():
    """The U-Net's zero-initialized output layer makes the step-0 model exactly c_skip(sigma) x."""
    spec = dict(dataset="digits", n=16, model_channels=4, channel_mult=[1, 2], steps=5)
    torch.manual_seed(0)
    net = train.build_denoiser(spec, (1, 8, 8)).eval()
    x = torch.randn(6, 1, 8, 8)
    sigma = torch.tensor([0.01, 0.1, 0.47, 1.5, 4.0, 80.0])
    with torch.inference_mode():
        assert torch.allclose(net(x, sigma), emergence.initial_denoiser()(x, sigma), atol=1e-6)


def test_pc_shrinkage_of_gaussian_weight_is_its_factor(gaussian_data):
    mean, cov, g = gaussian_data
    x = (torch.randn(200, 9, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T + mean)
    G = GaussianDenoiser.fit(x.reshape(200, 1, 3, 3))
    for s in (0.1, 0.7, 3.0):
        assert torch.allclose(emergence.pc_shrinkage(G.weight(s), G.eigvecs), G.shrinkage(s), atol=1e-12)
    # a map that mixes components is read only on its diagonal in the PC basis
    W = G.eigvecs @ torch.diag(torch.arange(9.0, dtype=torch.float64)) @ G.eigvecs.T
    assert torch.allclose(emergence.pc_shrinkage(W, G.eigvecs), torch.arange(9.0, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="square"):
        emergence.pc_shrinkage(torch.zeros(3, 4), torch.zeros(3, 4))


def test_crossing_step_interpolates_in_log_step():
    assert emergence.crossing_step([10, 100], [0.0, 1.0], 0.5) == pytest.approx(math.sqrt(1000))
    assert emergence.crossing_step([10, 100, 1000], [0.0, 0.2, 0.8], 0.5) == pytest.approx(10 ** 2.5)
    assert emergence.crossing_step([10, 100], [0.6, 1.0], 0.5) == 10
    assert emergence.crossing_step([10, 100], [0.1, 0.4], 0.5) == math.inf
    # the first up-crossing counts, not a later dip and recovery
    assert emergence.crossing_step([1, 10, 100, 1000], [0, 1, 0, 1], 0.5) == pytest.approx(10 ** 0.5)
    with pytest.raises(ValueError, match="increasing"):
        emergence.crossing_step([10, 5], [0, 1])
    with pytest.raises(ValueError, match="positive"):
        emergence.crossing_step([0, 5], [0, 1])


def test_rise_and_fall():
    arc = emergence.rise_and_fall([1.0, 0.5, 0.25, 0.5])
    assert arc.i_min == 2 and arc.interior and arc.fall == pytest.approx(4) and arc.rise == pytest.approx(2)
    assert not emergence.rise_and_fall([3.0, 2.0, 1.0]).interior        # still falling: no minimum inside
    assert not emergence.rise_and_fall([1.0, 2.0, 3.0]).interior
    assert emergence.early_stopping_index([3, 1, 2]) == 1


def test_learning_times_recover_the_one_over_lambda_law():
    """Factors relaxing as exp(-c (lambda + s^2) t): the measured times follow 1/(lambda + s^2) and,
    for lambda >> s^2, have log-log slope 1 against 1/lambda; a wrong law would not."""
    lam = np.logspace(-0.5, 1.5, 12)
    sigma, init, c = 0.05, 0.5, 1e-3
    target = lam / (lam + sigma ** 2)
    steps = np.unique(np.round(np.logspace(0, 5, 200)))
    S = target + (init - target) * np.exp(-c * np.outer(steps, lam + sigma ** 2))
    t = emergence.learning_times(steps, S, target, init, tol=0.2)
    expected = np.log(5) / (c * (lam + sigma ** 2))
    assert np.allclose(t, expected, rtol=0.05)
    assert metrics.loglog_fit(1 / lam, t)["slope"] == pytest.approx(1.0, abs=0.03)
    pred = emergence.linear_theory_times(lam, sigma, t_ref=t[0], lam_ref=lam[0])
    assert np.allclose(pred, t, rtol=0.05)
    # a component with nothing to learn is NaN, one that never gets there is inf
    t2 = emergence.learning_times(steps[:3], S[:3, :2], [init, 5.0], init, tol=0.2, min_gap=0.01)
    assert np.isnan(t2[0]) and t2[1] == math.inf


def test_evaluate_snapshots_on_closed_form_checkpoints():
    """D_G as a checkpoint is at distance 0 from D_G and copies nothing; D_M copies its training set."""
    x_train = data.load("digits", n=8, seed=0)
    x_held = data.load("digits", n=8, seed=0, split="heldout")
    G = GaussianDenoiser.fit(x_train)
    ckpts = {10: G, 20: EmpiricalDenoiser(x_train)}
    sig = edm.sigma_steps(10)
    x_T = edm.initial_noise(12, (1, 8, 8), seed=1)
    ev = emergence.evaluate_snapshots(ckpts, [10, 20], G, x_train, x_held, sig[[4, 6]], x_T, sig)
    assert ev.rmse.shape == (2, 2) and np.allclose(ev.rmse[0], 0, atol=1e-6) and (ev.rmse[1] > 0.01).all()
    assert ev.memorized[0] == 0.0 and ev.memorized[1] == 1.0
    assert ev.cosine[0] == pytest.approx(1.0, abs=1e-6) and ev.gl[1] < 1e-3 < ev.gl[0]
    assert ev.row(20) == 1 and len(ev.samples) == 2
    with pytest.raises(KeyError):
        ev.row(30)
    # rmse=False skips the curves
    quick = emergence.evaluate_snapshots(ckpts, [10], G, x_train, x_held, sig[[4]], x_T, sig, rmse=False)
    assert np.isnan(quick.rmse).all()
    # the curves are utils.metrics.rmse_curves on the book's noisy inputs
    assert np.allclose(ev.rmse[1], metrics.rmse_curves({"M": (ckpts[20], G)}, x_held, sig[[4, 6]])["M"])


def test_shrinkage_trajectory():
    x_train = data.load("digits", n=32, seed=0)
    G = GaussianDenoiser.fit(x_train)
    x_held = data.load("digits", n=16, seed=0, split="heldout")
    S = emergence.shrinkage_trajectory({0: emergence.initial_denoiser(), 1: G}, [0, 1], G, x_held, 0.47)
    assert S.shape == (2, 64)
    c_skip = float(edm.coefficients(torch.tensor(0.47), "edm")[0])
    assert np.allclose(S[0], c_skip, atol=1e-6)                            # c_skip along every component
    assert np.allclose(S[1], G.shrinkage(0.47).numpy(), atol=1e-6)


def test_increases_with_handles_censored_onsets():
    inf = math.inf
    assert emergence.increases_with([16, 64, 256], [300, 1400, inf])
    assert emergence.increases_with([256, 16, 64], [inf, 300, 1400])      # order of the input is irrelevant
    assert emergence.increases_with([16, 64, 256, 1500], [300, inf, inf, inf])
    assert not emergence.increases_with([16, 64], [1400, 300])
    assert not emergence.increases_with([16, 64], [300, 300])
    assert not emergence.increases_with([16, 64, 256], [300, inf, 900])    # a censored onset below a finite one
    assert not emergence.increases_with([16, 64], [inf, inf])              # nothing measured
    with pytest.raises(ValueError, match="NaN"):
        emergence.increases_with([16, 64], [math.nan, 1.0])


def test_theory_scale():
    lam = np.array([0.5, 1.0, 2.0])
    t = 7.0 / (lam + 0.3 ** 2)
    assert emergence.theory_scale(lam, np.r_[t[:2], np.inf], 0.3) == pytest.approx(7.0)
    assert math.isnan(emergence.theory_scale(lam, [np.inf] * 3, 0.3))


def test_linear_control_converges_to_the_wiener_factors():
    x = data.load("digits", n=200, seed=0)
    G = GaussianDenoiser.fit(x)
    S = emergence.linear_control(x, 0.47, [1, 400], G, lr=1e-2)
    g = G.shrinkage(0.47).numpy()
    assert S.shape == (2, 64)
    top = slice(0, 10)
    assert np.abs(S[1, top] - g[top]).max() < 0.05 < np.abs(S[0, top] - g[top]).max()


def test_settle_step():
    assert emergence.settle_step([10, 20, 40, 80], [1.0, 0.5, 0.42, 0.4], rel=0.1) == 40
    assert emergence.settle_step([10, 20, 40, 80], [1.0, 0.5, 0.4, 0.9], rel=0.0) == 40
    assert emergence.settle_step([10, 20], [0.3, 0.5]) == 10
    with pytest.raises(ValueError, match="rel"):
        emergence.settle_step([1, 2], [1, 2], rel=-1)


def test_runs_include_the_ladder_and_the_chapter_variants():
    P = profiles.resolve("smoke")
    S = emergence.settings(P)
    runs = emergence.runs(P)
    assert {r["n"] for r in runs} >= set(S.onset_sizes) | {S.main_n, S.ref_n}
    assert any(r["steps"] == S.pc_run["steps"] for r in runs)


def test_cumulative_lr_and_what_a_minimum_tracks():
    from utils import profiles
    P = profiles.resolve("smoke")
    spec = P.train_spec(P.train_sizes[0], lr_rampup_steps=200)
    c = emergence.cumulative_lr(spec, [0, 100, 200, 400])
    assert c[0] == 0 and c[1] == pytest.approx(100 * 101 / 2 / 200)
    assert c[2] == pytest.approx(200 * 201 / 400) and c[3] == pytest.approx(c[2] + 200)
    long = dict(spec, lr_rampup_steps=600)
    # the minimum moved with the ramp-up: 200 -> 600
    assert emergence.minimum_tracks(200, spec, 600, long)["best"] == emergence.HYPOTHESES[0]
    # it stayed at the same step
    assert emergence.minimum_tracks(200, spec, 200, long)["best"] == emergence.HYPOTHESES[2]
    # it moved to where the summed learning rate is the same (about 100.5 units: step ~347 under R = 600)
    same = emergence.minimum_tracks(200, spec, 347, long)
    assert same["best"] == emergence.HYPOTHESES[1] and same["predicted"][emergence.HYPOTHESES[1]] == pytest.approx(347, abs=2)
    with pytest.raises(ValueError):
        emergence.minimum_tracks(200, dict(spec, lr_rampup_steps=0), 300, long)


# --------------------------------------------------------------------------- claims

def _results(**changes):
    """Results consistent with every claim of chapter 4 (a fall, an interior minimum, a rise; fewer
    copies and more Gaussian-like samples at the minimum; onsets growing with N; PCs in order; the
    minimum moving with the ramp-up)."""
    r = dict(main_n=64, ref_n=1500, band=[0.17, 1.67], steps=[25, 100, 200, 500, 2000],
             band_rmse=[0.40, 0.20, 0.10, 0.15, 0.20], memorized=[0.0, 0.0, 0.05, 0.4, 0.7],
             cosine=[0.3, 0.6, 0.9, 0.7, 0.5], onset_sizes=[16, 64, 256, 750], onsets=[300.0, 1400.0, math.inf, math.inf],
             t_gauss=[150.0, 175.0, 200.0, 200.0], pc_sigma=0.47, pc_slope=0.9, pc_stderr=0.1, pc_n=11, pc_lr=5e-4,
             lin_slope=1.0, ramps=[200, 600], ramp_minima=[175, 400])
    r.update(changes)
    return emergence.Results(**r)


def _settings(expected_to_fail=None):
    return emergence.settings(profiles.resolve("cpu")).replace(expected_to_fail=expected_to_fail or {})


def _status(results, settings=None):
    return {c.id: c.status for c in emergence.claims(results, settings or _settings())}


def test_claims_return_exactly_the_claim_ids_and_pass_on_consistent_results():
    cl = emergence.claims(_results(), _settings())
    assert tuple(c.id for c in cl) == emergence.CLAIM_IDS
    assert all(c.status in ("pass", "pass (marginal)") for c in cl), [(c.id, c.status, c.ours) for c in cl]
    kinds = {c.id: c.kind for c in cl}
    assert kinds["ch4.minimum_moves_with_rampup"] == "control"
    assert kinds["ch4.gaussian_phase"] == "paper" and cl[0].figures == (8, 21)
    assert {c.source for c in cl if c.id in ("ch4.onset_grows_with_n", "ch4.pc_order")} == \
        {"bonnaire2025why", "wang2025analytical"}


CONTRADICTIONS = {
    # a minimum inside training, but hardly any rise after it (x1.1 < x1.2)
    "ch4.gaussian_phase": dict(band_rmse=[0.40, 0.30, 0.10, 0.105, 0.11]),
    # more copies at the minimum than at the end
    "ch4.early_stop_fewer_copies": dict(memorized=[0.0, 0.0, 0.8, 0.6, 0.5]),
    # the final samples resemble D_G's more than the early-stopped ones
    "ch4.early_stop_gaussian_like": dict(cosine=[0.3, 0.6, 0.5, 0.7, 0.9]),
    # onsets falling with N
    "ch4.onset_grows_with_n": dict(onsets=[1400.0, 300.0, math.inf, math.inf]),
    # components learned in no order
    "ch4.pc_order": dict(pc_slope=0.1, pc_stderr=0.16),
    # the minimum stays at the same step under a three times longer ramp-up
    "ch4.minimum_moves_with_rampup": dict(ramp_minima=[175, 175]),
}


def test_every_claim_has_a_contradiction():
    assert set(CONTRADICTIONS) == set(emergence.CLAIM_IDS)


@pytest.mark.parametrize("claim_id", emergence.CLAIM_IDS)
def test_every_claim_fails_on_contradicting_results(claim_id):
    status = _status(_results(**CONTRADICTIONS[claim_id]))
    assert status[claim_id] == "FAIL"
    assert all(s in ("pass", "pass (marginal)") for k, s in status.items() if k != claim_id), status
    # with a reason recorded before the run it is "not reproduced", never a pass
    S = _settings({claim_id.split(".")[1]: "a reason"})
    assert _status(_results(**CONTRADICTIONS[claim_id]), S)[claim_id] == "not reproduced"


def test_onset_claim_needs_two_measured_onsets_and_shows_two_as_marginal():
    # one measured onset and three censored ones: the ordering holds but rests on one number
    assert _status(_results(onsets=[300.0, math.inf, math.inf, math.inf]))["ch4.onset_grows_with_n"] == "FAIL"
    assert _status(_results())["ch4.onset_grows_with_n"] == "pass (marginal)"          # exactly two
    three = _results(onset_sizes=[16, 64, 256], onsets=[300.0, 900.0, 1800.0], t_gauss=[1.0, 1.0, 1.0])
    assert _status(three)["ch4.onset_grows_with_n"] == "pass"
    # a censored onset below a measured one contradicts the ordering
    assert _status(_results(onsets=[300.0, math.inf, 1500.0, math.inf]))["ch4.onset_grows_with_n"] == "FAIL"


def test_gaussian_phase_needs_both_the_fall_and_the_rise():
    assert _status(_results(band_rmse=[0.11, 0.105, 0.10, 0.15, 0.20]))["ch4.gaussian_phase"] == "FAIL"   # no fall
    assert _status(_results(band_rmse=[0.40, 0.20, 0.10, 0.11, 0.11]))["ch4.gaussian_phase"] == "FAIL"    # no rise
    assert _status(_results(band_rmse=[0.40, 0.30, 0.20, 0.15, 0.10]))["ch4.gaussian_phase"] == "FAIL"    # still falling


def test_onset_margin():
    inf = math.inf
    assert emergence.onset_margin([16, 64, 256], [300, 1200, inf], 2000) == pytest.approx(2000 / 1200 - 1)
    assert emergence.onset_margin([64, 16], [1200, 300], 2000) == pytest.approx(3.0)       # sorted by size
    assert emergence.onset_margin([16, 64], [inf, 300], 2000) < 0
    assert math.isnan(emergence.onset_margin([16, 64], [inf, inf], 2000))


def test_show_checkpoints():
    assert emergence.show_checkpoints(21, 6, keep=(7,)) == [0, 1, 2, 5, 7, 10, 20]
    assert emergence.show_checkpoints(3, 6) == [0, 1, 2]
    with pytest.raises(ValueError, match="keep"):
        emergence.show_checkpoints(3, 2, keep=(5,))


def test_shrinkage_trajectory_derives_enough_noise_draws_from_d():
    """Few held-out images and n_noise * n < d: the fit still runs (draws derived from d)."""
    x_train = data.load("digits", n=32, seed=0)
    G = GaussianDenoiser.fit(x_train)
    x_held = data.load("digits", n=3, seed=0, split="heldout")             # 3 * 4 = 12 < d = 64
    S = emergence.shrinkage_trajectory({1: G}, [1], G, x_held, 0.47, n_noise=4)
    assert S.shape == (1, 64) and np.isfinite(S).all()


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("04_emergence") == []
