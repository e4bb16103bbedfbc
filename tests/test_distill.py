import torch
import pytest

from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser
from utils import distill
from utils.distill import fit_affine, fit_affine_adam, paper_lr
from utils.metrics import weight_nmse


def _images(n, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(99), dtype=torch.float64) / 2
    return (scale * torch.randn(n, 6, generator=g, dtype=torch.float64) @ A.T).reshape(n, 1, 2, 3)


def test_recovers_known_affine_map_exactly():
    W = torch.randn(6, 6, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    teacher = AffineDenoiser(W, b, (1, 2, 3))
    fit = fit_affine(teacher, _images(40), 0.3, n_noise=2)
    assert torch.allclose(fit.W, W, atol=1e-9) and torch.allclose(fit.b, b, atol=1e-9)


def test_tower_property_training_vs_heldout():
    """Distilling D_M on training images + noise recovers W_G; on held-out inputs it does not."""
    train = _images(15)
    G = GaussianDenoiser.fit(train)
    M = EmpiricalDenoiser(train)
    sigma = 0.7
    W_G = G.weight(sigma)
    on_train = fit_affine(M, train, sigma, n_noise=20000, seed=1)
    heldout = _images(15, seed=5, scale=2.0)                   # a broader distribution
    on_held = fit_affine(M, heldout, sigma, n_noise=20000, seed=1)
    e_train, e_held = weight_nmse(on_train.W, W_G), weight_nmse(on_held.W, W_G)
    assert e_train < 0.01
    assert e_held > 10 * e_train
    assert torch.allclose(on_train.b, G.bias(sigma), atol=0.02)


def test_gradient_descent_reaches_gaussian_theorem1():
    """Theorem 1 by Adam on the paper's recipe: zero init converges to W_G for a D_G teacher."""
    train = _images(256)
    G = GaussianDenoiser.fit(train)
    res = fit_affine_adam(G, train.float(), 1.0, epochs=60, batch_size=64, lr=2e-2, W_ref=G.weight(1.0))
    assert res.weight_errors[0] == pytest.approx(1.0)
    assert res.weight_errors[-1] < 0.1 and res.weight_errors[-1] < res.weight_errors[5]
    assert len(res.weights) == 61 and len(res.losses) == 60


def test_paper_lr_table():
    assert paper_lr(80.0) == 5e-5 and paper_lr(0.002) == 5e-2 and paper_lr(0.5) == 5e-4


def test_bad_inputs():
    teacher = AffineDenoiser(torch.eye(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), (1, 2, 3))
    with pytest.raises(ValueError, match="n_noise"):
        fit_affine(teacher, _images(2), 0.3, n_noise=1)
    with pytest.raises(ValueError, match="sigma"):
        fit_affine(teacher, _images(20), 0.0)
    with pytest.raises(ValueError, match="n_noise"):
        fit_affine(teacher, _images(20), 0.3, n_noise=0)
    with pytest.raises(ValueError, match="W_ref"):
        fit_affine_adam(teacher, _images(20).float(), 0.3, epochs=1, W_ref=torch.eye(3))


SHAPE = (1, 2, 3)


def _images6(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(6, 6, generator=torch.Generator().manual_seed(99), dtype=torch.float64) / 2
    mu = torch.linspace(-0.5, 0.5, 6, dtype=torch.float64)
    return (torch.randn(n, 6, generator=g, dtype=torch.float64) @ A.T + mu).reshape(n, *SHAPE).float()


def _affine6(bias: bool, seed=3):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(6, 6, generator=g, dtype=torch.float64) / 3
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else torch.zeros(6, dtype=torch.float64)
    return AffineDenoiser(W, b, SHAPE)


def test_recorder_and_distill_grid_recover_affine_teacher():
    x = _images6(30)
    G = GaussianDenoiser.fit(_images6(200, seed=7))
    sig = [0.05, 0.5, 5.0]
    res = distill.distill_grid(G, x, sig, n_noise=4, seed=0, adam_epochs=2, W_ref=G.weight)
    assert res.n_inputs == 120 and len(res.fits) == 3 and len(res.adam) == 3
    errs = [weight_nmse(f.W, G.weight(s)) for f, s in zip(res.fits, sig)]
    assert max(errs) < 1e-6                 # an affine teacher is recovered exactly (float32 inputs)
    for f, s in zip(res.fits, sig):
        assert torch.allclose(f.b, G.bias(s), atol=1e-6)
    D_L = res.denoiser
    y = x[:4] + 0.5 * torch.randn_like(x[:4])
    assert torch.allclose(D_L(y, 0.5), G(y, 0.5), atol=1e-5)
    assert res.adam[0].weight_errors[0] == 1.0 and len(res.adam[0].weight_errors) == 3
    rec = distill.TeacherRecorder(G)
    rec(x[:5], 1.0); rec(x[5:8], 1.0)
    yy, tt = rec.pool()
    assert yy.shape == (8, 6) and torch.allclose(tt, G(x[:8], 1.0).reshape(8, 6)) and rec.inputs == []
    with pytest.raises(ValueError, match="W_ref"):
        distill.distill_grid(G, x, sig, n_noise=4, adam_epochs=2)


def test_adam_on_pool_converges_to_closed_form():
    g = torch.Generator().manual_seed(0)
    teacher = _affine6(bias=True)
    y = torch.randn(2000, 6, generator=g)
    t = teacher(y.reshape(-1, *SHAPE)).reshape(-1, 6)
    res = distill.fit_affine_adam_pool(y, t, 1.0, epochs=60, batch_size=64, lr=2e-2, W_ref=teacher.W, shape=SHAPE)
    assert res.weight_errors[0] == 1.0 and len(res.weight_errors) == 61 and len(res.losses) == 60
    assert res.weight_errors[-1] < 0.02 < res.weight_errors[3]
    assert weight_nmse(res.denoiser.W, teacher.W) == pytest.approx(res.weight_errors[-1], abs=1e-6)
    assert res.lr == 2e-2 and distill.fit_affine_adam_pool(y, t, 80.0, 1).lr == 5e-5      # paper's per-sigma rate


def test_adam_monitor_records_a_number_per_epoch():
    g = torch.Generator().manual_seed(0)
    teacher = _affine6(bias=True)
    y = torch.randn(500, 6, generator=g)
    t = teacher(y.reshape(-1, *SHAPE)).reshape(-1, 6)
    seen = []

    def frob(W):
        seen.append(W.dtype)
        return float(W.norm())

    res = distill.fit_affine_adam_pool(y, t, 1.0, epochs=5, batch_size=64, lr=2e-2, shape=SHAPE, monitor=frob)
    assert len(res.monitored) == 6 and res.monitored[0] == 0.0 and res.monitored[-1] > 0     # [0]: the zero init
    assert set(seen) == {torch.float64}
    assert res.monitored[-1] == pytest.approx(float(res.denoiser.W.norm()), rel=1e-5)
    assert distill.fit_affine_adam_pool(y, t, 1.0, epochs=1, shape=SHAPE).monitored == []     # off by default
    with pytest.raises(TypeError, match="monitor"):
        distill.fit_affine_adam_pool(y, t, 1.0, epochs=1, monitor=3)
    grid = distill.distill_grid(teacher, y.reshape(-1, *SHAPE)[:100], [1.0, 0.5], n_noise=2, adam_epochs=2,
                                W_ref=lambda s: teacher.W, adam_monitor=frob, progress=False)
    assert [len(r.monitored) for r in grid.adam] == [3, 3]
