"""utils.chapters.locality: the field statistics, the calibration, the comparison, the settings and the
claims (each claim fails on results that contradict it)."""
import dataclasses
import math

import pytest
import torch

from utils import data, profiles
from utils.chapters import locality as L
from utils.claims import Claim
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser
from utils.local_denoisers import DataLocalDenoiser, LocalScore, PatchWiener
from utils.settings import SettingsError


def _imgs(n, shape=(1, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ A.T * 0.5).reshape(n, *shape)


# --------------------------------------------------------------------------- field statistics

def test_effective_radius_and_row_correlation():
    shape = (1, 5, 5)
    eye = torch.eye(25, dtype=torch.float64)
    assert torch.allclose(L.effective_radius(eye, shape), torch.zeros(25, dtype=torch.float64))
    # a field spread evenly on the 4 nearest neighbours of the centre (and 0 at the pixel): radius 1
    J = torch.zeros(25, 25, dtype=torch.float64)
    c = 12
    for q in (7, 11, 13, 17):
        J[c, q] = 0.5
    r = L.effective_radius(J, shape)
    assert r[c] == pytest.approx(1.0) and torch.isnan(r[0])
    assert L.pixel_distances((2, 2, 2))[0, 4] == 0.0             # two channels of one pixel: 0 apart
    A = torch.randn(3, 25, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(L.row_correlation(A, 2 * A + 1), torch.ones(3, 25, dtype=torch.float64))
    assert torch.allclose(L.row_correlation(A, -A), -torch.ones(3, 25, dtype=torch.float64))
    assert torch.isnan(L.row_correlation(torch.ones(4, 4), A[0, :4, :4])).all()
    # the pixel's own entry is left out: a shared peak at p does not make two fields alike
    B = torch.randn(25, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    peak = 100 * torch.eye(25, dtype=torch.float64)
    assert torch.allclose(L.row_correlation(A[0] + peak, B + peak), L.row_correlation(A[0], B))
    assert (L.row_correlation(A[0] + peak, B + peak, skip_self=False) > 0.9).all()
    with pytest.raises(ValueError, match="one shape"):
        L.row_correlation(A, A[0])
    assert L.centre_pixel((1, 8, 8)) == 36 and L.centre_pixel((3, 5, 4)) == 10
    # selected rows: the same numbers as those rows of the square map
    rows = torch.tensor([12, 3, 20])
    assert torch.allclose(L.effective_radius(J[rows], shape, rows), r[rows], equal_nan=True)
    assert torch.allclose(L.row_correlation(A[:, rows], (2 * A + 1)[:, rows], rows=rows), torch.ones(3, 3, dtype=torch.float64))
    assert torch.allclose(L.row_correlation(A[0][rows], B[rows], rows=rows), L.row_correlation(A[0], B)[rows])
    with pytest.raises(ValueError, match="rows"):
        L.effective_radius(J[rows], shape)


def test_field_rows():
    assert torch.equal(L.field_rows((1, 8, 8), 64), torch.arange(64))
    r = L.field_rows((1, 32, 32), 64)
    assert len(r) == 64 and L.centre_pixel((1, 32, 32)) in r.tolist()
    assert L.centre_pixel((1, 8, 8)) in L.field_rows((1, 8, 8), 16).tolist()


def test_sensitivity_fields_of_the_gaussian_itself():
    """With D_G in place of the network its field is W_G's (correlation 1) and the radii agree."""
    shape = (1, 4, 4)
    x_tr = _imgs(60, shape)
    G, M = GaussianDenoiser.fit(x_tr), EmpiricalDenoiser(x_tr)
    f = L.sensitivity_fields(G, G, M, _imgs(3, shape, seed=1), [2.0, 0.5, 0.1], progress=False)
    assert f.corr_wg == pytest.approx([1.0, 1.0, 1.0])
    assert f.radius_net == pytest.approx(f.radius_wg)
    assert f.radius_wg[0] > f.radius_wg[-1]                      # W_G's field narrows as sigma falls
    assert f.rows["net"].shape == (3, 16) and torch.allclose(f.rows["net"], f.rows["wg"], atol=1e-12)
    fm = L.sensitivity_fields(M, G, M, _imgs(3, shape, seed=1), [0.5], progress=False)
    assert fm.corr_dm == pytest.approx([1.0])


# --------------------------------------------------------------------------- machines, calibration, comparison

def test_machines_calibration_and_comparison():
    shape = (1, 4, 4)
    x_tr = _imgs(30, shape)
    fam = L.machines(x_tr, [1, 3], [0.1, 0.3])
    assert set(fam) == set(L.MACHINES) and set(fam["LS"]) == {1, 3} and set(fam["data-derived"]) == {0.1, 0.3}
    families = {k: fam[k] for k in L.LOCAL}
    # a "network" that is LS with 3x3 windows: the calibration must pick 3 for LS, and LS then predicts it exactly
    net = LocalScore(x_tr, 3)
    sig = [2.0, 0.3]
    cal = L.calibrate(net, families, _imgs(6, shape, seed=2), sig, progress=False)
    assert cal.choice["LS"] == [3, 3]
    assert all(len(v) == 2 for v in cal.mse["ELS"].values())
    dens = {"D_G": fam["D_G"], **cal.denoisers}
    out = L.compare(net, dens, _imgs(5, shape, seed=3), sig, progress=False)
    assert out["r2"]["LS"] == pytest.approx([1.0, 1.0]) and out["rmse"]["LS"] == pytest.approx([0.0, 0.0], abs=1e-7)
    assert out["r2"]["D_G"][1] < 1.0
    sizes = L.chosen_sizes(cal, families)
    assert sizes["LS"] == pytest.approx([9.0 * 4 / 16 + 6.0 * 8 / 16 + 4.0 * 4 / 16] * 2)   # clipped 3x3 windows on 4x4
    assert L.neighbourhood_size(PatchWiener(x_tr, 1), 0.5) == 1.0
    assert L.neighbourhood_size(DataLocalDenoiser(x_tr, 1.0), 0.5) >= 1.0
    with pytest.raises(TypeError, match="local denoiser"):
        L.neighbourhood_size(fam["D_G"], 0.5)


def test_sample_r2_and_limits_and_heldout_split():
    a = _imgs(4)
    r = L.sample_r2(a, {"same": a, "shifted": a + 0.3})
    assert r["same"] == 1.0 and r["shifted"] < 1.0
    x_tr = _imgs(12, (1, 3, 3))
    err = L.limits_error(x_tr, _imgs(4, (1, 3, 3), seed=1), 0.4)
    assert err["D_G"] < L.LIMIT_TOL and err["D_M"] < L.LIMIT_TOL
    big = _imgs(20, (1, 12, 12))                          # checked on its central 8 x 8 crop (a 15 x 15 window)
    err = L.limits_error(big, _imgs(2, (1, 12, 12), seed=1), 0.4)
    assert err["D_G"] < L.LIMIT_TOL and err["D_M"] < L.LIMIT_TOL
    held = _imgs(10)
    c, e = L.split_heldout(held, 4, 6)
    assert len(c) == 4 and len(e) == 6 and torch.equal(torch.cat([c, e]), held)
    with pytest.raises(ValueError, match="n_calib \\+ n_eval = 11"):
        L.split_heldout(held, 5, 6)


# --------------------------------------------------------------------------- settings and runs

def test_settings_and_runs():
    for name in profiles.NAMES:
        S = L.settings(profiles.resolve(name, allow_cpu=True))
        assert S.patch_sizes and all(p % 2 for p in S.patch_sizes)
    S = L.settings(profiles.resolve("cpu"))
    with pytest.raises(SettingsError, match="odd"):
        S.replace(patch_sizes=[3, 4])
    with pytest.raises(SettingsError, match="thresholds"):
        S.replace(thresholds=[1.5])
    P = profiles.resolve("cpu")
    assert L.ladder_pair(P, S) == (min(P.train_sizes), max(P.train_sizes))
    assert [r["n"] for r in L.runs(P)] == [min(P.train_sizes), max(P.train_sizes)]
    with pytest.raises(ValueError, match="outside the ladder"):
        L.ladder_pair(P, S.replace(generalizing_index=9))
    # the held-out split holds the calibration and evaluation images of every CPU profile
    for name in ("smoke", "cpu"):
        Sx = L.settings(profiles.resolve(name))
        assert Sx.n_calib + Sx.n_eval <= len(data.load("digits", split="heldout"))


# --------------------------------------------------------------------------- claims

MACH = L.MACHINES


def _consistent() -> L.Results:
    band_mem = dict(zip(MACH, (0.5, 0.9, 0.6, 0.7, 0.7, 0.6)))
    band_gen = dict(zip(MACH, (0.8, 0.4, 0.85, 0.82, 0.83, 0.86)))
    s_mem = dict(zip(MACH, (0.3, 0.95, 0.4, 0.6, 0.6, 0.5)))
    s_gen = dict(zip(MACH, (0.7, 0.2, 0.75, 0.9, 0.9, 0.85)))
    return L.Results(
        n_memorizing=16, n_generalizing=1500,
        field_sigmas=[80.0, 10.0, 1.5, 0.5, 0.1, 0.002], field_intermediate=[False, False, True, True, False, False],
        corr_wg_generalizing=[0.5, 0.6, 0.8, 0.85, 0.95, 1.0], corr_dm_generalizing=[0.5, 0.5, 0.4, 0.3, 0.2, float("nan")],
        radius_generalizing=[3.0, 2.5, 1.5, 0.8, 0.1, 0.0],
        r2_band={"memorizing": band_mem, "generalizing": band_gen},
        r2_samples={"memorizing": s_mem, "generalizing": s_gen},
        limit_errors={"D_G": 1e-15, "D_M": 0.0})


def _plain():
    """The cpu settings without their recorded expectations (a contradicted claim must then FAIL)."""
    return L.settings(profiles.resolve("cpu")).replace(expected_to_fail={})


def _status(results, S=None):
    return {c.id: c.status for c in L.claims(results, S or _plain())}


def test_claims_ids_kinds_and_all_pass_on_consistent_results():
    cl = L.claims(_consistent(), L.settings(profiles.resolve("cpu")))
    assert tuple(c.id for c in cl) == L.CLAIM_IDS
    assert all(isinstance(c, Claim) for c in cl)
    assert all(c.status == "pass" for c in cl), [(c.id, c.status, c.ours) for c in cl]
    # the expectation recorded at cpu names a claim of this chapter
    assert set(L.settings(profiles.resolve("cpu")).expected_to_fail) <= {i.split(".", 1)[1] for i in L.CLAIM_IDS}
    for c in cl:
        if c.kind == "paper":
            assert c.source != "li2024understanding" and c.where


def _with(R, **changes):
    return dataclasses.replace(R, **changes)


def _set(d, role, machine, value):
    out = {k: dict(v) for k, v in d.items()}
    out[role][machine] = value
    return out


CONTRADICTIONS = {
    "ch7.field_matches_wiener": lambda R: _with(R, corr_wg_generalizing=[0.5, 0.6, 0.6, 0.65, 0.95, 1.0]),
    "ch7.field_wiener_not_memory": lambda R: _with(R, corr_dm_generalizing=[0.5, 0.5, 0.9, 0.9, 0.2, 0.1]),
    "ch7.field_grows_with_sigma": lambda R: _with(R, radius_generalizing=[0.1, 0.5, 1.0, 1.5, 2.0, 3.0]),
    "ch7.memorizing_dm_best": lambda R: _with(R, r2_band=_set(R.r2_band, "memorizing", "ELS", 0.95)),
    "ch7.memorizing_dm_samples": lambda R: _with(R, r2_samples=_set(R.r2_samples, "memorizing", "D_G", 0.97)),
    "ch7.local_beats_dg": lambda R: _with(R, r2_band=_set(R.r2_band, "generalizing", "D_G", 0.9)),
    "ch7.local_beats_dg_samples": lambda R: _with(R, r2_samples=_set(R.r2_samples, "generalizing", "D_G", 0.95)),
    "ch7.dg_beats_dm_samples": lambda R: _with(R, r2_samples=_set(R.r2_samples, "generalizing", "D_M", 0.8)),
    "ch7.els_r2_anchor": lambda R: _with(R, r2_samples=_set(R.r2_samples, "generalizing", "ELS", 0.8)),
    "ch7.local_contains_global": lambda R: _with(R, limit_errors={"D_G": 1e-3, "D_M": 0.0}),
}


def test_every_claim_has_a_contradiction():
    assert set(CONTRADICTIONS) == set(L.CLAIM_IDS)


@pytest.mark.parametrize("cid", L.CLAIM_IDS)
def test_each_claim_fails_on_contradicting_results(cid):
    status = _status(CONTRADICTIONS[cid](_consistent()))
    assert status[cid] == "FAIL", status
    S = _plain().replace(expected_to_fail={cid.split(".", 1)[1]: "a recorded reason"})
    assert _status(CONTRADICTIONS[cid](_consistent()), S)[cid] == "not reproduced"


def test_nan_measurements_fail():
    R = _consistent()
    assert _status(_with(R, radius_generalizing=[3.0, float("nan"), 1.0, 0.5, 0.1, 0.0]))["ch7.field_grows_with_sigma"] == "FAIL"
    assert _status(_with(R, r2_samples=_set(R.r2_samples, "generalizing", "ELS", float("nan"))))["ch7.els_r2_anchor"] == "FAIL"
    assert _status(_with(R, field_intermediate=[False] * 6))["ch7.field_matches_wiener"] == "FAIL"


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("07_locality") == []
