"""Figures of a trained VAE, returned as matplotlib Figures; save() writes them atomically.

The numbers and images behind each figure come from vaecli.core.latent; this
module only draws what it is given. Headless: store/loss_figure.py, imported
first, chooses the Agg backend before pyplot is imported.
"""

import math
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vaecli.choices import CLASS_NAMES, LABEL_NAMES
from vaecli.core import latent
from vaecli.core.images import ImageRows
from vaecli.core.model import VAE
from vaecli.errors import ConfigError
from vaecli.store.loss_figure import DRAWING, FORMATS, epoch_axis, loss_curves, save

if TYPE_CHECKING:
    from vaecli.store.checkpoint import Run
    from vaecli.studies.sweep import Member

__all__ = ["DRAWING", "FORMATS", "loss_curves", "save"]  # re-exported: one place to save figures

# ---------------------------------------------------------------- figures of a trained model
#
# draw_* functions draw one panel onto a given Axes (to compose figures, e.g. one
# panel per model side by side) and return what they decoded. The full-figure
# functions build on them, add a title naming the model, and size each mosaic
# to a whole number of screen pixels per image pixel at save()'s dpi, so digits
# stay crisp (nearest-neighbour) and PNGs small.

CMAP = "gray"  # pixel means: 0 black, 1 white, as MNIST is stored
MINUS = "\N{MINUS SIGN}"
DPI = 120  # save()'s default, which the full figures are laid out for


def class_name(dataset: str, label: int) -> str:
    """'7' for MNIST's digit 7; 'heart' for dSprites' shape 2."""
    names = CLASS_NAMES.get(dataset)
    return names[label] if names else str(label)


def run_label(run: "Run") -> str:
    """'H=2, lam=1, 20 epochs, MNIST; test -ELBO 143.2 nats' (the -ELBO when the run recorded one)."""
    label = run.config.describe()
    final = run.final
    if final is not None:
        label += f"; test {MINUS}ELBO {final.test.neg_elbo:.1f} nats"
    return label


def _number(value: float | torch.Tensor) -> str:
    """2.5 -> '2.50', -1.2 -> '\N{MINUS SIGN}1.20', as matplotlib writes numbers; never '\N{MINUS SIGN}0.00'."""
    text = f"{float(value):.2f}"
    return "0.00" if text == "-0.00" else text.replace("-", MINUS)


def _show(ax: Axes, mosaic: torch.Tensor, **kwargs: Any) -> None:
    ax.imshow(mosaic.numpy(), cmap=CMAP, vmin=0.0, vmax=1.0, **kwargs)


def _tick_indices(n: int, max_ticks: int) -> list[int]:
    """At most `max_ticks` of range(n), evenly strided and centred."""
    step = max(1, math.ceil(n / max_ticks))
    offset = ((n - 1) % step) // 2
    return list(range(offset, n, step))


def _scale(mosaic: torch.Tensor, target: int) -> int:
    """Screen pixels per image pixel that bring the mosaic's longer side nearest `target` pixels."""
    return max(1, round(target / max(mosaic.shape)))


class _Layout:
    """A figure of fixed margins (inches) around panels of exact pixel sizes, placed left to right."""

    def __init__(
        self, panels: list[tuple[int, int]], left: float, right: float, bottom: float, top: float, gap: float = 0.0
    ):
        self.sizes = [(w / DPI, h / DPI) for w, h in panels]  # (width, height) in inches
        self.width = left + sum(w for w, _ in self.sizes) + gap * (len(panels) - 1) + right
        self.height = bottom + max(h for _, h in self.sizes) + top
        self.left, self.bottom, self.gap = left, bottom, gap
        self.fig = plt.figure(figsize=(self.width, self.height))

    def axes(self) -> list[Axes]:
        """One Axes per panel, top-aligned."""
        x, top = self.left, self.bottom + max(h for _, h in self.sizes)
        placed = []
        for w, h in self.sizes:
            placed.append(self.fig.add_axes((x / self.width, (top - h) / self.height, w / self.width, h / self.height)))
            x += w + self.gap
        return placed

    def title(self, what: str, run: "Run", over: Axes) -> None:
        """Centred over the Axes `over`."""
        box = over.get_position()
        self.fig.suptitle(f"{what}\n{run_label(run)}", x=(box.x0 + box.x1) / 2, y=1 - 0.1 / self.height, fontsize=10.5)


def _pixels(mosaic: torch.Tensor, scale: int) -> tuple[int, int]:
    return mosaic.shape[1] * scale, mosaic.shape[0] * scale


def _samples_mosaic(model: VAE, n: int, nrow: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, z = latent.sample_images(model, n, seed)
    return latent.tile(images, nrow or latent.default_nrow(n), pad=2), z


def draw_samples(
    ax: Axes, model: VAE, n: int = 64, nrow: int | None = None, seed: int = 0, interpolation: str = "antialiased"
) -> torch.Tensor:
    """n decodes of z ~ N(0, I) as a mosaic on `ax`; returns the codes z (n, H)."""
    mosaic, z = _samples_mosaic(model, n, nrow, seed)
    _show(ax, mosaic, interpolation=interpolation)
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
    interpolation: str = "antialiased",
) -> latent.LatentGrid:
    """The decoded n x n grid of z on `ax`, each tile at its z; the ticks carry the z values.

    Tile (row r, column c) spans [c, c + 1] x [n - 1 - r, n - r] in data units;
    the tick at its centre is labelled with its z value.
    """
    mosaic, grid = latent.manifold_image(model, n, dims, value_range)
    _show(ax, mosaic, extent=(0, n, 0, n), interpolation=interpolation)
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
    mosaic, _ = _samples_mosaic(run.model, n, nrow, seed)
    layout = _Layout([_pixels(mosaic, _scale(mosaic, 700))], left=0.1, right=0.1, bottom=0.1, top=0.65)
    (ax,) = layout.axes()
    draw_samples(ax, run.model, n, nrow, seed, interpolation="nearest")
    layout.title(f"{n} images decoded from z ~ N(0, I) (pixel means, seed {seed})", run, ax)
    return layout.fig


def latent_grid(
    run: "Run", n: int = 20, dims: tuple[int, int] = (0, 1), value_range: tuple[float, float] | None = None
) -> Figure:
    """Figure 3 of the homework: the 2-D latent manifold, each decoded tile placed at its z."""
    mosaic, _ = latent.manifold_image(run.model, n, dims, value_range)
    others = run.config.model.latent_dim - 2
    layout = _Layout(
        [_pixels(mosaic, _scale(mosaic, 1000))], left=0.75, right=0.15, bottom=0.75, top=0.85 if others else 0.65
    )
    (ax,) = layout.axes()
    grid = draw_manifold(ax, run.model, n, dims, value_range, interpolation="nearest")
    what = f"Latent manifold: {n} x {n} decodes, {_grid_rule(grid)}"
    if others:
        what += f"\nz[{grid.dims[0]}] and z[{grid.dims[1]}] vary; the other {others} dimensions are held at 0"
    layout.title(what, run, ax)
    return layout.fig


def _hide_frame(ax: Axes) -> None:
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def reconstructions(run: "Run", images: ImageRows, n: int = 32, nrow: int = 8, seed: int = 0) -> Figure:
    """n test images (picked by `seed` from images (N, D)), each row of them above its reconstructions."""
    chosen = images[latent.pick(len(images), n, seed)]
    pad, gap = 1, 6
    mosaic = latent.reconstruction_image(run.model, chosen, nrow, pad=pad, gap=gap)
    layout = _Layout([_pixels(mosaic, _scale(mosaic, 750))], left=0.6, right=0.1, bottom=0.1, top=0.65)
    (ax,) = layout.axes()
    _show(ax, mosaic, interpolation="nearest")
    h = run.config.model.image_shape[0]
    centres, names = [], []
    for k in range(math.ceil(len(chosen) / nrow)):
        top = k * (2 * h + pad + gap)
        centres += [top + (h - 1) / 2, top + h + pad + (h - 1) / 2]
        names += ["input", "recon"]
    ax.set_yticks(centres, names, fontsize=8)
    ax.set_xticks([])
    _hide_frame(ax)
    layout.title(f"Test images (input) and their mean decodings (recon), seed {seed}", run, ax)
    return layout.fig


def traversals(
    run: "Run",
    images: ImageRows,
    labels: torch.Tensor | None = None,
    index: int = 0,
    top: int | None = None,
    steps: int = 11,
    captures: list[tuple[str, float]] | None = None,
) -> Figure:
    """A row per latent dimension sweeping it from -3 to 3, the others at test image `index`'s mean code.

    Rows are the `top` dimensions by average KL on `images` (all, in order,
    without it); those below 0.01 nats are marked inactive. `captures`: per
    latent, the factor it holds most about and the share of that factor's
    entropy (factor_scores.MutualInformation.captures), written on its row.
    """
    model = run.model
    if not 0 <= index < len(images):
        raise ConfigError(f"image index {index} is out of range: the test set has {len(images)} images")
    mu, logvar = latent.encode_means(model, images)
    kl = latent.kl_per_dim(mu, logvar)
    dims = latent.top_dims(kl, top)
    values = latent.sweep_values(steps)
    pad = 1
    mosaic = latent.traversal_image(model, mu[index], dims, values, pad=pad)
    h, w = model.config.image_shape
    source = images[index].detach().cpu().float().reshape(h, w)
    scale = _scale(mosaic, 1000)

    layout = _Layout(
        [_pixels(source, scale), _pixels(mosaic, scale)], left=0.1, right=0.15, bottom=0.6, top=1.2, gap=1.35
    )
    ax_in, ax = layout.axes()
    _show(ax_in, source, interpolation="nearest")
    digit = f" (a {class_name(run.config.dataset, int(labels[index]))})" if labels is not None else ""
    ax_in.set_title(f"test image\n#{index}{digit}", fontsize=8)
    ax_in.set_axis_off()

    _show(ax, mosaic, interpolation="nearest")
    ax.set_xticks([c * (w + pad) + (w - 1) / 2 for c in range(steps)], [_number(v) for v in values], fontsize=7)
    ax.set_xlabel("value of the swept dimension")
    active = latent.active_dims(kl)
    centres = [r * (h + pad) + (h - 1) / 2 for r in range(len(dims))]
    names = [f"z[{d}]  KL {kl[d]:.2f}" if active[d] else f"z[{d}]  inactive" for d in dims]
    if captures is not None:  # the factor each row moves, by mutual information
        names = [f"{name}\n{captures[d][0]} ({captures[d][1]:.0%})" for name, d in zip(names, dims, strict=True)]
    ax.set_yticks(centres, names, fontsize=8)
    for tick, d in zip(ax.get_yticklabels(), dims, strict=True):
        if not active[d]:
            tick.set_color("0.55")
    _hide_frame(ax)
    which = f"the {len(dims)} dimensions with the largest KL" if top is not None else "each latent dimension"
    layout.title(
        f"Latent traversals: {which} swept from {_number(values[0])} to {_number(values[-1])},\nthe others at "
        f"the mean code of test image #{index}; KL is the average on the test set;\n"
        f"{int((~active).sum())} of {len(kl)} dimensions inactive (KL < {latent.INACTIVE_KL:g} nats)"
        + (
            ""
            if captures is None
            else ";\nunder each row: the factor it holds most about, as a share of that factor's entropy"
        ),
        run,
        ax,
    )
    return layout.fig


def draw_latent(
    ax: Axes, model: VAE, images: ImageRows, labels: torch.Tensor, dataset: str = "mnist"
) -> latent.Projection:
    """The mean codes of images (N, D) as points coloured by label (the digit, or `dataset`'s), with a legend."""
    what = LABEL_NAMES[dataset]
    mu, _ = latent.encode_means(model, images)
    projection = latent.project(mu)
    coords = projection.coords.numpy()
    labels = labels.detach().cpu()
    if coords.shape[1] == 1:  # H = 1: the code on x, the digit (jittered) on y
        jitter = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
        coords = np.stack([coords[:, 0], (labels.double() + jitter).numpy()], axis=1)
    # one scatter in a fixed shuffled order, so no digit is painted over all the others
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).numpy()
    palette = plt.get_cmap("tab10")
    colours = palette(labels.numpy() % 10)
    ax.scatter(coords[order, 0], coords[order, 1], c=colours[order], s=2, alpha=0.6, linewidths=0, rasterized=True)
    ax.set_xlabel(projection.axis_labels[0])
    ax.set_ylabel(projection.axis_labels[1] if len(projection.axis_labels) > 1 else f"{what} (jittered)")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=palette(d % 10), label=class_name(dataset, d))
        for d in sorted(set(labels.tolist()))
    ]
    ax.legend(handles=handles, title=what, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(alpha=0.25)
    return projection


def latent_scatter(run: "Run", images: ImageRows, labels: torch.Tensor) -> Figure:
    """The test set's mean codes coloured by label (the digit); principal components for H > 2."""
    fig, ax = plt.subplots(figsize=(7.2, 6.0), layout="constrained")
    projection = draw_latent(ax, run.model, images, labels, run.config.dataset)
    where = "first two principal components of " if projection.explained else ""
    fig.suptitle(
        f"Latent space: {where}the mean codes mu(x) of {len(images):,} test images, "
        f"coloured by {LABEL_NAMES[run.config.dataset]}\n"
        f"{run_label(run)}",
        fontsize=10.5,
    )
    return fig


# ---------------------------------------------------------------- ablations: one panel per member


def _panel_title(member: "Member", varies: list[str]) -> str:
    if member.metrics is None:
        raise ConfigError(f"{member.path}: not scored; the comparison figures need every member's test metrics")
    return f"{member.label(varies)}\ntest {MINUS}ELBO {member.metrics.neg_elbo:.1f}"


def _model(member: "Member") -> VAE:
    if member.model is None:
        raise ConfigError(f"{member.path}: no trained model to draw (a failed member has none)")
    return member.model


PANELS_PER_ROW = 6  # a sweep's panels wrap after this many, so that 50 members make a readable page, not a strip


def _panels(count: int, width: float, height: float, **settings: Any) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels of `width` x `height` inches, PANELS_PER_ROW to a row; the unused cells of
    the last row are hidden."""
    columns = min(count, PANELS_PER_ROW)
    rows = math.ceil(count / columns)
    fig, grid = plt.subplots(
        rows,
        columns,
        figsize=(width * columns + 0.4, height * rows + 0.5),
        layout="constrained",
        squeeze=False,
        **settings,
    )
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def compare_samples(members: list["Member"], varies: list[str], n: int = 64, seed: int = 0) -> Figure:
    """Problem 2: random samples of every member side by side, the same z draws where H agrees."""
    fig, axes = _panels(len(members), 3.1, 3.4)
    for ax, member in zip(axes, members, strict=True):
        draw_samples(ax, _model(member), n, seed=seed)
        ax.set_title(_panel_title(member, varies), fontsize=9.5)
    fig.suptitle(f"Images decoded from z ~ N(0, I), seed {seed}: one panel per member", fontsize=11)
    return fig


def compare_manifolds(members: list["Member"], varies: list[str], n: int = 15) -> Figure:
    """Problem 3: the 2-D manifold of every H = 2 member, all on the same inverse-CDF grid."""
    fig, axes = _panels(len(members), 3.6, 3.9)
    for k, (ax, member) in enumerate(zip(axes, members, strict=True)):
        draw_manifold(ax, _model(member), n, max_ticks=7, fontsize=6)
        ax.set_title(_panel_title(member, varies), fontsize=9.5)
        ax.set_xlabel(ax.get_xlabel(), fontsize=9)
        # one grid for all: the first panel of each row names the vertical axis, the rest keep only its values
        ax.set_ylabel(ax.get_ylabel() if k % PANELS_PER_ROW == 0 else "", fontsize=9)
    fig.suptitle(f"2-D latent manifolds, {n} x {n} decodes at z = inverse normal CDF of (i + 0.5)/{n}", fontsize=11)
    return fig


def compare_reconstructions(members: list["Member"], varies: list[str], images: ImageRows, n: int = 10) -> Figure:
    """The same n test images (top row) and each member's reconstruction of them, one row per member."""
    chosen = images[latent.pick(len(images), n, seed=0)]
    rows = [("test images", chosen)] + [
        (member.label(varies), latent.reconstruct(_model(member), chosen)) for member in members
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.8 * n + 1.6, 0.85 * len(rows) + 0.6), layout="constrained")
    side = int(math.isqrt(chosen.shape[1]))
    for ax, (label, pictures) in zip(np.atleast_1d(axes), rows, strict=True):
        _show(ax, latent.tile(pictures.reshape(-1, side, side), nrow=n, pad=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Reconstructions (pixel means of the decoded mean code) of the same test images", fontsize=11)
    return fig


def kl_per_dim_bars(members: list["Member"], varies: list[str], kl_per_dim: list[list[float]]) -> Figure:
    """Each member's average KL per latent dimension, largest first: how many dimensions carry information."""
    fig, axes = _panels(len(members), 3.0, 2.9, sharey=True)
    for ax, member, kl in zip(axes, members, kl_per_dim, strict=True):
        ranked = sorted(kl, reverse=True)
        colours = ["tab:blue" if v >= latent.INACTIVE_KL else "lightgray" for v in ranked]
        ax.bar(range(1, len(ranked) + 1), ranked, color=colours, width=0.85)
        ax.axhline(latent.INACTIVE_KL, color="gray", lw=0.8, ls="--")
        used = sum(v >= latent.INACTIVE_KL for v in ranked)
        ax.set_title(
            f"{member.label(varies)}\n{used} of {len(ranked)} dims with KL >= {latent.INACTIVE_KL}", fontsize=9
        )
        ax.set_xlabel("latent dimension, by KL")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_ylabel("average KL (nats)")
    fig.suptitle("Average KL to the prior of each latent dimension (grey: inactive)", fontsize=11)
    return fig


def compare_curves(members: list["Member"], varies: list[str]) -> Figure:
    """Test negative ELBO and KL per epoch, one line per member."""
    legend_rows = math.ceil(len(members) / 4) if len(members) > 12 else 0  # below the plots, four columns
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8 + 0.17 * legend_rows), layout="constrained")
    seeds = len({m.config.seed for m in members}) > 1
    for member in members:
        epochs = [r.epoch for r in member.history]
        label = member.label(varies) + (f", seed {member.config.seed}" if seeds else "")
        left.plot(epochs, [r.test.neg_elbo for r in member.history], "o-", ms=3, label=label)
        right.plot(epochs, [r.test.kl for r in member.history], "o-", ms=3, label=label)
    for ax, what in ((left, f"test {MINUS}ELBO = recon + KL (nats)"), (right, "test KL to the prior (nats)")):
        ax.set_title(what, fontsize=10)
        epoch_axis(ax, max(r.epoch for m in members for r in m.history))
        ax.grid(alpha=0.3)
    if not legend_rows:
        left.legend(fontsize=8)
    else:  # a legend of many lines goes below both plots, in columns, instead of covering the left one
        fig.legend(*left.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=7)
    fig.suptitle("Training curves of every member", fontsize=11)
    return fig
