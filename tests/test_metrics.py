import math
import pytest
import torch

from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser
from utils import metrics


def _imgs(n, seed=0):
    return torch.randn(n, 1, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linearity_score_linear_affine_and_memorizing():
    W = torch.randn(9, 9, dtype=torch.float64)
    lin = AffineDenoiser(W, torch.zeros(9, dtype=torch.float64), (1, 3, 3))
    x1, x2 = _imgs(50, 1), _imgs(50, 2)
    assert metrics.linearity_score(lin, x1, x2, 1.0) == pytest.approx(1.0, abs=1e-12)
    aff = AffineDenoiser(W, 3 * torch.ones(9, dtype=torch.float64), (1, 3, 3))
    assert metrics.linearity_score(aff, x1, x2, 1.0) < 0.99                       # a + b != 1
    assert metrics.linearity_score(aff, x1, x2, 1.0, alpha=0.3, beta=0.7) == pytest.approx(1.0, abs=1e-12)
    M = EmpiricalDenoiser(_imgs(10, 3))
    assert metrics.linearity_score(M, x1, x2, 0.5) < 0.95                        # memorizing: nonlinear


def test_rmse_nmse():
    x = _imgs(20)
    a = AffineDenoiser(torch.eye(9, dtype=torch.float64), torch.zeros(9, dtype=torch.float64), (1, 3, 3))
    b = AffineDenoiser(torch.eye(9, dtype=torch.float64), 0.5 * torch.ones(9, dtype=torch.float64), (1, 3, 3))
    assert metrics.rmse(a, b, x, 1.0) == pytest.approx(0.5)
    assert metrics.rmse(a, a, x, 1.0) == 0.0
    expect = (0.5 * 3 / x.reshape(20, -1).norm(dim=1)).mean().item()
    assert metrics.nmse(a, b, x, 1.0) == pytest.approx(expect)


def test_gl_score_and_nn_ratio():
    train = _imgs(30)
    assert metrics.generalization_score(train[:10], train) == 0.0
    assert metrics.memorized_fraction(train[:10] + 1e-4, train) == 1.0
    novel = _imgs(10, 7)
    assert metrics.generalization_score(novel, train) > 0.3
    assert metrics.memorized_fraction(novel, train) < 0.5
    d, i = metrics.nearest_distances(train[3:5] + 1e-3, train, k=2, chunk_size=7)
    assert i[:, 0].tolist() == [3, 4] and (d[:, 0] < d[:, 1]).all()


def test_weight_metrics():
    G = GaussianDenoiser.fit(_imgs(100))
    W = G.weight(0.5)
    assert metrics.weight_nmse(W, W) == 0.0
    assert metrics.weight_nmse(torch.zeros_like(W), W) == pytest.approx(1.0)
    A = metrics.singular_vector_alignment(W, W, 4)
    assert torch.allclose(A, torch.eye(4, dtype=torch.float64), atol=1e-8)
    with pytest.raises(ValueError, match="k"):
        metrics.singular_vector_alignment(W, W, 10)


def test_sample_similarity():
    a = _imgs(5)
    s = metrics.sample_similarity(a, a)
    assert s["cosine"] == pytest.approx(1.0) and s["rmse"] == 0.0
    with pytest.raises(ValueError, match="same shape"):
        metrics.sample_similarity(a, a[:2])


def test_bad_inputs():
    G = GaussianDenoiser.fit(_imgs(50))
    with pytest.raises(ValueError, match="same shape"):
        metrics.linearity_score(G, _imgs(3), _imgs(4), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        metrics.rmse(G, G, _imgs(3), -1.0)
    with pytest.raises(ValueError, match="d ="):
        metrics.generalization_score(torch.zeros(2, 1, 2, 2), _imgs(4))


def test_alignment_summary_and_signs():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    W = Q @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)) @ Q.T
    same = metrics.singular_alignment(W, W, 3)
    assert same["diagonal"] == pytest.approx(1.0) and same["subspace"] == pytest.approx(1.0)
    # equal top singular values: vectors are ambiguous, the subspace is not
    R = torch.eye(6, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    R[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    Qr = Q @ R
    D = torch.diag(torch.tensor([4.0, 4, 3, 2, 1, 0.5], dtype=torch.float64))
    a = metrics.singular_alignment(Qr @ D @ Qr.T, Q @ D @ Q.T, 2)
    assert a["subspace"] == pytest.approx(1.0, abs=1e-9)
    different = metrics.singular_alignment(W, Q[:, [5, 4, 3, 2, 1, 0]] @ torch.diag(torch.arange(6.0, 0, -1).double())
                                    @ Q[:, [5, 4, 3, 2, 1, 0]].T, 3)
    assert different["subspace"] < 1e-9


def test_trend_over_a_ladder():
    from utils.metrics import TREND_MIN, trend
    assert trend([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]) == (1.0, True)
    rho, ok = trend([1, 2, 3, 4], [0.1, 0.3, 0.2, 0.4])           # one neighbouring swap: rho = 0.8
    assert rho == pytest.approx(0.8) and ok and TREND_MIN == 0.8
    assert trend([1, 2, 3, 4, 5], [5, 4, 3, 1, 2], rising=False)[1]
    assert not trend([1, 2, 3, 4], [0.4, 0.1, 0.3, 0.2])[1]
    with pytest.raises(ValueError):
        trend([1, 2], [1, 2], minimum=0)
