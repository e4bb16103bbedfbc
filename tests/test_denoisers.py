import pytest
import torch

from utils.denoisers import AffineDenoiser, EmpiricalDenoiser, GaussianDenoiser, PerSigmaDenoiser


def _data(n, d=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / 3
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ A.T + 0.2).reshape(n, 1, 3, 3)


def test_gaussian_matches_wiener_formula():
    x = _data(200)
    G = GaussianDenoiser.fit(x)
    flat = x.reshape(200, -1)
    mu = flat.mean(0)
    cov = (flat - mu).T @ (flat - mu) / 200                     # 1/N normalisation
    q = _data(5, seed=1) * 2
    for sigma in (0.05, 0.7, 5.0):
        W = cov @ torch.linalg.inv(cov + sigma ** 2 * torch.eye(9, dtype=torch.float64))
        expect = mu + (q.reshape(5, -1) - mu) @ W.T
        assert torch.allclose(G(q, sigma).reshape(5, -1), expect, atol=1e-10)
    assert torch.allclose(G.covariance, cov, atol=1e-12)
    assert (G.eigvals[:-1] >= G.eigvals[1:]).all() and (G.eigvals >= 0).all()


def test_gaussian_is_posterior_mean_of_gaussian_data():
    """Monte-Carlo E[x | y] under x ~ N(mu, S), y = x + s eps, binned near one y, equals D_G(y)."""
    d = 2
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    S = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    L = torch.linalg.cholesky(S)
    n = 2_000_000
    x = mu + torch.randn(n, d, generator=g, dtype=torch.float64) @ L.T
    sigma = 0.6
    y = x + sigma * torch.randn(n, d, generator=g, dtype=torch.float64)
    G = GaussianDenoiser(mu, *_eig(S), (1, 1, 2))
    y0 = torch.tensor([0.5, 0.1], dtype=torch.float64)
    near = (y - y0).norm(dim=1) < 0.05
    mc = x[near].mean(0)
    assert near.sum() > 2000
    assert torch.allclose(G(y0.reshape(1, 1, 1, 2), sigma).flatten(), mc, atol=0.02)


def _eig(S):
    lam, U = torch.linalg.eigh(S)
    order = lam.argsort(descending=True)
    return lam[order], U[:, order]


def test_gaussian_limits():
    x = _data(5)                                   # N = 5 < d = 9: rank <= 4
    G = GaussianDenoiser.fit(x)
    assert (G.eigvals[4:] < 1e-12).all()
    q = _data(3, seed=2) * 3
    # sigma -> 0: projection of (q - mu) onto the span of the centred training data
    centred = (x.reshape(5, -1) - G.mean).T          # (d, 5)
    P = centred @ torch.linalg.pinv(centred)
    expect = G.mean + (q.reshape(3, -1) - G.mean) @ P.T
    assert torch.allclose(G(q, 1e-7).reshape(3, -1), expect, atol=1e-6)
    assert not torch.allclose(G(q, 1e-7), q, atol=1e-3)      # not the identity when N < d
    # sigma -> infinity: the mean
    assert torch.allclose(G(q, 1e6).reshape(3, -1), G.mean.expand(3, -1), atol=1e-6)
    # N >> d: identity as sigma -> 0
    G_big = GaussianDenoiser.fit(_data(500))
    assert torch.allclose(G_big(q, 1e-7), q, atol=1e-6)


def test_gaussian_weight_and_bias_reproduce_call():
    x = _data(100)
    G = GaussianDenoiser.fit(x)
    q = _data(4, seed=3)
    A = G.to_affine(0.3)
    assert torch.allclose(A(q, 0.3), G(q, 0.3), atol=1e-12)


def test_empirical_matches_bruteforce_softmax():
    x = _data(37)
    M = EmpiricalDenoiser(x, chunk_size=8)          # several chunks
    q = _data(6, seed=4) * 1.5
    for sigma in (0.01, 0.3, 2.0, 50.0):
        d2 = torch.cdist(q.reshape(6, -1), x.reshape(37, -1), compute_mode="donot_use_mm_for_euclid_dist") ** 2
        w = torch.softmax(-d2 / (2 * sigma ** 2), dim=1)
        expect = w @ x.reshape(37, -1)
        assert torch.allclose(M(q, sigma).reshape(6, -1), expect, atol=1e-10)


def test_empirical_limits():
    x = _data(20)
    M = EmpiricalDenoiser(x, chunk_size=7)
    q = x[:5] + 0.01 * _data(5, seed=5)
    nn = x[:5]
    assert torch.allclose(M(q, 1e-3), nn, atol=1e-8)                      # nearest training image
    assert torch.allclose(M(q, 1e4), x.mean(0, keepdim=True).expand(5, -1, -1, -1), atol=1e-6)
    assert M(q.float(), 0.5).dtype == torch.float32


def test_per_sample_sigma_and_dtype():
    x = _data(50)
    G = GaussianDenoiser.fit(x)
    q = _data(3, seed=6).float()
    s = torch.tensor([0.1, 1.0, 10.0])
    out = G(q, s)
    assert out.dtype == torch.float32 and out.shape == q.shape
    for i in range(3):
        assert torch.allclose(out[i], G(q[i:i + 1], float(s[i]))[0])


def test_affine_and_per_sigma():
    W = torch.randn(9, 9, dtype=torch.float64)
    b = torch.randn(9, dtype=torch.float64)
    A = AffineDenoiser(W, b, (1, 3, 3))
    q = _data(4)
    assert torch.allclose(A(q, 1.0).reshape(4, -1), q.reshape(4, -1) @ W.T + b)
    fam = PerSigmaDenoiser([10.0, 1.0], [A, AffineDenoiser(W * 0, b * 0, (1, 3, 3))])
    assert torch.allclose(fam(q, 9.0), A(q, 9.0))
    assert torch.allclose(fam(q, 1.1), torch.zeros_like(q))


@pytest.mark.parametrize("bad, err", [
    (lambda G: G(torch.zeros(2, 1, 4, 4, dtype=torch.float64), 1.0), ValueError),   # wrong d
    (lambda G: G(torch.zeros(2, 9, dtype=torch.float64), 1.0), ValueError),         # wrong rank
    (lambda G: G(torch.full((2, 1, 3, 3), float("nan")), 1.0), ValueError),         # non-finite
    (lambda G: G(torch.zeros(2, 1, 3, 3), 0.0), ValueError),                        # sigma <= 0
    (lambda G: G(torch.zeros(2, 1, 3, 3), torch.ones(3)), ValueError),              # sigma shape
    (lambda G: G(torch.zeros(2, 1, 3, 3), "1"), TypeError),
    (lambda G: G([[1.0]], 1.0), TypeError),
    (lambda G: G.flow(torch.zeros(2, 1, 3, 3), -1.0, 0.0), ValueError),
])
def test_bad_inputs_raise(bad, err):
    G = GaussianDenoiser.fit(_data(30))
    with pytest.raises(err):
        bad(G)


def test_bad_constructor_inputs():
    with pytest.raises(ValueError, match="W must be"):
        AffineDenoiser(torch.zeros(3, 3), torch.zeros(9), (1, 3, 3))
    with pytest.raises(ValueError, match="b must be"):
        AffineDenoiser(torch.zeros(9, 9), torch.zeros(3), (1, 3, 3))
    with pytest.raises(ValueError, match="x_train"):
        EmpiricalDenoiser(torch.zeros(4, 9))
    with pytest.raises(ValueError, match="chunk_size"):
        EmpiricalDenoiser(_data(4), chunk_size=0)
    with pytest.raises(ValueError, match="expects d = 9"):
        EmpiricalDenoiser(_data(4))(torch.zeros(1, 1, 2, 2), 1.0)


def test_identity_denoiser():
    from utils.denoisers import apply, identity
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(apply(identity, x, 0.5), x)
