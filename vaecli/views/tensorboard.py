"""TensorBoard event files of a fit: each epoch's losses, sample and reconstruction images, the config as hparams.

A run's events go to `<run folder>/tensorboard/`, so `tensorboard --logdir runs` shows every run of the
store, one TensorBoard run each, and its HParams view compares a sweep's members: each run is one session
whose hyperparameters are its config and whose metrics are the last value of each loss (the final epoch's).
Scalars are `train/recon`, `train/kl`, `train/neg_elbo`, `train/objective` and the same for `test/`, at step
= epoch; images `samples` (decoded from a fixed z ~ N(0, I)) and `reconstructions` (fixed test images, their
mean decodings below them) every max(1, epochs // 5) epochs and at the last.

A fresh fit replaces the events an earlier fit left in the folder; a resumed one adds a file whose first
event purges (for TensorBoard's reader) anything logged at or after the epoch it continues, so that no epoch
shows twice. Needs the optional tensorboard package: `pip install 'vaecli[tensorboard]'`.
"""

import threading
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaecli.config import TrainConfig
from vaecli.core import latent
from vaecli.core.images import ImageRows
from vaecli.core.model import VAE
from vaecli.engine.observer import Observer, Observers
from vaecli.engine.records import EpochRecord
from vaecli.errors import MissingExtra
from vaecli.store.checkpoint import Run, load_run
from vaecli.store.runs import run_folder
from vaecli.studies.observer import Placement, SweepObserver

if TYPE_CHECKING:
    from vaecli.engine.state import TrainState
    from vaecli.errors import TrainingDiverged, VaeError
    from vaecli.store.lock import Holder

TENSORBOARD_DIR = "tensorboard"  # inside the run folder
EVENT_FILES = "events.out.tfevents.*"
SAMPLES = 64  # decoded prior samples, 8 x 8
RECONSTRUCTIONS = 16  # test images, two pairs of rows of 8
IMAGE_SEED = 0  # the same z and the same test images at every epoch and in every run, to compare them


def _summary_writer() -> Any:
    """torch's SummaryWriter class, or MissingExtra when the tensorboard package is not installed."""
    try:
        import tensorboard  # noqa: F401  # torch.utils.tensorboard needs it; imported first, so its absence is clear
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise MissingExtra(
            "TensorBoard logging needs the tensorboard package: pip install 'vaecli[tensorboard]'"
        ) from None
    return SummaryWriter


def require_tensorboard() -> None:
    """Raise MissingExtra, naming the extra to install, when tensorboard is missing."""
    _summary_writer()


def log_dir(folder: Path) -> Path:
    """Where the events of the run in `folder` go."""
    return Path(folder) / TENSORBOARD_DIR


def has_events(folder: Path) -> bool:
    """Whether the run in `folder` has TensorBoard events."""
    return any(log_dir(folder).glob(EVENT_FILES))


def draws_images(epoch: int, epochs: int) -> bool:
    """Images every max(1, epochs // 5) epochs and at the last: about five per run."""
    return epoch % max(1, epochs // 5) == 0 or epoch == epochs


def hparams(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The config as flat hyperparameters, every field (defaults too), so that all runs have the same columns."""
    model = config.model
    values: dict[str, bool | int | float | str] = {
        "latent_dim": model.latent_dim,
        "hidden_layers": "-".join(map(str, model.hidden_layers)) or "none",
        "image_shape": "x".join(map(str, model.image_shape)),
        "recon": model.recon,
    }
    values.update({f.name: getattr(config, f.name) for f in fields(config) if f.name != "model"})
    return values


def scalars(record: EpochRecord) -> dict[str, float]:
    """An epoch's losses in nats per image, by tag."""
    values = {}
    for split, terms, objective in (
        ("train", record.train, record.train_objective),
        ("test", record.test, record.test_objective),
    ):
        values[f"{split}/recon"] = terms.recon
        values[f"{split}/kl"] = terms.kl
        values[f"{split}/neg_elbo"] = terms.neg_elbo
        if objective is not None:  # None in records from before the objective was kept
            values[f"{split}/objective"] = objective
    return values


@torch.inference_mode()
def images(model: VAE, test_images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The mosaics to show, (height, width) in [0, 1]: prior samples, and test images above their reconstructions."""
    samples, _ = latent.sample_images(model, SAMPLES, seed=IMAGE_SEED)
    return {
        "samples": latent.tile(samples, latent.default_nrow(SAMPLES), pad=1),
        "reconstructions": latent.reconstruction_image(model, test_images, nrow=8),
    }


def _session_end(status: str) -> Any:
    """The hparams plugin's SessionEndInfo summary: the session's status in the HParams view."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=time.time())
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end)),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


class _Board:
    """One run's event writer, opened at its first event."""

    def __init__(self, config: TrainConfig, folder: Path) -> None:
        self.config, self.folder = config, Path(folder)
        self.writer: Any = None

    def open(self, resume_epoch: int | None) -> Any:
        """The writer; a fresh fit (`resume_epoch` None) first removes what an earlier fit wrote here."""
        if self.writer is None:
            from tensorboard.plugins.hparams import summary_v2

            directory = log_dir(self.folder)
            if resume_epoch is None:
                for old in directory.glob(EVENT_FILES):
                    old.unlink()
            # purge_step: TensorBoard's reader drops events at steps >= it from the files before this one
            self.writer = _summary_writer()(str(directory), purge_step=resume_epoch)
            session = summary_v2.hparams_pb(hparams(self.config), trial_id=self.folder.name)
            self.writer.file_writer.add_summary(session)
        return self.writer

    def scalars(self, record: EpochRecord, resume_epoch: int | None) -> None:
        writer = self.open(resume_epoch)
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, record.epoch)
        writer.flush()  # a live TensorBoard sees each epoch, and a killed fit keeps what it logged

    def images(self, epoch: int, model: VAE, test_images: torch.Tensor, resume_epoch: int | None) -> None:
        writer = self.open(resume_epoch)
        for tag, mosaic in images(model, test_images).items():
            writer.add_image(tag, mosaic, epoch, dataformats="HW")
        writer.flush()

    def end(self, status: str) -> None:
        if self.writer is not None:
            self.writer.file_writer.add_summary(_session_end(status))
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _reconstruction_inputs(test_images: ImageRows) -> torch.Tensor:
    """The fixed test images (N, D) whose reconstructions are shown: (RECONSTRUCTIONS, D) on the CPU."""
    chosen = latent.pick(len(test_images), RECONSTRUCTIONS, seed=IMAGE_SEED).to(test_images.device)
    return test_images[chosen].cpu()


class TensorBoardObserver(Observer):
    """An Observer that writes TensorBoard events of each member of a fit into `<its run folder>/tensorboard`.

    `runs`: (config, run folder) of each member, in the fit's order (one for a lone fit).
    `test_images`: the test split (N, D), or a function that loads it when the first images are drawn.
    Raises MissingExtra at once when tensorboard is not installed. Close it when the fit ends.
    """

    def __init__(self, runs: Sequence[tuple[TrainConfig, Path]], test_images: ImageRows) -> None:
        require_tensorboard()
        self.boards = [_Board(config, folder) for config, folder in runs]
        self.test_images = test_images
        self.inputs: torch.Tensor | None = None
        self.resume_epoch: int | None = None  # the epoch the fit continues at; None for a fresh fit

    def on_resume(self, state: "TrainState") -> None:
        self.resume_epoch = state.epoch  # a stacked group's members are all at the same point

    def on_member_epoch(self, member: int, record: EpochRecord) -> None:
        self.boards[member].scalars(record, self.resume_epoch)

    def on_member_model(self, member: int, record: EpochRecord, model: VAE) -> None:
        board = self.boards[member]
        epochs = board.config.epochs
        if draws_images(record.epoch, epochs):
            if self.inputs is None:
                self.inputs = _reconstruction_inputs(self.test_images)
            board.images(record.epoch, model, self.inputs, self.resume_epoch)
        if record.epoch == epochs:
            board.end("STATUS_SUCCESS")

    def on_member_failed(self, member: int, error: "TrainingDiverged") -> None:
        self.boards[member].end("STATUS_FAILURE")

    def close(self) -> None:
        """Close the writers still open (a fit stopped or failed before its last epoch)."""
        for board in self.boards:
            board.close()


def write_finished(run: Run, test_images: ImageRows) -> Path | None:
    """Write the events of a finished run that has none (one trained without TensorBoard) from metrics.json.

    Every epoch's losses, the images of the final model at the last epoch, and its hparams.
    Returns the folder written, or None when the run had events already.
    """
    if has_events(run.path) or not run.history:
        return None
    board = _Board(run.config, run.path)
    try:
        for record in run.history:
            board.scalars(record, None)
        board.images(run.history[-1].epoch, run.model.eval(), _reconstruction_inputs(test_images), None)
        board.end("STATUS_SUCCESS")
    finally:
        board.close()
    return log_dir(run.path)


class TensorBoardSweep(SweepObserver):
    """A sweep's SweepObserver that also writes TensorBoard events of every member, around another (its display).

    Each fit's Observer is the display's with a TensorBoardObserver beside it; a member found finished
    in the store gets its events from its metrics.json if it has none. `store`: the sweep's run store.
    Close it when the sweep ends.
    """

    def __init__(self, inner: SweepObserver, test_images: ImageRows, store: Path | None = None) -> None:
        require_tensorboard()
        self.inner, self.test_images, self.store = inner, test_images, store
        self.boards: list[TensorBoardObserver] = []
        self.lock = threading.Lock()  # fits side by side ask for their observers from several threads

    def on_fits(self, indices: Sequence[int], how: str, jobs: int) -> None:
        self.inner.on_fits(indices, how, jobs)

    def observer(self, indices: Sequence[int], configs: Sequence[TrainConfig]) -> Observer:
        board = TensorBoardObserver([(c, run_folder(c, self.store)) for c in configs], self.test_images)
        with self.lock:
            self.boards.append(board)
        return Observers(self.inner.observer(indices, configs), board)

    def on_failed(self, index: int, error: "VaeError") -> None:
        self.inner.on_failed(index, error)

    def on_queued(self, index: int, config: TrainConfig) -> None:
        self.inner.on_queued(index, config)

    def on_running(self, index: int, placement: Placement) -> None:
        self.inner.on_running(index, placement)

    def on_finished(self, index: int, path: Path) -> None:
        self.inner.on_finished(index, path)

    def on_message(self, text: str) -> None:
        self.inner.on_message(text)

    def on_waiting(self, index: int, holder: "Holder") -> None:
        self.inner.on_waiting(index, holder)

    def on_reused(self, index: int, path: Path) -> None:
        self.inner.on_reused(index, path)
        if not has_events(path):
            write_finished(load_run(path), self.test_images)

    def on_scoring(self, index: int, config: TrainConfig) -> None:
        self.inner.on_scoring(index, config)

    def close(self) -> None:
        with self.lock:
            for board in self.boards:
                board.close()
