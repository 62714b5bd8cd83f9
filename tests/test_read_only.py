"""A shared, read-only run store: every command that only reads a run works there (a real read-only mount)."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import FAST_TRAIN_ARGS, ROOT, invoke
from vaecli.store.lock import HOLDER_FILE, LOCK_FILE

MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def read_only(store, *args, cwd):
    """vaecli with `store` mounted read-only in a mount namespace of its own (as a shared store is)."""
    command = ["unshare", "-m", "sh", "-c", MOUNT, str(store), sys.executable, "-m", "vaecli", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def shared(tiny_mnist, tmp_path):
    """A store with a finished run and one that a live process is training, mountable read-only here."""
    store = tmp_path / "shared"
    result = invoke("train", *FAST_TRAIN_ARGS, "--data-dir", tiny_mnist, "--runs-dir", store, "--quiet")
    assert result.exit_code == 0, result.output
    probe = subprocess.run(["unshare", "-m", "sh", "-c", MOUNT, str(store), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only store here (needs root): {probe.stderr.decode().strip()}")
    trainer = subprocess.Popen(["sleep", "60"])  # stands in for the process training the second run
    busy = store / "h2-lam5-e1-s0-busy"
    busy.mkdir()
    (busy / LOCK_FILE).touch()
    record = {"pid": trainer.pid, "host": socket.gethostname(), "user": "teacher", "since": time.time()}
    (busy / HOLDER_FILE).write_text(json.dumps(record))
    yield store, tiny_mnist
    trainer.kill()
    trainer.wait()


def test_reading_commands_work_on_a_read_only_store(shared, tmp_path):
    store, data = shared
    (run,) = [p for p in store.iterdir() if p.name.startswith("h2-lam1-")]
    here = tmp_path / "here"
    here.mkdir()
    listed = read_only(store, "runs", "--runs-dir", store, cwd=here)
    assert listed.returncode == 0 and "training: first epoch, pid" in listed.stdout, listed.stdout + listed.stderr
    assert read_only(store, "info", run, cwd=here).returncode == 0
    scored = read_only(store, "eval", run, "--data-dir", data, "--iw-samples", "2", cwd=here)
    assert scored.returncode == 0 and "read-only: the scores are not cached" in scored.stderr, scored.stderr
    for command in ("sample", "grid"):
        drawn = read_only(store, command, run, "--data-dir", data, cwd=here)
        assert drawn.returncode == 0, drawn.stderr
        assert (here / f"{run.name}-{command}.png").is_file() and "is read-only" in drawn.stdout
    assert not (run / "scores.json").exists() and not (run / "sample.png").exists()
