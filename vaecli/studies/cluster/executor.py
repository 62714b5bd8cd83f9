"""A sweep's members as Ray tasks on a cluster: the executor behind `vaecli ablate --cluster`.

The machine that runs the sweep (the driver) is the only writer of its run store.
Each member that needs training becomes a Ray task that trains it in a private
temporary folder on a worker and hands back the folder's files as bytes (weights,
metrics, loss figure and the member's test scores); the driver writes them
atomically, the model file last, and loads the run back before it counts as
finished. No shared file system is needed, and each member is saved the moment it
arrives, so a driver that crashes keeps every member that came back.

A member is the same, bit for bit on the CPU in fp32, as `vaecli train` of its
config on the driver: the driver resolves the arithmetic of "auto" once and sends
it along, refuses results from a worker whose vaecli or torch differs from its
own, and workers read their own copy of the data set only where it is the
driver's, byte for byte (else the driver's tensors come through Ray's object
store). Ray is imported only by the cluster modules (this one, connect.py,
worker.py) and only when a Cluster fits: `vaecli ablate` without --cluster
never loads it.
"""

import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from vaecli import atomic
from vaecli.config import TrainConfig
from vaecli.core.dataset import data_digest, dataset_bytes
from vaecli.engine.device import resolve_precision
from vaecli.engine.interrupt import StopRequest, stop_on_sigint
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord
from vaecli.errors import CheckpointError, ConfigError, Interrupted, RunStoreError, TrainingDiverged, VaeError
from vaecli.store.checkpoint import MODEL_FILE, RESUME_FILE, load_run, read_state_header
from vaecli.store.lock import Holder, RunLock, holder
from vaecli.store.runs import Outcome, another_interrupted_run, finished_config, land_run, run_folder
from vaecli.studies.cluster.connect import connect, import_ray
from vaecli.studies.cluster.coordinator import Coordinator
from vaecli.studies.cluster.worker import POLL_SECONDS, member_task, versions
from vaecli.studies.executors import FitContext, Fitted
from vaecli.studies.observer import Placement

DEFAULT_RETRIES = 3  # tries after a worker dies; a Python error in a member is never retried


class Cluster:
    """Train the members as Ray tasks on the cluster at `address`, `cpus_per_member` CPUs each.

    `address`: "auto" (RAY_ADDRESS, else the cluster started on this machine) or HOST:PORT.
    `retries`: how often Ray runs a member again after its worker died. A member is given
    a GPU of its own with device "cuda"; with "auto" or "cpu" it trains on a worker's CPUs.
    """

    def __init__(self, address: str = "auto", cpus_per_member: int = 1, retries: int = DEFAULT_RETRIES) -> None:
        if cpus_per_member < 1:
            raise ConfigError(f"`cpus_per_member` must be at least 1, got {cpus_per_member}")
        if retries < 0:
            raise ConfigError(f"`retries` must be 0 or more, got {retries}")
        self.address, self.cpus_per_member, self.retries = address, cpus_per_member, retries

    def fit(self, members: Mapping[int, TrainConfig], context: FitContext) -> dict[int, Fitted]:
        ray = import_ray()
        connect(self.address)
        leave_at_once = False
        try:
            return _ClusterFit(self, members, context).run()
        except KeyboardInterrupt:  # a second Ctrl-C: quit now; the cluster ends the tasks of a driver gone
            leave_at_once = True
            raise
        finally:
            if not leave_at_once:
                ray.shutdown()


class _ClusterFit:
    """One Cluster.fit in progress on the driver: the tasks out, what came back, and the display's observers."""

    def __init__(self, cluster: Cluster, members: Mapping[int, TrainConfig], context: FitContext) -> None:
        import ray

        self.ray, self.cluster, self.members, self.context = ray, cluster, dict(members), context
        self.device = _worker_device(context.device)
        self.gpus = 1 if self.device == "cuda" else 0
        _check_resources(cluster.cpus_per_member, self.gpus)
        # "auto" resolved here, once: a run name means one arithmetic on every node
        first = next(iter(members.values()))
        local = self.device if self.device == "cpu" or torch.cuda.is_available() else None
        self.precision = resolve_precision(first.precision, torch.device(local)) if local else "fp32"
        self.digest = data_digest(context.data)
        self.shipped: Any = None  # the data set in the object store, put there once a worker lacks it
        self.coordinator: Any = ray.remote(num_cpus=0)(Coordinator).remote()
        self.task = ray.remote(member_task).options(
            num_cpus=cluster.cpus_per_member,
            num_gpus=self.gpus,
            max_retries=cluster.retries,
            retry_exceptions=False,
        )
        self.pending: dict[Any, int] = {}  # task -> member
        self.submissions: dict[int, int] = {}
        self.fitted: dict[int, Fitted] = {}
        self.observers: dict[int, Observer] = {}
        self.steps: dict[int, int] = {}
        self.stopped: list[int] = []  # members whose resume state came back after Ctrl-C
        self.locks: dict[int, RunLock] = {}  # the run locks of the members out on the cluster
        self.waiting: set[int] = set()  # members another process is training
        self.stopping = False

    def run(self) -> dict[int, Fitted]:
        slots = _slots(self.cluster.cpus_per_member, self.gpus)
        self.context.observer.on_fits(list(self.members), "on a cluster", min(slots, len(self.members)))
        with stop_on_sigint() as stop:
            try:
                for index in self.members:
                    self.submit(index)
                while self.pending or self.waiting:
                    self.wait(stop)
            finally:
                for index in list(self.locks):
                    self.release(index)
        self.relay()
        if self.stopping:
            raise Interrupted(
                f"interrupted; {len(self.stopped)} member{'s' if len(self.stopped) != 1 else ''} in training "
                "saved their state in their run folders; run the same command again to continue them on the cluster"
            )
        return {index: self.fitted[index] for index in self.members}

    def wait(self, stop: StopRequest) -> None:
        """One round of the driver's loop: whatever came back, the progress, a stop asked for, the waiting members."""
        if self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=POLL_SECONDS)
        else:
            ready = []
            time.sleep(POLL_SECONDS)
        self.relay()
        for ref in ready:
            index = self.pending.pop(ref)
            try:
                self.receive(index, ref)
            finally:
                if index not in self.pending.values():  # not sent again
                    self.release(index)
        if stop.requested and not self.stopping:
            self.stopping = True
            self.coordinator.stop.remote()
            self.waiting.clear()  # nothing more starts
            self.context.observer.on_message(
                "stopping: each member in training stops after its batch and sends its state back "
                "(Ctrl-C again to quit at once)"
            )
        for index in sorted(self.waiting):
            self.submit(index)

    def submit(self, index: int, again: bool = False) -> None:
        """Queue a member's task (`again`: with the data set shipped, after its worker had none).

        The driver holds the member's run lock while its task is out, as a fit here would:
        a member that another process is training waits (lock_or_wait), then is reused.
        """
        config = self.members[index]
        if index not in self.locks and not self.lock_or_wait(index):
            return
        self.submissions[index] = self.submissions.get(index, 0) + 1
        folder = run_folder(config, self.context.store)
        payload = {
            "index": index,
            "submission": self.submissions[index],
            "config": config.to_json(),
            "device": self.device,
            "precision": self.precision,
            "threads": self.cluster.cpus_per_member,
            "iw_samples": self.context.iw_samples,
            "versions": versions(),
            "dataset": config.dataset,
            "split_seed": self.context.data.split_seed,
            "digest": self.digest,
            "resume": _resume_bytes(config, folder, self.context.force),
        }
        self.pending[self.task.remote(payload, self.shipped, self.coordinator)] = index
        if not again:
            self.context.observer.on_queued(index, config)

    def lock_or_wait(self, index: int) -> bool:
        """Take member `index`'s run lock; False while another process holds it (the member then waits)."""
        folder = run_folder(self.members[index], self.context.store)
        lock = RunLock(folder)
        if not lock.try_acquire():
            if index not in self.waiting:
                self.waiting.add(index)
                self.context.observer.on_waiting(index, holder(folder) or Holder(folder))
            return False
        self.locks[index] = lock
        if index in self.waiting:
            self.waiting.discard(index)
            if finished_config(folder) == self.members[index]:  # the process it waited for finished it
                self.release(index)
                self.fitted[index] = Outcome(load_run(folder), reused=True)
                return False
        return True

    def release(self, index: int) -> None:
        lock = self.locks.pop(index, None)
        if lock is not None:
            lock.release()

    def relay(self) -> None:
        """Hand the workers' progress to the members' observers (the display)."""
        for event in self.ray.get(self.coordinator.drain.remote()):
            kind, index, *rest = event
            if kind == "running":
                node, host, pid, attempt = rest
                self.context.observer.on_running(index, Placement(node, host, pid, attempt))
                self.observers[index] = self.context.observer.observer([index], [self.members[index]])
                continue
            observer = self.observers.get(index)
            if observer is None:
                continue
            if kind == "start":
                self.steps[index] = rest[0]
                observer.on_start(self.members[index], rest[0], rest[1])
            elif kind == "resume":
                observer.on_resume(SimpleNamespace(epoch=rest[0], step=rest[1], history=[]))  # type: ignore[arg-type]
            elif kind == "batch":
                observer.on_batch(*rest)
            elif kind == "epoch":
                observer.on_member_epoch(0, EpochRecord.from_dict(rest[0]))  # a lone fit's member is 0

    def receive(self, index: int, ref: Any) -> None:
        """A member's task ended: save what it sent back, or note why it failed."""
        config = self.members[index]
        folder = run_folder(config, self.context.store)
        try:
            answer = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:  # a Python error in the member: not retried
            cause = e.cause if isinstance(e.cause, BaseException) else e
            text = str(cause) if isinstance(cause, VaeError) else f"{type(cause).__name__}: {cause}"
            return self.failed(index, RunStoreError(f"on the cluster: {text.splitlines()[0] if text else text}"))
        except self.ray.exceptions.RayError as e:  # the worker or its node died, every try
            tries = self.cluster.retries + 1
            return self.failed(
                index, RunStoreError(f"its worker died on each of {tries} tries ({type(e).__name__}); see ray status")
            )
        where = f"{answer['host']} ({answer['node']})"
        if answer["versions"] != versions():
            theirs, ours = answer["versions"], versions()
            return self.failed(
                index,
                RunStoreError(
                    f"node {where} runs vaecli {theirs['vaecli']} with torch {theirs['torch']}, this machine "
                    f"vaecli {ours['vaecli']} with torch {ours['torch']}: install the same versions there"
                ),
            )
        status = answer["status"]
        if status == "no data":
            if self.shipped is None:
                self.context.observer.on_message(
                    f"node {where}: {answer['reason']}; sending this machine's data set through Ray's object store"
                )
                self.shipped = self.ray.put(dataset_bytes(self.context.data))
            return self.submit(index, again=True)
        if status == "not started":
            return
        files: dict[str, bytes] = answer["files"]
        if status == "interrupted":
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(folder / RESUME_FILE, files[RESUME_FILE])
            self.stopped.append(index)
        elif status == "diverged":
            folder.mkdir(parents=True, exist_ok=True)
            if RESUME_FILE in files:
                atomic.write_bytes(folder / RESUME_FILE, files[RESUME_FILE])
            self.failed(index, TrainingDiverged(answer["error"].replace("{folder}", str(folder))))
        else:
            self.finished(index, folder, files)

    def finished(self, index: int, folder: Path, files: dict[str, bytes]) -> None:
        """Write a finished member's files, the model last, and load it back before it counts."""
        config = self.members[index]
        land_run(folder, files)
        try:
            run = load_run(folder)
            if run.config != config:
                raise CheckpointError(f"{folder}: the worker sent back another config's run")
        except VaeError as e:
            (folder / MODEL_FILE).unlink(missing_ok=True)
            return self.failed(index, RunStoreError(f"its files did not load: {e}"))
        self.fitted[index] = Outcome(run, reused=False)
        self.context.observer.on_finished(index, folder)

    def failed(self, index: int, error: VaeError) -> None:
        self.fitted[index] = error
        self.context.observer.on_failed(index, error)


def _worker_device(device: str) -> str:
    """Where the workers train: CUDA only when asked for (each member then takes a GPU), else their CPUs."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"`address` (a cluster) trains on the workers' CPUs or CUDA GPUs, not on {device}")
    return "cuda" if device == "cuda" else "cpu"


def _nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def _check_resources(cpus: int, gpus: int) -> None:
    """Every member must fit on some node, or its task would wait for ever."""
    nodes = _nodes()
    most_cpus = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
    if cpus > most_cpus:
        raise ConfigError(f"`cpus_per_member` {cpus}: no node of the cluster has more than {most_cpus:g} CPUs")
    if gpus and not any(node["Resources"].get("GPU", 0) >= gpus for node in nodes):
        raise ConfigError("`device` cuda: the cluster has no GPU; leave `device` out to train on its CPUs")


def _slots(cpus: int, gpus: int) -> int:
    """How many members the cluster trains at once."""
    per_node = [
        int(node["Resources"].get("CPU", 0) // cpus) if not gpus else int(node["Resources"].get("GPU", 0) // gpus)
        for node in _nodes()
    ]
    return max(1, sum(per_node))


def _resume_bytes(config: TrainConfig, folder: Path, force: bool) -> bytes | None:
    """The saved state of an interrupted fit of `config` in its folder, to continue it on a worker."""
    path = folder / RESUME_FILE
    if force or not path.is_file():
        return None
    if read_state_header(folder).config != config:
        raise another_interrupted_run(folder)
    return path.read_bytes()
