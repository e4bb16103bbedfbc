import math

import numpy as np
import pytest
import torch

from utils import edm, generalization as gen, metrics
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser


def _images(n, seed=0, side=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- samples

def test_initial_noise_is_seeded_scaled_and_independent_of_global_rng():
    a = gen.initial_noise(500, (1, 3, 3), sigma_max=80.0, seed=3)
    torch.manual_seed(123)
    b = gen.initial_noise(500, (1, 3, 3), sigma_max=80.0, seed=3)
    assert a.shape == (500, 1, 3, 3) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, gen.initial_noise(500, (1, 3, 3), seed=4))
    assert abs(float(a.std()) - 80.0) < 3.0


def test_sample_stats_matches_metrics_and_flags_copies():
    train = _images(30)
    copies = train[[4, 7, 7]] + 1e-4 * _images(3, seed=1)
    novel = _images(5, seed=2) * 2.0
    samples = torch.cat([copies, novel])
    st = gen.sample_stats(samples, train)
    assert st.gl == pytest.approx(metrics.generalization_score(samples, train), rel=1e-12)
    assert st.memorized == pytest.approx(metrics.memorized_fraction(samples, train), abs=1e-12)
    assert torch.allclose(st.ratio, metrics.nn_ratio(samples, train))
    assert st.nn_index[:3].tolist() == [4, 7, 7]
    assert st.is_memorized()[:3].all() and not st.is_memorized()[3:].any()
    assert st.memorized == pytest.approx(3 / 8)
    assert torch.allclose(st.rel_dist.mean(), torch.tensor(st.gl, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        gen.sample_stats(samples, train[:1])


def test_comparison_rows_pick_the_nearest_training_images():
    train = _images(10)
    samples = train[[3, 1, 8]] + 0.01
    ref = -samples
    st = gen.sample_stats(samples, train)
    rows = gen.comparison_rows(samples, train, ref, st.nn_index, n_show=2)
    assert [r.shape[0] for r in rows] == [2, 2, 2]
    assert torch.equal(rows[1], train[[3, 1]])
    assert torch.equal(rows[2], ref[:2])
    with pytest.raises(ValueError):
        gen.comparison_rows(samples, train, ref[:1], st.nn_index, n_show=3)


# --------------------------------------------------------------------------- denoiser distances

def test_distance_curves_equal_metrics_rmse_on_the_same_inputs():
    train, held = _images(40), _images(12, seed=5)
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    sig = [5.0, 1.0, 0.2]
    curves = gen.distance_curves(G, {"M": M, "G": G}, held, sig, seed=7, batch_size=5)
    assert set(curves) == {"M", "G"} and curves["G"].shape == (3,)
    assert np.allclose(curves["G"], 0.0)
    for i, s in enumerate(sig):
        x = gen.noisy_inputs(held, s, seed=7, index=i)
        assert curves["M"][i] == pytest.approx(metrics.rmse(G, M, x, s), rel=1e-10)
    # the same inputs for another model: a fixed shift of the output moves every RMSE by exactly that
    shifted = gen.distance_curves(lambda x, s: G(x, s) + 0.3, {"G": G}, held, sig, seed=7)
    assert np.allclose(shifted["G"], 0.3)


def test_noisy_inputs_are_reproducible_and_have_the_right_scale():
    x = torch.zeros(2000, 1, 2, 2)
    a, b = gen.noisy_inputs(x, 2.0, seed=1, index=3), gen.noisy_inputs(x, 2.0, seed=1, index=3)
    assert torch.equal(a, b) and a.dtype == x.dtype
    assert abs(float(a.std()) - 2.0) < 0.05
    assert not torch.equal(a, gen.noisy_inputs(x, 2.0, seed=1, index=4))


def test_intermediate_mean_uses_the_paper_regime_on_the_10_step_grid():
    grid = edm.sigma_steps(10)
    mask = gen.regime_mask(grid)
    assert np.allclose(np.asarray(grid)[mask], [9.7232, 4.0661, 1.5017, 0.4700, 0.1166], atol=1e-3)
    values = np.arange(10.0)
    assert gen.intermediate_mean(grid, values) == pytest.approx(np.mean([3, 4, 5, 6, 7]))
    with pytest.raises(ValueError):
        gen.intermediate_mean(grid, values[:5])
    with pytest.raises(ValueError, match="regime"):
        gen.intermediate_mean([50.0, 60.0], [1.0, 2.0])


def test_comparable_sigma_and_effective_components():
    grid = edm.sigma_steps(10)
    assert gen.comparable_sigma(4.0, 12288, 12288, grid) == pytest.approx(4.0661, abs=1e-3)
    # 8x8 digits: 4 * sqrt(64 / 12288) = 0.29 -> nearest in log is 0.47; CIFAR-10: 2.0 -> 1.50
    assert gen.comparable_sigma(4.0, 12288, 64, grid) == pytest.approx(0.4700, abs=1e-3)
    assert gen.comparable_sigma(4.0, 12288, 3072, grid) == pytest.approx(1.5017, abs=1e-3)
    G = GaussianDenoiser(torch.zeros(3), torch.tensor([4.0, 1.0, 0.0]), torch.eye(3), (1, 1, 3))
    assert gen.effective_components(G, 1.0) == pytest.approx(0.8 + 0.5)


def test_denoise_rows_and_smooth():
    train = _images(20)
    G = GaussianDenoiser.fit(train)
    x = _images(3, seed=9)
    rows = gen.denoise_rows({"G": G, "id": lambda z, s: z}, x, 1.0)
    assert len(rows) == 3 and torch.equal(rows[0], x) and torch.equal(rows[2], x)
    assert torch.allclose(rows[1], G(x, 1.0))
    per_image = gen.image_rmse(rows[1], rows[0])
    assert per_image.shape == (3,) and float(per_image.mean()) == pytest.approx(metrics.rmse(G, lambda z, s: z, x, 1.0))
    assert torch.allclose(gen.image_rmse(x, x + 0.25), torch.full((3,), 0.25, dtype=torch.float64))
    s = gen.smooth([1.0, 3.0, 5.0, 7.0], window=2)
    assert np.allclose(s, [1.0, 2.0, 4.0, 6.0])
    assert np.allclose(gen.smooth([2.0] * 7, window=50), 2.0)


# --------------------------------------------------------------------------- one model

def test_evaluate_model_tells_a_memorizer_from_a_gaussian_model():
    """D_M as the 'network' memorizes (NN ratio ~ 0, distance to D_M ~ 0); D_G generalizes
    (distance to D_G exactly 0, GL clearly > 0)."""
    train = _images(12, side=4)                      # N = 12 < d = 16
    held = _images(20, seed=3, side=4)
    grid = edm.sigma_steps(10)
    x_T = gen.initial_noise(16, (1, 4, 4), seed=0, dtype=torch.float64)
    D_M, D_G = EmpiricalDenoiser(train), GaussianDenoiser.fit(train)
    mem = gen.evaluate_model(D_M, train, x_T, held, grid, seed=0, label="D_M")
    gau = gen.evaluate_model(D_G, train, x_T, held, grid, seed=0, label="D_G", D_G=D_G, D_M=D_M)
    assert mem.stats.memorized == 1.0 and mem.stats.gl < 1e-6
    assert np.allclose(mem.rmse_M, 0.0) and mem.rmse_G_intermediate > 0.05
    assert gau.stats.memorized < 0.5 and gau.stats.gl > 0.2
    assert np.allclose(gau.rmse_G, 0.0) and gau.rmse_M_intermediate > 0.05
    assert torch.equal(gau.samples, gau.gaussian_samples) and gau.similarity["cosine"] == pytest.approx(1.0)
    assert mem.n_train == 12 and mem.n_params is None and "D_M" in mem.summary()
    assert mem.rmse_G_intermediate == pytest.approx(gen.intermediate_mean(grid, mem.rmse_G))
    assert torch.allclose(gau.samples, edm.sample(D_G, x_T, grid))
    assert math.isfinite(gau.rmse_M_intermediate)


def test_distance_per_input_and_paired_difference():
    train, held = _images(40), _images(30, seed=5)
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    grid = edm.sigma_steps(10)
    per = gen.distance_per_input(M, {"G": G}, held, grid, seed=2)["G"]
    assert per.shape == (30, 10)
    assert np.allclose(per.mean(0), gen.distance_curves(M, {"G": G}, held, grid, seed=2)["G"])
    # a model shifted by a constant 0.1 is exactly 0.1 further from the reference on every input
    shifted = gen.distance_per_input(lambda x, s: G(x, s) + 0.1, {"G": G}, held, grid, seed=2)["G"]
    same = gen.distance_per_input(G, {"G": G}, held, grid, seed=2)["G"]
    mean, se = gen.paired_difference(shifted, same, grid)
    assert mean == pytest.approx(0.1) and se == pytest.approx(0.0, abs=1e-12)
    mean, se = gen.paired_difference(per, same, grid)
    mask = gen.regime_mask(grid)
    assert mean == pytest.approx(per[:, mask].mean()) and se > 0
    assert se == pytest.approx(per[:, mask].mean(1).std(ddof=1) / np.sqrt(30))
    with pytest.raises(ValueError):
        gen.paired_difference(per, same[:, :5], grid)
