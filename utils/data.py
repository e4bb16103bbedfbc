"""Dataset registry: every dataset becomes a float32 tensor (N, C, H, W) with values in [-1, 1].

========================  =========  ============  ============================================
name                      shape      train / held  source
========================  =========  ============  ============================================
``digits``                1 x 8 x 8  1,500 / 297   scikit-learn's ``load_digits`` (offline)
``patches``               1 x 16x16  ~80 % / 20 %  non-overlapping grey 16x16 patches of the photos
                                                   scikit-image and scikit-learn ship (offline)
``mnist``                 1 x 32x32  60,000/10,000 downloaded on first use, md5-verified; zero-
                                                   padded from 28x28 to 32x32
``cifar10``               3 x 32x32  50,000/10,000 downloaded on first use, md5-verified
``folder:PATH``           any        90 % / 10 %   every png/jpg in PATH (one shared size)
========================  =========  ============  ============================================

``split="heldout"`` returns images disjoint from ``split="train"`` (inputs for distillation,
linearity and score differences, paper.md §4.4). The train/held-out partition is fixed (it does
not depend on ``seed``); ``seed`` only picks the random subset of size ``n``.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .checks import as_seed, positive_int

NAMES = ("digits", "patches", "mnist", "cifar10", "folder:PATH")
SPLITS = ("train", "heldout")
_PARTITION_SEED = 12345          # fixes the train / held-out partition once and for all

PATCH_SIZE = 16
PATCH_MIN_STD = 4.0 / 255.0      # drop flat patches (sky, background) whose grey std is below this
GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "clock", "coins", "text", "page", "cell")
COLOUR_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina")

# Public mirrors and md5 sums of the original archives (the values torchvision also uses).
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR10_FILE = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/"


def cache_dir() -> Path:
    """Where downloaded datasets live: ``$HGB_DATA`` or ``~/.cache/hidden-gaussian-book``."""
    return Path(os.environ.get("HGB_DATA", Path.home() / ".cache" / "hidden-gaussian-book"))


def expected_md5(filename: str, published: str) -> str:
    """The md5 sum a data file must have: ``published`` (the original archive's), unless the
    environment variable ``HGB_DATA_CHECKSUMS`` names a JSON file ``{filename: md5}``, whose entry
    then replaces it. Only the tests set it: they write small fake MNIST / CIFAR-10 files in the
    real formats and declare their sums there, so the verification itself still runs."""
    manifest = os.environ.get("HGB_DATA_CHECKSUMS")
    if not manifest:
        return published
    import json
    try:
        sums = json.loads(Path(manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"HGB_DATA_CHECKSUMS={manifest!r} must name a readable JSON file "
                         f"{{filename: md5}}: {e}") from e
    if filename not in sums:
        raise ValueError(f"HGB_DATA_CHECKSUMS={manifest!r} lists no md5 for {filename!r} (it lists "
                         f"{sorted(sums)}); unset HGB_DATA_CHECKSUMS to use the published sums")
    print(f"note: md5 of {filename} checked against {manifest} (HGB_DATA_CHECKSUMS), not the published sum")
    return str(sums[filename])


# --------------------------------------------------------------------------- public API

def load(name: str, n: int | None = None, seed: int = 0, split: str = "train") -> torch.Tensor:
    """Load dataset ``name`` as float32 (N, C, H, W) in [-1, 1].

    ``n`` picks a seeded random subset (``None``: everything in the split); ``n`` and ``seed``
    (an int >= 0) may be python or numpy ints.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name string, one of {NAMES}, got {type(name).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    seed = as_seed(seed)
    if n is not None:
        n = positive_int(n, "n")
    images = _load_split(name, split)
    if n is None:
        return images.clone()
    if n > len(images):
        raise ValueError(f"n = {n} is larger than the {len(images)} images in the {split!r} split of "
                         f"{name!r}; the maximum n is {len(images)}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:n]
    return images[idx].clone()


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool images (N, C, H, W) over ``factor`` x ``factor`` blocks: (N, C, H/f, W/f) in x's
    dtype (the mean of values in [-1, 1] stays in [-1, 1]). H and W must be multiples of ``factor``.
    E.g. ``downsample(load("patches"), 2)``: natural-image patches at the 8x8 size of the digits."""
    from .checks import as_images
    as_images(x, "x")
    positive_int(factor, "factor")
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of factor = {factor}")
    n, c = x.shape[:2]
    return x.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def disjoint_splits(x: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random subsets of ``x``, each of size ``n`` (paper §5: S1 and S2)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of images (N, C, H, W)")
    n = positive_int(n, "n")
    seed = as_seed(seed)
    if 2 * n > len(x):
        raise ValueError(f"n = {n}: two disjoint subsets need 2n = {2 * n} images but x has {len(x)}; "
                         f"the maximum n is {len(x) // 2}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)
    return x[idx[:n]].clone(), x[idx[n:2 * n]].clone()


# --------------------------------------------------------------------------- noise conventions

# Independent random streams for the different uses of one seed, so that e.g. the noisy evaluation
# inputs and the initial noises x_T drawn with the same seed are not the same numbers.
STREAMS = {"noisy_inputs": 1, "initial_noise": 2, "pairs": 3}


def seeded_normal(shape, seed: int, stream: str) -> torch.Tensor:
    """Standard normal float64 tensor of ``shape`` on the CPU, from a generator seeded by (``seed``,
    ``stream``) only: the same numbers on every machine and device, whatever the global RNG did."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {stream!r}")
    seed = as_seed(seed)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + STREAMS[stream] * 7_919 + 17)
    return torch.randn(tuple(int(s) for s in shape), generator=g, dtype=torch.float64)


class NoisyInputs:
    """The book's one convention for noisy evaluation inputs: x(sigma) = x_clean + sigma * eps.

    ``eps`` holds one standard-normal draw per image, fixed by ``seed`` and **shared by every sigma
    and every model**, so curves over sigma and comparisons between models differ only through the
    denoiser, never through the noise draw (the paper's code fixes its noises the same way).
    ``x_clean`` are usually held-out images (paper.md §4.4). ``at(sigma)`` is in x_clean's dtype and
    on its device; the sum is formed in float64.
    """

    def __init__(self, x_clean: torch.Tensor, seed: int = 0):
        from .checks import as_images
        as_images(x_clean, "x_clean")
        self.clean = x_clean
        self.seed = as_seed(seed)
        self.eps = seeded_normal(x_clean.shape, seed, "noisy_inputs")

    def __len__(self) -> int:
        return len(self.clean)

    def at(self, sigma: float) -> torch.Tensor:
        s = float(sigma)
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        x = self.clean.detach().cpu().to(torch.float64) + s * self.eps
        return x.to(self.clean.device, self.clean.dtype)


def image_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of dataset ``name`` without keeping it around."""
    return tuple(_load_split(name, "train").shape[1:])


# --------------------------------------------------------------------------- internals

def _load_split(name: str, split: str) -> torch.Tensor:
    if name.startswith("folder:"):
        images = _folder(name[len("folder:"):])
        return _partition(images, heldout_fraction=0.1)[split]
    if name == "digits":
        return _partition(_digits(), heldout_count=297)[split]
    if name == "patches":
        return _partition(_patches(), heldout_fraction=0.2)[split]
    if name == "mnist":
        return _mnist(split)
    if name == "cifar10":
        return _cifar10(split)
    raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")


def _partition(images: torch.Tensor, heldout_fraction: float = 0.0, heldout_count: int = 0) -> dict:
    """Split into fixed train / held-out parts (independent of the caller's seed)."""
    n_held = heldout_count or max(1, int(round(heldout_fraction * len(images))))
    if n_held >= len(images):
        raise ValueError(f"dataset has only {len(images)} images: too few for a held-out split")
    g = torch.Generator().manual_seed(_PARTITION_SEED)
    idx = torch.randperm(len(images), generator=g)
    return {"heldout": images[idx[:n_held]], "train": images[idx[n_held:]]}


def _to_tensor(uint_images: np.ndarray, max_value: float) -> torch.Tensor:
    """(N, C, H, W) integer array in [0, max_value] -> float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(uint_images)).to(torch.float32)
    return x / (max_value / 2.0) - 1.0


@lru_cache(maxsize=None)
def _digits() -> torch.Tensor:
    from sklearn.datasets import load_digits
    images = load_digits().images[:, None]            # (1797, 1, 8, 8), values 0..16
    return _to_tensor(images, 16.0)


@lru_cache(maxsize=None)
def _patches() -> torch.Tensor:
    """Non-overlapping grey PATCH_SIZE^2 patches of the photos shipped with skimage and sklearn."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [getattr(skimage.data, p)() for p in GREY_PHOTOS]
    photos += [getattr(skimage.data, p)() for p in COLOUR_PHOTOS]
    photos += list(load_sample_images().images)
    out = []
    for im in photos:
        im = np.asarray(im, dtype=np.float64)
        if im.ndim == 3:                              # ITU-R 601 luma
            im = im[..., :3] @ np.array([0.299, 0.587, 0.114])
        im = im / 255.0
        h, w = (s - s % PATCH_SIZE for s in im.shape)
        p = im[:h, :w].reshape(h // PATCH_SIZE, PATCH_SIZE, w // PATCH_SIZE, PATCH_SIZE)
        p = p.transpose(0, 2, 1, 3).reshape(-1, PATCH_SIZE, PATCH_SIZE)
        out.append(p[p.std(axis=(1, 2)) > PATCH_MIN_STD])
    patches = np.concatenate(out)[:, None]
    return torch.from_numpy(patches * 2.0 - 1.0).to(torch.float32)


# Pillow modes of 16-bit grey images (PNG): "I;16*" in recent Pillow, "I" (int32 holding 0..65535) in old.
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I")


def _read_image(f: Path) -> tuple[np.ndarray, float]:
    """One image file as an (H, W, C) integer array and its full-scale value: 16-bit grey -> (.., 1)
    with 65535; 8-bit grey ("L", "1") -> (.., 1) with 255; anything else (RGB, RGBA, palette,
    grey + alpha) -> RGB with 255 (alpha dropped)."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            if im.mode in _GREY16_MODES:
                a, top = np.asarray(im).astype(np.int64), 65535.0
                if a.min() < 0 or a.max() > top:
                    raise ValueError(f"folder dataset: {f} (mode {im.mode}) has values in [{a.min()}, {a.max()}], "
                                     f"outside the 16-bit range [0, 65535]")
            else:
                a, top = np.array(im.convert("L" if im.mode in ("L", "1") else "RGB")), 255.0
    except OSError as e:
        raise ValueError(f"folder dataset: cannot read image {f}: {e}") from e
    return (a[..., None] if a.ndim == 2 else a), top


def _folder(path: str) -> torch.Tensor:
    """Every png/jpg in ``path``, each scaled by its own bit depth (8-bit by 255, 16-bit by 65535)."""
    root = Path(path)
    if not path or not root.is_dir():
        raise ValueError(f"folder dataset: {path!r} is not a readable directory")
    files = sorted(f for f in root.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"folder dataset: no .png/.jpg images in {path!r}")
    images, sizes = [], {}
    for f in files:
        a, top = _read_image(f)
        sizes.setdefault(a.shape, f.name)
        images.append(_to_tensor(a.transpose(2, 0, 1)[None], top))
    if len(sizes) > 1:
        raise ValueError(f"folder dataset: images in {path!r} have mixed sizes (H, W, C): "
                         + ", ".join(f"{s} e.g. {n}" for s, n in sizes.items()))
    return torch.cat(images)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


DOWNLOAD_TIMEOUT = 60.0          # seconds without an answer before a download counts as failed


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download ``url`` to ``dest`` once and verify its md5 (a mismatch raises, the file is kept
    aside as ``*.bad`` so it is never silently used).

    When the download fails (no network, a proxy, a dead mirror) a ``ConnectionError`` says which
    file is missing, where it comes from and where to put it by hand (``dest``, under
    :func:`cache_dir`, which ``$HGB_DATA`` moves); a partial download is never left as ``dest``.
    """
    dest = Path(dest)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        print(f"downloading {url} -> {dest}")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (OSError, ValueError) as e:       # URLError, HTTPError, timeouts are OSErrors
            if tmp.exists():
                tmp.unlink()
            raise ConnectionError(
                f"could not download {dest.name} from {url} ({type(e).__name__}: {e}). This dataset is "
                f"downloaded once, on first use, and needs the network then. Without network: download "
                f"{url} on another machine and copy it to {dest} (md5 {md5}); the folder is "
                f"utils.data.cache_dir() = {cache_dir()}, which the environment variable HGB_DATA "
                f"changes.") from e
        os.replace(tmp, dest)
    got = _md5(dest)
    if got != md5:
        bad = dest.with_suffix(dest.suffix + ".bad")
        os.replace(dest, bad)
        raise ValueError(f"checksum mismatch for {dest.name}: md5 {got}, expected {md5}; "
                         f"moved the file to {bad}. Delete it and retry the download.")
    return dest


def read_idx_images(path: Path) -> np.ndarray:
    """Parse a gzipped IDX3 file (MNIST format) into a uint8 array (N, H, W)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, h, w = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051:
        raise ValueError(f"{path} is not an IDX3 image file (magic {magic}, expected 2051)")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(int(n), int(h), int(w))


def read_cifar10(archive: Path, split: str) -> np.ndarray:
    """Read the CIFAR-10 python archive: the 5 training batches (50,000) or the test batch."""
    members = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] if split == "train" \
        else ["cifar-10-batches-py/test_batch"]
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for m in members:
            batch = pickle.load(tar.extractfile(m), encoding="bytes")
            out.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return np.concatenate(out)


@lru_cache(maxsize=None)
def _mnist(split: str) -> torch.Tensor:
    stem = "train" if split == "train" else "t10k"
    name = f"{stem}-images-idx3-ubyte.gz"
    path = fetch(MNIST_URL + name, cache_dir() / "mnist" / name, expected_md5(name, MNIST_FILES[name]))
    images = np.pad(read_idx_images(path), ((0, 0), (2, 2), (2, 2)))[:, None]   # 28 -> 32
    return _to_tensor(images, 255.0)


@lru_cache(maxsize=None)
def _cifar10(split: str) -> torch.Tensor:
    name, md5 = CIFAR10_FILE
    path = fetch(CIFAR10_URL + name, cache_dir() / "cifar10" / name, expected_md5(name, md5))
    return _to_tensor(read_cifar10(path, split), 255.0)
