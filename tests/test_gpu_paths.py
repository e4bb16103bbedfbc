"""The GPU profiles' code paths, proven on a CPU (issues 17 and 23).

* Unit tests: ``auto`` picks ``colab`` on CUDA, ``colab`` / ``gpu`` without CUDA are a clear error
  unless opted in, the smoke budget keeps a profile's data and model and takes its sizes and steps
  from the smoke profile, a budgeted run asserts no claim, fake MNIST / CIFAR-10 files in the real
  formats go through the real loaders (md5 included), and the training-time estimate measures
  without caching.
* Every chapter notebook of _toc.yml executed by papermill at a GPU profile's data shapes, channel
  counts and U-Net structure, on the CPU (HGB_ALLOW_CPU=1) with the smoke budget (HGB_BUDGET=smoke),
  on fake files in the real formats; the chapters of one profile share one model cache, as on Colab
  with Drive:
  - at ``colab`` (fake MNIST 1x32x32, 32 channels): part of ``make test`` (marker ``colab_paths``), so
    CI runs the code path a Colab user takes on every build;
  - at ``gpu`` (fake CIFAR-10 3x32x32, 128 channels): on demand (``make test-gpu-paths``, marker
    ``gpu_paths``) and in the workflow's scheduled run.
  A chapter that fails at these shapes fails the test: there is no list of known gaps.
"""
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

import fake_data
from utils import book, chapters, data, profiles, train

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import book_pages  # noqa: E402
import run_notebooks  # noqa: E402
from notebook_selection import selected_params  # noqa: E402

GPU_PROFILES = ("colab", "gpu")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("HGB_ALLOW_CPU", raising=False)
    monkeypatch.delenv("HGB_BUDGET", raising=False)


# --------------------------------------------------------------------------- profiles

def test_auto_picks_colab_on_cuda_and_gpu_only_by_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("HGB_BUDGET", raising=False)
    p = profiles.resolve("auto")
    assert p.name == "colab" and p.device == "cuda" and p.budget == "full"
    assert profiles.resolve("gpu").device == "cuda"
    assert profiles.resolve("cpu").device == "cpu"


def test_cuda_profiles_without_cuda_are_an_error_unless_opted_in(no_cuda, monkeypatch):
    assert profiles.resolve("auto").name == "cpu"
    for name in GPU_PROFILES:
        with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*allow_cpu=True.*HGB_ALLOW_CPU=1"):
            profiles.resolve(name)
        with pytest.raises(RuntimeError, match="CUDA"):
            book.setup(name)
        assert profiles.resolve(name, allow_cpu=True).device == "cpu"
    monkeypatch.setenv("HGB_ALLOW_CPU", "1")
    assert profiles.resolve("gpu").device == "cpu"
    assert "opt-in" in book.header(profiles.resolve("gpu"), 0)
    with pytest.raises(RuntimeError):
        profiles.resolve("gpu", allow_cpu=False)


def test_run_notebooks_refuses_a_gpu_profile_without_cuda(no_cuda):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        run_notebooks.main(["--profile", "colab", "--only", book_pages.toc_notebooks(REPO)[0].stem])


def test_every_profile_has_a_block_for_every_chapter():
    for stem in chapters.CHAPTERS:
        assert set(chapters.module(stem).Settings.PROFILES) == set(profiles.NAMES), stem
    assert set(profiles._BASE) == set(profiles.NAMES)


def _ints(tree, path=()):
    """(path, value) of every integer-like leaf of a knob tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _ints(v, path + (k,))
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for i, v in enumerate(tree):
            yield from _ints(v, path + (i,))
    elif profiles._is_count(tree):
        yield path, tree


def _at(tree, path):
    for k in path:
        if isinstance(tree, list):
            tree = tree[min(k, len(tree) - 1)]
        elif isinstance(tree, dict) and k in tree:
            tree = tree[k]
        else:
            return None
    return tree


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_smoke_budget_keeps_data_and_model_and_takes_smoke_sizes(name, no_cuda):
    full = profiles.resolve(name, allow_cpu=True)
    cut = profiles.resolve(name, allow_cpu=True, budget="smoke")
    smoke = profiles.resolve("smoke")
    assert cut.name == name and cut.budget == "smoke"
    for f in ("dataset", "model_channels", "scales", "channel_mult", "num_blocks", "lr", "sigma_uniform_share",
              "sampler_steps"):
        assert getattr(cut, f) == getattr(full, f), f
    for f in ("train_sizes", "scale_n", "n_samples", "n_eval"):
        assert getattr(cut, f) == getattr(smoke, f), f
    # training: the smoke step counts divided by TRAIN_STEP_DIVISOR, rounded up; batches of BUDGET_BATCH
    up = lambda k: -(-k // profiles.TRAIN_STEP_DIVISOR)                                   # noqa: E731
    assert cut.train_steps == up(smoke.train_steps) and cut.batch_size == min(smoke.batch_size, profiles.BUDGET_BATCH)
    assert cut.snapshot_steps == tuple(sorted({up(k) for k in smoke.snapshot_steps}))
    assert max(cut.snapshot_steps) <= cut.train_steps
    train_keys = {"steps", "snapshot_steps", "lr_rampup_steps", "ema_halflife_steps", "batch_size"}
    for stem in chapters.CHAPTERS:
        S = chapters.module(stem).Settings
        knobs, small_knobs = S.for_profile(full).as_dict(), S.for_profile(smoke).as_dict()
        budgeted = S.for_profile(cut).as_dict()
        assert set(budgeted) == set(knobs), f"{stem}: the budget must keep the profile's keys"
        for path, value in _ints(knobs, (stem,)):
            small, got = _at({stem: small_knobs}, path), _at({stem: budgeted}, path)
            if set(path) & profiles.STRUCTURAL_KEYS:
                assert got == value, path                  # channel counts are never budgeted
            elif path[-1] in train_keys:
                assert got == profiles._cheaper_training(path[-1], small if profiles._is_count(small) else value)
            elif profiles._is_count(small):
                assert got == small, path
            else:
                assert got == value, path
        # floats, strings and switches (noise levels, ratios, dtypes, dataset names) stay the profile's
        for k, v in knobs.items():
            if isinstance(v, (float, str, bool)) or v is None:
                assert budgeted[k] == v, (stem, k)


def test_smoke_budget_from_the_environment_and_bad_values(no_cuda, monkeypatch):
    monkeypatch.setenv("HGB_BUDGET", "smoke")
    assert profiles.resolve("colab", allow_cpu=True).budget == "smoke"
    assert profiles.resolve("cpu").train_steps == -(-profiles._BASE["smoke"]["train_steps"] // profiles.TRAIN_STEP_DIVISOR)
    with pytest.raises(ValueError, match="budget must be one of"):
        profiles.resolve("cpu", budget="tiny")
    assert profiles._budgeted({"model_channels": 64, "n": 9, "s": 0.5, "on": True},
                              {"model_channels": 4, "n": 2, "s": 0.1, "on": False}) == \
        {"model_channels": 64, "n": 2, "s": 0.5, "on": True}


def test_a_budgeted_profile_asserts_no_claim(no_cuda, tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_RESULTS_DIR", str(tmp_path))
    failing = [book.Claim(id="ch9.c", kind="check", claim="c", paper="p", ours="o", passed=False)]
    book.record_claims("x", failing, profiles.resolve("gpu", allow_cpu=True, budget="smoke"))
    for name in ("colab", "gpu"):
        with pytest.raises(AssertionError, match="1 of 1 claims"):
            book.record_claims("x", failing, profiles.resolve(name, allow_cpu=True))
    assert json.loads((tmp_path / "x.json").read_text())[0]["profile"] == "gpu"


# --------------------------------------------------------------------------- fake data, real formats

@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    manifest = fake_data.write_all(tmp_path / "data")
    monkeypatch.setenv("HGB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HGB_DATA_CHECKSUMS", str(manifest))
    data._mnist.cache_clear()
    data._cifar10.cache_clear()
    yield tmp_path / "data"
    data._mnist.cache_clear()
    data._cifar10.cache_clear()


def test_fake_files_go_through_the_real_loaders(fake_dir):
    x = data.load("mnist")
    assert x.shape == (640, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert bool((x[:, :, :2] == -1).all())                          # zero-padded from 28 x 28
    assert data.load("mnist", split="heldout").shape == (160, 1, 32, 32)
    c = data.load("cifar10")
    assert c.shape == (640, 3, 32, 32) and data.load("cifar10", split="heldout").shape == (160, 3, 32, 32)
    assert data.image_shape("cifar10") == (3, 32, 32)


def test_checksums_are_still_verified(fake_dir, monkeypatch):
    manifest = json.loads((fake_dir / "checksums.json").read_text())
    manifest["cifar-10-python.tar.gz"] = hashlib.md5(b"not it").hexdigest()
    bad = fake_dir / "bad.json"
    bad.write_text(json.dumps(manifest))
    monkeypatch.setenv("HGB_DATA_CHECKSUMS", str(bad))
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load("cifar10")
    monkeypatch.delenv("HGB_DATA_CHECKSUMS")                       # the published sums: fakes fail
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load("mnist")
    bad.write_text("{}")
    monkeypatch.setenv("HGB_DATA_CHECKSUMS", str(bad))
    with pytest.raises(ValueError, match="lists no md5"):
        data.expected_md5("x.gz", "0" * 32)


# --------------------------------------------------------------------------- the training-time estimate

def _tiny(**kw):
    return dict(dict(dataset="digits", n=16, model_channels=4, channel_mult=[1, 2], steps=6, batch_size=4,
                     lr_rampup_steps=2, ema_halflife_steps=2.0, checkpoint_every=2), **kw)


def test_estimate_measures_on_the_device_without_caching(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    jobs = [_tiny(), _tiny(seed=1), _tiny(model_channels=8, snapshot_steps=[3])]
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    est = train.estimate(jobs, device="cpu", workers=1)
    assert torch.equal(torch.rand(4), expected)                     # the global random state is restored
    assert not (tmp_path / "art" / "models").exists() or not any((tmp_path / "art" / "models").iterdir())
    assert [r["steps"] for r in est["runs"]] == [6, 6, 6] and est["device"] == "cpu"
    assert est["runs"][0]["seconds_per_step"] == est["runs"][1]["seconds_per_step"] > 0   # one timing per kind
    assert est["total_seconds"] == pytest.approx(sum(r["seconds"] for r in est["runs"]))
    assert "training 3 of 3 runs on cpu" in est["text"] and "ms/step" in est["text"]
    assert train.estimate(jobs, device="cpu", workers=3)["total_seconds"] < est["total_seconds"]

    train.train(jobs[0], progress=False)                             # finished: not counted
    train.train(jobs[1], progress=False, stop_at=4)                  # interrupted at step 4: 2 left
    left = {r["key"]: r["steps"] for r in train.estimate(jobs, device="cpu")["runs"]}
    assert left == {train.spec_key(jobs[1]): 2, train.spec_key(jobs[2]): 6}


def test_train_many_prints_the_estimate_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    train.train_many([_tiny()], workers=1, device="cpu", progress=True)
    err_out = capsys.readouterr()
    assert "training 1 of 1 runs on cpu" in err_out.out
    train.train_many([_tiny()], workers=1, device="cpu", progress=True)   # cached: nothing to estimate
    assert "training" not in capsys.readouterr().out


def test_pending_runs_counts_distinct_uncached_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    jobs = [_tiny(), _tiny(), _tiny(seed=1)]
    assert train.pending_runs(jobs) == 2                                  # the duplicate counts once
    train.train(jobs[0], progress=False)
    assert train.pending_runs(jobs) == 1


def test_train_many_in_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "art"))
    jobs = [_tiny(), _tiny(seed=1), _tiny(seed=1)]
    folders = train.train_many(jobs, workers=2, progress=False, device="cpu")
    assert folders[1] == folders[2] != folders[0]
    assert all((f / "final.pt").exists() for f in folders) and train.pending_runs(jobs) == 0
    assert 1 <= train.usable_cores() <= (os.cpu_count() or 1)


# --------------------------------------------------------------------------- every chapter, GPU shapes

NOTEBOOKS = book_pages.toc_notebooks(REPO)
# colab shapes in every `make test`; the gpu shapes (128-channel CIFAR-10 U-Nets, ~1.6 s per image per
# optimizer step on one CPU thread) on demand. An affine fit at these shapes needs more noisy inputs
# than d (1,024 for MNIST, 3,072 for CIFAR-10): chapters derive the count from d, never from a fixed
# smoke-sized number.
CASES = [pytest.param("colab", p, marks=[pytest.mark.colab_paths, pytest.mark.notebooks], id=f"colab-{p.stem}")
         for p in NOTEBOOKS] + \
        [pytest.param("gpu", p, marks=pytest.mark.gpu_paths, id=f"gpu-{p.stem}") for p in NOTEBOOKS]


@pytest.fixture(scope="module")
def gpu_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-paths")
    manifest = fake_data.write_all(root / "data")
    saved = dict(os.environ)
    os.environ.update(HGB_DATA=str(root / "data"), HGB_DATA_CHECKSUMS=str(manifest), HGB_ALLOW_CPU="1",
                      HGB_BUDGET="smoke", HGB_RESULTS_DIR=str(root / "results"), JUPYTER_PATH="")
    run_notebooks.use_this_python_for_kernel()
    data._mnist.cache_clear()                       # this process trains on the fakes too (_prepare_models)
    data._cifar10.cache_clear()
    _PREPARED.clear()
    _EXECUTED.clear()
    yield root
    os.environ.clear()
    os.environ.update(saved)
    data._mnist.cache_clear()
    data._cifar10.cache_clear()


_PREPARED: dict = {}


def _prepare_models(profile):
    """Train every chapter's listed runs (``chapters.all_runs``) at ``profile`` under the smoke budget
    once, in this process, into the profile's shared cache -- as ``make book`` trains them
    (scripts/prepare_models.py) before the notebooks, which then load them. At the budget's few steps a
    run trains in about a second, while the worker processes a notebook's ``train_many`` would start
    cost seconds each to import torch; ``train_many``'s workers stay covered by the smoke-profile
    notebooks and tests/test_gpu_paths.py's unit tests. Runs a chapter trains beyond ``runs(P, seed)``
    are still trained by its notebook. Returns the seconds it took (recorded once per profile)."""
    if profile not in _PREPARED:
        t0 = time.perf_counter()
        P = profiles.resolve(profile, allow_cpu=True, budget="smoke")
        train.train_many(chapters.all_runs(P, 0), workers=1, progress=False, device="cpu")
        _PREPARED[profile] = time.perf_counter() - t0
    return _PREPARED[profile]


_EXECUTED: dict = {}


def _executed(profile, gpu_env, session) -> dict:
    """Every selected chapter of this test at ``profile`` executed once, side by side
    (``run_notebooks.execute_many``, as ``make book`` runs them), after ``_prepare_models``: stem -> record."""
    if profile not in _EXECUTED:
        os.environ["HGB_ARTIFACTS"] = str(gpu_env / f"artifacts-{profile}")      # shared by the chapters
        _prepare_models(profile)
        paths = selected_params(session, "test_chapter_runs_at_gpu_shapes_on_cpu", profile=profile)
        records = run_notebooks.execute_many([(p, gpu_env / "executed" / profile / p.name, profile) for p in paths],
                                             cell_timeout=1800, jobs=run_notebooks.default_jobs("smoke"))
        _EXECUTED[profile] = {p.stem: r for p, r in zip(paths, records)}
    return _EXECUTED[profile]


@pytest.mark.parametrize("profile, path", CASES)
def test_chapter_runs_at_gpu_shapes_on_cpu(path, profile, gpu_env, request):
    rec = _executed(profile, gpu_env, request.session)[path.stem]
    out = gpu_env / "executed" / profile / path.name
    assert rec["status"] == "ok", run_notebooks.describe_failure(path.stem, rec, out)
    ledger = json.loads((gpu_env / "results" / f"{path.stem}.json").read_text())
    assert {r["profile"] for r in ledger} == {profile}
    text = out.read_text()
    assert f"{profile} at the smoke budget" in text                           # setup's header
    assert ("opt-in" in text) != torch.cuda.is_available()                    # on a GPU machine: CUDA


def test_every_chapter_runs_at_colab_shapes_in_make_test():
    """The colab cases carry no marker that `make test` (addopts) deselects; the gpu ones do."""
    import tomllib
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "not gpu_paths" in addopts and "colab_paths" not in addopts and "notebooks" not in addopts
    colab = [c for c in CASES if c.values[0] == "colab"]
    assert [c.values[1] for c in colab] == NOTEBOOKS
    assert all(m.name != "gpu_paths" for c in colab for m in c.marks)
    assert all(any(m.name == "gpu_paths" for m in c.marks) for c in CASES if c.values[0] == "gpu")
