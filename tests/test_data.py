import gzip
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from utils import data


def test_digits_splits_are_disjoint_and_scaled():
    tr, ho = data.load("digits"), data.load("digits", split="heldout")
    assert tr.shape == (1500, 1, 8, 8) and ho.shape == (297, 1, 8, 8) and tr.dtype == torch.float32
    assert tr.min() >= -1 and tr.max() <= 1 and tr.max() == 1
    flat_tr = {tuple(r) for r in tr.reshape(len(tr), -1).tolist()}
    overlap = sum(tuple(r) in flat_tr for r in ho.reshape(len(ho), -1).tolist())
    assert overlap <= 3          # only exact duplicate digits present in sklearn's data itself


def test_subsets_are_seeded():
    a, b, c = data.load("digits", n=20, seed=1), data.load("digits", n=20, seed=1), data.load("digits", n=20, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the partition does not depend on the seed: every subset comes from the train split
    full = data.load("digits")
    assert all((full == img).flatten(1).all(1).any() for img in c)


def test_patches():
    p = data.load("patches", n=50, seed=0)
    assert p.shape == (50, 1, 16, 16) and p.min() >= -1 and p.max() <= 1
    assert (p.flatten(1).std(1) > 0).all()


def test_disjoint_splits():
    x = torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2)
    a, b = data.disjoint_splits(x, 5, seed=0)
    ids_a, ids_b = set(a[:, 0, 0, 0].tolist()), set(b[:, 0, 0, 0].tolist())
    assert len(ids_a) == 5 and not ids_a & ids_b
    with pytest.raises(ValueError, match="maximum n is 5"):
        data.disjoint_splits(x, 6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="imagenet"), "valid names"),
    (dict(name="digits", n=5000), "maximum n is 1500"),
    (dict(name="digits", n=0), "positive"),
    (dict(name="digits", split="test"), "split"),
    (dict(name="folder:/nonexistent/dir"), "not a readable directory"),
])
def test_bad_names_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)


def test_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    x = data.load(f"folder:{tmp_path}")
    h = data.load(f"folder:{tmp_path}", split="heldout")
    assert x.shape == (18, 3, 8, 8) and h.shape == (2, 3, 8, 8)
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="mixed sizes"):
        data._folder(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        data.load(f"folder:{tmp_path / 'empty'}")


def test_idx_and_cifar_parsers_on_fake_files(tmp_path):
    """The gpu datasets' parsers, tested offline on fake files of the real formats and shapes."""
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    header = np.array([2051, 5, 28, 28], dtype=">u4").tobytes()
    with gzip.open(tmp_path / "img.gz", "wb") as f:
        f.write(header + imgs.tobytes())
    assert np.array_equal(data.read_idx_images(tmp_path / "img.gz"), imgs)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(np.array([2049, 5, 28, 28], dtype=">u4").tobytes())
    with pytest.raises(ValueError, match="IDX3"):
        data.read_idx_images(tmp_path / "bad.gz")

    archive = tmp_path / "cifar.tar.gz"
    batches = {}
    with tarfile.open(archive, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            arr = np.random.default_rng(len(name)).integers(0, 256, (4, 3072), dtype=np.uint8)
            batches[name] = arr
            blob = pickle.dumps({b"data": arr, b"labels": [0] * 4})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    train = data.read_cifar10(archive, "train")
    assert train.shape == (20, 3, 32, 32)
    assert np.array_equal(train[:4].reshape(4, -1), batches["data_batch_1"])
    assert data.read_cifar10(archive, "heldout").shape == (4, 3, 32, 32)


def test_fetch_verifies_checksum(tmp_path):
    f = tmp_path / "file.bin"
    f.write_bytes(b"hello")
    assert data.fetch("http://unused", f, "5d41402abc4b2a76b9719d911017c592") == f   # md5("hello")
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.fetch("http://unused", f, "0" * 32)
    assert not f.exists() and f.with_suffix(".bin.bad").exists()


def test_downsample_average_pools():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    y = data.downsample(x, 2)
    assert y.shape == (2, 1, 2, 2)
    assert y[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert torch.equal(data.downsample(x, 1), x)
    p = data.downsample(data.load("patches", n=5), 2)
    assert p.shape == (5, 1, 8, 8) and p.min() >= -1 and p.max() <= 1
    with pytest.raises(ValueError, match="multiple"):
        data.downsample(x, 3)
