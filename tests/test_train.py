import pytest
import torch

from utils import train


def _spec(**kw):
    s = dict(dataset="digits", n=16, model_channels=4, channel_mult=[1, 2], steps=12, batch_size=8,
             lr=1e-3, lr_rampup_steps=4, ema_halflife_steps=2.0, checkpoint_every=3, snapshot_steps=[4, 8])
    s.update(kw)
    return s


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "a"))
    full = train.get_model(_spec(), progress=False)
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "b"))
    folder = train.train(_spec(), progress=False, stop_at=7)     # "disconnect" after 7 steps
    assert not (folder / "final.pt").exists() and (folder / "checkpoint.pt").exists()
    resumed = train.get_model(_spec(), progress=False)
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert full.history["loss"] == resumed.history["loss"]
    assert len(full.history["loss"]) == 12


def test_cache_and_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    a = train.get_model(_spec(), progress=False)
    folder = train.run_dir(_spec())
    mtime = (folder / "final.pt").stat().st_mtime
    b = train.get_model(_spec(), progress=False)                  # loaded, not retrained
    assert (folder / "final.pt").stat().st_mtime == mtime
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    snap = train.get_model(_spec(), step=4, progress=False)
    assert snap.step == 4 and not all(torch.equal(p, q) for p, q in zip(a.parameters(), snap.parameters()))
    with pytest.raises(ValueError, match="snapshot"):
        train.get_model(_spec(), step=5, progress=False)
    out = a(torch.zeros(2, 1, 8, 8), 1.0)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    loader = train.snapshots(_spec(), progress=False)                 # the chapters' snapshot mapping
    assert list(loader) == sorted(set(_spec()["snapshot_steps"]) | {_spec()["steps"]}) and len(loader) >= 2
    assert all(torch.equal(p, q) for p, q in zip(loader[4].parameters(), snap.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(loader[_spec()["steps"]].parameters(), a.parameters()))
    with pytest.raises(KeyError, match="no snapshot"):
        loader[5]


def test_corrupt_checkpoint_is_reported_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    folder = train.train(_spec(), progress=False, stop_at=3)
    (folder / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="corrupt"):
        train.get_model(_spec(), progress=False)
    assert (folder / "checkpoint.pt").read_bytes() == b"garbage"


def test_explicit_training_images_change_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    assert train.spec_key(_spec(), x) != train.spec_key(_spec(), x + 0.1) != train.spec_key(_spec())


@pytest.mark.parametrize("bad", [dict(steps=0), dict(n=-3), dict(lr=0.0), dict(bogus=1),
                                 dict(snapshot_steps=[99])])
def test_bad_specs(bad):
    with pytest.raises(ValueError):
        train.normalize_spec(_spec(**bad))


def test_schedules():
    spec = dict(lr=2e-3, lr_rampup_steps=200, ema_halflife_steps=100.0, ema_rampup_ratio=0.05)
    assert train.learning_rate(spec, [1, 100, 200, 5000]) == pytest.approx([1e-5, 1e-3, 2e-3, 2e-3])
    assert train.ema_halflife(spec, [20, 1000, 2000, 10 ** 5]) == pytest.approx([1.0, 50.0, 100.0, 100.0])
    assert train.learning_rate(dict(spec, lr_rampup_steps=0), 1) == pytest.approx(2e-3)
    assert train.ema_halflife(dict(spec, ema_rampup_ratio=None), 3) == pytest.approx(100.0)


# --------------------------------------------------------------------------- a cache that cannot go stale

_KEY_CHILD = ("import json, sys; from utils import train; "
              "print(train.spec_key(json.loads(sys.argv[1]), device='cpu'))")


def _key_in_copy(tmp_path, name, edit=None):
    """The cache key of _spec() computed by a copy of the package in which ``edit(path, text)`` rewrote
    one file (``path`` relative to utils/)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    root = tmp_path / name
    shutil.copytree(repo / "utils", root / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    if edit is not None:
        rel, change = edit
        f = root / "utils" / rel
        f.write_text(change(f.read_text(encoding="utf-8")), encoding="utf-8")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("HGB_TRAIN_")}
    out = subprocess.run([sys.executable, "-c", _KEY_CHILD, __import__("json").dumps(_spec())],
                         env=dict(env, PYTHONPATH=str(root)), cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_editing_the_code_that_shapes_the_weights_changes_the_key(tmp_path):
    same = _key_in_copy(tmp_path, "same")
    # a change of code in the network, the loss or the training step: a new key (the old models are not served)
    for rel, change in [("nets.py", lambda t: t.replace("return (h + self.skip(x)) / math.sqrt(2)",
                                                        "return (h + self.skip(x)) * (1 / math.sqrt(2))")),
                        ("edm.py", lambda t: t + "\nP_MEAN = -1.1\n"),
                        ("training/step.py", lambda t: t.replace("eps=1e-8", "eps=1e-7"))]:
        assert _key_in_copy(tmp_path, rel.replace("/", "_"), (rel, change)) != same, rel
    # prose is not code: a docstring or a comment changes nothing
    assert _key_in_copy(tmp_path, "doc", ("nets.py", lambda t: t.replace('"""A small EDM-style U-Net.',
                                                                          '"""A small U-Net (EDM style).')
                                          + "\n# a comment\n")) == same


def test_every_module_the_step_imports_is_in_the_key_or_explained():
    import ast
    import importlib
    import inspect
    from utils.training import store
    listed = set(store.SHAPING_MODULES) | set(store.NOT_SHAPING)
    for name in store.SHAPING_MODULES:
        tree = ast.parse(inspect.getsource(importlib.import_module(name)))
        package = name.rsplit(".", 1)[0] if name.count(".") > 1 else "utils"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                mods = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
                for mod in mods:
                    assert mod in listed, f"{name} imports {mod}: add it to SHAPING_MODULES or NOT_SHAPING"


def test_torch_version_and_numerics_are_in_the_key(monkeypatch):
    for name in ("HGB_TRAIN_PRECISION", "HGB_TRAIN_COMPILE", "HGB_TRAIN_ADAM"):
        monkeypatch.delenv(name, raising=False)
    base, base_cuda = train.spec_key(_spec(), device="cpu"), train.spec_key(_spec(), device="cuda")
    monkeypatch.setenv("HGB_TRAIN_PRECISION", "fp32")                # the default, spelled out
    assert train.spec_key(_spec(), device="cpu") == base
    monkeypatch.setenv("HGB_TRAIN_PRECISION", "bf16")                # bf16 where native: a new key
    assert (train.spec_key(_spec(), device="cpu") != base) == train.native_bf16()
    assert train.spec_key(_spec(), device="cuda") != base_cuda
    monkeypatch.delenv("HGB_TRAIN_PRECISION")
    for name, value in (("HGB_TRAIN_COMPILE", "1"), ("HGB_TRAIN_ADAM", "fused")):
        monkeypatch.setenv(name, value)
        assert train.spec_key(_spec(), device="cpu") != base, name
        monkeypatch.delenv(name)
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert train.spec_key(_spec(), device="cpu") != base
    monkeypatch.setenv("HGB_TRAIN_PRECISION", "fp16")
    with pytest.raises(ValueError, match="HGB_TRAIN_PRECISION"):
        train.spec_key(_spec())


def test_numerics_default_is_the_reference_and_levers_are_opt_in(monkeypatch):
    """fp32, eager, foreach Adam unless a lever is switched on (the claims were verified under these
    numerics; scripts/check_bit_identity.py shows the default step trains main's weights bit for bit)."""
    for name in ("HGB_TRAIN_PRECISION", "HGB_TRAIN_COMPILE", "HGB_TRAIN_ADAM"):
        monkeypatch.delenv(name, raising=False)
    long = train.normalize_spec(_spec(steps=5000))
    assert train.DEFAULT_NUMERICS == {"precision": "fp32", "compile": False, "adam": "foreach"}
    for device in ("cpu", "cuda"):
        assert train.numerics(long, device) == train.DEFAULT_NUMERICS
    monkeypatch.setenv("HGB_TRAIN_PRECISION", "bf16")
    assert train.numerics(long, "cpu")["precision"] == ("bf16" if train.native_bf16() else "fp32")
    assert train.numerics(long, "cuda")["precision"] == "bf16"
    monkeypatch.setenv("HGB_TRAIN_COMPILE", "1")
    monkeypatch.setenv("HGB_TRAIN_ADAM", "fused")
    assert train.numerics(long, "cpu")["compile"] is True and train.numerics(long, "cpu")["adam"] == "fused"
    monkeypatch.setenv("HGB_TRAIN_ADAM", "fast")
    with pytest.raises(ValueError, match="HGB_TRAIN_ADAM"):
        train.numerics(long, "cpu")


def test_default_trainer_is_fp32_eager_foreach(monkeypatch):
    for name in ("HGB_TRAIN_PRECISION", "HGB_TRAIN_COMPILE", "HGB_TRAIN_ADAM"):
        monkeypatch.delenv(name, raising=False)
    s = train.normalize_spec(_spec())
    tr = train.Trainer(s, torch.rand(8, 1, 8, 8), "cpu")
    group = tr.opt.param_groups[0]
    assert group["foreach"] is True and not group.get("fused")
    assert tr._loss == tr._reference_loss                              # no autocast, no compile
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())


def test_compiled_step_resumes_bit_for_bit(tmp_path, monkeypatch):
    """The opt-in compiled step (here with bf16 and fused Adam too, where bf16 is native): a run stopped
    and resumed in a new Trainer (recompiled, from the on-disk compile cache) is bit-for-bit the
    uninterrupted one."""
    monkeypatch.setenv("HGB_TRAIN_COMPILE", "1")
    monkeypatch.setenv("HGB_TRAIN_PRECISION", "bf16")
    monkeypatch.setenv("HGB_TRAIN_ADAM", "fused")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = _spec(steps=6, snapshot_steps=[3], checkpoint_every=2)
        monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "a"))
        full = train.get_model(spec, progress=False)
        monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path / "b"))
        train.train(spec, progress=False, stop_at=4)
        resumed = train.get_model(spec, progress=False)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert full.history["loss"] == resumed.history["loss"]


def test_compiled_evaluation_matches_eager(tmp_path, monkeypatch):
    """With HGB_EVAL_COMPILE=1 (opt-in), get_model's models evaluate through one compiled graph on the
    CPU: float32 results within 1e-5 of the eager forward pass, for every batch size (the batch is
    dynamic), and the eager path under autograd; unset or 0, the eager path."""
    from utils import denoisers
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    monkeypatch.delenv("HGB_EVAL_COMPILE", raising=False)
    assert not train.get_model(_spec(), progress=False).compile_eval
    monkeypatch.setenv("HGB_EVAL_COMPILE", "1")
    model = train.get_model(_spec(), progress=False)
    assert model.compile_eval
    torch.manual_seed(0)
    with torch.no_grad():                                   # give the zero-initialised layers weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(37, 1, 8, 8)
    for sigma in (0.01, 1.0, 40.0):
        fast = denoisers.apply(model, x, sigma, batch_size=16)               # chunks of 16, 16, 5
        model.compile_eval = False
        eager = denoisers.apply(model, x, sigma, batch_size=16)
        model.compile_eval = True
        assert (fast - eager).abs().max() <= 1e-5 * max(1.0, eager.abs().max().item())
    out = model(x.requires_grad_(), 1.0)                    # with gradients: the eager path
    out.sum().backward()
    assert x.grad is not None
    monkeypatch.setenv("HGB_EVAL_COMPILE", "0")
    assert not train.get_model(_spec(), progress=False).compile_eval


def test_prepare_models_cache_key_and_prune(tmp_path, monkeypatch, capsys):
    """The key the workflow caches artifacts/ under (one hash of every run's key) and the pruning of
    run folders no chapter needs before the cache is saved."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import prepare_models
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    assert prepare_models.main(["--profile", "smoke", "--cache-key"]) == 0
    key = capsys.readouterr().out.strip()
    assert len(key) == 20 and int(key, 16) >= 0
    monkeypatch.setenv("HGB_TRAIN_ADAM", "fused")                                   # other numerics
    assert prepare_models.main(["--profile", "smoke", "--cache-key"]) == 0
    assert capsys.readouterr().out.strip() != key
    monkeypatch.delenv("HGB_TRAIN_ADAM")
    from utils import chapters, profiles
    job = chapters.all_runs(profiles.resolve("smoke"))[0]
    needed = train.run_dir(*(job if isinstance(job, tuple) else (job,)))
    needed.mkdir(parents=True)
    (tmp_path / "models" / "0123456789abcdef").mkdir()
    assert prepare_models.main(["--profile", "smoke", "--prune"]) == 0
    assert needed.exists() and not (tmp_path / "models" / "0123456789abcdef").exists()


# Every public name utils/train.py defined when it was one module (main before the split; VERSION went
# with the source-hashed key): the front door still exports each of them.
MAIN_PUBLIC_NAMES = ("DEFAULTS", "normalize_spec", "data_fingerprint", "spec_key", "build_denoiser", "learning_rate",
                     "ema_halflife", "run_dir", "train", "get_model", "Snapshots", "snapshots", "worker_count",
                     "usable_cores", "pending_runs", "train_many", "estimate")


def test_the_front_door_keeps_every_public_name():
    from utils import training
    missing = [n for n in MAIN_PUBLIC_NAMES if not hasattr(train, n)]
    assert not missing, f"utils.train lost {missing}"
    assert set(training.__all__) <= set(dir(train))
    assert not hasattr(train, "VERSION")
