"""What a cluster sweep runs on a worker: one member's fit in a private folder, its files sent back.

The data set reaches a worker as core/dataset.py sends it: by a hash, so that a worker
trains on its own copy only where it is the driver's byte for byte, and else as
safetensors bytes (no pickles) through Ray's object store.
"""

import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from vaecli import __version__
from vaecli.choices import DATASET_TITLES
from vaecli.config import TrainConfig
from vaecli.core.data import Dataset, default_data_dir, load_dataset
from vaecli.core.dataset import data_digest, dataset_from_bytes
from vaecli.engine.device import resolve_device
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord
from vaecli.errors import DataError, Interrupted, TrainingDiverged
from vaecli.store.checkpoint import RESUME_FILE
from vaecli.store.runs import RunRequest, train_or_reuse
from vaecli.studies.scores import stored_scores

POLL_SECONDS = 0.25  # how often a worker asks whether to stop
BATCH_EVENT_SECONDS = 0.5  # a worker reports its batch at most this often


def versions() -> dict[str, str]:
    return {"vaecli": __version__, "torch": torch.__version__}


class _Relay(Observer):
    """A worker's Observer: the fit's progress, sent to the Coordinator (batches at most twice a second)."""

    def __init__(self, coordinator: Any, index: int) -> None:
        self.coordinator, self.index, self.last_batch = coordinator, index, 0.0

    def on_start(self, config: TrainConfig, steps_per_epoch: int, device: Any) -> None:
        self.coordinator.report.remote(("start", self.index, steps_per_epoch, str(device)))

    def on_resume(self, state: Any) -> None:
        self.coordinator.report.remote(("resume", self.index, state.epoch, state.step))

    def on_batch(self, epoch: int, step: int) -> None:
        now = time.monotonic()
        if now - self.last_batch >= BATCH_EVENT_SECONDS:
            self.last_batch = now
            self.coordinator.report.remote(("batch", self.index, epoch, step))

    def on_epoch(self, record: EpochRecord) -> None:
        self.coordinator.report.remote(("epoch", self.index, record.to_dict()))


_LOCAL_DATA: dict[
    str, tuple[Dataset, str] | str
] = {}  # a worker's own data sets, loaded once: (data, digest) or why not
_SHIPPED_DATA: dict[str, Dataset] = {}  # the driver's, by digest


def _worker_data(name: str, split_seed: int | None, digest: str, shipped: bytes | None) -> Dataset | str:
    """The data set to train on: the worker's own copy if it is the driver's, else the shipped one; else why not."""
    if shipped is not None:
        if digest not in _SHIPPED_DATA:
            _SHIPPED_DATA.clear()
            _SHIPPED_DATA[digest] = dataset_from_bytes(shipped)
        return _SHIPPED_DATA[digest]
    key = f"{name}-split{split_seed}"
    if key not in _LOCAL_DATA:
        try:
            local = load_dataset(name, None, download_missing=False, split_seed=split_seed or 0)
            _LOCAL_DATA[key] = (local, data_digest(local))
        except DataError:
            _LOCAL_DATA[key] = f"no {DATASET_TITLES[name]} in its data folder ({default_data_dir()})"
    found = _LOCAL_DATA[key]
    if isinstance(found, str):
        return found
    if found[1] != digest:
        return f"its {DATASET_TITLES[name]} in {found[0].source} differs from this machine's"
    return found[0]


def member_task(payload: dict[str, Any], shipped: bytes | None, coordinator: Any) -> dict[str, Any]:
    """Train one member on this worker, in a temporary folder, and return the folder's files.

    `payload`: the member's config (JSON), index, device, precision, threads, test-score
    samples, the driver's versions and data digest, and a resume state (bytes) or None.
    """
    import ray

    node, host, pid = ray.util.get_node_ip_address(), socket.gethostname(), os.getpid()
    answer: dict[str, Any] = {"node": node, "host": host, "pid": pid, "versions": versions()}
    index = payload["index"]
    if ray.get(coordinator.started.remote(index, payload["submission"], node, host, pid)):
        return {**answer, "status": "not started"}
    if answer["versions"] != payload["versions"]:
        return {**answer, "status": "versions"}
    data = _worker_data(payload["dataset"], payload["split_seed"], payload["digest"], shipped)
    if isinstance(data, str):
        return {**answer, "status": "no data", "reason": data}
    torch.set_num_threads(payload["threads"])  # a thread count set by an earlier task on this worker stays
    config = TrainConfig.from_json(payload["config"])
    stop, done = StopRequest(), threading.Event()
    poller = threading.Thread(target=_poll_stop, args=(coordinator, stop, done), daemon=True)
    poller.start()
    with tempfile.TemporaryDirectory(prefix="vaecli-member-") as tmp:
        folder = Path(tmp) / "run"
        folder.mkdir()
        if payload["resume"] is not None:
            (folder / RESUME_FILE).write_bytes(payload["resume"])
        request = RunRequest(config, out=folder, device=payload["device"], precision=payload["precision"])
        try:
            outcome = train_or_reuse(request, data=data, observer=_Relay(coordinator, index), stop=stop)
        except Interrupted:
            return {**answer, "status": "interrupted", "files": _files(folder)}
        except TrainingDiverged as e:
            return {
                **answer,
                "status": "diverged",
                "error": str(e).replace(str(folder), "{folder}"),
                "files": _files(folder),
            }
        finally:
            done.set()
        if payload["iw_samples"] is not None:
            dev = resolve_device(payload["device"])
            stored_scores(outcome.run, data, payload["iw_samples"], seed=config.seed, device=dev)
        return {**answer, "status": "finished", "files": _files(folder), "seconds": outcome.run.info["train_seconds"]}


def _poll_stop(coordinator: Any, stop: StopRequest, done: threading.Event) -> None:
    import ray

    while not done.wait(POLL_SECONDS):
        if ray.get(coordinator.stop_requested.remote()):
            stop.request()
            return


def _files(folder: Path) -> dict[str, bytes]:
    """The run folder's files (no temporary leftovers), by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
