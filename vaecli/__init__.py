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
    "VAE": "vaecli.core.model",
    "kl_divergence": "vaecli.core.loss",
    "reconstruction_nll": "vaecli.core.loss",
    "vae_loss": "vaecli.core.loss",
    "load_dataset": "vaecli.core.data",
    "train": "vaecli.engine.loop",
    "train_stacked": "vaecli.engine.loop",
    "Observer": "vaecli.engine.observer",
    "TrainResult": "vaecli.engine.state",
    "TrainState": "vaecli.engine.state",
    "Stopped": "vaecli.engine.state",
    "StopRequest": "vaecli.engine.interrupt",
    "EpochRecord": "vaecli.engine.records",
    "evaluate": "vaecli.engine.records",
    "Run": "vaecli.store.checkpoint",
    "load_run": "vaecli.store.checkpoint",
    "load_state": "vaecli.store.checkpoint",
    "save_state": "vaecli.store.checkpoint",
    "save_run": "vaecli.store.runs",
    "RunRequest": "vaecli.store.runs",
    "train_or_reuse": "vaecli.store.runs",
    "Sweep": "vaecli.studies.sweep",
    "SweepOptions": "vaecli.studies.sweep",
    "run_sweep": "vaecli.studies.sweep",
    "SweepObserver": "vaecli.studies.observer",
    "OneByOne": "vaecli.studies.executors",
    "SideBySide": "vaecli.studies.executors",
    "Stacked": "vaecli.studies.executors",
}

# short names of the library's modules, so that `from vaecli import figures` works as it always has
_MODULES = {
    "atomic": "vaecli.atomic",
    "config": "vaecli.config",
    "choices": "vaecli.choices",
    "options": "vaecli.options",
    "configfile": "vaecli.configfile",
    "errors": "vaecli.errors",
    "model": "vaecli.core.model",
    "loss": "vaecli.core.loss",
    "data": "vaecli.core.data",
    "latent": "vaecli.core.latent",
    "checkpoint": "vaecli.store.checkpoint",
    "runs": "vaecli.store.runs",
    "sweep": "vaecli.studies.sweep",
    "executors": "vaecli.studies.executors",
    "scores": "vaecli.studies.scores",
    "derive": "vaecli.studies.derive",
    "identities": "vaecli.studies.identities",
    "checks": "vaecli.studies.checks",
    "quadrature": "vaecli.studies.quadrature",
    "figures": "vaecli.views.figures",
    "ablation": "vaecli.views.ablation",
    "explore": "vaecli.views.explore",
    "export": "vaecli.views.export",
}

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'vaecli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
