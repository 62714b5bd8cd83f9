"""Shared test helpers: tiny synthetic IDX data sets, an isolated environment, the CLI and its one-line errors.

Test modules import the plain helpers from here (`from tests.conftest import invoke`), never from each other.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from typer.testing import CliRunner, Result

from vaecli.engine.observer import Observer  # torch-free: an Observer base for the helpers below

# the rest of vaecli is imported inside the helpers: a broken vaecli module then fails the tests that use it,
# not the collection of every test
if TYPE_CHECKING:
    from vaecli.engine.interrupt import StopRequest
    from vaecli.store.checkpoint import Run

runner = CliRunner()
# Ray reads this when it is imported, and without it a driver rewrites 127.0.0.1 to the machine's outward
# address: the cluster tests' every socket stays on loopback
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

# `vaecli train` options for a model that trains in about a second: 32-16 layers, one epoch, on the CPU
FAST_TRAIN_ARGS = ["--layers", "32", "16", "--epochs", "1", "--batch-size", "32", "--device", "cpu"]


def fast_train_args_but(*flags: str) -> list[str]:
    """FAST_TRAIN_ARGS without the options `flags` and their values, for a test that gives them itself (vaecli
    refuses a list option given twice)."""
    kept, skipping = [], False
    for arg in FAST_TRAIN_ARGS:
        if arg.startswith("--"):
            skipping = arg in flags
        if not skipping:
            kept.append(arg)
    return kept


ROOT = Path(__file__).resolve().parent.parent  # the checkout, put on PYTHONPATH for subprocesses
SMALL = {"hidden_layers": (32, 16)}  # make_run's layers, unless a test asks for others
BENCHMARKS = ROOT / "benchmarks"


def invoke(*args: object) -> Result:
    """Run vaecli in-process through typer's CliRunner; every argument is passed as str."""
    from vaecli.cli import app

    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result: Result | subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> str:
    """Assert a failed vaecli run: a non-zero exit (`code` when given), exactly one stderr line,
    starting with "error: " and containing every fragment, and no traceback. Returns the line.

    Takes a CliRunner result or a subprocess.CompletedProcess (text=True, capture_output=True).
    """
    if isinstance(result, subprocess.CompletedProcess):
        exit_code, output = result.returncode, result.stdout + result.stderr
    else:
        exit_code, output = result.exit_code, result.output
    if code is None:
        assert exit_code != 0, output
    else:
        assert exit_code == code, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stderr == lines[0] + "\n", result.stderr
    (line,) = lines
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert "Traceback" not in output, output
    return line


# `python -c DRIVER epoch step ACTION ARGS...`: vaecli that, after batch `step` of `epoch`, SIGINTs itself
# ACTION times (a number), or (a folder) creates ACTION/paused and waits there until ACTION/go exists
DRIVER = """
import os, signal, sys, time
from pathlib import Path
from vaecli.cli import display, main

epoch, step, action = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
on_batch = display.TrainingDisplay.on_batch

def hooked(self, e, s):
    on_batch(self, e, s)
    if (e, s) != (epoch, step):
        return
    if action.isdigit():
        for _ in range(int(action)):
            os.kill(os.getpid(), signal.SIGINT)
        return
    (Path(action) / "paused").touch()
    while not (Path(action) / "go").exists():
        time.sleep(0.02)

display.TrainingDisplay.on_batch = hooked
sys.argv = ["vaecli", *sys.argv[4:]]
main()
"""


def _vaecli(args: tuple[object, ...], hook: tuple[object, ...] | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of vaecli in a subprocess, with DRIVER's `hook` if given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    prefix = ["-c", DRIVER, *map(str, hook)] if hook else ["-m", "vaecli"]
    return [sys.executable, *prefix, *map(str, args)], env


def run_vaecli(*args: object, interrupt: tuple[int, int, int] | None = None) -> subprocess.CompletedProcess:
    """Run vaecli in a subprocess; `interrupt` = (epoch, step, how many SIGINTs to send there),
    sent from the training display's batch hook, as Ctrl-C would."""
    command, env = _vaecli(args, interrupt)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def start_vaecli(*args: object, signals: Path, pause: tuple[int, int] | None = None) -> subprocess.Popen:
    """Start vaecli in a subprocess and return at once; its stdout and stderr go to `signals`/stdout, /stderr.

    `pause` = (epoch, step): after that batch it creates `signals`/paused and waits, holding
    its run's lock, until the test creates `signals`/go (or kills it).
    """
    signals.mkdir(parents=True, exist_ok=True)
    command, env = _vaecli(args, (*pause, signals) if pause else None)
    with open(signals / "stdout", "w") as out, open(signals / "stderr", "w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)


def load_script(name: str):
    """A benchmark script as a module; its folder goes on sys.path, as running it puts it there."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    path = BENCHMARKS / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_idx(path: Path, array: torch.Tensor, gz: bool = False) -> Path:
    """Write a uint8 tensor as an IDX file (optionally gzipped)."""
    header = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    data = header + array.to(torch.uint8).contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def synthetic_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n 28x28 images, one bright bar per class: learnable structure in milliseconds."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.zeros(n, 28, 28)
    for i, k in enumerate(labels.tolist()):
        images[i, 2 + 2 * k : 5 + 2 * k, 4:24] = 1.0
    images = (images * 230 + torch.rand(n, 28, 28, generator=g) * 25).clamp(0, 255)
    return images.to(torch.uint8), labels.to(torch.uint8)


def write_dataset(raw: Path, n_train: int = 64, n_test: int = 32, gz: bool = False) -> Path:
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, gz)
    return raw


def make_run(folder: Path, latent_dim: int = 2, seed: int = 0, **model) -> Run:
    """An untrained model with its config: the explorer page decodes any weights alike.

    PyTorch's default init gives logits near 0, where the sigmoid hides errors;
    He init and logits of a few units, as a trained decoder has, expose them.
    """
    from torch import nn

    from vaecli.config import ModelConfig, TrainConfig
    from vaecli.core.model import VAE
    from vaecli.store.checkpoint import Run

    config = TrainConfig(model=ModelConfig(latent_dim=latent_dim, **{**SMALL, **model}), seed=seed)
    torch.manual_seed(seed)
    vae = VAE(config.model).eval()
    with torch.no_grad():
        for layer in vae.decoder.modules():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=(2 / layer.in_features) ** 0.5)
                nn.init.normal_(layer.bias, std=0.5)
    return Run(Path(folder), config, vae)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own run store and cache; real data only where asked for."""
    monkeypatch.setenv("VAECLI_RUNS", str(tmp_path / "store"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("VAECLI_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_mnist(tmp_path) -> Path:
    """A data folder in torchvision's layout with 64 train and 32 test images."""
    root = tmp_path / "data"
    write_dataset(root / "MNIST" / "raw")
    return root


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST folder from VAECLI_DATA_DIR; the test is skipped without it."""
    value = os.environ.get("VAECLI_DATA_DIR")
    if not value:
        pytest.skip("real MNIST not available: set VAECLI_DATA_DIR to a folder holding MNIST/raw")
    return Path(value)


class StopAt(Observer):
    """Requests a stop after batch `step` of `epoch`, as Ctrl-C would."""

    def __init__(self, stop: StopRequest, epoch: int, step: int) -> None:
        self.stop, self.at = stop, (epoch, step)

    def on_batch(self, epoch: int, step: int) -> None:
        if (epoch, step) == self.at:
            self.stop.request()


# --- headless Chromium, driven by Playwright: the explorer's and the documentation site's tests

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium keeps trying to reach the network and can hang
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def unavailable(reason: str) -> None:
    if os.environ.get("VAECLI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, but VAECLI_REQUIRE_BROWSER=1 requires the browser tests to run")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's Chromium (the system's, not a browser that Playwright downloads)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("Chromium is not installed (Debian: apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def browser(chromium):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
