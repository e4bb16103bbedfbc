"""The core's one definition of each shared quantity: noisy inputs, initial noise, the batched call,
RMSE curves, sample statistics, image RMSE, paired differences, log-log fits, rank correlation,
the noise regimes and the linearity curves."""
import math

import numpy as np
import pytest
import torch

from utils import data, edm, metrics, regimes
from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser, apply


def _images(n, seed=0, side=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- noise conventions

def test_initial_noise_is_seeded_scaled_and_independent_of_global_rng():
    a = edm.initial_noise(500, (1, 3, 3), seed=3, sigma_max=80.0)
    torch.manual_seed(123)
    b = edm.initial_noise(500, (1, 3, 3), seed=3, sigma_max=80.0)
    assert a.shape == (500, 1, 3, 3) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, edm.initial_noise(500, (1, 3, 3), seed=4))
    assert abs(float(a.std()) - 80.0) < 3.0
    # the dtype only changes the cast, never the draw
    assert torch.equal(edm.initial_noise(5, (1, 2, 2), seed=1, dtype=torch.float64).float(),
                       edm.initial_noise(5, (1, 2, 2), seed=1))


def test_noisy_inputs_share_one_eps_across_sigma_and_models():
    x = torch.zeros(2000, 1, 2, 2)
    a = data.NoisyInputs(x, seed=1)
    assert torch.equal(a.at(2.0), data.NoisyInputs(x, seed=1).at(2.0)) and a.at(2.0).dtype == x.dtype
    assert abs(float(a.at(2.0).std()) - 2.0) < 0.05
    assert torch.allclose(a.at(2.0), 2 * a.at(1.0))                  # one eps for every sigma
    assert torch.equal(a.at(0.0), x)
    assert not torch.equal(a.at(1.0), data.NoisyInputs(x, seed=2).at(1.0))
    # the streams differ: the noisy inputs of seed s are not the initial noise of seed s
    assert not torch.allclose(data.NoisyInputs(torch.zeros(4, 1, 2, 2), 0).at(80.0),
                              edm.initial_noise(4, (1, 2, 2), seed=0))
    with pytest.raises(ValueError, match="sigma"):
        a.at(-1.0)


def test_apply_batches_checks_and_names_the_denoiser():
    x = _images(10)
    G = GaussianDenoiser.fit(_images(30, seed=1))
    assert torch.allclose(apply(G, x, 0.5, batch_size=3), G(x, 0.5))
    per = torch.linspace(0.1, 2.0, 10, dtype=torch.float64)
    assert torch.allclose(apply(G, x, per, batch_size=4), G(x, per))

    def nan_denoiser(z, s):
        return z * float("nan")
    nan_denoiser.name = "broken-net"
    with pytest.raises(ValueError, match="broken-net.*non-finite.*sigma = 0.5"):
        apply(nan_denoiser, x, 0.5)
    with pytest.raises(ValueError, match="returned shape"):
        apply(lambda z, s: z[:, :, :2], x, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        apply(G, x, -1.0)


# --------------------------------------------------------------------------- RMSE curves

def test_rmse_curves_equal_metrics_rmse_on_the_same_inputs():
    train, held = _images(40), _images(12, seed=5)
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    sig = [5.0, 1.0, 0.2]
    curves = metrics.rmse_curves({"M": (G, M), "G": (G, G)}, held, sig, seed=7, batch_size=5)
    assert set(curves) == {"M", "G"} and curves["G"].shape == (3,)
    assert np.allclose(curves["G"], 0.0)
    noisy = data.NoisyInputs(held, 7)
    for i, s in enumerate(sig):
        assert curves["M"][i] == pytest.approx(metrics.rmse(G, M, noisy.at(s), s), rel=1e-10)
    shifted = metrics.rmse_curves({"G": (lambda x, s: G(x, s) + 0.3, G)}, held, sig, seed=7)
    assert np.allclose(shifted["G"], 0.3)
    per = metrics.rmse_curves({"M": (G, M)}, held, sig, seed=7, per_input=True)["M"]
    assert per.shape == (12, 3) and np.allclose(per.mean(0), curves["M"])
    nm = metrics.rmse_curves({"M": (G, M)}, held, sig, seed=7, metric="nmse")["M"]
    assert nm[1] == pytest.approx(metrics.nmse(G, M, noisy.at(1.0), 1.0), rel=1e-10)
    with pytest.raises(ValueError, match="metric"):
        metrics.rmse_curves({"M": (G, M)}, held, sig, metric="mae")


def test_rmse_curves_evaluate_each_denoiser_once_per_sigma():
    calls = []
    G = GaussianDenoiser.fit(_images(20))

    def counted(x, s):
        calls.append(s)
        return G(x, s)
    metrics.rmse_curves({"a": (counted, G), "b": (counted, lambda x, s: x)}, _images(6, seed=1), [1.0, 2.0])
    assert calls == [1.0, 2.0]


# --------------------------------------------------------------------------- samples

def test_sample_stats_flags_copies_and_the_wrappers_agree():
    train = _images(30)
    copies = train[[4, 7, 7]] + 1e-4 * _images(3, seed=1)
    novel = _images(5, seed=2) * 2.0
    samples = torch.cat([copies, novel])
    st = metrics.sample_stats(samples, train)
    assert st.gl == pytest.approx(metrics.generalization_score(samples, train), rel=1e-12)
    assert st.memorized == pytest.approx(metrics.memorized_fraction(samples, train), abs=1e-12)
    assert torch.allclose(st.ratio, metrics.nn_ratio(samples, train))
    assert st.nn_index[:3].tolist() == [4, 7, 7]
    assert st.is_memorized()[:3].all() and not st.is_memorized()[3:].any()
    assert st.memorized == pytest.approx(3 / 8)
    assert torch.allclose(st.rel_dist.mean(), torch.tensor(st.gl, dtype=torch.float64))
    assert torch.allclose(st.nn_rmse, st.nn_dist / 3.0)
    one = metrics.sample_stats(samples, train[:1])               # GL works, the ratio is undefined
    assert one.ratio.isnan().all() and one.memorized == 0.0
    with pytest.raises(ValueError, match="threshold"):
        metrics.sample_stats(samples, train, threshold=0)


def test_image_rmse_and_sample_similarity():
    x = _images(3, seed=9)
    assert torch.allclose(metrics.image_rmse(x, x + 0.25), torch.full((3,), 0.25, dtype=torch.float64))
    sim = metrics.sample_similarity(x, x + 0.25)
    assert sim["rmse"] == pytest.approx(0.25) and sim["cosine"] < 1
    assert metrics.sample_similarity(x, 2 * x)["cosine"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.image_rmse(x, x[:2])


# --------------------------------------------------------------------------- statistics

def test_paired_difference():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.paired_difference(a + 0.5, a) == (pytest.approx(0.5), pytest.approx(0.0))
    m, se = metrics.paired_difference(a, np.array([1.0, 1.0, 3.0, 3.0]))
    assert m == pytest.approx(0.5) and se == pytest.approx(np.std([0, 1, 0, 1], ddof=1) / 2)
    assert metrics.paired_difference(torch.tensor(a), torch.tensor(a))[0] == 0.0
    with pytest.raises(ValueError):
        metrics.paired_difference(a, a[:3])


def test_loglog_fit_and_rank_correlation():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    fit = metrics.loglog_fit(x, 3 * x ** 1.5)
    assert fit["slope"] == pytest.approx(1.5) and fit["intercept"] == pytest.approx(math.log(3))
    assert fit["stderr"] == pytest.approx(0.0, abs=1e-9) and fit["n"] == 4
    noisy = metrics.loglog_fit(x, 3 * x ** 1.5 * np.array([1.2, 0.8, 1.1, 0.9]))
    assert noisy["stderr"] > 0
    assert math.isnan(metrics.loglog_fit([1.0], [2.0])["slope"])
    assert metrics.loglog_fit([1.0, -1.0, 2.0], [1.0, 1.0, 2.0])["n"] == 2      # non-positive pairs dropped
    assert metrics.rank_correlation([1, 2, 3, 4], [10, 20, 25, 40]) == pytest.approx(1.0)
    assert metrics.rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics.rank_correlation([1, 2, 3], [5, 5, 5]) == 0.0
    with pytest.raises(ValueError):
        metrics.rank_correlation([1, 2], [1, float("nan")])


# --------------------------------------------------------------------------- regimes

def test_regimes_from_a_spectrum():
    lam = torch.tensor([0.09, 4.0, 0.2, 1.0, 0.0], dtype=torch.float64)      # any order
    r = regimes.from_eigvals(lam)
    assert r.sigma_high == pytest.approx(2.0)
    # 99 % of the variance (5.29) needs the four non-zero components: sigma_low = sqrt(0.09)
    assert r.sigma_low == pytest.approx(0.3)
    assert regimes.from_eigvals(lam, variance_kept=0.8).sigma_low == pytest.approx(1.0)
    assert [r.name(s) for s in (0.05, 0.3, 1.0, 2.0, 3.0)] == ["low", "intermediate", "intermediate",
                                                               "intermediate", "high"]
    grid = edm.sigma_steps(10)
    mask = r.mask(grid)
    assert np.allclose(np.asarray(grid)[mask], [1.5017, 0.4700], atol=1e-3)
    vals = np.arange(10.0)
    assert r.mean(grid, vals) == pytest.approx(np.mean([5, 6]))
    assert np.allclose(r.mean(grid, np.stack([vals, 2 * vals])), [5.5, 11.0])
    with pytest.raises(ValueError, match="no sigma"):
        r.mean([50.0, 60.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="band"):
        r.mask(grid, "middle")
    with pytest.raises(ValueError):
        regimes.from_eigvals(torch.zeros(3))


def test_regimes_of_the_cpu_dataset_and_the_sqrt_d_scaling():
    r = regimes.of_dataset("digits")
    assert 0.1 < r.sigma_low < r.sigma_high < 3.0
    assert regimes.of_dataset("digits") is r                         # computed once
    assert regimes.scaled_sigma(20.0, 12288, 12288) == pytest.approx(20.0)
    assert regimes.scaled_sigma(20.0, 12288, 64) == pytest.approx(20.0 * math.sqrt(64 / 12288))


# --------------------------------------------------------------------------- linearity

def _affine(bias: bool, d=9):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    b = torch.randn(d, generator=g, dtype=torch.float64) if bias else torch.zeros(d, dtype=torch.float64)
    return AffineDenoiser(W, b, (1, 3, 3))


def test_linearity_curves_score_one_for_linear_maps_and_match_the_single_sigma_score():
    x = _images(40)
    sig = [10.0, 1.0, 0.1]
    alphas = [2 ** -0.5, 0.9]
    lin = metrics.linearity_curves(_affine(bias=False), x, sig, alphas)
    assert lin["cosine"].shape == (2, 3) and np.allclose(lin["cosine"], 1.0) and np.allclose(lin["nmse"], 0.0, atol=1e-12)
    aff = metrics.linearity_curves(_affine(bias=True), x, sig, alphas)
    assert (aff["cosine"] < 1).all() and (aff["nmse"] > 0).all()
    noisy = data.NoisyInputs(x, 0)
    y = noisy.at(1.0)
    single = metrics.linearity_score(_affine(bias=True), y[:20], y[20:], 1.0)
    assert single == pytest.approx(aff["cosine"][0, 1], rel=1e-12)
    with pytest.raises(ValueError, match="even"):
        metrics.linearity_curves(_affine(bias=False), x[:5], sig)
    with pytest.raises(ValueError, match="alphas"):
        metrics.linearity_curves(_affine(bias=False), x, sig, [0.0])
