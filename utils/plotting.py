"""One look for every figure: a seaborn theme, image grids with row labels, sigma-curves on a log axis."""
from __future__ import annotations

import matplotlib

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

SIGMA_LABEL = r"noise level $\sigma$ (std, images in $[-1, 1]$)"


def set_theme() -> None:
    """The book's seaborn theme (call once per notebook; ``utils.book.setup`` does)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.autolayout": False,
                                "axes.titlesize": "medium", "image.cmap": "gray"})
    _sharp_inline_figures()


def _sharp_inline_figures() -> None:
    """In a notebook kernel, draw inline figures as pixel-doubled ("retina") PNGs: sharp on
    high-density screens, shown at their normal size (the PNG carries its display width, which
    MyST-NB keeps). Outside IPython (scripts, tests) nothing happens."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def to_display(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) or (N, H, W) in [0, 1] for imshow."""
    x = images.detach().cpu().to(torch.float32).clamp(-1, 1).add(1).div(2)
    x = x.permute(0, 2, 3, 1).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def image_grid(rows, row_labels=None, col_labels=None, scale: float = 0.9, title: str | None = None):
    """Show a list of image batches as rows of a grid, each row with a label on its left.

    ``rows``: list of (N_i, C, H, W) tensors (N_i may differ; shorter rows leave blanks).
    Returns the matplotlib figure.
    """
    rows = [r for r in rows]
    if not rows:
        raise ValueError("rows must be a non-empty list of image tensors")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels has {len(row_labels)} entries for {len(rows)} rows")
    ncols = max(len(r) for r in rows)
    gap = 0.06                                             # space between images, as a fraction of one
    label_in = 1.7 if row_labels is not None else 0.05     # inches kept for the row labels
    top_in = (0.35 if col_labels is not None else 0.05) + (0.4 if title else 0.0)
    width = label_in + ncols * scale * (1 + gap) + 0.05
    height = top_in + len(rows) * scale * (1 + gap) + 0.05
    fig, axes = plt.subplots(len(rows), ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=label_in / width, right=1 - 0.05 / width, bottom=0.05 / height,
                        top=1 - top_in / height, wspace=gap, hspace=gap)
    for i, r in enumerate(rows):
        imgs = to_display(r)
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([]); ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(imgs):
                ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=9)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def sigma_axis(ax, ylabel: str | None = None, regimes=None):
    """Log-sigma x axis, labelled; with ``regimes`` (a ``utils.regimes.Regimes``, e.g. ``P.regimes``)
    the low / intermediate / high bands of the data are shaded and named."""
    ax.set_xscale("log")
    ax.set_xlabel(SIGMA_LABEL)
    if ylabel:
        ax.set_ylabel(ylabel)
    if regimes is True:
        raise TypeError("regimes must be a utils.regimes.Regimes (e.g. P.regimes) or None, not True")
    if regimes:
        shades = {"low": 0.06, "intermediate": 0.0, "high": 0.06}
        for name, (lo, hi) in regimes.bands.items():
            if shades[name]:
                ax.axvspan(lo, hi, color="grey", alpha=shades[name], lw=0)
            ax.text(np.sqrt(lo * hi), 1.0, name, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, color="0.35")
    return ax


def sigma_curves(ax, sigmas, curves: dict, ylabel: str | None = None, styles: dict | None = None,
                 regimes=None, **kwargs):
    """Plot ``{label: values}`` against ``sigmas`` on a log axis (see :func:`sigma_axis`)."""
    s = np.asarray(torch.as_tensor(sigmas, dtype=torch.float64))
    for label, values in curves.items():
        style = dict(kwargs)
        style.update((styles or {}).get(label, {}))
        ax.plot(s, np.asarray(values, dtype=float), marker=style.pop("marker", "o"),
                ms=style.pop("ms", 3), label=label, **style)
    sigma_axis(ax, ylabel, regimes)
    ax.legend(fontsize=8)
    return ax



def signed_maps(rows, row_labels=None, col_labels=None, shape=None, mark=None, scale: float = 1.0,
                title: str | None = None):
    """Signed maps (e.g. Jacobian rows, sensitivity fields) in the layout of :func:`image_grid`: ``rows``
    is a list of (n_i, d) tensors, each map reshaped to ``shape`` (H, W) and drawn on a diverging scale
    normalized by its own largest |value| (red positive, blue negative, white 0); ``mark`` = (row, col)
    outlines one pixel. Returns the matplotlib figure."""
    from matplotlib.patches import Rectangle

    if not rows or shape is None:
        raise ValueError("rows must be a non-empty list of (n, d) tensors and shape the maps' (H, W)")
    H, W = (int(v) for v in shape)
    maps = [torch.as_tensor(r, dtype=torch.float64).cpu().reshape(len(r), -1)[:, :H * W].reshape(len(r), H, W)
            for r in rows]
    fig = image_grid([torch.zeros(len(m), 1, H, W) for m in maps], row_labels, col_labels, scale, title)
    axes = np.asarray(fig.axes).reshape(len(maps), -1)
    for i, m in enumerate(maps):
        for j in range(len(m)):
            top = float(m[j].abs().max())
            image = axes[i, j].images[0]
            image.set_data((m[j] / top if top > 0 else m[j]).numpy())
            image.set_cmap("RdBu_r")
            image.set_clim(-1, 1)
            if mark is not None:
                axes[i, j].add_patch(Rectangle((mark[1] - 0.5, mark[0] - 0.5), 1, 1, fill=False, ec="k", lw=1.0))
    return fig
