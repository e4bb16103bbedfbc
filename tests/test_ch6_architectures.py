"""Chapter 6 (utils.chapters.architectures) and the core helpers it added: the ConvDAE network, the
Jacobian of a denoiser and its effective rank, the sampler's state trajectory, and the least-squares
affine DAE. Each claim of the chapter fails on results that contradict it."""
import copy
import dataclasses

import pytest
import torch

from utils import data, denoisers, distill, edm, metrics, nets, profiles, train
from utils.chapters import architectures as arch
from utils.settings import SettingsError

GRID = edm.sigma_steps(10).tolist()


# --------------------------------------------------------------------------- claims

def good_results() -> arch.Results:
    """Results consistent with every claim of the chapter."""
    rmse_edm = [0.036, 0.034, 0.033, 0.037, 0.066, 0.156, 0.176, 0.062, 0.010, 0.0005]
    unet = arch.on_grid([21.1087, 1.5017, 0.1166], GRID)
    return arch.Results(
        grid=list(GRID), rmse_edm=rmse_edm,
        rmse_dae={arch.CONV: {s: 0.9 * e + 0.001 for s, e in zip(GRID, rmse_edm)},
                  arch.UNET_DAE: {s: 1.2 * rmse_edm[GRID.index(s)] for s in unet}},
        rmse_linear={s: 0.015 for s in GRID}, sigma_max=80.0, ls_edm=0.985, ls_ve=0.70,
        d_gauss={arch.EDM: 0.15, arch.CONV: 0.17, arch.LINEAR: 0.01, arch.VE: 0.45},
        d_nn={arch.EDM: 0.30, arch.CONV: 0.31, arch.LINEAR: 0.33, arch.VE: 0.40, arch.GAUSS: 0.33}, d_pair=0.13,
        jac_sigmas=list(GRID), align_edm=[0.95, 0.95, 0.9, 0.7, 0.5, 0.3, 0.2, 0.2, 0.2, 0.2],
        align_dae=[0.97, 0.96, 0.95, 0.8, 0.6, 0.3, 0.2, 0.2, 0.2, 0.2],
        wg_edm=[0.10, 0.08, 0.09, 0.2, 0.4, 0.6, 0.5, 0.3, 0.2, 0.1],
        rank_edm=[2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 35.0, 50.0, 60.0, 63.0],
        identity={"EDM U-Net, N = 1,500": 0.0004, arch.VE: 0.0005, arch.CONV: 0.004}, sigma_min=GRID[-1], d=64)


def settings(**reasons):
    return arch.settings(profiles.resolve("cpu")).replace(expected_to_fail=reasons)


def by_id(claims):
    return {c.id: c for c in claims}


def test_claims_return_exactly_the_ids_and_all_pass_on_consistent_results():
    cs = arch.claims(good_results(), settings())
    assert tuple(c.id for c in cs) == arch.CLAIM_IDS
    assert all(c.status in ("pass", "pass (marginal)") for c in cs), [(c.id, c.status, c.ours) for c in cs]
    kinds = {c.id: c.kind for c in cs}
    assert kinds["ch6.jacobian_close_to_wiener"] == "control"
    assert all(k == "paper" for i, k in kinds.items() if i != "ch6.jacobian_close_to_wiener")


def _contradict(cid):
    R = copy.deepcopy(good_results())
    if cid == "ch6.dae_linear_is_gaussian":
        R.rmse_linear[GRID[3]] = 0.05
    elif cid == "ch6.daes_as_close_as_edm":
        R.rmse_dae[arch.UNET_DAE][arch.on_grid([1.5017], GRID)[0]] = 0.3          # > 1.5 x 0.156
    elif cid == "ch6.baseline_ve_less_linear":
        R.ls_ve = 0.95
    elif cid == "ch6.edm_linear_at_high_sigma":
        R.ls_edm, R.ls_ve = 0.90, 0.60
    elif cid == "ch6.samples_agree_across_architectures":
        R.d_gauss[arch.CONV] = 0.35
    elif cid == "ch6.baseline_ve_samples_differ":
        R.d_gauss[arch.VE] = 0.10
    elif cid == "ch6.jacobian_aligns_with_pcs":
        R.align_edm[1] = 0.5
    elif cid == "ch6.dae_jacobian_aligns_with_pcs":
        R.align_dae[2] = 0.6
    elif cid == "ch6.jacobian_close_to_wiener":
        R.wg_edm[0] = 0.5
    elif cid == "ch6.effective_rank_grows":
        R.rank_edm = R.rank_edm[::-1]
    elif cid == "ch6.identity_at_low_sigma":
        R.identity[arch.CONV] = 0.05
    else:
        raise AssertionError(f"no contradiction written for {cid}")
    return R


@pytest.mark.parametrize("cid", arch.CLAIM_IDS)
def test_each_claim_fails_on_contradicting_results(cid):
    claim = by_id(arch.claims(_contradict(cid), settings()))[cid]
    assert claim.status == "FAIL" and claim.margin < 0, (claim.ours, claim.margin)
    short = cid.split(".", 1)[1]
    claim = by_id(arch.claims(_contradict(cid), settings(**{short: "recorded before the run"})))[cid]
    assert claim.status == "not reproduced" and "recorded before the run" in claim.ours_text


def test_claims_read_only_their_own_ranges():
    R = good_results()
    R.align_edm[5] = R.align_dae[5] = 0.05          # sigma = 1.5 < 10: not part of the high-noise claims
    R.wg_edm[5] = 3.0
    R.rmse_dae[arch.CONV][GRID[0]] = 0.049           # allowed at sigma = 80: max(1.5 x 0.036, 0.036 + 0.01) = 0.054
    st = {c.id: c.status for c in arch.claims(R, settings())}
    assert st["ch6.jacobian_aligns_with_pcs"] == st["ch6.dae_jacobian_aligns_with_pcs"] == "pass"
    assert st["ch6.jacobian_close_to_wiener"] == "pass"
    assert st["ch6.daes_as_close_as_edm"].startswith("pass")
    R.rmse_dae[arch.CONV][GRID[-1]] = 0.012          # sigma_min: EDM 0.0005, floor -> allowed 0.0105
    assert by_id(arch.claims(R, settings()))["ch6.daes_as_close_as_edm"].status == "FAIL"


# --------------------------------------------------------------------------- settings and runs

def test_runs_at_smoke():
    P = profiles.resolve("smoke")
    S = arch.settings(P)
    jobs = arch.runs(P)
    specs = [train.normalize_spec(j) for j in jobs]
    n = max(P.train_sizes)
    ve = [s for s in specs if s["precond"] == "ve"]
    assert len(ve) == 1 and ve[0]["n"] == n and ve[0]["model_channels"] == P.model_channels
    conv = sorted(s["dae_sigma"] for s in specs if s["arch"] == "convdae")
    assert conv == pytest.approx(sorted(GRID))
    unet = [s for s in specs if s["precond"] == "dae" and s["arch"] == "unet"]
    assert len(unet) == len(S.unet_dae_sigmas) and all(s["n"] == n for s in unet)
    assert sum(s["precond"] == "edm" for s in specs) == len(P.train_sizes)


def test_settings_are_checked():
    S = arch.settings(profiles.resolve("cpu"))
    with pytest.raises(SettingsError, match="unet_dae_sigmas: 3 is not a level"):
        S.replace(unet_dae_sigmas=[3.0])
    with pytest.raises(SettingsError, match="conv_dae must give exactly the keys"):
        S.replace(conv_dae={"arch": "convdae"})
    with pytest.raises(SettingsError, match="ve"):
        S.replace(ve={"precond": "edm"})
    cut = arch.settings(profiles.resolve("colab", allow_cpu=True, budget="smoke"))
    assert cut.conv_dae["model_channels"] == 32 and cut.conv_dae["steps"] <= 10


def test_grid_helpers():
    assert arch.on_grid([1.5017, 80], GRID) == [GRID[5], GRID[0]]
    assert arch.grid_index(GRID, 0.0021) == 9
    imgs = arch.unit_images(torch.tensor([[0.0, -2.0, 1.0, 0.5]]), (1, 2, 2))
    assert imgs.shape == (1, 1, 2, 2) and float(imgs.min()) == -1.0


# --------------------------------------------------------------------------- the chapter's helpers

@pytest.fixture(scope="module")
def digits():
    return data.load("digits", n=300, seed=0)


def test_dae_linear_is_the_wiener_filter_with_enough_pairs(digits):
    fam = arch.dae_linear(digits, [4.0661, 0.47], (200, 256), seed=0)
    G = denoisers.GaussianDenoiser.fit(digits)
    for s, D in zip([4.0661, 0.47], fam.denoisers):
        assert metrics.weight_nmse(D.W, G.weight(s)) < 0.15
    x = data.load("digits", split="heldout", n=50)
    assert metrics.rmse_curves({"L": (fam, G)}, x, [4.0661, 0.47])["L"].max() < 0.02


def test_sample_distances_and_perturbation(digits):
    G = denoisers.GaussianDenoiser.fit(digits)
    x_T = edm.initial_noise(6, (1, 8, 8), seed=1)
    finals = edm.sample_many({"a": G, arch.GAUSS: G}, x_T, GRID)
    dist = arch.sample_distances(finals, digits)
    assert dist["to_ref"]["a"] == 0.0 and dist["pairs"][("a", arch.GAUSS)] == 0.0
    assert dist["to_nn"]["a"] > 0
    with pytest.raises(KeyError):
        arch.sample_distances({"a": finals["a"]}, digits)
    states = edm.sample(G, x_T[:1], GRID, return_trajectory="states")[1]
    out = arch.perturbed_samples(G, states[5][0], GRID, 5, torch.ones(64), 2.0)
    assert out.shape == (3, 1, 8, 8)
    assert torch.allclose(out[1], finals["a"][0], atol=1e-5)            # the unperturbed middle row
    assert not torch.allclose(out[0], out[1])


def test_jacobian_profile_of_the_gaussian_denoiser(digits):
    G = denoisers.GaussianDenoiser.fit(digits)
    x_T = edm.initial_noise(2, (1, 8, 8), seed=0)
    states = edm.sample(G, x_T, GRID, return_trajectory="states")[1]
    prof = arch.jacobian_profile(G, states, GRID, G, k=6, n_vec=2, n_matrix=5)
    assert prof.align == pytest.approx([1.0] * 10, abs=1e-6)
    assert max(prof.wg_distance) < 1e-10
    assert prof.rank == pytest.approx(prof.rank_wg)
    assert prof.rank[0] < prof.rank[-1]
    assert prof.vectors[0].shape == (2, 2, 64) and prof.matrices[0].shape == (5, 5)
    with pytest.raises(ValueError, match="one batch of states per sigma"):
        arch.jacobian_profile(G, states[:3], GRID, G, k=6)


# --------------------------------------------------------------------------- core helpers added for chapter 6

def _random_unet():
    torch.manual_seed(0)
    net = nets.UNet(8, 1, 8, (1, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return edm.EDMPrecond(net).eval()


def test_jacobian_matches_autograd_per_image_and_affine_maps():
    D = _random_unet()
    x = torch.randn(3, 1, 8, 8)
    J = metrics.jacobian(D, x, 0.7)
    assert J.shape == (3, 64, 64) and J.dtype == torch.float64
    for b in range(3):
        ref = torch.autograd.functional.jacobian(lambda v: D(v.reshape(1, 1, 8, 8), 0.7).reshape(-1),
                                                 x[b].reshape(-1).double())
        assert torch.allclose(J[b], ref, rtol=1e-4, atol=1e-6)          # float32 network inside
    assert metrics.jacobian(D, x[0], 0.7).shape == (64, 64)
    assert torch.allclose(metrics.jacobian(D, x, torch.full((3,), 0.7), chunk_size=16), J, rtol=1e-4, atol=1e-6)
    W, b = torch.randn(64, 64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    A = denoisers.AffineDenoiser(W, b, (1, 8, 8))
    assert torch.allclose(metrics.jacobian(A, x, 1.0), W.expand(3, -1, -1))
    with torch.inference_mode():                       # callable from inside inference mode too
        assert metrics.jacobian(A, x[:1], 1.0).shape == (1, 64, 64)


def test_jacobian_bad_input():
    A = denoisers.identity
    with pytest.raises(ValueError):
        metrics.jacobian(A, torch.zeros(2, 8, 8, 1, 1), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        metrics.jacobian(A, torch.zeros(2, 1, 8, 8), torch.ones(3))
    with pytest.raises(TypeError):
        metrics.jacobian("not a denoiser", torch.zeros(2, 1, 8, 8), 1.0)
    with pytest.raises(ValueError, match="shape"):
        metrics.jacobian(lambda x, s: x[:, :, :4], torch.zeros(2, 1, 8, 8), 1.0)


def test_effective_rank():
    assert metrics.effective_rank(torch.eye(10), energy=1.0) == 10
    assert metrics.effective_rank(torch.eye(10)) == 10                  # 9 of 10 equal values hold 90 % < 99 %
    assert metrics.effective_rank(torch.outer(torch.ones(5), torch.arange(5.0))) == 1
    M = torch.diag(torch.tensor([10.0, 1.0, 0.01]))
    assert metrics.effective_rank(M) == 1 and metrics.effective_rank(M, 0.999) == 2
    assert metrics.effective_rank(torch.stack([torch.eye(4), M[:3, :3].new_zeros(4, 4) + torch.diag(torch.tensor([1.0, 0, 0, 0]))])) == 2.5
    with pytest.raises(ValueError):
        metrics.effective_rank(torch.zeros(3, 3))
    with pytest.raises(ValueError):
        metrics.effective_rank(torch.eye(3), energy=0)


def test_sample_states_follow_the_euler_recurrence(digits):
    G = denoisers.GaussianDenoiser.fit(digits)
    x_T = edm.initial_noise(3, (1, 8, 8), seed=2, dtype=torch.float64)
    final, states = edm.sample(G, x_T, GRID, return_trajectory="states")
    _, den = edm.sample(G, x_T, GRID, return_trajectory=True)
    assert len(states) == len(GRID) and torch.equal(states[0], x_T)
    s = GRID + [0.0]
    for i in range(len(GRID) - 1):
        nxt = states[i] + (s[i + 1] - s[i]) * (states[i] - den[i]) / s[i]
        assert torch.allclose(states[i + 1], nxt, atol=1e-12)
    assert torch.allclose(final, den[-1])
    with pytest.raises(ValueError, match="return_trajectory"):
        edm.sample(G, x_T, GRID, return_trajectory="outputs")


def test_lstsq_affine_dsm(digits):
    run = distill.train_affine_dsm(digits, 1.5, 100, optimizer="lstsq", batch_size=256, seed=3)
    assert run.weight_errors[0] == 1.0 and run.weight_errors[-1] < 0.2
    again = distill.train_affine_dsm(digits, 1.5, 100, optimizer="lstsq", batch_size=256, seed=3)
    assert torch.equal(run.W, again.W) and torch.equal(run.b, again.b)
    G = denoisers.GaussianDenoiser.fit(digits)
    assert torch.allclose(run.b + run.W @ G.mean, G.mean + 0 * G.mean, atol=0.05)   # D(mu) ~ mu, as D_G's
    with pytest.raises(ValueError, match="batch_size"):
        distill.train_affine_dsm(digits, 1.5, 10, optimizer="lstsq")


def test_convdae_shapes_training_and_errors():
    net = nets.build_net("convdae", (1, 8, 8), 8, (1, 2), 1)
    assert net(torch.randn(4, 1, 8, 8), torch.full((4,), 1.5)).abs().max() == 0       # zero-initialised output
    big = nets.build_net("convdae", (3, 32, 32), 8, (1, 2, 2), 2)
    assert big(torch.randn(2, 3, 32, 32), torch.zeros(2)).shape == (2, 3, 32, 32)
    assert nets.count_parameters(nets.ConvDAE(8, 1, 4)) < nets.count_parameters(nets.ConvDAE(8, 1, 8))
    with pytest.raises(ValueError, match="dropout"):
        nets.ConvDAE(8, 1, 4, dropout=0.1)
    with pytest.raises(ValueError, match="divisible"):
        nets.ConvDAE(10, 1, 4, (1, 2, 2))
    with pytest.raises(ValueError, match="built for"):
        net(torch.randn(1, 1, 16, 16), torch.zeros(1))
    spec = dict(dataset="digits", n=64, arch="convdae", model_channels=4, channel_mult=[1, 2], precond="dae",
                dae_sigma=0.5, steps=5, batch_size=8, lr_rampup_steps=1, ema_halflife_steps=2.0)
    D = train.build_denoiser(spec, (1, 8, 8))
    tr = train._Trainer(train.normalize_spec(spec), data.load("digits", n=64), "cpu")
    losses = [tr.one_step() for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses))) and isinstance(D.net, nets.ConvDAE)


def test_expected_to_fail_names_claims_of_this_chapter():
    short = {c.split(".", 1)[1] for c in arch.CLAIM_IDS}
    for name in profiles.NAMES:
        reasons = arch.Settings.for_profile(name).expected_to_fail
        assert set(reasons) <= short, (name, set(reasons) - short)
        assert all(r.strip() for r in reasons.values())


def test_jacobian_of_a_colour_network_in_chunks():
    torch.manual_seed(1)
    D = edm.Precond(nets.ConvDAE(8, 3, 4, (1, 2)), "dae").eval()
    with torch.no_grad():
        D.net.conv_out.weight.normal_(0, 0.1)
    x = torch.randn(2, 3, 8, 8)
    J = metrics.jacobian(D, x, 0.5, chunk_size=50)
    assert J.shape == (2, 192, 192)
    ref = torch.autograd.functional.jacobian(lambda v: D(v.reshape(1, 3, 8, 8), 0.5).reshape(-1),
                                             x[1].reshape(-1).double())
    assert torch.allclose(J[1], ref, rtol=1e-4, atol=1e-6)


def test_every_number_quoted_in_prose_is_glued():
    from test_ch2_memorization import unglued_references
    assert unglued_references("06_architectures_and_jacobians") == []
