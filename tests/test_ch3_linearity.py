import math

import pytest
import torch

from utils import edm
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


def test_training_draws_and_trained_sigmas():
    assert L.training_draws_above(math.exp(-1.2), 1000) == pytest.approx(500.0)
    assert L.training_draws_above(80.0, 10 ** 6) < L.training_draws_above(1.0, 10 ** 6)
    # paper.md §2.3: P(sigma_train > 4.07) ~ 0.015, P(> 42.4) ~ 1.9e-5
    assert L.training_draws_above(4.0661, 10 ** 6) == pytest.approx(1.5e4, rel=0.05)
    assert L.training_draws_above(42.4152, 10 ** 7) == pytest.approx(190, rel=0.05)
    grid = [80.0, 42.4152, 21.1087, 9.7232, 4.0661, 1.5017, 0.47, 0.1166, 0.0204, 0.002]
    assert L.trained_sigmas(grid, 2000 * 64) == [False] * 4 + [True] * 6          # the cpu ladder
    assert L.trained_sigmas(grid, 100_000 * 256) == [False] * 2 + [True] * 8      # the gpu ladder
    assert L.trained_sigmas(grid, L.PAPER_IMAGES_SEEN)[1]                         # the reference itself
    # a fifth of log-uniform draws on [0.002, 80]: P(sigma > 42.4) = 0.2 ln(80/42.4) / ln(40000)
    p = 0.2 * math.log(80 / 42.4152) / math.log(80 / 0.002)
    assert L.training_draws_above(42.4152, 10 ** 6, uniform_share=0.2) == pytest.approx(
        10 ** 6 * (p + 0.8 * 1.9e-5), rel=0.05)
    assert L.trained_sigmas(grid, 2000 * 64, uniform_share=0.2)[1:] == [True] * 9
