"""Figures of what a model's latents capture of a data set's known factors (dSprites').

mutual_information: the latent x factor mutual-information matrix, each factor's
column divided by its entropy (so 1 means that latent alone pins the factor
down), as a heatmap. metrics_against: each disentanglement metric of a sweep
against its swept axis, mean and spread over seeds.
"""

import math
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from vaecli.studies.factor_scores import NAMES, TITLES, MutualInformation
from vaecli.views.figures import run_label

if TYPE_CHECKING:
    from vaecli.store.checkpoint import Run
    from vaecli.studies.sweep import Sweep


def mutual_information(run: "Run", info: MutualInformation, split: str) -> Figure:
    """The heatmap of `info` (latent rows, factor columns), each cell its share of the factor's entropy."""
    share = info.normalised
    h, k = share.shape
    fig, ax = plt.subplots(figsize=(1.3 * k + 2.6, 0.42 * h + 2.0), layout="constrained")
    image = ax.imshow(share, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(share):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
    ax.set_xticks(range(k), [f"{n}\n(H = {e:.2f})" for n, e in zip(info.factor_names, info.entropies, strict=True)])
    ax.set_yticks(range(h), [f"z[{d}]" for d in range(h)])
    ax.tick_params(labelsize=8)
    fig.colorbar(image, ax=ax, label="I(z_j; factor) / H(factor)", shrink=0.8)
    fig.suptitle(
        f"What each latent captures: mutual information with each factor, over {info.points:,} {split}\n"
        f"(mean codes in {info.bins} bins, as MIG; a column's largest two give its MIG gap)\n{run_label(run)}",
        fontsize=10,
    )
    return fig


def metrics_against(rows: list[dict[str, Any]], sweep: "Sweep") -> Figure:
    """Each disentanglement metric (a panel) against the sweep's first varied axis, a line per other setting."""
    from vaecli.studies.sweep import AXES

    labels = [AXES[name].label for name, _ in sweep.axes]
    x_label = sweep.varies[0] if sweep.varies else labels[0]
    others = [label for label in labels if label != x_label]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[label] for label in others), []).append(row)
    positions = {value: i for i, value in enumerate(dict.fromkeys(row[x_label] for row in rows))}
    numeric = all(isinstance(v, (int, float)) for v in positions)
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(NAMES) / cols), cols, figsize=(13, 6.2), layout="constrained", squeeze=False)
    for ax, name in zip(axes.flat, NAMES, strict=False):
        for key, group in groups.items():
            xs = [row[x_label] if numeric else positions[row[x_label]] for row in group]
            ys = [row[name] for row in group]
            spread = [row.get(f"{name}_std", math.nan) for row in group]
            label = ", ".join(f"{o}={v}" for o, v in zip(others, key, strict=True)) or None
            if any(s == s for s in spread):
                ax.errorbar(xs, ys, yerr=[0 if s != s else s for s in spread], marker="o", capsize=3, label=label)
            else:
                ax.plot(xs, ys, marker="o", label=label)
        if numeric and len(positions) > 2 and min(positions) > 0 and max(positions) / min(positions) >= 8:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(positions)), [str(v) for v in positions])
        ax.set_title(TITLES[name], fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(NAMES) :]:
        ax.set_axis_off()
    if len(groups) > 1:
        handles, texts = axes.flat[0].get_legend_handles_labels()
        list(axes.flat)[-1].legend(handles, texts, loc="center", fontsize=8)
    seeds = rows[0].get("seeds", 1) if rows else 1
    over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    fig.suptitle(f"Disentanglement metrics against {x_label} ({over}; higher is better)", fontsize=11)
    return fig
