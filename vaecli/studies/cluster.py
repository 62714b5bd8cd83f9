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
store). Ray is imported here only, when a Cluster fits: `vaecli ablate` without
--cluster never loads it.
"""

import contextlib
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from vaecli import __version__, atomic
from vaecli.config import DATASET_TITLES, TrainConfig
from vaecli.core.data import Dataset, Split, default_data_dir, load_dataset
from vaecli.engine.device import resolve_device, resolve_precision
from vaecli.engine.interrupt import StopRequest, stop_on_sigint
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord
from vaecli.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    Interrupted,
    MissingExtra,
    RunStoreError,
    TrainingDiverged,
    VaeError,
)
from vaecli.store.checkpoint import MODEL_FILE, RESUME_FILE, SCORES_FILE, load_run, read_state_header
from vaecli.store.lock import Holder, RunLock, holder
from vaecli.store.runs import Outcome, RunRequest, clear_leftovers, finished_config, run_folder, train_or_reuse
from vaecli.studies.executors import FitContext, Fitted
from vaecli.studies.observer import Placement
from vaecli.studies.scores import stored_scores

DEFAULT_RETRIES = 3  # tries after a worker dies; a Python error in a member is never retried
PROBE_SECONDS = 3.0  # how long an address may take to answer a TCP connection
# Ray's driver retries a refused connection (a missing token, say) for about 20 s, once a second;
# vaecli gives it this many tries, so that a wrong token fails in seconds, not after 20 s
CONNECT_TRIES = "3"
POLL_SECONDS = 0.25  # how often the driver gathers progress, and a worker asks whether to stop
BATCH_EVENT_SECONDS = 0.5  # a worker reports its batch at most this often


class Cluster:
    """Train the members as Ray tasks on the cluster at `address`, `cpus_per_member` CPUs each.

    `address`: "auto" (RAY_ADDRESS, else the cluster started on this machine) or HOST:PORT.
    `retries`: how often Ray runs a member again after its worker died. A member is given
    a GPU of its own with device "cuda"; with "auto" or "cpu" it trains on a worker's CPUs.
    """

    def __init__(self, address: str = "auto", cpus_per_member: int = 1, retries: int = DEFAULT_RETRIES) -> None:
        if cpus_per_member < 1:
            raise ConfigError(f"--cpus-per-member must be at least 1, got {cpus_per_member}")
        if retries < 0:
            raise ConfigError(f"--retries must be 0 or more, got {retries}")
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


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtra("--cluster needs Ray: pip install 'vaecli[ray]'") from None
    return ray


def cluster_address(address: str) -> str | None:
    """HOST:PORT to probe, from `address` or RAY_ADDRESS; None where Ray finds the cluster itself ("auto")."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "auto")
    if address in ("auto", "local"):
        return None
    address = address.removeprefix("ray://")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--cluster takes auto or HOST:PORT (a Ray head node's address), got {address!r}")
    return address


def probe(address: str, seconds: float = PROBE_SECONDS) -> None:
    """Fail in one line, within `seconds`, when nothing listens at HOST:PORT (ray.init would wait minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
            pass
    except OSError as e:
        reason = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise ConfigError(
            f"no Ray cluster answers at {address} ({reason}); start one there with "
            f"ray start --head --port {port}, or give the head node's address"
        ) from None


def connect(address: str) -> None:
    """Connect this process to the cluster as its driver; every failure is one line."""
    ray = import_ray()
    target = cluster_address(address)
    if target is not None:
        probe(target)
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", CONNECT_TRIES)
    try:
        with _quiet_stderr():  # Ray's C++ core logs each refused try there
            ray.init(address=target or "auto", logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:
        raise _connect_error(e, target or "auto") from None


def _connect_error(error: BaseException, address: str) -> VaeError:
    chain: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    text = " ".join(chain)
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "Unauthenticated" in text:
        return ConfigError(
            f"the Ray cluster at {address} refused the connection: it wants its token. Set RAY_AUTH_MODE=token "
            "and the token in RAY_AUTH_TOKEN (or a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); "
            "ray get-auth-token on the head node prints it"
        )
    if "Could not find any running Ray instance" in text:
        return ConfigError(
            "no Ray cluster found: start one (ray start --head), or give its address: --cluster HOST:PORT "
            "or RAY_ADDRESS=HOST:PORT"
        )
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return ConfigError(f"cannot connect to the Ray cluster at {address}: {first}")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null within the block (C++ logs bypass Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _versions() -> dict[str, str]:
    return {"vaecli": __version__, "torch": torch.__version__}


def data_digest(data: Dataset) -> str:
    """A hash of the data set's tensors: a worker trains on its own copy only where it is this one."""
    digest = hashlib.sha256(data.name.encode())
    for split in (data.train, data.test):
        for tensor in (split.images, split.labels):
            digest.update(tensor.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def dataset_bytes(data: Dataset) -> bytes:
    """The data set as safetensors bytes, to send through Ray's object store (no pickles)."""
    tensors = {
        f"{name}_{part}": getattr(split, part).contiguous()
        for name, split in (("train", data.train), ("test", data.test))
        for part in ("images", "labels")
    }
    metadata = {"name": data.name, "image_shape": ",".join(map(str, data.image_shape)), "source": str(data.source)}
    return save_tensors(tensors, metadata=metadata)


def dataset_from_bytes(raw: bytes) -> Dataset:
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: length, JSON, tensors
    metadata, tensors = header["__metadata__"], load_tensors(raw)
    height, width = (int(n) for n in metadata["image_shape"].split(","))

    def split(name: str) -> Split:
        return Split(tensors[f"{name}_images"], tensors[f"{name}_labels"])

    return Dataset(metadata["name"], split("train"), split("test"), (height, width), Path(metadata["source"]))


# ---- on the workers ----


class Coordinator:
    """A small actor between the driver and its tasks: tasks report progress, the driver asks them to stop.

    Calls from one task arrive in the order it made them; the driver drains the events.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.attempts: dict[tuple[int, int], int] = {}  # (member, submission) -> tries begun
        self.stopping = False

    def started(self, index: int, submission: int, node: str, host: str, pid: int) -> bool:
        """A task began on a worker; returns whether the sweep is stopping (then the task does not train).

        Ray runs a task again after its worker died: its second start is its second try.
        """
        key = (index, submission)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.events.append(("running", index, node, host, pid, self.attempts[key]))
        return self.stopping

    def report(self, event: tuple) -> None:
        self.events.append(event)

    def stop(self) -> None:
        self.stopping = True

    def stop_requested(self) -> bool:
        return self.stopping

    def drain(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


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


def _worker_data(name: str, digest: str, shipped: bytes | None) -> Dataset | str:
    """The data set to train on: the worker's own copy if it is the driver's, else the shipped one; else why not."""
    if shipped is not None:
        if digest not in _SHIPPED_DATA:
            _SHIPPED_DATA.clear()
            _SHIPPED_DATA[digest] = dataset_from_bytes(shipped)
        return _SHIPPED_DATA[digest]
    if name not in _LOCAL_DATA:
        try:
            local = load_dataset(name, None, download_missing=False)
            _LOCAL_DATA[name] = (local, data_digest(local))
        except DataError:
            _LOCAL_DATA[name] = f"no {DATASET_TITLES[name]} in its data folder ({default_data_dir()})"
    found = _LOCAL_DATA[name]
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
    answer: dict[str, Any] = {"node": node, "host": host, "pid": pid, "versions": _versions()}
    index = payload["index"]
    if ray.get(coordinator.started.remote(index, payload["submission"], node, host, pid)):
        return {**answer, "status": "not started"}
    if answer["versions"] != payload["versions"]:
        return {**answer, "status": "versions"}
    data = _worker_data(payload["dataset"], payload["digest"], shipped)
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


# ---- on the driver ----


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
            "versions": _versions(),
            "dataset": config.dataset,
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
        if answer["versions"] != _versions():
            theirs, ours = answer["versions"], _versions()
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
        clear_leftovers(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SCORES_FILE).unlink(missing_ok=True)  # scores of weights this replaces
        for name in sorted(files, key=lambda name: name == MODEL_FILE):
            if name != RESUME_FILE:
                atomic.write_bytes(folder / name, files[name])
        (folder / RESUME_FILE).unlink(missing_ok=True)  # finished: an interrupted try's state is moot now
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
        raise ConfigError(f"--cluster trains on the workers' CPUs or CUDA GPUs, not on {device}")
    return "cuda" if device == "cuda" else "cpu"


def _nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def _check_resources(cpus: int, gpus: int) -> None:
    """Every member must fit on some node, or its task would wait for ever."""
    nodes = _nodes()
    most_cpus = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
    if cpus > most_cpus:
        raise ConfigError(f"--cpus-per-member {cpus}: no node of the cluster has more than {most_cpus:g} CPUs")
    if gpus and not any(node["Resources"].get("GPU", 0) >= gpus for node in nodes):
        raise ConfigError("--device cuda: the cluster has no GPU; leave --device out to train on its CPUs")


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
        raise RunStoreError(
            f"{folder} holds an interrupted run with a different config; continue it with "
            f"vaecli train --resume {folder}, or add --force to start this one over"
        )
    return path.read_bytes()
