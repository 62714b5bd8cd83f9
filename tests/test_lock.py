"""The per-run lock: one process trains a run, the others wait and reuse it; a killed holder blocks nobody."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_TRAIN_ARGS, ROOT, invoke, one_line_error, start_vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset
from vaecli.engine.interrupt import StopRequest
from vaecli.errors import Interrupted, RunBusy, RunStoreError
from vaecli.store import lock
from vaecli.store.checkpoint import MODEL_FILE, RESUME_FILE
from vaecli.store.runs import run_folder
from vaecli.studies.executors import FitContext, OneByOne, Stacked
from vaecli.studies.observer import SweepObserver

# `python -c HOLDER FOLDER READY`: a process that takes FOLDER's lock, creates READY, and sleeps holding it
HOLDER = """
import sys, time
from pathlib import Path
from vaecli.store.lock import RunLock

held = RunLock(Path(sys.argv[1]))  # kept: a lock let go of by the garbage collector is released
assert held.try_acquire()
Path(sys.argv[2]).touch()
time.sleep(120)
"""


def eventually(condition, what: str, seconds: float = 60.0) -> None:
    """Wait until `condition()` holds, failing the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def holding(tmp_path):
    """Start a process holding a folder's lock: holding(folder) -> the process, killed when the test ends."""
    children = []

    def start(folder: Path) -> subprocess.Popen:
        ready = tmp_path / f"ready-{len(children)}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready)], env=env)
        children.append(child)
        eventually(lambda: ready.exists() or child.poll() is not None, "the holder to take the lock")
        assert child.poll() is None, "the holder could not take the lock"
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()


# --- the lock itself -----------------------------------------------------------------------------------


def test_a_lock_says_who_holds_it_and_lets_go(tmp_path):
    folder = tmp_path / "run"
    assert lock.holder(folder) is None and not folder.exists()  # probing makes nothing
    with lock.held(folder) as waited:
        assert not waited
        holder = lock.holder(folder)
        assert (holder.pid, holder.host, holder.folder) == (os.getpid(), socket.gethostname(), folder)
        assert json.loads((folder / lock.HOLDER_FILE).read_text())["pid"] == os.getpid()
        assert f"pid {os.getpid()} on {socket.gethostname()}" in str(holder)
    assert lock.holder(folder) is None
    assert not (folder / lock.HOLDER_FILE).exists() and (folder / lock.LOCK_FILE).exists()  # the file stays


def test_one_thread_asking_twice_is_an_error_not_a_hang(tmp_path):
    with lock.held(tmp_path / "run"):
        with pytest.raises(RunStoreError, match="already training this run"):
            lock.RunLock(tmp_path / "run").acquire()


def test_a_thread_waits_for_another_threads_folder(tmp_path):
    folder, taken, told = tmp_path / "run", threading.Event(), []

    def hold_briefly() -> None:
        with lock.held(folder):
            taken.set()
            time.sleep(0.5)

    other = threading.Thread(target=hold_briefly)
    other.start()
    taken.wait(10)
    start = time.monotonic()
    with lock.held(folder, wait=30, on_wait=told.append) as waited:
        assert waited and time.monotonic() - start > 0.2
    other.join()
    assert [h.pid for h in told] == [os.getpid()]  # told once, who holds it


def test_a_wait_runs_out_or_is_stopped_in_one_line(tmp_path, holding):
    folder = tmp_path / "run"
    child = holding(folder)
    with pytest.raises(RunBusy, match=rf"is being trained by pid {child.pid} on .*gave up after waiting 0.3 s"):
        lock.RunLock(folder).acquire(wait=0.3)
    stop = StopRequest()
    stop.request()
    with pytest.raises(Interrupted, match="stopped waiting for .*nothing was trained"):
        lock.RunLock(folder).acquire(stop=stop)


def test_a_holder_killed_with_sigkill_blocks_nobody(tmp_path, holding):
    folder = tmp_path / "run"
    child = holding(folder)
    assert lock.holder(folder).pid == child.pid
    assert not lock.RunLock(folder).try_acquire()
    kill(child)
    assert (folder / lock.HOLDER_FILE).exists()  # its record is left behind, and not believed
    assert lock.holder(folder) is None
    with lock.held(folder, wait=0) as waited:
        assert not waited and lock.holder(folder).pid == os.getpid()


# --- the run store and the command line ------------------------------------------------------------------


def test_two_processes_asking_for_one_config_train_it_once(tiny_mnist, tmp_path):
    args = ["train", *FAST_TRAIN_ARGS, "--epochs", "2", "--data-dir", tiny_mnist, "--out", tmp_path / "run"]
    first = start_vaecli(*args, signals=tmp_path / "first", pause=(1, 1))
    second = None
    try:
        eventually(lambda: (tmp_path / "first" / "paused").exists() or first.poll() is not None, "the first to pause")
        second = start_vaecli(*args, signals=tmp_path / "second")
        waiting = f"is being trained by pid {first.pid} on {socket.gethostname()}"
        eventually(lambda: waiting in (tmp_path / "second" / "stdout").read_text(), "the second to wait")
        (tmp_path / "first" / "go").touch()
        assert first.wait(60) == 0 and second.wait(60) == 0, (tmp_path / "second" / "stderr").read_text()
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                kill(child)
    trained, reused = ((tmp_path / name / "stdout").read_text() for name in ("first", "second"))
    assert "Training a VAE" in trained and "run saved" in trained
    assert "Training a VAE" not in reused and "reusing it" in reused and "reused finished run" in reused
    assert (tmp_path / "run" / MODEL_FILE).is_file() and lock.holder(tmp_path / "run") is None


def test_runs_tells_training_from_interrupted(tiny_mnist, tmp_path):
    store = tmp_path / "store"
    args = ["train", *FAST_TRAIN_ARGS, "--epochs", "2", "--data-dir", tiny_mnist, "--runs-dir", store]
    child = start_vaecli(*args, signals=tmp_path / "child", pause=(2, 1))
    try:
        # paused in epoch 2, with epoch 1's state on disk
        eventually(lambda: (tmp_path / "child" / "paused").exists() or child.poll() is not None, "the pause")
        (folder,) = store.iterdir()
        eventually(lambda: (folder / RESUME_FILE).exists(), "epoch 1's state")
        (entry,) = json.loads(invoke("runs", "--runs-dir", store, "--json").stdout)
        assert entry["problem"] == f"training: epoch 2/2, pid {child.pid} on {socket.gethostname()}"
        assert entry["training"]["pid"] == child.pid
        table = invoke("runs", "--runs-dir", store).stdout
        assert "training:" in table and str(child.pid) in table and "interrupted:" not in table
    finally:
        kill(child)
    (entry,) = json.loads(invoke("runs", "--runs-dir", store, "--json").stdout)
    assert entry["problem"] == "interrupted: epoch 2/2" and entry["training"] is None
    table = invoke("runs", "--runs-dir", store).stdout
    assert "interrupted:" in table and "training:" not in table
    again = invoke(*args)  # the killed process's lock is gone with it: the same command continues the run
    assert again.exit_code == 0, again.output
    assert "Resuming at epoch 2, step 0" in again.stdout and (folder / MODEL_FILE).is_file()


def test_runs_shows_a_first_epoch_in_training(tmp_path):
    folder = tmp_path / "store" / "h2-lam1-e1-s0-00000000"
    with lock.held(folder):  # no epoch finished yet: no state to read the config from
        (entry,) = json.loads(invoke("runs", "--runs-dir", tmp_path / "store", "--json").stdout)
    assert entry["problem"] == f"training: first epoch, pid {os.getpid()} on {socket.gethostname()}"
    (entry,) = json.loads(invoke("runs", "--runs-dir", tmp_path / "store", "--json").stdout)
    assert entry["problem"] == "unfinished: no model.safetensors" and entry["training"] is None


@pytest.mark.parametrize(
    "wait, fragment", [("0", "not waiting for it (--wait 0)"), ("0.3", "gave up after waiting 0.3 s")]
)
def test_train_does_not_wait_past_wait_and_says_who_in_one_line(tiny_mnist, tmp_path, holding, wait, fragment):
    folder = tmp_path / "run"
    child = holding(folder)
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--out", folder, "--wait", wait)
    one_line_error(result, f"{folder} is being trained by pid {child.pid} on {socket.gethostname()}", fragment, code=1)
    assert not (folder / MODEL_FILE).exists()


def test_a_negative_wait_is_refused(tiny_mnist):
    one_line_error(invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--wait", "-1"), "--wait", code=2)


class Seen(SweepObserver):
    """Records how the executors fit and who they wait for; `told` is set at a wait."""

    def __init__(self) -> None:
        self.fits, self.waited, self.told = [], [], threading.Event()

    def on_fits(self, indices, how, jobs) -> None:
        self.fits.append((list(indices), how))

    def on_waiting(self, index, holder) -> None:
        self.waited.append((index, holder.pid))
        self.told.set()


def test_a_stacked_group_with_a_member_in_training_elsewhere_goes_one_by_one(tiny_mnist, tmp_path):
    base = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(16,)), epochs=1, batch_size=32)
    configs = {0: base, 1: TrainConfig(model=base.model, lam=5.0, epochs=1, batch_size=32)}
    folder = run_folder(configs[1], tmp_path / "store")
    seen, taken = Seen(), threading.Event()

    def hold_briefly() -> None:  # another holder, as another process would be (flock is per open file)
        with lock.held(folder):
            taken.set()
            seen.told.wait(60)  # until the executor waits for it

    other = threading.Thread(target=hold_briefly)
    other.start()
    taken.wait(10)
    context = FitContext(load_dataset("mnist", tiny_mnist), store=tmp_path / "store", device="cpu", observer=seen)
    fitted = Stacked(OneByOne()).fit(configs, context)
    other.join()
    assert seen.fits == [([0, 1], "one by one")] and seen.waited == [(1, os.getpid())]
    assert all(not f.reused for f in fitted.values()) and (folder / MODEL_FILE).is_file()
    assert lock.holder(folder) is None
