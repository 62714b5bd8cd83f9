"""Run files in and out: safetensors bytes with JSON metadata, and metrics.json read back.

runs.save_run writes a folder; load_run reads it back into a ready model.

A run folder holds
  model.safetensors  the weights; string metadata `format`, `vaecli_version`,
                     `config` (TrainConfig JSON) and `metrics` (final test terms JSON)
  metrics.json       the per-epoch history and run facts
  loss.png           train and test curves
  resume.safetensors only while the run is unfinished: the TrainState to continue
                     from (weights, Adam's moments, generator states, the epoch's
                     shuffle), metadata `format: vaecli-resume`, `config`, `progress`
model.safetensors is written last: its presence marks a finished run.
Nothing is ever unpickled.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from vaecli import __version__, atomic
from vaecli.config import TrainConfig
from vaecli.core.model import VAE
from vaecli.engine.factor import discriminator_shapes
from vaecli.engine.records import EpochRecord
from vaecli.engine.state import TrainResult, TrainState
from vaecli.errors import CheckpointError, ConfigError

FORMAT = "vaecli"
RESUME_FORMAT = "vaecli-resume"
MODEL_FILE = "model.safetensors"
RESUME_FILE = "resume.safetensors"
METRICS_FILE = "metrics.json"
LOSS_FIGURE = "loss.png"
SCORES_FILE = "scores.json"  # test metrics by sample count, seed and test set: a cache (runs.stored_scores)


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


def model_bytes(result: TrainResult) -> bytes:
    """model.safetensors' bytes: the weights, and the config and final test terms as metadata."""
    metadata = {
        "format": FORMAT,
        "vaecli_version": __version__,
        "config": result.config.to_json(),
        "metrics": json.dumps(result.final.to_dict()),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    return safetensors_bytes(tensors, metadata=metadata)


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
    return _metadata(_model_path(path), FORMAT, "a vaecli checkpoint")


def _metadata(path: Path, form: str, what: str) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if metadata.get("format") != form:
        raise CheckpointError(f"{path}: not {what} (no 'format: {form}' in its metadata)")
    return metadata


def read_config(path: Path) -> TrainConfig:
    """The TrainConfig stored in a checkpoint, without loading its tensors."""
    path = _model_path(path)
    try:
        return TrainConfig.from_json(read_metadata(path).get("config", ""))
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad config in metadata: {e}") from e


# name -> (shape, safetensors dtype); a shape of None: any length, one dimension
Expected = dict[str, tuple[tuple[int, ...] | None, str]]


def _check_tensors(path: Path, expected: Expected) -> None:
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
            for name, (shape, want) in expected.items():
                piece = f.get_slice(name)
                found, dtype = tuple(piece.get_shape()), piece.get_dtype()
                if (found != shape if shape is not None else len(found) != 1) or dtype != want:
                    needs = f"{want} {list(shape)}" if shape is not None else f"a 1-D {want} tensor"
                    raise CheckpointError(f"{path}: tensor {name} is {dtype} {list(found)}, its config needs {needs}")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from e


def _model_shapes(config: TrainConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict shapes that `config` builds, from a model on the meta device (nothing allocated).

    The VAE has parameters only, no buffers, so this is also the optimizer's order of them.
    """
    with torch.device("meta"):
        return {name: tuple(t.shape) for name, t in VAE(config.model).state_dict().items()}


def _read_tensors(path: Path, names: Iterable[str]) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from e


def _load_weights(path: Path, config: TrainConfig) -> VAE:
    """The model the file holds, built only once its tensors are known to fit the config.

    The shapes the config implies come from a model on the meta device, which
    allocates nothing, so a forged config cannot make us allocate a forged size:
    the file's own tensors, already bounded by its length, must match first.
    """
    shapes = _model_shapes(config)
    _check_tensors(path, {name: (shape, "F32") for name, shape in shapes.items()})
    model = VAE(config.model)
    model.load_state_dict(_read_tensors(path, shapes))
    return model


# the run facts of metrics.json beside its history and config, and the types they must have (None: absent)
INFO_TYPES: dict[str, tuple[type, ...]] = {
    "vaecli_version": (str,),
    "device": (str,),
    "precision": (str,),
    "train_seconds": (int, float),
    "objective": (str,),
    "data": (str,),
}


def _read_history(path: Path) -> tuple[list[EpochRecord], dict[str, Any]]:
    """metrics.json's per-epoch history and run facts, checked as strictly as the weights are."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a vaecli metrics file ({e.__class__.__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise CheckpointError(f"{path}: not a vaecli metrics file (no list of epochs under 'history')")
    for key, types in INFO_TYPES.items():
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            kind = "a number" if float in types else "a string"
            raise CheckpointError(f"{path}: {key!r} must be {kind}, got {value!r}; the run's files were changed")
    try:
        history = [EpochRecord.from_dict(row) for row in data["history"]]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: an epoch of 'history' is not a vaecli record ({e.__class__.__name__}: {e})"
        ) from e
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
        "description": run.config.describe(long=True),
        "objective": run.config.describe_objective(),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "epochs_trained": len(run.history),
        "final": run.final.to_dict() if run.final else None,
        "train_seconds": run.info.get("train_seconds"),
        "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
        "device": run.info.get("device"),
        "data": run.info.get("data"),
        "files": {p.name: p.stat().st_size for p in shown},
    }


def save_state(folder: Path, state: TrainState) -> Path:
    """Write the resumable state of an unfinished fit to `folder`/resume.safetensors, atomically."""
    return atomic.write_bytes(Path(folder) / RESUME_FILE, state_bytes(state))


def state_bytes(state: TrainState) -> bytes:
    """A resume file's bytes: safetensors with the weights, Adam's moments, shuffle, sums and generators."""
    tensors = {f"model.{k}": v for k, v in state.model.items()}
    tensors |= {f"adam.{k}": v for k, v in state.optimizer.items()}
    tensors |= {
        "order": state.order,
        "sums": state.sums,
        "rng.shuffle": state.shuffle_rng,
        "rng.noise": state.noise_rng,
    }
    progress = {
        "epoch": state.epoch,
        "step": state.step,
        "seconds": state.seconds,
        "epoch_seconds": state.epoch_seconds,
        "device": state.device,
        "history": [r.to_dict() for r in state.history],
    }
    metadata = {
        "format": RESUME_FORMAT,
        "vaecli_version": __version__,
        "config": state.config.to_json(),
        "progress": json.dumps(progress),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return safetensors_bytes(tensors, metadata=metadata)


def resume_path(path: Path | str) -> Path:
    """A run folder's resume.safetensors, or the file itself."""
    path = Path(path)
    return path / RESUME_FILE if path.is_dir() else path


@dataclass
class StateHeader:
    """What a resume file's metadata says, read without its tensors."""

    config: TrainConfig
    history: list[EpochRecord]
    numbers: dict[str, int | float]  # epoch, step, seconds, epoch_seconds
    device: str

    @property
    def epoch(self) -> int:
        return int(self.numbers["epoch"])


def read_state_header(path: Path | str) -> StateHeader:
    """The config and progress of an interrupted fit (a run folder or its resume.safetensors), no tensors loaded."""
    path = resume_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (nothing to resume)")
    metadata = _metadata(path, RESUME_FORMAT, "a vaecli resume file")
    try:
        config = TrainConfig.from_json(metadata.get("config", ""))
    except ConfigError as e:
        raise CheckpointError(f"{path}: bad config in metadata: {e}") from e
    try:
        progress = json.loads(metadata.get("progress", ""))
        history = [EpochRecord.from_dict(row) for row in progress["history"]]
        numbers = {k: progress[k] for k in ("epoch", "step", "seconds", "epoch_seconds")}
        device = progress["device"]
        if not (all(isinstance(v, int | float) for v in numbers.values()) and isinstance(device, str)):
            raise ValueError("epoch, step and times must be numbers, device a string")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: bad progress in metadata ({e.__class__.__name__}: {e})") from e
    return StateHeader(config, history, numbers, device)


def load_state(path: Path | str) -> TrainState:
    """The saved state of an interrupted fit (a run folder or its resume.safetensors).

    Every tensor's name, shape and dtype is checked against the stored config
    before any is read, as for model.safetensors.
    """
    path = resume_path(path)
    header = read_state_header(path)
    config, numbers = header.config, header.numbers
    shapes = _model_shapes(config)
    if config.objective == "factor":  # the discriminator's weights and Adam state, after the VAE's
        shapes |= discriminator_shapes(config)
    expected: Expected = {f"model.{name}": (shape, "F32") for name, shape in shapes.items()}
    for index, shape in enumerate(shapes.values()):
        expected |= {f"adam.{index}.step": ((), "F32")}
        expected |= {f"adam.{index}.{moment}": (shape, "F32") for moment in ("exp_avg", "exp_avg_sq")}
    expected |= {"order": (None, "I64"), "sums": (None, "F64"), "rng.shuffle": (None, "U8"), "rng.noise": (None, "U8")}
    _check_tensors(path, expected)
    tensors = _read_tensors(path, expected)
    sums = tensors["sums"]
    if len(sums) == 2:  # (recon, KL), from before the objective was summed too: it was the plain ELBO's total
        sums = torch.cat((sums, sums[:1] + config.lam * sums[1:]))
    if len(sums) != 3:
        raise CheckpointError(f"{path}: tensor sums has {len(sums)} entries; a vaecli resume file has 3")
    return TrainState(
        config=config,
        epoch=header.epoch,
        step=int(numbers["step"]),
        history=header.history,
        model={name: tensors[f"model.{name}"] for name in shapes},
        optimizer={k.removeprefix("adam."): v for k, v in tensors.items() if k.startswith("adam.")},
        order=tensors["order"],
        sums=sums,
        shuffle_rng=tensors["rng.shuffle"],
        noise_rng=tensors["rng.noise"],
        seconds=float(numbers["seconds"]),
        epoch_seconds=float(numbers["epoch_seconds"]),
        device=header.device,
    )
