"""The run store: a config names a folder; a finished run there is reused, not retrained.

A run's folder is `<store>/<name>`, the name showing the config at a glance and
ending in a hash of the full config, e.g. `h2-lam1-e20-s0-1a2b3c4d`.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vaecli.checkpoint import MODEL_FILE, Run, load_run, read_config, read_metadata, save_run
from vaecli.config import TrainConfig
from vaecli.data import Dataset, load_dataset
from vaecli.errors import RunStoreError, VaeError
from vaecli.stacked import train_stacked
from vaecli.trainer import Observer, train


def default_store() -> Path:
    """VAECLI_RUNS if set, else ./runs."""
    return Path(os.environ.get("VAECLI_RUNS") or "runs").expanduser()


def run_name(config: TrainConfig) -> str:
    prefix = "fashion-" if config.dataset == "fashion-mnist" else ""
    return f"{prefix}h{config.model.latent_dim}-lam{config.lam:g}-e{config.epochs}-s{config.seed}-{config.digest()}"


def run_folder(config: TrainConfig, store: Path | None = None) -> Path:
    return Path(store or default_store()) / run_name(config)


def finished_config(folder: Path) -> TrainConfig | None:
    """The config of the finished run in `folder`, or None when there is none."""
    return read_config(folder) if (Path(folder) / MODEL_FILE).is_file() else None


@dataclass
class Outcome:
    run: Run
    reused: bool  # True when a finished run was found and nothing was trained


def train_or_reuse(
    config: TrainConfig,
    *,
    out: Path | None = None,
    store: Path | None = None,
    force: bool = False,
    device: str = "auto",
    data: Dataset | None = None,
    data_dir: Path | None = None,
    download: bool | None = None,
    observer: Observer | None = None,
) -> Outcome:
    """The finished run for `config`, trained and saved first if there is none.

    `out` names the folder; without it the run goes to its place in the store.
    A folder holding a run of another config is never overwritten unless `force`.
    """
    folder = Path(out) if out is not None else run_folder(config, store)
    if is_finished(config, folder, force):
        return Outcome(load_run(folder), reused=True)
    if data is None:
        data = load_dataset(config.dataset, data_dir, download_missing=download)
    result = train(config, data, device=device, observer=observer)
    return Outcome(save_run(folder, result), reused=False)


def is_finished(config: TrainConfig, folder: Path, force: bool = False) -> bool:
    """True when `folder` holds the finished run of `config` to reuse; a run of another config there is an error."""
    if folder.exists() and not folder.is_dir():
        raise RunStoreError(f"{folder} is a file, not a run folder; choose another --out")
    existing = finished_config(folder)
    if existing is None or force:
        return False
    if existing != config:
        raise RunStoreError(
            f"{folder} already holds a run with a different config; "
            "choose another --out, or add --force to overwrite it"
        )
    return True


def train_together(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    store: Path | None = None,
    device: str = "auto",
    observer: Observer | None = None,
) -> list[Outcome]:
    """Train the members as one stacked model and save each in its store folder, as train_or_reuse would."""
    results = train_stacked(configs, data, device=device, observer=observer)
    return [Outcome(save_run(run_folder(r.config, store), r), reused=False) for r in results]


@dataclass
class StoredRun:
    """One entry of the run store, read from headers only (no tensors loaded)."""

    path: Path
    config: TrainConfig | None
    final: dict | None  # the last epoch's record, as in metrics.json
    modified: float  # model.safetensors' mtime, seconds since the epoch
    problem: str | None = None  # why the entry could not be read, if it could not


def list_runs(store: Path | None = None) -> list[StoredRun]:
    """Every run folder in the store, finished or not, newest first; unreadable ones say why."""
    store = Path(store or default_store())
    if not store.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in store.iterdir() if p.is_dir()):
        model = folder / MODEL_FILE
        if not model.is_file():
            entries.append(StoredRun(folder, None, None, folder.stat().st_mtime, "unfinished: no model.safetensors"))
            continue
        try:
            metadata = read_metadata(model)
            config = read_config(model)
            final = json.loads(metadata.get("metrics", "null"))
        except (VaeError, json.JSONDecodeError) as e:
            entries.append(StoredRun(folder, None, None, model.stat().st_mtime, str(e)))
            continue
        entries.append(StoredRun(folder, config, final if isinstance(final, dict) else None, model.stat().st_mtime))
    return sorted(entries, key=lambda e: e.modified, reverse=True)
