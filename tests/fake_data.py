"""Small fake MNIST and CIFAR-10 files in the real formats, for testing the GPU profiles on a CPU.

The files are what ``utils.data`` downloads, only smaller: MNIST as gzipped IDX3 images and IDX1
labels (``train-images-idx3-ubyte.gz`` ...), CIFAR-10 as ``cifar-10-python.tar.gz`` holding the
pickled batches ``cifar-10-batches-py/data_batch_1..5`` and ``test_batch``. The images are smooth
random fields (a coarse random grid, upsampled, plus a little noise), so their covariance has a
decaying spectrum like real images; no claim is measured on them.

The loaders verify every file's md5 against the published sums; :func:`write_all` writes the fake
files' own sums into a JSON manifest, which ``HGB_DATA_CHECKSUMS`` hands to
``utils.data.expected_md5``: the verification still runs, against sums declared for test data.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def smooth_images(n: int, channels: int, size: int, seed: int, coarse: int = 4) -> np.ndarray:
    """``n`` uint8 images (n, channels, size, size): a coarse x coarse random grid upsampled, plus noise."""
    rng = np.random.default_rng(seed)
    grid = rng.normal(0.0, 1.0, (n, channels, coarse, coarse))
    up = np.kron(grid, np.ones((size // coarse, size // coarse)))
    x = 0.5 + 0.25 * up + 0.05 * rng.normal(size=up.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()


# The real MNIST's sizes (train / t10k): what scripts/gpu_check.py writes, so that every training-set
# size of the colab profile (up to 16,384 and the halves of chapter 5) can be drawn from the fakes.
MNIST_FULL = (60_000, 10_000)
_CHUNK = 5_000                       # images generated at a time (bounds the float64 temporaries)


def write_mnist(root: Path, n_train: int = 640, n_test: int = 160, seed: int = 0, compresslevel: int = 9) -> list[Path]:
    """``root/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` with 28 x 28 images (generated in
    chunks, so the real sizes, :data:`MNIST_FULL`, take a few seconds; ``compresslevel=1`` for speed)."""
    folder = Path(root) / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (stem, n) in enumerate((("train", n_train), ("t10k", n_test))):
        if n <= _CHUNK:
            images = smooth_images(n, 1, 28, seed + i, coarse=7)[:, 0]
        else:
            images = np.concatenate([smooth_images(min(_CHUNK, n - k), 1, 28, seed + i + 1000 * (k // _CHUNK + 1),
                                                   coarse=7)[:, 0] for k in range(0, n, _CHUNK)])
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, magic, array in (("images-idx3", 2051, images), ("labels-idx1", 2049, labels)):
            path = folder / f"{stem}-{kind}-ubyte.gz"
            path.write_bytes(gzip.compress(_idx(magic, array), compresslevel=compresslevel, mtime=0))
            out.append(path)
    return out


def write_cifar10(root: Path, per_batch: int = 128, n_test: int = 160, seed: int = 0) -> list[Path]:
    """``root/cifar10/cifar-10-python.tar.gz``: 5 training batches of ``per_batch`` and a test batch."""
    folder = Path(root) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    members = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": n_test}
    with tarfile.open(path, "w:gz") as tar:
        for i, (name, n) in enumerate(members.items()):
            images = smooth_images(n, 3, 32, seed + 10 + i)
            batch = {b"batch_label": name.encode(), b"labels": [int(k) % 10 for k in range(n)],
                     b"data": images.reshape(n, 3 * 32 * 32), b"filenames": [f"{k}.png".encode() for k in range(n)]}
            blob = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return [path]


def write_manifest(root: Path, files) -> Path:
    """``root/checksums.json``: the md5 of every file of ``files`` by name (``HGB_DATA_CHECKSUMS``)."""
    sums = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in files}
    manifest = Path(root) / "checksums.json"
    manifest.write_text(json.dumps(sums, indent=1))
    return manifest


def write_all(root: Path, seed: int = 0) -> Path:
    """Write fake MNIST and CIFAR-10 into ``root`` (use it as ``HGB_DATA``) and their md5 sums into
    ``root/checksums.json`` (use it as ``HGB_DATA_CHECKSUMS``); returns the manifest's path."""
    return write_manifest(root, write_mnist(root, seed=seed) + write_cifar10(root, seed=seed))


def write_full_mnist(root: Path, seed: int = 0) -> Path:
    """Fake MNIST at the real sizes (:data:`MNIST_FULL`) and its manifest; returns the manifest's path."""
    return write_manifest(root, write_mnist(root, *MNIST_FULL, seed=seed, compresslevel=1))
