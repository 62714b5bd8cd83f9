"""The run store: a config names a folder; a finished run there is reused, not retrained.

A run's folder is `<store>/<name>`, the name showing the config at a glance and
ending in a hash of the full config, e.g. `h2-lam1-e20-s0-1a2b3c4d`.

While a run trains, its folder holds resume.safetensors, rewritten after every
epoch and on Ctrl-C; asking for the same config again continues from it.
"""

import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaecli import atomic
from vaecli.checkpoint import (
    LOSS_FIGURE,
    METRICS_FILE,
    MODEL_FILE,
    RESUME_FILE,
    SCORES_FILE,
    Run,
    load_run,
    load_state,
    read_config,
    read_metadata,
    read_state_header,
    resume_path,
    save_run,
    save_state,
    state_bytes,
)
from vaecli.config import TrainConfig
from vaecli.data import Dataset, load_dataset
from vaecli.errors import CheckpointError, ConfigError, Interrupted, RunStoreError, TrainingDiverged, VaeError
from vaecli.interrupt import StopRequest, stop_on_sigint
from vaecli.metrics import RunMetrics, score_run
from vaecli.stacked import train_stacked
from vaecli.trainer import Observer, Stopped, TrainState, train


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
    resume: bool = False,
    stop: StopRequest | None = None,
) -> Outcome:
    """The finished run for `config`, trained and saved first if there is none.

    `out` names the folder; without it the run goes to its place in the store.
    A folder holding a run of another config is never overwritten unless `force`.
    An interrupted fit of `config` in the folder is continued. `resume`: only
    continue one, even where an older finished run (one being retrained with
    `force` when it was interrupted) is in the folder too. `stop`: the request
    that stops the fit, for a caller that catches Ctrl-C itself (fits in threads,
    where no signal handler can be set); without it Ctrl-C stops the fit.
    """
    folder = Path(out) if out is not None else run_folder(config, store)
    if resume:
        state = _interrupted_state(folder, config)
        if state is None:
            raise RunStoreError(f"{folder}: no interrupted run to resume (no {RESUME_FILE})")
    elif is_finished(config, folder, force):
        return Outcome(load_run(folder), reused=True)
    else:
        state = _interrupted_state(folder, config) if not force else None
    if data is None:
        data = load_dataset(config.dataset, data_dir, download_missing=download)
    # half-written files of a killed earlier try (a resume state is about 13 MB)
    atomic.remove_leftovers(folder, (MODEL_FILE, METRICS_FILE, LOSS_FIGURE, RESUME_FILE, SCORES_FILE))
    # each epoch's state is written while the next epoch trains (a 13 MB file and an fsync)
    writer = atomic.BackgroundWriter()
    try:
        with stop_on_sigint() if stop is None else nullcontext(stop) as stop:
            result = train(
                config,
                data,
                device=device,
                observer=observer,
                stop=stop,
                resume=state,
                save_state=lambda snapshot: writer.write(folder / RESUME_FILE, lambda: state_bytes(snapshot)),
            )
    except Stopped as e:
        writer.wait()  # the last epoch's state first, so that the stop's lands last
        save_state(folder, e.state)
        raise Interrupted(
            f"interrupted at epoch {e.state.epoch}, step {e.state.step}; the state is saved in "
            f"{folder / RESUME_FILE}; continue with: vaecli train --resume {folder} (or the same command again)"
        ) from None
    except TrainingDiverged as e:
        writer.wait()
        kept = folder / RESUME_FILE
        where = f"the last good state (a finished epoch) stays in {kept}" if kept.is_file() else "nothing was saved"
        raise TrainingDiverged(f"{e}; {where}") from None
    except BaseException:  # a second Ctrl-C, say: the last finished epoch's state still lands first
        writer.wait(reraise=False)
        raise
    writer.wait()  # before save_run ends the resume state, which a late write would bring back
    return Outcome(save_run(folder, result), reused=False)


def _interrupted_state(folder: Path, config: TrainConfig) -> TrainState | None:
    """The saved state of an interrupted fit of `config` in `folder`, None when there is none."""
    if not (folder / RESUME_FILE).is_file():
        return None
    state = load_state(folder)
    if state.config != config:
        raise RunStoreError(
            f"{folder} holds an interrupted run with a different config; continue it with "
            f"vaecli train --resume {folder}, or add --force to start this one over"
        )
    return state


def resume_config(path: Path) -> tuple[Path, TrainConfig]:
    """The run folder and config of the interrupted run at `path` (a folder or its resume file)."""
    file = resume_path(path)
    folder = file.parent
    if not file.is_file():
        if (folder / MODEL_FILE).is_file():
            raise RunStoreError(f"{folder} is finished; nothing to resume")
        raise CheckpointError(f"{file}: no such file (not an interrupted vaecli run)")
    if file.name != RESUME_FILE:
        raise CheckpointError(f"{file}: a resume file must be named {RESUME_FILE}, inside its run folder")
    return folder, read_state_header(file).config


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


def train_in_threads(
    configs: Sequence[TrainConfig],
    data: Dataset,
    *,
    jobs: int,
    store: Path | None = None,
    force: bool = False,
    device: str = "cpu",
    observers: Sequence[Observer | None] | None = None,
) -> list[Outcome]:
    """train_or_reuse for each config, `jobs` fits at a time, each in a thread of its own on one CPU thread.

    A small model's step keeps two cores only partly busy (the elementwise work between
    its matmuls barely gains from a second thread), so one-thread fits side by side
    finish more per second. One thread each, because a two-thread OpenMP team started
    from another thread, once the main thread has a team of its own, ran the step at
    about half speed on a 2-core CPU (4.7 s an epoch against 2.4). Each fit ends as it
    would alone, bit for bit: its own generators, and CPU kernels that do not depend on
    the thread count (tested for 1 and 2). Ctrl-C stops every fit after its batch; each
    saves its state and Interrupted is raised. An error of one fit is raised once the
    others have ended. `jobs` 1: one after another in this thread, on all of its threads.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1:
        return [
            train_or_reuse(c, store=store, force=force, device=device, data=data, observer=o)
            for c, o in zip(configs, observers or [None] * len(configs), strict=True)
        ]
    outcomes: dict[int, Outcome] = {}
    errors: dict[int, BaseException] = {}
    waiting = list(range(len(configs)))
    lock = threading.Lock()
    threads_before = torch.get_num_threads()

    def work(stop: StopRequest) -> None:
        while True:
            with lock:
                if not waiting or stop.requested:
                    return
                index = waiting.pop(0)
            observer = observers[index] if observers is not None else None
            try:
                outcomes[index] = train_or_reuse(
                    configs[index], store=store, force=force, device=device, data=data, observer=observer, stop=stop
                )
            except BaseException as e:  # raised in the caller's thread below
                errors[index] = e

    with stop_on_sigint() as stop:
        torch.set_num_threads(1)  # a new thread takes the intra-op thread count set last: set it first
        try:
            workers = [
                threading.Thread(target=work, args=(stop,), name=f"vaecli: fit {k + 1}")
                for k in range(min(jobs, len(configs)))
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            stop.request()  # a KeyboardInterrupt above (a second Ctrl-C): the fits stop after their batch too
            torch.set_num_threads(threads_before)
    if any(isinstance(e, Interrupted) for e in errors.values()):
        raise Interrupted("interrupted; every fit in training saved its state; run the same command again to continue")
    if errors:
        raise errors[min(errors)]
    return [outcomes[i] for i in range(len(configs))]


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
            entries.append(_unfinished(folder))
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


def _unfinished(folder: Path) -> StoredRun:
    """A folder without model.safetensors: interrupted (with its config) or just incomplete."""
    if not (folder / RESUME_FILE).is_file():
        return StoredRun(folder, None, None, folder.stat().st_mtime, "unfinished: no model.safetensors")
    modified = (folder / RESUME_FILE).stat().st_mtime
    try:
        header = read_state_header(folder)
    except VaeError as e:
        return StoredRun(folder, None, None, modified, f"interrupted, but unreadable: {e}")
    where = f"interrupted: epoch {header.epoch}/{header.config.epochs}"
    return StoredRun(folder, header.config, None, modified, where)


def stored_scores(
    run: Run,
    data: Dataset,
    iw_samples: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> RunMetrics:
    """score_run of a stored run, kept in its folder's scores.json so that asking again costs nothing.

    The key names the sample count, the seed and a hash of the test images;
    save_run deletes the file, so a retrained run is scored afresh. A lone
    model file (no metrics.json beside it) is scored but nothing is written.
    """
    key = f"iw{iw_samples}-seed{seed}-test-{_digest(data.test.images)}"
    path = run.path / SCORES_FILE
    cached = _read_scores(path)
    if key in cached:
        try:
            return RunMetrics(**cached[key])
        except TypeError:
            pass  # written by another version: score again
    metrics = score_run(run.model, run.config, data, iw_samples, seed, device, progress)
    if (run.path / METRICS_FILE).is_file():
        atomic.write_json(path, {**cached, key: metrics.to_dict()})
    return metrics


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _read_scores(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a cache: missing or damaged means score again
    return data if isinstance(data, dict) else {}
