"""Closed-form *local* denoisers: every output pixel is a posterior mean computed from a neighbourhood
of the input, not from the whole image.

All follow the book's protocol ``D(x, sigma) -> x_hat`` (:mod:`utils.denoisers`), so samplers, metrics
and :func:`utils.denoisers.apply` take them like D_G and D_M. Each is written from the equations of
its paper (their code was read, not copied):

* :class:`PatchWiener` -- D_G restricted to each pixel's P x P window: the posterior mean of the
  centre pixel under the Gaussian N(mu_p, Sigma_p) of the training patches *at that location*,
  mu_c + Sigma_{c,Omega} (Sigma_Omega + s^2 I)^{-1} (x_Omega - mu_Omega) (paper eq. 6 on a patch; the
  linear member of the family of Niedoba et al., who average patch posteriors).
* :class:`LocalScore` -- the LS machine of Kamb & Ganguli: for each pixel a softmax over the training
  patches at the same location, weighted by the Gaussian likelihood of the noisy patch,
  exp(-||x_Omega - y_Omega||^2 / 2 s^2); output the posterior mean of the patch's centre pixel
  (D_M of eq. 5, one window at a time).
* :class:`EquivariantLocalScore` -- their ELS machine: the same, over training patches taken from
  *every* position with the same border configuration (see "Borders").
* :class:`DataLocalDenoiser` -- after Lukoianov et al.: each pixel's neighbourhood is read off its row
  of the Wiener matrix W_G(s) = Sigma (Sigma + s^2 I)^{-1} (normalized by the diagonal entry,
  thresholded at ``threshold``), then a softmax over training images of the distance on that
  neighbourhood, at the same location.

**Borders.** A window that sticks out of the image is zero-padded, as the convolutions of the
networks are. For the same-location machines (patch Wiener, LS, data-derived) padding and clipping
are the same thing: the padded entries are 0 in the input and in every candidate alike, add nothing to
any distance and, for the Gaussian, carry no variance. For ELS zero padding breaks translation
equivariance at the border; we take its hard form (the reading of Kamb & Ganguli's boundary-aware
ELS): a pixel draws from the patches of the positions whose window is clipped in exactly the same
way -- interior pixels from every interior position, a pixel k < P//2 rows from the top edge (and
interior left-right) from every position k rows from the top edge, a corner pixel only from the same
corner (there ELS is LS). :func:`patch_index` returns these border classes.

**Limits** (tested): with a window that covers the whole image from every pixel (P >= 2 max(H, W) - 1)
the patch Wiener filter is D_G and LS and ELS are D_M; the data-derived denoiser with
``threshold = 0`` is D_M.

**Numerics.** Distances, logits and posterior means are float64 by default, summed by a streaming
log-sum-exp over chunks of candidates (as :class:`utils.denoisers.EmpiricalDenoiser` does), so memory
grows with the chunk (:data:`MAX_BLOCK` logits at a time), not with the number of candidates. The
softmax machines (LS, ELS, data-derived) accept ``dtype=torch.float32`` for large images on a GPU: four
times faster, at the price of logits accurate to ~1e-7 (|x|^2 + |y|^2) / 2 s^2 -- negligible except at the
smallest noise levels, where the posterior is a near-argmax anyway. The patch Wiener filter is always
float64 (its cost is small).
"""
from __future__ import annotations

import math

import torch

from .checks import as_images, as_sigma, flat64, positive_int, same_dim
from .denoisers import SIGMA_FLOOR, GaussianDenoiser, _shrink

# Logits held at once by the streaming softmax (float64: 32 MB); every chunk size is derived from it.
MAX_BLOCK = 2 ** 22
# W_G(s)[p, p] below this counts as zero (a pixel with no variance, or s -> 0 off the data span): the
# pixel's neighbourhood is then the pixel alone.
DIAGONAL_FLOOR = 1e-12


# --------------------------------------------------------------------------- neighbourhoods

def _check_shape(shape) -> tuple[int, int, int]:
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3 \
            or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in shape):
        raise TypeError(f"shape must be the image shape (C, H, W) as three positive ints, got {shape!r}")
    return tuple(int(v) for v in shape)


def check_patch_size(patch_size) -> int:
    """``patch_size`` as an odd positive int (a window centred on its pixel), or a clear error."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int):
        raise TypeError(f"patch_size must be an odd positive int (3, 5, 7, ...), got "
                        f"{type(patch_size).__name__} {patch_size!r}")
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be an odd positive int (3, 5, 7, ...): a window centred on its "
                         f"pixel; got {patch_size}")
    return patch_size


def full_window(shape) -> int:
    """The smallest patch size whose window covers the whole image from every pixel (2 max(H, W) - 1):
    at this size the local machines are the global ones."""
    _, H, W = _check_shape(tuple(shape))
    return 2 * max(H, W) - 1


def patch_index(shape, patch_size: int):
    """The P x P windows of an image of ``shape`` (C, H, W), as indices into the flattened image.

    Returns ``(idx, centre, classes)``: ``idx`` (H*W, C*P*P) long -- for the window of each pixel
    (units in row-major order), the flat index (c*H*W + i*W + j) of every entry, in (c, di, dj)
    order, and ``d = C*H*W`` (an appended zero: the padding) where the window leaves the image;
    ``centre`` (H*W, C) -- the flat indices of the pixel itself; ``classes`` (H*W,) -- the border class
    of each pixel (pixels whose windows are clipped in the same way share a class; see the module
    docstring).
    """
    C, H, W = _check_shape(tuple(shape))
    P = check_patch_size(patch_size)
    r = P // 2
    d = C * H * W
    ii = torch.arange(H).view(H, 1).expand(H, W).reshape(-1)            # (U,)
    jj = torch.arange(W).view(1, W).expand(H, W).reshape(-1)
    off = torch.arange(-r, r + 1)
    wi = ii[:, None, None] + off[None, :, None]                           # (U, P, 1)
    wj = jj[:, None, None] + off[None, None, :]                           # (U, 1, P)
    inside = (wi >= 0) & (wi < H) & (wj >= 0) & (wj < W)                  # (U, P, P)
    spatial = (wi.clamp(0, H - 1) * W + wj.clamp(0, W - 1))               # (U, P, P)
    chan = torch.arange(C).view(1, C, 1, 1) * (H * W)
    idx = torch.where(inside[:, None], spatial[:, None] + chan, torch.full_like(spatial[:, None] + chan, d))
    idx = idx.reshape(H * W, C * P * P)
    centre = (ii * W + jj)[:, None] + torch.arange(C)[None, :] * (H * W)
    _, classes = torch.unique(inside.reshape(H * W, -1), dim=0, return_inverse=True)
    return idx, centre, classes


def _padded(x_flat: torch.Tensor) -> torch.Tensor:
    """(B, d) -> (B, d + 1) float64 with a last column of zeros (the padding entry)."""
    return torch.cat([x_flat, x_flat.new_zeros(len(x_flat), 1)], 1)


DTYPES = (torch.float64, torch.float32)
# float32 cannot hold 1 / (2 * SIGMA_FLOOR^2): its sigma floor (logits stay below its largest value).
SIGMA_FLOOR_32 = 1e-15


def _inv_two_var(sigma, batch: int, device, dtype=torch.float64) -> torch.Tensor:
    floor = SIGMA_FLOOR if dtype == torch.float64 else SIGMA_FLOOR_32
    s = as_sigma(sigma, batch).to(device).clamp_min(floor)
    return (1.0 / (2 * s ** 2)).to(dtype)


class _StreamingSoftmax:
    """sum_m softmax_m(logits) values_m over candidate chunks, by a running log-sum-exp (in the logits' dtype).
    Logits (G, R, m), values (G, m, C) -> result (G, R, C)."""

    def __init__(self, G: int, R: int, C: int, device, dtype=torch.float64):
        kw = dict(dtype=dtype, device=device)
        self.max = torch.full((G, R, 1), -math.inf, **kw)
        self.sum = torch.zeros((G, R, 1), **kw)
        self.acc = torch.zeros((G, R, C), **kw)

    def add(self, logits: torch.Tensor, values: torch.Tensor) -> None:
        """Fold in one chunk; ``logits`` is overwritten (it becomes the chunk's weights)."""
        new_max = torch.maximum(self.max, logits.amax(-1, keepdim=True))
        rescale = (self.max - new_max).exp()
        w = logits.sub_(new_max).exp_()
        self.sum = self.sum * rescale + w.sum(-1, keepdim=True)
        self.acc = self.acc * rescale + w @ values
        self.max = new_max

    def result(self) -> torch.Tensor:
        return self.acc / self.sum


def _logits(q: torch.Tensor, q_sq: torch.Tensor, y: torch.Tensor, inv_two_var: torch.Tensor) -> torch.Tensor:
    """-||q_r - y_m||^2 / 2 s_r^2 (G, R, m) for rows of q (G, R, K) (``q_sq`` = their squared norms,
    (G, R, 1)) and y (G, m, K); ``inv_two_var`` broadcasts to (G, R, 1). The squared distance
    ||q||^2 + ||y||^2 - 2 q.y is clamped at 0 (its cancellation costs ~1e-16 relative in float64)."""
    d = torch.baddbmm(q_sq + y.pow(2).sum(-1)[:, None, :], q, y.transpose(1, 2), alpha=-2.0)
    return d.clamp_min_(0.0).mul_(-inv_two_var)


def _same_location(q: torch.Tensor, train: torch.Tensor, idx: torch.Tensor, centre: torch.Tensor,
                   inv_two_var: torch.Tensor) -> torch.Tensor:
    """Per unit u: softmax over training images i of -||q[idx_u] - y_i[idx_u]||^2 / 2s^2, posterior mean
    of y_i[centre_u]. q (B, d+1) and train (N, d+1) padded, of one dtype; returns (B, U, C)."""
    B, N = q.shape[0], train.shape[0]
    U, C = centre.shape
    out = torch.empty(B, U, C, dtype=q.dtype, device=q.device)
    g = max(1, min(U, MAX_BLOCK // (B * min(N, 256))))                   # units per block
    m = max(1, min(N, MAX_BLOCK // (g * B)))                             # training images per chunk
    for u0 in range(0, U, g):
        ids, cen = idx[u0:u0 + g], centre[u0:u0 + g]
        qs = q[:, ids].transpose(0, 1)                                    # (g, B, K)
        q_sq = qs.pow(2).sum(-1, keepdim=True)
        soft = _StreamingSoftmax(len(ids), B, C, q.device, q.dtype)
        for n0 in range(0, N, m):
            y = train[n0:n0 + m]
            soft.add(_logits(qs, q_sq, y[:, ids].transpose(0, 1), inv_two_var[None, :, None]),
                     y[:, cen].transpose(0, 1))
        out[:, u0:u0 + g] = soft.result().transpose(0, 1)
    return out


def _scatter(units: torch.Tensor, centre: torch.Tensor, shape_x) -> torch.Tensor:
    """(B, U, C) centre-pixel values -> images of ``shape_x`` (every pixel is the centre of one unit)."""
    B = units.shape[0]
    out = torch.empty(B, centre.numel(), dtype=units.dtype, device=units.device)
    out[:, centre.reshape(-1).to(units.device)] = units.reshape(B, -1)
    return out.reshape(shape_x)


class _Local:
    """Shared bookkeeping: the training set (flattened, padded, in ``dtype``, on its device) and checks."""

    label = "local"

    def __init__(self, x_train: torch.Tensor, dtype=torch.float64):
        as_images(x_train, "x_train")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be torch.float64 or torch.float32 (the precision of the distances), got {dtype!r}")
        self.dtype = dtype
        self.shape = tuple(int(v) for v in x_train.shape[1:])
        self.d = x_train[0].numel()
        self.n = len(x_train)
        self.train = _padded(flat64(x_train)).to(dtype)

    def _input(self, x):
        as_images(x)
        same_dim(x, self.d, "x", f"the {self.label} denoiser")
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x has image shape {tuple(x.shape[1:])} but the {self.label} denoiser was built for "
                             f"{self.shape} (its windows depend on the image's layout)")
        return _padded(flat64(x).to(self.train.device)).to(self.dtype)

    def __repr__(self) -> str:
        extra = f", patch_size={self.patch_size}" if hasattr(self, "patch_size") else ""
        return f"{type(self).__name__}(N={self.n}, shape={self.shape}{extra})"


class LocalScore(_Local):
    """The local score (LS) machine of Kamb & Ganguli (module docstring): per pixel, the posterior mean
    of the centre pixel under the training patches at the same location,

        D(x; s)_p = sum_i softmax_i(-||x_{Omega_p} - y_{i, Omega_p}||^2 / 2 s^2) y_{i, p},

    Omega_p the P x P window of pixel p (zero padding at the border). ``patch_size >=``
    :func:`full_window` gives D_M. ``dtype``: the precision of the distances (module docstring)."""

    label = "LS"

    def __init__(self, x_train: torch.Tensor, patch_size: int, dtype=torch.float64):
        super().__init__(x_train, dtype)
        self.patch_size = check_patch_size(patch_size)
        idx, centre, _ = patch_index(self.shape, self.patch_size)
        self.idx, self.centre = idx.to(self.train.device), centre.to(self.train.device)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        q = self._input(x)
        units = _same_location(q, self.train, self.idx, self.centre, _inv_two_var(sigma, len(x), q.device, q.dtype))
        return _scatter(units, self.centre, x.shape).to(x.device, x.dtype)


class EquivariantLocalScore(_Local):
    """The equivariant local score (ELS) machine of Kamb & Ganguli: as :class:`LocalScore`, but the
    softmax runs over the training patches of *every* position in the pixel's border class
    (:func:`patch_index`; interior pixels: every interior position),

        D(x; s)_p = sum_{i, p' ~ p} softmax(-||x_{Omega_p} - y_{i, Omega_p'}||^2 / 2 s^2) y_{i, p'}."""

    label = "ELS"

    def __init__(self, x_train: torch.Tensor, patch_size: int, dtype=torch.float64):
        super().__init__(x_train, dtype)
        self.patch_size = check_patch_size(patch_size)
        idx, centre, classes = patch_index(self.shape, self.patch_size)
        dev = self.train.device
        self.idx, self.centre = idx.to(dev), centre.to(dev)
        self.groups = [(classes == c).nonzero().flatten().to(dev) for c in torch.unique(classes)]

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        q = self._input(x)
        B, C = len(x), self.centre.shape[1]
        inv = _inv_two_var(sigma, B, q.device, q.dtype)
        units = torch.empty(B, self.centre.shape[0], C, dtype=q.dtype, device=q.device)
        for group in self.groups:
            n_c = len(group)
            ids, cen = self.idx[group], self.centre[group]                   # (n_c, K), (n_c, C)
            bc = max(1, min(B, MAX_BLOCK // (n_c * n_c)))                    # inputs per block
            m = max(1, min(self.n, MAX_BLOCK // (bc * n_c * n_c)))          # training images per chunk
            for b0 in range(0, B, bc):
                nb = min(bc, B - b0)
                qs = q[b0:b0 + nb][:, ids].reshape(1, nb * n_c, -1)          # row b * n_c + t
                q_sq = qs.pow(2).sum(-1, keepdim=True)
                inv_rows = inv[b0:b0 + nb].repeat_interleave(n_c)[None, :, None]
                soft = _StreamingSoftmax(1, nb * n_c, C, q.device, q.dtype)
                for n0 in range(0, self.n, m):
                    y = self.train[n0:n0 + m]
                    cand = y[:, ids].reshape(1, -1, ids.shape[1])             # (1, m * n_c, K)
                    soft.add(_logits(qs, q_sq, cand, inv_rows), y[:, cen].reshape(1, -1, C))
                units[b0:b0 + nb, group] = soft.result()[0].reshape(nb, n_c, C)
        return _scatter(units, self.centre, x.shape).to(x.device, x.dtype)


class PatchWiener(_Local):
    """D_G on each pixel's P x P window (module docstring): per pixel p, with mu, Sigma the mean and
    covariance (1/N) of the training patches at p's window,

        D(x; s)_p = mu_p + [U diag(lambda / (lambda + s^2)) U^T (x_Omega - mu_Omega)]_p,

    Sigma = U diag(lambda) U^T (float64 eigh per window, eigenvalues below d eps lambda_max set to 0 as
    in :class:`utils.denoisers.GaussianDenoiser`). ``patch_size >=`` :func:`full_window` gives D_G."""

    label = "patch-Wiener"

    def __init__(self, x_train: torch.Tensor, patch_size: int, chunk_size: int | None = None):
        super().__init__(x_train)
        self.patch_size = check_patch_size(patch_size)
        idx, centre, _ = patch_index(self.shape, self.patch_size)
        dev = self.train.device
        self.idx, self.centre = idx.to(dev), centre.to(dev)
        U, K = idx.shape
        # training images per pass: their patches (chunk, U, K) take at most 4 MAX_BLOCK float64 values
        chunk_size = positive_int(chunk_size, "chunk_size") if chunk_size is not None else max(1, 4 * MAX_BLOCK // (U * K))
        mean = torch.zeros(U, K, dtype=torch.float64, device=dev)
        for chunk in self.train.split(chunk_size):
            mean += chunk[:, self.idx].sum(0)
        mean /= self.n
        cov = torch.zeros(U, K, K, dtype=torch.float64, device=dev)
        for chunk in self.train.split(chunk_size):                     # second pass, centred
            c = chunk[:, self.idx] - mean                              # (m, U, K)
            cov += torch.einsum("nuk,nul->ukl", c, c)
        cov /= self.n
        lam, vec = torch.linalg.eigh(cov)                              # (U, K), (U, K, K)
        floor = K * torch.finfo(torch.float64).eps * lam.amax(-1, keepdim=True).clamp_min(0.0)
        self.eigvals = torch.where(lam > floor, lam, torch.zeros_like(lam))
        self.eigvecs = vec
        r = self.patch_size // 2
        C = self.shape[0]
        slots = torch.arange(C, device=dev) * self.patch_size ** 2 + r * self.patch_size + r
        self.centre_vecs = vec[:, slots, :]                            # (U, C, K): rows of U at the centre
        self.mean = mean
        self.centre_mean = mean[:, slots]                              # (U, C)

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        q = self._input(x)
        s = as_sigma(sigma, len(x)).to(q.device)
        coeff = torch.einsum("buk,ukl->bul", q[:, self.idx] - self.mean, self.eigvecs)
        coeff = coeff * _shrink(self.eigvals[None], s[:, None, None] ** 2)
        units = torch.einsum("bul,ucl->buc", coeff, self.centre_vecs) + self.centre_mean
        return _scatter(units, self.centre, x.shape).to(x.device, x.dtype)


class DataLocalDenoiser(_Local):
    """The data-derived-locality denoiser after Lukoianov et al. (module docstring). At noise level s,
    pixel p's neighbourhood is

        M_p(s) = {q : |W_G(s)[p, q]| >= threshold * W_G(s)[p, p]},   W_G(s) = Sigma (Sigma + s^2 I)^{-1}

    (for C > 1 channels: any of the pixel's channel rows; a pixel with W_G[p, p] ~ 0 keeps only
    itself), and the output is the posterior mean of y_{i, p} under a softmax over training images of
    -||x_{M_p} - y_{i, M_p}||^2 / 2 s^2 (same location). ``threshold`` in [0, 1]: 0 gives D_M.
    ``dtype``: the precision of the distances (module docstring).
    ``gaussian``: the training set's fitted :class:`utils.denoisers.GaussianDenoiser` (fitted here if
    not given). The masks of each noise level are computed once and kept (:meth:`masks`)."""

    label = "data-derived"

    def __init__(self, x_train: torch.Tensor, threshold: float, gaussian: GaussianDenoiser | None = None,
                 dtype=torch.float64):
        super().__init__(x_train, dtype)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1] (a fraction of the diagonal entry of W_G), "
                             f"got {threshold!r}")
        self.threshold = float(threshold)
        if gaussian is None:
            gaussian = GaussianDenoiser.fit(x_train)
        if not isinstance(gaussian, GaussianDenoiser) or gaussian.d != self.d:
            raise ValueError(f"gaussian must be the GaussianDenoiser of the same images (d = {self.d})")
        self.gaussian = gaussian
        C, H, W = self.shape
        units = torch.arange(H * W)
        self.centre = (units[:, None] + torch.arange(C)[None, :] * (H * W)).to(self.train.device)
        self._masks = {}

    def mask_matrix(self, sigma: float) -> torch.Tensor:
        """(H*W, d) boolean: row p is pixel p's neighbourhood M_p(sigma) (over every channel)."""
        s = float(as_sigma(sigma, 1)[0])
        Wg = self.gaussian.weight(s)                                     # (d, d) float64
        C, H, W = self.shape
        rows = Wg.reshape(C, H * W, self.d)                               # row (c, p)
        diag = torch.diagonal(Wg).reshape(C, H * W)
        ok = diag > DIAGONAL_FLOOR
        ratio = rows.abs() / diag.clamp_min(DIAGONAL_FLOOR)[..., None]
        keep = ((ratio >= self.threshold) & ok[..., None]).any(0)        # (H*W, d)
        keep[torch.arange(H * W)[:, None], self.centre.cpu()] = True      # a pixel always sees itself
        return keep

    def masks(self, sigma: float):
        """(idx (H*W, K_max) long, sizes (H*W,)): each pixel's neighbourhood as flat indices, padded
        with d (the zero entry) to the largest neighbourhood at this sigma."""
        key = float(as_sigma(sigma, 1)[0])
        if key not in self._masks:
            keep = self.mask_matrix(key)
            sizes = keep.sum(1)
            k = int(sizes.max())
            order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]   # kept entries first
            idx = torch.where(torch.arange(k)[None, :] < sizes[:, None], order, torch.full_like(order, self.d))
            self._masks[key] = (idx.to(self.train.device), sizes)
        return self._masks[key]

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        q = self._input(x)
        s = as_sigma(sigma, len(x))
        units = torch.empty(len(x), self.centre.shape[0], self.centre.shape[1], dtype=q.dtype, device=q.device)
        for value in torch.unique(s).tolist():                           # one set of masks per noise level
            rows = (s == value).nonzero().flatten().to(q.device)
            idx, _ = self.masks(value)
            units[rows] = _same_location(q[rows], self.train, idx, self.centre,
                                         _inv_two_var(value, len(rows), q.device, q.dtype))
        return _scatter(units, self.centre, x.shape).to(x.device, x.dtype)
