import os
import tempfile

import pytest
import torch

# Keep tests away from the real artifacts/ and _build/results/ of a developer's checkout.
_TMP = tempfile.mkdtemp(prefix="hgb-tests-")
os.environ.setdefault("HGB_ARTIFACTS", os.path.join(_TMP, "artifacts"))
os.environ.setdefault("HGB_RESULTS_DIR", os.path.join(_TMP, "results"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gaussian_data():
    """Anisotropic Gaussian images (N, 1, 3, 3): a known mean and covariance, d = 9."""
    g = torch.Generator().manual_seed(0)
    d = 9
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / 3
    cov = A @ A.T + 0.05 * torch.eye(d, dtype=torch.float64)
    mean = torch.linspace(-0.3, 0.3, d, dtype=torch.float64)
    return mean, cov, g


def images_from(flat, shape):
    return flat.reshape(len(flat), *shape)
