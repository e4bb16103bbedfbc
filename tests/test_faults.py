"""Fault injection: what a careful user (or an unlucky machine) does to the core, and what must happen.

Every row of issue 16's table is one or more tests here:

* processes killed (SIGKILL) during training and in the middle of writing a checkpoint or the final
  weights, then resumed: the result is bit-for-bit the uninterrupted run;
* two processes training the same spec at once: one waits for the other, both end with the same,
  correct model;
* truncated checkpoint / final / snapshot files: a clear error, the file is not overwritten;
* stale caches: a ``folder:`` dataset whose images change (even their size) and training images
  reshaped to another shape or channel count get new keys and the right models;
* denoisers that return NaN in the sampler, the metrics and distillation: an error that names the
  denoiser and sigma; extreme sigma in D_G / D_M;
* bad arguments (spec fields, seeds, numpy ints, image sizes, shapes): clear errors or acceptance.

Models are tiny (16 digits, 4 channels, a few dozen steps) and everything is written under pytest's
tmp_path, so each test takes seconds. Everything trains with one thread (the subprocesses and this
process alike), so results compare bit for bit, and tiny models do not wait on a busy second core.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import data, denoisers, distill, edm, metrics, nets, profiles, regimes, train

REPO = Path(__file__).resolve().parent.parent

SPEC = dict(dataset="digits", n=16, model_channels=4, channel_mult=[1, 2], steps=24, batch_size=8, lr=1e-3,
            lr_rampup_steps=4, ema_halflife_steps=2.0, checkpoint_every=5, snapshot_steps=[8, 16])


def _tiny(**kw):
    """A spec of a few steps, for tests that only need *a* trained model."""
    return {**SPEC, "steps": 3, "checkpoint_every": 100, "snapshot_steps": [], **kw}


@pytest.fixture(autouse=True)
def one_thread():
    """Train here with one thread, as the subprocesses do, so results compare bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of SPEC (one thread): final state and snapshots, loaded from disk; and
    its training images in a file, which the subprocesses pass as ``x_train`` (the same images give
    the same key, and the subprocesses need not import scikit-learn)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HGB_ARTIFACTS", str(root))
        folder = train.train(SPEC, progress=False)
        ref = _run_files(folder)
    torch.set_num_threads(before)
    s = train.normalize_spec(SPEC)
    x = data.load(s["dataset"], n=s["n"], seed=s["seed"])
    assert train.spec_key(SPEC, x) == train.spec_key(SPEC)
    torch.save(x, root / "x_train.pt")
    ref["x_train"] = str(root / "x_train.pt")
    return ref


def _run_files(folder: Path) -> dict:
    out = {"final": torch.load(folder / "final.pt", weights_only=False)}
    for k in SPEC["snapshot_steps"]:
        out[k] = torch.load(train._snapshot_path(folder, k), weights_only=False)
    return out


def _assert_same_run(folder: Path, ref: dict) -> None:
    got = _run_files(folder)
    for name in got:
        a, b = got[name]["ema"], ref[name]["ema"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert got["final"]["history"] == ref["final"]["history"]
    assert not list(folder.rglob("*.tmp")), "temporary files left behind"


# --------------------------------------------------------------------------- child processes

# A training process with optional faults: SIGKILL after a given step, or in the middle of the n-th
# write of a given file (half of the bytes written to the temporary file, then SIGKILL).
CHILD = r"""
import io, json, os, signal, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from utils import train

cfg = json.loads(sys.argv[1])

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if cfg.get("kill_after_step"):
    one_step = train._Trainer.one_step
    def killing_step(self):
        value = one_step(self)
        if self.step == cfg["kill_after_step"]:
            die()
        return value
    train._Trainer.one_step = killing_step

if cfg.get("kill_writing"):
    target, nth = cfg["kill_writing"]
    save, seen = torch.save, [0]
    def killing_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)) and f".{target}." in Path(f).name:
            seen[0] += 1
            if seen[0] == nth:
                buf = io.BytesIO()
                save(obj, buf, *args, **kwargs)
                Path(f).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
                die()
        return save(obj, f, *args, **kwargs)
    torch.save = killing_save

x_train = torch.load(cfg["x_train"]) if cfg.get("x_train") else None
if cfg.get("go"):                      # a start line, so that two processes start training together
    train.spec_key(cfg["spec"], x_train)
    Path(cfg["ready"]).touch()
    while not Path(cfg["go"]).exists():
        time.sleep(0.002)

train.get_model(cfg["spec"], x_train, progress=False)
print("finished", flush=True)
"""


def _child_env(artifacts: Path) -> dict:
    env = dict(os.environ, HGB_ARTIFACTS=str(artifacts), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _child(artifacts: Path, **cfg) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], env=_child_env(artifacts),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _run_child(artifacts: Path, **cfg) -> tuple[int, str]:
    proc = _child(artifacts, **cfg)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


# --------------------------------------------------------------------------- killed processes

def test_sigkill_during_training_then_resume_is_bit_for_bit(tmp_path, monkeypatch, reference):
    rc, out = _run_child(tmp_path, spec=SPEC, x_train=reference["x_train"], kill_after_step=13)
    assert rc == -signal.SIGKILL, out
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    folder = train.run_dir(SPEC)
    assert not (folder / "final.pt").exists()
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["step"] == 10     # the last checkpoint
    model = train.get_model(SPEC, progress=False)                                      # resumes at step 10
    assert model.step == SPEC["steps"]
    _assert_same_run(folder, reference)


@pytest.mark.parametrize("target, nth, step_on_disk", [("checkpoint.pt", 3, 10), ("final.pt", 1, 24)])
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, reference,
                                                                   target, nth, step_on_disk):
    """Killed half-way through writing ``target``: the previous checkpoint is intact, the partial
    file is a temporary one (removed on resume), and the resumed run is the uninterrupted one."""
    rc, out = _run_child(tmp_path, spec=SPEC, x_train=reference["x_train"], kill_writing=[target, nth])
    assert rc == -signal.SIGKILL, out
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    folder = train.run_dir(SPEC)
    assert not (folder / "final.pt").exists()
    assert len(list(folder.glob(f".{target}.*.tmp"))) == 1                  # the half-written file
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["step"] == step_on_disk
    train.get_model(SPEC, progress=False)
    _assert_same_run(folder, reference)


def test_two_concurrent_trainers_of_one_spec(tmp_path, monkeypatch, capsys, reference):
    """Two processes (a subprocess and this one) start training the same spec at the same moment:
    one trains, the other waits for the lock and then loads the finished run; both succeed, and the
    model is the right one. This process nearly always reaches the lock first (the child polls for
    the start file); its steps are slowed (a sleep changes no number) so that the child surely
    arrives while it trains, even on a busy machine."""
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    one_step = train._Trainer.one_step

    def slow_step(self):
        time.sleep(0.05)
        return one_step(self)
    monkeypatch.setattr(train._Trainer, "one_step", slow_step)
    go, ready = tmp_path / "go", tmp_path / "ready"
    proc = _child(tmp_path / "art", spec=SPEC, x_train=reference["x_train"], ready=str(ready), go=str(go))
    train.spec_key(SPEC)                                   # data loaded and hashed before the start
    deadline = time.time() + 120
    while not ready.exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.002)
    go.touch()
    here = train.get_model(SPEC, progress=False)
    out = proc.communicate(timeout=300)[0] + capsys.readouterr().out
    assert proc.returncode == 0 and "finished" in out, out
    assert out.count("waiting for another process") == 1, out
    assert len(list((tmp_path / "art" / "models").iterdir())) == 1
    _assert_same_run(here.run_dir, reference)
    assert torch.equal(here.net.conv_out.weight, reference["final"]["ema"]["net.conv_out.weight"])


# --------------------------------------------------------------------------- damaged files

def _truncate(path: Path) -> bytes:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.read_bytes()


def test_truncated_checkpoint_is_a_clear_error_and_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    spec = _tiny(steps=6, checkpoint_every=2)
    folder = train.train(spec, progress=False, stop_at=4)
    damaged = _truncate(folder / "checkpoint.pt")
    with pytest.raises(RuntimeError, match=r"checkpoint\.pt is corrupt.*not overwritten"):
        train.get_model(spec, progress=False)
    assert (folder / "checkpoint.pt").read_bytes() == damaged
    assert not (folder / "final.pt").exists()


def test_truncated_final_and_snapshot_are_clear_errors_and_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    spec = _tiny(steps=4, snapshot_steps=[2])
    folder = train.train(spec, progress=False)
    snap = _truncate(train._snapshot_path(folder, 2))
    with pytest.raises(RuntimeError, match=r"ema-00000002\.pt is corrupt"):
        train.get_model(spec, step=2, progress=False)
    final = _truncate(folder / "final.pt")
    with pytest.raises(RuntimeError, match=r"final\.pt is corrupt.*delete it"):
        train.get_model(spec, progress=False)
    assert (folder / "final.pt").read_bytes() == final
    assert train._snapshot_path(folder, 2).read_bytes() == snap


# --------------------------------------------------------------------------- stale caches

def _write_pngs(folder: Path, size: int, seed: int, count: int = 12) -> None:
    from PIL import Image
    folder.mkdir(exist_ok=True)
    for f in folder.glob("*.png"):
        f.unlink()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def test_folder_dataset_whose_images_change_gets_a_new_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    images = tmp_path / "images"
    spec = _tiny(dataset=f"folder:{images}", n=None)
    _write_pngs(images, 8, seed=0)
    first = train.get_model(spec, progress=False)
    _write_pngs(images, 8, seed=1)                       # same size, other pixels
    second = train.get_model(spec, progress=False)
    _write_pngs(images, 16, seed=0)                      # other size
    third = train.get_model(spec, progress=False)
    assert len({first.run_dir, second.run_dir, third.run_dir}) == 3
    assert (first.net.img_resolution, second.net.img_resolution, third.net.img_resolution) == (8, 8, 16)
    assert third(torch.zeros(2, 1, 16, 16), 1.0).shape == (2, 1, 16, 16)
    _write_pngs(images, 8, seed=0)                       # back to the first images: the first model
    assert train.get_model(spec, progress=False).run_dir == first.run_dir
    saved = json.loads((third.run_dir / "spec.json").read_text())["data"]
    assert saved["shape"] == [11, 1, 16, 16]


def test_reshaped_training_images_get_their_own_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    x = data.load("digits", n=16, seed=0)
    spec = _tiny()
    shapes = [(16, 1, 8, 8), (4, 1, 16, 16), (16, 4, 4, 4)]
    keys = [train.spec_key(spec, x.reshape(s)) for s in shapes]
    assert len(set(keys)) == 3 and keys[0] == train.spec_key(spec)     # the same images: the same key
    for s in shapes:
        model = train.get_model(spec, x_train=x.reshape(s), progress=False)
        assert (model.net.img_channels, model.net.img_resolution) == (s[1], s[2])
        assert model(torch.zeros(2, *s[1:]), 0.5).shape == (2, *s[1:])


def test_equal_settings_written_differently_share_a_key():
    a = train.spec_key(_tiny())
    assert train.spec_key(_tiny(lr=np.float64(1e-3), ema_halflife_steps=2, steps=3.0)) == a
    assert train.spec_key(_tiny(seed=np.int64(0), n=np.int32(16), channel_mult=(1, np.int64(2)))) == a
    assert train.spec_key(_tiny(checkpoint_every=7, snapshot_steps=[1])) == a        # not in the key


# --------------------------------------------------------------------------- bad specs and arguments

@pytest.mark.parametrize("field, value, err", [
    ("ema_halflife_steps", 0, ValueError), ("ema_halflife_steps", -5.0, ValueError),
    ("ema_rampup_ratio", 0.0, ValueError), ("ema_rampup_ratio", -0.1, ValueError),
    ("dropout", 2, ValueError), ("dropout", -0.1, ValueError),
    ("seed", None, TypeError), ("seed", -1, ValueError), ("seed", 1.5, ValueError),
    ("lr", "2e-3", TypeError), ("lr", 0.0, ValueError), ("lr", float("nan"), ValueError),
    ("steps", "10", TypeError), ("batch_size", 0, ValueError), ("channel_mult", 2, TypeError),
    ("snapshot_steps", 5, TypeError), ("dae_sigma", 0.5, ValueError), ("arch", "resnet", ValueError),
])
def test_bad_spec_fields_name_the_field(field, value, err):
    with pytest.raises(err, match=field):
        train.normalize_spec(_tiny(**{field: value}))


def test_failed_training_leaves_no_run_folder(tmp_path, monkeypatch):
    """A U-Net that cannot halve 6x6 three times fails at construction, with the sizes in the message,
    and the run folder it had created is removed."""
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    x = torch.rand(8, 1, 6, 6) * 2 - 1
    with pytest.raises(ValueError, match="img_resolution = 6 must be divisible"):
        train.get_model(_tiny(channel_mult=[1, 2, 2]), x_train=x, progress=False)
    assert not any((tmp_path / "models").iterdir())


def test_a_waiting_trainer_survives_the_removal_of_a_failed_run_folder(tmp_path):
    """The lock holder's run fails and removes the folder while another trainer waits for its lock:
    the waiting one then holds a lock on a new folder (not on the removed file)."""
    import threading
    folder = tmp_path / "run"
    entered, removed = threading.Event(), threading.Event()

    def failing_holder():
        with train._locked(folder):
            entered.set()
            time.sleep(0.3)                               # the main thread is waiting by now
            import shutil
            shutil.rmtree(folder)
            removed.set()                                 # still holding the (removed) lock file

    holder = threading.Thread(target=failing_holder)
    holder.start()
    assert entered.wait(10)
    with train._locked(folder):
        assert removed.is_set() and (folder / "lock").exists()
        import fcntl
        with open(folder / "lock") as other, pytest.raises(BlockingIOError):      # really locked
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.join()


def test_unet_input_it_was_not_built_for():
    with pytest.raises(ValueError, match="divisible"):
        nets.UNet(6, 1, 4, (1, 2, 2))
    net = nets.UNet(8, 1, 4, (1, 2))
    D = edm.EDMPrecond(net)
    for shape in [(2, 1, 7, 7), (2, 1, 6, 6), (2, 3, 8, 8)]:
        with pytest.raises(ValueError, match=r"built for"):
            D(torch.zeros(shape), 1.0)                                    # the denoiser
        with pytest.raises(ValueError, match=r"built for images \(B, 1, 8, 8\)"):
            net(torch.zeros(shape), torch.zeros(2))                       # the raw network


def test_load_seeds_and_numpy_ints():
    with pytest.raises(TypeError, match="seed must be an int"):
        data.load("digits", n=4, seed=None)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        data.load("digits", n=4, seed=-1)
    with pytest.raises(TypeError, match="n must be a positive int"):
        data.load("digits", n=4.0)
    assert torch.equal(data.load("digits", n=np.int64(5), seed=np.int32(3)), data.load("digits", n=5, seed=3))
    x = data.load("digits", n=8)
    with pytest.raises(TypeError, match="seed must be an int"):
        data.NoisyInputs(x, seed=None)
    assert torch.equal(data.NoisyInputs(x, np.int64(2)).at(0.5), data.NoisyInputs(x, 2).at(0.5))
    assert edm.initial_noise(np.int64(2), (1, 8, 8), seed=np.int64(1)).shape == (2, 1, 8, 8)
    assert denoisers.apply(lambda z, s: z, x, np.float32(0.5), batch_size=np.int64(3)).shape == x.shape
    with pytest.raises(TypeError, match="seed must be an int"):
        distill.fit_affine(lambda z, s: z, x, 0.5, n_noise=16, seed=None)


def test_sigma_grids_and_image_shapes_are_checked_at_the_door():
    x = data.load("digits", n=8)
    DG = denoisers.GaussianDenoiser.fit(x)
    for call in (lambda s: metrics.rmse_curves({"a": (DG, DG)}, x, s), lambda s: metrics.linearity_curves(DG, x, s),
                 lambda s: distill.distill_grid(DG, x, s, n_noise=2), lambda s: edm.sample(DG, x, s)):
        with pytest.raises(ValueError, match="sigmas must hold at least one noise level"):
            call([])
        with pytest.raises(ValueError, match=r"sigmas must be finite values > 0"):
            call([1.0, float("nan")])
        with pytest.raises(TypeError, match="sigmas must be a sequence of noise levels"):
            call("1.0")
    with pytest.raises(ValueError, match="no trailing 0"):
        edm.sample(DG, x, [1.0, 0.0])
    grid = np.array([1.0, 0.5])
    assert np.array_equal(metrics.rmse_curves({"a": (DG, DG)}, x, grid)["a"],
                          metrics.rmse_curves({"a": (DG, DG)}, x, [torch.tensor(1.0), 0.5])["a"])
    for shape in (64, (8, 8), (1, 8, 8.0), "1x8x8"):
        with pytest.raises(TypeError, match=r"shape must be the image shape \(C, H, W\)"):
            edm.initial_noise(2, shape)
    assert edm.initial_noise(2, x.shape[1:]).shape == edm.initial_noise(2, np.array([1, 8, 8])).shape


def test_more_public_arguments_are_checked():
    x = data.load("digits", n=8)
    with pytest.raises(TypeError, match=r"denoiser must be callable as D\(x, sigma\), got int"):
        denoisers.apply(42, x, 1.0)
    with pytest.raises(TypeError, match="alpha must be a finite number"):
        metrics.linearity_score(lambda z, s: z, x[:4], x[4:], 0.5, alpha="0.7")
    with pytest.raises(TypeError, match="beta must be a finite number"):
        metrics.linearity_score(lambda z, s: z, x[:4], x[4:], 0.5, beta=float("nan"))
    with pytest.raises(ValueError, match="eigvals must be finite"):
        regimes.from_eigvals([1.0, float("nan")])
    with pytest.raises(ValueError, match="finite eigenvalues"):
        distill.optimal_gd_lr(torch.tensor([1.0, float("nan")]), 0.5)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        train.train_many([_tiny()], workers=0, progress=False)
    with pytest.raises(TypeError, match="threads_per_worker must be a positive int"):
        train.train_many([_tiny()], threads_per_worker=1.5, progress=False)


def test_affine_denoiser_shape_and_profile_hash():
    with pytest.raises(TypeError, match="shape must be the image shape"):
        denoisers.AffineDenoiser(torch.eye(64), torch.zeros(64), shape=64)
    P, Q = profiles.resolve("smoke"), profiles.resolve("smoke")
    assert hash(P) == hash(Q) and {P: 1}[Q] == 1


# --------------------------------------------------------------------------- data files

def test_16_bit_grey_pngs_are_scaled_by_their_bit_depth(tmp_path):
    from PIL import Image
    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    for i in range(10):
        Image.fromarray(values).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    x = data.load(f"folder:{tmp_path}")
    assert x.shape == (9, 1, 8, 8)
    expect = torch.from_numpy(values.astype(np.float32)) / 32767.5 - 1
    assert torch.equal(x[0, 0], expect)
    assert x.min() == -1 and x.max() == 1 and len(torch.unique(x)) == 64          # not clipped at 255


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3), ("RGBA", 3), ("P", 3)])
def test_8_bit_pngs_still_load(tmp_path, mode, channels):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(10):
        a = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
        im = Image.fromarray(a, "RGBA").convert(mode if mode != "P" else "RGB").convert(mode)
        im.save(tmp_path / f"{i}.png")
    x = data.load(f"folder:{tmp_path}")
    assert x.shape == (9, channels, 8, 8) and x.min() >= -1 and x.max() <= 1
    ref = np.asarray(Image.open(sorted(tmp_path.glob("*.png"))[0]).convert("L" if channels == 1 else "RGB"))
    first = data._folder(str(tmp_path))[0]
    assert torch.equal(first, torch.from_numpy(ref.reshape(8, 8, channels).transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_offline_download_says_what_to_fetch_and_where(tmp_path, monkeypatch, name):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("HGB_DATA", str(tmp_path))
    data._mnist.cache_clear()
    data._cifar10.cache_clear()
    file, url = (("train-images-idx3-ubyte.gz", data.MNIST_URL) if name == "mnist"
                 else (data.CIFAR10_FILE[0], data.CIFAR10_URL))
    with pytest.raises(ConnectionError) as info:
        data.load(name, n=4)
    msg = str(info.value)
    for part in (file, url + file, str(tmp_path / name / file), "HGB_DATA", "cache_dir()", "URLError"):
        assert part in msg, part
    assert not list(tmp_path.rglob("*.part")) and not (tmp_path / name / file).exists()


def test_a_file_put_by_hand_where_the_message_says_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    monkeypatch.setenv("HGB_DATA", str(tmp_path))
    data._mnist.cache_clear()
    imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    blob = gzip.compress(np.array([2051, 5, 28, 28], dtype=">u4").tobytes() + imgs.tobytes())
    name = "train-images-idx3-ubyte.gz"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / name).write_bytes(blob)
    monkeypatch.setitem(data.MNIST_FILES, name, hashlib.md5(blob).hexdigest())
    try:
        x = data.load("mnist")
    finally:
        data._mnist.cache_clear()
    assert x.shape == (5, 1, 32, 32) and x[:, :, :2].eq(-1).all()


# --------------------------------------------------------------------------- no silent NaN

class BrokenNet:
    """A denoiser that returns NaN below sigma = 1 (a diverged network, say)."""
    name = "broken-net"

    def __call__(self, x, sigma):
        s = float(sigma) if not isinstance(sigma, torch.Tensor) else float(sigma.flatten()[0])
        return x * 0.5 if s >= 1 else torch.full_like(x, float("nan"))


NAMED = r"denoiser broken-net returned non-finite values .* at sigma = 0\.5\b"


def test_sampler_refuses_nan(tmp_path):
    x_T = edm.initial_noise(3, (1, 8, 8), seed=0, sigma_max=2.0)
    for solver in edm.SOLVERS:
        with pytest.raises(ValueError, match=NAMED):
            edm.sample(BrokenNet(), x_T, [2.0, 0.5], solver=solver)
    with pytest.raises(ValueError, match=NAMED):
        edm.sample_many({"ok": lambda x, s: x * 0, "broken": BrokenNet()}, x_T, [2.0, 0.5])


def test_metrics_refuse_nan():
    x = data.load("digits", n=8, seed=0)
    ok = lambda z, s: z * 0.9                                                     # noqa: E731
    with pytest.raises(ValueError, match=NAMED):
        metrics.rmse_curves({"pair": (ok, BrokenNet())}, x, [2.0, 0.5])
    with pytest.raises(ValueError, match=NAMED):
        metrics.rmse_curves({"pair": (ok, BrokenNet())}, x, [2.0, 0.5], metric="nmse", per_input=True)
    for f in (metrics.rmse, metrics.nmse):
        with pytest.raises(ValueError, match=NAMED):
            f(BrokenNet(), ok, x, 0.5)
    with pytest.raises(ValueError, match=NAMED):
        metrics.linearity_curves(BrokenNet(), x, [2.0, 0.5])
    with pytest.raises(ValueError, match=NAMED):
        metrics.linearity_score(BrokenNet(), x[:4], x[4:], 0.5)
    nan_W = torch.full((4, 4), float("nan"))
    for f in (metrics.weight_nmse, lambda a, b: metrics.singular_vector_alignment(a, b, 2),
              lambda a, b: metrics.singular_alignment(a, b, 2)):
        with pytest.raises(ValueError, match="non-finite"):
            f(nan_W, torch.eye(4))
        with pytest.raises(ValueError, match="non-finite"):
            f(torch.eye(4), nan_W)
    with pytest.raises(ValueError, match="W_ref is all zeros"):
        metrics.weight_nmse(torch.eye(4), torch.zeros(4, 4))


def test_distillation_blames_the_teacher():
    x = data.load("digits", n=16, seed=0)
    with pytest.raises(ValueError, match=NAMED):
        distill.fit_affine(BrokenNet(), x, 0.5, n_noise=8)
    with pytest.raises(ValueError, match=NAMED):
        distill.fit_affine_adam(BrokenNet(), x, 0.5, epochs=1)
    with pytest.raises(ValueError, match=NAMED):
        distill.distill_grid(BrokenNet(), x, [2.0, 0.5], n_noise=8)

    class Cropping:
        name = "cropping-net"

        def __call__(self, z, sigma):
            return z[..., :4]
    with pytest.raises(ValueError, match=r"denoiser cropping-net returned shape .* at sigma = 0\.5"):
        distill.fit_affine(Cropping(), x, 0.5, n_noise=8)


def test_a_trained_network_with_nan_weights_is_named():
    D = train.build_denoiser(_tiny(), (1, 8, 8))
    D.name = "unet n=16 ch=4"
    with torch.no_grad():
        D.net.conv_out.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"denoiser unet n=16 ch=4 returned non-finite values .* sigma = 80"):
        edm.sample(D, edm.initial_noise(2, (1, 8, 8)), edm.sigma_steps(3))


def test_closed_form_denoisers_at_extreme_sigma():
    x = data.load("digits", n=32, seed=0)
    q = x[:4] + 1e-3 * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    DG, DM = denoisers.GaussianDenoiser.fit(x), denoisers.EmpiricalDenoiser(x)
    for sigma in (1e-160, 1e-200, 1e-300, 1e150):
        assert torch.isfinite(DG(q, sigma)).all() and torch.isfinite(DM(q, sigma)).all()
    assert torch.allclose(DM(q, 1e-200), x[:4])                  # sigma -> 0: the nearest training image
    assert torch.allclose(DG(q, 1e-200), DG(q, 1e-12), atol=1e-6)  # sigma -> 0: the projection, continuous
    assert torch.isfinite(edm.sample(DM, q * 0 + 1.0, [1.0, 1e-200])).all()
