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
