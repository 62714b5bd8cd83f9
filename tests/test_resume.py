"""Interrupt and resume, the NaN guard, and saves that survive SIGKILL."""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from tests.conftest import ROOT, StopAt, invoke, one_line_error, run_vaecli
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core import loss
from vaecli.core.data import Split, load_dataset
from vaecli.core.loss import LossTerms
from vaecli.engine.interrupt import StopRequest
from vaecli.engine.loop import train
from vaecli.engine.observer import Observer
from vaecli.engine.state import Stopped, TrainState
from vaecli.errors import ConfigError, TrainingDiverged
from vaecli.store.checkpoint import MODEL_FILE, RESUME_FILE, load_run, load_state, save_state
from vaecli.store.runs import RunRequest

# 64 training images in batches of 16: 4 steps per epoch
CFG = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(16,)), epochs=3, batch_size=16)
CFG_ARGS = ["--layers", "16", "--epochs", "3", "--batch-size", "16", "--device", "cpu"]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return same_dicts(a.state_dict(), b.state_dict())


def same_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_tensors(a: TrainState, b: TrainState) -> bool:
    return (
        (a.epoch, a.step) == (b.epoch, b.step) and same_dicts(a.model, b.model) and same_dicts(a.optimizer, b.optimizer)
    )


@pytest.fixture
def data(tiny_mnist):
    return load_dataset("mnist", tiny_mnist)


@pytest.mark.parametrize("binarize", [False, True])
@pytest.mark.parametrize("epoch, step", [(1, 1), (2, 3), (1, 4), (3, 2)])
def test_a_stopped_fit_resumed_equals_the_uninterrupted_one_bit_for_bit(data, tmp_path, epoch, step, binarize):
    config = replace(CFG, binarize=binarize)
    whole = train(config, data, device="cpu")
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train(config, data, device="cpu", stop=stop, observer=StopAt(stop, epoch, step))
    state = info.value.state
    # the last batch of an epoch finishes the epoch: the stop comes at the boundary
    assert (state.epoch, state.step) == ((epoch + 1, 0) if step == 4 else (epoch, step))
    save_state(tmp_path, state)  # through the file, as the CLI does
    resumed = train(config, data, device="cpu", resume=load_state(tmp_path))
    assert same_weights(resumed.model, whole.model)
    assert [r.test for r in resumed.history] == [r.test for r in whole.history]
    assert [r.train for r in resumed.history] == [r.train for r in whole.history]


def test_a_state_is_saved_at_every_epoch_boundary_but_the_last(data):
    saved = []
    train(CFG, data, device="cpu", save_state=saved.append)
    assert [(s.epoch, s.step, len(s.history)) for s in saved] == [(2, 0, 1), (3, 0, 2)]
    resumed = train(CFG, data, device="cpu", resume=saved[0])
    assert same_weights(resumed.model, train(CFG, data, device="cpu").model)


def test_a_state_fits_only_its_own_config_and_data(data, tiny_mnist):
    saved = []
    train(CFG, data, device="cpu", save_state=saved.append)
    with pytest.raises(ConfigError, match="another config"):
        train(replace(CFG, lam=2.0), data, device="cpu", resume=saved[0])
    stop = StopRequest()
    with pytest.raises(Stopped) as info:
        train(CFG, data, device="cpu", stop=stop, observer=StopAt(stop, 1, 2))
    with pytest.raises(ConfigError, match="64 entries"):
        half = Split(data.train.images[:32], data.train.labels[:32])
        train(CFG, replace(data, train=half), device="cpu", resume=info.value.state)


def test_a_nan_loss_names_the_epoch_and_step(data, monkeypatch):
    real = loss.vae_loss
    calls = []

    def poisoned(out, x, lam, kind):
        calls.append(1)
        terms = real(out, x, lam, kind)
        return LossTerms(terms.recon * torch.nan, terms.kl, lam) if len(calls) == 6 else terms

    monkeypatch.setattr(loss, "vae_loss", poisoned)
    message = r"the loss was nan at epoch 2, step 2; try a lower `lr` \(now 0.003, e.g. 0.0003"
    with pytest.raises(TrainingDiverged, match=message):
        train(CFG, data, device="cpu")


def test_cli_nan_keeps_the_last_good_state(tiny_mnist, tmp_path, monkeypatch):
    real, calls = loss.vae_loss, []

    def poisoned(out, x, lam, kind):
        calls.append(1)
        terms = real(out, x, lam, kind)
        return LossTerms(terms.recon * torch.inf, terms.kl, lam) if len(calls) >= 7 else terms

    monkeypatch.setattr(loss, "vae_loss", poisoned)
    out = tmp_path / "run"
    result = invoke("train", *CFG_ARGS, "--data-dir", tiny_mnist, "--out", out)
    one_line_error(result, "at epoch 2, step 3", "--lr", "last good state", code=1)
    assert not (out / MODEL_FILE).exists()
    state = load_state(out)
    assert (state.epoch, state.step) == (2, 0) and all(torch.isfinite(t).all() for t in state.model.values())


def test_a_huge_learning_rate_diverges_in_one_line(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", *CFG_ARGS, "--lr", "1e8", "--data-dir", tiny_mnist, "--out", out)
    line = one_line_error(result, "nothing was saved", code=1)
    assert line.startswith("error: training diverged: the loss was") and not (out / MODEL_FILE).exists()


# --- the command line, interrupted by a real SIGINT in a subprocess ------------------


def test_ctrl_c_saves_a_state_that_resumes_bit_for_bit(tiny_mnist, tmp_path):
    common = ["train", *CFG_ARGS, "--data-dir", tiny_mnist]
    whole = run_vaecli(*common, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    folder = tmp_path / "cut"
    cut = run_vaecli(*common, "--out", folder, interrupt=(2, 2, 1))
    one_line_error(cut, "interrupted at epoch 2, step 2", f"vaecli train --resume {folder}", code=130)
    assert not (folder / MODEL_FILE).exists() and (folder / RESUME_FILE).exists()

    listed = run_vaecli("runs", "--runs-dir", tmp_path, "--json")
    assert '"problem": "interrupted: epoch 2/3"' in listed.stdout

    conflicting = run_vaecli("train", "--resume", folder, "--lam", "2")
    one_line_error(conflicting, "drop --lam", code=2)

    resumed = run_vaecli("train", "--resume", folder, "--data-dir", tiny_mnist)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming at epoch 2, step 2" in resumed.stdout
    assert not (folder / RESUME_FILE).exists()
    assert same_weights(load_run(folder).model, load_run(tmp_path / "whole").model)

    again = run_vaecli("train", "--resume", folder)
    one_line_error(again, "is finished; nothing to resume", code=1)


def test_the_same_command_again_continues_and_a_second_ctrl_c_stops_at_once(tiny_mnist, tmp_path):
    common = ["train", *CFG_ARGS, "--data-dir", tiny_mnist, "--runs-dir", tmp_path / "store"]
    impatient = run_vaecli(*common, interrupt=(2, 3, 2))
    assert one_line_error(impatient, code=130) == "error: interrupted"
    (folder,) = (tmp_path / "store").iterdir()
    assert load_state(folder).epoch == 2  # the state saved after epoch 1 is still there

    again = run_vaecli(*common)
    assert again.returncode == 0, again.stderr
    assert "Resuming at epoch 2, step 0" in again.stdout and (folder / MODEL_FILE).exists()


# --- SIGKILL while saving ----------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from vaecli.store.checkpoint import save_state
from vaecli.config import ModelConfig, TrainConfig
from vaecli.core.data import load_dataset, Split
from vaecli.engine.loop import train

config = TrainConfig(model=ModelConfig(latent_dim=2, hidden_layers=(256, 256)), epochs=3, batch_size=16)
states = []
train(config, load_dataset("mnist", sys.argv[1]), device="cpu", save_state=states.append)
folder = Path(sys.argv[2])
for i, state in enumerate(states):
    save_state(folder / str(i), state)
save_state(folder / "live", states[0])
print("ready", flush=True)
while True:
    for state in states:
        save_state(folder / "live", state)
"""


def test_a_kill_during_a_save_leaves_a_complete_file(tiny_mnist, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(0)
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tiny_mnist), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # the file under its name is one of the two complete states, whole (its header's order varies)
        live = load_state(tmp_path / "live")
        complete = [load_state(tmp_path / str(i)) for i in (0, 1)]
        assert any(same_tensors(live, state) for state in complete)


def test_resume_continues_a_forced_retrain_beside_the_old_finished_run(tiny_mnist, tmp_path):
    common = ["train", *CFG_ARGS, "--data-dir", tiny_mnist, "--out", tmp_path / "run"]
    assert run_vaecli(*common).returncode == 0
    old = load_run(tmp_path / "run").model
    cut = run_vaecli(*common, "--force", "--seed", "1", interrupt=(1, 2, 1))
    assert cut.returncode == 130 and (tmp_path / "run" / RESUME_FILE).exists()
    resumed = run_vaecli("train", "--resume", tmp_path / "run", "--data-dir", tiny_mnist)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming at epoch 1, step 2" in resumed.stdout
    assert load_run(tmp_path / "run").config.seed == 1 and not same_weights(load_run(tmp_path / "run").model, old)


def test_training_again_removes_what_a_killed_save_left(tiny_mnist, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    leftover = folder / ".resume.safetensors.abc123.tmp"
    leftover.write_bytes(b"half a file")
    keep = folder / ".notes.tmp"  # a user's own file, not one of vaecli's temp files
    keep.write_text("mine")
    result = invoke("train", *CFG_ARGS, "--data-dir", tiny_mnist, "--out", folder)
    assert result.exit_code == 0, result.output
    assert not leftover.exists() and keep.read_text() == "mine" and (folder / MODEL_FILE).exists()


def test_a_slow_last_state_write_never_outlives_the_finished_run(data, tmp_path, monkeypatch):
    """The epoch states are written in the background; the fit waits for the last before saving the run,
    whose save removes the resume file, so no late write brings it back."""
    import threading

    from vaecli.store import runs

    finished = threading.Event()  # set once train_or_reuse has returned

    def slow_bytes(state):
        if state.epoch == CFG.epochs:  # the state before the last epoch: held back until the run is saved
            finished.wait(timeout=1.0)
        return real_bytes(state)

    real_bytes = runs.state_bytes
    monkeypatch.setattr(runs, "state_bytes", slow_bytes)
    outcome = runs.train_or_reuse(RunRequest(CFG, out=tmp_path / "run", device="cpu"), data=data)
    finished.set()
    time.sleep(0.3)
    assert (outcome.run.path / MODEL_FILE).is_file() and not (outcome.run.path / RESUME_FILE).exists()


def test_a_stop_lands_after_the_epochs_background_write(data, tmp_path, monkeypatch):
    """Ctrl-C just after an epoch boundary: the boundary's state, still being written, must not land over
    the stop's."""
    from vaecli.errors import Interrupted
    from vaecli.store import runs

    def slow_bytes(state):
        time.sleep(0.5 if state.step == 0 else 0.0)
        return real_bytes(state)

    class CtrlC(Observer):
        def on_batch(self, epoch: int, step: int) -> None:
            if (epoch, step) == (2, 1):
                os.kill(os.getpid(), signal.SIGINT)

    real_bytes = runs.state_bytes
    monkeypatch.setattr(runs, "state_bytes", slow_bytes)
    with pytest.raises(Interrupted):
        runs.train_or_reuse(RunRequest(CFG, out=tmp_path / "run", device="cpu"), data=data, observer=CtrlC())
    time.sleep(0.6)
    state = load_state(tmp_path / "run")
    assert (state.epoch, state.step) == (2, 1)


def test_an_abrupt_stop_still_leaves_the_last_epochs_state(data, tmp_path, monkeypatch):
    """A second Ctrl-C (KeyboardInterrupt) just after an epoch boundary, while its state is still being
    written in the background: the write finishes before the interrupt leaves train_or_reuse."""
    from vaecli.store import runs

    def slow_bytes(state):
        time.sleep(0.4)
        return real_bytes(state)

    class Impatient(Observer):
        def on_batch(self, epoch: int, step: int) -> None:
            if (epoch, step) == (2, 1):
                raise KeyboardInterrupt

    real_bytes = runs.state_bytes
    monkeypatch.setattr(runs, "state_bytes", slow_bytes)
    with pytest.raises(KeyboardInterrupt):
        runs.train_or_reuse(RunRequest(CFG, out=tmp_path / "run", device="cpu"), data=data, observer=Impatient())
    state = load_state(tmp_path / "run")
    assert (state.epoch, state.step) == (2, 0)
