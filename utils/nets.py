"""A small EDM-style U-Net. ``model_channels`` is the paper's "model scale" knob (paper §4.1).

Structure (after NCSN++/DDPM++ in spirit, written from scratch and much smaller): a positional
embedding of the noise label -> MLP; per resolution ``num_blocks`` residual blocks (GroupNorm,
SiLU, 3x3 conv, the embedding added as a per-channel scale and shift); 2x down/up-sampling; skip
connections from encoder to decoder; a final GroupNorm-SiLU-conv to the image channels.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .checks import positive_int


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 2 or g == 1:
            return g
    return 1


def _checked_structure(img_resolution, img_channels, model_channels, channel_mult, num_blocks) -> tuple:
    """The structure arguments of a network checked (positive ints; ``img_resolution`` divisible by
    2^(levels - 1)); returns ``channel_mult`` as a tuple."""
    for name, v in (("img_resolution", img_resolution), ("img_channels", img_channels),
                    ("model_channels", model_channels), ("num_blocks", num_blocks)):
        positive_int(v, name)
    channel_mult = tuple(channel_mult)
    if not channel_mult or any(not isinstance(m, int) or m <= 0 for m in channel_mult):
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {channel_mult}")
    if img_resolution % (2 ** (len(channel_mult) - 1)):
        raise ValueError(f"img_resolution = {img_resolution} must be divisible by "
                         f"2^(len(channel_mult)-1) = {2 ** (len(channel_mult) - 1)}")
    return channel_mult


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar noise label (the c_noise of EDM)."""

    def __init__(self, dim: int, max_positions: int = 10000):
        super().__init__()
        self.dim, self.max_positions = dim, max_positions

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = (1 / self.max_positions) ** freqs
        angles = t.to(torch.float32)[:, None] * freqs[None]
        return torch.cat([angles.cos(), angles.sin()], dim=1).to(t.dtype)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm0 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * out_ch)
        self.norm1 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(h) * (1 + scale) + shift)
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) / math.sqrt(2)


class UNet(nn.Module):
    """``UNet(img_resolution, img_channels, model_channels)``: the raw network F(x_in, c_noise).

    ``img_resolution`` must be divisible by 2^(len(channel_mult) - 1).
    """

    def __init__(self, img_resolution: int, img_channels: int, model_channels: int = 32,
                 channel_mult=(1, 2, 2), num_blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        channel_mult = _checked_structure(img_resolution, img_channels, model_channels, channel_mult, num_blocks)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        emb_dim = 4 * model_channels
        self.embed = PositionalEmbedding(model_channels)
        self.emb_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_ch = [model_channels]
        ch = model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_blocks):
                self.down.append(ResBlock(ch, model_channels * mult, emb_dim, dropout))
                ch = model_channels * mult
                skip_ch.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_ch.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                self.up.append(ResBlock(ch + skip_ch.pop(), model_channels * mult, emb_dim, dropout))
                ch = model_channels * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"the U-Net was built for images (B, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}), got x of shape {tuple(x.shape)} (it halves the size between "
                             f"levels and runs only at the size and channel count it was built for)")
        emb = self.emb_mlp(self.embed(noise_labels))
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDAE(nn.Module):
    """``ConvDAE(img_resolution, img_channels, model_channels)``: a small convolutional denoising
    auto-encoder, the raw network F(x_in, c_noise) of the paper's "DAE-Skip" (App. G.2) in spirit:
    a convolution in; per resolution ``num_blocks`` blocks of [3x3 conv, GroupNorm, a per-channel
    shift from the noise label, LeakyReLU] with a residual connection; a stride-2 convolution down and
    nearest-neighbour upsampling between resolutions, the encoder's features of each resolution
    concatenated on the way up (U-Net skips); and a 3x3 convolution out that also sees the input
    convolution's features (a long skip, so the identity map of low noise is easy to represent).

    Much smaller and simpler than :class:`UNet` (no attention to the embedding beyond a shift, no
    second convolution per block). GroupNorm, not the paper's BatchNorm: the training loop keeps an
    EMA of the parameters only, and BatchNorm's running statistics are buffers it would not average.
    A per-sigma DAE (``precond="dae"``) sees one noise label, so the shift is then a constant bias;
    it makes the network usable with any preconditioning.
    """

    def __init__(self, img_resolution: int, img_channels: int, model_channels: int = 16,
                 channel_mult=(1, 2), num_blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        channel_mult = _checked_structure(img_resolution, img_channels, model_channels, channel_mult, num_blocks)
        if dropout != 0.0:
            raise ValueError(f"ConvDAE has no dropout; got dropout = {dropout}")
        self.img_resolution, self.img_channels = img_resolution, img_channels
        emb_dim = 2 * model_channels
        self.embed = PositionalEmbedding(model_channels)
        self.emb_mlp = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU())
        self.conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)
        widths = [model_channels * m for m in channel_mult]
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        ch = model_channels
        for level, w in enumerate(widths):
            self.enc.append(nn.ModuleList(_DAEBlock(ch if i == 0 else w, w, emb_dim) for i in range(num_blocks)))
            ch = w
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.dec = nn.ModuleList()
        for level in reversed(range(len(widths) - 1)):
            w = widths[level]
            self.dec.append(nn.ModuleList(_DAEBlock(ch + w if i == 0 else w, w, emb_dim) for i in range(num_blocks)))
            ch = w
        self.conv_out = nn.Conv2d(ch + model_channels, img_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)       # starts as the constant 0: no input noise passes at first
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"the ConvDAE was built for images (B, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}), got x of shape {tuple(x.shape)}")
        emb = self.emb_mlp(self.embed(noise_labels))
        h0 = self.conv_in(x)
        h, skips = h0, []
        for level, blocks in enumerate(self.enc):
            for block in blocks:
                h = block(h, emb)
            if level < len(self.down):
                skips.append(h)
                h = self.down[level](h)
        for blocks in self.dec:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.conv_out(torch.cat([h, h0], dim=1))


class _DAEBlock(nn.Module):
    """3x3 conv -> GroupNorm -> + shift(noise label) -> LeakyReLU, with a residual (1x1 conv when the
    width changes)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm = nn.GroupNorm(_groups(out_ch), out_ch)
        self.shift = nn.Linear(emb_dim, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv(x)) + self.shift(emb)[:, :, None, None]
        return F.leaky_relu(h, 0.2) + self.skip(x)


def _unet(image_shape, model_channels, channel_mult, num_blocks, dropout):
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"the U-Net needs square images, got H={h}, W={w}")
    return UNet(h, c, model_channels, tuple(channel_mult), num_blocks, dropout)



def _convdae(image_shape, model_channels, channel_mult, num_blocks, dropout):
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"the ConvDAE needs square images, got H={h}, W={w}")
    return ConvDAE(h, c, model_channels, tuple(channel_mult), num_blocks, dropout)

# Architectures a training spec can name (``spec["arch"]``): name -> builder(image_shape,
# model_channels, channel_mult, num_blocks, dropout) returning a raw network F(x_in, c_noise).
ARCHS = {"unet": _unet}
ARCHS["convdae"] = _convdae      # the small convolutional DAE of chapter 6 (paper App. G.2)


def build_net(arch: str, image_shape, model_channels: int, channel_mult=(1, 2, 2), num_blocks: int = 1,
              dropout: float = 0.0) -> nn.Module:
    """The raw network of architecture ``arch`` (see :data:`ARCHS`) for images of ``image_shape``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    return ARCHS[arch](shape, model_channels, channel_mult, num_blocks, dropout)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
