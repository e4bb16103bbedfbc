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
