"""The run store: a config names a folder; a finished run there is reused, not retrained.

A run's folder is `<store>/<name>`, the name showing the config at a glance and
ending in a hash of the full config, e.g. `h2-lam1-e20-s0-1a2b3c4d`.

While a run trains, its folder holds resume.safetensors, rewritten after every
epoch and on Ctrl-C; asking for the same config again continues from it. The
process training a run holds its folder's lock (store/lock.py); another process
asking for it meanwhile waits, then reuses the finished run.
"""

import json
import os
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from vaecli import __version__, atomic
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset, load_for
from vaecli.engine.interrupt import StopRequest, stop_on_sigint
from vaecli.engine.loop import train
from vaecli.engine.observer import Observer
from vaecli.engine.state import Stopped, TrainResult, TrainState
from vaecli.errors import CheckpointError, Interrupted, RunStoreError, TrainingDiverged, VaeError
from vaecli.store import lock as run_lock
from vaecli.store.checkpoint import (
    LOSS_FIGURE,
    METRICS_FILE,
    MODEL_FILE,
    RESUME_FILE,
    SCORES_FILE,
    Run,
    load_run,
    load_state,
    model_bytes,
    read_config,
    read_metadata,
    read_state_header,
    resume_path,
    save_state,
    state_bytes,
)


def default_store() -> Path:
    """VAECLI_RUNS if set, else ./runs."""
    return Path(os.environ.get("VAECLI_RUNS") or "runs").expanduser()


def store_path(store: Path | str | None) -> Path:
    """The run store's folder: `store`, or the default where it is None (the one place that default is taken)."""
    return Path(store) if store is not None else default_store()


def run_name(config: TrainConfig) -> str:
    """`h2-lam1-e20-s0-1a2b3c4d`; an objective other than the plain ELBO shows too: `h50-lam1-iwae5-e20-...`;
    a data set other than MNIST leads: `fashion-h2-...`, `dsprites-h10-...`."""
    prefix = {"fashion-mnist": "fashion-", "dsprites": "dsprites-"}.get(config.dataset, "")
    objective = "".join(
        f"-{part}"
        for part, given in (
            (f"iwae{config.k}", config.objective == "iwae"),
            (f"tc{config.tc_weight:g}", config.objective == "betatc"),
            (f"factor{config.factor_gamma:g}", config.objective == "factor"),
            (f"{config.objective}od{config.dip_offdiag:g}d{config.dip_diag:g}", config.objective in ("dip1", "dip2")),
            (f"wu{config.kl_warmup}", config.kl_warmup > 0),
            (f"fb{config.free_bits:g}", config.free_bits > 0),
            (f"cap{config.capacity:g}", config.capacity > 0),
        )
        if given
    )
    h, lam = config.model.latent_dim, config.lam
    return f"{prefix}h{h}-lam{lam:g}{objective}-e{config.epochs}-s{config.seed}-{config.digest()}"


def run_folder(config: TrainConfig, store: Path | None = None) -> Path:
    return store_path(store) / run_name(config)


def finished_config(folder: Path) -> TrainConfig | None:
    """The config of the finished run in `folder`, or None when there is none."""
    return read_config(folder) if (Path(folder) / MODEL_FILE).is_file() else None


@dataclass
class Outcome:
    run: Run
    reused: bool  # True when a finished run was found and nothing was trained


@dataclass(frozen=True)
class RunRequest:
    """A run asked of the store: its config, where it lives, and how to train it when it is missing.

    `out` names the folder; without it the run goes to its place in `store`. A
    folder holding a run of another config is never overwritten unless `force`.
    `resume`: only continue an interrupted fit, even where an older finished run
    (one being retrained with `force` when it was interrupted) is in the folder too.
    """

    config: TrainConfig
    out: Path | None = None
    store: Path | None = None
    force: bool = False
    resume: bool = False
    device: str = "auto"
    data_dir: Path | None = None
    download: bool | None = None  # None: download only into the default data folder
    precision: str | None = None  # the arithmetic of the config's "auto" when another machine resolved it
    wait: float | None = None  # seconds to wait for another process training this run; None: until it is done

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out is not None else run_folder(self.config, self.store)


def train_or_reuse(
    request: RunRequest | TrainConfig,
    *,
    data: Dataset | None = None,
    observer: Observer | None = None,
    stop: StopRequest | None = None,
    on_wait: Callable[[run_lock.Holder], None] | None = None,
) -> Outcome:
    """The finished run for the request, trained and saved first if there is none.

    An interrupted fit of its config in the folder is continued. `data`: the data
    set, when the caller has it loaded (else it is loaded only if training is
    needed). `stop`: the request that stops the fit, for a caller that catches
    Ctrl-C itself (fits in threads, where no signal handler can be set); without
    it Ctrl-C stops the fit.

    It trains holding the folder's lock. Where another process holds it, this one
    waits (`on_wait(holder)` is told once; `request.wait` bounds the wait, RunBusy
    when it runs out), then reuses the run that process finished, even with `force`
    or `resume`: it is as new as one trained here would be.
    """
    if isinstance(request, TrainConfig):
        request = RunRequest(request)
    config, folder = request.config, request.folder
    if not request.resume and is_finished(config, folder, request.force):
        return Outcome(load_run(folder), reused=True)  # a finished run needs no lock: its model file comes last
    if request.resume and _interrupted_state(folder, config) is None:  # a broken state fails before any data load
        raise RunStoreError(f"{folder}: no interrupted run to resume (no {RESUME_FILE})")
    if data is None:  # before the lock, whose file makes the folder: a missing data set leaves no folder behind
        data = load_for(config, request.data_dir, request.download)
    before = _model_stamp(folder)
    with run_lock.held(folder, request.wait, on_wait, stop) as waited:
        if waited and _model_stamp(folder) not in (None, before) and finished_config(folder) == config:
            return Outcome(load_run(folder), reused=True)  # the process this one waited for finished it
        return _train_here(request, data, observer, stop)


def _train_here(request: RunRequest, data: Dataset, observer: Observer | None, stop: StopRequest | None) -> Outcome:
    """train_or_reuse's part under the folder's lock: continue an interrupted fit, or train one."""
    config, folder = request.config, request.folder
    if request.resume:
        state = _interrupted_state(folder, config)
        if state is None:
            raise RunStoreError(f"{folder}: no interrupted run to resume (no {RESUME_FILE})")
    elif is_finished(config, folder, request.force):
        return Outcome(load_run(folder), reused=True)
    else:
        state = _interrupted_state(folder, config) if not request.force else None
    clear_leftovers(folder)
    writer = StateWriter([folder])
    try:
        with stop_on_sigint() if stop is None else nullcontext(stop) as stop:
            result = train(
                config,
                data,
                device=request.device,
                observer=observer,
                stop=stop,
                resume=state,
                save_state=lambda snapshot: writer(0, snapshot),
                precision=request.precision,
            )
    except Stopped as e:
        writer.save_stopped(e.states)
        raise interrupted(e.state, folder) from None
    except TrainingDiverged as e:
        writer.wait()
        raise diverged_here(e, folder) from None
    except BaseException:  # a second Ctrl-C, say: the last finished epoch's state still lands first
        writer.wait(reraise=False)
        raise
    writer.wait()  # before save_run ends the resume state, which a late write would bring back
    return Outcome(save_run(folder, result), reused=False)


class StateWriter:
    """The resume states of a fit's members, each written into its own folder in the background.

    Each epoch's state is written while the next epoch trains (a 13 MB file and an fsync).
    Call wait() before the run is saved (a late write would bring the resume file back),
    and wait(reraise=False) when another exception is leaving, so the last finished
    epoch's states still land.
    """

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self.writers = [atomic.BackgroundWriter() for _ in folders]

    def __call__(self, member: int, state: TrainState) -> None:
        self.writers[member].write(self.folders[member] / RESUME_FILE, lambda: state_bytes(state))

    def wait(self, reraise: bool = True) -> None:
        for writer in self.writers:
            writer.wait(reraise)

    def save_stopped(self, states: dict[int, TrainState]) -> None:
        """A stop's states, written after the last epoch's, so that they land last."""
        self.wait()
        for member, state in states.items():
            save_state(self.folders[member], state)


def clear_leftovers(folder: Path) -> None:
    """Remove the half-written files of a killed earlier try (a resume state is about 13 MB).

    Call it holding the folder's lock (store/lock.py), so that no other process is writing them.
    """
    atomic.remove_leftovers(folder, (MODEL_FILE, METRICS_FILE, LOSS_FIGURE, RESUME_FILE, SCORES_FILE))


def interrupted(state: TrainState, folder: Path) -> Interrupted:
    """The error of a fit stopped by Ctrl-C whose state was saved in `folder`."""
    return Interrupted(
        f"interrupted at epoch {state.epoch}, step {state.step}; the state is saved in "
        f"{folder / RESUME_FILE}; continue with: vaecli train --resume {folder} (or the same command again)"
    )


def diverged_here(error: TrainingDiverged, folder: Path) -> TrainingDiverged:
    """`error`, saying what stays in `folder`: the last finished epoch's state, if one was saved."""
    kept = folder / RESUME_FILE
    where = f"the last good state (a finished epoch) stays in {kept}" if kept.is_file() else "nothing was saved"
    return TrainingDiverged(f"{error}; {where}")


def save_run(folder: Path, result: TrainResult) -> Run:
    """Finish a run: write metrics.json, loss.png and, last, model.safetensors into `folder`."""
    from vaecli.store import loss_figure  # matplotlib only when a run is finished

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a run folder; choose another `out`")
    info = {
        "vaecli_version": __version__,
        "device": result.device,
        "precision": result.precision,
        "train_seconds": round(result.seconds, 3),
        "objective": result.config.describe_objective(),
        "data": result.dataset_source,
    }
    atomic.write_json(
        folder / METRICS_FILE,
        {**info, "config": result.config.to_dict(), "history": [r.to_dict() for r in result.history]},
    )
    with loss_figure.DRAWING:
        loss_figure.save(loss_figure.loss_curves(result.history, result.config), folder / LOSS_FIGURE)
    (folder / SCORES_FILE).unlink(missing_ok=True)  # scores of the weights this replaces
    atomic.write_bytes(folder / MODEL_FILE, model_bytes(result))
    (folder / RESUME_FILE).unlink(missing_ok=True)  # finished: an interrupted try's state is moot now
    return Run(folder, result.config, result.model, list(result.history), info)


def land_run(folder: Path, files: Mapping[str, bytes]) -> None:
    """Finish a run from its files made elsewhere (a cluster's worker), as save_run does: atomically,
    model.safetensors last, and the scores of the weights it replaces and any resume state gone."""
    clear_leftovers(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCORES_FILE).unlink(missing_ok=True)
    for name in sorted(files, key=lambda name: name == MODEL_FILE):
        if name != RESUME_FILE:
            atomic.write_bytes(folder / name, files[name])
    (folder / RESUME_FILE).unlink(missing_ok=True)


def _model_stamp(folder: Path) -> tuple[int, int] | None:
    """model.safetensors' inode and mtime, None without one: a new one is a new (atomically written) file."""
    try:
        stat = (folder / MODEL_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _interrupted_state(folder: Path, config: TrainConfig) -> TrainState | None:
    """The saved state of an interrupted fit of `config` in `folder`, None when there is none."""
    if not (folder / RESUME_FILE).is_file():
        return None
    try:
        state = load_state(folder)
    except CheckpointError as e:  # a truncated or foreign state: say what to do, rather than fail the same way again
        raise CheckpointError(
            f"{e}; the interrupted run's saved state cannot be continued: add `force` to start this run over"
        ) from None
    if state.config != config:
        raise another_interrupted_run(folder)
    return state


def another_interrupted_run(folder: Path) -> RunStoreError:
    """The error of a folder whose interrupted run has another config than the one asked for."""
    return RunStoreError(
        f"{folder} holds an interrupted run with a different config; continue it with "
        f"vaecli train --resume {folder}, or add `force` to start this one over"
    )


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
        raise RunStoreError(f"{folder} is a file, not a run folder; choose another `out`")
    existing = finished_config(folder)
    if existing is None or force:
        return False
    if existing != config:
        raise RunStoreError(
            f"{folder} already holds a run with a different config; "
            "choose another `out`, or add `force` to overwrite it"
        )
    return True


@dataclass
class StoredRun:
    """One entry of the run store, read from headers only (no tensors loaded)."""

    path: Path
    config: TrainConfig | None
    final: dict | None  # the last epoch's record, as in metrics.json
    modified: float  # model.safetensors' mtime, seconds since the epoch
    problem: str | None = None  # why the entry could not be read, if it could not, or that it is not finished
    training: run_lock.Holder | None = None  # the process training it now, if one is


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` is a run's, finished or not: it holds a model, a resume state or the run's lock file
    (made before training starts, and kept). Other folders in a store, such as ablate's, are not runs."""
    return any((folder / name).is_file() for name in (MODEL_FILE, RESUME_FILE, run_lock.LOCK_FILE))


def list_runs(store: Path | None = None) -> list[StoredRun]:
    """Every run folder in the store, finished or not, newest first; unreadable ones say why.

    An unfinished run is "training" while a live process holds its lock (a finished
    one may be being trained again, with --force), else "interrupted".
    """
    store = store_path(store)
    if store.exists() and not store.is_dir():
        raise RunStoreError(f"{store} is a file, not a run store; give `store` a folder")
    if not store.is_dir():
        return []
    entries = []
    for folder in sorted(p for p in store.iterdir() if p.is_dir() and is_run_folder(p)):
        model = folder / MODEL_FILE
        holder = run_lock.holder(folder)  # probed without waiting
        if not model.is_file():
            entries.append(_unfinished(folder, holder))
            continue
        try:
            metadata = read_metadata(model)
            config = read_config(model)
            final = json.loads(metadata.get("metrics", "null"))
        except (VaeError, json.JSONDecodeError) as e:
            entries.append(StoredRun(folder, None, None, model.stat().st_mtime, str(e), holder))
            continue
        final = final if isinstance(final, dict) else None
        entries.append(StoredRun(folder, config, final, model.stat().st_mtime, training=holder))
    return sorted(entries, key=lambda e: e.modified, reverse=True)


def _unfinished(folder: Path, holder: run_lock.Holder | None) -> StoredRun:
    """A folder without model.safetensors: in training, interrupted (with its config), or just incomplete."""
    if not (folder / RESUME_FILE).is_file():
        modified = folder.stat().st_mtime
        if holder is not None:  # no epoch finished yet, so no state to read the config from
            return StoredRun(folder, None, None, modified, f"training: first epoch, {holder.process}", holder)
        return StoredRun(folder, None, None, modified, "unfinished: no model.safetensors")
    modified = (folder / RESUME_FILE).stat().st_mtime
    try:
        header = read_state_header(folder)
    except VaeError as e:
        state = "training" if holder is not None else "interrupted"
        return StoredRun(folder, None, None, modified, f"{state}, but unreadable: {e}", holder)
    epochs = f"epoch {header.epoch}/{header.config.epochs}"
    where = f"training: {epochs}, {holder.process}" if holder is not None else f"interrupted: {epochs}"
    return StoredRun(folder, header.config, None, modified, where, holder)
