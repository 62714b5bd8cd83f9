"""Run folders: save_run writes, load_run reads back a ready model.

A run folder holds
  model.safetensors  the weights; string metadata `format`, `vaecli_version`,
                     `config` (TrainConfig JSON) and `metrics` (final test terms JSON)
  metrics.json       the per-epoch history and run facts
  loss.png           train and test curves
model.safetensors is written last: its presence marks a finished run.
Nothing is ever unpickled.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from vaecli import __version__, atomic
from vaecli.config import TrainConfig
from vaecli.errors import CheckpointError, ConfigError
from vaecli.metrics import EpochRecord
from vaecli.model import VAE
from vaecli.trainer import TrainResult

FORMAT = "vaecli"
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
LOSS_FIGURE = "loss.png"


@dataclass
class Run:
    """A trained model with the config and history it came from."""

    path: Path  # the run folder
    config: TrainConfig
    model: VAE
    history: list[EpochRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # vaecli_version, device, train_seconds, ...

    @property
    def final(self) -> EpochRecord | None:
        """The last epoch's record: from the history, else (a lone checkpoint file) its metadata."""
        return self.history[-1] if self.history else self.info.get("final")


def save_run(folder: Path, result: TrainResult) -> Run:
    """Write metrics.json, loss.png and, last, model.safetensors into `folder`."""
    from vaecli import figures  # matplotlib only when a figure is drawn

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a run folder; choose another --out")
    info = {
        "vaecli_version": __version__,
        "device": result.device,
        "precision": result.precision,
        "train_seconds": round(result.seconds, 3),
        "data": result.dataset_source,
    }
    atomic.write_json(
        folder / METRICS_FILE,
        {**info, "config": result.config.to_dict(), "history": [r.to_dict() for r in result.history]},
    )
    figures.save(figures.loss_curves(result.history, result.config), folder / LOSS_FIGURE)
    metadata = {
        "format": FORMAT,
        "vaecli_version": __version__,
        "config": result.config.to_json(),
        "metrics": json.dumps(result.final.to_dict()),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    atomic.write_bytes(folder / MODEL_FILE, safetensors_bytes(tensors, metadata=metadata))
    return Run(folder, result.config, result.model, list(result.history), info)


def _model_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
        if not path.is_file():
            raise CheckpointError(f"{path.parent}: no {MODEL_FILE} (not a finished vaecli run)")
    elif not path.exists():
        raise CheckpointError(f"{path}: no such file or run folder")
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The checkpoint's string metadata, read from its header without loading tensors."""
    path = _model_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaecli checkpoint (no 'format: {FORMAT}' in its metadata)")
    return metadata


def read_config(path: Path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint, without loading its tensors."""
    path = _model_path(path)
    try:
        return TrainConfig.from_json(read_metadata(path).get("config", ""))
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad config in metadata: {e}") from e


def _check_tensors(path: Path, expected: dict[str, torch.Size]) -> None:
    """The file's tensor names, shapes and dtypes must be exactly what its config builds."""
    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
            if names != set(expected):
                missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
                raise CheckpointError(
                    f"{path}: tensors do not match its config "
                    f"(missing {missing or 'none'}, unexpected {extra or 'none'})"
                )
            for name, shape in expected.items():
                piece = f.get_slice(name)
                found, dtype = tuple(piece.get_shape()), piece.get_dtype()
                if found != tuple(shape) or dtype != "F32":
                    raise CheckpointError(
                        f"{path}: tensor {name} is {dtype} {list(found)}, its config needs F32 {list(shape)}"
                    )
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from e


def _load_weights(path: Path, config: TrainConfig) -> VAE:
    """The model the file holds, built only once its tensors are known to fit the config.

    The shapes the config implies come from a model on the meta device, which
    allocates nothing, so a forged config cannot make us allocate a forged size:
    the file's own tensors, already bounded by its length, must match first.
    """
    with torch.device("meta"):
        expected = {name: t.shape for name, t in VAE(config.model).state_dict().items()}
    _check_tensors(path, expected)
    model = VAE(config.model)
    try:
        with safe_open(str(path), framework="pt") as f:
            model.load_state_dict({name: f.get_tensor(name) for name in expected})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from e
    return model


def _read_history(path: Path) -> tuple[list[EpochRecord], dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
        history = [EpochRecord.from_dict(row) for row in data["history"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a vaecli metrics file ({e.__class__.__name__}: {e})") from e
    info = {k: v for k, v in data.items() if k not in ("history", "config")}
    return history, info


def _final_from_metadata(path: Path, metadata: dict[str, str]) -> EpochRecord | None:
    """The last epoch's record stored in the checkpoint's metadata, None when absent."""
    if "metrics" not in metadata:
        return None
    try:
        return EpochRecord.from_dict(json.loads(metadata["metrics"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad metrics in metadata ({e.__class__.__name__}: {e})") from e


def load_run(path: Path | str, device: str | torch.device = "cpu") -> Run:
    """Load a run folder or a model.safetensors file into a ready model in eval mode.

    A folder must hold metrics.json too; a lone .safetensors file loads without it.
    """
    model_path = _model_path(Path(path))
    config = read_config(model_path)
    model = _load_weights(model_path, config)
    folder = model_path.parent
    metrics_path = folder / METRICS_FILE
    history: list[EpochRecord] = []
    metadata = read_metadata(model_path)
    info: dict[str, Any] = {"vaecli_version": metadata.get("vaecli_version")}
    if Path(path).is_dir() or metrics_path.is_file():
        if not metrics_path.is_file():
            raise CheckpointError(f"{metrics_path}: missing (the run folder is incomplete)")
        history, info = _read_history(metrics_path)
    else:
        # a lone file still knows its final test terms, e.g. for a figure's title
        info["final"] = _final_from_metadata(model_path, metadata)
    return Run(folder, config, model.to(device).eval(), history, info)


def run_info(path: Path | str) -> dict[str, Any]:
    """What `vaecli info` shows: config, final metrics, timings, files and versions, as JSON-ready data."""
    path = Path(path)
    run = load_run(path)
    shown = (
        [path]
        if path.is_file()
        else sorted(p for p in run.path.iterdir() if p.is_file() and not p.name.startswith("."))
    )
    seconds = [r.seconds for r in run.history]
    return {
        "path": str(path),
        "vaecli_version": run.info.get("vaecli_version"),
        "config": run.config.to_dict(),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "epochs_trained": len(run.history),
        "final": run.final.to_dict() if run.final else None,
        "train_seconds": run.info.get("train_seconds"),
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "device": run.info.get("device"),
        "data": run.info.get("data"),
        "files": {p.name: p.stat().st_size for p in shown},
    }
