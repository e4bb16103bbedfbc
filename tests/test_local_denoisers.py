"""The local denoisers (utils.local_denoisers) against brute-force loops written straight from their
equations, their limits (the global D_G and D_M), chunking, per-input sigma, and their errors; the
Jacobian and r^2 of utils.metrics."""
import math

import pytest
import torch

from utils import local_denoisers as L
from utils import metrics
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser, apply


def _images(n, shape=(1, 5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ A.T * 0.5 + 0.1).reshape(n, *shape)


def _window(img, c_all, i, j, r):
    """The zero-padded window of pixel (i, j), all channels, in (c, di, dj) order, and its in-image mask."""
    C, H, W = img.shape
    vals, inside = [], []
    for c in range(C):
        for di in range(-r, r + 1):
            for dj in range(-r, r + 1):
                a, b = i + di, j + dj
                ok = 0 <= a < H and 0 <= b < W
                vals.append(float(img[c, a, b]) if ok else 0.0)
                inside.append(ok)
    return torch.tensor(vals, dtype=torch.float64), tuple(inside)


def _softmax_mean(dists, values, sigma):
    w = torch.softmax(-torch.tensor(dists, dtype=torch.float64) / (2 * sigma ** 2), 0)
    return (w[:, None] * torch.stack(values)).sum(0)


def brute_ls(train, x, P, sigma, equivariant=False):
    r = P // 2
    _, C, H, W = x.shape
    out = torch.zeros_like(x, dtype=torch.float64)
    pos = [(i, j) for i in range(H) for j in range(W)]
    for b in range(len(x)):
        for (i, j) in pos:
            q, pattern = _window(x[b], C, i, j, r)
            sources = [(a, c) for (a, c) in pos if _window(x[b], C, a, c, r)[1] == pattern] if equivariant else [(i, j)]
            dists, values = [], []
            for y in train:
                for (a, c) in sources:
                    dists.append(float((q - _window(y, C, a, c, r)[0]).pow(2).sum()))
                    values.append(y[:, a, c].to(torch.float64))
            out[b, :, i, j] = _softmax_mean(dists, values, sigma)
    return out


def brute_patch_wiener(train, x, P, sigma):
    r = P // 2
    _, C, H, W = x.shape
    out = torch.zeros_like(x, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            Y = torch.stack([_window(y, C, i, j, r)[0] for y in train])
            mu = Y.mean(0)
            S = (Y - mu).T @ (Y - mu) / len(Y)
            K = len(mu)
            centre = [c * P * P + r * P + r for c in range(C)]
            Wm = S @ torch.linalg.inv(S + sigma ** 2 * torch.eye(K, dtype=torch.float64))
            for b in range(len(x)):
                q = _window(x[b], C, i, j, r)[0]
                out[b, :, i, j] = (mu + Wm @ (q - mu))[centre]
    return out


def brute_data_local(train, x, threshold, sigma):
    G = GaussianDenoiser.fit(train)
    Wg = G.weight(sigma)
    _, C, H, W = x.shape
    d = C * H * W
    out = torch.zeros(len(x), d, dtype=torch.float64)
    xf, tf = x.reshape(len(x), -1).double(), train.reshape(len(train), -1).double()
    for p in range(H * W):
        rows = [c * H * W + p for c in range(C)]
        keep = torch.zeros(d, dtype=torch.bool)
        for r_ in rows:
            if Wg[r_, r_] > L.DIAGONAL_FLOOR:
                keep |= Wg[r_].abs() >= threshold * Wg[r_, r_]
        keep[rows] = True
        for b in range(len(x)):
            dist = (xf[b, keep] - tf[:, keep]).pow(2).sum(1)
            w = torch.softmax(-dist / (2 * sigma ** 2), 0)
            out[b, rows] = w @ tf[:, rows]
    return out.reshape(x.shape)


# --------------------------------------------------------------------------- against brute force

@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 3, 4)])
@pytest.mark.parametrize("P", [1, 3, 5])
def test_ls_and_els_match_brute_force(shape, P):
    train, x = _images(7, shape), _images(3, shape, seed=1) + 0.3 * _images(3, shape, seed=2)
    for sigma in (0.3, 1.5):
        assert torch.allclose(L.LocalScore(train, P)(x, sigma), brute_ls(train, x, P, sigma), atol=1e-10)
        assert torch.allclose(L.EquivariantLocalScore(train, P)(x, sigma),
                              brute_ls(train, x, P, sigma, equivariant=True), atol=1e-10)


@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 3, 4)])
@pytest.mark.parametrize("P", [1, 3])
def test_patch_wiener_matches_brute_force(shape, P):
    train, x = _images(9, shape), _images(3, shape, seed=1)
    for sigma in (0.2, 2.0):
        assert torch.allclose(L.PatchWiener(train, P)(x, sigma), brute_patch_wiener(train, x, P, sigma), atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 5, 4), (2, 3, 3)])
def test_data_local_matches_brute_force(shape):
    train, x = _images(12, shape), _images(3, shape, seed=1)
    G = GaussianDenoiser.fit(train)
    for threshold in (0.05, 0.3):
        D = L.DataLocalDenoiser(train, threshold, gaussian=G)
        for sigma in (0.1, 1.0):
            assert torch.allclose(D(x, sigma), brute_data_local(train, x, threshold, sigma), atol=1e-10)


# --------------------------------------------------------------------------- limits and identities

def test_full_windows_give_the_global_denoisers():
    shape = (1, 4, 5)
    train, x = _images(15, shape), _images(4, shape, seed=3)
    P = L.full_window(shape)
    assert P == 9
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    for sigma in (0.05, 0.5, 5.0):
        assert torch.allclose(L.PatchWiener(train, P)(x, sigma), G(x, sigma), atol=1e-9)
        assert torch.allclose(L.LocalScore(train, P)(x, sigma), M(x, sigma), atol=1e-10)
        assert torch.allclose(L.EquivariantLocalScore(train, P)(x, sigma), M(x, sigma), atol=1e-10)
        assert torch.allclose(L.DataLocalDenoiser(train, 0.0, G)(x, sigma), M(x, sigma), atol=1e-10)


def test_one_pixel_windows_and_border_classes():
    shape = (1, 6, 6)
    idx, centre, classes = L.patch_index(shape, 3)
    assert idx.shape == (36, 9) and centre.shape == (36, 1)
    assert (idx[:, 4] == centre[:, 0]).all()                       # the middle slot is the pixel itself
    assert int((idx == 36).sum()) == 4 * 6 * 3 - 4                 # padded slots: 20 edge pixels x 3, corners share
    assert len(torch.unique(classes)) == 9                         # interior, 4 edges, 4 corners
    interior = [i * 6 + j for i in range(1, 5) for j in range(1, 5)]
    assert len(torch.unique(classes[interior])) == 1
    # the ELS of a 1x1 window pools every pixel's value: the same for every pixel of the image
    train, x = _images(4, shape), _images(2, shape, seed=1)
    out = L.EquivariantLocalScore(train, 1)(x, 0.7)
    assert torch.allclose(out, brute_ls(train, x, 1, 0.7, equivariant=True), atol=1e-10)


def test_jacobian_of_the_closed_forms():
    train = _images(30, (1, 3, 3))
    G, M = GaussianDenoiser.fit(train), EmpiricalDenoiser(train)
    x = _images(1, (1, 3, 3), seed=5)[0]
    for sigma in (0.2, 1.0):
        assert torch.allclose(metrics.jacobian(G, x, sigma), G.weight(sigma), atol=1e-12)
        # D_M's Jacobian is the posterior covariance of the training images over sigma^2
        y = train.reshape(30, -1)
        w = torch.softmax(-(x.reshape(1, -1) - y).pow(2).sum(1) / (2 * sigma ** 2), 0)
        mean = w @ y
        cov = (w[:, None] * (y - mean)).T @ (y - mean)
        assert torch.allclose(metrics.jacobian(M, x[None], sigma), cov / sigma ** 2, atol=1e-10)


def test_jacobian_of_a_batch_is_one_per_input():
    train = _images(30, (1, 3, 3))
    M = EmpiricalDenoiser(train)
    x = _images(3, (1, 3, 3), seed=4)
    J = metrics.jacobian(M, x, 0.4, chunk_size=4)
    assert J.shape == (3, 9, 9)
    for i in range(3):
        assert torch.allclose(J[i], metrics.jacobian(M, x[i], 0.4), atol=1e-12)


def test_jacobian_rows():
    train = _images(30, (1, 3, 3))
    M = EmpiricalDenoiser(train)
    x = _images(2, (1, 3, 3), seed=4)
    full = metrics.jacobian(M, x, 0.4)
    part = metrics.jacobian(M, x, 0.4, rows=[4, 0, 7])
    assert part.shape == (2, 3, 9) and torch.allclose(part, full[:, [4, 0, 7]], atol=1e-14)
    assert metrics.jacobian(M, x[0], 0.4, rows=[2]).shape == (1, 9)
    with pytest.raises(ValueError, match="rows"):
        metrics.jacobian(M, x, 0.4, rows=[9])


def test_jacobian_errors_and_inference_mode():
    G = GaussianDenoiser.fit(_images(10, (1, 3, 3)))
    x = _images(2, (1, 3, 3))
    with pytest.raises(ValueError, match="one image"):
        metrics.jacobian(G, x.reshape(2, 9), 0.5)
    with pytest.raises(TypeError, match="callable"):
        metrics.jacobian("G", x[0], 0.5)
    with torch.inference_mode():                                   # works inside the book's inference mode too
        assert metrics.jacobian(G, x[0], 0.5).shape == (9, 9)


def test_r2():
    t = _images(3, (1, 4, 4))
    assert torch.allclose(metrics.r2(t, t), torch.ones(3, dtype=torch.float64))
    mean = t.mean((1, 2, 3), keepdim=True).expand_as(t)
    assert torch.allclose(metrics.r2(mean, t), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    p = t + 0.1
    manual = 1 - (0.01 * 16) / (t - t.mean((1, 2, 3), keepdim=True)).pow(2).sum((1, 2, 3))
    assert torch.allclose(metrics.r2(p, t), manual)
    flat = torch.zeros(1, 1, 4, 4)
    assert torch.isnan(metrics.r2(flat + 1, flat)).all()
    with pytest.raises(ValueError, match="same shape"):
        metrics.r2(t, t[:2])


# --------------------------------------------------------------------------- numerics

def test_chunking_and_per_input_sigma(monkeypatch):
    shape = (1, 5, 5)
    train, x = _images(40, shape), _images(6, shape, seed=1)
    G = GaussianDenoiser.fit(train)
    machines = [L.LocalScore(train, 3), L.EquivariantLocalScore(train, 3), L.DataLocalDenoiser(train, 0.1, G)]
    ref = [D(x, 0.4) for D in machines]
    monkeypatch.setattr(L, "MAX_BLOCK", 7)                          # one logit block of 7: many small chunks
    for D, r in zip(machines, ref):
        assert torch.allclose(D(x, 0.4), r, atol=1e-12)
    sig = torch.tensor([0.1, 0.4, 2.0, 0.4, 0.1, 5.0])
    for D in machines + [L.PatchWiener(train, 3)]:
        per = D(x, sig)
        for i, s in enumerate(sig.tolist()):
            assert torch.allclose(per[i], D(x[i:i + 1], s)[0], atol=1e-12)


def test_float32_distances_agree_with_float64():
    shape = (1, 5, 5)
    train, x = _images(30, shape), _images(4, shape, seed=1)
    G = GaussianDenoiser.fit(train)
    for make in (lambda dt: L.LocalScore(train, 3, dtype=dt), lambda dt: L.EquivariantLocalScore(train, 3, dtype=dt),
                 lambda dt: L.DataLocalDenoiser(train, 0.1, G, dtype=dt)):
        for sigma in (0.05, 0.5, 5.0):
            assert torch.allclose(make(torch.float32)(x, sigma), make(torch.float64)(x, sigma), atol=1e-4)
        out = make(torch.float32)(x.float(), 1e-12)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="dtype"):
        L.LocalScore(train, 3, dtype=torch.float16)


def test_small_sigma_is_finite_and_dtype_kept():
    shape = (1, 4, 4)
    train, x = _images(10, shape).float(), _images(3, shape, seed=1).float()
    for D in (L.LocalScore(train, 3), L.EquivariantLocalScore(train, 3), L.PatchWiener(train, 3),
              L.DataLocalDenoiser(train, 0.1)):
        out = apply(D, x, 1e-6)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # at sigma -> 0 LS returns, at every pixel, the centre of the nearest training window
    out = L.LocalScore(train, 3)(train[:2] + 1e-9, 1e-8)
    assert torch.allclose(out, train[:2], atol=1e-6)


def test_mask_sizes_grow_with_sigma():
    train = _images(200, (1, 6, 6))
    D = L.DataLocalDenoiser(train, 0.1)
    sizes = [float(D.masks(s)[1].double().mean()) for s in (0.01, 0.3, 3.0)]
    assert sizes[0] <= sizes[1] <= sizes[2]
    assert D.mask_matrix(0.3).shape == (36, 36)


# --------------------------------------------------------------------------- errors

def test_bad_arguments():
    train = _images(5, (1, 4, 4))
    for bad in (2, 0, -3):
        with pytest.raises(ValueError, match="odd positive int"):
            L.LocalScore(train, bad)
    for bad in (True, 3.0, "3"):
        with pytest.raises(TypeError, match="patch_size"):
            L.EquivariantLocalScore(train, bad)
    with pytest.raises(ValueError, match="threshold"):
        L.DataLocalDenoiser(train, 1.5)
    with pytest.raises(ValueError, match="same images"):
        L.DataLocalDenoiser(train, 0.1, gaussian=GaussianDenoiser.fit(_images(5, (1, 3, 3))))
    with pytest.raises(ValueError, match="image shape"):
        L.LocalScore(train, 3)(_images(2, (1, 2, 8)), 0.5)
    with pytest.raises(ValueError, match="d = 16"):
        L.PatchWiener(train, 3)(_images(2, (1, 3, 3)), 0.5)
    with pytest.raises(ValueError, match="sigma"):
        L.LocalScore(train, 3)(train, -1.0)
    with pytest.raises(TypeError, match="shape"):
        L.patch_index((4, 4), 3)
