"""Figures of a trained VAE, returned as matplotlib Figures; save() writes them atomically.

Headless: the Agg backend is chosen before pyplot is imported. The numbers and
images behind each figure come from vaecli.latent; this module only draws.
"""

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from vaecli import atomic, latent  # noqa: E402
from vaecli.config import DATASET_TITLES, TrainConfig  # noqa: E402
from vaecli.errors import ConfigError, OutputError  # noqa: E402
from vaecli.metrics import EpochRecord  # noqa: E402
from vaecli.model import VAE  # noqa: E402

if TYPE_CHECKING:
    from vaecli.checkpoint import Run

FORMATS = ("png", "pdf", "svg")
# fixed metadata, so the same figure gives the same bytes
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


def describe(config: TrainConfig) -> str:
    """A short label of a model: 'H=2, lam=1, 20 epochs, MNIST'."""
    data = DATASET_TITLES[config.dataset]
    return f"H={config.model.latent_dim}, lam={config.lam:g}, {config.epochs} epochs, {data}"


def save(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Write `fig` to `path` atomically in the format its extension names, then close it."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        plt.close(fig)
        raise OutputError(f"{path}: unsupported figure format {fmt!r}; use .png, .pdf or .svg")
    buffer = io.BytesIO()
    # a fixed salt: SVG element ids are hashes salted with a random uuid otherwise
    with matplotlib.rc_context({"svg.hashsalt": "vaecli"}):
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_METADATA[fmt])
    plt.close(fig)
    return atomic.write_bytes(path, buffer.getvalue())


def loss_curves(history: list[EpochRecord], config: TrainConfig) -> Figure:
    """Train and test reconstruction, KL and negative ELBO per epoch."""
    epochs = [r.epoch for r in history]
    panels = (
        ("reconstruction (nats)", lambda t: t.recon),
        ("KL to the prior (nats)", lambda t: t.kl),
        ("negative ELBO = recon + KL (nats)", lambda t: t.neg_elbo),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    for ax, (label, value) in zip(axes, panels, strict=True):
        ax.plot(epochs, [value(r.train) for r in history], "o-", ms=3, label="train (running mean)")
        ax.plot(epochs, [value(r.test) for r in history], "s-", ms=3, label="test (end of epoch)")
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    final = history[-1].test
    fig.suptitle(
        f"VAE training curves ({describe(config)}); final test: recon {final.recon:.1f}, "
        f"KL {final.kl:.2f}, -ELBO {final.neg_elbo:.1f} nats",
        fontsize=11,
    )
    return fig


# ---------------------------------------------------------------- figures of a trained model
#
# draw_* functions draw one panel onto a given Axes (to compose figures, e.g. one
# panel per model side by side) and return what they decoded; the full-figure
# functions build on them and add a title naming the model.

CMAP = "gray"  # pixel means: 0 black, 1 white, as MNIST is stored
MINUS = "\N{MINUS SIGN}"


def run_label(run: "Run") -> str:
    """'H=2, lam=1, 20 epochs, MNIST; test -ELBO 143.2 nats' (the -ELBO when the run recorded one)."""
    label = describe(run.config)
    final = run.final
    if final is not None:
        label += f"; test {MINUS}ELBO {final.test.neg_elbo:.1f} nats"
    return label


def _number(value: float) -> str:
    return f"{value:.2f}".replace("-", MINUS)


def _title(fig: Figure, what: str, run: "Run") -> None:
    fig.suptitle(f"{what}\n{run_label(run)}", fontsize=10.5)


def _show(ax: Axes, mosaic: torch.Tensor, **kwargs: Any) -> None:
    ax.imshow(mosaic.numpy(), cmap=CMAP, vmin=0.0, vmax=1.0, **kwargs)


def _tick_indices(n: int, max_ticks: int) -> list[int]:
    """At most `max_ticks` of range(n), evenly strided and centred."""
    step = max(1, math.ceil(n / max_ticks))
    offset = ((n - 1) % step) // 2
    return list(range(offset, n, step))


def draw_samples(ax: Axes, model: VAE, n: int = 64, nrow: int | None = None, seed: int = 0) -> torch.Tensor:
    """n decodes of z ~ N(0, I) as a mosaic on `ax`; returns the codes z (n, H)."""
    images, z = latent.sample_images(model, n, seed)
    _show(ax, latent.tile(images, nrow or latent.default_nrow(n), pad=2))
    ax.set_axis_off()
    return z


def draw_manifold(
    ax: Axes,
    model: VAE,
    n: int = 20,
    dims: tuple[int, int] = (0, 1),
    value_range: tuple[float, float] | None = None,
    max_ticks: int = 20,
    fontsize: float = 7,
) -> latent.LatentGrid:
    """The decoded n x n grid of z on `ax`, each tile at its z; the ticks carry the z values.

    Tile (row r, column c) spans [c, c + 1] x [n - 1 - r, n - r] in axes data
    units; the tick at its centre is labelled with its z value.
    """
    mosaic, grid = latent.manifold_image(model, n, dims, value_range)
    _show(ax, mosaic, extent=(0, n, 0, n))
    ticks = _tick_indices(n, max_ticks)
    centres = [i + 0.5 for i in ticks]
    rotate = 90 if len(ticks) > 10 else 0
    ax.set_xticks(centres, [_number(grid.x_values[i]) for i in ticks], fontsize=fontsize, rotation=rotate)
    ax.set_yticks(centres, [_number(grid.y_values[i]) for i in ticks], fontsize=fontsize)
    ax.set_xlabel(f"z[{grid.dims[0]}]")
    ax.set_ylabel(f"z[{grid.dims[1]}]")
    ax.tick_params(length=2, pad=1.5)
    return grid


def _grid_rule(grid: latent.LatentGrid) -> str:
    if grid.linear:
        return f"z evenly spaced from {_number(grid.x_values[0])} to {_number(grid.x_values[-1])}"
    return f"z = inverse normal CDF of (i + 0.5)/{grid.n}"


def samples(run: "Run", n: int = 64, nrow: int | None = None, seed: int = 0) -> Figure:
    """Figure 2 of the homework: images decoded from random latent points z ~ N(0, I)."""
    nrow = nrow or latent.default_nrow(n)
    rows = math.ceil(n / nrow)
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * nrow), 0.75 * rows + 0.9), layout="constrained")
    draw_samples(ax, run.model, n, nrow, seed)
    _title(fig, f"{n} images decoded from z ~ N(0, I) (pixel means, seed {seed})", run)
    return fig


def latent_grid(
    run: "Run", n: int = 20, dims: tuple[int, int] = (0, 1), value_range: tuple[float, float] | None = None
) -> Figure:
    """Figure 3 of the homework: the 2-D latent manifold, each decoded tile placed at its z."""
    side = min(9.0, max(4.5, 0.4 * n))
    fig, ax = plt.subplots(figsize=(side + 0.6, side + 1.0), layout="constrained")
    grid = draw_manifold(ax, run.model, n, dims, value_range)
    what = f"Latent manifold: {n} x {n} decodes, {_grid_rule(grid)}"
    others = run.config.model.latent_dim - 2
    if others:
        what += f"\nz[{grid.dims[0]}] and z[{grid.dims[1]}] vary; the other {others} dimensions are held at 0"
    _title(fig, what, run)
    return fig


def reconstructions(run: "Run", images: torch.Tensor, n: int = 32, nrow: int = 8, seed: int = 0) -> Figure:
    """n test images (picked by `seed` from images (N, D)), each row of them above its reconstructions."""
    chosen = images[latent.pick(len(images), n, seed)]
    mosaic = latent.reconstruction_image(run.model, chosen, nrow)
    h = run.config.model.image_shape[0]
    pairs = math.ceil(len(chosen) / nrow)
    fig, ax = plt.subplots(figsize=(0.75 * nrow + 1.2, 1.5 * pairs + 1.0), layout="constrained")
    _show(ax, mosaic)
    # label each row at its centre: pairs are (h + 1 + h) tall, 6 pixels apart
    centres, names = [], []
    for k in range(pairs):
        top = k * (2 * h + 1 + 6)
        centres += [top + h / 2 - 0.5, top + h + 1 + h / 2 - 0.5]
        names += ["input", "recon"]
    ax.set_yticks(centres, names, fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    _title(fig, f"Test images (input) and their mean decodings (recon), seed {seed}", run)
    return fig


def traversals(
    run: "Run",
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    index: int = 0,
    top: int | None = None,
    steps: int = 11,
) -> Figure:
    """A row per latent dimension sweeping it from -3 to 3, the others at test image `index`'s mean code.

    Rows are the `top` dimensions by average KL on `images` (all, in order,
    without it); those below 0.01 nats are marked inactive.
    """
    model = run.model
    if not 0 <= index < len(images):
        raise ConfigError(
            f"image index {index} is out of range: the test set has {len(images)} images (0 to {len(images) - 1})"
        )
    mu, logvar = latent.encode_means(model, images)
    kl = latent.kl_per_dim(mu, logvar)
    dims = latent.top_dims(kl, top)
    values = latent.sweep_values(steps)
    mosaic = latent.traversal_image(model, mu[index], dims, values)
    h, w = model.config.image_shape
    source = images[index].detach().cpu().float().reshape(h, w)

    fig, (ax_in, ax) = plt.subplots(
        1,
        2,
        figsize=(0.62 * steps + 3.2, 0.62 * len(dims) + 1.6),
        width_ratios=[1, steps],
        layout="constrained",
    )
    _show(ax_in, source)
    digit = f" (a {int(labels[index])})" if labels is not None else ""
    ax_in.set_title(f"test image\n#{index}{digit}", fontsize=8)
    ax_in.set_axis_off()
    ax_in.set_anchor("N")

    _show(ax, mosaic)
    ax.set_xticks([c * (w + 1) + w / 2 - 0.5 for c in range(steps)], [_number(v) for v in values], fontsize=7)
    ax.set_xlabel("value of the swept dimension")
    centres = [r * (h + 1) + h / 2 - 0.5 for r in range(len(dims))]
    names = [f"z[{d}]  KL {kl[d]:.2f}" if kl[d] >= latent.INACTIVE_KL else f"z[{d}]  inactive" for d in dims]
    ax.set_yticks(centres, names, fontsize=8)
    for tick, d in zip(ax.get_yticklabels(), dims, strict=True):
        if kl[d] < latent.INACTIVE_KL:
            tick.set_color("0.55")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    inactive = int((~latent.active_dims(kl)).sum())
    which = f"the {len(dims)} dimensions with the largest KL" if top is not None else "each latent dimension"
    _title(
        fig,
        f"Latent traversals: {which} swept from {_number(values[0])} to {_number(values[-1])}, the others at "
        f"the mean code of test image #{index}\naverage KL per dimension on the test set; "
        f"{inactive} of {len(kl)} dimensions inactive (KL < {latent.INACTIVE_KL:g} nats)",
        run,
    )
    return fig


def draw_latent(ax: Axes, model: VAE, images: torch.Tensor, labels: torch.Tensor) -> latent.Projection:
    """The mean codes of images (N, D) as points coloured by digit label, with a legend."""
    mu, _ = latent.encode_means(model, images)
    projection = latent.project(mu)
    coords = projection.coords.numpy()
    labels = labels.detach().cpu()
    if coords.shape[1] == 1:  # H = 1: the code on x, the digit (jittered) on y
        jitter = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
        coords = np.stack([coords[:, 0], (labels.double() + jitter).numpy()], axis=1)
    # one scatter in a fixed shuffled order, so no digit is painted over all the others
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    colours = plt.get_cmap("tab10")(labels.numpy() % 10)
    ax.scatter(coords[order, 0], coords[order, 1], c=colours[order], s=2, alpha=0.6, linewidths=0, rasterized=True)
    ax.set_xlabel(projection.axis_labels[0])
    ax.set_ylabel(projection.axis_labels[1] if len(projection.axis_labels) > 1 else "digit (jittered)")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=plt.get_cmap("tab10")(d), label=str(d))
        for d in sorted(set(labels.tolist()))
    ]
    ax.legend(handles=handles, title="digit", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.25)
    return projection


def latent_scatter(run: "Run", images: torch.Tensor, labels: torch.Tensor) -> Figure:
    """The test set's mean codes coloured by digit; principal components for H > 2."""
    fig, ax = plt.subplots(figsize=(7.2, 6.0), layout="constrained")
    projection = draw_latent(ax, run.model, images, labels)
    where = "first two principal components of " if projection.explained else ""
    _title(fig, f"Latent space: {where}the mean codes mu(x) of {len(images):,} test images, coloured by digit", run)
    return fig
