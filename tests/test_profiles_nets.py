import pytest
import torch

from utils import profiles
from utils.nets import UNet, count_parameters


def test_resolve():
    assert profiles.resolve("auto").name == ("colab" if torch.cuda.is_available() else "cpu")
    for name in profiles.NAMES:
        p = profiles.resolve(name, allow_cpu=True)
        assert p.name == name and p.train_steps > 0 and len(p.train_sizes) >= 2
        spec = p.train_spec(p.train_sizes[0])
        assert spec["n"] == p.train_sizes[0] and spec["dataset"] == p.dataset
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.resolve("tpu")
    with pytest.raises(TypeError):
        profiles.resolve(3)
    with pytest.raises(AttributeError, match="settings"):
        profiles.resolve("cpu").chapter("ch3")


def test_cpu_ladder_spans_n_below_and_above_d():
    from utils import data
    p = profiles.resolve("cpu")
    c, h, w = data.image_shape(p.dataset)
    d = c * h * w
    assert min(p.train_sizes) < d < max(p.train_sizes)


def test_unet_shapes_and_scale():
    sizes = []
    for mc in (4, 8, 16):
        net = UNet(8, 1, mc, (1, 2, 2))
        out = net(torch.randn(2, 1, 8, 8), torch.zeros(2))
        assert out.shape == (2, 1, 8, 8)
        sizes.append(count_parameters(net))
    assert sizes[0] < sizes[1] < sizes[2]
    assert UNet(32, 3, 8, (1, 2, 2))(torch.randn(1, 3, 32, 32), torch.zeros(1)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("kwargs", [dict(img_resolution=10, channel_mult=(1, 2, 2)), dict(model_channels=0),
                                    dict(channel_mult=()), dict(dropout=1.5)])
def test_unet_bad_config(kwargs):
    args = dict(img_resolution=8, img_channels=1, model_channels=8, channel_mult=(1, 2))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError)):
        UNet(**args)
