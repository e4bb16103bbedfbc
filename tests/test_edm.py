import math

import pytest
import torch

from utils.denoisers import GaussianDenoiser
from utils.edm import EDMPrecond, edm_loss, sample, sigma_steps
from utils.nets import UNet


def test_sigma_steps_match_paper_grid():
    s = sigma_steps(10)
    paper = [80.0, 42.415189, 21.108677, 9.723201, 4.066124, 1.501742, 0.469979, 0.116639, 0.020435, 0.002]
    assert s.dtype == torch.float64 and s.shape == (10,)
    assert torch.allclose(s, torch.tensor(paper, dtype=torch.float64), rtol=0, atol=1e-6)  # paper rounds to 6 decimals
    s40 = sigma_steps(40)
    assert abs(s40[1].item() - 69.45) < 0.01 and (s40[1:] < s40[:-1]).all()


@pytest.mark.parametrize("args", [dict(n=0), dict(n=3, sigma_min=0.0), dict(n=3, sigma_min=5.0, sigma_max=1.0)])
def test_sigma_steps_bad(args):
    with pytest.raises((ValueError, TypeError)):
        sigma_steps(**args)


def test_preconditioning_limits():
    pre = EDMPrecond(UNet(8, 1, 8, (1, 2)))
    small = pre.coefficients(torch.tensor([1e-6], dtype=torch.float64))
    assert abs(small[0].item() - 1) < 1e-9 and small[1].item() < 1e-5        # c_skip -> 1, c_out -> 0
    big = pre.coefficients(torch.tensor([1e4], dtype=torch.float64))
    assert big[0].item() < 1e-8 and abs(big[1].item() - 0.5) < 1e-6            # c_out -> sigma_data
    s = torch.tensor([0.7], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = pre.coefficients(s)
    assert math.isclose(c_in.item(), 1 / math.sqrt(0.49 + 0.25))
    assert math.isclose(c_noise.item(), math.log(0.7) / 4)


def test_denoiser_protocol_and_low_noise_identity():
    torch.manual_seed(0)
    pre = EDMPrecond(UNet(8, 1, 8, (1, 2))).eval()
    x = torch.randn(3, 1, 8, 8)
    out = pre(x, 0.5)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert pre(x.double(), torch.tensor([0.1, 1.0, 10.0])).dtype == torch.float64
    assert torch.allclose(pre(x, 1e-6), x, atol=1e-4)          # D -> identity as sigma -> 0


def test_edm_loss_reproducible_and_positive():
    torch.manual_seed(0)
    pre = EDMPrecond(UNet(8, 1, 8, (1, 2)))
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    l1 = edm_loss(pre, x, torch.Generator().manual_seed(3))
    l2 = edm_loss(pre, x, torch.Generator().manual_seed(3))
    assert l1.item() == l2.item() and l1.item() > 0
    l1.backward()
    assert all(p.grad is not None for p in pre.parameters())


def _gauss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 4, 4, generator=g, dtype=torch.float64) * torch.linspace(0.05, 1.0, 16).reshape(1, 1, 4, 4)
    return GaussianDenoiser.fit(x)


def test_euler_and_heun_converge_to_closed_form_flow():
    G = _gauss()
    z = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 80
    exact = G.flow(z, 80.0, 0.0)
    err = {}
    for solver, n in (("euler", 20), ("euler", 400), ("heun", 20), ("heun", 400)):
        err[solver, n] = (sample(G, z, sigma_steps(n), solver) - exact).abs().max().item()
    assert err["euler", 400] < err["euler", 20]
    assert err["heun", 400] < err["heun", 20]
    assert err["heun", 400] < 5e-3 and err["heun", 20] < err["euler", 20]
    # the flow at an intermediate sigma equals integrating only that far
    mid = G.flow(z, 80.0, 1.5)
    assert torch.allclose(G.flow(mid, 1.5, 0.0), exact, atol=1e-10)


def test_euler_last_step_returns_denoiser_output_and_trajectory():
    G = _gauss()
    z = torch.randn(2, 1, 4, 4, dtype=torch.float64) * 80
    s = sigma_steps(10)
    out, traj = sample(G, z, s, "euler", return_trajectory=True)
    assert len(traj) == 10
    assert torch.allclose(out, traj[-1])               # final = D(x_{N-1}; sigma_min)


def test_sample_bad_inputs():
    G = _gauss()
    z = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="solver"):
        sample(G, z, sigma_steps(3), solver="rk4")
    with pytest.raises(ValueError, match="descending"):
        sample(G, z, [1.0, 2.0])
    with pytest.raises(ValueError, match="sigmas"):
        sample(G, z, [1.0, 0.0])
    with pytest.raises(ValueError, match="x_T"):
        sample(G, torch.zeros(2, 16), [1.0])


def test_training_draws_above():
    import math
    from utils.edm import training_draws_above
    assert training_draws_above(math.exp(-1.2), 1000) == pytest.approx(500.0)
    assert training_draws_above(80.0, 10 ** 6) < training_draws_above(1.0, 10 ** 6)
    # paper.md §2.3: P(sigma_train > 4.07) ~ 0.015, P(> 42.4) ~ 1.9e-5
    assert training_draws_above(4.0661, 10 ** 6) == pytest.approx(1.5e4, rel=0.05)
    assert training_draws_above(42.4152, 10 ** 7) == pytest.approx(190, rel=0.05)
    # a fifth of log-uniform draws on [0.002, 80]: P(sigma > 42.4) = 0.2 ln(80/42.4) / ln(40000)
    p = 0.2 * math.log(80 / 42.4152) / math.log(80 / 0.002)
    assert training_draws_above(42.4152, 10 ** 6, uniform_share=0.2) == pytest.approx(10 ** 6 * (p + 0.8 * 1.9e-5), rel=0.05)
    with pytest.raises(ValueError):
        training_draws_above(1.0, 10, uniform_share=1.0)
