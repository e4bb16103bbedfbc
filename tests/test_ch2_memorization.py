import math

import numpy as np
import pytest
import torch

from utils import edm, metrics, profiles, regimes
from utils.chapters import memorization as gen
from utils.denoisers import EmpiricalDenoiser, GaussianDenoiser


def _images(n, seed=0, side=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g, dtype=torch.float64)


# --------------------------------------------------------------------------- samples

def test_comparison_rows_pick_the_nearest_training_images():
    train = _images(10)
    samples = train[[3, 1, 8]] + 0.01
    ref = -samples
    st = metrics.sample_stats(samples, train)
    rows = gen.comparison_rows(samples, train, ref, st.nn_index, n_show=2)
    assert [r.shape[0] for r in rows] == [2, 2, 2]
    assert torch.equal(rows[1], train[[3, 1]])
    assert torch.equal(rows[2], ref[:2])
    with pytest.raises(ValueError):
        gen.comparison_rows(samples, train, ref[:1], st.nn_index, n_show=3)


# --------------------------------------------------------------------------- denoiser distances

def test_comparable_sigma_and_effective_components():
    grid = edm.sigma_steps(10)
    assert gen.comparable_sigma(4.0, 12288, 12288, grid) == pytest.approx(4.0661, abs=1e-3)
    # 8x8 digits: 4 * sqrt(64 / 12288) = 0.29 -> nearest in log is 0.47; CIFAR-10: 2.0 -> 1.50
    assert gen.comparable_sigma(4.0, 12288, 64, grid) == pytest.approx(0.4700, abs=1e-3)
    assert gen.comparable_sigma(4.0, 12288, 3072, grid) == pytest.approx(1.5017, abs=1e-3)
    G = GaussianDenoiser(torch.zeros(3), torch.tensor([4.0, 1.0, 0.0]), torch.eye(3), (1, 1, 3))
    assert gen.effective_components(G, 1.0) == pytest.approx(0.8 + 0.5)


def test_denoise_rows_and_smooth():
    train = _images(20)
    G = GaussianDenoiser.fit(train)
    x = _images(3, seed=9)
    rows = gen.denoise_rows({"G": G, "id": lambda z, s: z}, x, 1.0)
    assert len(rows) == 3 and torch.equal(rows[0], x) and torch.equal(rows[2], x)
    assert torch.allclose(rows[1], G(x, 1.0))
    per_image = metrics.image_rmse(rows[1], rows[0])
    assert per_image.shape == (3,) and float(per_image.mean()) == pytest.approx(metrics.rmse(G, lambda z, s: z, x, 1.0))
    s = gen.smooth([1.0, 3.0, 5.0, 7.0], window=2)
    assert np.allclose(s, [1.0, 2.0, 4.0, 6.0])
    assert np.allclose(gen.smooth([2.0] * 7, window=50), 2.0)


# --------------------------------------------------------------------------- one model

def test_evaluate_model_tells_a_memorizer_from_a_gaussian_model():
    """D_M as the 'network' memorizes (NN ratio ~ 0, distance to D_M ~ 0); D_G generalizes
    (distance to D_G exactly 0, GL clearly > 0)."""
    train = _images(12, side=4)                      # N = 12 < d = 16
    held = _images(20, seed=3, side=4)
    grid = edm.sigma_steps(10)
    x_T = edm.initial_noise(16, (1, 4, 4), seed=0, dtype=torch.float64)
    D_M, D_G = EmpiricalDenoiser(train), GaussianDenoiser.fit(train)
    R = regimes.from_eigvals(D_G.eigvals)
    mem = gen.evaluate_model(D_M, train, x_T, held, grid, R, seed=0, label="D_M")
    gau = gen.evaluate_model(D_G, train, x_T, held, grid, R, seed=0, label="D_G", D_G=D_G, D_M=D_M)
    assert mem.stats.memorized == 1.0 and mem.stats.gl < 1e-6
    assert np.allclose(mem.rmse_M, 0.0) and mem.rmse_G_intermediate > 0.05
    assert gau.stats.memorized < 0.5 and gau.stats.gl > 0.2
    assert np.allclose(gau.rmse_G, 0.0) and gau.rmse_M_intermediate > 0.05
    assert torch.equal(gau.samples, gau.gaussian_samples) and gau.similarity["cosine"] == pytest.approx(1.0)
    assert mem.n_train == 12 and mem.n_params is None and "D_M" in mem.summary()
    assert mem.rmse_G_intermediate == pytest.approx(R.mean(grid, mem.rmse_G))
    assert mem.rmse_G_inputs.shape == (20, 10)
    assert torch.allclose(gau.samples, edm.sample(D_G, x_T, grid))
    assert math.isfinite(gau.rmse_M_intermediate)




def test_runs_list_the_ladder_and_the_width_sweep():
    P = profiles.resolve("smoke")
    runs = gen.runs(P, seed=0)
    assert [r["n"] for r in runs] == list(P.train_sizes) + [P.scale_n] * len(P.scales)
    assert [r["model_channels"] for r in runs[len(P.train_sizes):]] == list(P.scales)


def test_verdict_helpers():
    assert gen.relative_spread([1.0, 1.1, 0.9]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        gen.relative_spread([1.0])
    st = metrics.sample_stats(_images(30, seed=1), _images(10))
    assert gen.gl_standard_error(st) == pytest.approx(float(st.rel_dist.std()) / math.sqrt(30))
    assert 0 < gen.GL_FAR < 1 and 0 < gen.GL_TOLERANCE < 1 and gen.GENERALIZING < gen.MEMORIZING


def test_report_band_summaries():
    train = _images(12, side=4)
    grid = edm.sigma_steps(10)
    D_G = GaussianDenoiser.fit(train)
    R = regimes.from_eigvals(D_G.eigvals)
    x_T = edm.initial_noise(4, (1, 4, 4), seed=0, dtype=torch.float64)
    rep = gen.evaluate_model(lambda x, s: x, train, x_T, _images(8, seed=3, side=4), grid, R, seed=0, D_G=D_G)
    assert rep.rmse_G_lowest == pytest.approx(rep.rmse_G[-1])
    assert rep.rmse_G_band("intermediate") == pytest.approx(rep.rmse_G_intermediate)
    assert rep.rmse_G_lowest > 0.1            # N = 12 < d = 16: held-out inputs leave the training span


def unglued_references(stem):
    """Names a notebook's markdown quotes with {glue:text}`name` that no glue("name", ...) call of its
    code stores (an f-string name such as f"draws_{s}_edm" matches any word in place of {s})."""
    import json
    import re
    from pathlib import Path
    nb = json.loads((Path(__file__).resolve().parent.parent / "book" / f"{stem}.ipynb").read_text(encoding="utf-8"))
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    used = set(re.findall(r"\{glue:(?:text|md|any)\}`([A-Za-z_][A-Za-z0-9_]*)", md))
    patterns = [re.escape(n) for n in re.findall(r"""\bglue\(\s*["']([^"'{}]+)["']""", code)]
    patterns += [re.sub(r"\\\{[^}]*\\\}", r"\\w+", re.escape(n)) for n in re.findall(r"""\bglue\(\s*f["']([^"']+)["']""", code)]
    return sorted(n for n in used if not any(re.fullmatch(p, n) for p in patterns))


def test_every_number_quoted_in_prose_is_glued():
    assert unglued_references("02_memorization_generalization") == []
