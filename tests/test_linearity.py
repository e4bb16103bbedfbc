import math

import pytest
import torch

from utils import linearity as L
from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser
from utils.metrics import linearity_score, rmse, weight_nmse

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


def test_pairs_fixed_noise_and_pure_noise():
    x = _images(20)
    p = L.Pairs.from_images(x, 5, seed=1)
    for s in (0.1, 3.0):
        x1, x2 = p.at(s)
        assert torch.allclose(x1 - p.c1, s * p.e1, atol=1e-6) and torch.allclose(x2 - p.c2, s * p.e2, atol=1e-6)
    assert not torch.equal(p.c1, p.c2)
    q = L.Pairs.from_images(x, 5, seed=1, pure_noise=True)
    assert torch.equal(q.c1, torch.zeros_like(q.c1)) and torch.equal(q.e1, p.e1)
    with pytest.raises(ValueError, match="pairs"):
        L.Pairs.from_images(x, 11)


def test_linearity_of_linear_and_affine_maps():
    p = L.Pairs.from_images(_images(40), 20, seed=0)
    sig = [0.1, 1.0, 10.0]
    alphas = [math.sqrt(a2) for a2 in L.PAPER_ALPHA2]
    lin = L.linearity_curves(_affine(bias=False), p, sig, alphas)
    assert lin.shape == (5, 3) and torch.allclose(lin, torch.ones_like(lin), atol=1e-12)
    aff = L.linearity_curves(_affine(bias=True), p, sig, alphas)
    # a bias makes a D(x1) + b D(x2) differ from D(a x1 + b x2) by (a + b - 1) bias: < 1 unless a + b = 1
    assert (aff[-1] < 0.999).all()
    # alpha -> 1 (beta -> 0) is close to the trivial identity D(x1) = D(x1)
    assert (aff[0] > aff[-1]).all()


def test_linearity_matches_metrics_and_alpha_one_is_trivial():
    x = _images(60)
    D = EmpiricalDenoiser(x[:10])                      # strongly nonlinear
    p = L.Pairs.from_images(x[10:], 15, seed=2)
    sig = [0.3, 2.0]
    ours = L.linearity_curves(D, p, sig, [2 ** -0.5, 1.0])
    for j, s in enumerate(sig):
        x1, x2 = p.at(s)
        assert ours[0, j] == pytest.approx(linearity_score(D, x1, x2, s), abs=1e-6)
    assert torch.allclose(ours[1], torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert ours[0].min() < 0.99


def test_recorder_and_distill_grid_recover_affine_teacher():
    x = _images(30)
    G = GaussianDenoiser.fit(_images(200, seed=7))
    sig = [0.05, 0.5, 5.0]
    res = L.distill_grid(G, x, sig, n_noise=4, seed=0, adam_epochs=2, W_ref=G.weight)
    assert res.n_inputs == 120 and len(res.fits) == 3 and len(res.adam) == 3
    errs = L.weight_errors(res.fits, G.weight, sig)
    assert max(errs) < 1e-6                 # an affine teacher is recovered exactly (float32 inputs)
    for f, s in zip(res.fits, sig):
        assert torch.allclose(f.b, G.bias(s), atol=1e-6)
    D_L = res.denoiser
    y = x[:4] + 0.5 * torch.randn_like(x[:4])
    assert torch.allclose(D_L(y, 0.5), G(y, 0.5), atol=1e-5)
    assert res.adam[0].weight_errors[0] == 1.0 and len(res.adam[0].weight_errors) == 3
    rec = L.TeacherRecorder(G)
    rec(x[:5], 1.0); rec(x[5:8], 1.0)
    yy, tt = rec.pool()
    assert yy.shape == (8, 6) and torch.allclose(tt, G(x[:8], 1.0).reshape(8, 6)) and rec.inputs == []
    with pytest.raises(ValueError, match="W_ref"):
        L.distill_grid(G, x, sig, n_noise=4, adam_epochs=2)


def test_adam_on_pool_converges_to_closed_form():
    g = torch.Generator().manual_seed(0)
    teacher = _affine(bias=True)
    y = torch.randn(2000, 6, generator=g)
    t = teacher(y.reshape(-1, *SHAPE)).reshape(-1, 6)
    res = L.adam_on_pool(y, t, 1.0, epochs=60, batch_size=64, lr=2e-2, W_ref=teacher.W, shape=SHAPE)
    assert res.weight_errors[0] == 1.0 and len(res.weight_errors) == 61 and len(res.losses) == 60
    assert res.weight_errors[-1] < 0.02 < res.weight_errors[3]
    assert weight_nmse(res.denoiser.W, teacher.W) == pytest.approx(res.weight_errors[-1], abs=1e-6)
    assert res.lr == 2e-2 and L.adam_on_pool(y, t, 80.0, 1).lr == 5e-5      # paper's per-sigma rate


def test_rmse_curves_match_metrics():
    x = _images(25)
    G = GaussianDenoiser.fit(_images(100, seed=4))
    M = EmpiricalDenoiser(_images(10, seed=5))
    sig = [0.2, 2.0]
    out = L.rmse_curves({"G-M": (G, M), "G-G": (G, G)}, x, sig, seed=3)
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    for j, s in enumerate(sig):
        assert out["G-M"][j] == pytest.approx(rmse(G, M, x + s * eps, s), rel=1e-6)
    assert out["G-G"] == [0.0, 0.0]


def test_alignment_summary_and_signs():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    W = Q @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5], dtype=torch.float64)) @ Q.T
    same = L.alignment_summary(W, W, 3)
    assert same["diagonal"] == pytest.approx(1.0) and same["subspace"] == pytest.approx(1.0)
    # equal top singular values: vectors are ambiguous, the subspace is not
    R = torch.eye(6, dtype=torch.float64)
    c, s = math.cos(0.7), math.sin(0.7)
    R[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    Qr = Q @ R
    D = torch.diag(torch.tensor([4.0, 4, 3, 2, 1, 0.5], dtype=torch.float64))
    a = L.alignment_summary(Qr @ D @ Qr.T, Q @ D @ Q.T, 2)
    assert a["subspace"] == pytest.approx(1.0, abs=1e-9)
    different = L.alignment_summary(W, Q[:, [5, 4, 3, 2, 1, 0]] @ torch.diag(torch.arange(6.0, 0, -1).double())
                                    @ Q[:, [5, 4, 3, 2, 1, 0]].T, 3)
    assert different["subspace"] < 1e-9
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


def test_sample_all_and_paired_rmse():
    x = _images(50)
    G = GaussianDenoiser.fit(x)
    x_T = 80.0 * torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    grid = [80.0, 1.0, 0.002]
    res = L.sample_all({"G": G, "G again": G, "M": EmpiricalDenoiser(x)}, x_T, grid)
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
