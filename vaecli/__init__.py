"""vaecli: train and understand Variational Autoencoders on MNIST-like data.

    from vaecli import TrainConfig, ModelConfig, train, load_run
    result = train(TrainConfig(model=ModelConfig(latent_dim=2), lam=1.0, epochs=5))

Names are imported on first use, so `import vaecli` (and `vaecli --help`) stays
fast: torch and matplotlib load only when something needs them.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ModelConfig": "vaecli.config",
    "TrainConfig": "vaecli.config",
    "VaeError": "vaecli.errors",
    "VAE": "vaecli.model",
    "kl_divergence": "vaecli.loss",
    "reconstruction_nll": "vaecli.loss",
    "vae_loss": "vaecli.loss",
    "load_dataset": "vaecli.data",
    "train": "vaecli.trainer",
    "Observer": "vaecli.trainer",
    "TrainResult": "vaecli.trainer",
    "TrainState": "vaecli.trainer",
    "Stopped": "vaecli.trainer",
    "StopRequest": "vaecli.interrupt",
    "EpochRecord": "vaecli.metrics",
    "evaluate": "vaecli.metrics",
    "Run": "vaecli.checkpoint",
    "load_run": "vaecli.checkpoint",
    "save_run": "vaecli.checkpoint",
    "load_state": "vaecli.checkpoint",
    "save_state": "vaecli.checkpoint",
    "train_or_reuse": "vaecli.runs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vaecli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
