"""Shared fixtures: tiny synthetic IDX data sets and an isolated environment."""

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch


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
