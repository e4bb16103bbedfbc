"""utils.chapters.strong_generalization: models on disjoint splits, the paired similarity tables,
early stopping, the Gaussian sweep."""
import math

import pytest
import torch

from utils import data, edm, profiles, regimes, train
from utils.chapters import strong_generalization as strong
from utils.denoisers import GaussianDenoiser


def _imgs(n, seed=0, scale=1.0):
    return scale * torch.randn(n, 1, 3, 3, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- models on splits

def test_s1_of_disjoint_splits_is_the_ladder_subset_and_shares_its_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HGB_ARTIFACTS", str(tmp_path))
    P = profiles.resolve("smoke")
    x = data.load(P.dataset)
    s1, s2 = data.disjoint_splits(x, 8, seed=3)
    spec = P.train_spec(8, seed=3)
    # the cache key hashes the images: S1 passed explicitly is the ladder's own run
    assert train.spec_key(spec, s1) == train.spec_key(spec)
    assert train.spec_key(spec, s2) != train.spec_key(spec)

    calls = []
    monkeypatch.setattr(train, "get_model", lambda s, x_train=None, step=None, device=None, progress=True:
                        calls.append((s["seed"], x_train, step)) or len(calls))
    assert strong.train_pair(spec, s1, s2, step=5) == (1, 2)
    assert calls[0][0] == 3 and torch.equal(calls[0][1], s1) and calls[0][2] == 5
    assert torch.equal(calls[1][1], s2) and calls[1][2] == 5
    strong.train_pair(spec, s1, s2, seed2=4)                                  # the seed control
    assert calls[2][0] == 3 and calls[3][0] == 4
    with pytest.raises(ValueError, match="spec\\['n'\\]"):
        strong.train_pair(P.train_spec(9, seed=3), s1, s2)


def test_runs_list_every_pair_and_its_seed_control():
    P = profiles.resolve("smoke")
    runs = strong.runs(P, seed=0)
    expect = sum(2 + bool(p.get("seed_control")) for p in strong.settings(P).pairs.values())
    assert len(runs) == expect and all(isinstance(r, tuple) and len(r[1]) == r[0]["n"] for r in runs)


# --------------------------------------------------------------------------- tables

def test_pair_report_on_copies_and_on_agreeing_novel_samples():
    s1, s2 = _imgs(10, 1), _imgs(10, 2)
    d = s1[0].numel()
    # memorizing pair: each network returns images of its own split
    copies1, copies2 = s1[[0, 3, 5, 7]], s2[[1, 1, 2, 9]]
    gauss = _imgs(4, 3)
    r = strong.pair_report(copies1, copies2, gauss, gauss, s1, s2)
    for k, own in (("network S1", 1), ("network S2", 2)):
        nn = r["nearest"][k]
        assert nn["rmse_nn"] == 0.0 and nn["cosine_nn"] == pytest.approx(1.0)
        assert nn["memorized"] == 1.0 and nn["in_own"] == 1.0
    assert r["nearest"]["network S1"]["in_s1"] == 1.0 and r["nearest"]["network S2"]["in_s1"] == 0.0
    assert r["closer_to_partner"] == 0.0
    expect = ((copies1 - copies2).reshape(4, -1).norm(dim=1) / math.sqrt(d)).mean()
    assert r["pairs"]["network S1 ~ network S2"]["rmse"] == pytest.approx(float(expect))
    assert r["pairs"]["Gaussian S1 ~ Gaussian S2"] == {"cosine": pytest.approx(1.0), "rmse": 0.0}

    # generalizing pair: both networks give the same novel image, far from every training image
    novel = _imgs(4, 4) + 10.0
    r = strong.pair_report(novel, novel + 1e-3, gauss, gauss + 0.5, s1, s2)
    assert r["closer_to_partner"] == 1.0 and r["partner_vs_nn"] < 1e-3
    assert r["pairs"]["Gaussian S1 ~ Gaussian S2"]["rmse"] == pytest.approx(0.5)
    row = strong.report_rows({"x": r})[0]
    assert row["setting"] == "x" and row["G1~G2 RMSE"] == pytest.approx(0.5)
    assert row["net~NN RMSE"] == pytest.approx(0.5 * (r["nearest"]["network S1"]["rmse_nn"]
                                                      + r["nearest"]["network S2"]["rmse_nn"]))
    with pytest.raises(ValueError, match="same noises"):
        strong.pair_report(novel, novel[:3], gauss, gauss, s1, s2)


def test_beyond_copies_is_claim_ones_criterion():
    s1, s2 = _imgs(10, 1), _imgs(10, 2)
    gauss = _imgs(4, 3)
    copies = strong.pair_report(s1[[0, 3, 5, 7]], s2[[1, 1, 2, 9]], gauss, gauss, s1, s2)
    pair, nn, ok = strong.beyond_copies(copies)
    assert nn == 0.0 and pair > 0 and not ok
    novel = _imgs(4, 4) + 10.0
    pair, nn, ok = strong.beyond_copies(strong.pair_report(novel, novel + 1e-3, gauss, gauss, s1, s2))
    assert pair == pytest.approx(1e-3, rel=1e-3) and nn > 1 and ok


def test_figure_rows_take_each_nearest_image_from_its_own_split():
    s1, s2 = _imgs(6, 1), _imgs(6, 2)
    a = s1[[4, 2]] + 1e-3
    b = s2[[0, 5]] - 1e-3
    g1, g2 = _imgs(2, 3), _imgs(2, 4)
    rows = strong.figure_rows(a, b, g1, g2, s1, s2, k=2)
    assert len(rows) == len(strong.FIGURE_ROWS) == 6
    assert torch.equal(rows[0], s1[[4, 2]]) and torch.equal(rows[5], s2[[0, 5]])
    assert torch.equal(rows[1], g1) and torch.equal(rows[2], a) and torch.equal(rows[3], b) and torch.equal(rows[4], g2)


# --------------------------------------------------------------------------- early stopping

class _Shifted:
    """A fake network: D_G of a split plus a constant shift (so RMSE to that D_G is |shift|)."""

    def __init__(self, dg, shift):
        self.dg, self.shift, self._p = dg, shift, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._p])

    def __call__(self, x, sigma):
        return self.dg(x, sigma) + self.shift


def test_gaussian_phase_step_uses_each_networks_own_gaussian(monkeypatch):
    s1, s2 = _imgs(20, 1), _imgs(20, 2, scale=3.0)
    g1, g2 = GaussianDenoiser.fit(s1), GaussianDenoiser.fit(s2)
    shift = {2: 0.4, 4: 0.1, 6: 0.3, 8: 0.2}
    monkeypatch.setattr(strong, "train_pair", lambda spec, a, b, step=None, **kw:
                        (_Shifted(g1, shift[step]), _Shifted(g2, shift[step])))
    spec = dict(n=20, steps=8, snapshot_steps=[2, 4, 6])
    R = regimes.Regimes(sigma_low=0.1, sigma_high=5.0)
    best, crit = strong.gaussian_phase_step(spec, s1, s2, _imgs(16, 5), [0.01, 0.5, 2.0, 50.0], R)
    assert best == 4 and sorted(crit) == [2, 4, 6, 8]
    for k, v in shift.items():
        assert crit[k] == pytest.approx(v, rel=1e-5)        # swapping the splits' D_G would not give |shift|


class _Constant(_Shifted):
    """A fake network that always returns one image: 10-step Euler then ends exactly on it."""

    def __init__(self, image):
        super().__init__(None, None)
        self.image = image

    def __call__(self, x, sigma):
        return self.image.expand_as(x).clone()


def test_snapshot_agreement(monkeypatch):
    s1, s2 = _imgs(20, 1), _imgs(20, 2)
    far = torch.full((1, 1, 3, 3), 20.0)
    # step 1: two novel constant images 0.1 apart; step 3: network 1 copies s1[4], network 2 is novel
    monkeypatch.setattr(strong, "train_pair", lambda spec, a, b, step=None, **kw:
                        (_Constant(far), _Constant(far + 0.1)) if step == 1 else (_Constant(s1[4:5]), _Constant(far)))
    x_T = edm.initial_noise(8, (1, 3, 3), seed=0)
    out = strong.snapshot_agreement(dict(n=20, steps=3, snapshot_steps=[1]), s1, s2, x_T, [80.0, 1.0, 0.01])
    assert sorted(out) == [1, 3]
    assert out[1]["rmse"] == pytest.approx(0.1, rel=1e-4) and out[1]["memorized"] == 0.0
    expect = float((far - s1[4:5]).pow(2).mean().sqrt())
    assert out[3]["rmse"] == pytest.approx(expect, rel=1e-5) and out[3]["memorized"] == 0.5



# --------------------------------------------------------------------------- the Gaussian structure

def test_covariance_distance_known_values():
    y = _imgs(50, 1)
    assert strong.covariance_distance(y, y, y) == 0.0
    assert strong.covariance_distance(2 * y, y, y) == pytest.approx(3.0)      # ||4S - S|| / ||S||
    assert strong.covariance_distance(y + 5.0, y, y) == pytest.approx(0.0, abs=1e-6)  # a mean shift is not covariance


def test_gaussian_agreement_improves_with_split_size(gaussian_data):
    mean, cov, g = gaussian_data
    L = torch.linalg.cholesky(cov)
    x = (mean + torch.randn(4000, 9, generator=g, dtype=torch.float64) @ L.T).to(torch.float32).reshape(-1, 1, 3, 3)
    x_T = edm.initial_noise(64, (1, 3, 3), seed=0)
    rows = strong.gaussian_agreement(x, [5, 50, 2000], x_T, [80.0, 10.0, 1.0, 0.1, 0.002], seeds=[0, 1])
    assert [r["n"] for r in rows] == [5, 50, 2000]
    assert rows[0]["rmse"] > rows[1]["rmse"] > rows[2]["rmse"]
    assert rows[0]["cov_dist"] > rows[1]["cov_dist"] > rows[2]["cov_dist"]
    assert rows[2]["cov_dist"] < 0.1 and rows[2]["cosine"] > 0.99 and rows[0]["rmse_std"] > 0
    assert strong.gaussian_agreement(x, [50], x_T, [80.0, 1.0], seeds=[0])[0]["rmse_std"] == 0.0
    with pytest.raises(ValueError):
        strong.gaussian_agreement(x, [2001], x_T, [80.0], seeds=[0])     # two splits need 2n images
