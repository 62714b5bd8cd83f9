"""loss.png, the figure every run folder holds, and how vaecli writes a figure (atomic, reproducible bytes).

It lives in the store because whoever finishes a run draws it (runs.save_run);
views/figures.py draws everything else and saves through save() here. Headless:
the Agg backend is chosen before pyplot is imported, unless MPLBACKEND names one.
"""

import io
import os
import threading
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):  # a backend chosen there wins: Jupyter's kernel sets its inline one
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vaecli import atomic  # noqa: E402
from vaecli.config import TrainConfig  # noqa: E402
from vaecli.engine.records import EpochRecord  # noqa: E402
from vaecli.errors import OutputError  # noqa: E402

FORMATS = ("png", "pdf", "svg")
# pyplot's figure registry and rcParams are global: fits finishing side by side (ablate --jobs) draw in turn
DRAWING = threading.Lock()
# fixed metadata, so the same figure gives the same bytes
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


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


def epoch_axis(ax: Axes, last: int) -> None:
    """An x axis of epochs: whole numbers only, and a lone first epoch in the middle, not at 0.96 ... 1.04."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if last == 1:  # the locator falls back to fractions when it finds fewer than two whole numbers
        ax.set_xlim(0.5, 1.5)
        ax.set_xticks([1])


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
        epoch_axis(ax, epochs[-1])
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    final = history[-1].test
    fig.suptitle(
        f"VAE training curves ({config.describe()}); final test: recon {final.recon:.1f}, "
        f"KL {final.kl:.2f}, -ELBO {final.neg_elbo:.1f} nats",
        fontsize=11,
    )
    return fig
