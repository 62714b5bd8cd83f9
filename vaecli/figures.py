"""Figures of a trained VAE, returned as matplotlib Figures; save() writes them atomically.

Headless: the Agg backend is chosen before pyplot is imported.
"""

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vaecli import atomic  # noqa: E402
from vaecli.config import DATASET_TITLES, TrainConfig  # noqa: E402
from vaecli.errors import OutputError  # noqa: E402
from vaecli.metrics import EpochRecord  # noqa: E402

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
