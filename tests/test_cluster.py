"""`vaecli ablate --cluster`: sweeps on a real Ray head node, on loopback, started and stopped by these tests.

The head node has two worker CPUs, its own HOME, temporary folder and a random
token, and its own copy of the tiny data set (VAECLI_DATA_DIR), as a cluster's
nodes have theirs. Every member is compared, weight for weight, with the same
config trained in this process.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TRAIN_ARGS, ROOT, invoke, one_line_error, start_vaecli, write_dataset
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.loop import train
from vaecli.engine.observer import Observer
from vaecli.engine.records import EpochRecord
from vaecli.store.checkpoint import RESUME_FILE, load_run
from vaecli.store.runs import run_folder
from vaecli.studies.cluster import Cluster
from vaecli.studies.cluster import worker as cluster_worker
from vaecli.studies.cluster.connect import connect
from vaecli.studies.observer import Placement, SweepObserver
from vaecli.studies.sweep import Sweep, SweepOptions, run_sweep

TOKEN = secrets.token_hex(16)  # the test cluster's
# Ray reads its authentication settings once, when first imported: this process, the driver of the
# in-process tests below, has the cluster's token before that (the subprocesses inherit it)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)

import ray  # noqa: E402  (the test extra installs it: these tests never skip)

LOOPBACK = "127.0.0.1"
FP32 = [*FAST_TRAIN_ARGS, "--precision", "fp32"]


@dataclass(frozen=True)
class Head:
    address: str
    data: Path  # the nodes' own data folder (their VAECLI_DATA_DIR)
    env: dict[str, str]  # what a driver needs to reach it: the token, loopback only


def _free_port() -> int:
    """A free port outside Ray's worker ports (10002-19999)."""
    while True:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


@pytest.fixture(scope="session")
def head() -> Iterator[Head]:
    """A Ray head node on 127.0.0.1 with 2 CPUs, stopped by its PID (never `ray stop`) when the session ends."""
    root = Path(tempfile.mkdtemp(prefix="vaecli-ray-"))  # short: Ray's socket paths must fit in 107 bytes
    data = root / "data"
    write_dataset(data / "MNIST" / "raw")
    port = _free_port()
    loopback = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": TOKEN,
    }
    env = {
        **os.environ,
        **loopback,
        "HOME": str(root / "home"),
        "VAECLI_DATA_DIR": str(data),
        "PYTHONPATH": str(ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        f"--node-ip-address={LOOPBACK}",
        f"--port={port}",
        f"--temp-dir={root / 'ray'}",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    log = open(root / "head.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in (root / "head.log").read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head node did not start:\n{(root / 'head.log').read_text()[-2000:]}")
            time.sleep(0.2)
        _check_loopback(f"{LOOPBACK}:{port}", env)
        yield Head(f"{LOOPBACK}:{port}", data, loopback)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        try:  # what the head started and left behind: its own process group, ours alone
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(root, ignore_errors=True)


CHECK_NODES = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="error", log_to_driver=False)
print(sorted({n["NodeManagerAddress"] for n in ray.nodes()}), ray._private.worker.global_worker.node_ip_address)
"""


def _check_loopback(address: str, env: dict[str, str]) -> None:
    """Fail, within a minute, unless the cluster and a driver of it report 127.0.0.1 and nothing else."""
    try:
        found = subprocess.run(
            [sys.executable, "-c", CHECK_NODES, address], capture_output=True, text=True, env=env, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"a driver could not reach the head node at {address} in 60 s")
    assert found.stdout.strip() == f"['{LOOPBACK}'] {LOOPBACK}", found.stdout + found.stderr[-2000:]


@pytest.fixture
def driver(head: Head, monkeypatch: pytest.MonkeyPatch) -> Head:
    """This process as a driver of the head node (the token is set above)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return head


class Places(SweepObserver):
    """Where each member ran, try by try; with `kill`, SIGKILLs the worker of that member's first try mid-fit."""

    def __init__(self, kill: int | None = None) -> None:
        self.placements: dict[int, list[Placement]] = {}
        self.kill = kill
        self.killed: list[int] = []
        self.messages: list[str] = []

    def on_running(self, index: int, placement: Placement) -> None:
        self.placements.setdefault(index, []).append(placement)

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def observer(self, indices: Sequence[int], configs: Sequence[TrainConfig]) -> Observer:
        return KillAfterFirstEpoch(self, indices[0])


class KillAfterFirstEpoch(Observer):
    def __init__(self, places: Places, index: int) -> None:
        self.places, self.index = places, index

    def on_member_epoch(self, member: int, record: EpochRecord) -> None:
        places = self.places
        if self.index == places.kill and not places.killed and record.epoch == 1:
            pid = places.placements[self.index][-1].pid
            os.kill(pid, signal.SIGKILL)  # a worker of the head node these tests started
            places.killed.append(pid)


def _configs(epochs: int, hidden: tuple[int, ...] = (2, 3), lams: tuple[float, ...] = (1.0, 2.0)) -> list[TrainConfig]:
    base = TrainConfig(
        model=ModelConfig(latent_dim=2, hidden_layers=(32, 16)), epochs=epochs, batch_size=32, precision="fp32"
    )
    return Sweep(base, hidden=hidden, lams=lams).members()


def _assert_same_as_here(config: TrainConfig, data_dir: Path) -> None:
    """The stored member equals `config` trained in this process: run name, every weight, every test number."""
    stored = load_run(run_folder(config))
    here = train(config, load_dataset("mnist", data_dir), device="cpu")
    assert stored.config == config
    ours, theirs = here.model.state_dict(), stored.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert [r.test for r in stored.history] == [r.test for r in here.history]
    assert [r.train for r in stored.history] == [r.train for r in here.history]
    assert stored.info["precision"] == "fp32"


def test_nodes_are_on_loopback(driver: Head) -> None:
    """Every socket of the test cluster stays on 127.0.0.1: Ray must not report another node address."""
    connect(driver.address)  # fails within seconds where ray.init would wait for minutes
    try:
        addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
        assert addresses == {LOOPBACK}, addresses
        assert ray._private.worker.global_worker.node_ip_address == LOOPBACK
    finally:
        ray.shutdown()


def test_cluster_sweep_matches_training_here(driver: Head) -> None:
    """4 members through --cluster: each is `vaecli train` of its config here, bit for bit; the display says
    where each ran; the workers read their own copy of the data."""
    result = invoke(
        "ablate", "--hidden", "2", "3", "--lam", "1", "2", *FP32, "--epochs", "2",
        "--data-dir", driver.data, "--cluster", driver.address,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for n in range(1, 5):
        assert f"member {n}/4 queued" in result.output
        assert f"member {n}/4 running on" in result.output
        assert f"member {n}/4 finished" in result.output
    assert f"({LOOPBACK}), pid" in result.output
    assert "object store" not in result.output  # the nodes had the data set: nothing was shipped
    assert "4 members (0 reused, 4 trained)" in result.output
    for config in _configs(epochs=2):
        _assert_same_as_here(config, driver.data)
    again = invoke(
        "ablate", "--hidden", "2", "3", "--lam", "1", "2", *FP32, "--epochs", "2",
        "--data-dir", driver.data, "--cluster", driver.address,
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "4 members (4 reused, 0 trained)" in again.output and "queued" not in again.output


def test_a_killed_worker_is_retried_and_its_member_is_unchanged(driver: Head, tmp_path: Path) -> None:
    """SIGKILL a worker after its member's first epoch: Ray runs the member again and it ends bit for bit the
    same. The driver's data differ from the nodes': they come through the object store instead."""
    data_dir = write_dataset(tmp_path / "other" / "MNIST" / "raw", n_train=96).parent.parent
    data = load_dataset("mnist", data_dir)
    configs = _configs(epochs=30, hidden=(2,), lams=(1.0, 2.0))
    places = Places(kill=0)
    sweep = Sweep(configs[0], lams=(1.0, 2.0))
    members = run_sweep(sweep, data, SweepOptions(iw_samples=None), executor=Cluster(driver.address), observer=places)
    assert places.killed, "the first member's worker was never killed"
    # each member ran first without data (the nodes have other MNIST), then with the shipped copy
    assert [p.attempt for p in places.placements[0]] == [1, 1, 2], places.placements
    assert places.placements[0][-1].pid != places.killed[0]
    assert [p.attempt for p in places.placements[1]] == [1, 1]
    assert all(p.node == LOOPBACK for ps in places.placements.values() for p in ps)
    assert any("object store" in m for m in places.messages), places.messages
    assert not any(m.failed for m in members)
    for config in configs:
        _assert_same_as_here(config, data_dir)


def test_a_python_error_is_not_retried_and_the_sweep_exits_1(driver: Head) -> None:
    """Members that diverge fail once each (no retry), are reported and saved nowhere; ablate exits 1."""
    result = invoke(
        "ablate", "--lam", "1", "2", *FP32, "--lr", "1e8", "--data-dir", driver.data, "--cluster", driver.address
    )
    assert result.exit_code == 1, result.output
    assert result.output.count("failed: training diverged") == 2, result.output
    assert "retried" not in result.output
    one_line_error(result, "2 of 2 members failed")
    for config in _configs(epochs=1, hidden=(2,)):
        assert not (run_folder(config) / "model.safetensors").exists()


def test_results_of_another_vaecli_version_are_refused(driver: Head, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose vaecli differs from the driver's: the member fails, naming the node and both versions."""
    monkeypatch.setattr(cluster_worker, "__version__", "0.0.1-driver")
    result = invoke("ablate", "--lam", "1", *FP32, "--data-dir", driver.data, "--cluster", driver.address)
    assert result.exit_code == 1, result.output
    assert f"({LOOPBACK}) runs vaecli" in result.output and "this machine vaecli 0.0.1-driver" in result.output
    assert not (run_folder(_configs(1, (2,), (1.0,))[0]) / "model.safetensors").exists()


def test_ctrl_c_saves_resume_states_and_the_same_command_continues_bit_for_bit(driver: Head, tmp_path: Path) -> None:
    """SIGINT the driver while both members train: each stops after its batch and its state lands in its run
    folder (exit 130); the same command continues them on the cluster and they end as if never stopped."""
    store = tmp_path / "store"
    args = [
        sys.executable, "-m", "vaecli", "ablate", "--lam", "1", "2", *FP32, "--epochs", "100",
        "--data-dir", str(driver.data), "--cluster", driver.address, "--runs-dir", str(store),
    ]  # fmt: skip
    env = {**os.environ, **driver.env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}

    def restore_sigint() -> None:  # a background job's children start with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    out = tmp_path / "out"
    with open(out, "w") as stdout:
        process = subprocess.Popen(
            args, stdout=stdout, stderr=subprocess.STDOUT, env=env, text=True, preexec_fn=restore_sigint
        )
        deadline = time.monotonic() + 90
        # both members running and past their first epoch (epoch rows are numbered by member)
        while not all(f"\n {m}   2 " in out.read_text() for m in (1, 2)):
            assert process.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    text = out.read_text()
    assert code == 130, text
    assert "saved their state" in text, text
    configs = _configs(epochs=100, hidden=(2,))
    for config in configs:
        folder = store / run_folder(config).name
        assert (folder / RESUME_FILE).is_file(), text
        assert not (folder / "model.safetensors").exists()
    finished = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "resuming at epoch" in finished.stdout
    here = load_dataset("mnist", driver.data)
    for config in configs:
        stored = load_run(store / run_folder(config).name)
        trained = train(config, here, device="cpu")
        for name, tensor in trained.model.state_dict().items():
            assert torch.equal(tensor, stored.model.state_dict()[name]), name


def test_an_address_nobody_answers_fails_in_seconds(driver: Head) -> None:
    port = _free_port()
    started = time.monotonic()
    result = invoke("ablate", "--lam", "1", *FP32, "--data-dir", driver.data, "--cluster", f"{LOOPBACK}:{port}")
    one_line_error(result, f"no Ray cluster answers at {LOOPBACK}:{port}", "ray start --head")
    assert time.monotonic() - started < 15


def test_a_wrong_token_fails_in_seconds_saying_how_to_pass_it(driver: Head) -> None:
    """In a process of its own: Ray reads the token once, when imported."""
    command = [sys.executable, "-m", "vaecli", "ablate", "--lam", "1", *FP32, "--data-dir", str(driver.data)]
    env = {**os.environ, "RAY_AUTH_TOKEN": "not-the-token", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    result = subprocess.run([*command, "--cluster", driver.address], capture_output=True, text=True, env=env)
    one_line_error(result, "refused the connection", "RAY_AUTH_TOKEN")
    assert time.monotonic() - started < 20


def test_without_ray_the_error_names_the_extra(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails as where it is not installed
    result = invoke("ablate", "--lam", "1", *FP32, "--data-dir", tiny_mnist, "--cluster", "auto")
    one_line_error(result, "pip install 'vaecli[ray]'")


def test_ablate_without_cluster_never_imports_ray(tiny_mnist: Path) -> None:
    code = (
        "import sys\nfrom vaecli.cli import main\nsys.argv = ['vaecli', 'ablate', '--lam', '1', "
        + ", ".join(repr(str(a)) for a in [*FP32, "--data-dir", tiny_mnist, "--quiet"])
        + "]\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\nprint('no ray')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0 and "no ray" in result.stdout, result.stdout + result.stderr


def test_cluster_options_that_belong_to_one_machine_are_refused(tiny_mnist: Path) -> None:
    result = invoke("ablate", "--lam", "1", *FP32, "--data-dir", tiny_mnist, "--cluster", "auto", "--jobs", "2")
    one_line_error(result, "--jobs is for one machine")
    result = invoke("ablate", "--lam", "1", *FP32, "--data-dir", tiny_mnist, "--cluster", "nonsense")
    one_line_error(result, "--cluster takes auto or HOST:PORT")


class GoWhenWaiting(SweepObserver):
    """Lets the paused process holding a member's lock go on once the cluster's driver waits for it."""

    def __init__(self, go: Path) -> None:
        self.go, self.waited = go, []

    def on_waiting(self, index: int, holder) -> None:  # type: ignore[no-untyped-def]
        self.waited.append((index, holder.pid))
        self.go.touch()


def test_a_member_another_process_is_training_is_waited_for_then_reused(driver: Head, tmp_path: Path) -> None:
    """The driver holds a member's run lock while it is out on the cluster, as a fit here would: a member
    that another `vaecli` is training is not sent, but waited for, then reused."""
    store = tmp_path / "store"
    signals = tmp_path / "other"
    args = ["train", "--lam", "1", *FP32, "--epochs", "2", "--data-dir", driver.data, "--runs-dir", store]
    other = start_vaecli(*args, signals=signals, pause=(1, 1))
    try:
        deadline = time.monotonic() + 60
        while not (signals / "paused").exists():
            assert other.poll() is None and time.monotonic() < deadline, (signals / "stderr").read_text()
            time.sleep(0.05)
        observer = GoWhenWaiting(signals / "go")
        sweep = Sweep(_configs(epochs=2, hidden=(2,))[0], lams=(1.0, 2.0))
        data = load_dataset("mnist", driver.data)
        options = SweepOptions(store=store, iw_samples=None)
        members = run_sweep(sweep, data, options, executor=Cluster(driver.address), observer=observer)
        assert other.wait(60) == 0, (signals / "stderr").read_text()
    finally:
        if other.poll() is None:
            other.kill()
    assert observer.waited == [(0, other.pid)]
    assert members[0].reused and not members[1].reused
    assert "run saved" in (signals / "stdout").read_text()  # the other process trained member 1 (index 0)
