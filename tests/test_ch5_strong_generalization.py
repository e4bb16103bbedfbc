"""utils.chapters.strong_generalization: models on disjoint splits, the paired similarity tables,
early stopping, the Gaussian sweep."""
import math

import numpy as np
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
    expect += len(strong.contrast_sizes(P, len(data.load(P.dataset))))        # the ladder networks of Fig. 9b
    assert strong.contrast_sizes(P, 100) == [8] and strong.contrast_sizes(P, 128) == [8, 64]
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
        assert nn["rmse_nn"] == 0.0 and nn["memorized"] == 1.0 and nn["in_own"] == 1.0
    assert r["nearest"]["network S1"]["in_s1"] == 1.0 and r["nearest"]["network S2"]["in_s1"] == 0.0
    assert r["closer_to_partner"] == 0.0
    per_noise = (copies1 - copies2).reshape(4, -1).double().norm(dim=1) / math.sqrt(d)
    assert torch.allclose(r["dist"]["pair"], per_noise)
    # one summary everywhere: the median over the noises (numpy's: the mean of the two middle values)
    assert r["median"]["pair"] == pytest.approx(float(np.median(per_noise.numpy())))
    assert r["median"]["gauss_pair"] == 0.0 and r["median"]["nn"] == 0.0
    assert r["median"]["own_gauss"] == pytest.approx(float(np.median(torch.cat(
        [r["dist"]["own_gauss1"], r["dist"]["own_gauss2"]]).numpy())))

    # generalizing pair: both networks give the same novel image, far from every training image
    novel = _imgs(4, 4) + 10.0
    r = strong.pair_report(novel, novel + 1e-3, gauss, gauss + 0.5, s1, s2)
    assert r["closer_to_partner"] == 1.0 and r["median"]["pair"] == pytest.approx(1e-3, rel=1e-3)
    assert r["median"]["pair"] < 1 < r["median"]["nn"]
    assert r["median"]["gauss_pair"] == pytest.approx(0.5)
    row = strong.report_rows({"x": r})[0]
    assert row["setting"] == "x" and row["G1~G2"] == pytest.approx(0.5)
    assert row["net~NN"] == r["median"]["nn"] and row["net1~net2"] == r["median"]["pair"]
    with pytest.raises(ValueError, match="same noises"):
        strong.pair_report(novel, novel[:3], gauss, gauss, s1, s2)


def test_median_distance():
    assert strong.median_distance(torch.tensor([1.0, 2.0, 10.0, 20.0])) == 6.0
    assert strong.median_distance([3.0]) == 3.0
    assert math.isnan(strong.median_distance([]))


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
    assert rows[2]["cov_dist"] < 0.1 and rows[2]["rmse"] < 0.1 * rows[0]["rmse"] and rows[0]["rmse_std"] > 0
    assert strong.gaussian_agreement(x, [50], x_T, [80.0, 1.0], seeds=[0])[0]["rmse_std"] == 0.0
    with pytest.raises(ValueError):
        strong.gaussian_agreement(x, [2001], x_T, [80.0], seeds=[0])     # two splits need 2n images


# --------------------------------------------------------------------------- paper Fig. 9b and small helpers

def test_contrast_window():
    sizes, mem, gauss = [16, 64, 128, 256], [1.0, 0.7, 0.3, 0.05], [0.50, 0.30, 0.18, 0.12]
    window, m = strong.contrast_window(sizes, mem, gauss, agree_level=0.20)
    assert window == [] and m < 0                     # copies stop (64) before the Gaussians agree (128)
    window, m = strong.contrast_window(sizes, mem, gauss, agree_level=0.35)
    assert window == [64] and m == pytest.approx(min((0.7 - 0.5) / 0.5, (0.35 - 0.30) / 0.35))
    with pytest.raises(ValueError, match="one length"):
        strong.contrast_window(sizes, mem[:2], gauss, 0.2)


def test_first_agreeing_size_and_effective_rank():
    rows = [{"n": 8, "rmse": 0.5}, {"n": 64, "rmse": 0.2}, {"n": 128, "rmse": 0.1}]
    assert strong.first_agreeing_size(rows, 0.2) == 64 and strong.first_agreeing_size(rows, 0.05) is None
    assert strong.effective_rank(torch.ones(10)) == pytest.approx(10.0)
    assert strong.effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        strong.effective_rank(torch.zeros(3))


def test_ladder_memorization_uses_the_ladder_subset(monkeypatch):
    P = profiles.resolve("smoke")
    x = data.load(P.dataset)
    seen = []

    def fake_get_model(spec, x_train=None, **kw):
        seen.append((spec["n"], x_train))
        return _Constant(x_train[:1])                         # copies its first training image

    monkeypatch.setattr(train, "get_model", fake_get_model)
    x_T = edm.initial_noise(4, (1, 8, 8), seed=0)
    out = strong.ladder_memorization(P, x, [8], x_T, [80.0, 1.0, 0.002], progress=False)
    s1, _ = data.disjoint_splits(x, 8, seed=0)
    assert out == {8: 1.0} and torch.equal(seen[0][1], s1)


# --------------------------------------------------------------------------- claims

def _results(**changes):
    """Results consistent with every claim of chapter 5."""
    r = dict(d=64, n_noise=200, n_large=750, large_pair=0.20, large_nn=0.30, large_closer=0.8,
             large_own_gauss=[0.25, 0.26], large_nn_each=[0.30, 0.31], large_ctl_pair=0.22, large_ctl_nn=0.30,
             n_small=128, small_steps=4000, small_pair=0.45, small_nn=0.05, small_gauss_pair=0.15,
             small_memorized=0.8, small_own_split=0.95, n_reach=128, es_step=250, early_pair=0.25, early_nn=0.32,
             early_diff=[0.2, 0.01], tiny_channels=4, tiny_pair=0.22, tiny_nn=0.3, tiny_diff=[0.23, 0.01],
             tiny_ctl_pair=0.24, tiny_ctl_nn=0.3, contrast_sizes=[16, 64, 256, 750],
             contrast_memorized=[1.0, 0.7, 0.1, 0.0], contrast_gauss=[0.5, 0.18, 0.12, 0.08])
    r.update(changes)
    return strong.Results(**r)


def _settings(expected_to_fail=None):
    return strong.settings(profiles.resolve("cpu")).replace(expected_to_fail=expected_to_fail or {})


def _status(results, settings=None):
    return {c.id: c.status for c in strong.claims(results, settings or _settings())}


def test_claims_return_exactly_the_claim_ids_and_pass_on_consistent_results():
    cl = strong.claims(_results(), _settings())
    assert tuple(c.id for c in cl) == strong.CLAIM_IDS
    assert all(c.status in ("pass", "pass (marginal)") for c in cl), [(c.id, c.status, c.ours) for c in cl]
    kinds = {c.id: c.kind for c in cl}
    assert {k for k, v in kinds.items() if v == "control"} == {"ch5.large_seed_control", "ch5.small_model_seed_control"}
    assert all(9 in c.figures for c in cl if c.kind == "paper")


CONTRADICTIONS = {
    # the large pair's samples lie closer to training images than to each other
    "ch5.large_beyond_copies": dict(large_nn=0.19),
    "ch5.large_seed_control": dict(large_ctl_pair=0.40),
    # a network's samples are closer to training images than to its Gaussian's samples
    "ch5.large_near_gaussian": dict(large_own_gauss=[0.25, 0.35]),
    # the small pair's samples are closer to each other than to the training images
    "ch5.small_disagree": dict(small_nn=0.5),
    # the small networks do not copy
    "ch5.small_copy": dict(small_memorized=0.3),
    # the Gaussian pair of the small split agrees hardly better than the network pair
    "ch5.small_gauss_closer": dict(small_gauss_pair=0.19, small_pair=0.27),
    # ... or worse than the large-split networks
    "ch5.gauss_small": dict(small_gauss_pair=0.21, n_reach=750),
    # no size where networks copy while the Gaussians agree
    "ch5.copy_while_gauss_agree": dict(contrast_gauss=[0.5, 0.3, 0.12, 0.08]),
    # early stopping does not lower the pair distance beyond noise
    "ch5.early_raises": dict(early_diff=[0.01, 0.01]),
    "ch5.early_criterion": dict(early_nn=0.2),
    "ch5.small_model_raises": dict(tiny_diff=[-0.01, 0.01]),
    "ch5.small_model_criterion": dict(tiny_nn=0.2),
    "ch5.small_model_seed_control": dict(tiny_ctl_pair=0.35),
}


def test_every_claim_has_a_contradiction():
    assert set(CONTRADICTIONS) == set(strong.CLAIM_IDS)


# Claims that share a number fail together: with the Gaussian pair at most the large-split network pair
# (gauss_small), a network pair below 1.5 x the Gaussian pair is also below 1.5 x the large pair.
ALSO_FAILS = {"ch5.small_gauss_closer": {"ch5.small_disagree"}}


@pytest.mark.parametrize("claim_id", strong.CLAIM_IDS)
def test_every_claim_fails_on_contradicting_results(claim_id):
    status = _status(_results(**CONTRADICTIONS[claim_id]))
    assert status[claim_id] == "FAIL"
    others = {k: s for k, s in status.items() if k != claim_id and k not in ALSO_FAILS.get(claim_id, ())}
    assert all(s in ("pass", "pass (marginal)") for s in others.values()), status
    S = _settings({claim_id.split(".")[1]: "a reason"})
    assert _status(_results(**CONTRADICTIONS[claim_id]), S)[claim_id] == "not reproduced"


def test_a_seed_control_not_run_fails_rather_than_passing():
    status = _status(_results(large_ctl_pair=None, large_ctl_nn=None))
    assert status["ch5.large_seed_control"] == "FAIL"


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("05_strong_generalization") == []
